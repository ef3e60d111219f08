"""Traces: one per task, from the HTTP request through RabbitMQ to the worker and the database.

Most tests run the real processes (gunicorn, the `dalc sweep` command, the dramatiq CLI) against an
OTLP/HTTP receiver inside the test; tests/test_dramatiq_middleware.py checks the middleware in-process.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest
import requests
from opentelemetry import trace

from app.config import Config
from app.store.database import init_db
from app.telemetry import tracing
from harness.otlp_receiver import GrpcReceiver, HttpReceiver, recorded_spans
from support import BIN, ROOT, RUN_ID, Process, clean_tables, dalc_env, delete_queues, free_port, wait_for_http


def traced_env(receiver_endpoint: str, **settings: str) -> dict[str, str]:
    """Return a dalc environment that exports every span to the receiver, in batches sent every 0.1 s."""
    env = {k: v for k, v in dalc_env(**settings).items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver_endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_TRACES_SAMPLER="always_on",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    return env


@dataclasses.dataclass
class TracedRun:
    receiver: HttpReceiver
    queue: str
    tasks: dict  # name -> the final task resource(s)
    web_log: str
    worker_log: str


def has_span(spans, **match) -> bool:
    return any(all(getattr(s, k) == v for k, v in match.items()) for s in spans)


def publishes(spans, task_id: int, service: str) -> bool:
    return any(s.kind == "PRODUCER" and s.service == service and task_id in s.attributes["dalc.task.ids"]
               for s in spans)


@pytest.fixture(scope="module")
def run(pg_url, amqp_url, tmp_path_factory):
    """Submit three requests to a traced web, re-publish their tasks with the sweeper, then run a worker."""
    receiver = HttpReceiver()
    queue = f"dalc-test-{RUN_ID}-tracing"
    logs = tmp_path_factory.mktemp("tracing")
    port = free_port()
    env = traced_env(
        receiver.endpoint, DALC_DATABASE_URL=pg_url, DALC_BROKER_URL=amqp_url, DALC_QUEUE_NAME=queue,
        DALC_PORT=str(port), DALC_WEB_WORKERS="1", DALC_WORKER_METRICS_PORT="0", DALC_LOG_FORMAT="json",
        DALC_SWEEP_AFTER_SECONDS="0", DALC_SWEEP_INTERVAL_SECONDS="3600", DALC_LOG_LEVEL="DEBUG",
    )
    init_db(Config(database_url=pg_url))
    clean_tables()  # the sweeper must find this run's tasks only
    base = f"http://127.0.0.1:{port}"
    web = Process([str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", "app:create_app()"],
                  env, logs / "web.log")
    worker = None
    try:
        wait_for_http(f"{base}/readyz", web)
        submitted = {}
        for name, body in [("ok", {"expression": "(1 + 2) * 3"}), ("failed", {"expression": "1 / 0"}),
                           ("batch", [{"expression": "2 ** 10"}, {"expression": "7 -"}])]:
            answer = requests.post(f"{base}/tasks", json=body, timeout=10).json()
            submitted[name] = answer
            first = answer[0] if isinstance(answer, list) else answer
            # One request per message: wait until this one's publish is seen before sending the next.
            receiver.wait_for(lambda spans, i=first["id"]: publishes(spans, i, "dalc-web"))
        ids = [t["id"] for a in submitted.values() for t in (a if isinstance(a, list) else [a])]

        sweeper = Process([str(BIN / "dalc"), "sweep"], env, logs / "sweeper.log")
        receiver.wait_for(lambda spans: all(publishes(spans, i, "dalc-sweeper") for i in ids))
        assert sweeper.stop() == 0, sweeper.output()[-2000:]

        # One thread: the messages are processed in order, the web's before the sweeper's.
        worker = Process([str(BIN / "dramatiq"), "app.worker", "--processes", "1", "--threads", "1"],
                         env, logs / "worker.log")
        final = {name: [requests.get(f"{base}/tasks/{t['id']}?wait=20", timeout=30).json()
                        for t in (a if isinstance(a, list) else [a])] for name, a in submitted.items()}
        receiver.wait_for(lambda spans: evaluated(spans) >= set(ids) and republished_and_consumed(spans) == 3)
        assert worker.stop() == 0, worker.output()[-2000:]
        assert web.stop() == 0, web.output()[-2000:]
        yield TracedRun(receiver, queue, {k: v if k == "batch" else v[0] for k, v in final.items()},
                        web.output(), worker.output())
    finally:
        for process in (worker, web):
            if process is not None:
                process.stop()
        receiver.close()
        delete_queues(amqp_url, queue)
        if worker is not None:
            for path in glob.glob(f"{tempfile.gettempdir()}/dalc-worker-metrics-{worker.popen.pid}-*"):
                shutil.rmtree(path, ignore_errors=True)


def evaluated(spans) -> set[int]:
    """Return the ids of the tasks whose evaluation has a span (its own, or its batch's)."""
    ids = set()
    for s in spans:
        if s.name == "evaluate":
            ids.update(s.attributes.get("dalc.task.ids") or [s.attributes["dalc.task.id"]])
    return ids


def republished_and_consumed(spans) -> int:
    republished = {s.span_id for s in spans if s.kind == "PRODUCER" and s.service == "dalc-sweeper"}
    return sum(s.kind == "CONSUMER" and s.parent_id in republished for s in spans)


def one(spans, **match):
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, f"{len(found)} spans match {match}: {found}"
    return found[0]


def chain(run: TracedRun, task: dict):
    """Return the spans of the task's trace and its SERVER, web PRODUCER, CONSUMER and evaluation spans."""
    spans = run.receiver.spans(task["trace_id"])
    server = one(spans, kind="SERVER")
    producer = one(spans, kind="PRODUCER", service="dalc-web")
    consumer = one(spans, kind="CONSUMER", parent_id=producer.span_id)
    evaluation = one([s for s in spans if s.name == "evaluate" and s.attributes.get("dalc.task.id") == task["id"]])
    return spans, server, producer, consumer, evaluation


def test_a_task_is_one_trace_from_the_http_request_through_rabbitmq_to_the_worker(run):
    task = run.tasks["ok"]
    spans, server, producer, consumer, evaluation = chain(run, task)
    assert (server.service, server.name, server.parent_id) == ("dalc-web", "POST /tasks", "")
    assert server.attributes["http.route"] == "/tasks"
    assert server.attributes["http.response.status_code"] == 202
    assert producer.parent_id == server.span_id
    assert producer.name == f"send {run.queue}"
    assert producer.attributes["messaging.system"] == "rabbitmq"
    assert producer.attributes["dalc.task.ids"] == [task["id"]]
    assert (consumer.service, consumer.name) == ("dalc-worker", f"process {run.queue}")
    assert consumer.attributes["messaging.message.id"] == producer.attributes["messaging.message.id"]
    assert evaluation.parent_id == consumer.span_id
    assert evaluation.attributes["dalc.task.expression"] == "(1 + 2) * 3"
    assert (evaluation.attributes["dalc.task.status"], evaluation.status) == ("COMPLETED", "OK")


def test_database_statements_are_client_spans_in_the_request_and_in_the_message(run):
    spans, server, _, consumer, _ = chain(run, run.tasks["ok"])
    in_request = [s for s in spans if s.kind == "CLIENT" and s.parent_id == server.span_id]
    in_message = [s for s in spans if s.kind == "CLIENT" and s.parent_id == consumer.span_id]
    assert [s.name for s in in_request] == ["INSERT"]
    # The message carried the expression, so the worker read nothing: one statement, the outcome and its NOTIFY.
    assert [s.name for s in in_message] == ["WITH"]
    assert {s.attributes["db.system.name"] for s in in_request + in_message} == {"postgresql"}
    assert {s.service for s in in_request} == {"dalc-web"} and {s.service for s in in_message} == {"dalc-worker"}


def test_the_task_resource_carries_the_trace_id_of_its_request(run):
    task = run.tasks["ok"]
    _, server, *_ = chain(run, task)
    assert task["trace_id"] == server.trace_id and len(task["trace_id"]) == 32


def test_a_failed_evaluation_sets_an_error_status_with_its_code(run):
    *_, evaluation = chain(run, run.tasks["failed"])
    assert (evaluation.status, evaluation.status_message) == ("ERROR", "division_by_zero")
    assert evaluation.attributes["dalc.task.error_code"] == "division_by_zero"
    assert evaluation.attributes["dalc.task.status"] == "FAILED"


def test_a_batch_is_one_trace_whose_evaluate_span_lists_its_tasks_and_each_failure(run):
    first, second = run.tasks["batch"]
    assert first["trace_id"] == second["trace_id"]
    assert (first["status"], second["error_code"]) == ("COMPLETED", "syntax_error")
    spans = run.receiver.spans(first["trace_id"])
    producer = one(spans, kind="PRODUCER", service="dalc-web")
    consumer = one(spans, kind="CONSUMER", parent_id=producer.span_id)
    evaluation = one(spans, name="evaluate")
    assert evaluation.parent_id == consumer.span_id
    assert evaluation.attributes["dalc.task.ids"] == [first["id"], second["id"]]
    assert (evaluation.status, evaluation.status_message) == ("ERROR", "1 of 2 tasks FAILED")
    assert evaluation.events == (("task failed", {"dalc.task.id": second["id"], "dalc.task.expression": "7 -",
                                                  "dalc.task.error_code": "syntax_error"}),)


def test_a_sweeper_republish_joins_each_task_trace_and_one_message_serves_them_all(run):
    producers, consumers = [], []
    for task in (run.tasks["ok"], run.tasks["failed"], run.tasks["batch"][0]):
        spans = run.receiver.spans(task["trace_id"])
        producer = one(spans, kind="PRODUCER", service="dalc-sweeper")
        assert producer.parent_id == "" and producer.attributes["dalc.republished"] is True
        producers.append(producer)
        consumers.append(one(spans, kind="CONSUMER", parent_id=producer.span_id))
    assert len({p.attributes["messaging.message.id"] for p in producers}) == 1
    main = one(consumers, links=())
    assert [c.links for c in consumers if c is not main] == [((main.trace_id, main.span_id),)] * 2


def test_web_worker_and_sweeper_report_distinct_service_names(run):
    spans = run.receiver.spans(run.tasks["ok"]["trace_id"])
    assert {s.service for s in spans} == {"dalc-web", "dalc-worker", "dalc-sweeper"}


def test_at_debug_each_task_is_logged_as_one_json_line_with_its_trace_and_span(run):
    ok, failed = run.tasks["ok"], run.tasks["failed"]
    _, server, *_, evaluation = chain(run, ok)
    outcome = one_line(run.worker_log, ok["id"])
    assert (outcome["status"], outcome["trace_id"], outcome["span_id"]) == ("COMPLETED", ok["trace_id"],
                                                                          evaluation.span_id)
    failure = one_line(run.worker_log, failed["id"])
    assert (failure["status"], failure["error_code"]) == ("FAILED", "division_by_zero")
    accepted = one_line(run.web_log, ok["id"])
    assert (accepted["message"], accepted["trace_id"], accepted["span_id"]) == (
        f"task {ok['id']} accepted", ok["trace_id"], server.span_id)


def one_line(log: str, task_id: int) -> dict:
    """Return the only JSON log line about this task."""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    found = [line for line in lines if line.get("task_id") == task_id]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("receiver_class, protocol", [(HttpReceiver, "http/protobuf"), (GrpcReceiver, "grpc")])
def test_spans_reach_the_collector_over_either_otlp_protocol(receiver_class, protocol):
    receiver = receiver_class()
    try:
        result = run_probe(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
        assert result.returncode == 0, result.stderr
        assert has_span(receiver.spans(), name="probe", service="dalc-probe")
    finally:
        receiver.close()


def test_an_unreachable_collector_costs_one_warning_and_nothing_else():
    closed_port = free_port()
    result = run_probe(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{closed_port}", OTEL_EXPORTER_OTLP_TIMEOUT="1",
                       OTEL_BSP_MAX_QUEUE_SIZE="100", OTEL_BSP_MAX_EXPORT_BATCH_SIZE="50", spans=2_000)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2000 spans"
    complaints = [line for line in result.stderr.splitlines() if '"logger": "opentelemetry' in line]
    assert 1 <= len(complaints) <= 3, result.stderr  # at most one a minute from each exporter logger


def test_tracing_is_off_unless_a_destination_is_named_and_the_sdk_is_enabled():
    assert not tracing.tracing_requested({})
    assert tracing.tracing_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.tracing_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert tracing.tracing_requested({"OTEL_TRACES_EXPORTER": "console"})
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert not tracing.tracing_requested({**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert not tracing.tracing_requested({**endpoint, "OTEL_TRACES_EXPORTER": "none"})


@pytest.fixture
def spans():
    with recorded_spans() as exporter:
        yield exporter


def test_a_request_continues_its_callers_trace_and_probes_are_not_traced(spans, pg_config):
    from app import create_app

    with tracing.using(spans.provider):
        application = create_app(pg_config)
    try:
        client = application.test_client()
        caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        with tracing.using(spans.provider):
            task = client.post("/tasks", json={"expression": "1"}, headers={"traceparent": caller}).get_json()
            assert client.get("/healthz").status_code == 200
    finally:
        application.extensions["dalc"].close()
    servers = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    assert [s.name for s in servers] == ["POST /tasks"]
    assert task["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert format(servers[0].parent.span_id, "016x") == "b7ad6b7169203331"
    assert (servers[0].attributes["http.route"], servers[0].attributes["http.response.status_code"]) == ("/tasks", 202)


def run_probe(spans: int = 1, **otel: str) -> subprocess.CompletedProcess:
    """Run a process that starts dalc's tracing as a dalc process does, records spans and exits."""
    script = textwrap.dedent(f"""
        from app.config import Config
        from app.telemetry.logs import setup_logging
        from app.telemetry import tracing
        setup_logging(Config(log_format="json"))
        assert tracing.setup_tracing("dalc-probe")
        for _ in range({spans}):
            tracing.tracer().start_span("probe").end()
        tracing.shutdown()
        print("{spans} spans")
    """)
    env = {k: v for k, v in dalc_env().items() if not k.startswith("OTEL_")}
    env.update(OTEL_BSP_SCHEDULE_DELAY="50", **otel)
    return subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_the_stable_conventions_are_asked_for_once_keeping_what_the_user_set(monkeypatch):
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup, gen_ai_latest_experimental")
    tracing.opt_in_to_stable_conventions()
    tracing.opt_in_to_stable_conventions()
    assert os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] == "http/dup,gen_ai_latest_experimental,database"
