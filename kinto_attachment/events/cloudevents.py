"""The events as CloudEvents 1.0, structured JSON mode (``application/cloudevents+json``).

An event is made once, when its change is written, and stored as it will be sent: its ``id``
is the same at every delivery. Only the ``url`` of a ``stored`` event is added at delivery
(:mod:`.urls`), so that it lives ``url_expires_seconds`` from then, however long the
destination was down.
"""

import datetime
import json
import uuid


SPECVERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"
#: What ``data`` tells of an attachment.
METADATA = ("location", "hash", "size", "mimetype", "filename")


def record_subject(bucket_id, collection_id, record_id):
    return f"/buckets/{bucket_id}/collections/{collection_id}/records/{record_id}"


def file_subject(file_id):
    return f"/data/files/{file_id}"


def make(source, event_type, subject, ids, attachment, replaced_hash=None, now=None):
    """The event of ``event_type`` (:data:`.options.STORED` or ``DELETED``) about ``subject``:
    ``ids`` are the bucket, collection and record ids (or the data file's), ``attachment``
    the metadata of the stored (or deleted) version; what it lacks is null."""
    now = now or datetime.datetime.now(datetime.UTC)
    return {
        "specversion": SPECVERSION,
        "id": str(uuid.uuid4()),
        "source": source,
        "type": event_type,
        "subject": subject,
        "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {
            **ids,
            "attachment": {name: (attachment or {}).get(name) for name in METADATA},
            "replaced_hash": replaced_hash,
        },
    }


def with_url(event, url):
    """A ``stored`` event with the ``url`` of its version."""
    return {**event, "data": {**event["data"], "url": url}}


def dumps(event):
    """The bytes sent: compact JSON, UTF-8."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
