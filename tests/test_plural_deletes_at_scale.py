"""A plural ``DELETE`` of many records (Kinto takes up to ``storage_max_fetch_size``, 10,000,
at once): its records' files go after the commit, without a lock or a few statements per
record. Found by review (2026-12-06): it took an advisory lock per record, held until the
commit, and popped each record's links in statements of its own; two such deletes at once
(9,000 records each) filled PostgreSQL's lock table, shared by every database of the server
("out of shared memory": a 503, for any transaction of the server meanwhile), and 10,000
records sent some 40,000 statements, their collection locked all along."""

import pytest
import sqlalchemy

from kinto_attachment.uploads import lifecycle

from .conftest import ALICE, cached_app
from .support import statements


RECORDS = 120
ATTACHED = ("r0", "r60", "r119")


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def backend(request):
    return request.param


@pytest.fixture
def kinto(backend, request, tmp_path_factory):
    kinto = cached_app(backend, tmp_path_factory, request)
    kinto.create_collection()
    records = kinto.record_url("x").rsplit("/", 1)[0]
    requests = [
        {"method": "PUT", "path": f"{records[3:]}/r{i}", "body": {"data": {"n": i}}}
        for i in range(RECORDS)
    ]
    for start in range(0, RECORDS, 25):  # Kinto's batch limit.
        kinto.app.post_json("/v1/batch", {"requests": requests[start : start + 25]}, headers=ALICE)
    return kinto


def test_a_plural_delete_of_many_records_takes_their_files_with_few_locks_and_statements(
    kinto, backend, monkeypatch
):
    kinto.create_collection(collection="other")
    kept = kinto.upload(kinto.record_url("kept", collection="other"), b"another collection's")
    files = {r: kinto.upload(kinto.record_url(r), r.encode()).json["location"] for r in ATTACHED}
    held = []
    discard = lifecycle.discard

    def counting_locks(request, popped):
        if backend == "postgresql":  # Those of the request's transaction.
            query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = "
            with request.registry.storage.client.connect() as session:
                held.append(session.execute(sqlalchemy.text(query + "pg_backend_pid()")).scalar())
        return discard(request, popped)

    monkeypatch.setattr(lifecycle, "discard", counting_locks)
    records = kinto.record_url("x").rsplit("/", 1)[0]
    with statements.recorded() as sent:
        deleted = kinto.app.delete(records, headers=ALICE, status=200).json["data"]
    assert len(deleted) == RECORDS
    assert kinto.files() == [kinto.key_of(kept.json["location"])]
    assert not any(kinto.exists(location) for location in files.values())
    if backend == "postgresql":
        assert held and held[0] <= 8, held  # The collection's and its ancestors', not 120.
        assert len(sent) < 100, len(sent)
