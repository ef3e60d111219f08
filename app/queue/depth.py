"""How many messages wait in dalc's queues, and how many worker processes consume them."""
from __future__ import annotations

import dataclasses
import logging

import dramatiq
import pika
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class QueueDepth:
    """Messages ready for a worker, delayed (retries waiting out their backoff), dead; consuming workers."""

    ready: int
    delayed: int
    dead_letters: int
    workers: int


def queue_depth(broker: dramatiq.Broker, queue_name: str, *, broker_url: str | None) -> QueueDepth | None:
    """Ask the broker for the depth of dalc's queues; None when it cannot be reached."""
    if isinstance(broker, StubBroker):
        queues = broker.queues
        ready = queues[queue_name].qsize() if queue_name in queues else 0
        delayed = queues[dq_name(queue_name)].qsize() if dq_name(queue_name) in queues else 0
        # The embedded shape's one worker runs in this process whenever the broker has consumers.
        return QueueDepth(ready, delayed, len(broker.dead_letters_by_queue[queue_name]), 1)
    try:
        return _rabbitmq_depth(broker_url.split(";")[0], queue_name)
    except Exception as exc:  # pika raises many unrelated types for one unreachable broker
        log.warning("queue depth: RabbitMQ did not answer: %s", exc)
        return None


def _rabbitmq_depth(url: str, queue_name: str) -> QueueDepth:
    # A passive declare is how AMQP tells a queue's ready messages and consumers. It cannot tell the
    # unacknowledged ones: only RabbitMQ's management plugin knows those.
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = params.blocked_connection_timeout = 5
    connection = pika.BlockingConnection(params)
    try:
        counts = {}
        for name in (queue_name, dq_name(queue_name), xq_name(queue_name)):
            channel = connection.channel()
            try:
                counts[name] = channel.queue_declare(queue=name, passive=True).method
            except pika.exceptions.ChannelClosedByBroker:  # not declared yet: nothing was ever sent
                counts[name] = None
            else:
                channel.close()
    finally:
        connection.close()

    def messages(name):
        return counts[name].message_count if counts[name] else 0

    main = counts[queue_name]
    return QueueDepth(
        ready=messages(queue_name),
        delayed=messages(dq_name(queue_name)),
        dead_letters=messages(xq_name(queue_name)),
        workers=main.consumer_count if main else 0,
    )
