"""``POST /__flush__`` on one node of an instance (two servers on one PostgreSQL database and
one store) while the other uploads: the flush deletes the files it saw referenced, never a file
the other node stored after it committed."""

import inspect

import pytest
import transaction

from kinto_attachment.state import records

from .conftest import ALICE, two_nodes
from .support.threads import in_another_thread
from .test_gc import GRACE, start_tus


pytestmark = pytest.mark.postgresql

#: The prefix of the database of their two nodes.
NODES = "kinto_attachment_review_nodes"


def test_a_flush_keeps_a_file_another_node_stored_under_a_name_in_quarantine(tmp_path):
    """Found by review (2026-12-05).

    ``randomize = false``: a name in quarantine (its file deleted a moment ago) is among what
    the flush reads as referenced; once the flush committed (the quarantine with everything
    else), the other node's upload took the free name, and the flush's wipe deleted its file:
    its record named a missing file. The flush deletes what the store held when it read it
    (each blob's version), nothing else."""
    with two_nodes(tmp_path, NODES, **GRACE, **{"kinto.attachment.randomize": "false"}) as (
        first,
        second,
    ):
        first.create_collection()
        old = first.upload(first.record_url("r1"), b"first", filename="report.txt").json
        # Deleted: its file goes at once (no replaced grace here), its name in quarantine.
        first.app.delete(first.record_url("r1"), headers=ALICE)
        assert not first.exists(old["location"])

        uploaded = flush_while_second_node_uploads(first, second, "report.txt")
        assert_kept(second, uploaded)


def flush_while_second_node_uploads(first, second, filename):
    """``POST /__flush__`` on ``first``; ``second`` uploads ``filename`` to ``r2`` once the
    flush has committed, as the first node starts listing its store. The upload's answer."""
    store = first.registry.attachment_store
    listing = store.iter_blobs
    uploaded = []

    def upload_on_second_node():
        second.create_collection()
        return second.upload(second.record_url("r2"), b"uploaded after", filename=filename)

    def iter_blobs():
        # Listed once the flush has committed (to wipe the store): the other node's upload
        # comes before that listing reaches its name (a store of many files takes a while
        # to list).
        if not uploaded and any(f.function == "wipe_store" for f in inspect.stack()):
            uploaded.append(in_another_thread(upload_on_second_node).json)
        yield from listing()

    store.iter_blobs = iter_blobs
    try:
        first.app.post("/v1/__flush__", status=202)
    finally:
        del store.iter_blobs

    return uploaded[0]


def assert_kept(second, attachment):
    with transaction.manager:
        record = records.stored(second.registry.storage, "blog", "articles", "r2")
    assert record["attachment"]["location"] == attachment["location"]
    assert second.exists(attachment["location"]), (
        f"{second.key_of(attachment['location'])} named by r2, deleted by the flush"
    )


def test_a_flush_keeps_a_file_another_node_stored_under_a_resumable_uploads_name(
    tmp_path,
):
    """Found by review (2026-12-05).

    ``randomize = false``: an unfinished resumable upload's state names the key its file will
    get (no file there yet on local disk), which the flush read as referenced: an upload of
    that name on the other node, once the flush committed, had its file deleted."""
    with two_nodes(tmp_path, NODES, **GRACE, **{"kinto.attachment.randomize": "false"}) as (
        first,
        second,
    ):
        first.create_collection()
        start_tus(first, 10, b"01234", record="r1")  # big.txt, half sent.

        uploaded = flush_while_second_node_uploads(first, second, "big.txt")
        assert_kept(second, uploaded)
