"""gunicorn's threaded worker (gthread), made to withstand slow and idle clients.

``config/gunicorn.conf.py`` runs it. gthread hands a connection to a thread as soon as it is
accepted or readable, and the thread then reads the request head and body from a blocking socket
with no deadline: a few connections that send a head a byte at a time, or an upload body that
stops, hold every thread, and accepted connections that send nothing queue behind each other
for seconds each. This worker keeps gthread's threads and event loop, and:

- **Gathers each request head in the event loop, without a thread.** A connection reaches a
  thread only once its head has arrived whole: any number of idle or slow connections cost a
  socket and their bytes so far, never a thread. A head that has not arrived whole
  ``stall_timeout`` seconds after the connection was accepted (or, on a kept-alive connection,
  after the next request's first byte) is cut; a head over :data:`MAX_HEAD` bytes is ``431``.
- **Bounds each wait for the client once the head is in**: a body read that waits
  ``stall_timeout`` seconds for a byte ends the body there, as if the client had gone (the app
  then refuses the short body, ``400``, nothing stored, and the connection closes), and so
  does a body slower than :data:`MIN_RECEIVED` bytes per ``stall_timeout`` of waiting for it;
  a file sent with ``sendfile`` to a client that reads nothing for as long, or an answer of
  which it takes nothing for as long (:class:`PacedSocket`), ends the request. A body that
  keeps arriving at that pace is never cut: a 2 GiB upload at any such speed goes through.
- **Closes connections without a thread.** gunicorn's graceful close sends the answer's end
  (half-close), then lingers up to 2 s for the client to close first (closing at once, with
  request bytes unread, would reset the connection and could cut the answer short). gthread
  lingers in the event loop, stalling every other connection, and closing in the request's
  thread held that thread as long: 16 ``Connection: close`` requests a second from a client
  that never closes held 32 threads. Here the thread half-closes and the event loop lingers
  (:meth:`StallBoundWorker.linger`), reading what comes without waiting for it.
- **Discards no body it would have to wait for.** An answer given before its request's body was
  read (a ``401`` to an anonymous upload) leaves the connection open for the next request only
  if what is left of the body is small and arrives at once (:data:`DRAIN_WAIT`); otherwise the
  connection closes. gthread waited up to 5 s in the thread for a body a client announced and
  never sent.

TLS is not handled here (terminate it in nginx, ``config/nginx.conf``): with ``certfile`` set
the worker behaves as gthread does.
"""

import collections
import contextlib
import errno
import fcntl
import os
import select
import selectors
import socket
import struct
import termios
import time
from functools import partial

from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers import gthread


#: Largest request head gathered (bytes): a larger one is answered 431. nginx allows 32 KiB
#: (``large_client_header_buffers``); Kinto's requests need a few hundred bytes.
MAX_HEAD = 64 * 1024
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Connection: close\r\nContent-Length: 0\r\n\r\n"
)


def head_ends(data, since):
    """Whether ``data`` holds a whole request head, looking from offset ``since`` on (empty
    lines before a request line, which HTTP lets a server skip, do not end it)."""
    start = max(since - 3, len(data) - len(data.lstrip(b"\r\n")))
    return data.find(b"\r\n\r\n", start) >= 0 or data.find(b"\n\n", start) >= 0


class StallBoundUnreader(SocketUnreader):
    """gunicorn's socket reader, for which a read that timed out (the socket's timeout, set
    for each request: see :meth:`StallBoundWorker.handle_request`) is the end of the input,
    and so is a body slower than :data:`MIN_RECEIVED` bytes per ``timeout`` seconds of waiting
    for the client (:meth:`pace`; the time the app takes between its reads is not counted)."""

    stalled = False
    #: Seconds left to wait for the client until it has sent :data:`MIN_RECEIVED` more bytes
    #: (None: not paced).
    _budget = None

    def pace(self, timeout):
        """From now on (a request's body), each :data:`MIN_RECEIVED` bytes must come within
        ``timeout`` seconds of waiting."""
        self._timeout, self._budget, self._received = timeout, timeout, 0

    def chunk(self, size_hint=None):
        if self.stalled:
            return b""
        if self._budget is None:
            return self._chunk(size_hint)
        if self._budget <= 0:
            self.stalled = True
            return b""
        timeout, started = self.sock.gettimeout(), time.monotonic()
        # The shorter of the two: a drain's (gunicorn's finish_body) may be shorter still.
        self.sock.settimeout(self._budget if timeout is None else min(timeout, self._budget))
        try:
            data = self._chunk(size_hint)
        finally:
            self.sock.settimeout(timeout)
            self._budget -= time.monotonic() - started
        self._received += len(data)
        if self._received >= MIN_RECEIVED:  # Enough: the client may take its time again.
            self._budget, self._received = self._timeout, 0
        return data

    def _chunk(self, size_hint):
        try:
            return super().chunk(size_hint)
        except TimeoutError:
            self.stalled = True
            return b""


class PacedSocket:
    """A socket whose ``sendall`` and ``sendfile`` end only when the client takes nothing for
    the socket's timeout.

    Python's ``sendall`` takes that timeout as a deadline for the whole call, and both wait
    for the socket to be writable again, which it is only once a good part of its send buffer
    is free (a third, on Linux: a MiB or more of a buffer the kernel grew for a fast link): a
    client taking a download steadily, but slower than that per timeout, was cut. Here the
    client's progress is what counts (:class:`Pace`): each wait is short (:data:`STEP`),
    and the deadline moves once the client took :data:`MIN_TAKEN` (sends that went through,
    and the kernel's queue of unsent bytes shrinking: ``SIOCOUTQ``, where it can be read).
    Everything else is the socket's own. Not for TLS sockets (whose writes raise their own
    "want write")."""

    def __init__(self, sock):
        self._sock = sock

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def sendall(self, data):
        view = memoryview(data).cast("B")
        with self._nonblocking() as wait:
            while view:
                view = view[wait(partial(self._sock.send, view)) :]

    def sendfile(self, file, offset=0, count=None):
        """``count`` bytes of ``file`` from ``offset`` (to its end when None), by the
        system's ``sendfile``; the file's position is left where it was."""
        target, source, sent = self._sock.fileno(), file.fileno(), 0
        with self._nonblocking() as wait:
            while count is None or sent < count:
                size = BLOCK if count is None else min(BLOCK, count - sent)
                done = wait(partial(os.sendfile, target, source, offset + sent, size))
                if not done:  # The end of the file.
                    break
                sent += done
        return sent

    @contextlib.contextmanager
    def _nonblocking(self):
        """The socket without timeout of its own, and the function that sends with it, bounded
        by that timeout (a :class:`Pace`); the timeout is the socket's again after."""
        timeout = self._sock.gettimeout()
        self._sock.settimeout(0.0)
        try:
            yield Pace(self._sock, timeout).send
        finally:
            self._sock.settimeout(timeout)


class Pace:
    """One answer's sends to a client: TimeoutError once the client took less than
    :data:`MIN_TAKEN` within ``timeout`` seconds (None: waits for ever). What it took is what
    the socket accepted, and what left the kernel's queue of unsent bytes meanwhile (the
    socket is writable again only once a good part of its buffer is free)."""

    def __init__(self, sock, timeout):
        self._sock, self._timeout = sock, timeout
        self._poller = select.poll()
        self._poller.register(sock, select.POLLOUT)
        self._deadline, self._taken, self._queued = self._next_deadline(), 0, None

    def _next_deadline(self):
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _took(self, count):
        self._taken += count
        if self._taken >= MIN_TAKEN:  # Enough: the client may take its time again.
            self._deadline, self._taken = self._next_deadline(), 0

    def send(self, send):
        """``send()``'s result once the socket takes some bytes; TimeoutError once the client
        took too little for too long, whether the socket still takes some or not."""
        while True:
            try:
                sent = send()
            except (BlockingIOError, InterruptedError):
                sent = None
            else:
                self._took(sent)
                self._queued = None
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise TimeoutError("timed out")
            if sent is not None:
                return sent
            if self._timeout is None:
                self._poller.poll()
            elif not self._poller.poll(min(STEP, self._timeout) * 1000):
                waiting = unsent(self._sock)
                if waiting is not None and self._queued is not None and waiting < self._queued:
                    self._took(self._queued - waiting)
                self._queued = waiting


#: Longest single wait of :class:`Pace` before it looks for the client's progress.
STEP = 1.0
#: Bytes :meth:`PacedSocket.sendfile` hands the system at a time.
BLOCK = 8 * 1024 * 1024
#: Bytes a client must take within the stall timeout to keep its connection: a client taking
#: a kilobyte now and then would hold a thread for ever (2 KiB/s at the shipped 30 s).
MIN_TAKEN = 64 * 1024
#: Bytes of a request body a client must send within the stall timeout (of waiting for it) to
#: keep its request: 32 uploads trickling a byte now and then held every thread of a worker.
#: 16 KiB per 30 s is 546 bytes a second, where Apache httpd's default cuts bodies slower than
#: 500 (``mod_reqtimeout``'s ``MinRate``): no real client is that slow.
MIN_RECEIVED = 16 * 1024
#: Seconds a closing connection waits, without a thread, for the client to close first
#: (gunicorn's own graceful close waits as long), and bytes it reads meanwhile at most.
LINGER = 2.0
LINGER_BYTES = 64 * 1024
#: Bytes of a body left unread by the answer that are discarded to keep the connection alive
#: (more: the connection closes, as gthread's own discard gives up after as many), and seconds
#: a thread waits for them: a body sent with its head is there at once.
DRAIN_BYTES = 64 * 1024
DRAIN_WAIT = 0.25


def unsent(sock):
    """Bytes in ``sock``'s send queue the client has not acknowledged yet, or None where the
    system does not tell (``SIOCOUTQ``: Linux)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except (OSError, AttributeError):
        return None


class Connection(gthread.TConn):
    """A connection, with the bytes of its next request head gathered so far."""

    def __init__(self, *args):
        super().__init__(*args)
        self.head = bytearray()

    @property
    def stalled(self):
        return self.parser is not None and getattr(self.parser.unreader, "stalled", False)

    def unread(self):
        """Bytes of the request's body not taken from the connection yet, or None when
        unknown (a chunked body)."""
        body = getattr(self.parser.mesg, "body", None)
        return getattr(getattr(body, "reader", None), "length", None)

    def init(self):
        fresh = not self.initialized
        super().init()
        if fresh and self.parser is not None and not self.is_http2:
            # In the thread, before the parser reads: the gathered head comes first.
            self.parser.unreader = StallBoundUnreader(self.sock)
            self.parser.unreader.unread(bytes(self.head))
            self.head.clear()


class StallBoundWorker(gthread.ThreadWorker):
    #: Seconds a client may stall (see the module's docstring): see :meth:`configured`.
    stall_timeout = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: Connections waiting for their client to close, oldest first (see linger()).
        self.closing_conns = collections.deque()

    @classmethod
    def configured(cls, stall_timeout):
        """The worker class to run, stalls bounded at ``stall_timeout`` seconds (> 0)."""
        if stall_timeout <= 0:
            raise ValueError(f"stall_timeout must be positive, not {stall_timeout}")
        return type(cls.__name__, (cls,), {"stall_timeout": stall_timeout})

    def accept(self, listener):
        try:
            sock, address = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.enqueue_req(Connection(self.cfg, sock, address, listener.getsockname()))

    def enqueue_req(self, conn):
        """A connection goes to a thread only with a whole request head in hand; otherwise
        the event loop gathers the head first."""
        if self.cfg.is_ssl or not isinstance(conn, Connection):
            return super().enqueue_req(conn)
        if conn.initialized:
            # Kept alive: bytes of the next request may already be buffered (pipelining).
            conn.head += conn.parser.unreader.take_buffered()
        if conn.head and head_ends(conn.head, 0):
            return self.dispatch(conn)
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + self.stall_timeout
        # Every gathering connection gets the same delay: the deque stays sorted, and
        # gthread's murder_pending() cuts the late ones (see run()).
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_head, conn))

    def on_head(self, conn, sock):
        """Some of a head arrived (or the client closed): gather it, dispatch a whole one."""
        try:
            data = conn.sock.recv(MAX_HEAD + 1 - len(conn.head))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            since = len(conn.head)
            conn.head += data
            if head_ends(conn.head, since):
                self.stop_gathering(conn)
                return self.dispatch(conn)
            if len(conn.head) <= MAX_HEAD:
                return
            with contextlib.suppress(OSError):
                conn.sock.send(HEAD_TOO_LARGE)
        self.stop_gathering(conn)
        self.nr_conns -= 1
        conn.close()

    def stop_gathering(self, conn):
        self.poller.unregister(conn.sock)
        self.pending_conns.remove(conn)

    def dispatch(self, conn):
        if conn.initialized:
            conn.parser.unreader.unread(bytes(conn.head))
            conn.head.clear()
        # The head is in hand: gthread's thread must not wait for data first.
        conn.data_ready = True
        super().enqueue_req(conn)

    def _keepalive_after(self, conn, keepalive):
        """Whether the connection serves another request: not after a stalled read (what
        follows on it is unknown), nor when what is left of the body is more than
        :data:`DRAIN_BYTES` or does not arrive within :data:`DRAIN_WAIT` (see the module's
        docstring)."""
        if not keepalive or conn.stalled:
            return False
        unread = conn.unread()
        if unread is not None and unread > DRAIN_BYTES:
            return False
        drained = conn.parser.finish_body(deadline=time.monotonic() + DRAIN_WAIT)
        # A wait that timed out ends the body for StallBoundUnreader: not drained.
        return drained and not conn.stalled

    def handle_request(self, req, conn):
        # The head is in; from here on every wait for the client is bounded. (gthread makes the
        # socket blocking, without timeout, before each request.)
        conn.sock.settimeout(self.stall_timeout)
        if isinstance(conn.parser.unreader, StallBoundUnreader):
            conn.parser.unreader.pace(self.stall_timeout)
        sock = conn.sock
        if not self.cfg.is_ssl:  # TLS writes say "not now" otherwise: gthread's own then.
            conn.sock = PacedSocket(sock)
        try:
            return super().handle_request(req, conn)
        except TimeoutError:
            # An answer the client did not take (a body read that timed out ends the body
            # instead, in StallBoundUnreader).
            self.log.info(
                "%s took nothing for %s s: connection closed", conn.client, self.stall_timeout
            )
            return False
        finally:
            conn.sock = sock

    def handle(self, conn):
        result = super().handle(conn)
        if result is False:
            # The answer's end is sent from here; the event loop then waits for the client's
            # (see linger()).
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                conn.close()
                conn.closed = True
            else:
                conn.half_closed = True
        return result

    def finish_request(self, conn, fs):
        if getattr(conn, "closed", False):
            self.nr_conns -= 1
        elif getattr(conn, "half_closed", False):
            self.linger(conn)
        else:
            super().finish_request(conn, fs)

    def linger(self, conn):
        """Closes a half-closed connection once the client closed its end, or after
        :data:`LINGER` seconds, or once it sent :data:`LINGER_BYTES` more: in the event loop,
        which reads what arrives (unread bytes would reset the connection, and the client could
        lose the end of its answer) and waits for nothing."""
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + LINGER
        conn.lingered = 0
        # Every closing connection gets the same delay: the deque stays sorted (see
        # murder_pending()).
        self.closing_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_closing, conn))

    def on_closing(self, conn, sock):
        try:
            data = conn.sock.recv(LINGER_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.lingered += len(data)
        if data and conn.lingered < LINGER_BYTES:
            return
        self.closing_conns.remove(conn)
        self.closed(conn)

    def closed(self, conn):
        """Closes a lingering connection (see linger())."""
        self.poller.unregister(conn.sock)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self):
        # The run loop's pass over deadlines, at least once a second: lingering connections
        # too.
        super().murder_pending()
        now = time.monotonic()
        while self.closing_conns and self.closing_conns[0].timeout <= now:
            self.closed(self.closing_conns.popleft())
