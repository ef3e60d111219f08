"""The web's background publisher on real RabbitMQ: every id handed over is published once."""
from __future__ import annotations

import threading

import dramatiq
import pika

from app.config import Config
from app.queue.dispatch import EXPRESSIONS_OPTION, MAX_CARRIED_CHARACTERS, BackgroundPublisher, Dispatcher
from app.runtime import build_runtime


def published_messages(config: Config) -> list[dramatiq.Message]:
    """Take every message off the queue."""
    connection = pika.BlockingConnection(pika.URLParameters(config.broker_url))
    try:
        channel, messages = connection.channel(), []
        while (got := channel.basic_get(config.queue_name, auto_ack=True))[0] is not None:
            messages.append(dramatiq.Message.decode(got[2]))
        return messages
    finally:
        connection.close()


def published(config: Config) -> list[list[int]]:
    """Take every message off the queue and return the task ids each carries."""
    return [message.args[0] for message in published_messages(config)]


def test_ids_from_many_request_threads_are_each_published_once_many_to_a_message(runtime):
    publisher = BackgroundPublisher(runtime.dispatcher)
    submitted = [list(range(n * 100, n * 100 + 50)) for n in range(16)]

    def submit(ids):
        for task_id in ids:
            publisher.submit([task_id])

    threads = [threading.Thread(target=submit, args=(ids,)) for ids in submitted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert publisher.flush(timeout=30)
    finally:
        publisher.close()
    messages = published(runtime.config)
    assert sorted(i for ids in messages for i in ids) == sorted(i for ids in submitted for i in ids)
    # Ids handed over while a publish waits for its confirm go out together in the next message.
    assert len(messages) < 800 / 4, len(messages)


def test_a_message_carries_its_tasks_expressions_only_when_all_are_known_and_short_enough(runtime):
    dispatcher = Dispatcher(runtime.actor, chunk_size=2)
    long = "1" * (MAX_CARRIED_CHARACTERS // 2 + 1)
    ids = [1, 2, 3, 4, 5, 6]
    assert dispatcher.publish(ids, None, ["1 + 1", "2", "3", None, long, long]) == []
    messages = published_messages(runtime.config)
    assert [m.args[0] for m in messages] == [[1, 2], [3, 4], [5, 6]]
    assert [m.options.get(EXPRESSIONS_OPTION) for m in messages] == [["1 + 1", "2"], None, None]


def test_the_background_publisher_keeps_each_expression_with_its_id(runtime):
    publisher = BackgroundPublisher(runtime.dispatcher)

    def submit(numbers):
        for n in numbers:
            publisher.submit([n], None, [f"{n} + 0"])

    try:
        publisher.submit([1000, 1001])  # no expressions: that message carries none
        assert publisher.flush(timeout=30)
        # From many threads at once, so that most ids queue for the background thread.
        threads = [threading.Thread(target=submit, args=(range(k, 200, 8),)) for k in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert publisher.flush(timeout=30)
    finally:
        publisher.close()
    pairs = {}
    for message in published_messages(runtime.config):
        carried = message.options.get(EXPRESSIONS_OPTION)
        if carried is None:
            assert message.args[0] == [1000, 1001]
            continue
        pairs.update(zip(message.args[0], carried, strict=True))
    assert pairs == {n: f"{n} + 0" for n in range(200)}


class ThreadRecordingDispatcher(Dispatcher):
    """A real dispatcher that notes which thread each publish ran in, and how it ended."""

    def __init__(self, actor):
        super().__init__(actor, chunk_size=1000)
        self.calls: list[tuple[str, list[int], bool]] = []

    def publish(self, ids, contexts=None, expressions=None):
        left = super().publish(ids, contexts, expressions)
        self.calls.append((threading.current_thread().name, list(ids), not left))
        return left


def test_a_quiet_publisher_publishes_in_the_submitting_thread_before_it_returns(runtime):
    dispatcher = ThreadRecordingDispatcher(runtime.actor)
    publisher = BackgroundPublisher(dispatcher)
    try:
        publisher.submit([7], None, ["6 * 7"])
        # No flush: with nothing in flight the request thread published it itself, confirmed.
        assert dispatcher.calls == [(threading.current_thread().name, [7], True)]
        messages = published_messages(runtime.config)
    finally:
        publisher.close()
    assert [(m.args[0], m.options.get(EXPRESSIONS_OPTION)) for m in messages] == [([7], ["6 * 7"])]


def test_after_a_failed_publish_requests_leave_publishing_to_the_background_until_it_succeeds(pg_config, runtime):
    away = build_runtime(pg_config.with_overrides(broker_url="amqp://guest:guest@127.0.0.1:1/%2F"))
    dispatcher = ThreadRecordingDispatcher(away.actor)
    publisher = BackgroundPublisher(dispatcher, min_backoff=0.05, max_backoff=0.05)
    me = threading.current_thread().name
    try:
        publisher.submit([1])  # tried here, refused, handed to the background thread
        assert dispatcher.calls[0] == (me, [1], False)
        publisher.submit([2])  # not tried here again while the broker is away
        assert not publisher.flush(timeout=0.5)
        assert {name for name, _, _ in dispatcher.calls[1:]} == {"dalc-publisher"}
        # The broker is back (here: the test's reachable one); the background thread publishes both.
        dispatcher.actor = runtime.actor
        assert publisher.flush(timeout=10)
        assert dispatcher.calls[-1] == ("dalc-publisher", [1, 2], True)
        publisher.submit([3])  # and requests publish themselves again
        assert dispatcher.calls[-1] == (me, [3], True)
    finally:
        publisher.close()
        away.close()
    assert sorted(published(runtime.config)) == [[1, 2], [3]]


def test_a_request_hands_its_ids_to_the_background_thread_while_another_is_on_its_way(runtime):
    dispatcher = ThreadRecordingDispatcher(runtime.actor)
    publisher = BackgroundPublisher(dispatcher)
    try:
        with publisher.arriving(), publisher.arriving():  # two requests of this process in flight
            publisher.submit([1])
        assert publisher.flush(timeout=10)
        with publisher.arriving():  # alone again
            publisher.submit([2])
    finally:
        publisher.close()
    assert [(name, ids) for name, ids, _ in dispatcher.calls] == [
        ("dalc-publisher", [1]), (threading.current_thread().name, [2])
    ]
