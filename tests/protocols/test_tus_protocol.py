"""The tus protocol module on its own: parsers, responses and refusals, without any Kinto app."""

import base64
import email.utils
import hashlib

import pytest
from kinto.core.errors import ERRORS
from pyramid import httpexceptions

from kinto_attachment.protocols import tus, tus_concat
from kinto_attachment.uploads import intake


def b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


def refusal(call, *args, **kwargs):
    """The refusal ``call`` raises, checked to be a tus one in Kinto's JSON format."""
    with pytest.raises(httpexceptions.HTTPException) as raised:
        call(*args, **kwargs)
    error = raised.value
    assert error.json["code"] == error.code
    assert error.content_type == "application/json"
    return error


def assert_tus_error(error, code, message, errno=ERRORS.INVALID_PARAMETERS):
    assert error.code == code
    assert error.headers["Tus-Resumable"] == "1.0.0"
    assert error.json["errno"] == errno.value
    assert message in error.json["message"]


# Tus-Resumable


def test_the_version_is_required():
    tus.require_version("1.0.0")
    for value in (None, "", "0.2.2", "1.0.0 ", "1.0"):
        error = refusal(tus.require_version, value)
        assert_tus_error(error, 412, "Tus-Resumable: 1.0.0 is required")
        assert error.headers["Tus-Version"] == "1.0.0"


# Integers: Upload-Length, Upload-Offset


@pytest.mark.parametrize(
    "value,expected",
    [
        ("0", 0),
        ("10", 10),
        ("007", 7),
        ("9" * 18, 10**18 - 1),
        ("0" * 5000, 0),  # More than Python converts, but only zeros.
        ("0" * 4999 + "1", 1),
    ],
)
def test_integers(value, expected):
    assert tus.integer("Upload-Offset", value) == expected
    assert tus.upload_offset(value) == expected


@pytest.mark.parametrize(
    "value", [None, "", "-1", "+1", "ten", "1.5", "1e3", " 1", "1 ", "0x10", "١٢", "²"]
)
def test_non_integers(value):
    error = refusal(tus.upload_offset, value)
    assert_tus_error(error, 400, "Upload-Offset must be a non-negative integer.")


@pytest.mark.parametrize("value", ["1" + "0" * 18, "9" * 5000, "0" * 10 + "9" * 19])
def test_too_many_digits(value):
    error = refusal(tus.upload_offset, value)
    assert_tus_error(error, 400, "Upload-Offset is too large.")
    too_long = tus.too_large(100)
    assert refusal(tus.integer, "Upload-Length", value, too_long) is too_long


def test_upload_length():
    assert tus.upload_length("10") == 10
    assert tus.upload_length("100", max_size=100) == 100
    assert tus.upload_length("5", defer_length="") == 5
    assert tus.upload_length("9" * 18, max_size=0) == 10**18 - 1
    assert tus.upload_length(None, defer_length="1", max_size=100) is None
    error = refusal(tus.upload_length, "1", defer_length="1")
    assert_tus_error(error, 400, "Send Upload-Length or Upload-Defer-Length, not both.")
    for value in ("0", "2", "true"):
        error = refusal(tus.upload_length, None, defer_length=value)
        assert_tus_error(error, 400, "Upload-Defer-Length must be 1.")
    assert_tus_error(refusal(tus.upload_length, None), 400, "Upload-Length must be")
    assert_tus_error(refusal(tus.upload_length, "-1"), 400, "Upload-Length must be")
    assert_tus_error(refusal(tus.upload_length, "9" * 5000), 400, "Upload-Length is too large")
    for value in ("101", "9" * 19, "9" * 5000):
        error = refusal(tus.upload_length, value, max_size=100)
        assert_tus_error(error, 413, "exceeds the limit (100 bytes)", ERRORS.REQUEST_TOO_LARGE)


def test_declared_length():
    """creation-defer-length: a PATCH tells the length once; it cannot change afterwards."""
    assert tus.declared_length(None, None, 5) is None  # Still deferred.
    assert tus.declared_length(None, 10, 5) == 10
    assert tus.declared_length("10", None, 5, max_size=10) == 10
    assert tus.declared_length("5", None, 5) == 5  # All bytes received: complete.
    assert tus.declared_length("10", 10, 5) == 10  # Said again, the same.
    assert_tus_error(refusal(tus.declared_length, "11", 10, 5), 400, "is 10 already")
    assert_tus_error(refusal(tus.declared_length, "4", None, 5), 400, "less than the 5 bytes")
    assert_tus_error(refusal(tus.declared_length, "x", None, 5), 400, "Upload-Length must be")
    error = refusal(tus.declared_length, "11", None, 5, max_size=10)
    assert_tus_error(error, 413, "exceeds the limit (10 bytes)", ERRORS.REQUEST_TOO_LARGE)


# Upload-Metadata


def test_metadata():
    data, permissions = '{"title": "CV"}', '{"read": ["system.Everyone"]}'
    header = ",".join(
        [
            f"filename {b64('résumé.pdf')}",
            f"filetype {b64('application/pdf')}",
            f"data {b64(data)}",
            f"permissions {b64(permissions)}",
            "is_confidential",
        ]
    )
    assert tus.metadata(header) == {
        "filename": "résumé.pdf",
        "filetype": "application/pdf",
        "data": data,
        "permissions": permissions,
        "is_confidential": "",
    }
    spaced = f" filename {b64('a.txt')} ,, other {b64('x')} "
    assert tus.metadata(spaced) == {"filename": "a.txt", "other": "x"}


@pytest.mark.parametrize(
    "header",
    [None, "", ",", f"filetype {b64('text/plain')}", "filename", f"filename {b64('')}"],
)
def test_metadata_without_filename(header):
    error = refusal(tus.metadata, header)
    assert_tus_error(error, 400, "Upload-Metadata: filename is required.")


@pytest.mark.parametrize(
    "header,key",
    [
        ("filename !!!", "filename"),
        ("filename YQ", "filename"),  # Unpadded.
        (f"filename {b64('a.txt')},data a=b=", "data"),
        ("filename " + b64(b"\xff\xfe"), "filename"),  # Not UTF-8.
        ("filename ÿÿÿÿ", "filename"),  # Not ASCII (WSGI headers are Latin-1).
        # Control characters: the header is kept and answered by HEAD as it was sent.
        (f"filename {b64('a.txt')}\x0b", "filename"),
        (f"filename {b64('a.txt')},\x1fdata {b64('{}')}", "'\\x1fdata'"),
    ],
)
def test_metadata_bad_values(header, key):
    error = refusal(tus.metadata, header)
    assert_tus_error(error, 400, f"Upload-Metadata: bad {key}")


@pytest.mark.parametrize("name", ["data", "permissions"])
@pytest.mark.parametrize(
    "value,problem",
    [
        ("{not json", "is not valid JSON (Expecting property name"),
        ("[" * 100_000 + "]" * 100_000, "is nested too deeply."),
        ('{"a":' * 100_000 + "1" + "}" * 100_000, "is nested too deeply."),
        # Python converts 4300 digits at most.
        ('{"size": 1' + "0" * 5000 + "}", "is not valid JSON (Exceeds the limit"),
        ("[1]", "should be a JSON object."),
        ('"text"', "should be a JSON object."),
        ("null", "should be a JSON object."),
    ],
)
def test_metadata_record_fields(name, value, problem):
    """The record's data and permissions: checked as in a multipart form, told as tus does."""
    header = f"filename {b64('a.txt')},{name} {b64(value)}"
    error = refusal(intake.record_fields, tus.metadata(header), tus.invalid_metadata)
    assert_tus_error(error, 400, f"Upload-Metadata: {name} {problem}")


# Upload-Checksum


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "md5"])
def test_checksum(algorithm):
    digest = hashlib.new(algorithm, b"chunk").digest()
    hasher, expected = tus.checksum(f"{algorithm} {b64(digest)}")
    assert expected == digest
    hasher.update(b"chunk")
    assert hasher.digest() == digest
    assert algorithm in tus.CHECKSUMS


def test_no_checksum():
    assert tus.checksum(None) == (None, None)


@pytest.mark.parametrize("header", ["crc32 AAAA", "SHA1 AAAA", "sha512 AAAA", "", " sha1 AAAA"])
def test_unknown_checksum_algorithms(header):
    error = refusal(tus.checksum, header)
    assert_tus_error(error, 400, "Upload-Checksum: unsupported algorithm")


@pytest.mark.parametrize(
    "header",
    [
        "sha1 !!",
        "sha1 AAA",
        "md5 AA AA",
        "sha256 ÿÿÿÿ",
        # Digests no chunk has: none, or of another size than the algorithm's.
        "sha1",
        "sha1 ",
        "sha1 AAAA",
        f"sha256 {b64(hashlib.sha1(b'x').digest())}",
    ],
)
def test_checksum_that_no_chunk_can_match(header):
    """Refused before the chunk is read: sending it could only end in a 460."""
    error = refusal(tus.checksum, header)
    assert_tus_error(error, 400, "Upload-Checksum: not the base64 of a digest of its algorithm.")


# Chunks


def test_chunk_type():
    tus.require_chunk_type("application/offset+octet-stream")
    for value in (None, "", "text/plain", "application/octet-stream"):
        error = refusal(tus.require_chunk_type, value)
        assert_tus_error(error, 415, "Content-Type must be application/offset+octet-stream.")


def test_chunk_offset():
    tus.require_offset(5, 5)
    error = refusal(tus.require_offset, 3, 5)
    assert_tus_error(error, 409, "Upload-Offset is 3, the upload is at 5.")
    assert error.headers["Upload-Offset"] == "5"


def test_chunks_must_fit():
    tus.require_chunk_fits(5, 5, 10)
    tus.require_chunk_fits(0, 10, 10)
    tus.require_chunk_fits(None, 3, 10)  # Chunked: stopped where it goes past.
    error = refusal(tus.require_chunk_fits, 6, 5, 10)
    assert_tus_error(error, 413, "goes 1 bytes past Upload-Length", ERRORS.REQUEST_TOO_LARGE)


@pytest.mark.parametrize(
    "make,code,errno,message",
    [
        (tus.checksum_mismatch, 460, ERRORS.INVALID_PARAMETERS, "does not match the chunk"),
        (tus.unknown_upload, 404, ERRORS.MISSING_RESOURCE, "Unknown upload."),
        (tus.locked, 423, ERRORS.CONSTRAINT_VIOLATED, "Another request is writing"),
        (tus.gone, 410, ERRORS.MISSING_RESOURCE, "start a new upload"),
    ],
)
def test_refusals(make, code, errno, message):
    error = make()
    assert_tus_error(error, code, message, errno)
    assert error.json["error"] == error.title


def test_a_completed_upload_tells_its_offset():
    error = tus.completed(10)
    assert_tus_error(error, 409, "The upload is complete")
    assert error.headers["Upload-Offset"] == "10"


# X-HTTP-Method-Override


@pytest.mark.parametrize(
    "method,override,expected",
    [
        ("POST", "PATCH", "PATCH"),
        ("POST", "DELETE", "DELETE"),
        ("POST", " patch ", "PATCH"),
        ("POST", None, "POST"),
        ("POST", "", "POST"),
        # Only a POST stands for another method.
        ("PATCH", "DELETE", "PATCH"),
        ("HEAD", "PATCH", "HEAD"),
    ],
)
def test_method_override(method, override, expected):
    assert tus.method(method, override) == expected


def test_error_with_headers():
    error = tus.error("too_many_uploads", count=2, limit=1, retry_after=3)
    assert (error.code, error.json["error"]) == (429, "Too Many Requests")
    assert error.headers["Retry-After"] == "3"
    assert error.headers["Tus-Resumable"] == "1.0.0"


# Dates


@pytest.mark.parametrize(
    "msec,text",
    [
        (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (999, "Thu, 01 Jan 1970 00:00:00 GMT"),
        (1_700_000_000_123, "Tue, 14 Nov 2023 22:13:20 GMT"),
        (1_709_251_199_999, "Thu, 29 Feb 2024 23:59:59 GMT"),
    ],
)
def test_http_date(msec, text):
    assert tus.http_date(msec) == text
    parsed = email.utils.parsedate_to_datetime(text)
    assert int(parsed.timestamp()) == msec // 1000


def test_progress():
    assert tus.progress(5) == {"Upload-Offset": 5}
    assert tus.progress(5, 0) == {
        "Upload-Offset": 5,
        "Upload-Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
    }


# Responses


def test_response():
    response = tus.response(201, Location="http://x/u/1", Upload_Offset=0)
    assert response.status_code == 201
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Location"] == "http://x/u/1"
    assert response.headers["Upload-Offset"] == "0"
    assert "Content-Type" not in response.headers
    assert response.body == b""
    # Which origin may read it is for the views, which know Kinto's cors_origins.
    assert not any(name.startswith("Access-Control") for name in response.headers)


def test_exposed_headers():
    exposed = set(tus.EXPOSED_HEADERS)
    assert {"Location", "Upload-Offset", "Upload-Length", "Upload-Expires", "Tus-Resumable"} <= (
        exposed
    )
    assert "X-HTTP-Method-Override" in tus.ALLOWED_HEADERS
    # creation-defer-length and concatenation: a page reads and sends their headers.
    assert {"Upload-Defer-Length", "Upload-Concat"} <= exposed
    assert "Upload-Concat" in tus.ALLOWED_HEADERS.split(", ")


def test_discovery():
    response = tus.discovery()
    assert response.status_code == 204
    assert response.headers["Tus-Resumable"] == response.headers["Tus-Version"] == "1.0.0"
    assert response.headers["Tus-Extension"].split(",") == [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "checksum",
        "expiration",
        "concatenation",
    ]
    without = tus.discovery(concatenation=False).headers["Tus-Extension"].split(",")
    assert "concatenation" not in without and "creation-defer-length" in without
    assert response.headers["Tus-Checksum-Algorithm"] == "sha1,sha256,md5"
    assert "Tus-Max-Size" not in response.headers
    assert "Access-Control-Allow-Methods" not in response.headers
    assert "Access-Control-Allow-Origin" not in response.headers


def test_discovery_with_a_limit_and_a_preflight():
    response = tus.discovery(max_size=100, preflight=True)
    assert response.headers["Tus-Max-Size"] == "100"
    assert response.headers["Access-Control-Max-Age"] == "86400"
    methods = response.headers["Access-Control-Allow-Methods"].split(", ")
    assert set(methods) == {"POST", "HEAD", "PATCH", "DELETE", "OPTIONS"}
    allowed = set(response.headers["Access-Control-Allow-Headers"].split(", "))
    assert {
        "Tus-Resumable",
        "Upload-Length",
        "Upload-Metadata",
        "Upload-Offset",
        "Upload-Checksum",
        "Upload-Defer-Length",
        "Content-Type",
        "Authorization",
    } <= allowed


# Concatenation


def test_concat():
    assert tus_concat.concat(None) is None
    assert tus_concat.concat("partial") == tus_concat.Concat(final=False)
    assert tus_concat.concat("partial").header == "partial"
    final = tus_concat.concat("final;http://x/u/1  /u/2")
    assert final == tus_concat.Concat(final=True, urls=("http://x/u/1", "/u/2"))
    assert final.header == "final;http://x/u/1 /u/2"


@pytest.mark.parametrize(
    "header,message",
    [
        ("", "Upload-Concat must be"),
        ("Partial", "Upload-Concat must be"),
        ("final", "Upload-Concat must be"),
        ("final; ", "Upload-Concat must be"),
        ("finally;/u/1", "Upload-Concat must be"),
        # Each part is locked in the final's transaction: a bounded number of them.
        ("final;" + " ".join(f"/u/{n}" for n in range(1001)), "more than 1000 partial uploads"),
    ],
)
def test_bad_concat(header, message):
    assert_tus_error(refusal(tus_concat.concat, header), 400, message)


def test_upload_ids():
    uploads = "/v1/r/attachment/uploads"
    urls = [f"http://h:1{uploads}/a1", f"{uploads}/b2", f"https://other{uploads}/c3?x#y"]
    assert tus_concat.upload_ids(urls, uploads) == ["a1", "b2", "c3"]
    for url in (f"{uploads}/", f"{uploads}/a/b", "/v1/q/attachment/uploads/a1", uploads, "a1"):
        error = refusal(tus_concat.upload_ids, [f"{uploads}/ok", url], uploads)
        assert_tus_error(error, 400, f"{url} is no upload of this record")
    # Not a URL at all (urlsplit refuses it): no upload either.
    error = refusal(tus_concat.upload_ids, ["http://[::1/x"], uploads)
    assert_tus_error(error, 400, "http://[::1/x is no upload of this record")


def test_an_upload_named_twice_is_named_twice_however_spelled():
    """ "The same partial upload MAY be present multiple times in the Upload-Concat header"
    (tus 1.0.0): its bytes are joined as often (found by review, 2026-12-05: it was a 400).
    The ids are read whatever the URLs' spelling (an absolute URL and its path)."""
    uploads = "/v1/r/attachment/uploads"
    for urls in ([f"{uploads}/a1", f"{uploads}/a1"], [f"http://h{uploads}/a1", f"{uploads}/a1"]):
        assert tus_concat.upload_ids(urls, uploads) == ["a1", "a1"]


def test_creation_of_a_final_upload():
    tus_concat.require_creation_of_final(None, None, None)
    tus_concat.require_creation_of_final(None, None, "application/json")
    for length, defer in (("5", None), (None, "1"), ("0", "1")):
        error = refusal(tus_concat.require_creation_of_final, length, defer, None)
        assert_tus_error(error, 400, "no Upload-Length nor Upload-Defer-Length")
    error = refusal(tus_concat.require_creation_of_final, None, None, tus.CHUNK_TYPE)
    assert_tus_error(error, 400, "carries no bytes")
    assert_tus_error(tus_concat.final_is_read_only(), 403, "takes no PATCH", ERRORS.FORBIDDEN)


@pytest.mark.parametrize(
    "name,code,errno,message",
    [
        ("unknown", 404, ERRORS.MISSING_RESOURCE, "unknown partial upload /u/1"),
        ("not_partial", 400, ERRORS.INVALID_PARAMETERS, "/u/1 is not a partial upload"),
        ("unfinished", 400, ERRORS.INVALID_PARAMETERS, "partial upload /u/1 is not finished"),
    ],
)
def test_concat_refusals(name, code, errno, message):
    assert_tus_error(tus_concat.concat_refusal(name, "/u/1"), code, message, errno)


def test_metadata_of_a_partial_upload_needs_no_filename():
    assert tus.metadata(None, filename=False) == {}
    assert tus.metadata(f"filetype {b64('a/b')}", filename=False) == {"filetype": "a/b"}
