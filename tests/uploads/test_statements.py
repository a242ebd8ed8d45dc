"""What an upload sends to PostgreSQL beyond the record write it makes: a plain record ``PUT``
creating a record sends 19 statements (Kinto's 16, our listener's lock and read of the record,
and the collection's read again, which may have gone while the write waited for the lock), an
upload as many to create its record (it asks whether its collection's records have a timestamp
row, made first if not: :mod:`kinto_attachment.state.timestamps`), one fewer to replace its
file (``bench/README.rst``). A change that adds a round trip to every upload fails here, whatever
the machine's speed.

The tests run with ``gc.replaced_grace_seconds = 0``: a replaced file is then deleted at once,
after one query for whether it is retained (a copy without a link may name it). With a grace
(600 by default) the collector asks instead, and a replacement sends one statement fewer."""

import pytest

from ..conftest import cached_app
from ..support import statements


@pytest.mark.postgresql
def test_an_upload_sends_few_statements_beyond_its_record_write(tmp_path_factory, request):
    kinto = cached_app("postgresql", tmp_path_factory, request)
    kinto.create_collection()
    sent = statements.of_requests(kinto)
    locks = [s for s in sent["create"] if "advisory" in s]
    assert len(locks) == 1, locks  # Root, bucket, collection and record in one round trip.
    # kinto-attachment's links are not looked for: the record's file is ours, or it has none.
    legacy = [s for name in ("create", "replace") for s in sent[name] if "__attachments__" in s]
    assert legacy == []
    beyond = {name: len(sent[name]) - len(sent["put"]) for name in ("create", "replace")}
    assert beyond == {"create": 0, "replace": -1}, sent
    [made] = [s for s in sent["create"] if "FROM timestamps WHERE" in s and "SELECT 1" in s]
