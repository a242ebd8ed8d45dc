"""Blobs sent in parts: the bytes gathered into buffers of one part each, sent without a copy.

A store that sends a blob by parts (S3 multipart uploads, GCS resumable uploads) copies the
chunks it is given into part buffers (:class:`PartBuffers`) and hands each full buffer over
as a request body (:class:`PartBody`). One copy buys a fixed footprint: keeping views on the
chunks instead would hold every chunk a part straddles, and leave the heap to recycle them.
Buffers are anonymous memory maps, reused from part to part and unmapped with the upload, so
that memory stays within a few parts per upload whatever the file size, and goes back to the
system afterwards instead of fragmenting the heap.
"""

import mmap

from .base import Window


class PartBuffers:
    """Chunks copied into buffers of ``part_size`` bytes; ``send(buffer, size)`` is called with
    each one that fills. The store gives a buffer back with :meth:`recycle` once it is sent."""

    def __init__(self, part_size, send):
        self.part_size = part_size
        self._send = send
        #: The buffer being filled, and how much of it is.
        self._buffer = None
        self.filled = 0
        #: Buffers of parts sent, to fill again.
        self._spare = []

    def write(self, chunk):
        view = memoryview(chunk).cast("B")
        while view:
            if self._buffer is None:
                self._buffer = self._spare.pop() if self._spare else mmap.mmap(-1, self.part_size)
            count = min(self.part_size - self.filled, len(view))
            self._buffer[self.filled : self.filled + count] = view[:count]
            self.filled += count
            view = view[count:]
            if self.filled == self.part_size:
                self._send(*self.take())

    def take(self):
        """The buffer being filled and its size (an empty one when nothing is); the next write
        starts a new part."""
        taken = (self._buffer or bytearray(), self.filled)
        self._buffer, self.filled = None, 0
        return taken

    def recycle(self, buffer):
        """Give back a buffer that was sent (from any thread), for a next part to fill."""
        self._spare.append(buffer)


class PartBody(Window):
    """A seekable file over a view of a part buffer: sent without a copy into bytes.

    HTTP clients read request bodies as files (and rewind them to retry), so a part is handed
    over as a view of the buffer it was gathered in.
    """

    def __init__(self, view):
        self._view = view
        self._position = 0

    def __len__(self):
        return len(self._view)

    def _size(self):
        return len(self._view)

    def readinto(self, buffer):
        target = memoryview(buffer).cast("B")
        count = min(len(target), len(self) - self._position)
        target[:count] = self._view[self._position : self._position + count]
        self._position += count
        return count
