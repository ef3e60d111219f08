"""The production shape as real processes: gunicorn for the web, the dramatiq CLI for the workers."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import requests

from support import BIN, Process, dalc_env, free_port, run_sql, wait_for_http, wait_until

# The processes under test name themselves to PostgreSQL with this, so their connections can be counted.
APPLICATION_NAME = "dalc_process_test"


@pytest.fixture
def services_env(pg_url, amqp_url, queue_name, tmp_path):
    return dalc_env(
        DALC_DATABASE_URL=f"{pg_url}?application_name={APPLICATION_NAME}",
        DALC_BROKER_URL=amqp_url,
        DALC_QUEUE_NAME=queue_name,
        DALC_PORT=str(free_port()),
        DALC_WEB_WORKERS="2",
        DALC_WEB_THREADS="4",
        DALC_WORKER_PROCESSES="1",
        DALC_WORKER_THREADS="4",
    )


def connections() -> int:
    """Count the connections the processes under test hold on PostgreSQL."""
    return run_sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APPLICATION_NAME])[0][0]


def exercise_api(base: str) -> None:
    """Drive every endpoint of the contract once and check the answers."""
    created = requests.post(f"{base}/tasks", json={"expression": "(1 + 2) * 3"}, timeout=5)
    assert created.status_code == 202
    task = created.json()
    assert created.headers["Location"] == f"/tasks/{task['id']}"
    done = requests.get(f"{base}/tasks/{task['id']}?wait=15", timeout=20).json()
    assert (done["status"], done["result"]) == ("COMPLETED", 9)
    assert requests.get(f"{base}/tasks?id={task['id']}", timeout=5).json() == done

    batch = requests.post(f"{base}/tasks", json=[{"expression": f"{i} ** 2"} for i in range(20)], timeout=5).json()
    last = requests.get(f"{base}/tasks/{batch[-1]['id']}?wait=15", timeout=20).json()
    assert last["result"] == 361

    failed = requests.post(f"{base}/tasks", json={"expression": "1 / 0"}, timeout=5).json()
    assert requests.get(f"{base}/tasks/{failed['id']}?wait=15", timeout=20).json()["error_code"] == "division_by_zero"

    listing = requests.get(f"{base}/tasks?limit=5&status=COMPLETED", timeout=5).json()
    assert len(listing["items"]) == 5 and listing["next"]

    key = {"Idempotency-Key": f"proc-{task['id']}"}
    first = requests.post(f"{base}/tasks", json={"expression": "5"}, headers=key, timeout=5)
    again = requests.post(f"{base}/tasks", json={"expression": "5"}, headers=key, timeout=5)
    assert (first.status_code, again.status_code) == (202, 200)
    assert requests.post(f"{base}/tasks", json={"expression": "6"}, headers=key, timeout=5).status_code == 409

    assert requests.post(f"{base}/tasks/{task['id']}/cancel", timeout=5).status_code == 409
    bad = requests.post(f"{base}/tasks", data="nope", headers={"Content-Type": "application/json"}, timeout=5)
    assert bad.status_code == 400 and bad.headers["Content-Type"] == "application/problem+json"
    assert requests.delete(f"{base}/tasks/1", timeout=5).status_code == 405
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200


def test_gunicorn_and_the_dramatiq_cli_serve_the_whole_api(services_env, tmp_path):
    web = Process([str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", "app:create_app()"],
                  services_env, tmp_path / "web.log")
    worker = Process([str(BIN / "dramatiq"), "app.worker", "--processes", "1", "--threads", "4"],
                     services_env, tmp_path / "worker.log")
    base = f"http://127.0.0.1:{services_env['DALC_PORT']}"
    try:
        wait_for_http(f"{base}/readyz", web)
        exercise_api(base)
    finally:
        assert web.stop() == 0, web.output()[-2000:]
        assert worker.stop() == 0, worker.output()[-2000:]


def test_dalc_run_with_services_supervises_web_worker_and_sweeper(services_env, tmp_path):
    run = Process([sys.executable, "-m", "app", "run"], services_env, tmp_path / "run.log")
    base = f"http://127.0.0.1:{services_env['DALC_PORT']}"
    try:
        wait_for_http(f"{base}/readyz", run, timeout=40)
        # gunicorn's master names no address when its workers bind their own sockets: each worker does.
        wait_until(lambda: run.output().count(f"dalc web serving on {base} (") == 2, timeout=10)
        exercise_api(base)
        wait_until(lambda: "sweeper: publishing" in run.output(), timeout=10)
        # What helm/dalc's "dalc.database.connections" counts on: per web process one connection a thread
        # and one for its listener, per worker process one a thread, one for the sweeper; no more after
        # every endpoint was used. The chart refuses values that could exhaust the bundled PostgreSQL.
        expected = 2 * (4 + 1) + 1 * 4 + 1
        try:
            wait_until(lambda: connections() == expected, timeout=10)
        except AssertionError:
            pytest.fail(f"the processes hold {connections()} connections, not {expected}")
        run.signal(signal.SIGTERM)
        assert run.popen.wait(60) == 0
    finally:
        run.stop()


def test_the_worker_module_leaves_its_start_up_objects_out_of_full_collections(services_env):
    # What the dramatiq CLI imports in each worker process; gunicorn's post_worker_init does the same.
    probe = "import gc; import app.worker; print(gc.get_freeze_count()); app.worker.runtime.close()"
    done = subprocess.run([sys.executable, "-c", probe], env=services_env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > 10_000  # the modules and the runtime, frozen
