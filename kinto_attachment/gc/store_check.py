"""Whether the store is the servers' own, before an orphan pass: pointed at another (a
``base_path`` one folder too high, another database), every file it holds would be taken for
an orphan."""

from ..state import references


class Refused(Exception):
    """An orphan pass that would act on the wrong store: nothing is removed (the message
    says why and what to fix)."""


#: Why an orphan pass is refused on a store that lacks the files the records name.
MISMATCH = """\
refused to look for orphans: of {sampled} files that records, links or /data/files entries
name, {found} are in the store, which holds other files ({example!r} for one). Every file
the store holds would be taken for an orphan: kinto.attachment.base_path (or the S3 or GCS
bucket and prefix) is probably not the servers' own (a parent folder of theirs, or another
folder), or this configuration reads another database than theirs. Nothing was removed.
Fix the configuration; if the store did lose these files (a restore from an old backup),
an operator must look at them first (restore them, or delete the records). Missing, among
others:
{missing}"""


#: Why an orphan pass is refused on a store that holds no file while references name some.
EMPTY = """\
refused to collect: the store holds no file, while records, links, /data/files entries or
replaced files waiting for the collector name some ({sampled} looked for). The store is
probably not the servers' own: kinto.attachment.base_path (or the S3 or GCS bucket and
prefix) not mounted here, a folder made by another command; or this configuration reads
another database than theirs. Nothing was removed: an empty store has nothing to collect,
and the replaced files the servers left to the collector are on theirs. Fix the
configuration; if the store did lose every file, restore them. Missing, among others:
{missing}"""


def _listed(missing):
    """Lines of the :class:`~kinto_attachment.state.references.Reference` ``missing``."""
    return "\n".join(f"  {reference.where} -> {reference.key}" for reference in missing)


def check_store(registry, now=None):
    """Raise :class:`Refused` when the store does not hold the files the references name;
    else return how many files were sampled (0: nothing names any).

    An orphan is what the store holds and nothing references: pointed at the wrong place (a
    ``base_path`` one folder too high lists every file under another key), every file is
    one. So before an orphan pass, a sample of the files the store owes now (those records,
    links and live ``/data/files`` entries name: :func:`~kinto_attachment.state.references.
    sample_in_store`) is looked for. Fewer than half found: refused. A store that holds no
    committed file at all is refused too (:data:`EMPTY`) while references name files, or
    replaced files wait for the collector (:func:`~kinto_attachment.state.references.
    waiting`: every record deleted): the orphan pass would remove nothing from it, but the
    collection would claim the files the servers replaced and report them removed from it,
    while theirs are elsewhere (a ``base_path`` that another process created because it was
    missing). Each refusal names a few of the missing files: a dry run is refused alike, and
    lists no orphan of a store that is not the servers'. ``now``: the collection's (ms), which
    tells the ``/data/files`` entries it collects as expired from those the store owes."""
    store = registry.attachment_store
    sampled, found, missing = references.sample_in_store(registry, now=now)
    if sampled and 2 * found >= sampled:
        return sampled
    example = next((listed.key for listed in store.iter_blobs() if not listed.temporary), None)
    if example is not None:
        if not sampled:
            return 0
        raise Refused(
            MISMATCH.format(
                sampled=sampled, found=found, example=example, missing=_listed(missing)
            )
        )
    if not sampled:
        missing = references.waiting(registry, references.MISSING_EXAMPLES)
        if not missing:
            return 0
        sampled = len(missing)
    raise Refused(EMPTY.format(sampled=sampled, missing=_listed(missing)))


def unreachable(store):
    """The error that keeps the collector from listing ``store`` (a bucket that does not
    exist, credentials that may not list it), or None: asked before anything is collected,
    as the storage backend is (:func:`~kinto_attachment.state.shared.reachable`)."""
    if not hasattr(store, "iter_blobs"):  # Not listable: the collector lists nothing.
        return None
    try:
        next(iter(store.iter_blobs()), None)
    except OSError as error:  # StorageUnavailable, or the disk's own.
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return None
