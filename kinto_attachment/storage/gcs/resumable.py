"""Resumable (tus) uploads on GCS: composed objects.

The bytes of each request become an object of their own (a *part*, under ``__uploads__/``),
written like any blob: one request, or a resumable session for a large one, with its CRC32C for
GCS to verify. GCS then composes the upload so far and that part into a new object (compose
concatenates without copying the data), which the upload's state names (``temp``); the one
before becomes obsolete. The recorded state thus always names exactly the bytes recorded, and
a request that fails (a checksum refused, a client gone) leaves only objects that no state
names: deleted with the failure, or else collected as orphans. Since the state holds nothing
but object names, any process can go on with an upload, after a restart too.

Finishing composes the upload into its key, conditionally (the next free variant if taken).
The upload's object stays until the transaction recording the finish commits (``obsolete``):
if that transaction fails, the blob is deleted (it is in ``created``), and the last request,
sent again, finishes again from the same state, as on local disk.

Concatenating uploads (tus's concatenation) composes their objects into the blob, 32 at most
per request (GCS's limit), in steps beyond: the intermediate objects are deleted at once, or
collected as orphans (under ``__uploads__/``) if the process is killed first.

GCS refuses a composite object of more than 1,024 components (the objects first uploaded, over
every compose that led to it): an upload of more requests, or a concatenation of uploads that
add up to more, first copies the upload so far (the largest uploads) into an object of one
component, through this process (GCS's rewrite within a bucket keeps the count). The state
counts its object's components (``components``; read from GCS for a state recorded without).

It lives apart from :mod:`.store`, as a base class of its ``GCSStore``, because it is a protocol
of its own on top of the store's requests.
"""

import contextlib

from .. import Progress, StorageUnavailable
from ..base import chunks_of, read_back, write_to_free_name
from ..keys import WORKING_FOLDER
from .staged import GCSStaged


#: Prefix of the objects of resumable uploads in progress.
UPLOADS_FOLDER = WORKING_FOLDER
PART_SUFFIX = ".part"
#: Source objects of one compose request, at most.
MAX_COMPOSE = 32
#: Components of a composite object, at most.
MAX_COMPONENTS = 1024


class GCSResumable:
    """The :class:`~kinto_attachment.storage.IResumableStore` and
    :class:`~kinto_attachment.storage.IConcatenatingStore` methods of :class:`GCSStore`, over
    its ``compose``, ``free_key``, ``stage``, ``open``, ``stat``, ``delete`` and
    ``delete_many``."""

    def start_resumable(self, key, content_type=None, random=False):
        # No request: the first bytes make the first object.
        return {"key": key, "temp": None, "content_type": content_type, "random": random}

    def _write_part(self, chunks):
        """The name of a new object holding ``chunks``; None when they are empty."""
        name = f"{UPLOADS_FOLDER}/{self.temporary_name()}{PART_SUFFIX}"
        staged = GCSStaged(self, name, None, random=True)
        empty = True
        try:
            for chunk in chunks:
                empty = empty and not chunk
                staged.write(chunk)
            if empty:
                staged.abort()
                return None
            return staged.commit()
        except BaseException:
            staged.abort()
            raise

    def append(self, state, offset, chunks):
        part = self._write_part(chunks)
        if part is None:
            return Progress(state)
        if state["temp"] is None:
            return Progress({**state, "temp": part, "components": 1}, created=[part])
        source, components, copied = state["temp"], self._components(state), []
        temp = f"{UPLOADS_FOLDER}/{self.temporary_name()}{PART_SUFFIX}"
        try:
            if components >= MAX_COMPONENTS:
                source, components = self._one_component(source, copied), 1
            if not self._compose_present([source, part], temp):
                raise StorageUnavailable(f"GCS compose failed: {temp} exists")
        finally:
            for obj in (part, *copied):
                self._drop(obj)
        return Progress(
            {**state, "temp": temp, "components": components + 1},
            created=[temp],
            obsolete=[state["temp"]],
        )

    def _components(self, state):
        """The components of the upload's object: counted by the state, or asked of GCS for
        a state recorded before it counted them."""
        components = state.get("components")
        return self.component_count(state["temp"]) if components is None else components

    def _one_component(self, source, copied):
        """A copy of the object ``source`` of one component (listed in ``copied``, to
        delete)."""
        name = self._write_part(chunks_of(self.open(source)))
        copied.append(name)
        return name

    def _compose_present(self, sources, name, content_type=None):
        """:meth:`compose`, or ``FileNotFoundError`` when it failed because a source is gone
        (a lifecycle rule on ``__uploads__/``, an operator's cleanup): the upload's bytes are
        lost for good, a 410 for tus, where a 503 would have its client retry in vain. Looked
        for once it failed: GCS answers 404, its emulator 500."""
        try:
            return self.compose(sources, name, content_type)
        except StorageUnavailable:
            missing = next((source for source in sources if self.stat(source) is None), None)
            if missing is not None:
                raise FileNotFoundError(f"GCS: {missing} is gone") from None
            raise

    def _drop(self, part):
        """Delete a part once composed; one left behind is an orphan for garbage collection."""
        with contextlib.suppress(StorageUnavailable):
            self.delete(part)

    def finish(self, state):
        """Compose the upload into its key, or the next free variant; an empty upload is an
        empty object."""
        content_type = state["content_type"] or "application/octet-stream"
        random = state.get("random", False)
        if state["temp"] is None:
            key = self.stage(state["key"], content_type, random).commit()
            return Progress(state, created=[key], key=key)
        key = write_to_free_name(
            state["key"],
            random,
            self.free_key,
            lambda name: self._compose_present([state["temp"]], name, content_type),
        )
        return Progress(state, created=[key], obsolete=[state["temp"]], key=key)

    def discard(self, state, holding):
        if state["temp"] is not None:
            self.delete(state["temp"])

    def concatenate(self, parts, key, content_type, digest, random=False, holding=None):
        """Compose the uploads' objects into the blob, then read back all but the first part
        for ``digest``."""
        content_type = content_type or "application/octet-stream"
        uploads = [state for state, _ in parts if state["temp"] is not None]
        steps = []
        try:
            sources = self._within_components(uploads, steps)
            while len(sources) > MAX_COMPOSE:
                sources = [
                    self._composed(sources[i : i + MAX_COMPOSE], steps)
                    for i in range(0, len(sources), MAX_COMPOSE)
                ]
            if sources:
                key = write_to_free_name(
                    key,
                    random,
                    self.free_key,
                    lambda name: self._compose_present(sources, name, content_type),
                )
            else:
                key = self.stage(key, content_type, random).commit()
        finally:
            with contextlib.suppress(StorageUnavailable):
                self.delete_many(steps)
        total = sum(length for _, length in parts)
        read_back(self, key, parts[0][1], total, digest, holding)
        obsolete = [state["temp"] for state, _ in parts if state["temp"] is not None]
        return Progress(None, created=[key], obsolete=obsolete, key=key)

    def _within_components(self, uploads, steps):
        """The objects of ``uploads``, in order, the largest copied into objects of one
        component (listed in ``steps``) until they add up to :data:`MAX_COMPONENTS` at most
        (a final upload names fewer uploads than that)."""
        sources = [state["temp"] for state in uploads]
        counts = [self._components(state) for state in uploads]
        for i in sorted(range(len(counts)), key=counts.__getitem__, reverse=True):
            if sum(counts) <= MAX_COMPONENTS:
                break
            sources[i], counts[i] = self._one_component(sources[i], steps), 1
        return sources

    def _composed(self, sources, steps):
        """An object of ``sources`` (listed in ``steps``, to delete), or the one source."""
        if len(sources) == 1:
            return sources[0]
        name = f"{UPLOADS_FOLDER}/{self.temporary_name()}{PART_SUFFIX}"
        if not self._compose_present(sources, name):
            raise StorageUnavailable(f"GCS compose failed: {name} exists")
        steps.append(name)
        return name
