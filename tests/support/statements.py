"""What one request sends to PostgreSQL: the statements of a plain record ``PUT`` and of an
upload creating or replacing a record, in-process, counted with a SQLAlchemy listener.

``bench/statements.py`` prints them (``bench/README.rst`` gives the counts); the tests hold the
upload's statements beyond the ``PUT``'s to what they are.
"""

import contextlib

import sqlalchemy
from sqlalchemy import event

from ..conftest import ALICE


@contextlib.contextmanager
def recorded():
    """The statements sent meanwhile, by any engine, each followed by its parameters (a
    list, filled as they go)."""
    sent = []

    def before(conn, cursor, statement, parameters, context, executemany):
        sent.append(f"{' '.join(statement.split())} -- {parameters!r}")

    event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", before)
    try:
        yield sent
    finally:
        event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", before)


def of_requests(kinto, content=b"x" * 4096):
    """``{"put": [...], "create": [...], "replace": [...]}``: the statements of the third of
    each (the first ones warm caches), on ``kinto`` (PostgreSQL, its collection created)."""

    def put(i):
        data = {"file": {"filename": f"f{i}.bin", "hash": "0" * 64, "size": len(content)}}
        kinto.app.put_json(kinto.record_url(f"put-{i}"), {"data": data}, headers=ALICE)

    def create(i):
        kinto.upload(kinto.record_url(f"upload-{i}"), content, f"f{i}.txt")

    def replace(i):
        kinto.upload(kinto.record_url(f"upload-{i}"), content[::-1], f"f{i}.txt")

    counted = {}
    for name, send in (("put", put), ("create", create), ("replace", replace)):
        send(0)
        send(1)
        with recorded() as sent:
            send(2)
        counted[name] = sent
    return counted
