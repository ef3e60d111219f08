"""Expiry on the real PostgreSQL: what expires, what never does, and what a client then sees."""
from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from app import create_app, store
from app.config import Config
from app.store import retention
from app.store.database import db, write_transaction
from app.store.models import CANCELLED, COMPLETED, FAILED, RUNNING, SCHEDULED, utcnow
from support import BIN, Process, dalc_env

HOUR = dt.timedelta(hours=1)
POLICY = retention.Policy(task_retention=HOUR, key_retention=HOUR, batch_size=100, pause_seconds=0)


def add_tasks(count: int, status: str, *, age: dt.timedelta, finished: bool = True) -> list[int]:
    """Store `count` tasks of a status, created (and finished, if `finished`) `age` ago; return their ids."""
    at = utcnow() - age
    sql = (
        "INSERT INTO task (expression, status, result, created_at, started_at, finished_at, attempts, "
        "published_at, publish_count) "
        "SELECT '1 + 1', %s, '2', %s, %s, %s, 1, %s, 1 FROM generate_series(1, %s) RETURNING id"
    )
    with db.connection_context():
        rows = db.execute_sql(sql, [status, at, at, at if finished else None, at, count]).fetchall()
    return sorted(r[0] for r in rows)


def purge(policy: retention.Policy = POLICY, **kwargs) -> retention.Round:
    with db.connection_context():
        return retention.purge(policy, **kwargs)


def existing(ids: list[int]) -> set[int]:
    with db.connection_context():
        return {t.id for t in store.get_tasks(ids)}


def assert_expired(response, task_id):
    assert response.status_code == 410, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["code"] == "task_expired" and body["status"] == 410
    assert str(task_id) in body["detail"]


def test_final_tasks_past_retention_disappear_and_answer_410(client):
    old = {s: add_tasks(3, s, age=2 * HOUR) for s in (COMPLETED, FAILED, CANCELLED)}
    recent = add_tasks(3, COMPLETED, age=HOUR / 2)
    result = purge()
    assert (result.tasks, result.caught_up) == (9, True)
    gone = [i for ids in old.values() for i in ids]
    assert existing(gone) == set()
    assert existing(recent) == set(recent)
    for task_id in gone:
        assert_expired(client.get(f"/tasks/{task_id}"), task_id)
    assert_expired(client.get(f"/tasks?id={old[COMPLETED][0]}"), old[COMPLETED][0])
    assert_expired(client.get(f"/tasks/{old[FAILED][0]}?wait=5"), old[FAILED][0])
    assert_expired(client.post(f"/tasks/{old[CANCELLED][0]}/cancel"), old[CANCELLED][0])
    assert client.get(f"/tasks/{recent[0]}").status_code == 200


def test_open_tasks_survive_however_old(client):
    scheduled = add_tasks(2, SCHEDULED, age=dt.timedelta(days=3650), finished=False)
    running = add_tasks(2, RUNNING, age=dt.timedelta(days=3650), finished=False)
    done = add_tasks(2, COMPLETED, age=2 * HOUR)
    assert purge().tasks == 2
    assert existing(scheduled + running) == set(scheduled + running)
    assert client.get(f"/tasks/{scheduled[0]}").get_json()["status"] == SCHEDULED
    # Once one of them is final it expires like any other, counted from when it finished.
    client.post(f"/tasks/{scheduled[0]}/cancel")
    assert purge().tasks == 0
    assert client.get(f"/tasks/{scheduled[0]}").get_json()["status"] == CANCELLED
    assert existing(done) == set()


def test_an_id_that_never_was_a_task_answers_404_not_410(client):
    before = add_tasks(2, COMPLETED, age=2 * HOUR)
    # An INSERT that rolled back burnt an id: the sequence never gives it out again.
    with db.connection_context():
        with pytest.raises(RuntimeError):
            with write_transaction():
                [(burnt, _)] = store.insert_rows([("2 + 2", None, 0)])
                raise RuntimeError("roll back")
    after = add_tasks(2, COMPLETED, age=2 * HOUR)
    fresh = add_tasks(1, COMPLETED, age=dt.timedelta(0))
    assert purge().tasks == 4
    assert before[-1] < burnt < after[0]
    assert client.get(f"/tasks/{burnt}").get_json()["code"] == "task_not_found"
    assert client.get(f"/tasks/{burnt}?wait=1").status_code == 404
    assert client.get(f"/tasks?id={burnt}").status_code == 404
    assert client.get(f"/tasks/{fresh[0] + 1000}").status_code == 404
    for task_id in before + after:
        assert client.get(f"/tasks/{task_id}").status_code == 410


def test_keys_past_retention_can_be_reused(client):
    headers = {"Idempotency-Key": "order-66"}
    first = client.post("/tasks", json={"expression": "1 + 1"}, headers=headers).get_json()
    assert client.post("/tasks", json={"expression": "9 + 9"}, headers=headers).status_code == 409
    with db.connection_context():
        db.execute_sql("UPDATE idempotency_key SET created_at = %s", [utcnow() - dt.timedelta(days=2)])
    # Past its retention (a day by default) the key is forgotten at once, before any purge ran:
    # a new body is a new request.
    again = client.post("/tasks", json={"expression": "9 + 9"}, headers=headers)
    assert again.status_code == 202 and again.get_json()["id"] != first["id"]
    assert client.post("/tasks", json={"expression": "9 + 9"}, headers=headers).status_code == 200
    # And the purge deletes the keys that expired.
    client.post("/tasks", json={"expression": "3 + 3"}, headers={"Idempotency-Key": "old"})
    with db.connection_context():
        db.execute_sql("UPDATE idempotency_key SET created_at = %s WHERE key = 'old'", [utcnow() - 2 * HOUR])
    assert purge().keys == 1
    assert client.post("/tasks", json={"expression": "4 + 4"}, headers={"Idempotency-Key": "old"}).status_code == 202


def test_a_key_that_outlived_its_tasks_answers_410(client):
    headers = {"Idempotency-Key": "long-lived"}
    task = client.post("/tasks", json={"expression": "1 + 1"}, headers=headers).get_json()
    with db.connection_context():
        db.execute_sql("UPDATE task SET status = %s, created_at = %s, finished_at = %s WHERE id = %s",
                       [COMPLETED, utcnow() - 3 * HOUR, utcnow() - 2 * HOUR, task["id"]])
    assert purge(retention.Policy(task_retention=HOUR, key_retention=None)).tasks == 1
    response = client.post("/tasks", json={"expression": "1 + 1"}, headers=headers)
    assert_expired(response, task["id"])


def test_purgers_take_turns_and_delete_each_row_once(app):
    ids = add_tasks(3000, COMPLETED, age=2 * HOUR)
    policy = retention.Policy(HOUR, HOUR, batch_size=50, pause_seconds=0)
    paused, resume = threading.Event(), threading.Event()

    def pause_once() -> bool:  # the first purger rests mid-round, holding the purgers' lock
        if not paused.is_set():
            paused.set()
            resume.wait(60)
        return False

    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(purge, policy, stopping=pause_once)
        assert paused.wait(30)
        second = purge(policy)
        resume.set()
        assert (second.skipped, second.tasks) == (True, 0)
        assert (first.result().skipped, first.result().tasks) == (False, len(ids))
    # Started together, however their rounds interleave, each row goes once.
    more = add_tasks(3000, FAILED, age=2 * HOUR)
    with ThreadPoolExecutor(2) as pool:
        counts = [r.result().tasks for r in [pool.submit(purge, policy) for _ in range(2)]]
    assert sum(counts) == len(more)
    assert existing(ids + more) == set()
    with db.connection_context():
        assert retention.totals().tasks_expired == len(ids) + len(more)


def test_a_purge_statement_in_flight_never_blocks_the_task_path(client):
    doomed = add_tasks(200, COMPLETED, age=2 * HOUR)
    with db.connection_context():
        frontier = retention.advance_frontier(utcnow() - HOUR)
    held, release, outcome = threading.Event(), threading.Event(), []

    def slow_purger():  # one purge batch whose transaction stays open, holding its rows' locks
        with db.connection_context(), db.atomic():
            outcome.append(retention.delete_expired_tasks(COMPLETED, utcnow() - HOUR, below=frontier, after=0,
                                                          limit=50)[0])
            held.set()
            release.wait(60)

    thread = threading.Thread(target=slow_purger)
    thread.start()
    try:
        assert held.wait(30)
        with db.connection_context():
            db.execute_sql("SET lock_timeout = '5s'")  # a wait now fails the test instead of hanging it
            try:
                # The task path: create, read, claim, finish, cancel (also of a row being deleted), list.
                created = client.post("/tasks", json={"expression": "2 * 21"}).get_json()
                keyed = client.post("/tasks", json={"expression": "1"}, headers={"Idempotency-Key": "k"})
                assert keyed.status_code == 202
                assert [c.id for c in store.claim([created["id"]])] == [created["id"]]
                assert store.finish([store.Outcome(created["id"], COMPLETED, "42")]) == 1
                assert client.get(f"/tasks/{doomed[0]}").get_json()["status"] == COMPLETED
                assert client.post(f"/tasks/{doomed[0]}/cancel").status_code == 409
                other = client.post("/tasks", json={"expression": "3"}).get_json()
                assert client.post(f"/tasks/{other['id']}/cancel").status_code == 200
                assert client.get("/tasks?limit=5").status_code == 200
            finally:
                db.execute_sql("RESET lock_timeout")
    finally:
        release.set()
        thread.join()
    assert outcome == [50]
    assert purge().tasks == 150
    assert existing(doomed) == set()


def test_a_round_logs_one_line_and_the_web_exports_the_totals(client, caplog):
    add_tasks(5, COMPLETED, age=2 * HOUR)
    add_tasks(1, FAILED, age=HOUR / 2)
    sweeper = client.application.extensions["dalc"].sweeper
    sweeper.purge_policy = POLICY
    with caplog.at_level(logging.INFO, logger="app.purge"):
        result = sweeper.purge_once()
    lines = [r for r in caplog.records if r.name == "app.purge"]
    assert len(lines) == 1
    assert lines[0].tasks_expired == 5 and lines[0].keys_expired == 0
    assert 1700 < lines[0].oldest_final_task_age_seconds < 3600
    assert result.oldest_final_age < HOUR
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "dalc_tasks_expired_total 5.0" in metrics
    assert "dalc_idempotency_keys_expired_total 0.0" in metrics
    assert "dalc_purge_rounds_total 1.0" in metrics
    assert "dalc_oldest_final_task_age_seconds " in metrics


def test_the_oldest_final_task_is_found_even_when_a_later_id_finished_first(client):
    slow = add_tasks(1, RUNNING, age=5 * HOUR, finished=False)[0]
    add_tasks(3, COMPLETED, age=3 * HOUR)
    with db.connection_context():
        db.execute_sql("UPDATE task SET status = %s, finished_at = %s WHERE id = %s",
                       [COMPLETED, utcnow() - 2 * HOUR, slow])
        oldest = retention.oldest_final_finished_at()
    assert 3 * HOUR - dt.timedelta(minutes=1) < utcnow() - oldest < 3 * HOUR + dt.timedelta(minutes=1)


def test_zero_retention_keeps_tasks_and_keys_forever(client):
    ids = add_tasks(3, COMPLETED, age=dt.timedelta(days=3650))
    result = purge(retention.Policy.from_config(Config.from_env({"DALC_TASK_RETENTION": "0",
                                                                 "DALC_IDEMPOTENCY_RETENTION": "0"})))
    assert (result.tasks, result.keys) == (0, 0)
    assert existing(ids) == set(ids)


def test_the_purge_command_empties_the_backlog_and_exits(pg_url, app, tmp_path):
    ids = add_tasks(500, FAILED, age=dt.timedelta(days=8))
    env = dalc_env(DALC_DATABASE_URL=pg_url, DALC_PURGE_BATCH_SIZE="200", DALC_LOG_FORMAT="json")
    command = Process([str(BIN / "dalc"), "purge"], env, tmp_path / "purge.log")
    assert command.popen.wait(60) == 0, command.output()
    command.stop()
    assert existing(ids) == set()
    assert '"tasks_expired": 500' in command.output()


def test_the_purge_command_says_so_and_fails_when_the_database_is_away(tmp_path):
    env = dalc_env(DALC_DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere", DALC_LOG_FORMAT="text")
    command = Process([str(BIN / "dalc"), "purge"], env, tmp_path / "purge.log")
    assert command.popen.wait(60) == 1
    command.stop()
    assert "purge: cannot reach the database" in command.output()
    assert "Traceback" not in command.output()


def test_the_embedded_shape_on_sqlite_expires_tasks_too(tmp_path):
    config = Config(database_url=f"sqlite:///{tmp_path / 'dalc.db'}", broker_url=None)
    application = create_app(config)
    try:
        client = application.test_client()
        ids = [client.post("/tasks", json={"expression": f"{i} + 1"}).get_json()["id"] for i in range(3)]
        # Every task final first: the embedded workers finish them in any order, and open tasks never expire.
        assert [client.get(f"/tasks/{i}?wait=10").get_json()["status"] for i in ids] == [COMPLETED] * 3
        with db.connection_context():
            db.execute_sql("UPDATE task SET created_at = ?, finished_at = ?",
                           [utcnow() - 2 * HOUR, utcnow() - 2 * HOUR])
            result = retention.purge(POLICY)
        # SQLite would hand the highest id out again if its row went, so the newest task stays.
        assert result.tasks == 2
        assert [client.get(f"/tasks/{i}").status_code for i in ids] == [410, 410, 200]
        assert client.post("/tasks", json={"expression": "7"}).get_json()["id"] == ids[-1] + 1
    finally:
        application.extensions["dalc"].close()


@pytest.mark.parametrize("raw, expected", [
    ("30s", dt.timedelta(seconds=30)), ("90m", dt.timedelta(minutes=90)), ("12h", dt.timedelta(hours=12)),
    ("7d", dt.timedelta(days=7)), ("0", dt.timedelta(0)),
])
def test_retention_is_a_duration_with_a_unit(raw, expected):
    config = Config.from_env({"DALC_TASK_RETENTION": raw, "DALC_IDEMPOTENCY_RETENTION": raw})
    assert config.task_retention == config.idempotency_retention == expected


@pytest.mark.parametrize("raw", ["7", "1w", "-1d", "1.5h", "d", "7 d"])
def test_a_retention_without_a_unit_or_with_an_unknown_one_is_refused(raw):
    from app.config import ConfigError

    with pytest.raises(ConfigError, match="DALC_TASK_RETENTION"):
        Config.from_env({"DALC_TASK_RETENTION": raw})


def test_defaults_keep_tasks_a_week_and_keys_a_day():
    policy = retention.Policy.from_config(Config())
    assert (policy.task_retention, policy.key_retention) == (dt.timedelta(days=7), dt.timedelta(hours=24))


def test_a_stopped_purge_reports_that_more_is_left(app):
    add_tasks(300, COMPLETED, age=2 * HOUR)
    result = purge(stopping=lambda: True)
    assert (result.tasks, result.caught_up) == (100, False)
    assert purge().tasks == 200

