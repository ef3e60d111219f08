"""The web's background publisher on real RabbitMQ: every id handed over is published once."""
from __future__ import annotations

import threading

import dramatiq
import pika

from app.config import Config
from app.queue.dispatch import EXPRESSIONS_OPTION, MAX_CARRIED_CHARACTERS, BackgroundPublisher, Dispatcher


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
    try:
        publisher.submit([1000, 1001])  # no expressions: that message carries none
        assert publisher.flush(timeout=30)
        for n in range(200):
            publisher.submit([n], None, [f"{n} + 0"])
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
