"""The store registry: the settings present choose the store, among the built-in ones and the one
``kinto.attachment.store`` names (a dotted path: a package adds a store without changing ours).
"""

import dataclasses
import os
import subprocess
import sys
import types

import pytest
from kinto import main as kinto_main
from pyramid.exceptions import ConfigurationError

from kinto_attachment import settings as attachment_settings
from kinto_attachment.storage import gcs, local, registry, s3
from kinto_attachment.storage.local import LocalStore

from ..conftest import ALICE, Kinto, build_settings, make_app
from ..support import third_party_store


def parse(**values):
    return attachment_settings.parse({f"attachment.{k}": v for k, v in values.items()})


@pytest.mark.parametrize(
    "values,kind",
    [
        ({"base_path": "/tmp/files"}, local.KIND),
        ({"aws.bucket_name": "b"}, s3.KIND),
        ({"gcloud.bucket_name": "b"}, gcs.KIND),
    ],
)
def test_the_setting_present_chooses_the_store(values, kind):
    chosen = parse(**values).store
    assert chosen.kind is kind
    assert chosen.options == kind.from_settings(
        {name[len(kind.section) :]: value for name, value in values.items()}
    )


def test_the_built_in_stores_are_local_s3_and_gcs():
    assert registry.BUILT_IN == (local.KIND, s3.KIND, gcs.KIND)
    assert registry.kinds() == registry.BUILT_IN


def test_no_store_configured_names_every_choice():
    with pytest.raises(ConfigurationError) as error:
        parse(base_url="https://cdn.example.com/")
    assert str(error.value) == (
        "Attachment storage: set exactly one of `kinto.attachment.base_path` (local folder), "
        "`kinto.attachment.aws.bucket_name` (S3 bucket), "
        "`kinto.attachment.gcloud.bucket_name` (GCS bucket)."
    )


def test_two_stores_configured_name_both():
    with pytest.raises(ConfigurationError) as error:
        parse(**{"aws.bucket_name": "b", "gcloud.bucket_name": "c"})
    assert str(error.value) == (
        "Attachment storage: `kinto.attachment.aws.bucket_name` (S3 bucket), "
        "`kinto.attachment.gcloud.bucket_name` (GCS bucket) are set; keep exactly one of them."
    )


def test_options_the_store_does_not_have_are_defaults():
    settings = parse(base_path="/tmp/files", serve_files="true")
    assert settings.serve_files is True
    assert settings.redirect_expires is None
    assert settings.store.option("max_file_size", 0) == 0
    presigned = parse(**{"aws.bucket_name": "b", "aws.presigned_downloads": "true"})
    assert (presigned.serve_files, presigned.redirect_expires) == (False, 300)


def test_the_chosen_store_is_built_from_its_options(tmp_path):
    store = parse(base_path=str(tmp_path), base_url="https://cdn/").store.build("https://cdn/")
    assert isinstance(store, LocalStore)
    assert (store.base_path, store.url("a.txt")) == (
        os.path.realpath(tmp_path),
        "https://cdn/a.txt",
    )


# Another package's store, by dotted path.

THIRD_PARTY = {"store": "tests.support.third_party_store"}


def test_a_store_named_by_its_module_is_chosen_by_its_settings(tmp_path):
    chosen = parse(**THIRD_PARTY, **{"third_party.folder": str(tmp_path)}).store
    assert chosen.kind is third_party_store.KIND
    assert chosen.options == third_party_store.FolderOptions(str(tmp_path))
    # Named, it is one more store to choose from: still exactly one.
    with pytest.raises(ConfigurationError, match=r"`kinto.attachment.third_party.folder` \("):
        parse(**THIRD_PARTY)
    with pytest.raises(ConfigurationError, match="keep exactly one"):
        parse(**THIRD_PARTY, **{"third_party.folder": "/x", "base_path": "/y"})


def test_its_section_is_accepted_only_when_it_is_named():
    with pytest.raises(ConfigurationError, match="`kinto.attachment.third_party.folder`: unknown"):
        parse(**{"base_path": "/tmp/files", "third_party.folder": "/x"})
    # Named, its table checks its section, as the built-in stores' tables do.
    with pytest.raises(ConfigurationError, match="`kinto.attachment.third_party.nope`: unknown"):
        parse(**THIRD_PARTY, **{"third_party.folder": "/x", "third_party.nope": "1"})


def test_its_settings_come_from_the_environment_too(monkeypatch, tmp_path):
    monkeypatch.setenv("KINTO_ATTACHMENT_STORE", "tests.support.third_party_store")
    monkeypatch.setenv("KINTO_ATTACHMENT_THIRD_PARTY_FOLDER", str(tmp_path))
    assert parse().store.options.folder == str(tmp_path)


def test_kinto_stores_attachments_in_a_store_of_another_package(tmp_path):
    """A real app, its attachment uploaded, then downloaded, through the third-party store."""
    folder = str(tmp_path / "third-party")
    settings = build_settings(
        "memory",
        None,
        **{
            "kinto.attachment.store": "tests.support.third_party_store",
            "kinto.attachment.third_party.folder": folder,
            "kinto.attachment.third_party.fsync": "false",
        },
    )
    del settings["kinto.attachment.base_path"]
    kinto = Kinto(make_app(settings), folder)
    store = kinto.registry.attachment_store
    assert type(store) is third_party_store.WrappedStore
    assert store.fsync is False

    kinto.create_collection()
    url = kinto.record_url()
    location = kinto.upload(url, content=b"through another package").json["location"]
    key = kinto.key_of(location)
    assert store.staged == [key]
    assert kinto.files() == [key]
    response = kinto.app.get(url + "/attachment", headers=ALICE)
    assert response.body == b"through another package"


@pytest.mark.parametrize(
    "dotted,message",
    [
        ("tests.no_such_store", "cannot import 'tests.no_such_store'"),
        ("json", "'json' exports no KIND"),
    ],
)
def test_a_wrong_dotted_path_stops_start_up_naming_the_setting(tmp_path, dotted, message):
    settings = build_settings("memory", str(tmp_path), **{"kinto.attachment.store": dotted})
    with pytest.raises(ConfigurationError) as error:
        kinto_main({}, **settings)
    assert "`kinto.attachment.store`" in str(error.value)
    assert message in str(error.value)


@pytest.mark.parametrize("section", ["aws.", "aws.azure.", "", "azure"])
def test_another_store_needs_a_section_of_its_own(monkeypatch, section):
    module = types.ModuleType("clashing_store")
    module.KIND = dataclasses.replace(third_party_store.KIND, section=section)
    monkeypatch.setitem(sys.modules, "clashing_store", module)
    with pytest.raises(ConfigurationError, match="need a section of their own"):
        parse(store="clashing_store", base_path="/tmp/files")


def test_a_built_in_store_named_by_its_module_is_the_built_in_one():
    assert registry.kinds("kinto_attachment.storage.s3") == registry.BUILT_IN
    assert parse(store="kinto_attachment.storage.gcs", base_path="/x").store.kind is local.KIND


# The packages of the stores: importable without their SDK.


@pytest.mark.parametrize(
    "package,store,sdk",
    [("s3", "S3Store", "boto3"), ("gcs", "GCSStore", "google.cloud.storage")],
)
def test_a_store_package_imports_its_sdk_only_with_its_store(package, store, sdk):
    code = f"""
import sys

def loaded():
    return sorted(m for m in sys.modules if m == {sdk!r} or m.startswith({sdk!r} + "."))

from kinto_attachment.storage import {package}
from kinto_attachment.storage.registry import BUILT_IN

assert {package}.KIND in BUILT_IN and {package}.KIND.names
assert loaded() == [], loaded()
assert "kinto_attachment.storage.{package}.store" not in sys.modules
try:
    {package}.NoSuchName
except AttributeError:
    pass
assert loaded() == [], loaded()
from kinto_attachment.storage.{package} import {store}
assert {store}.__module__ == "kinto_attachment.storage.{package}.store"
assert loaded(), "the store came without its SDK?"
"""
    subprocess.run([sys.executable, "-c", code], check=True)
