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
from .progress import Bars
from .remote import Failure, Remote, record_id_of, sha256_of


DEFAULT_SERVER = "http://localhost:8888/v1"
DESCRIPTION = "Upload, download and sync the attachments of a Kinto collection."
ENVIRONMENT = """\
Options default to environment variables: KINTO_SERVER, KINTO_AUTH (user:password or
"Bearer token"), KINTO_BUCKET, KINTO_COLLECTION."""


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

    up = commands.add_parser("upload", help="attach files to records (resumable)")
    up.add_argument("files", nargs="+", metavar="FILE")
    up.add_argument("--record", help="record id (one file only; default: from the file name)")
    up.add_argument("--data", type=_json_object, help="JSON object merged into the record")
    up.add_argument("--permissions", type=_json_object, help="JSON object of permissions")
    up.add_argument("--force", action="store_true", help="upload even when unchanged")

    down = commands.add_parser("download", help="download attachments into a folder")
    down.add_argument("records", nargs="*", metavar="RECORD", help="default: every record")
    down.add_argument("--folder", default=".", help="where to write the files (default: .)")

    mirror = commands.add_parser("sync", help="make the collection mirror a folder")
    mirror.add_argument("folder", metavar="FOLDER")
    mirror.add_argument("--delete", action="store_true", help="delete records of gone files")
    mirror.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")

    remove = commands.add_parser("rm", help="delete records, or only their attachments")
    remove.add_argument("records", nargs="+", metavar="RECORD")
    remove.add_argument("--attachment-only", action="store_true", help="keep the records")
    return main


def _upload(remote, args, bars, jobs, compared=False):
    """Upload ``jobs`` (``(path, name, record id)``), skipping files already attached unless
    ``--force``, or unless the hashes were ``compared`` already. Each upload is verified: the
    sha256 the server stored must be the file's (it fails if the file changed meanwhile)."""
    failed = False
    for path, name, record_id in jobs:
        try:
            record = None if compared or args.force else remote.record(record_id)
            current = ((record or {}).get("attachment") or {}).get("hash")
            local = None if current is None else sha256_of(path)
            if current is not None and current == local:
                bars.print(f"unchanged {name} ({record_id})")
                continue
            metadata = uploads.upload(
                remote,
                path,
                record_id,
                bars,
                uploads.State(args.state),
                data=getattr(args, "data", None),
                permissions=getattr(args, "permissions", None),
                rate=args.limit_rate,
            )
            local = local or sha256_of(path)  # Hashed once: before, or after the upload.
            if metadata["hash"] != local:
                raise Failure(f"the server stored sha256 {metadata['hash']}, the file has {local}")
            bars.print(f"uploaded {name} ({record_id}) sha256 {metadata['hash']}")
        except (Failure, OSError) as e:
            failed = _failed(name, e)
    return failed


def _failed(what, error):
    print(f"kinto-attachment: {what}: {error}", file=sys.stderr, flush=True)
    return True


def upload(remote, args):
    if args.record and len(args.files) > 1:
        raise Usage("--record names one record: give one file")
    jobs = [
        (path, os.path.basename(path), args.record or record_id_of(os.path.basename(path)))
        for path in args.files
    ]
    missing = [p for p, _, _ in jobs if not os.path.isfile(p)]
    if missing:
        raise Usage(f"not a file: {', '.join(missing)}")
    with Bars(sum(os.path.getsize(p) for p, _, _ in jobs)) as bars:
        return _upload(remote, args, bars, jobs)


def download(remote, args):
    if args.records:
        found = [(rid, remote.record(rid)) for rid in args.records]
    else:
        found = [(record["id"], record) for record in remote.records()]
    failed = False
    wanted = []
    for record_id, record in found:
        if record is None or not record.get("attachment"):
            failed = _failed(record_id, "no such record, or no attachment")
        else:
            wanted.append((record_id, record["attachment"]))
    os.makedirs(args.folder, exist_ok=True)
    taken = set()
    with Bars(sum(a["size"] for _, a in wanted)) as bars:
        for record_id, attachment in wanted:
            name = downloads.local_name(attachment, record_id, taken)
            taken.add(name)
            try:
                target = os.path.join(args.folder, name)
                fetched = downloads.download(
                    remote, record_id, attachment, target, bars, rate=args.limit_rate
                )
                bars.print(f"{'downloaded' if fetched else 'unchanged'} {name} ({record_id})")
            except (Failure, OSError) as e:
                failed = _failed(name, e)
    return failed


def mirror(remote, args):
    if not os.path.isdir(args.folder):
        raise Usage(f"not a folder: {args.folder}")
    plan = sync.plan(remote, args.folder)
    if args.dry_run:
        for line in plan.lines(args.delete):
            print(line)
        return False
    jobs = [(os.path.join(args.folder, n), n, rid) for n, rid in plan.new + plan.changed]
    with Bars(sum(os.path.getsize(p) for p, _, _ in jobs)) as bars:
        for name, record_id in plan.unchanged:
            bars.print(f"unchanged {name} ({record_id})")
        failed = _upload(remote, args, bars, jobs, compared=True)
        for record_id in plan.gone if args.delete else ():
            failed |= _remove(remote, record_id, False, bars)
    return failed


def _remove(remote, record_id, attachment_only, bars):
    url = remote.record_url(record_id) + ("/attachment" if attachment_only else "")
    try:
        remote.request("DELETE", url, expected=(200, 204))
    except Failure as e:
        return _failed(record_id, e)
    bars.print(f"deleted {'attachment of ' if attachment_only else 'record '}{record_id}")
    return False


def rm(remote, args):
    with Bars(0) as bars:
        results = [_remove(remote, rid, args.attachment_only, bars) for rid in args.records]
    return any(results)


COMMANDS = {"upload": upload, "download": download, "sync": mirror, "rm": rm}


def main(argv=None):
    args = parser().parse_args(argv)
    remote = Remote(args.server, args.bucket, args.collection, args.auth, args.retries)
    try:
        return 1 if COMMANDS[args.command](remote, args) else 0
    except Usage as e:
        print(f"kinto-attachment: {e}", file=sys.stderr)
        return 2
    except Failure as e:
        print(f"kinto-attachment: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kinto-attachment: interrupted; run it again to resume", file=sys.stderr)
        return 130
