"""DALC_RATE_LIMIT on real PostgreSQL: per token (or address), counted in tasks, shared by every process.

Windows are a day long, so that no test straddles one (the sliding window would then weigh two).
"""
from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import limits
import pytest
import requests
from limits.strategies import SlidingWindowCounterRateLimiter

from app import create_app
from app.store import tokens
from app.store.database import db
from app.store.rate_limits import DatabaseStorage
from support import BIN, Process, clean_tables, dalc_env, free_port, wait_for_http


def make_app(pg_config, **settings):
    application = create_app(pg_config.with_overrides(**settings))
    clean_tables()
    return application


@pytest.fixture
def app(pg_config):
    application = make_app(pg_config, auth="required", rate_limit="5/day")
    yield application
    application.extensions["dalc"].close()


def token(name):
    with db.connection_context():
        return {"Authorization": f"Bearer {tokens.create_token(name)[1]}"}


def post(client, body, headers):
    return client.post("/tasks", data=json.dumps(body), content_type="application/json", headers=headers)


def task_count():
    with db.connection_context():
        return db.execute_sql("SELECT count(*) FROM task").fetchone()[0]


def assert_rate_limited(response):
    assert response.status_code == 429
    assert response.mimetype == "application/problem+json"
    assert response.get_json(force=True)["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Limit"] == "5"
    assert response.headers["RateLimit-Remaining"] == "0"
    assert int(response.headers["RateLimit-Reset"]) >= 1
    assert response.headers["RateLimit-Policy"] == "5;w=86400"


def test_a_burst_past_the_limit_gets_429_and_creates_nothing_more(client):
    alice = token("alice")
    assert [post(client, {"expression": "1"}, alice).status_code for _ in range(5)] == [202] * 5
    assert_rate_limited(post(client, {"expression": "1"}, alice))
    assert task_count() == 5


def test_other_tokens_are_served_while_one_is_limited(client):
    alice, bob = token("alice"), token("bob")
    for _ in range(6):
        post(client, {"expression": "1"}, alice)
    assert_rate_limited(post(client, {"expression": "1"}, alice))
    assert post(client, {"expression": "2"}, bob).status_code == 202


def test_a_batch_counts_its_tasks(client):
    alice = token("alice")
    assert post(client, [{"expression": "1"}] * 4, alice).status_code == 202
    assert_rate_limited(post(client, [{"expression": "1"}] * 2, alice))
    assert task_count() == 4


def test_a_batch_larger_than_the_limit_is_refused_as_too_large_and_creates_nothing(client):
    response = post(client, [{"expression": "1"}] * 6, token("alice"))
    assert response.status_code == 413
    assert response.get_json()["code"] == "batch_over_rate_limit"
    assert task_count() == 0


def test_reads_count_one_each(client):
    alice = token("alice")
    task_id = post(client, {"expression": "1"}, alice).get_json()["id"]
    assert [client.get(f"/tasks/{task_id}", headers=alice).status_code for _ in range(4)] == [200] * 4
    assert_rate_limited(client.get("/tasks", headers=alice))


def test_requests_without_a_valid_token_are_refused_before_they_count(client):
    for _ in range(10):
        assert post(client, {"expression": "1"}, {"Authorization": "Bearer dalc_wrong"}).status_code == 401
    assert post(client, {"expression": "1"}, token("alice")).status_code == 202


def test_with_auth_off_each_client_address_has_its_own_budget(pg_config):
    application = make_app(pg_config, rate_limit="3/day")
    try:
        one = application.test_client()
        one.environ_base["REMOTE_ADDR"] = "192.0.2.1"
        other = application.test_client()
        other.environ_base["REMOTE_ADDR"] = "192.0.2.2"
        assert [one.post("/tasks", json={"expression": "1"}).status_code for _ in range(4)] == [202] * 3 + [429]
        assert other.post("/tasks", json={"expression": "1"}).status_code == 202
    finally:
        application.extensions["dalc"].close()


def test_without_a_limit_nothing_is_counted(pg_config):
    application = make_app(pg_config)
    try:
        client = application.test_client()
        assert {client.post("/tasks", json={"expression": "1"}).status_code for _ in range(20)} == {202}
        with db.connection_context():
            assert db.execute_sql("SELECT count(*) FROM rate_limit").fetchone()[0] == 0
    finally:
        application.extensions["dalc"].close()


def test_concurrent_hits_never_overshoot_the_limit(app):
    limiter = SlidingWindowCounterRateLimiter(DatabaseStorage())
    item = limits.parse("50/day")

    def hits(_):
        with db.connection_context():
            return sum(limiter.hit(item, "concurrent", cost=1) for _ in range(20))

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(hits, range(8))) == 50
    with db.connection_context():
        assert limiter.get_window_stats(item, "concurrent").remaining == 0
        limiter.clear(item, "concurrent")
        assert limiter.hit(item, "concurrent", cost=50)


def test_expired_counters_are_purged(app):
    storage = DatabaseStorage()
    with db.connection_context():
        db.execute_sql("INSERT INTO rate_limit (key, count, expires_at) VALUES ('old', 1, 1)")
        storage.acquire_sliding_window_entry("new", 10, 60, 1)
        keys = [r[0] for r in db.execute_sql("SELECT key FROM rate_limit").fetchall()]
    assert "old" not in keys and len(keys) == 1


def test_the_fixed_window_calls_of_the_storage_count_and_expire(app):
    storage = DatabaseStorage()
    with db.connection_context():
        assert [storage.incr("fixed", 60, 2), storage.incr("fixed", 60, 3)] == [2, 5]
        assert storage.get("fixed") == 5 and storage.get_expiry("fixed") > 0 and storage.check()
        db.execute_sql("UPDATE rate_limit SET expires_at = 1 WHERE key = 'fixed'")
        assert storage.get("fixed") == 0 and storage.incr("fixed", 60) == 1
        storage.clear("fixed")
        assert storage.get("fixed") == 0 and storage.reset() == 0


def test_the_limit_holds_across_the_processes_of_the_production_web(pg_url, amqp_url, queue_name, tmp_path, app):
    port = free_port()
    env = dalc_env(DALC_DATABASE_URL=pg_url, DALC_BROKER_URL=amqp_url, DALC_QUEUE_NAME=queue_name,
                   DALC_PORT=str(port), DALC_WEB_WORKERS="2", DALC_AUTH="required", DALC_RATE_LIMIT="20/day")
    web = Process([str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", "app:create_app()"], env,
                  tmp_path / "web.log")
    base = f"http://127.0.0.1:{port}"
    alice, bob = token("alice"), token("bob")
    try:
        wait_for_http(f"{base}/readyz", web)

        def submit(_):  # a new connection each: the kernel spreads them over both processes
            return requests.post(f"{base}/tasks", json={"expression": "1"}, headers=alice, timeout=15)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(submit, range(30)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [202] * 20 + [429] * 10
        refused = next(r for r in answers if r.status_code == 429)
        assert int(refused.headers["Retry-After"]) >= 1 and refused.headers["RateLimit-Remaining"] == "0"
        assert requests.post(f"{base}/tasks", json={"expression": "2"}, headers=bob, timeout=15).status_code == 202
        assert task_count() == 21
    finally:
        web.stop()


def test_two_apps_with_their_own_memory_count_against_the_same_budget(app, pg_config):
    other = create_app(pg_config.with_overrides(auth="required", rate_limit="5/day"))
    try:
        alice = token("alice")
        first, second = app.test_client(), other.test_client()
        statuses = [post(c, {"expression": "1"}, alice).status_code for c in (first, second) * 3]
        assert statuses == [202] * 5 + [429]
    finally:
        other.extensions["dalc"].close()


def test_every_thread_of_a_process_shares_the_count(app):
    alice = token("alice")
    results = []

    def one():
        results.append(post(app.test_client(), {"expression": "1"}, alice).status_code)

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [202] * 5 + [429] * 7
