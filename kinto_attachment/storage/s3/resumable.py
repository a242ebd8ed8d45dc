"""Resumable (tus) uploads on S3: a multipart upload, plus the bytes not yet making a whole part
(the tail) in an object of their own, a new one after each request so that the recorded state
always names a tail with exactly the bytes it expects.

Finishing completes the multipart upload before the caller's transaction commits, and a
completed upload cannot be reopened. So the object is not deleted if that transaction fails
(``Progress.created`` does not list it): the upload is still recorded as before, and its retried
last chunk finds its multipart upload gone (S3: ``NoSuchUpload``; moto: a 500). The object at
the key then carries the upload's token (object metadata given at its start): the retry hashes
its parts instead of sending them, and takes the object as the blob only if it has the ETag (and
the SHA-256 checksum, if S3 tells it) of exactly these parts. Until then the object is protected
by the upload's state, which names its key; ``discard`` deletes it with the upload, and garbage
collection collects it if even that fails. None of this costs a request until a part or a
completion fails.

It lives apart from :mod:`.store`, as a base class of its ``S3Store``, because it is a protocol
of its own on top of the store's requests.
"""

import uuid

from .. import Progress, StorageUnavailable
from ..base import UPLOAD_METADATA, NameReserved
from ..keys import WORKING_FOLDER
from .client import error_code, lost, unavailable
from .parts import composite_checksum, multipart_etag
from .staged import S3Staged


#: Prefix of the tails of resumable uploads in progress.
RESUMABLE_FOLDER = WORKING_FOLDER
TAIL_SUFFIX = ".tail"


class S3Resumable:
    """The :class:`~kinto_attachment.storage.IResumableStore` methods of :class:`S3Store`,
    over its ``client``, ``bucket``, ``free_key``, ``create_upload``, ``open``, ``delete`` and
    ``abort_upload``."""

    def start_resumable(self, key, content_type=None, random=False):
        # Completed with ``If-None-Match``: a random name needs no look first.
        key = key if random else self.free_key(key)
        token = uuid.uuid4().hex
        upload_id = self.create_upload(key, content_type, {UPLOAD_METADATA: token})
        return {
            "key": key,
            "upload_id": upload_id,
            "token": token,
            "parts": [],
            "tail": None,
            "tail_size": 0,
            # A random name is nobody's to reserve: not looked up again at the end.
            "random": random,
        }

    def _continue(self, state):
        staged = S3Staged(
            self, state["key"], None, resumed=state, random=state.get("random", False)
        )
        if state["tail_size"]:
            with self.open(state["tail"], 0, state["tail_size"] - 1) as tail:
                staged.write(tail.read())
        return staged

    def append(self, state, offset, chunks):
        staged = self._continue(state)
        try:
            for chunk in chunks:
                staged.write(chunk)
            parts, tail = staged.flush()
        except BaseException:
            # Wait for the parts in flight: one landing after the retry's part of the same
            # number would replace it (CompleteMultipartUpload then refuses the ETags).
            staged.abort()
            raise
        new_tail = None
        if tail:
            new_tail = f"{RESUMABLE_FOLDER}/{self.temporary_name()}{TAIL_SUFFIX}"
            with unavailable("PutObject"):
                self.client.put_object(Bucket=self.bucket, Key=new_tail, Body=tail)
        return Progress(
            {
                **state,
                "parts": parts,
                "tail": new_tail,
                "tail_size": len(tail),
                **({"closed": True} if staged.closed else {}),
            },
            created=[new_tail] if new_tail else [],
            obsolete=[state["tail"]] if state["tail"] else [],
        )

    def finish(self, state):
        """Complete the multipart upload; or, when an earlier finish completed it, check
        that the object it made holds exactly these parts (``FileNotFoundError`` if not).

        The key is not in ``created``: the object stays if the caller's transaction fails,
        for the retry to find it.
        """
        staged = self._continue(state)
        try:
            parts = staged.send_rest()
            if not staged.closed:
                try:
                    staged.complete(parts)
                except NameReserved as e:
                    raise _name_taken(state) from e
                except StorageUnavailable as e:
                    if not staged.completed_before(e):
                        if error_code(e.__cause__) == "PreconditionFailed":
                            raise _name_taken(state) from e
                        raise
            if staged.closed:
                self._adopt(state, parts)
        except BaseException:
            staged.abort()
            raise
        obsolete = [state["tail"]] if state["tail"] else []
        return Progress(state, obsolete=obsolete, key=state["key"])

    def _object_of(self, state):
        """HeadObject of the object at the state's key, and why it is not this upload's
        (None when it carries the upload's token: it was completed from this upload)."""
        try:
            with unavailable("HeadObject"):
                head = self.client.head_object(
                    Bucket=self.bucket, Key=state["key"], ChecksumMode="ENABLED"
                )
        except StorageUnavailable as e:
            if error_code(e.__cause__) in ("404", "NoSuchKey", "NotFound"):
                return None, "missing"
            raise
        token = state.get("token")
        if not token or head.get("Metadata", {}).get(UPLOAD_METADATA) != token:
            return head, "from another upload"
        return head, None

    def not_ours(self, state):
        """Why the object at the state's key was not completed from this upload, or None."""
        return self._object_of(state)[1]

    def _adopt(self, state, parts):
        """Take the object an earlier finish completed as this upload's blob, if it holds
        exactly ``parts``: same token, size, ETag and (when S3 tells it) SHA-256 checksum.

        Anything else means that the bytes recorded before the last chunk are gone (the
        multipart upload was aborted, or completed with a last chunk other than this one):
        no retry can bring them back, so the upload is lost (``FileNotFoundError``, a 4xx
        for the client to start again) rather than unavailable (a 503, retried in vain).
        """
        head, why = self._object_of(state)
        if why:
            raise lost(state, why)
        checksum = head.get("ChecksumSHA256")
        same = (
            head["ContentLength"] == sum(part["Size"] for part in parts)
            and head["ETag"].strip('"') == multipart_etag(parts)
            and (not checksum or checksum.split("-")[0] == composite_checksum(parts))
        )
        if not same:
            raise lost(state, "not made of these parts")

    def discard(self, state, holding):
        """Abort the multipart upload and delete the tail; if the upload was completed (a
        finish whose transaction failed), delete the object it made, its name held."""
        gone = not self.abort_upload(state["key"], state["upload_id"])
        if gone and self.not_ours(state) is None:
            with holding([state["key"]]):
                self.delete(state["key"])
        if state["tail"]:
            self.delete(state["tail"])


def _name_taken(state):
    """The error of an upload whose name another upload took meanwhile, or that was reserved
    since (a file deleted under it, whose signed URLs may still be in use: with ``randomize``
    off, names are chosen when an upload starts, not kept for it): S3 completes a multipart
    upload under its own key only, so this one can never be completed, and a 503 would be
    retried in vain. ``FileNotFoundError``: the client is told to start again (a 410), and
    the new upload gets a free name."""
    return FileNotFoundError(
        f"S3 upload {state['upload_id']} of {state['key']} cannot be completed: another "
        "upload took its name meanwhile"
    )
