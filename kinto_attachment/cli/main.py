"""The ``kinto-attachment`` command line.

Exit codes, for scripts: ``0`` everything was done; ``1`` something failed (the server refused,
the network failed, a download did not have the record's sha256): one line says what, and
the other files were still done; ``2`` the command line is wrong; ``130`` interrupted
(``Ctrl-C``): what was under way resumes on the next run.
"""

import os
import sys

from . import downloads, resolving, resumes, sync, uploads
from .answers import Failure
from .arguments import parse
from .folder import Folder
from .names import local_names, record_id_of, shown
from .pace import sha256_of
from .progress import Bars, report
from .remote import Remote
from .resolving import resolve


class Usage(Exception):
    """The command line cannot be run as written (exit code 2)."""


def _upload(remote, args, bars, jobs, compared=False, unsent=None):
    """Upload ``jobs`` (``(path, name, record id, data, sha256 or None, record as listed or
    None)``), skipping files already attached unless ``--force``, or unless the hashes were
    ``compared`` already (from the listed records). Each upload is verified: the sha256 the
    server stored must be the file's (it fails if the file changed meanwhile).

    An upload is conditional on the record being as it was read (``If-Match``, or
    ``If-None-Match: *`` when there was none): a record another client wrote since, maybe
    hours before the upload of a large folder reaches it, is not overwritten (``412``).
    ``--force`` reads nothing, and writes whatever the record is. ``unsent``: a set that
    gets the sha256 of each file whose upload failed."""
    failed = False
    for path, name, record_id, data, local, listed in jobs:
        try:
            forced = getattr(args, "force", False) and not compared
            record = listed if compared or forced else remote.record(record_id)
            unless = None if forced else _unless_changed(record)
            current = None if compared else _attachment(record).get("hash")
            # Known before the upload, always: the bytes sent are checked against it (a file
            # saved meanwhile is refused before its last byte, never attached torn) and it is
            # part of a resumable upload's key (a file rewritten since is not resumed).
            local = local or sha256_of(path)
            permissions = getattr(args, "permissions", None)
            if current is not None and current == local:
                if data is None and permissions is None:
                    bars.print(f"unchanged {name} ({record_id})")
                else:  # What was asked for besides the file, which is there.
                    _update(remote, record_id, data, permissions, unless)
                    bars.print(f"updated {name} ({record_id}), its file unchanged")
                continue
            metadata = uploads.upload(
                remote,
                path,
                record_id,
                bars,
                resumes.State(args.state),
                local,
                data=data,
                permissions=permissions,
                rate=args.limit_rate,
                headers=unless,
            )
            if metadata.get("hash") != local:
                stored = shown(metadata.get("hash"))
                raise Failure(f"the server stored sha256 {stored}, the file has {local}")
            bars.print(f"uploaded {name} ({record_id}) sha256 {local}")
        except (Failure, OSError) as e:
            failed = report(name, e)
            if unsent is not None and local is not None:
                unsent.add(local)
    return failed


def _update(remote, record_id, data, permissions, headers):
    """Give the record ``data`` and ``permissions`` (those given, as an upload would), unless
    it changed since it was read (``headers``)."""
    body = {"data": data} if data is not None else {}
    if permissions is not None:
        body["permissions"] = permissions
    remote.request("PATCH", remote.record_url(record_id), json=body, headers=headers)


def _attachment(record):
    attachment = (record or {}).get("attachment")
    return attachment if isinstance(attachment, dict) else {}


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
        if any(record_id == job[2] for job in jobs):  # The second would replace the first.
            raise Usage(f"{path}: another file given goes to its record {record_id}")
        jobs.append((path, name, record_id, args.data, None, None))
    with Bars(sum(_size(p) for p, *_ in jobs)) as bars:
        return _upload(remote, args, bars, jobs)


def _size(path):
    """The size of ``path`` for the progress bars: 0 for a file gone (or unreadable) since it
    was seen, which then fails alone when it is uploaded; the others are still done."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def download(remote, args):
    failed, wanted, given = False, [], {}
    if args.names or args.ids:
        found, failed = resolve(remote, args.names, args.ids)
        for text, record, path in found:
            why = downloads.check(record.get("attachment"))
            if why is not None:
                failed = report(text, why)
                continue
            wanted.append(record)
            if path is not None:
                given[record["id"]] = path
    else:
        for record in remote.records():
            record_id = record.get("id") if isinstance(record, dict) else None
            if not isinstance(record_id, str):
                failed = report("the server", f"listed {record!r:.100} as a record")
            elif record.get("attachment") is None:
                print(shown(f"skipped {record_id}: no attachment"), flush=True)
            elif (why := downloads.check(record["attachment"])) is not None:
                failed = report(record_id, why)
            else:
                wanted.append(record)
    names = local_names(wanted, given)
    subset = (args.names or args.ids) and not args.overwrite  # --overwrite asks no owner.
    claimed = resolving.claimed(remote) if subset else None
    with Folder(args.folder) as folder, Bars(sum(r["attachment"]["size"] for r in wanted)) as bars:
        for record in wanted:
            record_id, name = record["id"], names[record["id"]]
            try:
                fetched = downloads.download(
                    remote,
                    record_id,
                    record["attachment"],
                    folder,
                    name,
                    bars,
                    args.limit_rate,
                    args.overwrite,
                    claimed,
                )
                bars.print(f"{'downloaded' if fetched else 'unchanged'} {name} ({record_id})")
            except (Failure, OSError) as e:
                failed = report(name, e)
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
            sync.mark(name, e.marked_path, e.sha256),
            e.sha256,
            e.record,
        )
        for e in plan.new + plan.changed
    ]
    failed = False
    with Bars(sum(_size(p) for p, *_ in jobs)) as bars:
        for entry in plan.unchanged:
            bars.print(f"unchanged {entry}")
        for entry in plan.skipped:
            bars.print(f"skipped {shown(entry.path)}: {entry.note}")
        for entry in plan.conflicts:
            failed = report(entry.path, f"record {entry.record_id} {sync.conflict(entry)}")
        for entry in plan.diverged:
            failed = report(entry.path, f"record {entry.record_id} {sync.diverged(entry)}")
        # The files left without their record this run (an upload failed, a conflict): a gone
        # record holding one of them may be its old name's, its only copy on the server.
        unsent = {e.sha256 for e in plan.conflicts + plan.diverged}
        failed |= _upload(remote, args, bars, jobs, compared=True, unsent=unsent)
        for entry in plan.adopted:
            failed |= _mark(remote, name, entry, bars)
        for entry in plan.gone:
            if not args.delete:
                bars.print(f"gone {entry} {sync.WOULD_DELETE}")
                continue
            if sync.there(args.folder, entry.path, plan.skipped):  # Put back since the plan.
                bars.print(f"kept {entry}: its file is back in the folder")
                continue
            if sync.hash_of(entry.record) in unsent:  # A renamed file, left without its record.
                failed = report(entry.path, f"record {entry.record_id} {NOT_DELETED}")
                continue
            changed = _unless_changed(entry.record)
            failed |= _remove(remote, entry.path, entry.record_id, False, bars, changed)
        for entry in plan.kept:
            bars.print(f"kept {entry} {sync.REPLACED}")
    return failed


#: Why a gone record that holds a file this run left without its record is not deleted: it
#: may be that file's old name (renamed), its only copy on the server.
NOT_DELETED = (
    "not deleted: it holds a file of the folder that is not on its own record (a failed "
    "upload, a conflict): run again once it is"
)


def _unless_changed(record):
    """The header that makes a write fail if the record changed since it was listed (a
    record listed without its ``last_modified`` is never written: ``If-Match`` fails), or
    was created since it was found missing (``record`` None)."""
    if record is None:
        return {"If-None-Match": "*"}
    modified = record.get("last_modified")
    valid = isinstance(modified, int) and not isinstance(modified, bool)
    return {"If-Match": f'"{modified}"'} if valid else {"If-Match": '"unknown"'}


def _mark(remote, name, entry, bars):
    mark = sync.mark(name, entry.marked_path, entry.sha256)
    try:
        _update(remote, entry.record_id, mark, None, _unless_changed(entry.record))
    except Failure as e:
        return report(entry.path, e)
    bars.print(f"marked {entry}")
    return False


def _remove(remote, label, record_id, attachment_only, bars, headers=None):
    url = remote.record_url(record_id) + ("/attachment" if attachment_only else "")
    try:
        remote.request("DELETE", url, expected=(200, 204), headers=headers)
    except Failure as e:
        return report(label, e)
    named = label if label == record_id else f"{label} ({record_id})"
    bars.print(f"deleted {'attachment of ' if attachment_only else 'record '}{named}")
    return False


def rm(remote, args):
    if not args.names and not args.ids:
        raise Usage("name the records: NAME or --id ID")
    found, failed = resolve(remote, args.names, args.ids)
    with Bars(0) as bars:
        for text, record, _ in found:
            # Unless changed since it was read: another client's new version is not deleted.
            unless = _unless_changed(record)
            failed |= _remove(remote, text, record["id"], args.attachment_only, bars, unless)
    return failed


COMMANDS = {"upload": upload, "download": download, "sync": mirror, "rm": rm}


def main(argv=None):
    for stream in (sys.stdout, sys.stderr):
        # A name the terminal's encoding cannot write (from the server, or the folder) is
        # escaped rather than a traceback that stops the run.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = parse(argv)
    try:
        try:  # What it refuses is the command line's: the server's URL, the credentials.
            remote = Remote(args.server, args.bucket, args.collection, args.auth, args.retries)
        except Failure as e:
            raise Usage(str(e)) from None
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
