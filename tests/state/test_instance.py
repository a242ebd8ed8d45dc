"""An instance's tag: kept in its storage, the same for every process of it, in every name
it makes up for a file."""

import hashlib
import re

import pytest
import transaction
from kinto.core.storage.exceptions import ObjectNotFoundError

from kinto_attachment.state import data_file_entries, instance, tus_uploads
from kinto_attachment.state.instance import drawn, tag_of, tagged_name

from ..conftest import ALICE, Kinto, build_settings, make_app, own_database
from ..views.test_resumable import RECORD, TUS, UPLOADS, metadata
from ..views.test_resumable_concatenation import final_upload, partial_upload


def app_on(url, tmp_path):
    kinto = Kinto(make_app(build_settings("postgresql", str(tmp_path), pg=url)), str(tmp_path))
    return kinto


@pytest.mark.postgresql
def test_every_process_of_an_instance_has_its_tag_and_another_instance_another(tmp_path):
    with (
        own_database("kinto_attachment_tag") as url,
        own_database("kinto_attachment_tag") as other,
    ):
        first, second, third = (app_on(u, tmp_path) for u in (url, url, other))
        tag = instance.tag(first.registry)
        assert len(tag) == 8 and int(tag, 16) >= 0
        assert instance.tag(second.registry) == tag
        assert instance.tag(third.registry) != tag


def test_memory_backends_are_instances_of_their_own(tmp_path):
    first, second = (Kinto(make_app(build_settings("memory", str(tmp_path)))) for _ in range(2))
    assert instance.tag(first.registry) != instance.tag(second.registry)


@pytest.mark.postgresql
def test_the_tag_outlives_the_refused_request_that_made_it(tmp_path):
    """The first upload names its file, so makes the tag, then is refused (its record data
    is no JSON): its transaction is rolled back, the tag stays: another process reads it."""
    with own_database("kinto_attachment_tag") as url:
        first = app_on(url, tmp_path)
        first.create_collection()
        first.app.post(
            first.record_url("r1") + "/attachment",
            upload_files=[("attachment", "a.txt", b"a")],
            params=[("data", "{not json")],
            headers=ALICE,
            status=400,
        )
        tag = first.registry.attachment_instance_tag
        assert instance.tag(app_on(url, tmp_path).registry) == tag


def test_a_tag_made_meanwhile_by_another_process_is_taken(kinto_memory):
    """Between this process's read (nothing) and its write, another made the tag: the
    write is refused (Kinto's UnicityError), theirs is read and taken."""
    storage = kinto_memory.registry.storage
    with transaction.manager:
        storage.create(**instance.OBJECT, obj={"id": instance.OBJECT_ID, "tag": "0badcafe"})

    class ReadTooEarly:
        """The storage, but its first read comes before the other process's write."""

        reads = 0

        def __getattr__(self, name):
            return getattr(storage, name)

        def get(self, *args, **kwargs):
            self.reads += 1
            if self.reads == 1:
                raise ObjectNotFoundError()
            return storage.get(*args, **kwargs)

    assert instance._read_or_make(ReadTooEarly()) == "0badcafe"


def test_every_name_made_up_for_a_file_carries_the_tag(kinto_memory):
    kinto = kinto_memory
    kinto.create_collection()
    tag = instance.tag(kinto.registry)
    attached = kinto.upload(kinto.record_url("r1"), b"multipart").json
    assert tag_of(kinto.key_of(attached["location"])) == tag

    kinto.app.post(
        "/v1/data/files?id=f1", b"raw", extra_environ={"REMOTE_ADDR": "127.0.0.1"}, status=200
    )
    assert tag_of(data_file_entries.get(kinto.registry.storage, "f1")["key"]) == tag

    created = kinto.app.post(
        UPLOADS,
        b"tus",
        headers={
            **ALICE,
            **TUS,
            "Upload-Length": "3",
            "Upload-Metadata": metadata("t.txt"),
            "Content-Type": "application/offset+octet-stream",
        },
        status=201,
    )
    assert created.headers["Upload-Offset"] == "3"
    record = kinto.app.get(RECORD, headers=ALICE).json["data"]
    assert tag_of(kinto.key_of(record["attachment"]["location"])) == tag

    part = partial_upload(kinto.app, b"part")
    upload_id = part.rsplit("/", 1)[1]
    with transaction.manager:
        assert tag_of(tus_uploads.get(kinto.registry.storage, upload_id)["store"]["key"]) == tag
    final_upload(kinto.app, [part])
    record = kinto.app.get(RECORD, headers=ALICE).json["data"]
    assert tag_of(kinto.key_of(record["attachment"]["location"])) == tag


def test_a_tagged_name_carries_its_tag_and_a_check_of_it():
    names = {tagged_name("0badcafe") for _ in range(1000)}
    assert len(names) == 1000
    for name in names:
        assert re.fullmatch("0badcafe[0-9a-f]{32}", name)
        assert tag_of(f"blog/articles/{name}.png") == "0badcafe"
    name = names.pop()
    for position in (0, 20, 39):  # A digit changed anywhere: nobody's name.
        changed = name[:position] + ("1" if name[position] != "1" else "2") + name[position + 1 :]
        assert tag_of(changed) is None


def test_hexadecimal_names_of_clients_are_nobodys():
    """Clients that name files by their digest (``randomize = false``) have names of 32, 40
    or 64 hex digits: none reads as tagged (without the check, a shape of version 8 UUIDs
    took 1 MD5 in 64 for one)."""
    for number in range(5000):
        content = str(number).encode()
        for digest in (hashlib.md5, hashlib.sha1, hashlib.sha256):
            assert tag_of(f"blog/articles/{digest(content).hexdigest()}.jpg") is None


@pytest.mark.parametrize(
    "key,tag",
    [
        ("blog/articles/{name}.png", "0badcafe"),
        (".data-files/{name}", "0badcafe"),
        ("blog/articles/{name}.partial", "0badcafe"),
        ("__heartbeat__-{name}.json", "0badcafe"),
        ("blog/articles/{name}-1.png", "0badcafe"),
        # kinto-attachment's names, and ours before they carried a tag: version 4.
        ("blog/articles/5d1e0c2a9f3b4e6d8a7c1b2e3f4a5b6c.png", None),
        ("blog/articles/5d1e0c2a-9f3b-4e6d-8a7c-1b2e3f4a5b6c.png", None),
        # A client's name (randomize = false), however hexadecimal.
        ("blog/articles/report.pdf", None),
        ("blog/articles/a{name}.png", None),
        ("blog/articles/{name}0.png", None),
        ("blog/articles/{name}{name}.png", None),
        # The tag is read in the name, never in the folders.
        ("{name}/report.pdf", None),
    ],
)
def test_the_tag_of_a_key_is_read_in_its_name(key, tag):
    assert tag_of(key.format(name=tagged_name("0badcafe"))) == tag


@pytest.mark.postgresql
def test_kinto_migrate_makes_the_tag_a_dry_run_does_not(tmp_path):
    """Servers only read the tag as they start (a command's ``--dry-run`` changes nothing):
    ``kinto migrate`` makes it, even once adoption is long done (an upgrade)."""
    from kinto.core import scripts

    from kinto_attachment import adoption

    with own_database("kinto_attachment_tag") as url:
        registry = app_on(url, tmp_path).registry
        adoption.adopt(registry)  # Done long ago, by a version that made no tag.
        with transaction.manager:
            assert instance._read_or_make(registry.storage, make=False) is None
        instance.forget(registry)  # ``kinto migrate`` is a process of its own.
        scripts.migrate({"registry": registry}, dry_run=True)
        assert instance._read_or_make(registry.storage, make=False) is None
        assert instance.tag(app_on(url, tmp_path).registry, make=False) is None

        scripts.migrate({"registry": registry})

        made = instance._read_or_make(registry.storage, make=False)
        assert made is not None and instance.tag(app_on(url, tmp_path).registry) == made


def test_names_drawn_at_random_are_told_from_names_a_client_may_choose():
    """A name drawn for a file (then its extension) is never a free name for a chosen one
    (tests/events/test_fetch.py); its variants, a client's own names and working files'
    names are."""
    name = tagged_name("0123abcd")
    assert drawn(name) and drawn(f"folder/{name}.tar.gz") and drawn(name + ".pdf")
    assert not drawn(f"{name}-1.pdf")  # The variant a chosen name then takes.
    assert not drawn(f"report-{name}.pdf") and not drawn(f".upload-{name}.part")
    assert not drawn(name[:-1] + ("0" if name[-1] != "0" else "1"))  # The check fails.
