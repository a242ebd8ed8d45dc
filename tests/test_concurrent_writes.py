"""Conditional ``/data/files`` writes, and Kinto's record writes racing attachment uploads, on
two nodes (two apps on one PostgreSQL database, one store), both requests held at the lock
they race for: attacks of a review (2026-12-05) that held, kept."""

import contextlib
import hashlib
import threading

import pytest

from kinto_attachment import locks

from .conftest import ALICE, two_nodes


pytestmark = pytest.mark.postgresql

LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
V1 = b"%PDF-1.7 version one " * 50
V2 = b"%PDF-1.7 version two " * 50


def etag(body):
    return f'"{hashlib.sha256(body).hexdigest()}"'


def race(*works, timeout=30):
    """Run each ``work()`` in its own thread; their results (exceptions re-raised)."""
    results, failures = [None] * len(works), []

    def run(i, work):
        try:
            results[i] = work()
        except BaseException as e:  # pragma: no cover
            failures.append(e)

    threads = [threading.Thread(target=run, args=(i, w), daemon=True) for i, w in enumerate(works)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a racer is stuck"
    if failures:
        raise failures[0]
    return results


def meet_before_lock(monkeypatch, matches, parties=2):
    """Each racer waits for the other just before taking the lock of a path ``matches``:
    both have done everything they do before the lock (pre-checks, body received)."""
    barrier = threading.Barrier(parties, timeout=10)
    seen = set()
    original = locks.hold

    def hold(registry, path, **kwargs):
        me = threading.get_ident()
        if matches(path) and me not in seen:
            seen.add(me)
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
        return original(registry, path, **kwargs)

    monkeypatch.setattr(locks, "hold", hold)
    return seen


def post_file(node, file_id, body, **headers):
    return node.app.post(
        f"/v1/data/files?id={file_id}",
        body,
        headers={"Content-Type": "application/pdf", **headers},
        extra_environ=LOCAL,
        expect_errors=True,
    )


def test_if_none_match_star_race_one_winner_one_blob(tmp_path, monkeypatch):
    """Held against a review (2026-12-05).

    two nodes POST one new id with ``If-None-Match: *``, both past the pre-check:
    one 200, one 412, the winner's bytes served, one blob per id."""
    with two_nodes(tmp_path, "kinto_attachment_two_node_writes") as (first, second):
        for round_ in range(3):
            file_id = f"race-new-{round_}"
            seen = meet_before_lock(monkeypatch, lambda p, f=file_id: tuple(p)[-1:] == (f,))
            a, b = race(
                lambda f=file_id: post_file(first, f, V1, **{"If-None-Match": "*"}),
                lambda f=file_id: post_file(second, f, V2, **{"If-None-Match": "*"}),
            )
            monkeypatch.undo()
            assert len(seen) == 2, "the racers did not meet at the lock"
            assert sorted([a.status_int, b.status_int]) == [200, 412], (a.status, b.status)
            winner = V1 if a.status_int == 200 else V2
            got = first.app.get(f"/v1/data/files/{file_id}", extra_environ=LOCAL)
            assert got.body == winner
        # One blob per id: the loser's bytes were deleted (no orphan).
        entries = first.app.get("/v1/data/files", extra_environ=LOCAL).json
        assert len(entries) == 3
        assert len(first.files()) == 3, first.files()


def test_delete_if_match_v1_racing_post_v2_never_deletes_v2(tmp_path, monkeypatch):
    """Held against a review (2026-12-05).

    DELETE If-Match v1 (node 1) racing POST v2 If-Match v1 (node 2): exactly one
    wins, v2 never deleted, no orphan."""
    with two_nodes(tmp_path, "kinto_attachment_two_node_writes") as (first, second):
        for round_ in range(3):
            file_id = f"race-del-{round_}"
            assert post_file(first, file_id, V1).status_int == 200
            seen = meet_before_lock(monkeypatch, lambda p, f=file_id: tuple(p)[-1:] == (f,))
            deleted, posted = race(
                lambda f=file_id: first.app.delete(
                    f"/v1/data/files/{f}",
                    headers={"If-Match": etag(V1)},
                    extra_environ=LOCAL,
                    expect_errors=True,
                ),
                lambda f=file_id: post_file(second, f, V2, **{"If-Match": etag(V1)}),
            )
            monkeypatch.undo()
            assert len(seen) == 2, "the racers did not meet at the lock"
            assert posted.status_int in (200, 412)
            assert deleted.status_int in (204, 412)
            # Exactly one of the two conditional writes on v1 may win.
            assert sorted([deleted.status_int, posted.status_int]) in ([204, 412], [200, 412])
            got = first.app.get(
                f"/v1/data/files/{file_id}", extra_environ=LOCAL, expect_errors=True
            )
            if posted.status_int == 200:
                assert got.status_int == 200 and got.body == V2, "v2 was deleted"
            else:
                assert got.status_int == 404
        live = {e["id"] for e in first.app.get("/v1/data/files", extra_environ=LOCAL).json}
        assert len(first.files()) == len(live), (first.files(), live)


def test_record_write_racing_attachment_upload_on_two_nodes(tmp_path, monkeypatch):
    """Held against a review (2026-12-05).

    a Kinto PATCH/PUT (node 2) racing an attachment upload (node 1) of one record,
    both past their pre-lock reads: the attachment is kept, its file exists, no orphan."""
    with two_nodes(tmp_path, "kinto_attachment_two_node_writes") as (first, second):
        first.create_collection()
        for round_, method in enumerate(["PATCH", "PUT", "PATCH", "PUT"]):
            rid = f"r{round_}"
            url = first.record_url(rid)
            first.app.put_json(url, {"data": {"title": "t"}}, headers=ALICE, status=201)
            if round_ >= 2:  # An attachment already there, replaced by the racing upload.
                first.upload(url, content=b"old", filename="old.txt")
            before = first.app.get(url, headers=ALICE).json["data"]
            seen = meet_before_lock(monkeypatch, lambda p, r=rid: tuple(p)[-1:] == (r,))

            def write(method=method, url=url, before=before):
                if method == "PATCH":
                    return second.app.patch_json(
                        url, {"data": {"title": "patched"}}, headers=ALICE, expect_errors=True
                    )
                data = {k: v for k, v in before.items() if k not in ("id", "last_modified")}
                data["title"] = "put"
                return second.app.put_json(url, {"data": data}, headers=ALICE, expect_errors=True)

            def upload(url=url, rid=rid):
                content = b"new-" + rid.encode()
                return first.upload(url, content=content, filename="n.txt", status="*")

            written, uploaded = race(write, upload)
            monkeypatch.undo()
            assert len(seen) == 2, "the racers did not meet at the lock"
            assert uploaded.status_int in (200, 201), uploaded.text
            assert written.status_int in (200, 400, 412), written.text
            record = first.app.get(url, headers=ALICE).json["data"]
            attachment = record.get("attachment")
            assert attachment is not None, f"attachment lost ({written.status}): {record}"
            assert attachment["hash"] == hashlib.sha256(b"new-" + rid.encode()).hexdigest()
            # The record's file is there, on both nodes.
            key = attachment["location"].rsplit("/", 1)[-1]
            assert any(f.endswith(key) for f in first.files()), (attachment, first.files())
        # No orphan: one blob per record with an attachment.
        assert len(first.files()) == 4, first.files()
