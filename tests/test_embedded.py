"""The embedded shape: SQLite, an in-process broker and workers, in one process; tasks survive a restart."""
from __future__ import annotations

import signal
import sys

import requests

from app import create_app
from app.config import Config
from support import RUN_ID, Process, dalc_env, free_port, own_database, wait_for_http


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


def test_dalc_run_without_services_serves_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = dalc_env(DALC_PORT=str(port), DALC_DATABASE_URL=f"sqlite:///{tmp_path / 'run.db'}")
    process = Process([sys.executable, "-m", "app", "run"], env, tmp_path / "run.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
        task = requests.post(f"http://127.0.0.1:{port}/tasks", json={"expression": "1 + 1"}, timeout=5).json()
        done = requests.get(f"http://127.0.0.1:{port}/tasks?id={task['id']}&wait=10", timeout=15).json()
        assert done["result"] == 2
        process.signal(signal.SIGTERM)
        assert process.popen.wait(15) == 0
        assert '"message": "stopping"' in process.output()
    finally:
        process.stop()


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
