"""The upload path holds a bounded amount of memory, whatever the file size."""

import hashlib
import os
import tracemalloc

from kinto_attachment.protocols import multipart
from kinto_attachment.storage.local import LocalStore
from kinto_attachment.uploads import intake
from kinto_attachment.web import streams


BOUNDARY = b"----streaming-test"
FILE_SIZE = 48 * 1024 * 1024
PATTERN = os.urandom(64 * 1024)


class GeneratedBody:
    """A multipart body of FILE_SIZE bytes, produced on demand (never held whole)."""

    def __init__(self):
        head = (
            b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="data"\r\n\r\n'
            b'{"title": "big"}\r\n'
            b"--" + BOUNDARY + b"\r\n"
            b'Content-Disposition: form-data; name="attachment"; filename="big.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        tail = b"\r\n--" + BOUNDARY + b"--\r\n"
        self.length = len(head) + FILE_SIZE + len(tail)
        self._parts = [head, *self._file_chunks(), tail]
        self.largest_read = 0

    @staticmethod
    def _file_chunks():
        for _ in range(FILE_SIZE // len(PATTERN)):
            yield PATTERN

    def read(self, size):
        self.largest_read = max(self.largest_read, size)
        if not self._parts:
            return b""
        return self._parts.pop(0)


def test_multipart_upload_memory_is_bounded(tmp_path):
    store = LocalStore(str(tmp_path), fsync=False)
    opened = []

    def open_file(filename, content_type):
        opened.append(intake.Intake(store, intake.Plan("big.bin", filename, content_type)))
        return opened[0]

    # Generators are lazy, so build the body before measuring: it holds one 64 KiB pattern.
    body = GeneratedBody()
    reader = multipart.FormReader(BOUNDARY, "attachment", ("data",), open_file)
    tracemalloc.start()
    try:
        fields = multipart.read_form(body, body.length, reader)
        with opened[0] as received:
            pass  # Leaving the block commits.
        blob = received.blob
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    expected = hashlib.sha256()
    for _ in range(FILE_SIZE // len(PATTERN)):
        expected.update(PATTERN)
    assert fields == {"data": '{"title": "big"}'}
    assert (blob.size, blob.hash) == (FILE_SIZE, expected.hexdigest())
    assert os.path.getsize(tmp_path / "big.bin") == FILE_SIZE
    assert body.largest_read <= streams.UPLOAD_CHUNK_SIZE
    # 48 MiB went through; what was held at once stays around a couple of chunks.
    assert peak < 4 * streams.UPLOAD_CHUNK_SIZE, f"peak traced memory {peak} bytes"


class ChunkedReader:
    """What uWSGI's ``chunked_read(timeout)`` returns: the parts of a chunked body, then b""."""

    def __init__(self, parts):
        self.parts = list(parts)

    def chunked_read(self, timeout):
        assert timeout == 0  # uWSGI's own: chunked-input-timeout, else socket-timeout.
        return self.parts.pop(0) if self.parts else b""


def test_uwsgi_chunked_parts_are_read_by_size():
    reader = streams.UwsgiChunks(ChunkedReader([b"abcdef", b"g", b"hij"]))
    assert list(streams.read_chunks(reader, None, chunk_size=4)) == [b"abcd", b"ef", b"g", b"hij"]
