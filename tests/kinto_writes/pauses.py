"""Kinto's writes paused once they hold our locks (:mod:`kinto_attachment.write_locks`), and
requests run in threads: for the races of this folder's tests."""

import threading

from kinto_attachment import write_locks


def in_thread(out, key, call):
    thread = threading.Thread(target=lambda: out.setdefault(key, call()), daemon=True)
    thread.start()
    return thread


def paused_lock_write(monkeypatch, route, method):
    """Kinto's write of ``route``/``method`` paused once it holds its lock (before its view)."""
    locked, go = threading.Event(), threading.Event()
    original = write_locks.lock_write

    def lock_write(request):
        original(request)
        if request.matched_route.name == route and request.method == method:
            locked.set()
            assert go.wait(20)

    monkeypatch.setattr(write_locks, "lock_write", lock_write)
    return locked, go


def paused_batch(monkeypatch):
    """Every ``POST /batch`` paused once it holds its locks."""
    locked, go = threading.Event(), threading.Event()
    original = write_locks.lock_batch

    def lock_batch(request):
        original(request)
        locked.set()
        assert go.wait(20)

    monkeypatch.setattr(write_locks, "lock_batch", lock_batch)
    return locked, go
