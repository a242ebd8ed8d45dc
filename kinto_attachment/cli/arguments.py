"""The ``kinto-attachment`` command line's arguments: its commands, their options, and the
environment variables options default to."""

import argparse
import json
import os


DEFAULT_SERVER = "http://localhost:8888/v1"
DESCRIPTION = "Upload, download and sync the attachments of a Kinto collection."
ENVIRONMENT = """\
Options default to environment variables: KINTO_SERVER, KINTO_AUTH (user:password or
"Bearer token"), KINTO_BUCKET, KINTO_COLLECTION. The credentials go to the origin of
--server only."""
NAMES = """\
NAME: a file's name as upload and sync gave it (upload: the file's name, greeting.txt; sync:
its path in the folder, fonts/a.woff2), as download writes it, or a record id. A NAME that is
both a file's name and another record's id is refused: give the record id with --id."""
DELETE = """\
--delete deletes a record only when this folder's sync marked it (its synced_from field
names the folder, by --as or its own name, the file's path and the sha256 it attached), it
still holds that file, and nothing is at that path in the folder any more. Records attached
otherwise are never deleted."""


def _rate(text):
    """``500K``, ``2M``, ``1G`` or bytes, per second: at least one byte, and finite
    (``int(float("inf"))`` raises :class:`OverflowError`, which argparse would let out as a
    traceback; ``0`` or ``-1`` would silently mean no limit at all)."""
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    factor = units.get(text[-1:].upper(), 1)
    number = text[:-1] if factor > 1 else text
    try:
        rate = int(float(number) * factor)
    except (ValueError, OverflowError):
        rate = 0
    if rate < 1:
        raise argparse.ArgumentTypeError(f"not a rate of at least 1 byte a second: {text!r}")
    return rate


def _count(text):
    """A number of retries: a whole number, 0 or more (``-1`` meant none, unsaid)."""
    try:
        count = int(text)
    except ValueError:
        count = -1
    if count < 0:
        raise argparse.ArgumentTypeError(f"not a whole number of 0 or more: {text!r}")
    return count


def _record_id(text):
    """A record id given on the command line: an empty one (``--id "$ID"``, the variable
    unset) is a mistake, not a request for the default."""
    if not text:
        raise argparse.ArgumentTypeError("an empty record id")
    return text


def _folder_name(text):
    """A folder's name given with ``--as``: an empty one (``--as "$NAME"``, the variable
    unset) is a mistake, not a request for the folder's own name, whose records another
    folder's sync may own (``--delete`` would delete them)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty folder name")
    return text


def _json_object(text):
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("not a JSON object")
    return value


def _state_path():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "kinto-attachment", "uploads.json")


def _named(command, what):
    """NAME arguments, and ``--id`` for record ids."""
    command.add_argument("names", nargs="*", metavar="NAME", help=what)
    command.add_argument(
        "--id",
        action="append",
        default=[],
        dest="ids",
        metavar="ID",
        type=_record_id,
        help="a record id",
    )


def _common(parser, defaults):
    """The options of every command, given before the command or after it: ``defaults``
    before it (the environment's), none after it (an option given there overrides)."""
    env = os.environ.get

    def default(value):
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("-s", "--server", default=default(env("KINTO_SERVER", DEFAULT_SERVER)))
    parser.add_argument("-a", "--auth", default=default(env("KINTO_AUTH")), help="user:password")
    for short, name in (("-b", "bucket"), ("-c", "collection")):
        parser.add_argument(short, f"--{name}", default=default(env(f"KINTO_{name.upper()}")))
    parser.add_argument(
        "--retries", type=_count, default=default(3), help="of each idempotent request"
    )
    parser.add_argument(
        "--limit-rate", type=_rate, default=default(None), help="bytes per second (2M)"
    )
    parser.add_argument(
        "--state", default=default(_state_path()), help="where unfinished uploads are kept"
    )


def parse(argv=None):
    """The command line's arguments (``argv``, else ``sys.argv``): a wrong one exits (2)."""
    main = parser()
    args = main.parse_args(argv)
    for name in ("bucket", "collection"):
        if getattr(args, name) is None:
            main.error(f"--{name} (or KINTO_{name.upper()}) is required")
    return args


def parser():
    main = argparse.ArgumentParser(
        prog="kinto-attachment", description=DESCRIPTION, epilog=ENVIRONMENT
    )
    _common(main, defaults=True)
    commands = main.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "upload",
        help="attach files to records (resumable)",
        description="Attach each FILE to the record of its name (or to --id).",
        epilog=NAMES,
    )
    up.add_argument("files", nargs="+", metavar="FILE")
    up.add_argument(
        "--id",
        "--record",
        dest="record",
        type=_record_id,
        help="record id (one file; default: from its name)",
    )
    up.add_argument("--data", type=_json_object, help="JSON object merged into the record")
    up.add_argument("--permissions", type=_json_object, help="JSON object of permissions")
    up.add_argument("--force", action="store_true", help="upload even when unchanged")

    down = commands.add_parser(
        "download",
        help="download attachments into a folder",
        description="Download the attachments named (default: every one of the collection) "
        "into --folder, under their names, subfolders kept.",
        epilog=NAMES,
    )
    _named(down, "default: every record with an attachment")
    down.add_argument("--folder", default=".", help="where to write the files (default: .)")
    down.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files that differ from their record's though no download wrote them",
    )

    mirror = commands.add_parser(
        "sync",
        help="make the collection mirror a folder",
        description="Upload the files of FOLDER whose record does not have them (the "
        "record of each file's path), marking it with the folder's name and the path.",
        epilog=DELETE,
    )
    mirror.add_argument("folder", metavar="FOLDER")
    mirror.add_argument("--delete", action="store_true", help="delete records of gone files")
    mirror.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    mirror.add_argument(
        "--as",
        dest="folder_name",
        metavar="NAME",
        type=_folder_name,
        help="the folder's name (default: its own)",
    )
    mirror.add_argument(
        "--follow-symlinks", action="store_true", help="follow links that leave FOLDER too"
    )

    remove = commands.add_parser(
        "rm", help="delete records, or only their attachments", epilog=NAMES
    )
    _named(remove, "a file's name or a record id")
    remove.add_argument("--attachment-only", action="store_true", help="keep the records")
    for command in commands.choices.values():
        _common(command, defaults=False)
    return main
