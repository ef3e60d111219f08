"""Threads start with their connections open: a process's first tasks do not wait for them."""
from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from app.runtime import warm_up_pool, warm_up_thread
from app.store.database import db
from support import BIN, Process, dalc_env, free_port, run_sql, wait_until


def test_warm_up_pool_runs_once_in_each_of_the_pool_s_threads():
    seen: list[int] = []
    with ThreadPoolExecutor(max_workers=6) as pool:
        warm_up_pool(pool, 6, lambda: seen.append(threading.get_ident()), timeout=10)
        assert len(seen) == 6 and len(set(seen)) == 6  # six calls, six threads: none waited for another's
        # The pool's threads are those that were warmed: the next work runs on one of them.
        assert pool.submit(threading.get_ident).result() in seen


def test_warm_up_pool_returns_after_its_timeout_when_a_thread_hangs():
    release = threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        warm_up_pool(pool, 2, lambda: release.wait(30), timeout=0.5)  # returns, logging the late threads
        release.set()


def test_a_warmed_thread_holds_its_database_connection_and_its_rabbitmq_channel(runtime):
    found = {}

    def in_a_new_thread():
        found["before"] = (db.is_closed(), runtime.broker.has_channel())
        warm_up_thread(runtime, publishes=True)
        found["after"] = (db.is_closed(), runtime.broker.has_channel())
        db.close()
        del runtime.broker.connection

    thread = threading.Thread(target=in_a_new_thread)
    thread.start()
    thread.join(30)
    assert found == {"before": (True, False), "after": (False, True)}


@pytest.mark.parametrize("publishes, last_statement", [
    (True, "FROM task WHERE id = 0"),  # the web reads a task (after planning its INSERT)
    (False, "UPDATE task SET"),  # a worker finishes one
])
def test_a_warmed_thread_has_run_its_task_statements_without_changing_a_row(runtime, publishes, last_statement):
    def state():
        with db.connection_context():
            sequence = db.execute_sql("SELECT last_value, is_called FROM task_id_seq").fetchone()
            return sequence, db.execute_sql("SELECT count(*), max(xmin::text) FROM task").fetchone()

    before = state()
    found = {}

    def in_a_new_thread():
        warm_up_thread(runtime, publishes=publishes)
        found["pid"] = db.connection().get_backend_pid()  # psycopg2 asks the server nothing for it
        found["engine"] = hasattr(runtime.evaluator._local, "engine")
        db.close()

    thread = threading.Thread(target=in_a_new_thread)
    thread.start()
    thread.join(30)
    [(query,)] = run_sql("SELECT query FROM pg_stat_activity WHERE pid = %s", [found["pid"]])
    assert last_statement in query
    assert state() == before  # no row written, no id taken from the sequence
    assert found["engine"] is (not publishes)  # a worker thread has built its evaluation engine


def _connections(application_name: str) -> int:
    [(count,)] = run_sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name])
    return count


@pytest.mark.parametrize("kind", ["web", "worker"])
def test_a_web_or_worker_process_opens_its_connections_and_its_metrics_before_any_task(
        kind, pg_url, amqp_url, queue_name, tmp_path):
    # No task reaches the processes: whatever connections they hold, they opened at start.
    name = f"dalc-warm-{kind}-{uuid.uuid4().hex[:6]}"
    port, metrics_port = free_port(), free_port()
    env = dalc_env(DALC_DATABASE_URL=f"{pg_url}?application_name={name}", DALC_BROKER_URL=amqp_url,
                   DALC_QUEUE_NAME=queue_name, DALC_PORT=str(port), DALC_WEB_WORKERS="2",
                   DALC_WEB_THREADS="4", DALC_WORKER_METRICS_PORT=str(metrics_port))
    if kind == "web":
        args, expected = [str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", "app:create_app()"], 2 * 4
        # Created at start, before any POST: the series of the route every task takes.
        metrics_url, series = f"http://127.0.0.1:{port}/metrics", (
            'http_server_request_duration_seconds_count{http_request_method="POST",http_response_status_code="202",'
            'http_route="/tasks"} 0.0')
    else:
        args, expected = [str(BIN / "dramatiq"), "app.worker", "--processes", "1", "--threads", "4"], 4
        metrics_url, series = f"http://127.0.0.1:{metrics_port}/metrics", (
            f'dalc_messages_in_progress{{queue="{queue_name}"}} 0.0')
    process = Process(args, env, tmp_path / f"{kind}.log")
    try:
        wait_until(lambda: _connections(name) >= expected, timeout=40, interval=0.2)
        assert series in wait_until(lambda: _text(metrics_url), timeout=20, interval=0.2)
    finally:
        assert process.stop() == 0, process.output()[-2000:]


def _text(url: str) -> str | None:
    try:
        return requests.get(url, timeout=2).text
    except requests.RequestException:
        return None
