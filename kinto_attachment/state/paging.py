"""Every object of a Kinto resource, read page by page so that memory stays flat.

Pages are in id order and each starts after the last id of the previous one (keyset
pagination): objects created or deleted meanwhile cannot shift a page and make the reader skip
one that was there all along.
"""

from kinto.core.storage import Filter, Sort
from kinto.core.storage.exceptions import ObjectNotFoundError
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
    """``(parent, object)``: the object ``object_id`` of ``resource_name`` under its own parent
    (:func:`own_parent`) or, written there by an earlier version, under ``parent_id`` itself;
    ``(its own parent, None)`` when neither has it. Writers update it where it is found."""
    own = own_parent(parent_id, object_id)
    for parent in (own, parent_id):
        try:
            return parent, storage.get(
                resource_name=resource_name, parent_id=parent, object_id=object_id
            )
        except ObjectNotFoundError:
            continue
    return own, None
