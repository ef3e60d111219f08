"""`dalc run` refuses to start processes that PostgreSQL has no connections left for (app/store/capacity.py).

Each test runs a private PostgreSQL with a small max_connections, so the figures are exact and the
machine's server, shared with the rest of the suite, is never filled.
"""
from __future__ import annotations

import sys

import psycopg2
import pytest

from app.config import Config
from app.store.capacity import Room, connection_room
from app.store.database import db, init_db
from harness.private_services import PrivatePostgres, postgres_available
from support import Process, dalc_env, free_port, require, run_sql, wait_for_http, wait_until

MAX_CONNECTIONS = 12


@pytest.fixture
def small_pg():
    require(postgres_available(), "PostgreSQL binaries are needed to start a private server")
    with PrivatePostgres(max_connections=MAX_CONNECTIONS) as pg:
        yield pg


def room_at(url: str) -> Room:
    init_db(Config(database_url=url))
    try:
        with db.connection_context():
            return connection_room()
    finally:
        db.obj.close_all()


def test_the_room_is_the_limit_less_the_other_clients_and_for_others_than_superusers_the_reserved(small_pg):
    url = small_pg.url()
    assert room_at(url) == Room(MAX_CONNECTIONS, 0, 0)
    others = [psycopg2.connect(url) for _ in range(4)]
    try:
        room = room_at(url)
        assert room == Room(MAX_CONNECTIONS, 0, 4)
        assert room.free == MAX_CONNECTIONS - 4
        # A role that is not a superuser may not take the slots kept for superusers, and still sees the
        # other roles' connections counted.
        run_sql("CREATE ROLE capped LOGIN", dsn=url)
        reserved = int(run_sql("SHOW superuser_reserved_connections", dsn=url)[0][0])
        capped = room_at(url.replace("postgres@", "capped@"))
        assert capped == Room(MAX_CONNECTIONS, reserved, 4)
        assert capped.free == MAX_CONNECTIONS - reserved - 4
    finally:
        for connection in others:
            connection.close()


def dalc_run(url: str, amqp_url: str, queue_name: str, tmp_path, name: str) -> tuple[Process, str]:
    """Start `dalc run` in its production shape, holding 2 x (1 + 1) + 1 x 2 + 1 = 7 connections."""
    port = free_port()
    env = dalc_env(DALC_DATABASE_URL=url, DALC_BROKER_URL=amqp_url, DALC_QUEUE_NAME=queue_name,
                   DALC_PORT=str(port), DALC_WEB_METRICS_PORT=str(free_port()),
                   DALC_WORKER_METRICS_PORT=str(free_port()), DALC_WEB_WORKERS="2", DALC_WEB_THREADS="1",
                   DALC_WORKER_PROCESSES="1", DALC_WORKER_THREADS="2", DALC_DB_POOL_SIZE="6")
    return Process([sys.executable, "-m", "app", "run"], env, tmp_path / f"{name}.log"), f"http://127.0.0.1:{port}"


def client_connections(url: str) -> int:
    return run_sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                   "AND pid <> pg_backend_pid()", dsn=url)[0][0]


def test_a_second_dalc_run_that_would_find_postgresql_full_stops_at_once_and_says_why(
        small_pg, amqp_url, queue_name, tmp_path):
    url = small_pg.create_database("dalc")
    first, base = dalc_run(url, amqp_url, queue_name, tmp_path, "first")
    try:
        wait_for_http(f"{base}/readyz", first, timeout=40)
        assert f"PostgreSQL has room for {MAX_CONNECTIONS} more connections; this dalc will hold 7" in first.output()
        wait_until(lambda: client_connections(url) == 7, timeout=20)

        second, _ = dalc_run(url, amqp_url, queue_name, tmp_path, "second")
        try:
            assert second.popen.wait(30) == 1
            assert (f"dalc: PostgreSQL has room for {MAX_CONNECTIONS - 7} more connections (max_connections "
                    f"{MAX_CONNECTIONS}, 7 in use by other clients), and this dalc would hold 7 (DALC_WEB_WORKERS x "
                    "(DALC_WEB_THREADS + 1) + DALC_WORKER_PROCESSES x DALC_WORKER_THREADS + 1 for the sweeper "
                    "= 2 x (1 + 1) + 1 x 2 + 1).") in second.output()
            assert "dalc web serving" not in second.output()
        finally:
            second.stop()
        # The first goes on serving with every connection it had.
        assert client_connections(url) == 7
        wait_for_http(f"{base}/readyz", first)
    finally:
        first.stop()
