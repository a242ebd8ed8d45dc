"""Whether a command sees what the servers see, and the registry it works on.

A command (``kinto-attachment-gc``, ``kinto-attachment-events``) loads the servers' own
configuration, and acts on the state it finds in Kinto's storage backend: with PostgreSQL,
the servers' state; with the memory backend, an empty storage of its own, which lives inside
each server's process. The commands refuse the latter rather than act on nothing, or on the
wrong thing (take every file for an orphan).
"""

import contextlib
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import transaction
from kinto.core.storage import memory
from kinto.core.storage.exceptions import BackendError
from pyramid.settings import asbool


#: Why a command refuses a storage backend it cannot reach (formatted with ``prog``, the
#: command's name, ``ini`` and ``error``).
UNREACHABLE = """\
{prog}: refused: Kinto's storage backend, as {ini} configures it, cannot be reached
({error}). Nothing was read nor removed: start the database, or fix its URL in {ini}, and
run again."""


#: Why a command refuses a configuration without the plugin.
NOT_INCLUDED = """\
{prog}: refused: {ini} does not include kinto_attachment (kinto.includes): it is not the
configuration of the servers whose attachments this command works on."""


def shares_state(registry):
    """Whether a process of its own, started from the same configuration, sees what the
    servers see: not with the memory backend, whose records live in each server's process."""
    return not isinstance(registry.storage, memory.Storage)


def on_its_own(function, *args):
    """``function(*args)`` in a thread of its own, so in a transaction of its own: a request's
    transaction may be under way in this thread, and its rollback must not take back what
    ``function`` writes (the instance's tag, once names carry it)."""
    with ThreadPoolExecutor(1, thread_name_prefix="attachment-state") as one:
        return one.submit(function, *args).result()


def rolls_back(storage):
    """Whether Kinto's storage backend undoes the writes of a transaction that fails
    (PostgreSQL); the memory backend writes at once and keeps them."""
    return getattr(storage, "client", None) is not None


def reachable(registry):
    """The error that keeps a command from reading Kinto's storage backend, or None.

    Kinto connects to PostgreSQL at the first query, not at start-up: without this probe,
    a database that is down or misnamed fails a command in the middle of its work, with a
    traceback, instead of a refusal before it has read or removed anything."""
    try:
        # Kinto's client logs the failure with its whole traceback (SQLAlchemy's and
        # psycopg's, some ninety lines) before it raises: the command says it in one.
        with quiet_client(), transaction.manager:
            registry.storage.list_all(resource_name="bucket", parent_id="", limit=1)
    except BackendError as error:
        return str(error.original or error).splitlines()[0]
    return None


#: The logger of Kinto's PostgreSQL client.
_CLIENT_LOGGER = "kinto.core.storage.postgresql.client"


@contextlib.contextmanager
def quiet_client():
    """Kinto's PostgreSQL client silenced, for a failure the caller reports itself."""
    logger = logging.getLogger(_CLIENT_LOGGER)
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def in_command(registry):
    """Whether the app was loaded by a command (``kinto migrate``, ``kinto flush-cache``, ours:
    Kinto's ``registry.command``) rather than to serve: a command starts none of the server's
    threads. ``kinto migrate --dry-run`` started the periodic collector, whose round, once the
    migration took longer than its interval, adopted and deleted for real."""
    return bool(getattr(registry, "command", None))


def read_only(registry):
    """Whether the server is ``kinto.readonly`` (often on a read replica): as Kinto, it writes
    nothing, so it starts none of the threads that write (the collector, the dispatcher),
    records no promise and adopts nothing; those are left to the other servers."""
    return asbool(registry.settings.get("readonly"))


def writes_by_itself(registry):
    """Whether this process may write with no request asking (the collector's rounds, the
    dispatcher's, the promises its first request records): a server, not a command
    (:func:`in_command`), and not a read-only one (:func:`read_only`)."""
    return not in_command(registry) and not read_only(registry)


#: Why a command that writes refuses a read-only node's configuration.
READ_ONLY = """\
{prog}: refused: {ini} configures a read-only node (kinto.readonly), whose database may be a
replica that takes no write, and which writes nothing: run it with the configuration of a node
that writes."""


def refuses_writes(prog, ini, registry):
    """Whether a command that writes must refuse ``registry`` (a read-only node's), the reason
    printed (:data:`READ_ONLY`)."""
    if read_only(registry):
        print(READ_ONLY.format(prog=prog, ini=ini), file=sys.stderr)
        return True
    return False


def in_our_command(registry):
    """Whether one of this plugin's commands loaded the app (``kinto-attachment-gc``,
    ``kinto-attachment-events``): they act on the servers' store as they find it, never on
    one they would make (a ``base_path`` mistyped, a volume not mounted). Kinto's own
    (``kinto migrate``, which sets a deployment up) prepare it as a server does."""
    return str(getattr(registry, "command", None) or "").startswith("kinto-attachment")


#: Why a command refuses a configuration whose application does not load (an extra not
#: installed: ``config/s3.ini`` without boto3; a setting Kinto or a plugin refuses).
UNLOADABLE = """\
{prog}: refused: the application {ini} configures does not load ({error}). Install what it
needs (its store's or its metrics' extra) or fix the setting: the command runs with the
servers' configuration, as they run."""


@contextlib.contextmanager
def registry_of(prog, ini, unshared):
    """For the command ``prog``: the registry of the app ``ini`` configures, or None once
    the reason is printed: ``ini`` is no readable file, its app does not load
    (:data:`UNLOADABLE`: a traceback told an operator less), or it does not include the plugin
    (:data:`NOT_INCLUDED`), the command could not see what the servers see
    (:func:`shares_state`: ``unshared``, a message formatted with ``ini``), or it cannot
    reach the storage backend (:data:`UNREACHABLE`, :func:`reachable`).

    The app is loaded as a command's (:func:`in_command`): without the server's threads (the
    periodic collector, the events' dispatcher), a command does its one job."""
    from pyramid.paster import bootstrap, setup_logging

    if not os.path.isfile(ini) or not os.access(ini, os.R_OK):
        print(f"{prog}: refused: {ini} is no readable file.", file=sys.stderr)
        yield None
        return
    try:
        setup_logging(ini)  # A loader, a file, a log handler: the configuration's too.
        loaded = bootstrap(ini, options={"command": prog})
    except Exception as error:  # noqa: BLE001 (whatever the app raises: a configuration to fix)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(
            UNLOADABLE.format(prog=prog, ini=ini, error=f"{type(error).__name__}: {reason}"),
            file=sys.stderr,
        )
        yield None
        return
    with loaded as env:
        registry = env["registry"]
        if not hasattr(registry, "attachment_store"):
            print(NOT_INCLUDED.format(prog=prog, ini=ini), file=sys.stderr)
            yield None
        elif not shares_state(registry):
            print(unshared.format(ini=ini), file=sys.stderr)
            yield None
        elif (error := reachable(registry)) is not None:
            print(UNREACHABLE.format(prog=prog, ini=ini, error=error), file=sys.stderr)
            yield None
        else:
            yield registry
