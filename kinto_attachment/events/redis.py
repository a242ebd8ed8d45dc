"""The ``redis`` destination: ``XADD`` of the event to a stream (field ``event``, the JSON),
which workers read with consumer groups (``XREADGROUP``, ``XACK``); ``MAXLEN ~`` bounds it.
An ``XADD`` answered with an entry id is a delivery.

An attempt lasts ``timeout_seconds`` at most, whole: redis-py's ``socket_timeout`` bounds each
read only, and an answer that trickles in (a byte within each timeout) held an attempt past
its lease, when another node sends the event again and the late copy lands after the
subject's next events. A timer disconnects the client's connections in use then (redis-py's
``ConnectionPool.disconnect``), which ends the read with an error. A name whose resolution
hangs holds the attempt longer (nothing cuts ``getaddrinfo``), but nothing is sent then."""

import os
import threading

from .failures import Failed


#: The options of a ``rediss://`` URL that name files.
_FILES = ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")


class Redis:
    name = "redis"
    package = "redis"
    url_setting = "redis.url"

    def __init__(self, options):
        """Without connecting: built at start-up to check the URL (and that redis-py is
        installed), connected at the first delivery."""
        import redis

        self._errors = redis.RedisError
        self._client = redis.Redis.from_url(
            options.redis_url,
            socket_timeout=options.timeout_seconds,
            socket_connect_timeout=options.timeout_seconds,
        )
        # ``from_url`` passes the URL's query on to the connections, which read it when
        # made (at the first delivery): one made now, not connected, refuses what they cannot
        # read (``TypeError``: an unknown option; a bad value: ``ValueError`` or redis-py's
        # own error, as ``protocol=9``).
        pool = self._client.connection_pool
        try:
            pool.connection_class(**pool.connection_kwargs)
        except redis.RedisError as e:
            raise ValueError(str(e)) from e
        for option in _FILES:  # Read at the first connection: each must be there now.
            path = pool.connection_kwargs.get(option)
            if path and not os.path.exists(path):
                raise ValueError(f"{option}: no such file: {path}")
        self._stream = options.redis_stream
        self._maxlen = options.redis_maxlen or None
        self._timeout = options.timeout_seconds

    def deliver(self, body, event):
        expired = threading.Event()

        def cut():
            expired.set()
            self._client.connection_pool.disconnect()

        deadline = threading.Timer(self._timeout, cut)
        deadline.daemon = True
        deadline.start()
        try:
            self._connected(expired)
            self._client.xadd(self._stream, {"event": body}, maxlen=self._maxlen, approximate=True)
        except self._errors as e:
            why = f"no answer within {self._timeout}s" if expired.is_set() else e
            raise Failed(f"redis: {why}") from e
        finally:
            deadline.cancel()

    def _connected(self, expired):
        """Connect first, if the pool has no connection: redis-py resolves the name before
        any socket exists, which the deadline cannot cut (a resolver that hangs). Connected
        past the deadline, the event is not sent: its copy could come after its lease ran
        out, and after the next event of its subject that another dispatcher sent."""
        pool = self._client.connection_pool
        connection = pool.get_connection()
        try:
            connection.connect()
        finally:
            pool.release(connection)
        if expired.is_set():
            raise Failed(f"redis: no connection within {self._timeout}s")

    def close(self):
        self._client.close()
