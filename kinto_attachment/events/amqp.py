"""The ``amqp`` destination (RabbitMQ, AMQP 0-9-1 with pika): the event published to
``amqp.exchange`` (default: the default exchange) with ``amqp.routing_key``, persistent
(``delivery_mode`` 2), ``mandatory`` and with publisher confirms: a delivery is a message
the broker confirmed having routed to a queue. ``message_id`` is the event id,
``content_type`` ``application/cloudevents+json``.

One connection per dispatcher, opened when first needed and again after any failure.
"""

import contextlib

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
        self._parameters.blocked_connection_timeout = options.timeout_seconds
        self._exchange = options.amqp_exchange
        self._routing_key = options.amqp_routing_key
        self._connection = self._channel = None

    def _open(self):
        if self._channel is None or not self._channel.is_open:
            self.close()
            self._connection = self._pika.BlockingConnection(self._parameters)
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        return self._channel

    def deliver(self, body, event):
        properties = self._pika.BasicProperties(
            content_type=CONTENT_TYPE, delivery_mode=2, message_id=event["id"]
        )
        try:
            self._open().basic_publish(
                self._exchange, self._routing_key, body, properties, mandatory=True
            )
        except (self._pika.exceptions.AMQPError, OSError) as e:
            self.close()
            raise Failed(f"amqp: {type(e).__name__}: {e}") from e

    def close(self):
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            # Already broken: nothing more to release.
            with contextlib.suppress(self._pika.exceptions.AMQPError, OSError):
                connection.close()
