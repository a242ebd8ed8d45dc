"""The tag of this Kinto instance, which every name it makes up for a file carries.

An orphan is a file the store holds and nothing references, and *nothing* means nothing in
this instance's storage: a second instance given the same ``base_path`` or bucket (staging
beside production, each with its own database) would see every file of the first as one.
So the random names an instance makes (:func:`kinto_attachment.storage.keys.random_name`)
start with its tag, and its collector deletes only the orphans that carry its own
(:mod:`kinto_attachment.gc`); a file carrying another's belongs to another instance.

An instance is a Kinto storage: its tag, 8 random hex digits, is kept there (one object),
made by the first process that needs it and read once by every other. A memory backend
lives as long as its process, and so does its tag: a restarted ``make serve`` is a new
instance, which adoption already makes keep the files of the previous one. A database copied
from another instance's (a staging restored from production's backup) keeps its tag: such a
copy must get its own store, or its tag removed (docs/gc.rst).
"""

import posixpath
import re
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import transaction
from kinto.core.storage.exceptions import ObjectNotFoundError, UnicityError


OBJECT = {"resource_name": "attachment-instance", "parent_id": "attachment-instance"}
OBJECT_ID = "kinto-attachment"

#: A name :func:`tagged_name` made: 32 hex digits, a UUID of version 8 (RFC 9562) whose first
#: 8 digits are the writer's tag (kinto-attachment's names, and ours before, are version 4).
_TAGGED = re.compile(
    r"(?<![0-9a-f])([0-9a-f]{8})[0-9a-f]{4}8[0-9a-f]{3}[89ab][0-9a-f]{15}(?![0-9a-f])"
)

_reading = threading.Lock()


def tag(registry):
    """This instance's tag, read (or made) once per process."""
    found = getattr(registry, "attachment_instance_tag", None)
    if found is None:
        with _reading:
            found = getattr(registry, "attachment_instance_tag", None)
            if found is None:
                # In a thread of its own, so in a transaction of its own: a request's
                # transaction may be under way in this thread, and its rollback must not
                # take the tag back once names carry it.
                with ThreadPoolExecutor(1, thread_name_prefix="attachment-instance") as one:
                    found = one.submit(_read_or_make, registry.storage).result()
                registry.attachment_instance_tag = found
    return found


def forget(registry):
    """Forget the tag this process read: its storage was emptied (``__flush__``), the next
    name it needs makes a new one."""
    vars(registry).pop("attachment_instance_tag", None)


def random_name(registry):
    """A random name carrying this instance's tag."""
    return tagged_name(tag(registry))


def tagged_name(writer):
    """A random name (32 hex digits) that says who wrote it: ``writer``, an instance's tag,
    then 90 random bits, shaped as a UUID of version 8 so that no version 4 UUID
    (kinto-attachment's names) reads as one."""
    raw = bytearray(secrets.token_bytes(16))
    raw[:4] = bytes.fromhex(writer)
    raw[6] = 0x80 | (raw[6] & 0x0F)  # Version 8.
    raw[8] = 0x80 | (raw[8] & 0x3F)  # RFC 9562's variant.
    return raw.hex()


def tag_of(key):
    """The tag of the instance that wrote ``key`` (a name :func:`tagged_name` made), or None:
    a name a client chose, kinto-attachment's, or ours before names carried a tag."""
    found = _TAGGED.search(posixpath.basename(key))
    return found.group(1) if found else None


def _read_or_make(storage):
    with transaction.manager:
        try:
            return storage.get(**OBJECT, object_id=OBJECT_ID)["tag"]
        except ObjectNotFoundError:
            pass
    try:
        with transaction.manager:
            made = {"id": OBJECT_ID, "tag": secrets.token_hex(4)}
            return storage.create(**OBJECT, obj=made)["tag"]
    except UnicityError:  # Another process made it meanwhile: theirs it is.
        with transaction.manager:
            return storage.get(**OBJECT, object_id=OBJECT_ID)["tag"]


class Sorting:
    """One pass over the store that deletes orphans (the collector's, ``__flush__``'s), sorting
    what nothing references by whose it is: this instance's goes once past ``cutoff`` (ms
    since the epoch); another instance's is kept, however old, and counted; a name that says
    nobody's is kept back until the listing is over, and goes then only if no other
    instance's was in sight (``unowned`` otherwise). Temporary files go past ``cutoff``,
    whoever made them: no request writes that long."""

    #: Keys of other instances' files kept as examples (all are counted).
    EXAMPLES = 10

    def __init__(self, registry, cutoff):
        self.own, self.cutoff = tag(registry), cutoff
        #: Files and uploads of other instances, and the keys of the first of them.
        self.others, self.other_examples = 0, []
        #: Keys of the orphans and uploads whose names say nobody's, kept.
        self.unowned = []

    def orphans(self, listing, referenced):
        """The :class:`~kinto_attachment.storage.Listed` of ``listing`` to delete;
        ``referenced(key)`` says whether a reference names one."""
        untagged = []
        for listed in listing:
            if referenced(listed.key):
                continue
            writer = tag_of(listed.key)
            if writer not in (self.own, None):
                self._other(listed.key)
            elif listed.modified_ms >= self.cutoff:
                continue
            elif writer is None and not listed.temporary:
                untagged.append(listed)
            else:
                yield listed
        if self.others:
            self.unowned += [listed.key for listed in untagged]
        else:
            yield from untagged

    def abandoned(self, uploads, pending):
        """The :class:`~kinto_attachment.storage.Pending` of ``uploads`` to abort: none whose
        id is in ``pending`` (a resumable upload names it)."""
        for upload in uploads:
            writer = tag_of(upload.key)
            if writer not in (self.own, None):
                self._other(upload.key)
            elif upload.upload_id in pending or upload.initiated_ms >= self.cutoff:
                continue
            elif writer is None and self.others:
                self.unowned.append(upload.key)
            else:
                yield upload

    def _other(self, key):
        self.others += 1
        if len(self.other_examples) < self.EXAMPLES:
            self.other_examples.append(key)
