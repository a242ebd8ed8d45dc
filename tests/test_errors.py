"""The refusal catalogue (:mod:`kinto_attachment.errors`) and the errors table of docs/api.rst."""

import re
from pathlib import Path

import pytest
from pyramid import httpexceptions

from kinto_attachment import errors
from kinto_attachment.protocols import tus


API_PAGE = Path(__file__).parent.parent / "docs" / "api.rst"
#: A row of the table: status and errno, then its description (continued lines start blank).
ROW = re.compile(r"^(\d{3})\s+(\d{3})\s")


def documented_pairs():
    """The (status, errno) pairs of the simple table of docs/api.rst's "Errors"."""
    text = API_PAGE.read_text(encoding="utf-8")
    section = text.split("\nErrors\n------\n", 1)[1]
    borders = [i for i, line in enumerate(section.splitlines()) if line.startswith("======")]
    assert len(borders) >= 3, "the Errors table: header, rows and bottom borders"
    rows = section.splitlines()[borders[1] + 1 : borders[2]]
    pairs = [tuple(int(n) for n in ROW.match(row).groups()) for row in rows if ROW.match(row)]
    assert len(pairs) == len(set(pairs)), "a status/errno pair listed twice"
    return set(pairs)


def catalogue_pairs():
    return {(r.status, r.errno.value) for r in errors.REFUSALS.values()}


def test_documentation_lists_every_refusal():
    missing = catalogue_pairs() - documented_pairs()
    assert not missing, f"add rows to the errors table of docs/api.rst: {sorted(missing)}"


def test_documentation_lists_no_other_refusal():
    unknown = documented_pairs() - catalogue_pairs()
    assert not unknown, f"the errors table of docs/api.rst has no refusal for: {sorted(unknown)}"


def _params(refusal):
    return {name: f"<{name}>" for name in refusal.parameters()}


@pytest.mark.parametrize("name", sorted(errors.REFUSALS))
def test_refusal(name):
    refusal = errors.REFUSALS[name]
    params = _params(refusal)
    error = errors.refuse(name, **params)
    if refusal.bare is not None:  # Kinto's own view writes the answer.
        assert type(error) is refusal.bare and error.content_type != "application/json"
        return
    assert error.code == refusal.status
    assert error.json["code"] == refusal.status
    assert error.json["errno"] == refusal.errno.value
    assert error.json["error"] == (refusal.title or error.title)
    if refusal.message is not None:
        assert error.json["message"] == refusal.message.format(**params)
    for header, template in refusal.headers.items():
        assert error.headers[header] == template.format(**params)
    assert "Tus-Resumable" not in error.headers


def test_refusal_needs_its_parameters():
    with pytest.raises(KeyError):
        errors.refuse("too_large")


def test_unknown_refusal():
    with pytest.raises(KeyError):
        errors.refuse("no such refusal")


def test_details_keep_parameter_types():
    error = errors.refuse("missing", resource_name="record", id=None)
    assert error.json["details"] == {"id": None, "resource_name": "record"}
    error = errors.refuse("invalid_posted_data", name="data", description="data is {not} JSON")
    assert error.json["message"] == "body: data is {not} JSON"
    assert error.json["details"] == [
        {"location": "body", "name": "data", "description": "data is {not} JSON"}
    ]
    error = errors.refuse("invalid_body", description="Filename is required.")
    assert error.json["details"] == [
        {"location": "body", "name": None, "description": "Filename is required."}
    ]


def test_literal_braces():
    message = errors.refuse("attachment_edit").json["message"]
    assert "POST {record}/attachment" in message and "DELETE {record}/attachment" in message


def test_tus_adds_its_header_first():
    error = tus.error("offset_conflict", offset=3, current=5)
    assert (error.code, error.json["errno"]) == (409, errors.ERRORS.INVALID_PARAMETERS.value)
    assert list(error.headers)[-2:] == ["Tus-Resumable", "Upload-Offset"]
    assert error.headers["Upload-Offset"] == "5"


def test_checksum_mismatch_status():
    error = errors.refuse("checksum_mismatch")
    assert isinstance(error, httpexceptions.HTTPClientError)
    assert (error.code, error.title) == (460, "Checksum Mismatch")
