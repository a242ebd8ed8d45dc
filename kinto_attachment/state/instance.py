"""The tag of this Kinto instance, which every name it makes up for a file carries.

An orphan is a file the store holds and nothing references, and *nothing* means nothing in
this instance's storage: a second instance given the same ``base_path`` or bucket (staging
beside production, each with its own database) would see every file of the first as one.
So the random names an instance makes (:func:`tagged_name`) carry its tag, and its collector
deletes only the orphans that carry its own (:class:`Sorting`); a file carrying another's
belongs to another instance.

An instance is a Kinto storage: its tag, 8 random hex digits, is kept there (one object),
made by the first process that needs it, read by every other when it starts, and written
back after a ``__flush__`` (which empties the storage, not the store). A memory backend lives
as long as its process, and so does its tag: a restarted ``make serve`` is a new instance,
which adoption already makes keep the files of the previous one. A database copied from
another instance's (a staging restored from production's backup) keeps its tag: such a copy
must get its own store (docs/gc.rst).
"""

import hashlib
import logging
import posixpath
import re
import secrets
import threading

import transaction
from kinto.core.storage.exceptions import ObjectNotFoundError, UnicityError
from pyramid.events import ApplicationCreated

from .shared import on_its_own, quiet_client, shares_state


logger = logging.getLogger(__name__)

OBJECT = {"resource_name": "attachment-instance", "parent_id": "attachment-instance"}
OBJECT_ID = "kinto-attachment"

#: A name :func:`tagged_name` made: 40 hex digits, the tag, 96 random bits, then a check of
#: both (:func:`_check`), so that no other name reads as one by chance (a client's MD5 or
#: SHA-1 named file, with ``randomize = false``, would pass a mere shape 1 time in 64).
_NAME = r"([0-9a-f]{32})([0-9a-f]{8})"
_TAGGED = re.compile(rf"(?<![0-9a-f]){_NAME}(?![0-9a-f])")
#: A name :func:`tagged_name` made for a file: the random name, then its extension.
_DRAWN = re.compile(rf"{_NAME}(\.[^/]*)?")

_reading = threading.Lock()


def tag(registry, make=True):
    """This instance's tag, read (or made) once per process; without ``make``, None while
    the instance has none (it has never named a file)."""
    found = getattr(registry, "attachment_instance_tag", None)
    if found is None:
        with _reading:
            found = getattr(registry, "attachment_instance_tag", None)
            if found is None:
                found = on_its_own(_read_or_make, registry.storage, None, make)
                if found is not None:
                    registry.attachment_instance_tag = found
    return found


def read_at_start(event):
    """Read the tag when the application starts, outside any request: a request that needed
    it first would wait for a second connection of the database's pool while it holds one.
    A shared storage's tag is only read (a command started with ``--dry-run`` changes
    nothing): ``kinto migrate`` makes it (:class:`~kinto_attachment.adoption.migration.Migration`),
    or else the first request that needs one. A memory backend's is made: nothing outside
    the process changes. A storage not ready yet (``kinto migrate`` starts the application
    before it makes the schema; a database down) leaves it to the first request that
    needs it."""
    registry = event.app.registry
    try:
        with quiet_client():
            tag(registry, make=not shares_state(registry))
    except Exception as e:  # noqa: BLE001 (any backend's failure: read it later)
        logger.info("The instance's tag will be read later: %s", str(e).splitlines()[0])


def forget(registry):
    """Forget the tag this process read: its storage was emptied under it (tests)."""
    vars(registry).pop("attachment_instance_tag", None)


def keep(registry, kept):
    """Write the tag ``kept`` back (after ``__flush__``, which emptied the storage): every
    process of the instance goes on naming files with it, and what the flush left (younger
    than the grace period) stays this instance's. Should another process have made a new one
    meanwhile, this process takes it."""
    registry.attachment_instance_tag = on_its_own(_read_or_make, registry.storage, kept)


def random_name(registry):
    """A random name carrying this instance's tag."""
    return tagged_name(tag(registry))


def tagged_name(writer):
    """A random name (40 hex digits) that says who wrote it: ``writer``, an instance's tag,
    96 random bits, and a check of both."""
    body = writer + secrets.token_hex(12)
    return body + _check(body)


def tag_of(key):
    """The tag of the instance that wrote ``key`` (a name :func:`tagged_name` made), or None:
    a name a client chose, kinto-attachment's, or ours before names carried a tag."""
    found = _TAGGED.search(posixpath.basename(key))
    return found.group(1)[:8] if _checked(found) else None


def drawn(key):
    """Whether ``key``'s name is one an instance drew at random for a file (a tagged name, an
    extension at most: :func:`tagged_name`), so that no chosen name may take it: once its
    file is deleted, a random name is not kept in quarantine (it never comes back), while
    the URLs handed out for the file (events', signed downloads') may still be in use."""
    return _checked(_DRAWN.fullmatch(posixpath.basename(key)))


def _checked(found):
    """Whether a match of :data:`_NAME` is a name :func:`tagged_name` made (its check)."""
    return found is not None and _check(found.group(1)) == found.group(2)


def _check(body):
    return hashlib.sha256(body.encode("ascii")).hexdigest()[:8]


def _read_or_make(storage, made=None, make=True):
    with transaction.manager:
        try:
            return storage.get(**OBJECT, object_id=OBJECT_ID)["tag"]
        except ObjectNotFoundError:
            if not make:
                return None
    try:
        with transaction.manager:
            made = {"id": OBJECT_ID, "tag": made or secrets.token_hex(4)}
            return storage.create(**OBJECT, obj=made)["tag"]
    except UnicityError:  # Another process made it meanwhile: theirs it is.
        with transaction.manager:
            return storage.get(**OBJECT, object_id=OBJECT_ID)["tag"]


class Sorting:
    """One pass over the store that deletes orphans (the collector's, ``__flush__``'s), sorting
    what it holds by whose it is.

    The store's pending ``uploads`` (S3 multipart uploads: few) are looked at first, then each
    file of the listing, referenced or not: whatever another instance wrote puts it *in
    sight*, and is kept. A dry run (``make`` false) makes no tag: an instance without one
    has named no file. Of what nothing references, this instance's goes once past
    ``cutoff`` (ms since the epoch); a name that says nobody's is kept back until the listing
    is over, and goes then only if no other instance was in sight (``unowned`` otherwise).
    Temporary files carry the tag of their instance when they outlive a request (a resumable
    upload's bytes between its requests); those that carry none (a request's staged file,
    left by a killed process) go past ``cutoff``, whoever made them: no request writes that
    long. Without ``untagged``, names that say nobody's are kept whatever is in sight (the
    caller cannot tell that the storage it read is the servers')."""

    #: Keys of other instances' files kept as examples (all are counted).
    EXAMPLES = 10

    def __init__(self, registry, cutoff, uploads, make=True, untagged=True):
        self.own, self.cutoff = tag(registry, make), cutoff
        self._untagged = untagged
        #: Files and uploads of other instances, and the keys of the first of them.
        self.others, self.other_examples = 0, []
        #: Keys of the orphans and uploads whose names say nobody's, kept.
        self.unowned = []
        self.uploads = list(uploads)
        for upload in self.uploads:
            self._mine(upload.key)

    def orphans(self, listing, referenced):
        """The :class:`~kinto_attachment.storage.Listed` of ``listing`` to delete;
        ``referenced(key)`` says whether a reference names one."""
        untagged = []
        for listed in listing:
            named = referenced(listed.key)  # Called for every file: it counts what it sees.
            if not self._mine(listed.key) or named or listed.modified_ms >= self.cutoff:
                continue
            if tag_of(listed.key) is None and not listed.temporary:
                untagged.append(listed)
            else:
                yield listed
        if self._keeps_untagged():
            self.unowned += [listed.key for listed in untagged]
        else:
            yield from untagged

    def abandoned(self, pending):
        """The :class:`~kinto_attachment.storage.Pending` uploads to abort: none whose id is
        in ``pending`` (a resumable upload names it)."""
        for upload in self.uploads:
            writer = tag_of(upload.key)
            if writer not in (self.own, None):
                continue
            if upload.upload_id in pending or upload.initiated_ms >= self.cutoff:
                continue
            if writer is None and self._keeps_untagged():
                self.unowned.append(upload.key)
            else:
                yield upload

    def _keeps_untagged(self):
        return bool(self.others) or not self._untagged

    def may_be_mine(self, key):
        """Whether ``key`` may be this instance's: its name carries its tag, or none."""
        return tag_of(key) in (self.own, None)

    def _mine(self, key):
        """:meth:`may_be_mine`, counting another instance's ``key``."""
        if self.may_be_mine(key):
            return True
        self.others += 1
        if len(self.other_examples) < self.EXAMPLES:
            self.other_examples.append(key)
        return False


def includeme(config):
    config.add_subscriber(read_at_start, ApplicationCreated)
