"""What an adoption did, or would do (a dry run)."""

import dataclasses


#: Objects changed per transaction.
BATCH = 100
#: Unreferenced files the report lists (all of them are logged).
LISTED = 100


@dataclasses.dataclass
class Report:
    dry_run: bool = False
    #: kinto-attachment links now ours.
    linked: int = 0
    #: Files that kinto-attachment links named but no record does: kept, never deleted.
    retained: int = 0
    #: Files of records without a link, now kept (retained), never deleted.
    unlinked: int = 0
    #: Keys a dry run would have retained so far (a real run finds them retained).
    would_retain: set = dataclasses.field(default_factory=set)
    #: URIs of records whose ids are too long for a link: their files are retained instead.
    long_ids: list = dataclasses.field(default_factory=list)
    #: ``(record URI, location)`` of records whose location is not under our ``base_url``.
    foreign: list = dataclasses.field(default_factory=list)
    #: Keys of the files the store held that nothing referenced at the first adoption: kept.
    unreferenced: list = dataclasses.field(default_factory=list)
    #: Why the first adoption did not list the store (step 3) nor end: it is not the
    #: servers' own (:func:`.unreferenced.store_mismatch`); None when it is.
    store_mismatch: str = None

    @property
    def changes(self):
        """How many objects adoption changes (0: there is nothing to adopt)."""
        return self.linked + self.retained + self.unlinked + len(self.unreferenced)

    def describe(self):
        verb = "would be" if self.dry_run else "were"
        lines = [
            f"kinto-attachment links that {verb} made ours: {self.linked}",
            f"Files of kinto-attachment links no record names, that {verb} kept: {self.retained}",
            f"Records without a link whose files {verb} kept: {self.unlinked}",
            f"Records whose ids are too long for a link, whose files {verb} kept instead "
            f"(never deleted with them): {len(self.long_ids)}",
            *(f"  {uri}" for uri in self.long_ids[:LISTED]),
            f"Records whose location is not under base_url (downloads are 404): "
            f"{len(self.foreign)}",
        ]
        lines += [f"  {uri} -> {location}" for uri, location in self.foreign]
        lines.append(
            f"Files in the store that nothing names (left by the previous plugin, kept "
            f"on purpose by keep_old_files for instance), that {verb} kept: "
            f"{len(self.unreferenced)}"
        )
        lines += [f"  {key}" for key in self.unreferenced[:LISTED]]
        if len(self.unreferenced) > LISTED:
            lines.append(f"  ... and {len(self.unreferenced) - LISTED} more (in the log)")
        if self.store_mismatch:
            lines.append(self.store_mismatch)
        return "\n".join(lines)
