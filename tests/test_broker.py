"""Publishing whose confirm is waited for later (DalcRabbitmqBroker.confirms_deferred), on real RabbitMQ."""
from __future__ import annotations

import collections
import contextlib
import time

import pika
import pytest
from test_dispatch import published

from app import create_app
from app.queue import broker as broker_module
from app.queue.broker import DalcRabbitmqBroker


@pytest.fixture
def broker(runtime) -> DalcRabbitmqBroker:
    assert isinstance(runtime.broker, DalcRabbitmqBroker)
    return runtime.broker


def test_a_deferred_publish_is_sent_at_once_and_its_confirm_arrives_when_waited_for(broker, runtime):
    with broker.confirms_deferred() as confirms:
        runtime.actor.send([1])
        runtime.actor.send([2])  # the first confirm is taken first: a channel awaits one at a time
    assert len(confirms) == 2
    for confirm in confirms:
        assert confirm() is None
        assert confirm() is None  # waiting again is harmless
    runtime.actor.send([3])  # an ordinary publish on the same channel afterwards
    assert published(runtime.config) == [[1], [2], [3]]


@pytest.fixture
def sends(monkeypatch) -> list[int]:
    """Count the send() calls of pika's plaintext transport (each releases the GIL), by bytes sent."""
    calls: list[int] = []
    original = broker_module._PLAIN_TRANSPORT._sigint_safe_send

    def counting(sock, data):
        calls.append(len(data))
        return original(sock, data)

    monkeypatch.setattr(broker_module._PLAIN_TRANSPORT, "_sigint_safe_send", staticmethod(counting))
    return calls


@pytest.mark.parametrize("deferred", [False, True])
def test_a_message_goes_out_in_one_send_whether_its_confirm_is_awaited_now_or_later(broker, runtime, sends, deferred):
    runtime.actor.send([0])  # opens the thread's connection and channel (many sends)
    sends.clear()
    with broker.confirms_deferred() if deferred else contextlib.nullcontext([]) as confirms:
        runtime.actor.send([1])
    assert len(sends) == 1 and sends[0] > 100  # method, header and body frames together
    assert broker.channel._channel._impl.connection._transport._tx_buffers == collections.deque()
    for confirm in confirms:
        confirm()
    assert published(runtime.config) == [[0], [1]]


def test_an_unroutable_message_still_raises_as_pika_would(broker):
    channel = broker.channel
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish("", "dalc-no-such-queue", b"{}", pika.BasicProperties(delivery_mode=2), mandatory=True)
    channel.basic_publish("", "dalc-no-such-queue", b"{}", pika.BasicProperties(delivery_mode=2))  # usable after


def test_a_confirm_nobody_waits_for_is_taken_before_the_channel_is_used_again(broker, runtime):
    with broker.confirms_deferred() as confirms:
        runtime.actor.send([1])
    # Its owner forgot it: the next use of this thread's channel waits for it first, so that the confirm
    # of this publish is not taken for that one.
    for n in range(2, 6):
        runtime.actor.send([n])
    assert confirms[0]() is None
    assert published(runtime.config) == [[1], [2], [3], [4], [5]]


def test_a_connection_lost_before_the_confirm_raises_when_it_is_waited_for_and_the_next_publish_reconnects(
    broker, runtime
):
    with broker.confirms_deferred() as confirms:
        runtime.actor.send([1])
    broker.connection.close()
    with pytest.raises(pika.exceptions.AMQPError):
        confirms[0]()
    with pytest.raises(pika.exceptions.AMQPError):
        confirms[0]()  # the same answer every time it is asked
    assert not broker.has_channel()
    runtime.actor.send([2])
    assert broker.has_channel()
    assert [2] in published(runtime.config)


def test_a_request_alone_publishes_its_task_before_answering_and_takes_the_confirm_after(client, runtime):
    publisher = runtime.publisher
    first = client.post("/tasks", json={"expression": "1 + 1"})
    assert first.status_code == 202
    first.close()  # the answer is sent: this thread opens its channel now, for its next request
    assert publisher.flush(timeout=10)
    assert runtime.broker.has_channel()
    second = client.post("/tasks", json={"expression": "2 + 2"})
    assert second.status_code == 202
    # Published before the answer, but its confirm is taken only once the answer is sent.
    assert not publisher.flush(timeout=0.2)
    second.close()
    assert publisher.flush(timeout=10)
    assert sorted(published(runtime.config)) == [[first.get_json()["id"]], [second.get_json()["id"]]]


def test_a_task_submitted_after_its_thread_sat_idle_past_the_heartbeat_is_still_published(pg_config):
    # RabbitMQ closes a connection that misses its heartbeats; a blocking connection only beats while it
    # is used, so a web thread left idle finds its channel dead at its next publish.
    app = create_app(pg_config.with_overrides(broker_url=pg_config.broker_url + "?heartbeat=1"))
    try:
        client, publisher = app.test_client(), app.extensions["dalc"].publisher
        ids = []
        for expression in ("1 + 1", "2 + 2", "3 + 3"):
            response = client.post("/tasks", json={"expression": expression})
            assert response.status_code == 202
            ids.append(response.get_json()["id"])
            response.close()
            assert publisher.flush(timeout=20)
            time.sleep(4)  # past two missed heartbeats: the broker has closed this thread's connection
        assert sorted(i for message in published(pg_config) for i in message) == ids
    finally:
        app.extensions["dalc"].close()
