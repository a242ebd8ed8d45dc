"""Request transactions that last as long as their uploads, on PostgreSQL.

An upload holds its request's transaction, and the locks taken in it (the record's, a tus
upload's, a ``/data/files`` id's), while its body comes: minutes for a large file, the
transaction idle meanwhile. PostgreSQL's ``idle_in_transaction_session_timeout``, which
managed services set, ends such a session under the upload: its locks go with it (another
request may then write the same upload's file), and the whole body, received and stored, is
refused when its state is saved (a ``503``), every time it is sent again.

So each new connection of Kinto's PostgreSQL backends (storage, permission, cache: each may
have an engine of its own) turns that timeout off for its session (``SET SESSION``, then
committed), as it opens: the database's setting keeps applying to its other clients, the
connection's other options (``PGOPTIONS``, the URL's ``options``) are left as they are, and
a pooler that refuses startup options (PgBouncer's default) takes it. Behind a pooler in
transaction mode a session is not the server's, and the setting may not follow it:
docs/production.rst. Transactions stay bounded by the servers' own limits on requests
(docs/security.rst: slow and idle clients).

An upload stored whole (a multipart form, a ``/data/files`` body) locks nothing before its
body: what it read before (its permission, the record, the collection) is read and checked
again under the record's lock once the body is in. Its transaction then ends before the body
(:func:`end_before_body`): a body that takes minutes holds no connection of the database's
pool, which a few slow uploads would otherwise drain (SQLAlchemy's default: 5, and 10 more),
every other request of the process then waiting for one, and failing.
"""

import logging


logger = logging.getLogger(__name__)

#: What each new connection runs first.
STATEMENT = "SET SESSION idle_in_transaction_session_timeout = 0"


def includeme(config):
    registry = config.registry
    backends = [getattr(registry, name, None) for name in ("storage", "permission", "cache")]
    engines = {id(engine): engine for engine in map(_engine, backends) if engine is not None}
    if not engines:  # No PostgreSQL backend.
        return
    import sqlalchemy

    for engine in engines.values():
        if not sqlalchemy.event.contains(engine, "connect", _without_idle_timeout):
            sqlalchemy.event.listen(engine, "connect", _without_idle_timeout)
            engine.dispose()  # Connections opened before (Kinto's own, at start-up) go.


def _engine(backend):
    """The SQLAlchemy engine of one of Kinto's PostgreSQL backends, or None."""
    client = getattr(backend, "client", None)
    factory = getattr(getattr(client, "session_factory", None), "session_factory", None)
    return getattr(factory, "kw", {}).get("bind")


def _without_idle_timeout(connection, record):
    """Turn the timeout off for the session of ``connection`` (a DBAPI connection, new); a
    database that refuses (a pooler's own rules) leaves it as it is, said once per
    connection."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(STATEMENT)
        connection.commit()
    except Exception as e:  # noqa: BLE001 (any driver's: the connection is still usable)
        connection.rollback()
        logger.warning("idle_in_transaction_session_timeout left as it is: %s", e)


#: The note of the transaction :func:`end_before_body` commits (``transaction.description``).
BEFORE_BODY = "kinto_attachment: the checks before the body"
#: The hooks of a transaction (``transaction.Transaction``'s lists: it has no public way to
#: take one back).
_HOOKS = ("_before_commit", "_after_commit", "_after_abort")


def end_before_body(request):
    """End the transaction of an upload stored whole before its body comes (see the module):
    it has locked nothing yet; its writes, once the body is in, are made in another, begun
    at once (``pyramid_tm``'s explicit managers have none otherwise), which the request's end
    commits or aborts, with the hooks the request had put on the first (Kinto's
    ``AfterResourceChanged``, whoever's): they are the request's, not its reads'.

    Where the request wrote already (the ``default`` bucket's view creating the bucket or the
    collection, brought back from a tombstone maybe), that is committed now, as a request of
    its own would have: its ``ResourceChanged`` sent first (as Kinto's tween sends them once a
    view returns), its ``AfterResourceChanged`` by the commit, and the hooks run again for the
    upload's own writes. Kept uncommitted, those rows were held through the body, then while
    the upload waited for its record's lock, which another write of the user (a delete of the
    bucket, a batch) could hold while it waited for them. Not for a tus ``PATCH``, which holds
    the upload's lock while it writes."""
    events = request.bound_data.get("resource_events")
    wrote = events is not None and bool(events.event_dict)
    if wrote:
        for event in request.get_resource_events():
            request.registry.notify(event)
    first = request.tm.get()
    hooks = {name: list(getattr(first, name)) for name in _HOOKS}
    if not wrote:
        for name in _HOOKS:
            setattr(first, name, [])
    first.note(BEFORE_BODY)
    try:
        request.tm.commit()
    except BaseException:
        request.tm.abort()  # The request fails: with the next transaction, hooks and all.
        raise
    finally:
        if wrote:  # Sent: the upload's own events begin afresh.
            request.bound_data.pop("resource_events", None)
        second = request.tm.begin()
        for name, hooked in hooks.items():
            getattr(second, name).extend(hooked)
