"""The embedded shape: SQLite, an in-process broker and workers, in one process; tasks survive a restart."""
from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Iterator

import requests

from app import create_app
from app.config import Config
from support import RUN_ID, Process, dalc_env, free_port, own_database, wait_for_http, wait_until


def test_a_task_completes_in_the_embedded_shape(embedded_app):
    client = embedded_app.test_client()
    task = client.post("/tasks", json={"expression": "sqrt(16) + 2 ** 3"}).get_json()
    done = client.get(f"/tasks/{task['id']}?wait=10").get_json()
    assert done["status"] == "COMPLETED" and done["result"] == 12.0


def test_a_batch_completes_in_the_embedded_shape(embedded_app):
    client = embedded_app.test_client()
    tasks = client.post("/tasks", json=[{"expression": f"{i} + 1"} for i in range(100)]).get_json()
    last = client.get(f"/tasks/{tasks[-1]['id']}?wait=10").get_json()
    assert last["result"] == 100
    results = [client.get(f"/tasks/{t['id']}?wait=10").get_json()["result"] for t in tasks]
    assert results == [i + 1 for i in range(100)]


def test_embedded_readyz_is_ready(embedded_app):
    assert embedded_app.test_client().get("/readyz").status_code == 200


def test_open_tasks_survive_a_restart_and_complete_after_it(tmp_path):
    config = Config(database_url=f"sqlite:///{tmp_path / 'dalc.db'}", broker_url=None)
    first = create_app(config)
    runtime = first.extensions["dalc"]
    runtime.worker.stop()  # the process "dies" before any worker gets to the task
    task = first.test_client().post("/tasks", json={"expression": "40 + 2"}).get_json()
    runtime.close()

    second = create_app(config)
    try:
        done = second.test_client().get(f"/tasks/{task['id']}?wait=10").get_json()
        assert done["status"] == "COMPLETED" and done["result"] == 42
    finally:
        second.extensions["dalc"].close()


@contextlib.contextmanager
def _dalc_run_without_services(tmp_path) -> Iterator[tuple[str, Process]]:
    """Start `dalc run` on a SQLite file of the test's own; yield its URL and process once it answers."""
    port = free_port()
    env = dalc_env(DALC_PORT=str(port), DALC_DATABASE_URL=f"sqlite:///{tmp_path / 'run.db'}")
    process = Process([sys.executable, "-m", "app", "run"], env, tmp_path / "run.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.stop()


def test_dalc_run_without_services_serves_and_stops_on_sigterm(tmp_path):
    with _dalc_run_without_services(tmp_path) as (url, process):
        task = requests.post(f"{url}/tasks", json={"expression": "1 + 1"}, timeout=5).json()
        done = requests.get(f"{url}/tasks?id={task['id']}&wait=10", timeout=15).json()
        assert done["result"] == 2
        process.signal(signal.SIGTERM)
        assert process.popen.wait(15) == 0
        assert '"message": "stopping"' in process.output()


def test_dalc_run_logs_each_request_as_a_plain_json_line(tmp_path):
    # Werkzeug colours every request line but a 200 for a terminal; dalc's JSON lines carry none of it.
    with _dalc_run_without_services(tmp_path) as (url, process):
        accepted = requests.post(f"{url}/tasks", json={"expression": "1 + 1"}, timeout=5)
        refused = requests.post(f"{url}/tasks", json={"expr": "1"}, timeout=5)
        assert (accepted.status_code, refused.status_code) == (202, 400)
        wait_until(lambda: process.output().count("POST /tasks HTTP/1.1") == 2, timeout=5)
    lines = [json.loads(line) for line in process.output().splitlines() if line.startswith("{")]
    logged = [line["message"].split("] ", 1)[1] for line in lines
              if line["logger"] == "werkzeug" and "/tasks" in line["message"]]
    assert logged == ['"POST /tasks HTTP/1.1" 202 -', '"POST /tasks HTTP/1.1" 400 -']


def test_dalc_run_on_postgresql_hands_each_request_thread_connection_back(tmp_path):
    # Werkzeug serves each request on a new thread: more requests than the pool has connections
    # must all be answered, not refused with 503 once the pool is full of dead threads' connections.
    port = free_port()
    with own_database(f"dalc_test_{RUN_ID}_embedded") as url:
        env = dalc_env(DALC_PORT=str(port), DALC_DATABASE_URL=url)
        _serve_more_requests_than_the_pool_holds(port, Process([sys.executable, "-m", "app", "run"], env,
                                                               tmp_path / "run.log"))


def _serve_more_requests_than_the_pool_holds(port: int, process: Process) -> None:
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
        statuses = [requests.get(f"http://127.0.0.1:{port}/tasks/{n}", timeout=5).status_code for n in range(1, 41)]
        assert statuses.count(503) == 0, statuses
        task = requests.post(f"http://127.0.0.1:{port}/tasks", json={"expression": "6 * 7"}, timeout=5).json()
        done = requests.get(f"http://127.0.0.1:{port}/tasks/{task['id']}?wait=10", timeout=15).json()
        assert done["result"] == 42
    finally:
        process.stop()
