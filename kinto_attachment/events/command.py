"""``kinto-attachment-events --ini FILE list|retry|purge``: the outbox, seen and handled by
an operator.

- ``list [--state pending|delivered|dead]`` (default: dead): one line per event and
  destination: state, attempts, last error.
- ``retry [ID...]``: dead events (all of them, or those of the ids) pending again, from their
  first attempt; any server's dispatcher delivers them.
- ``purge ID... | --all``: dead events removed for good (those of the ids, or every one:
  never without ``--all``, so that an empty list of ids, a shell variable that was not set,
  drops nothing); their blobs are no longer held.

Like ``kinto-attachment-gc``, it refuses a configuration whose storage lives in each server's
process (the memory backend): it would see an outbox of its own, empty.
"""

import argparse
import sys

import transaction
from kinto.core.storage.exceptions import BackendError
from kinto.core.utils import msec_time

from ..state import outbox, shared
from . import claims


UNSHARED = """\
kinto-attachment-events: refused: {ini} keeps its records in Kinto's memory storage backend,
which lives inside each server's process: this command would only see an empty outbox of its
own. Use it with a shared storage backend (PostgreSQL)."""


def _line(row):
    event = row["event"]
    error = row.get("last_error") or ""
    return (
        f"{event['id']}  {row['destination']}  {row['state']}  {event['type']}  "
        f"{event['subject']}  attempts={row['attempts']}  {error}"
    ).rstrip()


def _selected(storage, ids):
    dead = outbox.rows(storage, outbox.DEAD)
    return [row for row in dead if not ids or row["event"]["id"] in ids]


def run(registry, command, state=outbox.DEAD, ids=()):
    """Run ``command`` on the outbox of ``registry``; return the lines to print."""
    storage = registry.storage
    with transaction.manager:
        if command == "list":
            return [_line(row) for row in outbox.rows(storage, state)]
        rows, done = claims.for_storage(storage), 0
        for row in _selected(storage, set(ids)):
            # Only while it is still dead: another operator's retry may have revived it.
            if command == "retry":
                now = msec_time()
                done += rows.revive(
                    row,
                    state=outbox.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    revived_at=now,
                    claimed_until=0,
                )
            else:
                done += rows.purge(row)
    verb = "retried" if command == "retry" else "purged"
    return [f"{done} dead events {verb}"]


#: The storage backend lost while the command ran: its transaction changed nothing.
INTERRUPTED = """\
kinto-attachment-events: failed: Kinto's storage backend was lost ({error}). Nothing was
changed (the command's transaction did not commit): run it again."""


def main(argv=None):
    """Exit codes: ``0`` done; ``1`` the storage backend failed (nothing changed); ``2``
    refused (a wrong command line, the memory backend, a backend it cannot reach)."""
    parser = argparse.ArgumentParser(prog="kinto-attachment-events", description=__doc__)
    parser.add_argument("--ini", required=True, help="the Kinto configuration file")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list events (dead ones by default)")
    listing.add_argument(
        "--state", choices=(outbox.PENDING, outbox.DELIVERED, outbox.DEAD), default=outbox.DEAD
    )
    retry = commands.add_parser("retry", help="deliver dead events again (all, or the ids')")
    retry.add_argument("ids", nargs="*", help="event ids")
    purge = commands.add_parser("purge", help="drop dead events for good (the ids', or --all)")
    purge.add_argument("ids", nargs="*", help="event ids")
    purge.add_argument("--all", action="store_true", help="every dead event")
    args = parser.parse_args(argv)
    if args.command == "purge" and bool(args.ids) == args.all:
        parser.error("purge: give the ids of the events to drop, or --all (not both)")
    if args.command != "list" and not all(args.ids):  # ``purge "$ID"``, the variable unset.
        parser.error(f"{args.command}: an empty event id")
    with shared.registry_of(parser.prog, args.ini, UNSHARED) as registry:
        if registry is None:
            return 2
        if args.command != "list" and shared.refuses_writes(parser.prog, args.ini, registry):
            return 2
        try:
            lines = run(
                registry, args.command, getattr(args, "state", None), getattr(args, "ids", ())
            )
            lines = lines or ["no events"]
        except BackendError as error:
            print(INTERRUPTED.format(error=str(error).splitlines()[0]), file=sys.stderr)
            return 1
    print("\n".join(lines))
    return 0
