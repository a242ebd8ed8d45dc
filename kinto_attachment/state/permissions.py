"""Deleting an object's permissions in Kinto's PostgreSQL permission backend takes its
neighbours' only when the object's id says so.

That backend deletes the access control entries of a deleted bucket, collection, group or
record by ``object_id LIKE`` its id (Kinto's ``*`` made ``%``), where ``_``, which ids may
hold, matches any character: deleting bucket ``a_c`` deleted the permissions of bucket
``abc`` (and of ``a-c``, ``a1c``...), their owner then refused (403) on his own bucket, and a
record ``r_1``'s delete took the permissions of ``r01``. The ids it is given are escaped here
(``_``, ``%`` and ``\\`` as themselves, ``*`` left as Kinto's wildcard). Reads by ``LIKE`` in
that backend only list ids that Kinto then looks for under their own parent."""

#: The module of Kinto's PostgreSQL permission backend (not imported: it needs SQLAlchemy).
BACKEND = "kinto.core.permission.postgresql"


def guard(permission):
    """Escape the ids given to ``permission.delete_object_permissions`` (Kinto's PostgreSQL
    backend only; once)."""
    if type(permission).__module__ != BACKEND or getattr(permission, "_guarded", False):
        return
    delete = permission.delete_object_permissions

    def delete_object_permissions(*object_ids):
        return delete(*(as_like_literal(object_id) for object_id in object_ids))

    permission.delete_object_permissions = delete_object_permissions
    permission._guarded = True


def as_like_literal(object_id):
    """``object_id`` as a ``LIKE`` pattern matching itself (PostgreSQL's escape character is
    ``\\``), but for ``*``, Kinto's wildcard, which the backend makes ``%``."""
    return object_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
