"""A byte range of a local file, as a file of its own (:class:`RangeFile`): what a ranged
download of the local store gives the WSGI server."""

from ..base import Window


class RangeFile(Window):
    """Bytes ``start`` to ``start + length`` of a file, as a file of their own: positions,
    ``seek`` and the end are the range's, so that no WSGI server can look past it, and
    waitress can still send it from its event loop as it sends whole files (it needs a
    seekable file to know the size): a client that stops reading is timed out there
    (``channel_timeout``) instead of holding a thread. No ``fileno``: a server that would
    ``sendfile`` it would send the underlying file."""

    def __init__(self, stream, start, length):
        #: The whole file (its size tells a download whether it is the file described).
        self.source = stream
        self._stream = stream
        self._start = start
        self._length = length
        self._position = 0
        stream.seek(start)

    def _size(self):
        return self._length

    def _moved(self):
        self._stream.seek(self._start + self._position)

    def readinto(self, buffer):
        view = memoryview(buffer)[: self._length - self._position]
        count = self._stream.readinto(view)
        self._position += count
        return count

    def close(self):
        self._stream.close()
        super().close()
