"""Liveness and readiness probes."""
from __future__ import annotations

import pytest

from app import create_app


def test_healthz_answers_200(client):
    assert client.get("/healthz").status_code == 200


def test_readyz_answers_200_when_database_and_broker_are_reachable(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok", "broker": "ok"}


def test_readyz_answers_503_when_the_broker_is_away(pg_config):
    app = create_app(pg_config.with_overrides(broker_url="amqp://guest:guest@127.0.0.1:1/%2F"))
    try:
        client = app.test_client()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert response.get_json()["checks"] == {"database": "ok", "broker": "down"}
        assert client.get("/healthz").status_code == 200
    finally:
        app.extensions["dalc"].close()


@pytest.fixture
def app_without_database(pg_config):
    app = create_app(pg_config.with_overrides(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere", migrate_on_start=False))
    yield app
    app.extensions["dalc"].close()


def test_readyz_answers_503_when_the_database_is_away(app_without_database):
    response = app_without_database.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == "down"


def test_a_task_posted_while_the_database_is_away_answers_503_with_retry_after(app_without_database):
    response = app_without_database.test_client().post("/tasks", json={"expression": "1 + 1"})
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
