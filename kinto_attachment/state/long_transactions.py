"""Request transactions that last as long as their uploads, on PostgreSQL.

An upload holds its request's transaction, and the locks taken in it (the record's, a tus
upload's, a ``/data/files`` id's), while its body comes: minutes for a large file, the
transaction idle meanwhile. PostgreSQL's ``idle_in_transaction_session_timeout``, which
managed services set, ends such a session under the upload: its locks go with it (another
request may then write the same upload's file), and the whole body, received and stored, is
refused when its state is saved (a ``503``), every time it is sent again. So the connections of
Kinto's storage backend are opened with that timeout off, for their sessions only
(``-c idle_in_transaction_session_timeout=0``, after whatever the URL's ``options`` say);
the server's setting keeps applying to every other client of the database. Transactions stay
bounded by the servers' own limits on requests (docs/security.rst: slow and idle clients).
"""

#: The option a connection of Kinto's storage backend is opened with.
OPTION = "-c idle_in_transaction_session_timeout=0"


def includeme(config):
    engine = _engine(config.registry.storage)
    if engine is None:  # Not PostgreSQL.
        return
    import sqlalchemy

    if not sqlalchemy.event.contains(engine, "do_connect", _without_idle_timeout):
        sqlalchemy.event.listen(engine, "do_connect", _without_idle_timeout)
        engine.dispose()  # Connections opened before (Kinto's own, at start-up) go.


def _engine(storage):
    """The SQLAlchemy engine of Kinto's PostgreSQL storage backend, or None."""
    client = getattr(storage, "client", None)
    factory = getattr(getattr(client, "session_factory", None), "session_factory", None)
    return getattr(factory, "kw", {}).get("bind")


def _without_idle_timeout(dialect, record, cargs, cparams):
    cparams["options"] = f"{cparams.get('options', '')} {OPTION}".strip()
