"""The message broker: RabbitMQ with publisher confirms, or an in-process stub for the embedded mode."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.middleware import AgeLimit, CurrentMessage, Retries, ShutdownNotifications, TimeLimit

from app.config import Config

log = logging.getLogger(__name__)

# pika waits forever on a blocked or silent broker unless told otherwise; a web request must not.
_PIKA_DEFAULTS = {
    "connection_attempts": "1",
    "socket_timeout": "5",
    "stack_timeout": "10",
    "blocked_connection_timeout": "10",
    "heartbeat": "30",
}


class DalcRabbitmqBroker(RabbitmqBroker):
    """A RabbitMQ broker that can declare quorum queues, the safe type for a RabbitMQ cluster."""

    def __init__(self, *, queue_type: str = "classic", **kwargs):
        if queue_type not in ("classic", "quorum"):
            raise ValueError(f"queue_type must be classic or quorum, not {queue_type!r}")
        if queue_type == "quorum" and kwargs.get("max_priority"):
            raise ValueError("quorum queues do not support max_priority")
        super().__init__(**kwargs)
        self.queue_type = queue_type

    def _build_queue_arguments(self, queue_name):
        arguments = super()._build_queue_arguments(queue_name)
        if self.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        return arguments

    def _declare_xq_queue(self, queue_name):
        if self.queue_type != "quorum":
            return super()._declare_xq_queue(queue_name)
        # Dead letters must survive a node loss too.
        return self.channel.queue_declare(
            queue=xq_name(queue_name),
            durable=True,
            arguments={"x-message-ttl": DEAD_MESSAGE_TTL, "x-queue-type": "quorum"},
        )


def reachable(broker: dramatiq.Broker) -> bool:
    """Tell whether the broker's connection answers (readiness); the in-process broker always does."""
    if getattr(type(broker), "connection", None) is None:
        return True
    try:
        broker.connection.process_data_events(time_limit=0)
        return True
    except Exception as exc:  # pika raises many unrelated types for one dead socket
        log.warning("readiness: broker unreachable: %s", exc)
        del broker.connection  # the next probe connects afresh
        return False


def queue_names(queue_name: str) -> tuple[str, str, str]:
    """Return dalc's queue, its delay queue and its dead-letter queue, named as Dramatiq names them."""
    return queue_name, dq_name(queue_name), xq_name(queue_name)


def queue_declarations(broker_url: str, queue_name: str) -> dict[str, pika.spec.Queue.DeclareOk | None]:
    """Declare dalc's queues passively on RabbitMQ (the first node of a cluster): each one's message and
    consumer counts, or None for a queue not declared yet (nothing was ever sent to it)."""
    connection = pika.BlockingConnection(pika.URLParameters(_with_pika_defaults(broker_url.split(";")[0])))
    try:
        found = {}
        for queue in queue_names(queue_name):
            channel = connection.channel()  # RabbitMQ closes the channel that asks for a missing queue
            try:
                found[queue] = channel.queue_declare(queue=queue, passive=True).method
            except pika.exceptions.ChannelClosedByBroker:
                found[queue] = None
            else:
                channel.close()
        return found
    finally:
        connection.close()


def queue_depths(broker_url: str, queue_name: str) -> dict[str, int]:
    """Ask RabbitMQ how many messages are ready in each of dalc's queues (the first node of a cluster)."""
    return {q: ok.message_count if ok else 0 for q, ok in queue_declarations(broker_url, queue_name).items()}


def _with_pika_defaults(url: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for key, value in _PIKA_DEFAULTS.items():
        query.setdefault(key, value)
    return urlunsplit(parts._replace(query=urlencode(query)))


def build_broker(config: Config, extra_middleware: Sequence[dramatiq.Middleware] = ()) -> dramatiq.Broker:
    """Build the broker DALC_BROKER_URL names (the in-process stub when it is unset)."""
    middleware = [
        AgeLimit(),
        # Evaluation is bounded far below this; the limit only catches a worker wedged on I/O.
        TimeLimit(time_limit=60_000),
        ShutdownNotifications(),
        Retries(
            max_retries=config.max_retries,
            min_backoff=config.retry_min_backoff_ms,
            max_backoff=config.retry_max_backoff_ms,
        ),
        # The actor asks whether its message was delivered before (app/queue/actors.py).
        CurrentMessage(),
        *extra_middleware,
    ]
    if config.embedded_broker:
        broker = StubBroker(middleware=middleware)
        broker.emit_after("process_boot")
        return broker
    urls = [_with_pika_defaults(u) for u in config.broker_url.split(";")]
    return DalcRabbitmqBroker(
        url=urls if len(urls) > 1 else urls[0],
        confirm_delivery=True,
        queue_type=config.queue_type,
        middleware=middleware,
    )


class DeadLetterQueue:
    """The messages the broker gave up on (retries exhausted), read one at a time and settled by the reader."""

    def __init__(self, broker: dramatiq.Broker, queue_name: str):
        self.broker = broker
        self.queue_name = queue_name

    def take(self, limit: int) -> Iterator[tuple[dramatiq.Message, Callable[[bool], None]]]:
        """Yield up to `limit` dead messages, each with settle(done): True drops it, False puts it back."""
        if isinstance(self.broker, StubBroker):
            letters = self.broker.dead_letters_by_queue[self.queue_name]
            for _ in range(min(limit, len(letters))):
                message = letters.pop(0)
                yield message, lambda done, m=message: None if done else letters.append(m)
            return
        self.broker.declare_queue(self.queue_name, ensure=True)  # the dead-letter queue comes with it
        channel = self.broker.channel
        for _ in range(limit):
            try:
                method, _properties, body = channel.basic_get(queue=xq_name(self.queue_name), auto_ack=False)
            except pika.exceptions.AMQPError:
                del self.broker.connection  # the next pass reconnects
                raise
            if method is None:
                return
            tag = method.delivery_tag

            def settle(done: bool, tag=tag) -> None:
                if done:
                    channel.basic_ack(tag)
                else:
                    channel.basic_nack(tag, requeue=True)

            yield dramatiq.Message.decode(body), settle
