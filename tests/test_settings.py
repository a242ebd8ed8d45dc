"""Settings: parsed once at start-up, per-resource overrides, clear errors naming the setting."""

import re

import pytest
from kinto import main as kinto_main
from pyramid.exceptions import ConfigurationError

from kinto_attachment import settings as attachment_settings
from kinto_attachment.storage.s3 import KIND as s3_kind

from .conftest import build_settings
from .support.live import ROOT


def parse(**values):
    return attachment_settings.parse(
        {"attachment.base_path": "/tmp/files", **{f"attachment.{k}": v for k, v in values.items()}}
    )


def test_defaults():
    parsed = parse()
    assert parsed.base_url == ""
    # As kinto-attachment announced it (found by review, 2026-12-05: it was "").
    assert parsed.capability_base_url is None
    assert parsed.serve_files is False
    policy = parsed.policy("any", "thing")
    assert policy.randomize is True
    assert policy.keep_old_files is False
    assert policy.folder == ""
    assert policy.filename_pattern == "{filename}"
    assert policy.max_size_bytes == 0
    assert "pdf" in policy.extensions and "exe" not in policy.extensions
    assert policy.mimetypes[".pem"] == "application/x-pem-file"


def test_capability_base_url_gets_a_trailing_slash():
    assert parse(base_url="https://cdn/files").capability_base_url == "https://cdn/files/"
    extra = parse(**{"base_url": "", "extra.base_url": "https://cdn/x"})
    assert extra.capability_base_url == "https://cdn/x/"
    assert extra.base_url == ""


def test_native_values_from_kinto_are_accepted():
    # Kinto turns "true" and "42" in the ini into Python values before we see them.
    policy = parse(randomize=False, keep_old_files=True, max_size_bytes=42).default
    assert (policy.randomize, policy.keep_old_files, policy.max_size_bytes) == (False, True, 42)


def test_extensions():
    assert parse(extensions="any").default.extensions == frozenset()
    assert parse(extensions="any").default.allows_extension("exe")
    images_pdf = parse(extensions="images+pdf").default.extensions
    assert {"png", "svg", "pdf"} <= images_pdf and "txt" not in images_pdf
    assert parse(extensions="default+video").default.allows_extension("mp4")
    assert parse(extensions="pdf .TXT").default.extensions == {"pdf", "txt"}


def test_mimetypes():
    mimetypes = parse(mimetypes=".ftl:application/vnd.fluent; db:application/vnd.sqlite3").default
    assert mimetypes.mimetypes[".ftl"] == "application/vnd.fluent"
    assert mimetypes.mimetypes[".db"] == "application/vnd.sqlite3"
    assert mimetypes.mimetypes[".pem"] == "application/x-pem-file"


def test_max_size_alias():
    assert parse(max_size="1024").default.max_size_bytes == 1024


def test_overrides_inherit_bucket_then_global():
    parsed = parse(
        max_size_bytes="100",
        folder="{bucket_id}",
        **{
            "resources.blog.randomize": "false",
            "resources.blog.articles.max_size_bytes": "0",
            "resources.other.c.keep_old_files": "true",
        },
    )
    articles = parsed.policy("blog", "articles")
    assert (articles.randomize, articles.max_size_bytes, articles.folder) == (
        False,
        0,
        "{bucket_id}",
    )
    comments = parsed.policy("blog", "comments")
    assert (comments.randomize, comments.max_size_bytes) == (False, 100)
    assert parsed.policy("other", "c").keep_old_files is True
    assert parsed.policy("other", "d").keep_old_files is False
    assert parsed.policy("elsewhere", "x") == parsed.default


@pytest.mark.parametrize(
    "values,named",
    [
        ({"randomize": "maybe"}, "kinto.attachment.randomize"),
        ({"max_size_bytes": "ten"}, "kinto.attachment.max_size_bytes"),
        ({"max_size_bytes": "1000.5"}, "kinto.attachment.max_size_bytes"),
        ({"folder": "{bucket}"}, "kinto.attachment.folder"),
        ({"folder": "../up"}, "kinto.attachment.folder"),
        ({"filename_pattern": "{nope}"}, "kinto.attachment.filename_pattern"),
        ({"filename_pattern": "{unclosed"}, "kinto.attachment.filename_pattern"),
        ({"extensions": "images+t@r"}, "kinto.attachment.extensions"),
        ({"mimetypes": ".ftl=application/x"}, "kinto.attachment.mimetypes"),
        ({"mimetypes": ".ftl:notatype"}, "kinto.attachment.mimetypes"),
        ({"basepath": "/x"}, "kinto.attachment.basepath"),
        ({"aws.bucket_name": "b"}, "kinto.attachment.aws.bucket_name"),
        ({"resources.blog.base_url": "x"}, "kinto.attachment.resources.blog.base_url"),
        ({"resources.a.b.c.randomize": "x"}, "kinto.attachment.resources.a.b.c.randomize"),
        ({"resources.blog.randomize": "x"}, "kinto.attachment.resources.blog.randomize"),
        ({"resources.blog.c.folder": "/.."}, "kinto.attachment.resources.blog.c.folder"),
    ],
)
def test_bad_settings_name_themselves(values, named):
    with pytest.raises(ConfigurationError) as error:
        parse(**values)
    assert f"`{named}`" in str(error.value)


@pytest.mark.parametrize(
    "pattern", ["archive/{filename}", "{rid}/{filename}", "a\\{filename}", "{datetime}/"]
)
def test_a_filename_pattern_naming_a_folder_stops_start_up(pattern):
    """Found by review (2026-12-05): the stored name is one segment, which kept what follows
    the last ``/`` alone: ``archive/{filename}`` stored ``{filename}``, silently. Refused,
    naming ``folder`` (where ``{id}`` is the record's id), per resource too."""
    for values in ({"filename_pattern": pattern}, {"resources.blog.filename_pattern": pattern}):
        with pytest.raises(ConfigurationError, match="names a folder.*`folder`"):
            parse(**values)
    assert parse(filename_pattern="{rid}-{filename}").default.filename_pattern


@pytest.mark.parametrize(
    "key",
    [
        "kinto.attachments.keep_old_files",
        "attachments.keep_old_files",
        "kinto.attachement.max_size_bytes",
        "kinto_attachment.base_path",
        "kinto.kinto-attachment.randomize",
    ],
)
def test_a_setting_named_almost_as_ours_stops_start_up(key):
    """Found by review (2026-12-05): ``kinto.attachments.keep_old_files = true`` (one letter
    more) was nobody's setting, ignored: replaced files went all the same. A name that
    begins almost as ours stops start-up, naming it, as an unknown one of ours does."""
    with pytest.raises(ConfigurationError) as error:
        attachment_settings.parse({"attachment.base_path": "/tmp/files", key: "true"})
    named = "kinto." + key.removeprefix("kinto.")
    assert f"`{named}`" in str(error.value) and "kinto.attachment." in str(error.value)


def test_base_path_is_required():
    with pytest.raises(ConfigurationError, match="kinto.attachment.base_path"):
        attachment_settings.parse({"attachment.base_url": "x"})


def test_environment_overrides_every_known_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("KINTO_ATTACHMENT_BASE_PATH", str(tmp_path))
    monkeypatch.setenv("KINTO_ATTACHMENT_RANDOMIZE", "false")
    monkeypatch.setenv("KINTO_ATTACHMENT_EXTRA_BASE_URL", "https://cdn.example.com")
    parsed = attachment_settings.parse({"attachment.randomize": "true"})
    assert parsed.store.options.base_path == str(tmp_path)
    assert parsed.default.randomize is False
    assert parsed.capability_base_url == "https://cdn.example.com/"


def test_bad_setting_stops_kinto_start_up(tmp_path):
    settings = build_settings("memory", str(tmp_path), **{"kinto.attachment.randomize": "sure"})
    with pytest.raises(ConfigurationError, match="kinto.attachment.randomize"):
        kinto_main({}, **settings)


def parse_s3(**values):
    return attachment_settings.parse({f"attachment.{k}": v for k, v in values.items()})


def test_s3_settings():
    parsed = parse_s3(
        **{
            "aws.bucket_name": "files",
            "aws.acl": "",
            "aws.part_size": str(16 * 1024 * 1024),
            "aws.concurrency": "2",
            "aws.read_timeout": "2.5",
            "aws.use_path_style": "true",
        }
    )
    assert parsed.store.kind is s3_kind
    s3 = parsed.store.options
    assert (s3.bucket_name, s3.acl, s3.part_size, s3.concurrency) == ("files", "", 16 << 20, 2)
    assert (s3.read_timeout, s3.use_path_style, s3.endpoint_url) == (2.5, True, "")
    assert parse_s3(**{"aws.bucket_name": "files"}).store.options.acl == "public-read"


@pytest.mark.parametrize(
    "store,signed,public",
    [("aws", "presigned_downloads", "public-read"), ("gcloud", "signed_downloads", "publicRead")],
)
def test_signed_downloads_store_private_objects_unless_told(store, signed, public, caplog):
    """Found by review (2026-12-05).

    Downloads by signed URL are how docs/security.rst keeps files private, but objects were
    stored with the public ACL of kinto-attachment's default whatever ``presigned_downloads``
    said: whoever had seen a ``location`` or a signed URL (which names the key) read the file
    without signature, permission revoked or not. With signed downloads the default is no
    ACL (the bucket's); a public one set all the same is kept, and warned of."""
    values = {f"{store}.bucket_name": "files", f"{store}.{signed}": "true"}
    assert parse_s3(**values).store.options.acl == ""
    assert not caplog.records
    told = parse_s3(**values, **{f"{store}.acl": public}).store.options.acl
    assert told == public
    assert f"kinto.attachment.{store}.acl = {public} with {signed}" in caplog.text
    unsigned = {f"{store}.bucket_name": "files"}
    assert parse_s3(**unsigned).store.options.acl == public  # kinto-attachment's default.
    caplog.clear()
    parse_s3(**values, base_url="https://files.example.com/")  # Public URLs of private objects.
    assert "answer only if the bucket's policy lets anyone read them" in caplog.text


def test_s3_caps_file_sizes_at_ten_thousand_parts():
    """S3 takes 10,000 parts per upload: larger files are refused up front, not at the end."""
    parsed = parse_s3(
        **{
            "aws.bucket_name": "files",
            "max_size_bytes": str(100 * 1024**4),
            "resources.small.max_size_bytes": "1000",
            "resources.big.max_size_bytes": "0",
        }
    )
    largest = 8 * 1024 * 1024 * 10_000
    assert parsed.default.max_size_bytes == largest
    assert parsed.policy("small").max_size_bytes == 1000
    assert parsed.policy("big").max_size_bytes == largest
    bigger_parts = parse_s3(**{"aws.bucket_name": "files", "aws.part_size": str(64 << 20)})
    assert bigger_parts.default.max_size_bytes == (64 << 20) * 10_000
    assert attachment_settings.parse({"attachment.base_path": "/tmp"}).default.max_size_bytes == 0


def test_pyramid_storage_host_port_become_an_endpoint():
    def endpoint(**values):
        return parse_s3(**{"aws.bucket_name": "b", **values}).store.options.endpoint_url

    assert endpoint(**{"aws.host": "minio.local", "aws.port": 9000}) == "https://minio.local:9000"
    assert (
        endpoint(**{"aws.host": "minio.local", "aws.is_secure": "false"}) == "http://minio.local"
    )


def test_pyramid_storage_timeout_and_retries_are_taken():
    """Found by review (2026-12-05).

    ``aws.timeout`` and ``aws.num_retries``, pyramid_storage's options of kinto-attachment 7's
    S3 store, stopped the server at start-up ("unknown setting"). They are its connection
    timeout and its retries (one attempt more; 1, its default, leaves the default; found by
    a review of a later fix: N gave N attempts once ``max_attempts`` counted the first); one
    that disagrees with our own name for it is refused (the ini's order would decide)."""

    def options(**values):
        return parse_s3(**{"aws.bucket_name": "b", **values}).store.options

    taken = options(**{"aws.timeout": "30", "aws.num_retries": "7"})
    assert (taken.connect_timeout, taken.max_attempts) == (30.0, 8)
    assert options(**{"aws.num_retries": "1"}).max_attempts == options().max_attempts
    assert options(**{"aws.num_retries": "0"}).max_attempts == 1
    assert options(**{"aws.timeout": "5", "aws.connect_timeout": "5"}).connect_timeout == 5.0
    with pytest.raises(ConfigurationError, match="`kinto.attachment.aws.num_retries`: says 7"):
        options(**{"aws.num_retries": "7", "aws.max_attempts": "2"})


def test_kinto_attachment_6_gzipped_is_ignored_and_said(caplog):
    """Found by review (2026-12-05).

    ``gzipped`` (kinto-attachment 6's; 7 and later ignore it) stopped the server at start-up:
    an ini that kinto-attachment 8 starts with must start. It is ignored, and the log says
    so; for a bucket or collection, it is refused as kinto-attachment 7 and 8 refuse it."""
    parsed = attachment_settings.parse(
        {"attachment.base_path": "/tmp", "attachment.gzipped": "true"}
    )
    assert parsed.store.options.base_path == "/tmp"
    assert "`kinto.attachment.gzipped` is ignored" in caplog.text
    with pytest.raises(ConfigurationError, match="resources.blog.gzipped"):
        attachment_settings.parse(
            {"attachment.base_path": "/tmp", "attachment.resources.blog.gzipped": "true"}
        )


@pytest.mark.parametrize(
    "values,named",
    [
        ({}, "kinto.attachment.base_path"),
        ({"base_path": "/x", "aws.bucket_name": "b"}, "kinto.attachment.aws.bucket_name"),
        ({"aws.region": "eu-west-1"}, "kinto.attachment.aws.bucket_name"),  # No store.
        ({"aws.bucket_name": "b", "aws.port": "9000"}, "kinto.attachment.aws.port"),
        ({"aws.bucket_name": "b", "aws.part_size": "1024"}, "kinto.attachment.aws.part_size"),
        ({"aws.bucket_name": "b", "aws.concurrency": "many"}, "kinto.attachment.aws.concurrency"),
        ({"aws.bucket_name": "b", "serve_files": "true"}, "kinto.attachment.serve_files"),
        (
            {"aws.bucket_name": "b", "aws.host": "h", "aws.endpoint_url": "http://x"},
            "kinto.attachment.aws.host",
        ),
    ],
)
def test_bad_s3_settings_name_themselves(values, named):
    with pytest.raises(ConfigurationError) as error:
        parse_s3(**values)
    assert f"`{named}`" in str(error.value)


def test_unknown_s3_settings_are_refused_by_the_backend():
    for values in ({"aws.bucket_name": "b", "aws.buckt": "x"}, {"aws.part_sise": "1"}):
        with pytest.raises(ConfigurationError, match="`kinto.attachment.aws.(buckt|part_sise)`"):
            parse_s3(**values)


def test_environment_overrides_s3_settings(monkeypatch):
    monkeypatch.setenv("KINTO_ATTACHMENT_AWS_BUCKET_NAME", "from-env")
    monkeypatch.setenv("KINTO_ATTACHMENT_AWS_HOST", "minio.local")
    monkeypatch.setenv("KINTO_ATTACHMENT_AWS_PORT", "9000")
    s3 = parse_s3(**{"aws.bucket_name": "from-ini"}).store.options
    assert (s3.bucket_name, s3.endpoint_url) == ("from-env", "https://minio.local:9000")


def test_s3_options_are_checked_without_boto3():
    """The S3 option table lives beside the store, but settings do not need its SDK."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['boto3'] = sys.modules['botocore'] = None;"
        "from kinto_attachment import settings;"
        "s = settings.parse({'attachment.aws.bucket_name': 'b'});"
        "assert s.store.options.part_size == 8 << 20;"
        "assert 'kinto_attachment.storage.s3.store' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_part_size_minimum_is_defined_once():
    from kinto_attachment.storage.s3 import options, store

    assert store.MIN_PART_SIZE is options.MIN_PART_SIZE
    with pytest.raises(ConfigurationError, match=str(options.MIN_PART_SIZE)):
        parse_s3(**{"aws.bucket_name": "b", "aws.part_size": str(options.MIN_PART_SIZE - 1)})


def test_a_fetch_size_below_the_plugins_pages_stops_start_up(tmp_path):
    """The plugin reads Kinto's storage by pages of 1000 objects: a
    ``storage_max_fetch_size`` below would cut each page short, read as the last one."""
    settings = build_settings("memory", str(tmp_path), **{"kinto.storage_max_fetch_size": "999"})
    with pytest.raises(ConfigurationError, match="storage_max_fetch_size.*1000 or more"):
        kinto_main({}, **settings)
    kinto_main({}, **{**settings, "kinto.storage_max_fetch_size": "1000"})


# Found by review (2026-12-05): settings accepted at start-up that fail later, or that let
# which of two lines comes last decide.


def test_s3_presigned_urls_of_more_than_a_week_are_refused():
    """S3 refuses a SigV4 presigned URL of more than a week: every redirected download would
    fail (GCS's ``signed_expires`` and ``events.url_expires_seconds`` were bounded already)."""
    settings = {
        "attachment.aws.bucket_name": "files",
        "attachment.aws.presigned_downloads": "true",
    }
    attachment_settings.parse({**settings, "attachment.aws.presigned_expires": str(7 * 86400)})
    with pytest.raises(ConfigurationError, match="kinto.attachment.aws.presigned_expires"):
        attachment_settings.parse(
            {**settings, "attachment.aws.presigned_expires": str(7 * 86400 + 1)}
        )


@pytest.mark.parametrize("prefix", ["", "resources.blog."])
@pytest.mark.parametrize(
    "first,second", [("max_size", "max_size_bytes"), ("max_size_bytes", "max_size")]
)
def test_max_size_and_its_alias_disagreeing_are_refused(prefix, first, second):
    """``max_size`` (kinto-attachment's README) and ``max_size_bytes`` (its code) set one
    limit: given both, the line that came last decided, silently (100 times larger in one
    order). Equal, they are one setting."""
    with pytest.raises(ConfigurationError, match=f"{prefix}max_size"):
        parse(**{f"{prefix}{first}": "1000", f"{prefix}{second}": "100000"})
    parse(**{f"{prefix}{first}": "1000", f"{prefix}{second}": "1000"})


@pytest.mark.parametrize(
    "name,value",
    [
        ("resumable.expires_seconds", 10**12),  # Upload-Expires past the year 9999: a 500.
        ("data_files.gc_interval_seconds", 10**10),  # Past threading.TIMEOUT_MAX: it dies.
        ("events.poll_seconds", 10**10),
    ],
)
def test_seconds_no_wait_nor_date_can_hold_are_refused(tmp_path, name, value):
    settings = build_settings("memory", str(tmp_path), **{f"kinto.attachment.{name}": str(value)})
    if name.startswith("events."):
        settings["kinto.attachment.events.destinations"] = "webhook"
        settings["kinto.attachment.events.webhook.url"] = "http://127.0.0.1:9/hook"
        settings["kinto.attachment.events.url_secret"] = "a-test-secret-of-enough-length"
    with pytest.raises(ConfigurationError, match=f"kinto.attachment.{name}"):
        kinto_main({}, **settings)


@pytest.mark.parametrize(
    "folder",
    [
        ".assets/{bucket_id}",  # The plugin's own space (.uploads/, .data-files/): never served.
        ".data-files",
        "{bucket_id:.<2.0}/{collection_id}",  # Always "..": every upload fails.
        "{bucket_id:.>2}/{collection_id}",  # ".b" for a bucket "b".
        "{bucket_id!r}",  # Quotes in keys.
    ],
)
def test_folders_of_hidden_segments_or_format_specs_are_refused(folder):
    with pytest.raises(ConfigurationError, match="kinto.attachment.folder"):
        parse(folder=folder)


def test_a_relative_base_path_is_refused(tmp_path, monkeypatch):
    """Resolved against each process's working folder, one setting made two stores: the
    server's, and that of ``kinto migrate`` or the collector started elsewhere."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="kinto.attachment.base_path.*%\\(here\\)s"):
        kinto_main({}, **build_settings("memory", "files"))


@pytest.mark.parametrize(
    "value,size",
    [("-1", 0), ("0", 0), ("1e3", 1000), ("1000.0", 1000), ("1000", 1000), (" 42 ", 42)],
)
def test_max_size_bytes_is_read_as_kinto_attachment_reads_it(value, size):
    """Kinto reads settings as JSON where they are (``1e3``: a float); 0 or less is no
    limit. Found by review (2026-12-05): these stopped start-up."""
    assert parse(max_size_bytes=value).default.max_size_bytes == size


@pytest.mark.parametrize(
    "value,allowed",
    [
        ("any", frozenset()),
        ("", frozenset()),
        ("any+pdf", frozenset({"pdf"})),
        ("pdf+any", frozenset({"pdf"})),
        ("pdf+txt", frozenset({"pdf", "txt"})),
    ],
)
def test_extensions_are_read_as_kinto_attachment_reads_them(value, allowed):
    """``any`` is a group of no extension, and only nothing at all allows every one. Found by
    review (2026-12-05): ``any+pdf`` allowed every file (an ``.exe`` too), and an empty value
    stopped start-up."""
    assert parse(extensions=value).default.extensions == allowed


def test_folder_may_name_the_record():
    """``{id}``, the record's, as kinto-attachment formats ``folder`` with the URL's ids.
    Found by review (2026-12-05): start-up refused it."""
    policy = parse(folder="{bucket_id}/{id}").default
    assert policy.folder_for("b", "c", "r1") == "b/r1"


#: The pages an operator reads.
DOCS = [*sorted((ROOT / "docs").glob("*.rst")), ROOT / "README.rst"]


def _environment_read(path):
    """Variables a shipped configuration file reads (and does not set itself)."""
    text = path.read_text()
    read = set(re.findall(r"os\.environ\.get\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']", text))
    read |= set(re.findall(r"os\.getenv\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']", text))
    read |= set(re.findall(r"^\s*if-(?:not-)?env\s*=\s*([A-Z][A-Z0-9_]+)", text, re.M))
    set_here = set(re.findall(r"os\.environ\[\s*[\"']([A-Z][A-Z0-9_]+)[\"']\s*\]\s*=", text))
    return read - set_here


def test_every_environment_variable_the_shipped_configurations_read_is_documented():
    """Found by review (2026-12-05): config/gunicorn.conf.py read ``KINTO_BIND``, documented
    nowhere. Every variable config/*.py, *.ini, *.conf read is in docs/ or README.rst."""
    documented = "\n".join(path.read_text() for path in DOCS)
    set_by_configs = set()
    read = {}
    for path in sorted((ROOT / "config").glob("*")):
        if path.suffix not in (".py", ".ini", ".conf"):
            continue
        text = path.read_text()
        set_by_configs |= set(
            re.findall(r"os\.environ\[\s*[\"']([A-Z][A-Z0-9_]+)[\"']\s*\]\s*=", text)
        )
        for name in _environment_read(path):
            read.setdefault(name, []).append(path.relative_to(ROOT).as_posix())
    missing = {
        name: files
        for name, files in read.items()
        if name not in set_by_configs and not re.search(rf"\b{name}\b", documented)
    }
    assert not missing, f"read by the shipped configurations, documented nowhere: {missing}"


@pytest.mark.parametrize(
    "values,shared",
    [
        ({}, []),  # Random names: no chosen name meets another.
        ({"randomize": "false"}, [""]),
        ({"randomize": "false", "folder": "{collection_id}"}, ["{collection_id}"]),
        ({"randomize": "false", "folder": "{bucket_id}/{collection_id}"}, []),
        ({"randomize": "false", "folder": "{bucket_id}"}, []),
        # One bucket's chosen names, alone in their folder (twice: bucket and collection).
        (
            {"resources.blog.randomize": "false", "resources.blog.articles.max_size": "9"},
            [],
        ),
        ({"resources.blog.randomize": "false", "resources.blog.folder": "blog"}, []),
        # Two buckets' chosen names in one folder.
        (
            {"resources.blog.randomize": "false", "resources.news.randomize": "false"},
            [""],
        ),
        (
            {
                "resources.blog.randomize": "false",
                "resources.blog.folder": "{bucket_id}",
                "resources.news.randomize": "false",
                "resources.news.folder": "{bucket_id}",
            },
            [],
        ),
    ],
)
def test_chosen_names_shared_by_buckets_are_warned_of(caplog, values, shared):
    """Found by review (2026-12-05).

    With ``randomize = false`` and the default empty folder, Bob's upload in his own bucket
    was named ``report-1.pdf`` where a record of Alice's he may not read had ``report.pdf``:
    the name tells him. Names stay unique in their folder (kinto-attachment's ``-1``), so
    the start-up says where chosen names of several buckets meet, and what to set."""
    parsed = parse(**values)
    assert (
        attachment_settings.policies.folders_of_chosen_names_shared(
            parsed.default, parsed.overrides
        )
        == shared
    )
    warned = [r.message for r in caplog.records if "share the folder" in r.getMessage()]
    assert len(warned) == len(shared)
    if shared:
        assert "{bucket_id}" in caplog.text and "docs/security.rst" in caplog.text


def test_a_stores_settings_without_its_bucket_are_ignored_and_said(caplog):
    """Found by review (2026-12-05).

    kinto-attachment starts with credentials left beside ``base_path`` (its ini after a move
    from S3): refused here, its ini did not start. Ignored now, the log naming them."""
    parsed = parse(**{"aws.access_key": "k", "gcloud.credentials": "c.json"})
    assert parsed.store.options.base_path == "/tmp/files"
    assert "`kinto.attachment.aws.access_key` ignored" in caplog.text
    assert "`kinto.attachment.gcloud.credentials` ignored" in caplog.text
