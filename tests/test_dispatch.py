"""The web's background publisher on real RabbitMQ: every id handed over is published once."""
from __future__ import annotations

import threading

import dramatiq
import pika

from app.config import Config
from app.queue.dispatch import BackgroundPublisher


def published(config: Config) -> list[list[int]]:
    """Take every message off the queue and return the task ids each carries."""
    connection = pika.BlockingConnection(pika.URLParameters(config.broker_url))
    try:
        channel, messages = connection.channel(), []
        while (got := channel.basic_get(config.queue_name, auto_ack=True))[0] is not None:
            messages.append(dramatiq.Message.decode(got[2]).args[0])
        return messages
    finally:
        connection.close()


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
