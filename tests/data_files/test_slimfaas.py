"""``/data/files`` as SlimFaas's clients use it (found by review, 2026-12-05): a declared type
comes back with its parameters, listings carry ``expireAtUtcTicks``, a ``ttl`` SlimFaas takes
is taken.

Reference: SlimPlanet/SlimFaas (formerly AxaFrance/SlimFaas), commit 3cb41f11:
``src/SlimFaas/Data/DataFileRoutes.cs`` (``DataFileHandlers.PostAsync``, ``GetAsync``,
``ListFilesAsync``, ``DataFileEntry``), ``src/SlimFaas/Database/SlimDataService.cs``
(``ToExpireAtUtcTicks``), ``docs/data-files.md`` and ``docs/data-sets.md``.
"""

import time

import transaction
from kinto.core.utils import msec_time

from kinto_attachment.state import data_file_entries


LOCAL = {"REMOTE_ADDR": "127.0.0.1"}
#: .NET ``DateTime.UtcNow.Ticks`` at the Unix epoch (100 ns ticks since 0001-01-01).
UNIX_EPOCH_TICKS = 621_355_968_000_000_000


def _post(kinto, body, query, status=200, **headers):
    return kinto.app.post(
        f"/v1/data/files{query}", body, headers=headers, extra_environ=LOCAL, status=status
    )


def _get(kinto, file_id):
    return kinto.app.get(f"/v1/data/files/{file_id}", extra_environ=LOCAL)


def test_content_type_parameters_are_returned_on_download(kinto_memory):
    """Found by review (2026-12-05).

    SlimFaas stores the request's ``Content-Type`` as sent and returns it whole:
    ``DataFileHandlers.PostAsync`` keeps ``context.Request.ContentType`` (parameters included)
    in ``DataSetMetadata.ContentType``, and ``DataFileHandlers.GetAsync`` answers
    ``Results.File(..., contentType: meta.ContentType, ...)``; docs/data-files.md: "Content-Type
    from metadata". docs/data-files.rst promises the same ("Content-Type ... are stored and
    returned").

    Here ``posted.plan`` keeps only ``type/subtype`` (``media_types.parse_media_type`` drops
    every parameter), so the download loses what is needed to read the bytes:

    - a ``multipart/*`` artifact loses its ``boundary``: the body stored raw can no longer be
      split into its parts by whoever downloads it (the metadata is lost for good);
    - ``text/plain; charset=utf-8`` comes back as bare ``text/plain``, which HTTP clients
      (``requests``' ``.text``, per RFC 2616) decode as ISO-8859-1: "résumé" reads "rÃ©sumÃ©".
    """
    multipart = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="f"; filename="a.txt"\r\n\r\n'
        b"hello\r\n--XyZ--\r\n"
    )
    _post(
        kinto_memory, multipart, "?id=parts", **{"Content-Type": "multipart/mixed; boundary=XyZ"}
    )
    text = "résumé".encode()
    _post(kinto_memory, text, "?id=note", **{"Content-Type": "text/plain; charset=utf-8"})

    parts = _get(kinto_memory, "parts")
    note = _get(kinto_memory, "note")

    assert parts.body == multipart  # The bytes are kept...
    assert note.body == text
    # ... but not what says how to read them.
    assert "boundary=XyZ" in parts.headers["Content-Type"], parts.headers["Content-Type"]
    assert "charset=utf-8" in note.headers["Content-Type"].lower(), note.headers["Content-Type"]


def test_listing_has_slimfaas_entries(kinto_memory):
    """Found by review (2026-12-05).

    SlimFaas's ``GET /data/files`` (``DataFileHandlers.ListFilesAsync``) answers a JSON list
    of ``DataFileEntry(Id, ExpireAtUtcTicks)``, serialised camelCase by the web JSON options
    (``Program.cs`` registers ``DataFileRoutesJsonContext``): ``{"id": ..., "expireAtUtcTicks":
    ...}``, ``-1`` for a file without ttl, else the expiry as .NET UTC ticks (as the sibling
    ``/data/sets`` listing shows in docs/data-sets.md: ``{ "id": "abc", "expireAtUtcTicks": -1
    }``).

    docs/data-files.rst says SlimFaas's API "works unchanged", yet entries here carry
    ``expiration`` (epoch milliseconds or ``null``) and no ``expireAtUtcTicks``: a SlimFaas
    client reading the list (``entry["expireAtUtcTicks"]``, or comparing it with
    ``DateTime.UtcNow.Ticks`` to skip files about to expire) gets a KeyError / a missing
    property, on every entry.
    """
    _post(kinto_memory, b"forever", "?id=forever")
    before = msec_time()
    _post(kinto_memory, b"soon", "?id=soon&ttl=600000")

    entries = {
        e["id"]: e for e in kinto_memory.app.get("/v1/data/files", extra_environ=LOCAL).json
    }

    assert set(entries) == {"forever", "soon"}
    assert entries["forever"].get("expireAtUtcTicks") == -1, entries["forever"]
    expected = (before + 600_000) * 10_000 + UNIX_EPOCH_TICKS
    ticks = entries["soon"].get("expireAtUtcTicks")
    assert ticks is not None, entries["soon"]
    assert abs(ticks - expected) < 60 * 10_000_000  # Within a minute.


def test_large_ttl_that_slimfaas_accepts_is_not_refused(kinto_memory):
    """Found by review (2026-12-05).

    SlimFaas binds ``ttl`` as a ``long?`` (``DataFileHandlers.PostAsync``: ``[FromQuery]
    long? ttl // milliseconds``) and ``SlimDataService.ToExpireAtUtcTicks`` clamps an overflow
    to ``long.MaxValue`` (``catch (OverflowException) { return long.MaxValue; }``): any ttl up
    to 9223372036854775807 is stored, a huge one meaning "never expires".

    docs/data-files.rst only says "``ttl`` is a positive number of milliseconds"; the code
    (``posted.ttl``, ``MAX_TTL_DIGITS = 15``) refuses 16 digits and more with a ``400``. A
    SlimFaas client passing a sentinel such as JavaScript's ``Number.MAX_SAFE_INTEGER``
    (9007199254740991) or .NET's ``long.MaxValue`` has every upload refused: the file is not
    stored at all.
    """
    for ttl in ("9007199254740991", "9223372036854775807"):
        response = _post(kinto_memory, b"kept", f"?id=big-ttl&ttl={ttl}", status="*")
        assert response.status_int == 200, (ttl, response.status, response.text)
        assert _get(kinto_memory, "big-ttl").body == b"kept"
    # Still live, not expired at once.
    time.sleep(0.01)
    assert [e["id"] for e in kinto_memory.app.get("/v1/data/files", extra_environ=LOCAL).json] == [
        "big-ttl"
    ]


def test_listed_ticks_are_64_bit_integers_even_for_1_0_0_entries(kinto_memory):
    """Found by review (2026-12-05) of the fix above.

    0d01c31 listed every ``/data/files`` entry's ``expireAtUtcTicks`` as
    ``expiration * 10_000 + UNIX_EPOCH_TICKS``, for SlimFaas's clients, which read it as a
    .NET ``long`` (SlimFaas itself clamps an overflowing expiry to ``long.MaxValue``). The
    previous release accepted any ``ttl`` of up to 15 digits (``MAX_TTL_DIGITS``), and its
    entries are still listed: one stored with ``ttl=999999999999999`` (the old maximum) now
    lists ``expireAtUtcTicks`` around 1.06e19, past 2**63-1 (and far past .NET's
    ``DateTime.MaxValue`` ticks), so a SlimFaas client deserialising the listing fails on the
    whole list, every entry lost to it. By the commit's own rule such an entry (its expiry is
    past a century) has none: it should list ``-1``, or at worst ``long.MaxValue``."""
    kinto_memory.app.post("/v1/data/files?id=old&ttl=600000", b"kept", extra_environ=LOCAL)
    storage = kinto_memory.registry.storage
    entry = data_file_entries.get(storage, "old")
    # As 1.0.0 stored ``?ttl=999999999999999`` (15 digits: accepted then).
    legacy = {**entry, "expiration": msec_time() + 999_999_999_999_999}
    data_file_entries.put(storage, "old", legacy, entry)
    transaction.commit()

    listed = kinto_memory.app.get("/v1/data/files", extra_environ=LOCAL).json
    ticks = listed[0]["expireAtUtcTicks"]
    assert -1 <= ticks <= 2**63 - 1, f"expireAtUtcTicks {ticks} is no 64-bit integer"


def test_parameters_that_are_no_ascii_are_not_kept(kinto_memory):
    """Found by review (2026-12-05) of the fix above.

    S3 signs a header as UTF-8 and sends it as Latin-1: a ``Content-Type`` parameter that is
    no ASCII (``a="é"``) would make every store write of it fail (a 503). Such parameters are
    not kept: the type is."""
    _post(kinto_memory, b"x", "?id=latin", **{"Content-Type": 'text/plain; a="\xe9"'})
    assert _get(kinto_memory, "latin").headers["Content-Type"] == "text/plain"
