"""Streaming ``multipart/form-data`` reader for the attachment form.

python-multipart does the parsing and calls us back for each slice of each part; we never buffer
the file part: its slices go straight to an :class:`~kinto_attachment.uploads.intake.Intake`. The
other fields (``data``, ``permissions``) are small JSON texts, kept in memory up to
:data:`FIELDS_LIMIT` bytes in all. Anything unexpected (a second file, an unknown field, a
file without a name, a truncated body) is refused as soon as the answer is known: as
kinto-attachment, a form without an ``attachment`` part is answered ``Attachment missing.``
whatever its other parts, so what is wrong with another part is told once the attachment part
has begun (the bytes of that other part are skipped meanwhile, never kept).
"""

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from .. import errors
from ..web.streams import pump


#: Room for the non-file fields and the part headers, in bytes, all parts together.
FIELDS_LIMIT = 1024 * 1024
#: Longest boundary accepted: python-multipart's own limit (RFC 2046 says 70 at most).
MAX_BOUNDARY_LENGTH = 256


def _invalid(name, description):
    return errors.refuse("invalid_posted_data", name=name, description=description)


def boundary_of(content_type):
    """The boundary of a ``multipart/form-data`` Content-Type, or a 400."""
    mimetype, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary", b"")
    if mimetype != b"multipart/form-data":
        raise errors.refuse("not_multipart")
    if not boundary:
        raise errors.refuse("invalid_boundary", boundary=repr(_text(boundary)))
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise errors.refuse(
            "invalid_parameter",
            location="headers",
            name="Content-Type",
            description=f"the multipart boundary exceeds {MAX_BOUNDARY_LENGTH} bytes",
        )
    return boundary


def _text(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class FormReader:
    """Push-based reader: ``feed()`` body chunks, then ``close()`` to get the text fields.

    :param file_field: name of the one file part accepted.
    :param text_fields: names of the accepted text fields.
    :param open_file: ``open_file(filename, content_type)`` returns the writer (an Intake)
        for the file part; it is called once the part's headers are known.
    :param max_skipped: bytes at most of the parts skipped before the file part (0: no
        limit), past which the form is too large (413): the file's own limit, so that a form
        whose file is in a wrongly named part costs no more than a file that may be uploaded.
    """

    def __init__(self, boundary, file_field, text_fields, open_file, max_skipped=0):
        self.file_field = file_field
        self.text_fields = text_fields
        self.fields = {}
        self.file = None
        self._open_file = open_file
        self._budget = FIELDS_LIMIT
        self._max_skipped = max_skipped
        self._skipped = 0
        self._epilogue = 0
        #: The refusal of a part seen before the file part, told once that one begins.
        self._deferred = None
        self._complete = False
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    def feed(self, chunk):
        if self._complete:
            # An epilogue: no part of the form, read to the body's end all the same. A
            # chunked body has no length to bound it: it is bounded as the fields are.
            self._skip_epilogue(len(chunk))
            return
        try:
            self._parser.write(chunk)
        except MultipartParseError as e:
            raise _invalid("attachment", f"malformed multipart body ({e})") from e

    def close(self):
        """Check the body was complete; return ``{name: text}`` of the text fields."""
        if not self._complete:
            raise _invalid("attachment", "truncated multipart body")
        if self.file is None:
            raise errors.refuse("attachment_missing")
        return self.fields

    def _spend(self, size):
        self._budget -= size
        if self._budget < 0:
            raise _invalid("body", f"form fields exceed {FIELDS_LIMIT} bytes")

    def _skip_epilogue(self, size):
        self._epilogue += size
        if self._epilogue > FIELDS_LIMIT:
            raise errors.refuse("too_large", limit=self._max_skipped or FIELDS_LIMIT)

    def _skip(self, size):
        self._skipped += size
        if self._max_skipped and self._skipped > self._max_skipped:
            raise errors.refuse("too_large", limit=self._max_skipped)

    def _on_part_begin(self):
        self._headers = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._sink = None
        self._field = None
        self._skipping = False

    def _on_header_field(self, data, start, end):
        self._spend(end - start)
        self._header_name += data[start:end]

    def _on_header_value(self, data, start, end):
        self._spend(end - start)
        self._header_value += data[start:end]

    def _on_header_end(self):
        name = bytes(self._header_name).strip().lower().decode("latin-1")
        self._headers[name] = bytes(self._header_value).strip().decode("latin-1")
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self):
        disposition, options = parse_options_header(self._headers.get("content-disposition"))
        name = _text(options.get(b"name", b""))
        if disposition != b"form-data" or not name:
            raise _invalid("body", "every part needs Content-Disposition: form-data; name")
        filename = options.get(b"filename")
        if name == self.file_field:
            self._begin_file(name, filename)
            return
        refusal = self._refusal_of(name, filename)
        if refusal is None:
            self._field = name
            self._sink = bytearray()
        elif self.file is not None:
            raise refusal
        else:
            self._deferred = self._deferred or refusal
            self._skipping = True

    def _begin_file(self, name, filename):
        if self.file is not None:
            raise _invalid(name, f"{name!r}: only one file may be attached")
        if filename is None:
            raise errors.refuse("invalid_body", description="Filename is required.")
        if self._deferred is not None:
            raise self._deferred
        content_type = self._headers.get("content-type")
        self.file = self._sink = self._open_file(_text(filename), content_type)

    def _refusal_of(self, name, filename):
        """The refusal of a part other than the file's, or None if it is a field we keep."""
        if name not in self.text_fields:
            return _invalid(name, f"{name!r} not in {tuple(self.text_fields)!r}")
        if filename is not None:
            return _invalid(name, f"{name!r} field should be passed as form data, not files")
        if name in self.fields:
            return _invalid(name, f"{name!r} given twice")
        return None

    def _on_part_data(self, data, start, end):
        if self._field is not None:
            self._spend(end - start)
            self._sink += data[start:end]
        elif self._skipping:
            self._skip(end - start)
        else:
            self._sink.write(memoryview(data)[start:end])

    def _on_part_end(self):
        if self._field is not None:
            self.fields[self._field] = _text(bytes(self._sink))

    def _on_end(self):
        self._complete = True


def read_form(stream, length, reader):
    """Feed ``reader`` with the body (see :func:`~kinto_attachment.web.streams.read_chunks`)."""
    pump(stream, length, reader.feed)
    return reader.close()
