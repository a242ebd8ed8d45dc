"""Names and ids of uploads as kinto-attachment's clients and operators meet them: names a
client chose made safe and distinct, a record id Kinto refuses, store settings left without
their bucket, uploads of one name on S3. Found by a review (2026-12-05)."""

import base64

import pytest
from pyramid.exceptions import ConfigurationError

from kinto_attachment.storage.keys import safe_name

from ..conftest import ALICE, Kinto, build_settings, make_app


TUS = {"Tus-Resumable": "1.0.0"}
DEFAULT = "/v1/buckets/default/collections/mine/records"


@pytest.mark.parametrize(
    "name",
    [
        "()!.txt",
        "  .txt",
        "(.)",
        ".(.).",
        "..",
        ".",
        "(.)htaccess",
        " .bashrc",
        "x.(",
        "(" * 300 + ".txt",
        "a" * 300 + "." + "(" * 40 + "txt",
        "\u6587.(\u6587)",
    ],
)
def test_names_reduced_by_dropped_characters_stay_safe(name):
    """Found by review (2026-12-05).

    Checked, no defect: a name of dropped characters becomes ``file``, never empty,
    hidden, ``.`` or ``..``, nor longer than 200."""
    made = safe_name(name)
    assert made and not made.startswith(".") and made not in (".", "..")
    assert len(made) <= 200
    assert set(made) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def test_two_names_made_one_by_dropped_characters_keep_both_files(tmp_path):
    """Found by review (2026-12-05).

    Checked, no defect: with ``randomize = false``, ``a(1).txt`` and ``a1.txt`` are both
    ``a1.txt``; the second, uploaded while the first's name is in quarantine (its file just
    deleted) or taken, gets a variant, and each record serves its own file."""
    settings = build_settings("memory", str(tmp_path), **{"kinto.attachment.randomize": "false"})
    kinto = Kinto(make_app(settings), str(tmp_path))
    kinto.create_collection()
    first = kinto.upload(kinto.record_url("r1"), content=b"one", filename="a(1).txt").json
    assert first["location"].endswith("/a1.txt")
    kinto.app.delete(kinto.record_url("r1") + "/attachment", headers=ALICE, status=204)
    kept = kinto.upload(kinto.record_url("r2"), content=b"two", filename="a1.txt").json
    third = kinto.upload(kinto.record_url("r3"), content=b"three", filename="a 1.txt").json
    assert len({kept["location"], third["location"], first["location"]}) == 3
    for record, content in (("r2", b"two"), ("r3", b"three")):
        served = kinto.app.get(kinto.record_url(record) + "/attachment", headers=ALICE)
        assert served.body == content


INVALID_IDS = ["a.b", "-x", "_x", "%C3%A9"]


@pytest.mark.parametrize("rid", INVALID_IDS)
def test_an_invalid_record_id_is_kintos_400_on_every_upload_entry_point(tmp_path, rid):
    """Found by review (2026-12-05).

    Checked, no defect: multipart, tus creation, tus concatenation's final upload, and the
    default bucket's two: 400 errno 107 as Kinto's ``PUT``; a missing collection first is a
    404; ``GET`` and ``DELETE`` of the attachment keep their 404."""
    settings = build_settings(
        "memory",
        str(tmp_path),
        **{"kinto.includes": "kinto.plugins.default_bucket kinto.plugins.flush kinto_attachment"},
    )
    kinto = Kinto(make_app(settings), str(tmp_path))
    kinto.create_collection()
    meta = {"Upload-Metadata": "filename " + base64.b64encode(b"a.txt").decode()}
    url = kinto.record_url(rid)
    assert kinto.app.put_json(url, {"data": {}}, headers=ALICE, status=400).json["errno"] == 107
    answers = [
        kinto.upload(url, status="*"),
        kinto.app.post(
            url + "/attachment/uploads",
            headers={**ALICE, **TUS, "Upload-Length": "3", **meta},
            status="*",
        ),
        kinto.app.post(
            url + "/attachment/uploads",
            headers={**ALICE, **TUS, "Upload-Concat": "final;/v1/x", **meta},
            status="*",
        ),
        kinto.upload(f"{DEFAULT}/{rid}", status="*"),
        kinto.app.post(
            f"{DEFAULT}/{rid}/attachment/uploads",
            headers={**ALICE, **TUS, "Upload-Length": "3", **meta},
            status="*",
        ),
    ]
    assert [(a.status_int, a.json["errno"]) for a in answers] == [(400, 107)] * len(answers)
    missing = kinto.upload(kinto.record_url(rid, collection="nope"), status="*")
    assert (missing.status_int, missing.json["errno"]) == (404, 111)
    assert kinto.app.get(url + "/attachment", headers=ALICE, status=404).json["errno"] == 111
    assert kinto.app.delete(url + "/attachment", headers=ALICE, status=404).json["errno"] == 111


def test_an_empty_aws_bucket_name_beside_base_path_stops_startup(tmp_path):
    """Found by review (2026-12-05).

    Defect (regression of 6ecf33b; operations).

    ``store_options`` now ignores a store's settings "without their bucket", and takes an
    *empty* ``aws.bucket_name`` for none: an ini that names S3 (``aws.bucket_name =
    ${BUCKET}``, a template whose variable was not set: the case ``redis.stream`` is refused
    for) beside a ``base_path`` left from ``kinto.ini`` starts on the local disk, with only
    a warning that lists ``aws.bucket_name`` itself among the settings "ignored ... without
    ``aws.bucket_name``". Files then go to a container's disk. Before 6ecf33b start-up
    stopped; kinto-attachment's case (credentials left, no ``bucket_name`` at all) does not
    need an empty value to be taken as absent."""
    settings = build_settings(
        "memory",
        str(tmp_path),
        **{
            "kinto.attachment.aws.bucket_name": "",
            "kinto.attachment.aws.access_key": "AKIA-example",
            "kinto.attachment.aws.secret_key": "example",
            "kinto.attachment.aws.region": "eu-west-1",
        },
    )
    with pytest.raises(ConfigurationError) as refused:
        make_app(settings)
    assert "aws.bucket_name" in str(refused.value)


def _tus_create(app, record_url, name, length):
    created = app.post(
        record_url + "/attachment/uploads",
        headers={
            **ALICE,
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": "filename " + base64.b64encode(name.encode()).decode(),
        },
        status=201,
    )
    return created.headers["Location"][len("http://localhost") :]


def test_terminating_one_tus_upload_does_not_fail_another_of_the_same_name_on_s3(s3_server):
    """Found by review (2026-12-05).

    Defect (regression of 5781274: "every discard of an upload holds its name"; data loss
    for the client: a whole upload to send again).

    With ``randomize = false`` on S3, names are chosen when an upload starts and not kept for
    it (``S3Resumable.start_resumable``): two tus uploads of ``report.txt`` (two tabs, a
    client that started again without resuming) both aim at ``report.txt``. Terminating the
    first (``DELETE``; the collector's expiry of an abandoned one alike) now goes through
    ``lifecycle.let_upload_go``, which puts ``report.txt`` in quarantine for the time of the
    discard and a minute after, although that discard only aborts a multipart upload and
    deletes nothing at that name. The second upload's last ``PATCH`` within that minute hits
    ``require_unreserved`` in ``S3Staged.complete``: ``NameReserved`` → ``410``, all its bytes
    lost, the client told to start again. Expected: the second upload completes."""
    from ..conftest import s3_settings

    settings = build_settings("memory", None, **{"kinto.attachment.randomize": "false"})
    del settings["kinto.attachment.base_path"]
    settings.update(s3_settings(s3_server))
    kinto = Kinto(make_app(settings))
    kinto.create_collection()
    content = b"0123456789"
    first = _tus_create(kinto.app, kinto.record_url("first"), "report.txt", len(content))
    second = _tus_create(kinto.app, kinto.record_url("second"), "report.txt", len(content))
    kinto.app.patch(
        second,
        content[:4],
        headers={
            **ALICE,
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
        },
        status=204,
    )
    kinto.app.delete(first, headers={**ALICE, **TUS}, status=204)
    finished = kinto.app.patch(
        second,
        content[4:],
        headers={
            **ALICE,
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "4",
        },
        status="*",
    )
    assert finished.status_int == 204, (finished.status, finished.text[:300])
    served = kinto.app.get(kinto.record_url("second") + "/attachment", headers=ALICE)
    assert served.body == content


@pytest.mark.parametrize("typo", ["aws.bucketname", "aws.bucket", "aws_bucket_name"])
def test_a_misspelt_bucket_setting_still_stops_startup(tmp_path, typo):
    """Found by review (2026-12-05).

    Checked, no defect: store settings without their bucket are ignored, but a misspelt
    ``bucket_name`` is an unknown setting, refused by name (local store beside it or not)."""
    settings = build_settings(
        "memory",
        str(tmp_path),
        **{
            f"kinto.attachment.{typo}": "kinto-attachments",
            "kinto.attachment.aws.access_key": "AKIA-example",
            "kinto.attachment.aws.secret_key": "example",
        },
    )
    with pytest.raises(ConfigurationError) as refused:
        make_app(settings)
    assert typo in str(refused.value)
