"""Every object of a Kinto resource, read page by page so that memory stays flat.

Pages are in id order and each starts after the last id of the previous one (keyset
pagination): objects created or deleted meanwhile cannot shift a page and make the reader skip
one that was there all along.
"""

from kinto.core.storage import Filter, Sort
from kinto.core.utils import COMPARISON


PAGE = 1000


def page(storage, resource_name, parent_id, filters=None, after=None, limit=PAGE):
    """Up to ``limit`` objects matching ``filters``, in id order, with ids after ``after``."""
    rules = [[Filter("id", after, COMPARISON.GT)]] if after is not None else None
    return storage.list_all(
        resource_name=resource_name,
        parent_id=parent_id,
        filters=filters,
        sorting=[Sort("id", 1)],
        pagination_rules=rules,
        limit=limit,
    )


def every(storage, resource_name, parent_id, filters=None, limit=PAGE):
    """Yield every object of ``resource_name`` under ``parent_id`` matching ``filters``."""
    last = None
    while True:
        found = page(storage, resource_name, parent_id, filters, last, limit)
        yield from found
        if len(found) < limit:
            return
        last = found[-1]["id"]


def own_parent(parent_id, object_id):
    """The parent id of an object alone under ``parent_id``; ``parent_id + "*"`` lists them all,
    and the objects written under ``parent_id`` itself.

    Kinto's storage gives the objects of one parent distinct timestamps (``last_modified``,
    unique per parent on PostgreSQL): two transactions adding to one parent in the same
    millisecond collide, and the later is refused (Kinto's 409). Objects that any upload may
    add, whatever its record (a replaced or retained blob), each get a parent of their own.
    """
    return f"{parent_id}/{object_id}"


def find(storage, resource_name, parent_id, object_id):
    """The object ``object_id`` of ``resource_name``, under its own parent (:func:`own_parent`)
    or, written by an earlier version, under ``parent_id`` itself; None when there is none.

    One query, by id under ``parent_id + "*"``, never a ``get``: Kinto's memory backend makes
    an empty parent of any it is asked to get from, and these ids come from the network (GETs
    of random ids would grow it without end). Where to write the object back:
    :func:`parent_of`.
    """
    found = storage.list_all(
        resource_name=resource_name,
        parent_id=parent_id + "*",
        filters=[Filter("id", object_id, COMPARISON.EQ)],
    )
    return max(found, key=lambda obj: obj["last_modified"], default=None)


def parent_of(obj, parent_id):
    """The parent ``obj`` is stored under: the one it names (``parent``, written with it under
    its own), or ``parent_id`` for an object an earlier version wrote there."""
    return obj.get("parent", parent_id)


def delete(storage, resource_name, parent_id, obj):
    """Delete ``obj`` (found by :func:`find`) where it is stored, leaving no tombstone (these
    objects are ours, never synchronised by clients)."""
    storage.delete(
        resource_name=resource_name,
        parent_id=parent_of(obj, parent_id),
        object_id=obj["id"],
        with_deleted=False,
    )
