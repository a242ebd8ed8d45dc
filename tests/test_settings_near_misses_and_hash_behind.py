"""The settings refusals of 2026-12-06 (names almost ours, a folder in ``filename_pattern``)
and hash-behind's "forgotten meanwhile" check: held against a review of those fixes."""

import configparser
import re
import threading

import kinto
import kinto.core
import pytest

from kinto_attachment import settings as attachment_settings
from kinto_attachment.uploads import hash_behind

from .support.live import DOCUMENTED, ROOT


def _ini_keys():
    keys = set()
    for ini in sorted((ROOT / "config").glob("*.ini")):
        parser = configparser.RawConfigParser(strict=False)
        parser.read(ini)
        for section in parser.sections():
            keys.update(parser.options(section))
    return keys


def _documented_keys():
    keys = set()
    for page in DOCUMENTED:
        keys.update(re.findall(r"^\s*((?:kinto\.)?[A-Za-z][\w.-]*)\s*=", page.read_text(), re.M))
    return keys


#: Settings of other Kinto plugins (kinto-signer, kinto-emailer, kinto-attachment 6-8's own),
#: which share the ini with ours.
OTHER_PLUGINS = [
    "signer.resources",
    "signer.autograph.server_url",
    "signer.to_review_enabled",
    "kinto.signer.blog.articles.signer_backend",
    "emailer.sender",
    "mail.host",
    "kinto.attachment.resources.blog.articles.randomize",
    "attachment.resources.blog.articles.keep_old_files",
    "attachment.base_path",
    "kinto.attachment_thumbnails.size",
    "kinto_attachment_streaming",
    "attachment_history.enabled",
]


def test_held_no_known_setting_is_taken_for_a_near_miss():
    """Attack: false positives of ``_refuse_near_misses`` on every key of Kinto's defaults,
    of the shipped configs (config/*.ini), of the documented examples, and of other plugins'
    settings: none of them stops start-up."""
    keys = {
        *kinto.core.DEFAULT_SETTINGS,
        *kinto.DEFAULT_SETTINGS,
        *_ini_keys(),
        *_documented_keys(),
        *OTHER_PLUGINS,
    }
    assert len(keys) > 100
    attachment_settings._refuse_near_misses(dict.fromkeys(keys, "x"))


@pytest.mark.parametrize(
    "pattern",
    [
        "{rid}-{filename}",
        "{datetime}_{filename}",
        "{{folder}}/{filename}".replace("/", ""),
        "{{x}}{filename}",
        "%2F{filename}",
        "file:{filename}",
        "  {filename}  ",
    ],
)
def test_held_a_filename_pattern_without_a_folder_is_accepted(pattern):
    """Attack: false positives of the folder refusal on patterns that name no folder
    (escaped braces, a percent-encoded slash, a colon), globally and per resource."""
    for key in ("attachment.filename_pattern", "attachment.resources.blog.filename_pattern"):
        attachment_settings.parse({"attachment.base_path": "/tmp/files", key: pattern})


class _SlowStore:
    def __init__(self):
        self.started, self.release = threading.Event(), threading.Event()

    def feed_resumable(self, state, start, end, digest):
        self.started.set()
        assert self.release.wait(10)
        digest.update(b"x" * (end - start))


class _Store:
    def feed_resumable(self, state, start, end, digest):
        digest.update(b"x" * (end - start))


def test_held_a_live_upload_keeps_its_checkpoint_while_others_prune_the_jobs():
    """Attack: ``submit`` prunes ``_jobs`` of the done ones; an upload whose job is under way
    while other uploads submit theirs (and whose own next job is queued) must still be
    remembered by its jobs' ends: completion then reads back nothing."""
    slow = _SlowStore()
    upload = {"id": "review-live-upload", "offset": 10, "store": {}}
    hash_behind.hash_later(slow, upload)
    assert slow.started.wait(10)
    for index in range(5):  # Other uploads come and go meanwhile.
        other = {"id": f"review-other-{index}", "offset": 3, "store": {}}
        hash_behind.hash_later(_Store(), other)
    hash_behind.hash_later(_Store(), {**upload, "offset": 20})  # Its next chunk, queued.
    slow.release.set()
    hash_behind._memory.wait(upload["id"])
    try:
        assert hash_behind._memory.get({**upload, "offset": 20})[0] == 20
    finally:
        hash_behind.forget(upload["id"])
        for index in range(5):
            hash_behind.forget(f"review-other-{index}")


def test_held_an_upload_forgotten_then_continued_is_remembered_by_its_new_job():
    """Attack: forget (a completion whose transaction then failed: the client sends its last
    chunk again) then a new chunk's job: the new job's hash is remembered (the old one's,
    dropped, costs a read back at most)."""
    slow = _SlowStore()
    upload = {"id": "review-forgotten-continued", "offset": 10, "store": {}}
    hash_behind.hash_later(slow, upload)
    assert slow.started.wait(10)
    hash_behind.forget(upload["id"])
    hash_behind.hash_later(_Store(), {**upload, "offset": 30})
    slow.release.set()
    hash_behind._memory.wait(upload["id"])
    try:
        assert hash_behind._memory.get({**upload, "offset": 30})[0] == 30
    finally:
        hash_behind.forget(upload["id"])
