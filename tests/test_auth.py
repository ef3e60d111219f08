"""DALC_AUTH=required on real PostgreSQL and RabbitMQ: tokens, 401s, and tasks that belong to their token."""
from __future__ import annotations

import json

import pytest

from app import create_app
from app.store import tokens
from app.store.database import db
from app.web import auth
from support import clean_tables

TASK_ENDPOINTS = [
    ("post", "/tasks"),
    ("get", "/tasks"),
    ("get", "/tasks?id=1"),
    ("get", "/tasks/1"),
    ("get", "/tasks/1?wait=1"),
    ("post", "/tasks/1/cancel"),
]


@pytest.fixture
def app(pg_config):
    application = create_app(pg_config.with_overrides(auth="required"))
    clean_tables()
    yield application
    application.extensions["dalc"].close()


@pytest.fixture
def make_token(app):
    def make(name):
        with db.connection_context():
            return tokens.create_token(name)[1]

    return make


@pytest.fixture
def alice(make_token):
    return make_token("alice")


@pytest.fixture
def bob(make_token):
    return make_token("bob")


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def post(client, body, token, **headers):
    return client.post("/tasks", data=json.dumps(body), content_type="application/json",
                       headers={**bearer(token), **headers})


def task_count():
    with db.connection_context():
        return db.execute_sql("SELECT count(*) FROM task").fetchone()[0]


def assert_unauthorized(response, error=None):
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.get_json(force=True)["code"] == "unauthorized"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="dalc"')
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)


@pytest.mark.parametrize(("method", "path"), TASK_ENDPOINTS)
def test_every_task_endpoint_without_a_token_answers_401_with_a_challenge(client, method, path):
    response = getattr(client, method)(path, json={"expression": "1"})
    assert_unauthorized(response)


@pytest.mark.parametrize("header", [
    "Bearer dalc_not-a-real-token", "Bearer ", "Basic dXNlcjpwYXNz", "dalc_token-without-scheme",
    "Bearer " + "x" * 5000, "Bearer caf\u00e9",
])
def test_a_bad_or_malformed_token_answers_401_and_creates_nothing(client, header):
    response = client.post("/tasks", json={"expression": "1"}, headers={"Authorization": header})
    assert_unauthorized(response, "invalid_token" if header.startswith("Bearer ") and len(header) > 8
                        else "invalid_request")
    assert task_count() == 0


def test_a_token_is_accepted_and_creates_its_task(client, alice):
    response = post(client, {"expression": "1 + 1"}, alice)
    assert response.status_code == 202
    task_id = response.get_json()["id"]
    assert client.get(f"/tasks/{task_id}", headers=bearer(alice)).get_json()["expression"] == "1 + 1"
    assert "owner_id" not in response.get_json()


def test_the_scheme_is_case_insensitive(client, alice):
    assert post(client, {"expression": "1"}, alice, Authorization=f"bearer {alice}").status_code == 202


def test_health_readiness_and_metrics_stay_open(client):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path


def test_another_tokens_task_answers_exactly_as_a_task_that_does_not_exist(client, alice, bob):
    mine = post(client, {"expression": "2"}, alice).get_json()["id"]
    missing = mine + 1000
    for path in ("/tasks/{}", "/tasks?id={}", "/tasks/{}?wait=0.2"):
        theirs = client.get(path.format(mine), headers=bearer(bob))
        nothing = client.get(path.format(missing), headers=bearer(bob))
        assert (theirs.status_code, nothing.status_code) == (404, 404)
        assert theirs.get_json()["detail"].replace(str(mine), "N") == nothing.get_json()["detail"].replace(
            str(missing), "N")
    cancelled = client.post(f"/tasks/{mine}/cancel", headers=bearer(bob))
    assert cancelled.status_code == 404
    assert client.get(f"/tasks/{mine}", headers=bearer(alice)).get_json()["status"] == "SCHEDULED"


def test_a_listing_holds_only_the_callers_tasks_and_counts_nothing_else(client, alice, bob):
    mine = [post(client, {"expression": str(i)}, alice).get_json()["id"] for i in range(3)]
    post(client, [{"expression": "9"}] * 5, bob)
    listing = client.get("/tasks?limit=2", headers=bearer(alice)).get_json()
    assert [t["id"] for t in listing["items"]] == mine[:0:-1]
    rest = client.get(f"/tasks?limit=2&before={listing['next']}", headers=bearer(alice)).get_json()
    assert ([t["id"] for t in rest["items"]], rest["next"]) == ([mine[0]], None)
    assert len(client.get("/tasks?limit=50", headers=bearer(bob)).get_json()["items"]) == 5
    assert client.get("/tasks?status=SCHEDULED", headers=bearer(alice)).get_json()["items"][0]["id"] == mine[-1]


def test_the_owner_can_cancel_its_task(client, alice):
    task_id = post(client, {"expression": "2"}, alice).get_json()["id"]
    response = client.post(f"/tasks/{task_id}/cancel", headers=bearer(alice))
    assert response.status_code == 200 and response.get_json()["status"] == "CANCELLED"


def test_idempotency_keys_are_scoped_per_token(client, alice, bob):
    key = {"Idempotency-Key": "same-key"}
    first = post(client, {"expression": "1"}, alice, **key)
    others = post(client, {"expression": "2"}, bob, **key)
    assert (first.status_code, others.status_code) == (202, 202)
    assert first.get_json()["id"] != others.get_json()["id"]
    again = post(client, {"expression": "1"}, alice, **key)
    assert (again.status_code, again.get_json()["id"]) == (200, first.get_json()["id"])
    assert post(client, {"expression": "2"}, alice, **key).status_code == 409


def test_a_revoked_token_is_refused_once_the_cache_lets_go(client, alice, monkeypatch):
    assert post(client, {"expression": "1"}, alice).status_code == 202
    with db.connection_context():
        tokens.revoke_token("alice")
    monkeypatch.setattr(auth, "TOKEN_CACHE_SECONDS", 0.0)
    auth._cache._entries.clear()
    assert_unauthorized(post(client, {"expression": "1"}, alice), "invalid_token")
    assert task_count() == 1


def test_a_new_token_under_a_revoked_name_does_not_inherit_its_tasks(client, alice, make_token):
    task_id = post(client, {"expression": "1"}, alice).get_json()["id"]
    with db.connection_context():
        tokens.revoke_token("alice")
    successor = make_token("alice")
    assert client.get(f"/tasks/{task_id}", headers=bearer(successor)).status_code == 404


def test_tasks_created_without_auth_belong_to_no_token(pg_config, alice, client):
    open_app = create_app(pg_config)  # DALC_AUTH=off, same database
    try:
        task_id = open_app.test_client().post("/tasks", json={"expression": "1"}).get_json()["id"]
        assert open_app.test_client().get(f"/tasks/{task_id}").status_code == 200
    finally:
        open_app.extensions["dalc"].close()
    assert client.get(f"/tasks/{task_id}", headers=bearer(alice)).status_code == 404


def test_below_the_purge_frontier_a_token_gets_404_for_expired_and_foreign_tasks_alike(client, alice, bob):
    mine = post(client, {"expression": "2"}, alice).get_json()["id"]
    with db.connection_context():
        db.execute_sql("UPDATE purge_state SET task_id_frontier = %s", [mine + 10])
    for task_id in (mine, mine + 1):  # alice's live task, and an id whose task "expired"
        for path in ("/tasks/{}", "/tasks/{}?wait=0.1"):
            response = client.get(path.format(task_id), headers=bearer(bob))
            assert (response.status_code, response.get_json()["code"]) == (404, "task_not_found")
        assert client.post(f"/tasks/{task_id}/cancel", headers=bearer(bob)).status_code == 404
