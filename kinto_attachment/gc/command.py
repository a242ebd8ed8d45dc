"""``kinto-attachment-gc``: one collection (:func:`kinto_attachment.gc.collect`) from a
configuration the servers share, its report printed; refused where the command could not
see what the servers see."""

import argparse
import sys

from kinto.core.storage.exceptions import BackendError

from ..state import promises, shared
from . import collect
from .store_check import Refused, unreachable


DESCRIPTION = """\
Collect what Kinto attachments no longer need: /data/files entries past their expiration,
resumable (tus) uploads abandoned past theirs, and, older than
kinto.attachment.gc.orphans_grace_seconds, whatever nothing references: staged temporary files
(.upload-*.part, S3 upload tails), incomplete S3 multipart uploads, and blobs named by no record
attachment, link, data file, resumable upload or retained old file; and replaced or deleted
files once kinto.attachment.gc.replaced_grace_seconds have passed. References to missing
blobs (dangling) are reported, never changed. The store (base_path, the S3 or the GCS bucket)
must hold nothing but attachments."""


#: Why the command refuses a storage backend that only a server's process can see.
UNSHARED = """\
kinto-attachment-gc: refused: {ini} keeps its records in Kinto's memory storage backend, which
lives inside each server's process. This command would start with an empty storage of its own,
see no record, and take every file under the store for an orphan. Servers running this
configuration collect by themselves (see kinto.attachment.gc.orphans_interval_seconds and
data_files.gc_interval_seconds); run this command against a shared storage backend
(PostgreSQL) only."""


#: Settings of the command that differ from what the servers recorded (formatted with
#: ``ini`` and ``settings``, a line each).
UNPROMISED = """\
kinto-attachment-gc: refused: {ini} does not configure what the servers promise about their
files, which a collection must honour:
{settings}
Nothing was read nor removed: give the command the servers' settings (their environment's
KINTO_ATTACHMENT_* and KINTO_* variables included), and run again."""


#: A storage backend lost while collecting: what was removed before is logged.
INTERRUPTED = """\
kinto-attachment-gc: failed: Kinto's storage backend was lost while collecting ({error}).
What was removed before is logged; nothing referenced was removed. Run the command again."""


#: A store the command cannot list: nothing is read nor removed.
STORE_UNREACHABLE = """\
kinto-attachment-gc: refused: the store {ini} configures cannot be listed ({error}).
Nothing was read nor removed: fix the bucket, its credentials or base_path, and run again."""


#: A store failing while collecting: what was removed before is logged.
STORE_FAILED = """\
kinto-attachment-gc: failed: the store failed while collecting ({error}). What was removed
before is logged; nothing referenced was removed. Run the command again."""


def main(argv=None):
    """``kinto-attachment-gc --ini FILE [--dry-run]``: collect once, print the report.

    Exit codes: ``0`` collected; ``2`` refused (a wrong command line, a configuration whose
    records this process cannot see, a read-only node's, a storage backend it cannot reach, a
    store that does not hold the files the records name, or settings that differ from those
    the servers recorded: nothing is removed); ``1`` the storage backend
    failed in the middle of a collection (every step removes only what it has just proved
    unreferenced, so running again is safe)."""
    parser = argparse.ArgumentParser(prog="kinto-attachment-gc", description=DESCRIPTION)
    parser.add_argument("--ini", required=True, help="the Kinto configuration file")
    parser.add_argument(
        "--dry-run", action="store_true", help="report what would be removed; remove nothing"
    )
    args = parser.parse_args(argv)
    with shared.registry_of(parser.prog, args.ini, UNSHARED) as registry:
        if registry is None:
            return 2
        if not args.dry_run and shared.refuses_writes(parser.prog, args.ini, registry):
            return 2
        if (error := unreachable(registry.attachment_store)) is not None:
            print(STORE_UNREACHABLE.format(ini=args.ini, error=error), file=sys.stderr)
            return 2
        if differing := promises.broken_by(registry):
            lines = "\n".join(
                f"  {name}: the servers' {theirs!r}, this configuration's {mine!r}"
                for name, (theirs, mine) in differing.items()
            )
            print(UNPROMISED.format(ini=args.ini, settings=lines), file=sys.stderr)
            return 2
        try:
            report = collect(registry, dry_run=args.dry_run)
        except Refused as refusal:
            print(f"kinto-attachment-gc: {refusal}", file=sys.stderr)
            return 2
        except BackendError as error:
            print(INTERRUPTED.format(error=str(error).splitlines()[0]), file=sys.stderr)
            return 1
        except OSError as error:  # The store's (StorageUnavailable), after its probe.
            print(STORE_FAILED.format(error=str(error).splitlines()[0]), file=sys.stderr)
            return 1
    print(report.describe())
    return 0
