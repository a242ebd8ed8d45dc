"""Whether the store is the servers' own, before an orphan pass: pointed at another (a
``base_path`` one folder too high, another database), every file it holds would be taken for
an orphan."""

import transaction

from ..state import references


#: Files that references name, looked for in the store before an orphan pass
#: (:func:`check_store`).
SAMPLE = 32


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
an operator must look at them first (kinto-attachment-gc --dry-run lists them)."""


def check_store(registry):
    """Raise :class:`Refused` when the store does not hold the files the references name.

    An orphan is what the store holds and nothing references: pointed at the wrong place (a
    ``base_path`` one folder too high lists every file under another key), every file is
    one. So before an orphan pass, up to :data:`SAMPLE` files that records, links and
    ``/data/files`` entries name are looked for. Fewer than half found, while the store holds
    some committed file: refused. Missing files in a store that holds nothing else are only
    dangling references (reported by the pass, which would remove nothing)."""
    store = registry.attachment_store
    with transaction.manager:
        sample = []
        for reference in references.required(registry):
            if reference.key not in sample:
                sample.append(reference.key)
            if len(sample) >= SAMPLE:
                break
    found = sum(1 for key in sample if exists(store, key))
    if not sample or 2 * found >= len(sample):
        return
    example = next((listed.key for listed in store.iter_blobs() if not listed.temporary), None)
    if example is not None:
        raise Refused(MISMATCH.format(sampled=len(sample), found=found, example=example))


def exists(store, key):
    """Whether the store holds ``key`` (False for a key that cannot be in it)."""
    try:
        return store.exists(key)
    except ValueError:  # A key that cannot be in the store (it would climb out of it).
        return False
