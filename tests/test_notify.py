"""The PostgreSQL listener that wakes `?wait=` requests, against the real server."""
from __future__ import annotations

import threading

import psycopg2
import pytest

from app.store.notify import FinalEvents, PostgresListener
from support import wait_until

CHANNEL = "dalc_test_final"


@pytest.fixture
def params(pg_url):
    return psycopg2.extensions.parse_dsn(pg_url)  # the keyword arguments PostgresListener connects with


@pytest.fixture
def events():
    return FinalEvents()


@pytest.fixture
def listener(params, events):
    listening = PostgresListener(params, CHANNEL, events)
    listening.start()
    wait_until(listening.connected.is_set)
    yield listening
    listening.stop()
    listening.join(5)
    assert not listening.is_alive()


@pytest.fixture
def notify(params):
    conn = psycopg2.connect(**params)
    conn.autocommit = True

    def send(*ids: int) -> None:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, ",".join(map(str, ids))))

    yield send
    conn.close()


def test_a_waiter_is_woken_by_its_own_task_s_notification_only(listener, events, notify):
    notify(1, 2, 3)  # before anyone waits: wakes no one
    with events.waiting_for(7) as event:
        notify(6)
        assert not event.wait(0.3)
        notify(5, 7)
        assert event.wait(5)  # FinalEvents has no re-read loop: only the listener can have set it


def test_every_waiter_of_a_notification_is_woken_and_waiters_that_left_are_forgotten(listener, events, notify):
    woken = []

    def wait(task_id: int) -> None:
        with events.waiting_for(task_id) as event:
            woken.append((task_id, event.wait(5)))

    threads = [threading.Thread(target=wait, args=(task_id,)) for task_id in (10, 10, 11)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(events._waiters.get(10, ())) == 2 and 11 in events._waiters)
    notify(10, 11)
    for thread in threads:
        thread.join(10)
    assert sorted(woken) == [(10, True), (10, True), (11, True)]
    assert not events._waiters
