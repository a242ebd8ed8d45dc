"""Idle and slow clients against a live server, beside a well-behaved one (the slow-client tests).

:class:`Crowd` opens, on one address, connections that never finish a request:

- ``idle``: connected, nothing sent;
- ``head-stalled``: part of a request head, then nothing;
- ``head-trickle``: a request head one byte every :data:`TRICKLE` seconds;
- ``body-stalled``: an authenticated upload's head and the start of its body, then nothing;
- ``body-trickle``: the same upload, then its body one byte every :data:`TRICKLE` seconds.

A thread sends the trickles on time and notes when the server ends each request (answers it or
closes the connection). :func:`withstand` runs a crowd while a well-behaved client asks for
``/v1/`` every second on a new connection, and reports what each saw; :func:`withstand_each`
runs one on several servers at once.
"""

import base64
import collections
import concurrent.futures
import contextlib
import dataclasses
import selectors
import socket
import statistics
import threading
import time

import requests

from .live import ALICE


#: Seconds between two bytes of a trickling client.
TRICKLE = 10
IDLE = 200
#: Slow clients of each kind.
SLOW = {"head-stalled": 5, "head-trickle": 5, "body-stalled": 5, "body-trickle": 5}
#: Longest answer the well-behaved client may wait for.
ANSWER_WITHIN = 2.0
BOUNDARY = "slowclient"


def upload_head(host, path, length):
    """The head of an authenticated multipart upload of ``length`` bytes, and its body's start."""
    credentials = base64.b64encode(":".join(ALICE).encode()).decode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {credentials}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    start = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="attachment"; filename="slow.bin"\r\n\r\n'
    )
    return head.encode() + start.encode() + b"x" * 1000


@dataclasses.dataclass
class Client:
    kind: str
    sock: socket.socket
    #: What is left to send, a byte every TRICKLE seconds (trickling kinds).
    rest: bytes = b""
    next_byte: float = 0.0
    #: When the server answered or closed (monotonic), None while the request is open.
    ended: float | None = None
    how: str = ""


class Crowd:
    """Idle and slow connections to ``address`` (``(host, port)``), uploading under
    ``records`` (a collection's records path), until :meth:`close`."""

    def __init__(self, address, records, host=None):
        self.address, self.records = address, records
        self.host = host or f"{address[0]}:{address[1]}"
        self.clients = []
        self.selector = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def open(self, idle=IDLE, slow=SLOW):
        """Open every connection and start their clock (:attr:`started`)."""
        self.started = time.monotonic()
        for _ in range(idle):
            self._connect("idle", b"", b"")
        for kind, count in slow.items():
            for number in range(count):
                path = f"{self.records}/{kind}-{number}/attachment"
                upload = upload_head(self.host, path, 1024 * 1024)
                request = f"GET /v1/ HTTP/1.1\r\nHost: {self.host}\r\nAccept: */*\r\n".encode()
                first, rest = {
                    "head-stalled": (request, b""),
                    "head-trickle": (request[:1], request[1:]),
                    "body-stalled": (upload, b""),
                    "body-trickle": (upload, b"y" * 1000),
                }[kind]
                self._connect(kind, first, rest)
        self.thread.start()
        return self

    def _connect(self, kind, first, rest):
        sock = socket.create_connection(self.address, timeout=10)
        if first:
            sock.sendall(first)
        sock.setblocking(False)
        client = Client(kind, sock, rest, time.monotonic() + TRICKLE)
        self.clients.append(client)
        self.selector.register(sock, selectors.EVENT_READ, client)

    def _run(self):
        while not self.stopping.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                self._readable(key.data)
            now = time.monotonic()
            for client in self.clients:
                if client.ended is None and client.rest and now >= client.next_byte:
                    try:
                        client.sock.send(client.rest[:1])
                    except OSError as e:
                        self._end(client, f"send: {e}")
                        continue
                    client.rest, client.next_byte = client.rest[1:], now + TRICKLE

    def _readable(self, client):
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            data, reason = b"", f"recv: {e}"
        else:
            reason = "closed" if not data else data.split(b"\r\n", 1)[0].decode(errors="replace")
        self._end(client, reason)

    def _end(self, client, how):
        with self.lock:
            if client.ended is None:
                client.ended, client.how = time.monotonic(), how
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(client.sock)

    def ended(self, kind):
        """``[(seconds after the start, how)]`` of the ``kind`` requests the server ended."""
        with self.lock:
            return [
                (client.ended - self.started, client.how)
                for client in self.clients
                if client.kind == kind and client.ended is not None
            ]

    def count(self, kind):
        return sum(client.kind == kind for client in self.clients)

    def close(self):
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(5)
        for client in self.clients:
            client.sock.close()
        self.selector.close()


@dataclasses.dataclass
class Report:
    """What :func:`withstand` saw: the well-behaved client's answers and the crowd's ends."""

    #: ``[(seconds after the start, status or error, seconds waited)]``
    answers: list
    #: ``{kind: [(seconds after the start, how)]}`` of the requests the server ended.
    ended: dict
    sizes: dict

    @property
    def slowest(self):
        return max(waited for _, _, waited in self.answers)

    def summary(self):
        waits = [waited for _, _, waited in self.answers]
        lines = [
            f"{len(waits)} answers: median {statistics.median(waits):.3f} s, "
            f"slowest {max(waits):.3f} s",
        ]
        late = [
            f"{at:.1f} s: {status} after {waited:.1f} s"
            for at, status, waited in self.answers
            if status != 200 or waited >= ANSWER_WITHIN
        ]
        if late:
            lines.append("late or failed: " + ", ".join(late))
        for kind, ends in self.ended.items():
            times = [at for at, _ in ends]
            span = f" between {min(times):.1f} and {max(times):.1f} s" if times else ""
            hows = dict(collections.Counter(how for _, how in ends))
            lines.append(f"{kind}: {len(ends)}/{self.sizes[kind]} ended{span} {hows}")
        return "\n".join(lines)


def withstand(address, url, records, seconds, host=None):
    """Run a :class:`Crowd` on ``address`` for ``seconds`` while a well-behaved client GETs
    ``url`` every second, each time on a new connection."""
    crowd = Crowd(address, records, host).open()
    answers = []
    try:
        while time.monotonic() - crowd.started < seconds:
            asked = time.monotonic()
            try:
                response = requests.get(url, timeout=10, headers={"Connection": "close"})
                status = response.status_code
            except requests.RequestException as e:
                status = type(e).__name__
            waited = time.monotonic() - asked
            answers.append((asked - crowd.started, status, waited))
            time.sleep(max(0.0, 1.0 - waited))
        kinds = ["idle", *SLOW]
        return Report(
            answers,
            {kind: crowd.ended(kind) for kind in kinds},
            {kind: crowd.count(kind) for kind in kinds},
        )
    finally:
        crowd.close()


def withstand_each(runs):
    """``{name: Report}``: :func:`withstand` on each server of ``runs`` (``{name: (address,
    url, records, seconds)}``) at once, one thread each. What a server does with its crowd does
    not depend on the others' crowds (other processes, other connections): the wait is the
    longest of them instead of their sum."""
    with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
        futures = {name: pool.submit(withstand, *run) for name, run in runs.items()}
        return {name: future.result() for name, future in futures.items()}
