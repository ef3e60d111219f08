"""Secrets never leak: every log line, answer and span of a real run is searched for them.

The web and a worker run as real processes with DALC_AUTH=required, DEBUG logs and tracing on, a
database URL that carries a password, and a broker URL whose password RabbitMQ refuses, so that the
paths where secrets usually escape (connection errors, readiness, refused requests) all run.
"""
from __future__ import annotations

import secrets
import subprocess
import sys

import pytest
import requests

from app.store import tokens
from harness.otlp_receiver import HttpReceiver
from support import AMQP_URL, BIN, ROOT, Process, dalc_env, free_port, wait_for_http

DB_PASSWORD = "dbpw-" + secrets.token_hex(8)
BROKER_PASSWORD = "mqpw-" + secrets.token_hex(8)
FAKE_TOKEN = "dalc_fake-" + secrets.token_hex(16)


def with_password(url: str, password: str) -> str:
    scheme, _, rest = url.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user.partition(':')[0]}:{password}@{host}"


@pytest.fixture(scope="module")
def run(pg_url, amqp_url, tmp_path_factory):
    """Drive every endpoint and the token commands; return what the run wrote and answered, and the token."""
    logs = tmp_path_factory.mktemp("secrets")
    receiver = HttpReceiver()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Local PostgreSQL trusts 127.0.0.1, so the password is sent and ignored; RabbitMQ refuses this one.
    env = {k: v for k, v in dalc_env(
        DALC_DATABASE_URL=with_password(pg_url, DB_PASSWORD),
        DALC_BROKER_URL=with_password(AMQP_URL, BROKER_PASSWORD),
        DALC_QUEUE_NAME=f"dalc-secrets-{port}", DALC_PORT=str(port), DALC_WEB_WORKERS="1",
        DALC_AUTH="required", DALC_LOG_LEVEL="DEBUG", DALC_LOG_FORMAT="json", DALC_WORKER_METRICS_PORT="0",
    ).items() if not k.startswith("OTEL_")}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
               OTEL_TRACES_SAMPLER="always_on", OTEL_BSP_SCHEDULE_DELAY="100")
    outputs: list[str] = []

    def dalc(*args, **extra_env):
        done = subprocess.run([sys.executable, "-m", "app", *args], env={**env, **extra_env}, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        outputs.extend([done.stdout, done.stderr])
        return done

    token = dalc("tokens", "create", "secret-test").stdout.strip()
    outputs.remove(token + "\n")  # the one place a token is shown, on purpose: the creator's stdout
    dalc("tokens", "list")
    web = Process([str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", "app:create_app()"],
                  env, logs / "web.log")
    worker = Process([str(BIN / "dramatiq"), "app.worker", "--processes", "1", "--threads", "1"],
                     env, logs / "worker.log")
    try:
        wait_for_http(f"{base}/healthz", web, timeout=40)
        good, bad = {"Authorization": f"Bearer {token}"}, {"Authorization": f"Bearer {FAKE_TOKEN}"}
        answers = [
            requests.post(f"{base}/tasks", json={"expression": "1 + 1"}, timeout=10),
            requests.post(f"{base}/tasks", json={"expression": "1 + 1"}, headers=bad, timeout=10),
            requests.get(f"{base}/tasks/1", headers={"Authorization": FAKE_TOKEN}, timeout=10),
            requests.post(f"{base}/tasks", data="{", headers={**good, "Content-Type": "application/json"},
                          timeout=10),
        ]
        created = requests.post(f"{base}/tasks", json={"expression": "2 * 3"}, headers=good, timeout=10)
        task_id = created.json()["id"]
        answers += [
            created,
            requests.get(f"{base}/tasks/{task_id}?wait=1", headers=good, timeout=10),
            requests.get(f"{base}/tasks?limit=5", headers=good, timeout=10),
            requests.post(f"{base}/tasks/{task_id}/cancel", headers=good, timeout=10),
            requests.get(f"{base}/readyz", timeout=10),
            requests.get(f"{base}/metrics", timeout=10),
        ]
        assert [a.status_code for a in answers[:4]] == [401, 401, 401, 400]
        assert created.status_code == 202 and answers[-2].status_code == 503  # the broker refuses its password
        receiver.wait_for(lambda spans: any(s.kind == "SERVER" for s in spans))
    finally:
        web.stop()
        worker.stop()
        receiver.close()
    dalc("tokens", "revoke", "secret-test")
    # A configuration error, and a database that cannot be reached, with the password in the URL.
    dalc("migrate", DALC_DATABASE_URL=f"mysql://dalc:{DB_PASSWORD}@127.0.0.1/dalc")
    refused = dalc("migrate", DALC_DATABASE_URL=f"postgresql://dalc:{DB_PASSWORD}@127.0.0.1:{free_port()}/dalc")
    assert refused.returncode != 0
    written = "\n".join([web.output(), worker.output(), *outputs])
    answered = "\n".join(f"{a.headers}\n{a.text}" for a in answers)
    spans = "\n".join(repr(s) for s in receiver.spans())
    return written, answered, spans, token


def secrets_of(token: str) -> list[str]:
    return [DB_PASSWORD, BROKER_PASSWORD, token, tokens.hash_token(token), FAKE_TOKEN]


def test_the_run_wrote_logs_answers_and_spans(run):
    written, answered, spans, token = run
    assert token.startswith("dalc_")
    assert written.count("\n") > 50 and '"level": "DEBUG"' in written
    assert "unreachable" in written or "ACCESS_REFUSED" in written  # the broker's refusal was logged
    assert "SERVER" in spans and "503" in answered


def test_no_secret_appears_in_any_log_line(run):
    written, _, _, token = run
    for line in written.splitlines():
        for secret in secrets_of(token):
            assert secret not in line, f"a secret in a log line: {line[:300]}"


def test_no_secret_appears_in_any_answer_or_span(run):
    _, answered, spans, token = run
    for secret in secrets_of(token):
        assert secret not in answered
        assert secret not in spans


def test_configuration_errors_show_urls_with_the_password_masked(run):
    written, *_ = run
    assert "mysql://dalc:***@127.0.0.1/dalc" in written


def test_readiness_names_what_is_down_and_nothing_else(run):
    _, answered, _, _ = run
    assert '"broker":"down"' in answered.replace(" ", "")
