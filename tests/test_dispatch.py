"""The web's background publisher on real RabbitMQ: every id out once, publishes in flight together."""
from __future__ import annotations

import threading
import time

import dramatiq
import pika

from app.config import Config
from app.queue.broker import build_broker
from app.queue.dispatch import BackgroundPublisher, Dispatcher


def published_ids(config: Config) -> list[int]:
    """Take every message off the queue and return the task ids they carry."""
    connection = pika.BlockingConnection(pika.URLParameters(config.broker_url))
    try:
        channel, ids = connection.channel(), []
        while (got := channel.basic_get(config.queue_name, auto_ack=True))[0] is not None:
            ids += dramatiq.Message.decode(got[2]).args[0]
        return ids
    finally:
        connection.close()


def test_ids_from_many_request_threads_are_each_published_once(runtime):
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
    assert sorted(published_ids(runtime.config)) == sorted(i for ids in submitted for i in ids)


class GatedDispatcher(Dispatcher):
    """A real dispatcher whose first publish waits (up to 10 s) until a second one has begun."""

    def __init__(self, dispatcher: Dispatcher):
        super().__init__(dispatcher.actor, chunk_size=dispatcher.chunk_size)
        self.second_began = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()

    def publish(self, ids, contexts=None):
        with self._lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            self.second_began.wait(10)
        else:
            self.second_began.set()
        return super().publish(ids, contexts)


def test_a_publish_waiting_for_its_confirm_does_not_hold_up_the_next_ids(runtime):
    dispatcher = GatedDispatcher(runtime.dispatcher)
    publisher = BackgroundPublisher(dispatcher)
    try:
        publisher.submit([1])
        time.sleep(0.2)  # the first publish is in flight
        publisher.submit([2])
        assert dispatcher.second_began.wait(5), "the second ids waited for the first publish"
        assert publisher.flush(timeout=10)
    finally:
        publisher.close()
    assert sorted(published_ids(runtime.config)) == [1, 2]


def test_while_the_broker_is_away_one_backoff_paces_every_thread(runtime):
    away = build_broker(runtime.config.with_overrides(broker_url="amqp://guest:guest@127.0.0.1:1/%2F"))
    actor = dramatiq.actor(lambda task_ids: None, broker=away, actor_name="evaluate_tasks",
                           queue_name=runtime.config.queue_name)
    dispatcher = GatedDispatcher(Dispatcher(actor, chunk_size=100))
    dispatcher.second_began.set()  # no gate: count the tries only
    publisher = BackgroundPublisher(dispatcher, threads=4, min_backoff=0.2, max_backoff=5.0)
    try:
        for task_id in range(20):
            publisher.submit([task_id])
            time.sleep(0.05)
        assert not publisher.flush(timeout=1)  # held, not dropped
    finally:
        publisher.close(timeout=1)
        away.close()
    # About 2 s: tries at 0, 0.2, 0.6 and 1.4 s, whatever the submits and the threads; one each would be 20.
    assert 2 <= dispatcher.calls <= 6, dispatcher.calls
