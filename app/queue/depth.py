"""How many messages wait in dalc's queues, and how many worker processes consume them."""
from __future__ import annotations

import dataclasses
import logging

import dramatiq
from dramatiq.brokers.stub import StubBroker

from app.queue.broker import queue_declarations, queue_names

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
    main, delayed, dead = queue_names(queue_name)
    if isinstance(broker, StubBroker):
        def size(name):
            return broker.queues[name].qsize() if name in broker.queues else 0

        # The embedded shape's one worker runs in this process.
        return QueueDepth(size(main), size(delayed), len(broker.dead_letters_by_queue[queue_name]), 1)
    try:
        # A passive declare is how AMQP tells a queue's ready messages and consumers. It cannot tell the
        # unacknowledged ones: only RabbitMQ's management plugin knows those.
        declared = queue_declarations(broker_url, queue_name)
    except Exception as exc:  # pika raises many unrelated types for one unreachable broker
        log.warning("queue depth: RabbitMQ did not answer: %s", exc)
        return None

    def messages(name):
        return declared[name].message_count if declared[name] else 0

    workers = declared[main].consumer_count if declared[main] else 0
    return QueueDepth(messages(main), messages(delayed), messages(dead), workers)
