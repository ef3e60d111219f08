"""Prometheus metrics: one scrape target per process kind, checked after known traffic on the real processes."""
from __future__ import annotations

import datetime as dt
import glob
import os
import shutil
import tempfile
import threading
import time

import dramatiq
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.config import Config
from app.queue.broker import build_broker
from app.store.database import db
from app.store.models import Task, utcnow
from app.telemetry import metrics
from support import BIN, RUN_ID, Process, dalc_env, delete_queues, free_port, wait_for_http, wait_until


def samples_of(page: str) -> dict[tuple, float]:
    """Return every sample of a /metrics page as {(name, sorted label pairs): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


def scrape(url: str) -> dict[tuple, float]:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples_of(response.text)


def send_poison(amqp_url: str, queue: str) -> None:
    """Publish a message the actor cannot take (an unexpected argument): it fails, is retried, then dead-lettered."""
    broker = build_broker(Config(broker_url=amqp_url, queue_name=queue))
    try:
        def evaluate_tasks(task_ids):
            pass

        actor = dramatiq.actor(evaluate_tasks, broker=broker, queue_name=queue)
        actor.send_with_options(args=([1],), kwargs={"unexpected": True})
    finally:
        broker.close()


@pytest.fixture(scope="module")
def traffic(pg_url, amqp_url, tmp_path_factory):
    """Run two web and two worker processes, send five tasks, one unknown path and one poison message."""
    queue = f"dalc-test-{RUN_ID}-metrics"
    logs = tmp_path_factory.mktemp("metrics")
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in dalc_env(
        DALC_DATABASE_URL=pg_url, DALC_BROKER_URL=amqp_url, DALC_QUEUE_NAME=queue, DALC_PORT=str(port),
        DALC_WEB_WORKERS="2", DALC_WORKER_METRICS_PORT=str(metrics_port), DALC_MAX_RETRIES="1",
        DALC_RETRY_MIN_BACKOFF_MS="100", DALC_RETRY_MAX_BACKOFF_MS="200",
    ).items() if not k.startswith("OTEL_")}
    base = f"http://127.0.0.1:{port}"
    web = Process([str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", "app:create_app()"],
                  env, logs / "web.log")
    worker = Process([str(BIN / "dramatiq"), "app.worker", "--processes", "2", "--threads", "2"],
                     env, logs / "worker.log")
    try:
        wait_for_http(f"{base}/readyz", web)
        expressions = ["1 + 1", "2 * 3", "sqrt(16)", "1 / 0", "nope("]
        for expression in expressions:
            task = requests.post(f"{base}/tasks", json={"expression": expression}, timeout=10).json()
            assert requests.get(f"{base}/tasks/{task['id']}?wait=20", timeout=30).json()["finished_at"]
        assert requests.get(f"{base}/no/such/path", timeout=10).status_code == 404
        send_poison(amqp_url, queue)
        worker_url = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_for_http(worker_url, worker)
        wait_until(lambda: scrape(worker_url).get(("dalc_messages_dead_lettered_total", (("queue", queue),))),
                   timeout=30)
        yield base, worker_url, queue
    finally:
        assert worker.stop() == 0, worker.output()[-2000:]
        assert web.stop() == 0, web.output()[-2000:]
        delete_queues(amqp_url, queue)
        for path in glob.glob(f"{tempfile.gettempdir()}/dalc-worker-metrics-{worker.popen.pid}-*"):
            shutil.rmtree(path, ignore_errors=True)


def request_count(samples: dict, method: str, route: str, status: str) -> float:
    labels = (("http_request_method", method), ("http_response_status_code", status), ("http_route", route))
    return samples.get(("http_server_request_duration_seconds_count", labels), 0)


def test_every_web_process_answers_for_all_of_them_with_requests_by_route_and_status(traffic):
    base, _, _ = traffic
    # Several scrapes land on both gunicorn workers; each one must count every request.
    for _ in range(6):
        samples = scrape(f"{base}/metrics")
        assert request_count(samples, "POST", "/tasks", "202") == 5
        assert request_count(samples, "GET", "/tasks/<raw_id>", "200") == 5
        assert request_count(samples, "GET", "unmatched", "404") == 1
        assert samples[("dalc_tasks_accepted_total", ())] == 5


def test_the_workers_count_tasks_by_final_status_and_time_their_evaluation(traffic):
    _, worker_url, _ = traffic
    samples = scrape(worker_url)
    finished = {labels: value for (name, labels), value in samples.items() if name == "dalc_tasks_finished_total"}
    assert finished == {
        (("error_code", ""), ("status", "COMPLETED")): 3,
        (("error_code", "division_by_zero"), ("status", "FAILED")): 1,
        (("error_code", "syntax_error"), ("status", "FAILED")): 1,
    }
    assert samples[("dalc_task_evaluation_duration_seconds_count", ())] == 5


def test_the_workers_count_retries_dead_letters_and_the_queue_depth(traffic):
    _, worker_url, queue = traffic
    samples = scrape(worker_url)
    assert samples[("dalc_message_retries_total", (("queue", queue),))] == 1
    assert samples[("dalc_messages_dead_lettered_total", (("queue", queue),))] == 1
    assert samples[("dalc_message_duration_seconds_count", (("outcome", "error"), ("queue", queue)))] == 2
    assert samples[("dalc_messages_in_progress", (("queue", queue),))] == 0
    assert samples[("dalc_queue_messages", (("queue", queue),))] == 0
    assert samples[("dalc_queue_messages", (("queue", f"{queue}.XQ"),))] == 1
    assert samples[("dalc_broker_up", ())] == 1


def test_the_web_counts_the_tasks_a_working_sweeper_would_have_published_again(client):
    with db.connection_context():
        Task.create(expression="1 + 1", published_at=dt.datetime(2000, 1, 1))
        Task.create(expression="1 + 2", published_at=dt.datetime(2000, 1, 1), status="COMPLETED")
        Task.create(expression="1 + 3", published_at=utcnow())
    page = client.get("/metrics")
    assert samples_of(page.get_data(as_text=True))[("dalc_tasks_overdue", ())] == 1


def test_a_single_process_serves_its_own_metrics(client):
    def healthz_count():
        page = client.get("/metrics")
        assert page.status_code == 200
        return request_count(samples_of(page.get_data(as_text=True)), "GET", "/healthz", "200")

    before = healthz_count()
    client.get("/healthz")
    assert healthz_count() == before + 1


def test_a_metrics_directory_left_by_a_dramatiq_command_that_is_gone_is_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    gone = tmp_path / "dalc-worker-metrics-999999999-12345"
    gone.mkdir()
    ours = metrics.worker_multiprocess_dir()
    assert os.environ[metrics.MULTIPROC_ENV] == ours
    assert os.path.basename(ours).startswith(f"dalc-worker-metrics-{os.getppid()}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == [os.path.basename(ours)]


def test_metrics_are_created_once_even_when_threads_race_to_the_first_use():
    calls = []
    start = threading.Barrier(8)

    @metrics.created_once
    def make():
        calls.append(1)
        time.sleep(0.01)  # widen the window in which a second thread could slip in
        return object()

    def first_use(results):
        start.wait()
        results.append(make())

    results = []
    threads = [threading.Thread(target=first_use, args=(results,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1


@pytest.mark.parametrize("shape", ["gunicorn", "embedded"])
def test_a_metrics_port_of_their_own_answers_metrics_only_and_the_api_port_everything_else(shape, request, tmp_path):
    port, metrics_port = free_port(), free_port()
    settings = dict(DALC_PORT=str(port), DALC_WEB_METRICS_PORT=str(metrics_port), DALC_AUTH="required")
    if shape == "gunicorn":
        queue = f"dalc-test-{RUN_ID}-metrics-port"
        settings.update(DALC_DATABASE_URL=request.getfixturevalue("pg_url"), DALC_QUEUE_NAME=queue,
                        DALC_BROKER_URL=request.getfixturevalue("amqp_url"))
        command = [str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", "app:create_app()"]
    else:
        settings.update(DALC_DATABASE_URL=f"sqlite:///{tmp_path / 'run.db'}")
        command = [str(BIN / "dalc"), "run"]
    process = Process(command, dalc_env(**settings), tmp_path / "web.log")
    api, private = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    try:
        wait_for_http(f"{api}/healthz", process)
        # Open without a token, like health and readiness.
        assert scrape(f"{private}/metrics")[("dalc_tasks_overdue", ())] == 0
        for method, path in [("GET", "/metrics"), ("HEAD", "/metrics")]:
            answer = requests.request(method, f"{api}{path}", timeout=5)
            assert answer.status_code == 404, (method, path)
        for method, path in [("POST", "/tasks"), ("GET", "/tasks/1"), ("GET", "/healthz"), ("GET", "/"),
                             ("GET", "/openapi.json")]:
            answer = requests.request(method, f"{private}{path}", json={"expression": "1 + 1"}, timeout=5)
            assert answer.status_code == 404, (method, path)
            assert answer.headers["Content-Type"] == "application/problem+json"
        # The API port still serves the API, behind its token.
        assert requests.post(f"{api}/tasks", json={"expression": "1 + 1"}, timeout=5).status_code == 401
        assert requests.get(f"{api}/readyz", timeout=5).status_code == 200
        assert process.stop() == 0, process.output()[-2000:]
    finally:
        process.stop()
        if shape == "gunicorn":
            delete_queues(settings["DALC_BROKER_URL"], queue)
