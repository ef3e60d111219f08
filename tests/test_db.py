"""Pooled connections across a database restart, on a private PostgreSQL that the test may restart."""
from __future__ import annotations

import threading

import pytest

from app import create_app
from app.config import Config
from harness.private_services import PrivatePostgres, postgres_available
from support import require, wait_until


@pytest.fixture
def private_pg():
    require(postgres_available(), "PostgreSQL binaries are needed to start a private server")
    with PrivatePostgres() as pg:  # started by `with`
        yield pg


class RequestThread:
    """A thread that keeps its own kept-alive database connection, as a gunicorn thread does."""

    def __init__(self, app):
        self.app = app
        self.jobs: list = []
        self.ready = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        client = self.app.test_client()
        while True:
            with self.ready:
                while not self.jobs:
                    self.ready.wait()
                job, box = self.jobs.pop(0)
            if job is None:
                return
            box.append(job(client))
            with self.ready:
                self.ready.notify_all()

    def call(self, job):
        box = []
        with self.ready:
            self.jobs.append((job, box))
            self.ready.notify_all()
            self.ready.wait_for(lambda: box, timeout=30)
        return box[0]

    def stop(self):
        with self.ready:
            self.jobs.append((None, []))
            self.ready.notify_all()
        self.thread.join(10)


def post(client):
    return client.post("/tasks", json={"expression": "1 + 1"}).status_code


@pytest.fixture
def app_and_threads(private_pg):
    url = private_pg.create_database("dalc")
    app = create_app(Config(database_url=url, broker_url=None, sweep_interval_seconds=3600))
    threads = [RequestThread(app) for _ in range(4)]
    assert [t.call(post) for t in threads] == [202] * 4  # each thread now holds a connection
    # Let the in-process workers finish those tasks first: a worker that meets the restart retires every
    # pooled connection, and the request expected to fail would then reconnect instead.
    runtime = app.extensions["dalc"]
    runtime.broker.join(runtime.config.queue_name, timeout=30_000)
    yield app, threads
    for t in threads:
        t.stop()
    app.extensions["dalc"].close()


def test_after_a_database_restart_no_request_fails_once_the_listener_has_noticed(private_pg, app_and_threads):
    app, threads = app_and_threads
    listener = app.extensions["dalc"].listener
    private_pg.restart()
    wait_until(listener.connected.is_set, timeout=15)
    assert [t.call(post) for t in threads] == [202] * 4


def test_without_the_listener_one_request_fails_and_the_other_threads_reconnect(private_pg, app_and_threads):
    app, threads = app_and_threads
    listener = app.extensions["dalc"].listener
    listener.stop()
    listener.join(5)
    private_pg.restart()
    assert threads[0].call(post) == 503  # finds its connection dead: answers 503 + Retry-After
    assert [t.call(post) for t in threads[1:]] == [202] * 3  # no second failure
    assert threads[0].call(post) == 202
