"""The ``amqp`` destination (RabbitMQ, AMQP 0-9-1 with pika): the event published to
``amqp.exchange`` (default: the default exchange) with ``amqp.routing_key``, persistent
(``delivery_mode`` 2), ``mandatory`` and with publisher confirms: a delivery is a message
the broker confirmed having routed to a queue. ``message_id`` is the event id,
``content_type`` ``application/cloudevents+json``.

One connection per dispatcher, opened when first needed and again after any failure.

An attempt takes ``timeout_seconds`` at most: pika's ``socket_timeout`` and ``stack_timeout``
bound the opening of the connection, and nothing bounded the wait for the publisher confirm,
so a silent broker held an attempt past its lease (about two minutes, until heartbeats gave
up) while another server sent the event again. A timer of the connection's own I/O loop, run
while the channel opens and ``basic_publish`` waits, ends the connection at the deadline, as
pika's heartbeat and ``blocked_connection_timeout`` do: the call raises, the attempt fails
and is retried.
"""

import contextlib
import time

from .cloudevents import CONTENT_TYPE
from .failures import Failed


class Amqp:
    name = "amqp"
    package = "pika"
    url_setting = "amqp.url"

    def __init__(self, options):
        """Without connecting: built at start-up to check the URL (and that pika is
        installed), connected at the first delivery."""
        import pika

        self._pika = pika
        self._parameters = pika.URLParameters(options.amqp_url)
        self._parameters.socket_timeout = options.timeout_seconds
        self._parameters.stack_timeout = options.timeout_seconds
        self._timeout = options.timeout_seconds
        self._parameters.blocked_connection_timeout = options.timeout_seconds
        self._exchange = options.amqp_exchange
        self._routing_key = options.amqp_routing_key
        self._connection = self._channel = None

    def _connect(self):
        """The connection, opened again after any failure (within pika's socket and stack
        timeouts), or when the broker ended it while it was idle: pika answers heartbeats
        only while it is called, so after a quiet spell of two heartbeats the broker has
        closed a connection that still looks open, and the next event's publish failed (an
        attempt lost, a warning, a retry later). Its pending frames are read first."""
        if self._connection is not None and self._connection.is_open:
            try:
                self._connection.process_data_events(0)
            except (self._pika.exceptions.AMQPError, OSError):
                self.close()
        if self._connection is None or not self._connection.is_open:
            self.close()
            self._connection = self._pika.BlockingConnection(self._parameters)

    def _confirming(self):
        """A channel in confirm mode: its ``Channel.Open`` and ``Confirm.Select`` are waited
        for as the publish is, under the attempt's deadline (:meth:`deliver`)."""
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        return self._channel

    def deliver(self, body, event):
        properties = self._pika.BasicProperties(
            content_type=CONTENT_TYPE, delivery_mode=2, message_id=event["id"]
        )
        deadline = time.monotonic() + self._timeout
        try:
            self._connect()
            with self._deadline(deadline - time.monotonic()):
                self._confirming().basic_publish(
                    self._exchange, self._routing_key, body, properties, mandatory=True
                )
        except (self._pika.exceptions.AMQPError, OSError) as e:
            self.close()
            raise Failed(f"amqp: {type(e).__name__}: {e}") from e

    @contextlib.contextmanager
    def _deadline(self, seconds):
        """End the connection if still waiting ``seconds`` from now (pika's private timer
        API, the one its heartbeat checker uses: ``BlockingConnection.call_later`` only runs
        in ``process_data_events``, not while ``basic_publish`` waits for its confirm)."""
        impl = self._connection._impl
        error = self._pika.exceptions.AMQPConnectionError(f"no answer within {self._timeout}s")
        timer = impl._adapter_call_later(max(seconds, 0), lambda: impl._terminate_stream(error))
        try:
            yield
        finally:
            if impl.is_open:
                impl._adapter_remove_timeout(timer)

    def close(self):
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            # Already broken: nothing more to release.
            with contextlib.suppress(self._pika.exceptions.AMQPError, OSError):
                connection.close()
