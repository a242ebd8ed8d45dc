"""Work done in a thread of its own: another node's request, another transaction."""

import threading


def in_another_thread(work, timeout=60):
    """``work()`` run to its end in a thread of its own; its result (its exception, raised
    here)."""
    failures, results = [], []

    def run():
        try:
            results.append(work())
        except BaseException as e:  # pragma: no cover (raised below)
            failures.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s"
    if failures:
        raise failures[0]
    return results[0] if results else None
