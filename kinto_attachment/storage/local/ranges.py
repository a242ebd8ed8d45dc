"""A byte range of a local file, as a file of its own (:class:`RangeFile`): what a ranged
download of the local store gives the WSGI server."""

import io


class RangeFile(io.RawIOBase):
    """Bytes ``start`` to ``start + length`` of a file, as a file of their own: positions,
    ``seek`` and the end are the range's, so that no WSGI server can look past it, and
    waitress can still send it from its event loop as it sends whole files (it needs a
    seekable file to know the size): a client that stops reading is timed out there
    (``channel_timeout``) instead of holding a thread. No ``fileno``: a server that would
    ``sendfile`` it would send the underlying file."""

    def __init__(self, stream, start, length):
        self._stream = stream
        self._start = start
        self._length = length
        self._position = 0
        stream.seek(start)

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self._position

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = min(max(base + offset, 0), self._length)
        self._stream.seek(self._start + self._position)
        return self._position

    def readinto(self, buffer):
        view = memoryview(buffer)[: self._length - self._position]
        count = self._stream.readinto(view)
        self._position += count
        return count

    def close(self):
        self._stream.close()
        super().close()
