"""The garbage collector: ``__flush__`` racing another node's collector, and a concatenation
committed during a collection (found by, or held against, a review of 2026-12-05)."""

import base64
import inspect
import os
import time

import pytest
import transaction
from kinto.core.utils import msec_time

from kinto_attachment import adoption, gc
from kinto_attachment.state import records, replaced, tus_uploads

from .conftest import ALICE, cached_app, two_nodes
from .support.threads import in_another_thread
from .test_gc import GRACE, adopted
from .views.test_resumable import CHUNK, TUS


pytestmark = pytest.mark.postgresql

#: The prefix of the databases of this module's nodes.
NODES = "kinto_attachment_review_gc"
RECORD = "/v1/buckets/blog/collections/articles/records/r1"
#: Files named as sent, in their collection's folder.
CHOSEN = {
    "kinto.attachment.randomize": "false",
    "kinto.attachment.folder": "{bucket_id}/{collection_id}",
}


def age(kinto, key, seconds_ago):
    """Date the local file ``key`` ``seconds_ago``."""
    when = time.time() - seconds_ago
    os.utime(os.path.join(kinto.base_path, key), (when, when))


def stored(kinto, key, content, random=False):
    """A file committed under ``key`` that nothing references (``random``: a drawn name)."""
    staged = kinto.registry.attachment_store.stage(key, "text/plain", random=random)
    staged.write(content)
    assert staged.commit() == key
    return key


# --- The command against a configuration that is not the servers' -------------------------


def test_a_flush_never_deletes_a_file_uploaded_since_its_listing_under_an_orphans_name(
    tmp_path,
):
    """Found by review (2026-12-05).

    It was: ``__flush__`` deleted the orphans it listed as they were listed: another node's
    collector could delete one meanwhile, its name's quarantine end, and an upload take the
    name for a record (``randomize = false``): the flush deleted that record's file. Fixed:
    the flush deletes orphans as the collector does, names quarantined, each looked at
    again."""
    with two_nodes(tmp_path, NODES, **GRACE, **CHOSEN) as (first, second):
        first.create_collection()
        # Both servers' collectors ran before (each process remembers adoption as done).
        gc.collect(first.registry)
        assert adoption.done(second.registry)
        key = stored(first, "blog/articles/name.txt", b"an old orphan")
        age(first, key, 2 * 86400)
        store = first.registry.attachment_store
        listing = store.iter_blobs
        uploaded = []

        def meanwhile():
            # After the flush: the other node's records, and its collector.
            second.create_collection()
            second.upload(second.record_url("r0"), b"kept", filename="other.txt")
            now = msec_time()
            assert [o.key for o in gc.collect(second.registry, now=now).orphans] == [key]
            later = now + (replaced.QUARANTINE_SECONDS + 10) * 1000
            gc.collect(second.registry, now=later, orphans=False)  # The quarantine is over.
            return second.upload(second.record_url("r1"), b"new", filename="name.txt").json

        def iter_blobs():
            found = list(listing())
            if not uploaded and any(f.function == "wipe_store" for f in inspect.stack()):
                yield from found
                uploaded.append(in_another_thread(meanwhile))
                return
            yield from found

        store.iter_blobs = iter_blobs
        try:
            first.app.post("/v1/__flush__", status=202)
        finally:
            del store.iter_blobs

        [attached] = uploaded
        assert second.key_of(attached["location"]) == key  # The name was free again.
        with transaction.manager:
            record = records.stored(second.registry.storage, "blog", "articles", "r1")
        assert record["attachment"]["location"] == attached["location"]
        assert second.exists(attached["location"]), "r1's file, deleted by the flush's wipe"


def test_a_final_concatenation_of_an_old_partial_during_a_collection(tmp_path_factory, request):
    """Held against a review (2026-12-05).

    the collector reads every reference, then lists the store; a file referenced in
    between is safe only if it is young. On local disk a final upload (tus concatenation)
    makes its file a second name of its first partial upload's file (a hard link), which
    keeps that file's date: a partial upload finished two days ago, joined by a final upload
    once the collector has read the references, gave the attachment a two-day-old file that
    no reference read named, which it deleted. ``LocalStaged.grow`` dates the file now
    first: the attachment is young, and kept."""
    kinto = adopted(cached_app("memory", tmp_path_factory, request, **GRACE))
    kinto.create_collection()
    app, uploads = kinto.app, kinto.record_url("r1") + "/attachment/uploads"
    headers = {**ALICE, **TUS, "Upload-Length": "9", "Upload-Concat": "partial"}
    partial = app.post(uploads, b"", headers=headers, status=201).headers["Location"]
    partial = partial[len("http://localhost") :]
    chunk = {**ALICE, **TUS, **CHUNK, "Upload-Offset": "0"}
    app.patch(partial, b"old bytes", headers=chunk, status=204)
    with transaction.manager:
        [state] = tus_uploads.every(kinto.registry.storage)
    age(kinto, state["store"]["temp"], 2 * 86400)
    dated = os.stat(os.path.join(kinto.base_path, state["store"]["temp"])).st_mtime
    assert dated < time.time() - 2 * 86400 + 60
    store = kinto.registry.attachment_store
    listing, attached = store.iter_blobs, []

    def final():
        name = base64.b64encode(b"joined.txt").decode()
        final_headers = {
            **ALICE,
            **TUS,
            "Upload-Concat": f"final;{partial}",
            "Upload-Metadata": f"filename {name}",
        }
        app.post(uploads, b"", headers=final_headers, status=201)
        return app.get(kinto.record_url("r1"), headers=ALICE).json["data"]["attachment"]

    def iter_blobs():
        in_orphan_pass = any(f.filename.endswith("gc/orphans.py") for f in inspect.stack())
        if in_orphan_pass and not attached:  # The references are read: the final comes now.
            attached.append(in_another_thread(final))
        yield from listing()

    store.iter_blobs = iter_blobs
    try:
        report = gc.collect(kinto.registry)
    finally:
        del store.iter_blobs
    assert report.orphans == [] or all(o.temporary for o in report.orphans), report.orphans
    assert attached and kinto.key_of(attached[0]["location"]) not in [
        o.key for o in report.orphans
    ]
    assert kinto.read(attached[0]["location"]) == b"old bytes"
