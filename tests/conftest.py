"""Shared fixtures: real PostgreSQL and RabbitMQ, isolated per run (database) and per test (queue)."""
from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import dramatiq
import pika
import psycopg2
import pytest

from app import create_app
from app.config import Config
from app.store.database import db

PG_ADMIN_DSN = os.environ.get("DALC_TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_HOST = os.environ.get("DALC_TEST_PG_HOST", "127.0.0.1:5432")
AMQP_URL = os.environ.get("DALC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
RUN_ID = uuid.uuid4().hex[:8]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Fail under CI=true, skip elsewhere, when a service the test needs is not there."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing service fails the run)")
    pytest.skip(message)


def _admin(sql: str) -> None:
    # A new connection each time: a test may have restarted the server since the last one.
    connection = psycopg2.connect(PG_ADMIN_DSN)
    connection.autocommit = True
    try:
        with connection.cursor() as cur:
            cur.execute(sql)
    finally:
        connection.close()


@contextlib.contextmanager
def own_database(name: str) -> Iterator[str]:
    """Create database `name` on the machine's PostgreSQL for the block; drop it afterwards, whatever it holds."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@{PG_HOST}/{name}"
    finally:
        if db.obj is not None and hasattr(db.obj, "close_all"):
            db.obj.close_all()
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url():
    """This run's own PostgreSQL database, dropped when the run ends."""
    with own_database(f"dalc_test_{RUN_ID}") as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url():
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return AMQP_URL


@pytest.fixture
def queue_name(amqp_url):
    """Give the test its own queue, and delete it (with its delay and dead-letter queues) afterwards."""
    name = f"dalc-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    yield name
    delete_queues(amqp_url, name)


def delete_queues(amqp_url: str, name: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in (name, f"{name}.DQ", f"{name}.XQ"):
            channel.queue_delete(queue=queue)
    finally:
        connection.close()


def clean_tables() -> None:
    with db.connection_context():
        if db.table_exists("task"):
            db.execute_sql("DELETE FROM idempotency_key")
            db.execute_sql("DELETE FROM task")


@pytest.fixture
def pg_config(pg_url, amqp_url, queue_name) -> Config:
    """A production-shaped configuration on the real services, with this test's own queue."""
    return Config(database_url=pg_url, broker_url=amqp_url, queue_name=queue_name, sweep_interval_seconds=3600)


@pytest.fixture
def app(pg_config):
    """A fresh web app on real PostgreSQL and RabbitMQ, with empty tables."""
    application = create_app(pg_config)
    clean_tables()
    yield application
    application.extensions["dalc"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runtime(app):
    return app.extensions["dalc"]


@pytest.fixture
def worker(runtime):
    """Run a real Dramatiq worker, in threads of the test process, on the test's RabbitMQ queue."""
    w = dramatiq.Worker(runtime.broker, worker_threads=2, worker_timeout=100)
    w.start()
    yield w
    w.stop()


@pytest.fixture
def embedded_app(tmp_path):
    """A fresh app in the embedded shape: SQLite file, in-process broker and workers."""
    config = Config(database_url=f"sqlite:///{tmp_path / 'dalc.db'}", broker_url=None)
    application = create_app(config)
    yield application
    application.extensions["dalc"].close()

