"""The evaluate actor on real PostgreSQL and RabbitMQ: ids in, outcomes recorded exactly once."""
from __future__ import annotations

import json

import dramatiq
import peewee
import pika
import pytest
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

from app import store
from app.queue.actors import process_tasks
from app.store.database import db, make_database, retire_connections
from app.store.models import COMPLETED, FAILED, SCHEDULED
from app.telemetry import tracing
from harness.otlp_receiver import recorded_spans
from support import run_sql, wait_until


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


def test_a_worker_thread_keeps_its_connection_until_the_database_is_found_gone(runtime, make_tasks):
    first, second, third = make_tasks("1 + 1"), make_tasks("2 + 2"), make_tasks("3 + 3")
    backends = []
    for ids in (first, second):
        assert process_tasks(ids, runtime.evaluator, max_attempts=5, claim=False) == 1
        assert not db.is_closed()  # kept for the next message, not handed back to the pool
        backends.append(db.connection().get_backend_pid())
    retire_connections()  # what a query that finds the server gone does
    assert process_tasks(third, runtime.evaluator, max_attempts=5, claim=False) == 1
    backends.append(db.connection().get_backend_pid())
    db.close()
    assert backends[0] == backends[1] != backends[2]
    assert [read(i).status for i in first + second + third] == [COMPLETED] * 3


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
        # Three workers took it and died: the first delivery's, unrecorded, then two redeliveries' claims.
        for _ in range(2):
            store.claim([task_id])
        assert store.get_task(task_id).attempts == 3
    process_tasks([task_id], runtime.evaluator, max_attempts=3)
    task = read(task_id)
    assert (task.status, task.error_code, task.attempts) == (FAILED, "retries_exhausted", 4)


def test_a_first_delivery_writes_the_task_once_and_still_counts_and_times_the_try(runtime, make_tasks):
    ids = make_tasks("6 * 7", "1 / 0")
    assert process_tasks(ids, runtime.evaluator, max_attempts=5, claim=False) == 2
    ok, zero = (read(i) for i in ids)
    assert (ok.status, json.loads(ok.result), ok.attempts) == (COMPLETED, 42, 1)
    assert (zero.status, zero.error_code, zero.attempts) == (FAILED, "division_by_zero", 1)
    assert ok.created_at <= ok.started_at <= ok.finished_at
    # A duplicate first delivery (the sweeper published it again) finds the tasks final: nothing changes.
    assert process_tasks(ids, runtime.evaluator, max_attempts=5, claim=False) == 0
    assert (read(ids[0]).attempts, read(ids[0]).finished_at) == (1, ok.finished_at)


def test_tasks_left_when_the_budget_is_spent_are_recorded_so_far_and_sent_again(runtime, make_tasks, worker):
    ids = make_tasks("1 + 1", "2 + 2", "3 + 3")
    sent_again = []

    def requeue(left):
        sent_again.append(left)
        runtime.actor.send(left)  # through RabbitMQ, to the worker

    # A budget already spent: the first task is evaluated all the same, so every message makes progress.
    assert process_tasks(ids, runtime.evaluator, max_attempts=5, claim=False, requeue=requeue,
                         budget_seconds=0) == 1
    assert sent_again == [ids[1:]]
    assert read(ids[0]).status == COMPLETED
    wait_until(lambda: all(read(i).status == COMPLETED for i in ids), timeout=10)
    assert [json.loads(read(i).result) for i in ids] == [2, 4, 6]
    assert [read(i).attempts for i in ids] == [1, 1, 1]


def test_without_somewhere_to_send_them_tasks_left_past_the_budget_fail_the_message(runtime, make_tasks):
    ids = make_tasks("1", "2")
    with pytest.raises(RuntimeError, match="1 task"):
        process_tasks(ids, runtime.evaluator, max_attempts=5, claim=False, budget_seconds=0)
    # What was evaluated is recorded; the broker's retry takes the rest.
    assert [read(i).status for i in ids] == [COMPLETED, SCHEDULED]


def test_a_first_delivery_leaves_a_cancelled_task_cancelled(runtime, make_tasks):
    (task_id,) = make_tasks("1 + 1")
    with db.connection_context():
        store.cancel_task(task_id)
    assert process_tasks([task_id], runtime.evaluator, max_attempts=5, claim=False) == 0
    assert (read(task_id).status, read(task_id).attempts) == ("CANCELLED", 0)


def test_only_a_message_delivered_before_is_claimed_first(runtime, make_tasks):
    again, first = make_tasks("3 + 3"), make_tasks("2 + 2")
    runtime.actor.send(again)
    # Take the message and hand it back unacknowledged, as a worker that dies holding it does:
    # RabbitMQ delivers it again, marked redelivered.
    connection = pika.BlockingConnection(pika.URLParameters(runtime.config.broker_url))
    try:
        channel = connection.channel()
        method = wait_until(lambda: channel.basic_get(runtime.config.queue_name, auto_ack=False)[0], timeout=10)
        assert not method.redelivered
    finally:
        connection.close()
    runtime.actor.send(first)
    worker = dramatiq.Worker(runtime.broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        wait_until(lambda: read(first[0]).status == read(again[0]).status == COMPLETED, timeout=10)
    finally:
        worker.stop()
    assert read(first[0]).attempts == 1  # read, evaluated, recorded: one try
    # Claimed, counting the try that was handed back unrecorded as well as its own.
    assert read(again[0]).attempts == 2


def test_unknown_ids_are_ignored(runtime, app):
    assert process_tasks([987654321], runtime.evaluator, max_attempts=5) == 0


def test_a_message_of_ids_alone_is_read_from_the_database(runtime, make_tasks, worker):
    # What the sweeper and the budget's re-send publish, and what a web of an older release published.
    ids = make_tasks("3 + 4", "10 // 3")
    message = runtime.actor.send(ids)
    assert message.args == (ids,) and "3 + 4" not in message.encode().decode()
    wait_until(lambda: all(read(i).status == COMPLETED for i in ids), timeout=10)
    assert [json.loads(read(i).result) for i in ids] == [7, 3]


def test_a_first_delivery_carrying_the_expressions_records_them_as_a_first_try(runtime, make_tasks):
    ids = make_tasks("6 * 7", "1 / 0")
    assert process_tasks(ids, runtime.evaluator, max_attempts=5, claim=False, expressions=["6 * 7", "1 / 0"]) == 2
    ok, zero = (read(i) for i in ids)
    assert (ok.status, json.loads(ok.result), ok.attempts) == (COMPLETED, 42, 1)
    assert (zero.status, zero.error_code, zero.attempts) == (FAILED, "division_by_zero", 1)
    assert ok.created_at <= ok.started_at <= ok.finished_at
    # A duplicate finds them final: nothing changes.
    assert process_tasks(ids, runtime.evaluator, max_attempts=5, claim=False, expressions=["6 * 7", "1 / 0"]) == 0
    assert (read(ids[0]).attempts, read(ids[0]).finished_at) == (1, ok.finished_at)


def test_a_carried_expression_unlike_the_stored_one_records_nothing(runtime, make_tasks):
    # A message that outlived its database (restored from a backup, ids handed out again) must not
    # write its expression's result onto another task.
    (task_id,) = make_tasks("1 + 1")
    assert process_tasks([task_id], runtime.evaluator, max_attempts=5, claim=False, expressions=["2 + 2"]) == 0
    assert (read(task_id).status, read(task_id).attempts) == (SCHEDULED, 0)
    # The database's own expression is evaluated when the task is published again (ids alone).
    assert process_tasks([task_id], runtime.evaluator, max_attempts=5, claim=False) == 1
    assert json.loads(read(task_id).result) == 2


def test_a_redelivered_message_is_claimed_and_read_whatever_it_carries(runtime, make_tasks):
    (task_id,) = make_tasks("5 - 1")
    assert process_tasks([task_id], runtime.evaluator, max_attempts=5, claim=True, expressions=["0 - 0"]) == 1
    # Its stored expression is evaluated; the claim counts the first delivery's try as well as its own.
    assert (json.loads(read(task_id).result), read(task_id).attempts) == (4, 2)


def test_the_web_s_messages_carry_expressions_and_the_worker_uses_them(runtime, make_tasks, worker):
    ids = make_tasks("3 + 4", "10 // 3", "2 ** 5")
    # The third carries another expression than its stored one: proof that the worker evaluated what the
    # message carried (and, checking it against the database, recorded nothing for it).
    assert runtime.dispatcher.publish(ids, None, ["3 + 4", "10 // 3", "1 - 1"]) == []
    wait_until(lambda: all(read(i).status == COMPLETED for i in ids[:2]), timeout=10)
    runtime.broker.join(runtime.config.queue_name, timeout=10_000)
    worker.join()
    assert [json.loads(read(i).result) for i in ids[:2]] == [7, 3]
    assert read(ids[2]).status == SCHEDULED


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


class _ReadTaskOnEnd(SpanProcessor):
    """When an `evaluate` span ends, read its task's status over a connection of its own."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.seen: dict[int, str] = {}

    def on_end(self, span) -> None:
        if span.name == "evaluate":
            task_id = span.attributes["dalc.task.id"]
            [(self.seen[task_id],)] = run_sql("SELECT status FROM task WHERE id = %s", [task_id], dsn=self.dsn)


def test_an_evaluation_is_reported_once_its_outcome_is_written(runtime, make_tasks, pg_url):
    # Spans, metrics and log lines wait for the write: none of their work delays the visible result.
    ok, failed = make_tasks("6 * 7", "1 / 0")
    reader = _ReadTaskOnEnd(pg_url)
    provider = TracerProvider()
    provider.add_span_processor(reader)
    with tracing.using(provider), tracing.tracer().start_as_current_span("message"):
        for task_id, expression in ((ok, "6 * 7"), (failed, "1 / 0")):
            process_tasks([task_id], runtime.evaluator, max_attempts=5, claim=False, expressions=[expression])
    assert reader.seen == {ok: COMPLETED, failed: FAILED}


def test_an_outcome_that_could_not_be_written_marks_its_evaluation_span_as_an_error(runtime, make_tasks, pg_url):
    (task_id,) = make_tasks("1 + 1")
    # The database refuses this task's outcome: a trigger, as a constraint or a lost connection would.
    run_sql(f"""
            CREATE FUNCTION refuse_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'outcome refused'; END $$;
            CREATE TRIGGER refuse_outcome BEFORE UPDATE ON task FOR EACH ROW WHEN (OLD.id = {task_id})
            EXECUTE FUNCTION refuse_outcome();""", dsn=pg_url)
    try:
        with recorded_spans() as exporter, tracing.tracer().start_as_current_span("message"):
            with pytest.raises(peewee.DatabaseError, match="outcome refused"):
                process_tasks([task_id], runtime.evaluator, max_attempts=5, claim=False, expressions=["1 + 1"])
    finally:
        run_sql("DROP TRIGGER refuse_outcome ON task; DROP FUNCTION refuse_outcome()", dsn=pg_url)
    [evaluation] = [s for s in exporter.get_finished_spans() if s.name == "evaluate"]
    assert evaluation.status.status_code == StatusCode.ERROR
    assert [e.name for e in evaluation.events] == ["exception"]
    assert read(task_id).status == SCHEDULED
