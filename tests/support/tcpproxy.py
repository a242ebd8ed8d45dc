"""A loopback TCP proxy that a test can take down and bring back, to play a network outage.

Its listening socket stays open the whole time, so its port is never released and cannot be
taken by another process in between (which restarting a server on the same port would risk).
While down, it closes every connection it has and every new one at once; while a hole, it
holds every new one and never answers (an overloaded endpoint, a load balancer whose backends
are gone). While
``cut_after`` is set, a connection whose answer (target to client) goes past that many bytes
is closed there: a body cut short by the network.
"""

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target_host, target_port):
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._up = True
        self._holed = False
        self._sockets = set()
        self._lock = threading.Lock()
        #: Bytes forwarded from clients to the target (what clients sent).
        self.sent = 0
        #: Bytes of an answer after which its connection is closed (None: never), and how many
        #: answers were so cut.
        self.cut_after = None
        self.cuts = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def down(self):
        """Drop every connection, and every new one until :meth:`up`."""
        self._drop(up=False)

    def hole(self):
        """Drop every connection; hold every new one, unanswered, until :meth:`up`."""
        self._drop(up=True, holed=True)

    def _drop(self, up, holed=False):
        with self._lock:
            self._up, self._holed = up, holed
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            self._shut(sock)

    def up(self):
        with self._lock:
            self._up, self._holed = True, False

    def close(self):
        self._closed = True
        self.down()
        self._listener.close()

    @staticmethod
    def _shut(sock):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                up, holed = self._up, self._holed
                if holed:
                    self._sockets.add(client)
            if not up:
                self._shut(client)
                continue
            if holed:
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                self._shut(client)
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink, outgoing in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pipe, args=(source, sink, outgoing), daemon=True
                ).start()

    def _pipe(self, source, sink, outgoing):
        answered = 0
        try:
            while data := source.recv(65536):
                limit = None if outgoing else self.cut_after
                if limit is not None and answered + len(data) > limit:
                    sink.sendall(data[: max(0, limit - answered)])
                    self.cuts += 1
                    self._shut(source)
                    self._shut(sink)
                    return
                sink.sendall(data)
                answered += len(data)
                if outgoing:
                    with self._lock:
                        self.sent += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
