"""A processing worker for kinto-attachment's events, as a user would write one.

It reads ``org.kinto.attachment.stored`` events from a Redis stream with a consumer group,
fetches each stored file with the event's ``url`` (no Kinto credentials; once it has expired,
from the record's ``/attachment`` with its account), verifies its sha256
while streaming it to a temporary file, "processes" it (counts its bytes and lines), and writes
the result onto the record through Kinto's HTTP API, with an account of its own, in the
``processing`` field (the convention of docs/events.rst). Only then is the event acknowledged
(``XACK``): a worker killed before that gets the event again (``XAUTOCLAIM`` of entries left
pending by any consumer of the group).

Events can come more than once, and late: the worker is idempotent by event id, and never
overwrites the result of a newer version. It skips an event when the record already has its
result (``processing.event`` is the event's id), when the record's file is no longer the
event's version (``attachment.hash`` differs: the newer version has an event of its own), and
when the record is gone. The result is written with ``If-Match``: a record changed since it
was read (a replacement meanwhile) is read again and the decision made again.

Configuration, by environment variables:

- ``KINTO_URL``: the server's ``/v1`` URL (default ``http://localhost:8888/v1``);
- ``KINTO_AUTH``: the worker's account, ``user:password`` (Basic auth);
- ``REDIS_URL`` (default ``redis://localhost:6379/0``), ``EVENTS_STREAM`` (default
  ``kinto-attachment-events``), ``EVENTS_GROUP`` (default ``line-counter``),
  ``EVENTS_CONSUMER`` (default: the host name and process id).

Run: ``python worker.py`` (``--exit-when-idle SECONDS``: stop after that long without events).
"""

import argparse
import hashlib
import json
import logging
import os
import socket
import tempfile
import time

import redis
import requests


STORED = "org.kinto.attachment.stored"
#: Milliseconds an entry stays pending with a consumer before another one takes it over.
CLAIM_IDLE_MS = 60_000
TIMEOUT = 30
CHUNK = 64 * 1024

logger = logging.getLogger("worker")


class Retry(Exception):
    """The event cannot be handled now (the server or the file is unreachable): it stays
    pending, and is handled again later."""


class Worker:
    def __init__(self, kinto_url, auth, redis_url, stream, group, consumer):
        self.kinto_url = kinto_url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = tuple(auth.split(":", 1)) if auth else None
        self.redis = redis.Redis.from_url(redis_url)
        self.stream, self.group, self.consumer = stream, group, consumer

    def ensure_group(self):
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def entries(self, block_ms):
        """Entries to handle: those of crashed consumers first, then new ones."""
        claimed = self.redis.xautoclaim(
            self.stream, self.group, self.consumer, CLAIM_IDLE_MS, count=10
        )[1]
        if claimed:
            return claimed
        found = self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=10, block=block_ms
        )
        return [entry for _, entries in found for entry in entries]

    def run(self, exit_when_idle=None):
        self.ensure_group()
        idle_since = time.monotonic()
        while True:
            entries = self.entries(block_ms=1000)
            if entries:
                idle_since = time.monotonic()
            elif exit_when_idle is not None and time.monotonic() - idle_since > exit_when_idle:
                return
            for entry_id, fields in entries:
                if not fields:  # Trimmed by MAXLEN while pending (Redis 6.2 claims it empty).
                    logger.warning("entry %s: trimmed before it was handled", entry_id)
                    self.redis.xack(self.stream, self.group, entry_id)
                    continue
                event = json.loads(fields[b"event"])
                try:
                    outcome = self.handle(event)
                except Retry as e:
                    logger.warning("event %s: %s (left pending)", event["id"], e)
                    continue
                self.redis.xack(self.stream, self.group, entry_id)
                print(f"{outcome} {event['id']} {event['subject']}", flush=True)

    def handle(self, event):
        """What was done with ``event``: ``processed``, or why it was ``skipped-...``."""
        if event["type"] != STORED or not event["subject"].startswith("/buckets/"):
            return "skipped-other"  # Deletions, /data/files: no record to write onto.
        expected = event["data"]["attachment"]["hash"]
        result = None
        while True:
            record, etag = self.record(event["subject"])
            if record is None:
                return "skipped-gone"
            if (record.get("processing") or {}).get("event") == event["id"]:
                return "skipped-done"
            if (record.get("attachment") or {}).get("hash") != expected:
                return "skipped-replaced"
            if result is None:
                result = self.process(event)
            if self.write(event, etag, result):
                return "processed"
            # 412: the record changed since it was read; decide again.

    def record(self, subject):
        try:
            response = self.session.get(self.kinto_url + subject, timeout=TIMEOUT)
        except requests.RequestException as e:
            raise Retry(f"reading the record: {e}") from e
        if response.status_code == 404:
            return None, None
        if response.status_code != 200:
            raise Retry(f"reading the record: {response.status_code}")
        return response.json()["data"], response.headers["ETag"]

    def process(self, event):
        """Fetch the event's version, verifying its sha256 as it streams; count it."""
        attachment = event["data"]["attachment"]
        digest = hashlib.sha256()
        size = lines = 0
        with tempfile.TemporaryFile() as spool:
            try:
                with self.fetch(event) as got:
                    for chunk in got.iter_content(CHUNK):
                        digest.update(chunk)
                        spool.write(chunk)
            except requests.RequestException as e:
                raise Retry(f"fetching the file: {e}") from e
            if digest.hexdigest() != attachment["hash"]:
                return {"status": "failed", "result": {"error": "sha256 mismatch"}}
            spool.seek(0)
            while chunk := spool.read(CHUNK):
                size += len(chunk)
                lines += chunk.count(b"\n")
        return {"status": "done", "result": {"bytes": size, "lines": lines}}

    def fetch(self, event):
        """The streamed response of the event's version: from its ``url`` (signed, or
        presigned, for this very version: no credentials), or, once that URL has expired
        (workers down longer than ``events.url_expires_seconds``), from the record's
        ``/attachment`` with the worker's account: the record was just read with this
        version's hash, and the sha256 is verified either way."""
        got = requests.get(event["data"]["url"], stream=True, timeout=TIMEOUT)
        if got.status_code in (403, 404, 410):
            got.close()
            url = self.kinto_url + event["subject"] + "/attachment"
            got = self.session.get(url, stream=True, timeout=TIMEOUT)
        if got.status_code != 200:
            got.close()
            raise Retry(f"fetching the file: {got.status_code}")
        return got

    def write(self, event, etag, result):
        """The result onto the record, if unchanged since read; False on a 412."""
        processing = {"event": event["id"], "hash": event["data"]["attachment"]["hash"], **result}
        try:
            response = self.session.patch(
                self.kinto_url + event["subject"],
                json={"data": {"processing": processing}},
                headers={"If-Match": etag},
                timeout=TIMEOUT,
            )
        except requests.RequestException as e:
            raise Retry(f"writing the result: {e}") from e
        if response.status_code == 412:
            return False
        if response.status_code == 404:
            return True  # Gone meanwhile: nothing to write onto.
        if response.status_code != 200:
            raise Retry(f"writing the result: {response.status_code} {response.text}")
        return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--exit-when-idle", type=float, metavar="SECONDS", help="stop after that long idle"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    env = os.environ.get
    worker = Worker(
        kinto_url=env("KINTO_URL", "http://localhost:8888/v1"),
        auth=env("KINTO_AUTH"),
        redis_url=env("REDIS_URL", "redis://localhost:6379/0"),
        stream=env("EVENTS_STREAM", "kinto-attachment-events"),
        group=env("EVENTS_GROUP", "line-counter"),
        consumer=env("EVENTS_CONSUMER", f"{socket.gethostname()}-{os.getpid()}"),
    )
    worker.run(args.exit_when_idle)


if __name__ == "__main__":
    main()
