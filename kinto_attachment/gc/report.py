"""What one collection found and removed (or, in a dry run, would remove), as the command
prints it and the metrics count it."""

import dataclasses


@dataclasses.dataclass
class Report:
    """What one collection found, and removed unless ``dry_run``."""

    dry_run: bool = False
    #: ``/data/files`` entries that had expired.
    expired_files: list = dataclasses.field(default_factory=list)
    #: Resumable uploads abandoned past their expiration.
    expired_uploads: list = dataclasses.field(default_factory=list)
    #: Ids of expired uploads a request was working on: left for the next round.
    busy_uploads: list = dataclasses.field(default_factory=list)
    #: Entries (``{"key", "until"}``) of replaced blobs past their grace.
    replaced: list = dataclasses.field(default_factory=list)
    #: :class:`~kinto_attachment.storage.Listed` objects nothing referenced.
    orphans: list = dataclasses.field(default_factory=list)
    #: :class:`~kinto_attachment.storage.Pending` uploads nothing referenced.
    aborted: list = dataclasses.field(default_factory=list)
    #: Files and uploads whose names carry another instance's tag (kept), and the keys of
    #: the first of them.
    others: int = 0
    other_examples: list = dataclasses.field(default_factory=list)
    #: Keys of the orphans and pending uploads whose names carry no tag, kept because
    #: another instance shares the store (they could be its).
    unowned: list = dataclasses.field(default_factory=list)
    #: ``(where, key)`` of references to blobs that do not exist.
    dangling: list = dataclasses.field(default_factory=list)
    #: ``(listed key, missing referenced key)`` of the orphans kept because the end of their
    #: key is a file the references name and the store lacks: the store was moved.
    moved: list = dataclasses.field(default_factory=list)
    #: Orphans were not looked for: kinto-attachment's data is not adopted yet, and a dry run
    #: does not adopt it (:mod:`kinto_attachment.adoption`).
    adoption_pending: bool = False
    #: Keys of the files that nothing referenced when this collection adopted (the previous
    #: plugin left them, ``keep_old_files`` for instance): retained, never removed.
    kept_at_adoption: list = dataclasses.field(default_factory=list)

    @property
    def temporary(self):
        """The orphans that were staged or resumable-upload files, not committed blobs."""
        return [orphan for orphan in self.orphans if orphan.temporary]

    @property
    def total_bytes(self):
        """Bytes freed (multipart uploads and replaced files aside: S3 does not list the
        size of the former, and the latter are deleted without a look)."""
        return (
            sum(entry["size"] for entry in self.expired_files)
            + sum(upload["offset"] for upload in self.expired_uploads)
            + sum(orphan.size for orphan in self.orphans)
        )

    def describe(self):
        """The report as text, one line per item."""
        verb = "would be removed" if self.dry_run else "removed"
        lines = ["Dry run: nothing was removed."] if self.dry_run else []
        lines.append(f"Expired data files ({verb}): {len(self.expired_files)}")
        lines += [f"  {e['id']}  {e['key']}  {e['size']} bytes" for e in self.expired_files]
        lines.append(f"Expired resumable uploads ({verb}): {len(self.expired_uploads)}")
        lines += [f"  {u['id']}  {u['offset']} bytes" for u in self.expired_uploads]
        lines += [f"  {i}  busy, left for the next round" for i in self.busy_uploads]
        lines.append(f"Replaced files past their grace ({verb}): {len(self.replaced)}")
        lines += [f"  {entry['key']}" for entry in self.replaced]
        temporary = len(self.temporary)
        lines.append(f"Orphans ({verb}): {len(self.orphans)}, {temporary} of them temporary")
        lines += [
            f"  {o.key}  {o.size} bytes{'  (temporary)' if o.temporary else ''}"
            for o in self.orphans
        ]
        lines.append(f"Incomplete multipart uploads ({verb}): {len(self.aborted)}")
        lines += [f"  {p.key}  upload {p.upload_id}" for p in self.aborted]
        if self.others:
            lines.append(
                f"Files and uploads of other Kinto instances sharing this store (kept): "
                f"{self.others}, among them:"
            )
            lines += [f"  {key}" for key in self.other_examples]
            unowned = len(self.unowned)
            lines.append(f"Orphans whose names do not say whose they are (kept): {unowned}")
            lines += [f"  {key}" for key in self.unowned]
        if self.adoption_pending:
            lines.append("Orphans not looked for: kinto-attachment's data is not adopted yet.")
        if self.kept_at_adoption:
            kept = "would be kept" if self.dry_run else "kept"
            lines.append(
                "Files nothing references, left by the previous plugin (keep_old_files for "
                f"instance), {kept} and never removed: {len(self.kept_at_adoption)}"
            )
            lines += [f"  {key}" for key in self.kept_at_adoption]
        if self.moved:
            lines.append(
                "Orphans kept, their keys ending with the key of a file the references name "
                "and the store lacks (the store moved: kinto.attachment.base_path or the "
                f"bucket's prefix is not the servers' own): {len(self.moved)}"
            )
            lines += [f"  {key}  (named {missing})" for key, missing in self.moved]
        lines.append(f"Dangling references (left as they are): {len(self.dangling)}")
        lines += [f"  {where} -> {key}  missing" for where, key in self.dangling]
        lines.append(f"Total: {self.total_bytes} bytes {verb}")
        return "\n".join(lines)
