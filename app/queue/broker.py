"""The message broker: RabbitMQ with publisher confirms, or an in-process stub for the embedded mode."""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.middleware import AgeLimit, CurrentMessage, Retries, ShutdownNotifications, TimeLimit
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport as _PLAIN_TRANSPORT

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
    """A RabbitMQ broker that can declare quorum queues, the safe type for a RabbitMQ cluster, and can
    publish without waiting for the confirm (see confirms_deferred)."""

    def __init__(self, *, queue_type: str = "classic", **kwargs):
        if queue_type not in ("classic", "quorum"):
            raise ValueError(f"queue_type must be classic or quorum, not {queue_type!r}")
        if queue_type == "quorum" and kwargs.get("max_priority"):
            raise ValueError("quorum queues do not support max_priority")
        super().__init__(**kwargs)
        self.queue_type = queue_type
        self._deferring = threading.local()

    @contextlib.contextmanager
    def confirms_deferred(self) -> Iterator[list[Callable[[], None]]]:
        """Within the block, this thread's publishes return once the message is written to the socket.

        The list it yields receives, for each publish, a callable that waits for that message's confirm
        and raises as a confirmed publish would have (NackError, UnroutableError, a connection error).
        RabbitMQ confirms a persistent message once it is on disk (0.7 ms here): the web answers its
        client in that time, then calls them. A confirm not waited for by its owner is waited for (and
        its error kept for the owner) before this thread uses its channel for anything else, since a
        channel has one slot for the confirm it awaits.
        """
        confirms: list[Callable[[], None]] = []
        self._deferring.block = confirms
        try:
            yield confirms
        finally:
            self._deferring.block = None

    def has_channel(self) -> bool:
        """Tell whether this thread's channel is open already (opening one takes milliseconds)."""
        channel = getattr(self.state, "channel", None)
        return channel is not None and channel.is_open

    def open_channel(self) -> None:
        """Open this thread's channel now, ahead of its first publish; a broker away is only logged."""
        try:
            self.channel  # noqa: B018 - the property opens it
        except Exception as exc:  # pika raises many types for one refused connection
            log.warning("could not open a channel to RabbitMQ ahead of use: %s", exc)

    @property
    def channel(self):
        local = self._deferring
        for confirm in list(getattr(local, "outstanding", ())):
            with contextlib.suppress(Exception):  # kept in the confirm for whoever calls it next
                confirm()
        channel = RabbitmqBroker.channel.fget(self)
        if not channel._delivery_confirmation:
            return channel
        return _ConfirmingChannel(self, channel, getattr(local, "block", None))

    @channel.deleter
    def channel(self):
        RabbitmqBroker.channel.fdel(self)

    def _track(self, confirm: Callable[[], None]) -> None:
        outstanding = getattr(self._deferring, "outstanding", None)
        if outstanding is None:
            outstanding = self._deferring.outstanding = []
        outstanding.append(confirm)

    def _settled(self, confirm: Callable[[], None]) -> None:
        self._deferring.outstanding.remove(confirm)

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


class _ConfirmingChannel:
    """A thread's channel in confirm mode, standing in for it to publish with fewer system calls, and
    without waiting for the confirm while its publishes' confirms are deferred (`block` is not None).

    pika's BlockingChannel.basic_publish writes the message and then waits for its confirm, with no way
    to do one without the other; this does its two halves apart, on the same private parts of pika
    (1.x, as pinned) that it uses. tests/test_broker.py holds them to it on a real RabbitMQ.
    """

    def __init__(self, broker: DalcRabbitmqBroker, channel, block: list | None):
        self._broker, self._channel, self._block = broker, channel, block

    def basic_publish(self, exchange, routing_key, body, properties=None, mandatory=False) -> None:
        channel, broker = self._channel, self._broker
        channel._impl.basic_publish(exchange=exchange, routing_key=routing_key, body=body,
                                    properties=properties, mandatory=mandatory)
        _write_now(channel)
        if self._block is None:
            _await_confirm(channel)
            return
        channel._flush_output()  # until the frames are on the socket
        outcome: list[BaseException | None] = []

        def confirm() -> None:
            if not outcome:
                try:
                    _await_confirm(channel)
                    outcome.append(None)
                except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as exc:
                    outcome.append(exc)
                    del broker.channel  # as Dramatiq does: the next publish connects afresh
                    del broker.connection
                finally:
                    if not outcome:
                        outcome.append(RuntimeError("waiting for the confirm failed"))
                    broker._settled(confirm)
            if outcome[0] is not None:
                raise outcome[0]

        broker._track(confirm)
        self._block.append(confirm)

    def __getattr__(self, name):
        return getattr(self._channel, name)


def _write_now(channel) -> None:
    """Send the frames a publish just buffered in one send(), as pika does once its poller reports the
    socket writable, less the poll.

    pika sends a message's three frames (method, header, body) with a send() each after a poll(): four
    system calls, and in a web thread each one hands the GIL to another thread under load, at two
    context switches a time. A send that would block leaves the rest buffered for pika's own loop.
    """
    transport = channel._impl.connection._transport
    if type(transport) is not _PLAIN_TRANSPORT or not transport._tx_buffers:
        return
    buffers = transport._tx_buffers
    if len(buffers) > 1:
        joined = b"".join(buffers)
        buffers.clear()
        buffers.append(joined)
    transport._on_socket_writable()


def _await_confirm(channel) -> None:
    """The second half of pika's BlockingChannel.basic_publish in confirm mode."""
    result = channel._message_confirmation_result
    try:
        channel._flush_output(result.is_ready)
        method = result.value.method_frame.method
        returned, channel._puback_return = channel._puback_return, None
        if isinstance(method, pika.spec.Basic.Nack):
            raise pika.exceptions.NackError([returned] if returned is not None else [])
        if returned is not None:
            raise pika.exceptions.UnroutableError([returned])
    finally:
        result.reset()


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
