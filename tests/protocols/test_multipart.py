"""The multipart reader gives one answer whatever way the body is cut into reads.

As python-multipart's own tests do, every body is fed split at every point: in two reads cut at
each offset, and in 1-, 2-, 3- and 7-byte reads starting at every phase (so that each offset is
a read edge for each read size). Every feeding must give the same file (bytes, filename, type)
and text fields, or the same 400.
"""

import io
import json

import pytest
from pyramid.httpexceptions import HTTPException

from kinto_attachment import errors
from kinto_attachment.protocols import multipart


BOUNDARY = b"----b0undary"
SIZES = (1, 2, 3, 7)


class Sink:
    """What ``open_file`` hands the reader: collects the file's bytes."""

    def __init__(self, filename, content_type):
        self.filename = filename
        self.content_type = content_type
        self.data = bytearray()

    def write(self, data):
        self.data += data


class ChoppedStream:
    """A body whose ``read()`` returns at most the next planned size (then at most ``size``)."""

    def __init__(self, body, first, size):
        self.body = io.BytesIO(body)
        self.sizes = [first] if first else []
        self.size = size

    def read(self, wanted=-1):
        limit = self.sizes.pop(0) if self.sizes else self.size
        if wanted is not None and wanted >= 0:
            limit = min(limit, wanted)
        return self.body.read(limit)


def outcome(body, first, size, length="known"):
    """``("ok", fields, files)`` or ``("400", errno, details, message)`` of one feeding.

    ``length``: the announced body length: ``"known"`` (the body's), None, or a number.
    """
    files = []

    def open_file(filename, content_type):
        files.append(Sink(filename, content_type))
        return files[-1]

    reader = multipart.FormReader(BOUNDARY, "attachment", ("data", "permissions"), open_file)
    stream = ChoppedStream(body, first, size)
    try:
        fields = multipart.read_form(stream, len(body) if length == "known" else length, reader)
    except HTTPException as e:
        assert e.status_code == 400, e
        error = json.loads(e.body)
        # python-multipart's message names the offset in the current chunk: not part of the
        # answer, which must otherwise be the same.
        message = error["message"].split(" (", 1)[0]
        details = [
            {**d, "description": d["description"].split(" (", 1)[0]}
            for d in error.get("details", [])
        ]
        return ("400", error["errno"], details, message)
    return ("ok", fields, [(f.filename, f.content_type, bytes(f.data)) for f in files])


def feedings(body):
    """Every ``(first, size)`` feeding: two reads cut anywhere, and small reads at each phase."""
    for cut in range(1, len(body)):
        yield cut, len(body)
    for size in SIZES:
        for phase in range(size):
            yield phase, size


def same_everywhere(body, length="known"):
    """The one outcome of every feeding of ``body`` (the whole body in one read first)."""
    expected = outcome(body, 0, len(body) + 1, length)
    for first, size in feedings(body):
        got = outcome(body, first, size, length)
        assert got == expected, f"first read {first}, then {size}: {got} != {expected}"
    return expected


def part(name, content, filename=None, content_type=None):
    disposition = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    headers = [disposition] + ([f"Content-Type: {content_type}"] if content_type else [])
    return b"\r\n".join(h.encode() for h in headers) + b"\r\n\r\n" + content


def form(*parts, preamble=b"", epilogue=b""):
    delimiter = b"--" + BOUNDARY
    body = preamble
    for p in parts:
        body += delimiter + b"\r\n" + p + b"\r\n"
    return body + delimiter + b"--\r\n" + epilogue


TRICKY = (
    b"line one\r\nline two\r\n\r\n"  # CRLFs, a blank line
    b"--" + BOUNDARY[:-1] + b"X\r\n"  # a delimiter but for its last byte
    b"\r\n--" + BOUNDARY + b"_\r\n"  # the delimiter then a byte that ends none
    b"\r\r\n\n--\r\n-" + BOUNDARY[2:] + b"\r\n"  # pieces of one
)
DATA = json.dumps({"title": "Ça va ?", "n": 1}).encode()


def test_feedings_cover_every_offset_at_every_read_size():
    body = form(part("attachment", b"0123456789", filename="a.bin"))
    for size in SIZES:
        edges = set()
        for first, _ in ((f, s) for f, s in feedings(body) if s == size):
            edges.update(range(first, len(body), size))
        assert edges.issuperset(range(1, len(body)))


def test_file_with_crlf_and_boundary_like_bytes():
    assert BOUNDARY in TRICKY and b"\r\n--" + BOUNDARY in TRICKY
    body = form(part("attachment", TRICKY, filename="tricky.bin", content_type="image/png"))
    # The real delimiter is "\r\n--BOUNDARY" followed by "\r\n" or "--": TRICKY only has the
    # former followed by "_", which is content.
    assert same_everywhere(body) == (
        "ok",
        {},
        [("tricky.bin", "image/png", TRICKY)],
    )


def test_file_and_text_fields_with_an_epilogue():
    body = form(
        part("data", DATA),
        part("attachment", b"\r\n" + TRICKY + b"\r\n", filename="été.txt"),
        part("permissions", b'{"read": ["system.Everyone"]}'),
        epilogue=b"and an epilogue\r\n--" + BOUNDARY + b"--\r\n",
    )
    assert same_everywhere(body) == (
        "ok",
        {"data": DATA.decode(), "permissions": '{"read": ["system.Everyone"]}'},
        [("été.txt", None, b"\r\n" + TRICKY + b"\r\n")],
    )


def test_preamble_is_refused_wherever_it_is_cut():
    """RFC 2046 allows a preamble; python-multipart refuses one (no client we know sends any).
    Whichever way it is cut, the answer is the same 400."""
    body = form(part("attachment", b"x", filename="x"), preamble=b"This is a preamble.\r\n")
    errno, details, message = error_of(same_everywhere(body))
    assert details == [("attachment", "malformed multipart body")], (errno, details, message)


def test_leading_crlf_is_not_a_preamble():
    body = form(part("attachment", b"x", filename="x"), preamble=b"\r\n")
    assert same_everywhere(body) == ("ok", {}, [("x", None, b"x")])


def test_empty_file_and_empty_field():
    body = form(part("data", b""), part("attachment", b"", filename="empty"))
    assert same_everywhere(body) == ("ok", {"data": ""}, [("empty", None, b"")])


def test_unknown_length_reads_until_eof():
    body = form(part("attachment", TRICKY, filename="x"))
    assert same_everywhere(body, length=None) == ("ok", {}, [("x", None, TRICKY)])


def test_delimiter_at_every_read_edge():
    """Explicitly: reads that end right before, inside and after each delimiter."""
    content = b"ab\r\n" * 3
    body = form(part("data", DATA), part("attachment", content, filename="f"))
    expected = ("ok", {"data": DATA.decode()}, [("f", None, content)])
    delimiter = b"\r\n--" + BOUNDARY
    starts = [i for i in range(len(body)) if body.startswith(delimiter, i)]
    assert len(starts) == 2
    for start in starts:
        for cut in range(start - 1, start + len(delimiter) + 3):
            assert outcome(body, cut, len(body)) == expected, cut
            assert outcome(body, cut, 7) == expected, cut


def error_of(result):
    assert result[0] == "400", result
    _, errno, details, message = result
    return errno, [(d["name"], d["description"]) for d in details], message


def test_file_part_without_filename_is_refused():
    body = form(part("attachment", b"hello"))
    # kinto-attachment's answer, word for word (Kinto's raise_invalid, errno 107).
    errno, details, message = error_of(same_everywhere(body))
    assert (errno, details, message) == (
        107,
        [(None, "Filename is required.")],
        "body: Filename is required.",
    )


def test_text_field_without_filename_is_fine_but_needs_the_file():
    body = form(part("data", DATA))
    assert error_of(same_everywhere(body)) == (109, [], "Attachment missing.")


def test_two_files_are_refused():
    body = form(
        part("attachment", b"one", filename="1.txt"),
        part("attachment", b"two", filename="2.txt"),
    )
    errno, details, message = error_of(same_everywhere(body))
    assert (errno, message) == (109, "body: 'attachment': only one file may be attached")


def test_unknown_field_is_refused():
    body = form(part("attachment", b"x", filename="x"), part("colour", b"blue"))
    errno, ((name, _),), message = error_of(same_everywhere(body))
    # error_of cuts messages at " (": the whole one is checked in test_api's compatibility test.
    assert (errno, name, message) == (109, "colour", "body: 'colour' not in")


def test_without_the_file_part_other_parts_are_attachment_missing():
    """kinto-attachment's answer, whatever the other parts: files of another name, text
    fields given as files or twice, unknown fields."""
    body = form(
        part("fichierjoint", TRICKY, filename="image.jpg"),
        part("data", DATA, filename="data.json"),
        part("data", DATA),
        part("data", DATA),
        part("colour", b"blue"),
    )
    assert error_of(same_everywhere(body)) == (109, [], "Attachment missing.")


def test_other_parts_before_the_file_part_are_refused_when_it_begins():
    def open_file(filename, content_type):
        raise AssertionError("the file part must not be opened")

    body = form(part("fichierjoint", TRICKY, filename="a.jpg"), part("attachment", b"x", "x"))
    reader = multipart.FormReader(BOUNDARY, "attachment", ("data", "permissions"), open_file)
    with pytest.raises(HTTPException) as refused:
        multipart.read_form(io.BytesIO(body), len(body), reader)
    assert json.loads(refused.value.body)["message"] == (
        "body: 'fichierjoint' not in ('data', 'permissions')"
    )


def test_skipped_parts_count_towards_the_file_limit():
    """A file sent in a part of another name costs no more than a file that may be sent."""
    reader = multipart.FormReader(
        BOUNDARY, "attachment", ("data", "permissions"), Sink, max_skipped=len(TRICKY) - 1
    )
    body = form(part("fichierjoint", TRICKY, filename="a.jpg"))
    with pytest.raises(HTTPException) as refused:
        multipart.read_form(io.BytesIO(body), len(body), reader)
    assert refused.value.status_code == 413
    reader = multipart.FormReader(
        BOUNDARY, "attachment", ("data", "permissions"), Sink, max_skipped=len(TRICKY)
    )
    with pytest.raises(HTTPException) as refused:
        multipart.read_form(io.BytesIO(body), len(body), reader)
    assert json.loads(refused.value.body)["message"] == "Attachment missing."


def test_text_field_given_as_file_or_twice_is_refused():
    as_file = form(part("data", DATA, filename="data.json"), part("attachment", b"", "x"))
    errno, _, message = error_of(same_everywhere(as_file))
    assert (errno, message) == (109, "body: 'data' field should be passed as form data, not files")
    twice = form(part("data", DATA), part("data", DATA), part("attachment", b"", "x"))
    assert error_of(same_everywhere(twice))[1] == [("data", "'data' given twice")]


@pytest.mark.parametrize("cut", [1, 20, 60, -12, -5, -3])
def test_truncated_body_is_refused(cut):
    whole = form(part("data", DATA), part("attachment", TRICKY, filename="x"))
    body = whole[:cut] if cut > 0 else whole[: len(whole) + cut]
    errno, details, message = error_of(same_everywhere(body))
    assert details == [("attachment", "truncated multipart body")], (errno, details, message)


def test_final_crlf_is_optional():
    body = form(part("attachment", TRICKY, filename="x"))
    assert body.endswith(b"--\r\n")
    assert same_everywhere(body[:-2]) == ("ok", {}, [("x", None, TRICKY)])


def test_body_ending_before_its_content_length_is_refused():
    whole = form(part("attachment", TRICKY, filename="x"))
    errno, details, message = error_of(same_everywhere(whole[:-20], length=len(whole)))
    expected = f"The body ended after {len(whole) - 20} of the {len(whole)} bytes"
    assert (errno, details) == (107, []) and message.startswith(expected), message


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"--" + BOUNDARY + b"\r\nno colon here\r\n\r\nx", id="header-without-colon"),
        pytest.param(b"--" + BOUNDARY + b"X\r\n", id="wrong-boundary"),
        pytest.param(b"--" + BOUNDARY + b"\r\n\r\nbody\r\n--" + BOUNDARY + b"--", id="no-headers"),
        pytest.param(b"--" + BOUNDARY + b"\n", id="lf-after-boundary"),
    ],
)
def test_malformed_body_gives_the_same_400(body):
    errno, details, message = error_of(same_everywhere(body))
    assert errno == errors.ERRORS.INVALID_POSTED_DATA.value and len(details) == 1, (
        errno,
        details,
        message,
    )
