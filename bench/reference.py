"""The reference server: waitress + a WSGI app that only streams the request body to disk.

It computes the body's sha256 while writing it to a temporary file in ``--dir``, fsyncs and
renames it, like kinto_attachment does with a file, but parses nothing and stores no metadata.
It is the practical limit of this stack: our uploads are measured against it. It runs
waitress with the settings of the shipped configurations (``recv_bytes``). ``GET /files/X``
serves stored files (with ``wsgi.file_wrapper``), the reference for downloads.

With ``--write-behind`` it writes the way kinto_attachment's local store does (windows flushed
as they fill and dropped from the page cache, ``kinto_attachment/storage/local/writebehind.py``):
the limit of this stack with that I/O strategy, where the plain reference is "simply writing
the request body to disk".

With ``--floor`` it only reads the body, by the blocks our multipart uploads read it in
(``kinto_attachment.web.streams.UPLOAD_CHUNK_SIZE``), and throws them away: no hash, no file.
That is the server's own cost of receiving a body, the floor no upload can go below
(``floor-gunicorn``: issue 29 wants ours within 1.5× of it).

    python bench/reference.py --port 8000 --dir /tmp/ref [--write-behind | --floor]

``--port 0``: a port of the kernel's choice, which waitress logs ("Serving on ...").
"""

import argparse
import hashlib
import json
import logging
import os
import tempfile
import uuid

import waitress

from kinto_attachment.storage.local.writebehind import WriteBehind
from kinto_attachment.web.streams import UPLOAD_CHUNK_SIZE


CHUNK = 1024 * 1024


def make_app(folder, write_behind=False, floor=False):
    def app(environ, start_response):
        if environ["REQUEST_METHOD"] == "GET" and environ["PATH_INFO"].startswith("/files/"):
            path = os.path.join(folder, os.path.basename(environ["PATH_INFO"]))
            if not os.path.isfile(path):
                start_response("404 Not Found", [("Content-Length", "0")])
                return [b""]
            size = os.path.getsize(path)
            start_response(
                "200 OK",
                [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))],
            )
            return environ["wsgi.file_wrapper"](open(path, "rb"), CHUNK)

        stream = environ["wsgi.input"]
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
        if floor:
            while remaining > 0 and (chunk := stream.read(min(UPLOAD_CHUNK_SIZE, remaining))):
                remaining -= len(chunk)
            start_response("201 Created", [("Content-Length", "0")])
            return [b""]
        digest = hashlib.sha256()
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".upload-")
        behind = WriteBehind(fd) if write_behind else None
        with os.fdopen(fd, "wb", buffering=0) as f:
            while remaining > 0:
                chunk = stream.read(min(CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                digest.update(chunk)
                f.write(chunk)
                if behind is not None:
                    behind.wrote(len(chunk))
            os.fsync(f.fileno())
        name = uuid.uuid4().hex
        os.replace(temp, os.path.join(folder, name))
        body = json.dumps({"hash": digest.hexdigest(), "location": f"/files/{name}"}).encode()
        start_response(
            "201 Created",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument(
        "--recv-bytes", type=int, default=262144, help="as config/kinto.ini's [server:main]"
    )
    parser.add_argument("--write-behind", action="store_true")
    parser.add_argument("--floor", action="store_true", help="read the body, store nothing")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    # The "Serving on" line (INFO) names the bound port: bench/servers.py reads it.
    logging.basicConfig()
    logging.getLogger("waitress").setLevel(logging.INFO)
    waitress.serve(
        make_app(args.dir, args.write_behind, args.floor),
        host="127.0.0.1",
        port=args.port,
        max_request_body_size=4 * 1024**3,
        threads=4,
        recv_bytes=args.recv_bytes,
    )


if __name__ == "__main__":
    main()
