"""The evaluate actor on real PostgreSQL and RabbitMQ: ids in, outcomes recorded exactly once."""
from __future__ import annotations

import json

import peewee
import pytest

from app import store
from app.queue.actors import process_tasks
from app.store.database import db, make_database
from app.store.models import COMPLETED, FAILED, SCHEDULED
from support import wait_until


@pytest.fixture
def make_tasks(app):
    def make(*expressions):
        with db.connection_context():
            tasks, _ = store.create_tasks(list(expressions))
        return [t.id for t in tasks]

    return make


def read(task_id):
    with db.connection_context():
        return store.get_task(task_id)


def test_processing_records_results_and_failures(runtime, make_tasks):
    ids = make_tasks("2 * 21", "1 / 0", "nope(")
    assert process_tasks(ids, runtime.evaluator, max_attempts=5) == 3
    ok, zero, bad = (read(i) for i in ids)
    assert (ok.status, json.loads(ok.result)) == (COMPLETED, 42)
    assert (zero.status, zero.error_code) == (FAILED, "division_by_zero")
    assert (bad.status, bad.error_code) == (FAILED, "syntax_error")


def test_a_redelivered_message_changes_nothing(runtime, make_tasks):
    (task_id,) = make_tasks("1 + 1")
    process_tasks([task_id], runtime.evaluator, max_attempts=5)
    before = read(task_id)
    assert process_tasks([task_id], runtime.evaluator, max_attempts=5) == 0
    after = read(task_id)
    assert (after.status, after.result, after.attempts, after.finished_at) == (
        before.status, before.result, before.attempts, before.finished_at)


def test_a_task_claimed_past_its_attempts_ends_retries_exhausted(runtime, make_tasks):
    (task_id,) = make_tasks("1 + 1")
    with db.connection_context():
        for _ in range(3):
            store.claim([task_id])  # three workers took it and died
    process_tasks([task_id], runtime.evaluator, max_attempts=3)
    task = read(task_id)
    assert (task.status, task.error_code, task.attempts) == (FAILED, "retries_exhausted", 4)


def test_unknown_ids_are_ignored(runtime, app):
    assert process_tasks([987654321], runtime.evaluator, max_attempts=5) == 0


def test_messages_through_rabbitmq_carry_only_ids(runtime, make_tasks, worker):
    ids = make_tasks("3 + 4", "10 // 3")
    message = runtime.actor.send(ids)
    assert message.args == (ids,)
    assert "3 + 4" not in message.encode().decode()
    wait_until(lambda: all(read(i).status == COMPLETED for i in ids), timeout=10)
    assert [json.loads(read(i).result) for i in ids] == [7, 3]


def test_a_database_error_raises_so_the_broker_retries(runtime, make_tasks):
    (task_id,) = make_tasks("1")
    working = db.obj
    db.initialize(make_database(runtime.config.with_overrides(database_url="postgresql://postgres@127.0.0.1:1/x")))
    try:
        with pytest.raises(peewee.OperationalError):
            process_tasks([task_id], runtime.evaluator, max_attempts=5)
    finally:
        db.initialize(working)
    assert read(task_id).status == SCHEDULED
