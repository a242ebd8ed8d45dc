"""The ``kinto-attachment`` command line.

Exit codes, for scripts: ``0`` everything was done; ``1`` something failed (the server refused,
the network failed, a download did not have the record's sha256): one line says what, and
the other files were still done; ``2`` the command line is wrong; ``130`` interrupted
(``Ctrl-C``): what was under way resumes on the next run.
"""

import argparse
import json
import os
import sys

from . import downloads, sync, uploads
from .folder import Folder
from .names import argument_path, key, local_names, record_id_of, shown
from .progress import Bars
from .remote import Failure, Remote, sha256_of


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


class Usage(Exception):
    """The command line cannot be run as written (exit code 2)."""


def _rate(text):
    """``500K``, ``2M``, ``1G`` or bytes, per second."""
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    factor = units.get(text[-1:].upper(), 1)
    number = text[:-1] if factor > 1 else text
    try:
        return int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r}") from None


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
        "--id", action="append", default=[], dest="ids", metavar="ID", help="a record id"
    )


def parser():
    env = os.environ.get
    main = argparse.ArgumentParser(
        prog="kinto-attachment", description=DESCRIPTION, epilog=ENVIRONMENT
    )
    main.add_argument("-s", "--server", default=env("KINTO_SERVER", DEFAULT_SERVER))
    main.add_argument("-a", "--auth", default=env("KINTO_AUTH"), help="user:password")
    for short, name in (("-b", "bucket"), ("-c", "collection")):
        default = env(f"KINTO_{name.upper()}")
        main.add_argument(short, f"--{name}", default=default, required=default is None)
    main.add_argument("--retries", type=int, default=3, help="of each idempotent request")
    main.add_argument("--limit-rate", type=_rate, help="bytes per second, each way (2M)")
    main.add_argument("--state", default=_state_path(), help="where unfinished uploads are kept")
    commands = main.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "upload",
        help="attach files to records (resumable)",
        description="Attach each FILE to the record of its name (or to --id).",
        epilog=NAMES,
    )
    up.add_argument("files", nargs="+", metavar="FILE")
    up.add_argument(
        "--id", "--record", dest="record", help="record id (one file; default: from its name)"
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

    mirror = commands.add_parser(
        "sync",
        help="make the collection mirror a folder",
        description="Upload the files of FOLDER that the collection does not have, marking "
        "their records with the folder's name and their path.",
        epilog=DELETE,
    )
    mirror.add_argument("folder", metavar="FOLDER")
    mirror.add_argument("--delete", action="store_true", help="delete records of gone files")
    mirror.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    mirror.add_argument(
        "--as", dest="folder_name", metavar="NAME", help="the folder's name (default: its own)"
    )
    mirror.add_argument(
        "--follow-symlinks", action="store_true", help="follow links that leave FOLDER too"
    )

    remove = commands.add_parser(
        "rm", help="delete records, or only their attachments", epilog=NAMES
    )
    _named(remove, "a file's name or a record id")
    remove.add_argument("--attachment-only", action="store_true", help="keep the records")
    return main


def _upload(remote, args, bars, jobs, compared=False):
    """Upload ``jobs`` (``(path, name, record id, data, sha256 or None)``), skipping files
    already attached unless ``--force``, or unless the hashes were ``compared`` already. Each
    upload is verified: the sha256 the server stored must be the file's (it fails if the file
    changed meanwhile)."""
    failed = False
    for path, name, record_id, data, local in jobs:
        try:
            record = None if compared or args.force else remote.record(record_id)
            current = _attachment(record).get("hash")
            local = local or (None if current is None else sha256_of(path))
            if current is not None and current == local:
                bars.print(f"unchanged {name} ({record_id})")
                continue
            metadata = uploads.upload(
                remote,
                path,
                record_id,
                bars,
                uploads.State(args.state),
                data=data,
                permissions=getattr(args, "permissions", None),
                rate=args.limit_rate,
            )
            local = local or sha256_of(path)  # Hashed once: before, or after the upload.
            if metadata.get("hash") != local:
                stored = shown(metadata.get("hash"))
                raise Failure(f"the server stored sha256 {stored}, the file has {local}")
            bars.print(f"uploaded {name} ({record_id}) sha256 {local}")
        except (Failure, OSError) as e:
            failed = _failed(name, e)
    return failed


def _attachment(record):
    attachment = (record or {}).get("attachment")
    return attachment if isinstance(attachment, dict) else {}


def _failed(what, error):
    print(shown(f"kinto-attachment: {what}: {error}"), file=sys.stderr, flush=True)
    return True


def upload(remote, args):
    if args.record and len(args.files) > 1:
        raise Usage("--id names one record: give one file")
    jobs = []
    for path in args.files:
        if not os.path.isfile(path):
            raise Usage(f"not a file: {path}")
        name = os.path.basename(path)
        try:
            record_id = args.record or record_id_of(name)
        except UnicodeEncodeError:
            raise Usage(f"not a UTF-8 name: {path} (give its record with --id)") from None
        jobs.append((path, name, record_id, args.data, None))
    with Bars(sum(os.path.getsize(p) for p, *_ in jobs)) as bars:
        return _upload(remote, args, bars, jobs)


def resolve(remote, names, ids):
    """``([(argument, record, path or None)], failed)``: the record each NAME and ``--id``
    designates, once each (``path``: the file name it was designated by)."""
    found, failed, catalogue = {}, False, None
    for text in names:
        path = argument_path(text)
        by_name = remote.record(record_id_of(path)) if path else None
        by_id = remote.record(text) if "/" not in text and text not in (".", "..") else None
        if by_name is not None and by_id is not None:
            failed = _failed(
                text,
                f"both the name of the file of record {by_name['id']} and a record id: "
                f"give the record with --id",
            )
            continue
        if by_name is None and by_id is None and path is not None:
            if catalogue is None:
                catalogue = _catalogue(remote)
            by_name = catalogue.get(key(path))
        if by_name is None and by_id is None:
            failed = _failed(text, "no such file or record")
        elif by_name is not None:
            found.setdefault(by_name["id"], (text, by_name, path))
        else:
            found.setdefault(by_id["id"], (text, by_id, None))
    for text in ids:
        record = remote.record(text)
        if record is None:
            failed = _failed(text, "no such record")
        else:
            found.setdefault(record["id"], (text, record, None))
    return list(found.values()), failed


def _catalogue(remote):
    """``{key(name): record}``: the records of the collection by the name download gives
    their files."""
    records = {r["id"]: r for r in listed(remote) if downloads.check(r.get("attachment")) is None}
    return {key(name): records[rid] for rid, name in local_names(records.values()).items()}


def listed(remote):
    """The records of the collection that are objects with a string id."""
    for record in remote.records():
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            yield record


def download(remote, args):
    failed, wanted, given = False, [], {}
    if args.names or args.ids:
        found, failed = resolve(remote, args.names, args.ids)
        for text, record, path in found:
            why = downloads.check(record.get("attachment"))
            if why is not None:
                failed = _failed(text, why)
                continue
            wanted.append(record)
            if path is not None:
                given[record["id"]] = path
    else:
        for record in remote.records():
            record_id = record.get("id") if isinstance(record, dict) else None
            if not isinstance(record_id, str):
                failed = _failed("the server", f"listed {record!r:.100} as a record")
            elif record.get("attachment") is None:
                print(shown(f"skipped {record_id}: no attachment"), flush=True)
            elif (why := downloads.check(record["attachment"])) is not None:
                failed = _failed(record_id, why)
            else:
                wanted.append(record)
    names = local_names(wanted, given)
    with Folder(args.folder) as folder, Bars(sum(r["attachment"]["size"] for r in wanted)) as bars:
        for record in wanted:
            record_id, name = record["id"], names[record["id"]]
            try:
                fetched = downloads.download(
                    remote, record_id, record["attachment"], folder, name, bars, args.limit_rate
                )
                bars.print(f"{'downloaded' if fetched else 'unchanged'} {name} ({record_id})")
            except (Failure, OSError) as e:
                failed = _failed(name, e)
    return failed


def mirror(remote, args):
    if not os.path.isdir(args.folder):
        raise Usage(f"not a folder: {args.folder}")
    name = args.folder_name or os.path.basename(os.path.abspath(args.folder))
    if not name:
        raise Usage(f"{args.folder} has no name: give it one with --as NAME")
    plan = sync.plan(remote, args.folder, name, args.follow_symlinks)
    if args.dry_run:
        for line in plan.lines(args.delete):
            print(line)
        return False
    jobs = [
        (
            os.path.join(args.folder, e.path),
            e.path,
            e.record_id,
            sync.mark(name, e.path, e.sha256),
            e.sha256,
        )
        for e in plan.new + plan.changed
    ]
    failed = False
    with Bars(sum(os.path.getsize(p) for p, *_ in jobs)) as bars:
        for entry in plan.unchanged:
            bars.print(f"unchanged {entry}")
        for entry in plan.skipped:
            bars.print(f"skipped {shown(entry.path)}: {entry.note}")
        for entry in plan.conflicts:
            failed = _failed(entry.path, f"record {entry.record_id} {sync.conflict(entry)}")
        failed |= _upload(remote, args, bars, jobs, compared=True)
        for entry in plan.adopted:
            failed |= _mark(remote, name, entry, bars)
        for entry in plan.gone:
            if not args.delete:
                bars.print(f"gone {entry} {sync.WOULD_DELETE}")
                continue
            changed = _unless_changed(entry.record)
            failed |= _remove(remote, entry.path, entry.record_id, False, bars, changed)
        for entry in plan.kept:
            bars.print(f"kept {entry} {sync.REPLACED}")
    return failed


def _unless_changed(record):
    """The header that makes a write fail if the record changed since it was listed (a
    record listed without its ``last_modified`` is never written: ``If-Match`` fails)."""
    modified = record.get("last_modified")
    valid = isinstance(modified, int) and not isinstance(modified, bool)
    return {"If-Match": f'"{modified}"'} if valid else {"If-Match": '"unknown"'}


def _mark(remote, name, entry, bars):
    try:
        remote.request(
            "PATCH",
            remote.record_url(entry.record_id),
            json={"data": sync.mark(name, entry.path, entry.sha256)},
            headers=_unless_changed(entry.record),
        )
    except Failure as e:
        return _failed(entry.path, e)
    bars.print(f"marked {entry}")
    return False


def _remove(remote, label, record_id, attachment_only, bars, headers=None):
    url = remote.record_url(record_id) + ("/attachment" if attachment_only else "")
    try:
        remote.request("DELETE", url, expected=(200, 204), headers=headers)
    except Failure as e:
        return _failed(label, e)
    named = label if label == record_id else f"{label} ({record_id})"
    bars.print(f"deleted {'attachment of ' if attachment_only else 'record '}{named}")
    return False


def rm(remote, args):
    if not args.names and not args.ids:
        raise Usage("name the records: NAME or --id ID")
    found, failed = resolve(remote, args.names, args.ids)
    with Bars(0) as bars:
        for text, record, _ in found:
            failed |= _remove(remote, text, record["id"], args.attachment_only, bars)
    return failed


COMMANDS = {"upload": upload, "download": download, "sync": mirror, "rm": rm}


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        remote = Remote(args.server, args.bucket, args.collection, args.auth, args.retries)
        return 1 if COMMANDS[args.command](remote, args) else 0
    except Usage as e:
        print(shown(f"kinto-attachment: {e}"), file=sys.stderr)
        return 2
    except (Failure, OSError) as e:
        print(shown(f"kinto-attachment: {e}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kinto-attachment: interrupted; run it again to resume", file=sys.stderr)
        return 130
