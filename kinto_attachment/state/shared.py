"""Whether a command sees what the servers see, and the registry it works on.

A command (``kinto-attachment-gc``, ``kinto-attachment-events``) loads the servers' own
configuration, and acts on the state it finds in Kinto's storage backend: with PostgreSQL,
the servers' state; with the memory backend, an empty storage of its own, which lives inside
each server's process. The commands refuse the latter rather than act on nothing, or on the
wrong thing (take every file for an orphan).
"""

import contextlib
import sys

from kinto.core.storage import memory


def shares_state(registry):
    """Whether a process of its own, started from the same configuration, sees what the
    servers see: not with the memory backend, whose records live in each server's process."""
    return not isinstance(registry.storage, memory.Storage)


def rolls_back(storage):
    """Whether Kinto's storage backend undoes the writes of a transaction that fails
    (PostgreSQL); the memory backend writes at once and keeps them."""
    return getattr(storage, "client", None) is not None


@contextlib.contextmanager
def registry_of(ini, unshared):
    """For a command: the registry of the app ``ini`` configures, or None once ``unshared``
    (a message, formatted with ``ini``) is printed, when the command could not see what the
    servers see (:func:`shares_state`).

    Loading the app started the server's threads (the periodic collector, the events'
    dispatcher): they are stopped, a command does its one job."""
    from pyramid.paster import bootstrap, setup_logging

    setup_logging(ini)
    with bootstrap(ini) as env:
        registry = env["registry"]
        if hasattr(registry, "attachment_gc_stop"):
            registry.attachment_gc_stop.set()
        if hasattr(registry, "attachment_dispatcher"):
            registry.attachment_dispatcher.stop()
        if shares_state(registry):
            yield registry
        else:
            print(unshared.format(ini=ini), file=sys.stderr)
            yield None
