"""Task state changes on real PostgreSQL: claims, outcomes, cancels and re-publishing."""
from __future__ import annotations

import datetime as dt
import time

import pytest

from app import store
from app.store.database import db
from app.store.models import CANCELLED, COMPLETED, FAILED, RUNNING, SCHEDULED, Task, utcnow


@pytest.fixture
def conn(app):
    with db.connection_context():
        yield


def new_tasks(*expressions):
    tasks, created = store.create_tasks(list(expressions))
    assert created
    return [t.id for t in tasks]


def test_new_tasks_answer_exactly_what_reading_them_back_gives_in_the_order_given(conn):
    expressions = [f"{i} + 1" for i in range(300)]
    tasks, created = store.create_tasks(expressions, trace_id="ab" * 16)
    assert created and [t.expression for t in tasks] == expressions
    assert [t.to_dict() for t in tasks] == [t.to_dict() for t in store.get_tasks([t.id for t in tasks])]


def test_claiming_marks_running_counts_the_attempt_and_stamps_the_start(conn):
    (task_id,) = new_tasks("1 + 1")
    claimed = store.claim([task_id])
    # A claim is for a message delivered before: a task still SCHEDULED had an unrecorded first try too.
    assert [(c.id, c.expression, c.attempts) for c in claimed] == [(task_id, "1 + 1", 2)]
    task = store.get_task(task_id)
    assert task.status == RUNNING and task.started_at is not None


def test_the_claim_commits_without_waiting_for_the_disk_and_leaves_the_connection_as_it_was(conn):
    first, second = new_tasks("1 + 1", "2 + 2")
    with db.atomic():  # the setting holds to the end of the claim's transaction, seen here from inside it
        store.claim([first])
        assert db.execute_sql("SHOW synchronous_commit").fetchone()[0] == "off"
    store.claim([second])
    assert db.execute_sql("SHOW synchronous_commit").fetchone()[0] == "on"  # outcomes still wait for the disk


def test_a_running_task_can_be_claimed_again_and_keeps_its_first_start(conn):
    (task_id,) = new_tasks("2")
    store.claim([task_id])
    first_start = store.get_task(task_id).started_at
    assert store.claim([task_id])[0].attempts == 3
    assert store.get_task(task_id).started_at == first_start


def test_a_first_delivery_reads_open_tasks_without_changing_them(conn):
    open_, done = new_tasks("1 + 1", "2")
    store.claim([done])
    store.finish([store.Outcome(done, COMPLETED, result="2")])
    assert [(t.id, t.expression, t.attempts) for t in store.read_open([open_, done])] == [(open_, "1 + 1", 1)]
    task = store.get_task(open_)
    assert (task.status, task.attempts, task.started_at) == ("SCHEDULED", 0, None)


def test_an_unclaimed_outcome_counts_the_try_stamps_the_start_and_never_rewrites_a_final_task(conn):
    scheduled, running, cancelled = new_tasks("1", "2", "3")
    store.claim([running])
    claimed_start = store.get_task(running).started_at
    store.cancel_task(cancelled)
    started = time.monotonic() - 0.25  # the try began a quarter of a second ago
    outcomes = [store.Outcome(i, COMPLETED, result=str(n)) for n, i in enumerate((scheduled, running, cancelled))]
    assert store.finish(outcomes, started=started) == 2
    first, second, third = (store.get_task(i) for i in (scheduled, running, cancelled))
    assert (first.status, first.attempts, first.result) == (COMPLETED, 1, "0")
    # The start is the finish, on the database's clock, less the time the try took.
    assert 0.25 <= (first.finished_at - first.started_at).total_seconds() < 1.25
    assert (second.status, second.attempts, second.started_at) == (COMPLETED, 3, claimed_start)
    assert (third.status, third.attempts, third.result) == (CANCELLED, 0, None)
    assert store.finish([store.Outcome(scheduled, FAILED, error_code="x", error_message="y")], started=started) == 0


def test_every_time_a_task_carries_comes_from_the_database_s_clock(conn, monkeypatch):
    # A web or worker host whose clock is an hour behind (another node) changes none of them.
    monkeypatch.setattr("app.store.tasks.utcnow", lambda: utcnow() - dt.timedelta(hours=1))
    tasks, _ = store.create_tasks(["1", "2", "3", "4", "5"])
    first, claimed, cancelled, failed, republished = (t.id for t in tasks)
    store.finish([store.Outcome(first, COMPLETED, result="1")], started=time.monotonic())
    store.claim([claimed])
    store.finish([store.Outcome(claimed, COMPLETED, result="2")])
    store.cancel_task(cancelled)
    store.fail_open_tasks([failed], "retries_exhausted", "no more tries")
    Task.update(published_at=utcnow() - dt.timedelta(hours=2)).where(Task.id == republished).execute()
    assert store.due_for_republish(older_than=utcnow() - dt.timedelta(hours=1), limit=10) == [(republished, 2)]
    database_now = db.execute_sql("SELECT statement_timestamp() AT TIME ZONE 'UTC'").fetchone()[0]
    stamps = [tasks[0].to_dict()["created_at"]]
    for task in store.get_tasks([t.id for t in tasks]):
        stamps += [task.created_at, task.published_at, task.started_at, task.finished_at]
    stamps = [dt.datetime.fromisoformat(s.rstrip("Z")) if isinstance(s, str) else s for s in stamps if s]
    assert len(stamps) == 1 + 5 * 2 + 2 + 4  # the answer; created and published; two starts; four finishes
    assert all(abs((database_now - s).total_seconds()) < 30 for s in stamps), (database_now, stamps)


def test_only_the_first_outcome_lands(conn):
    (task_id,) = new_tasks("3")
    store.claim([task_id])
    assert store.finish([store.Outcome(task_id, COMPLETED, result="3")]) == 1
    assert store.finish([store.Outcome(task_id, FAILED, error_code="x", error_message="y")]) == 0
    task = store.get_task(task_id)
    assert (task.status, task.result, task.error_code) == (COMPLETED, "3", None)


def test_final_and_cancelled_tasks_are_never_claimed(conn):
    done, cancelled = new_tasks("1", "2")
    store.claim([done])
    store.finish([store.Outcome(done, COMPLETED, result="1")])
    store.cancel_task(cancelled)
    assert store.claim([done, cancelled]) == []
    assert store.get_task(cancelled).status == CANCELLED


def test_an_outcome_for_a_task_cancelled_while_running_is_dropped(conn):
    (task_id,) = new_tasks("4")
    store.claim([task_id])
    _, cancelled = store.cancel_task(task_id)
    assert cancelled
    assert store.finish([store.Outcome(task_id, COMPLETED, result="4")]) == 0
    assert store.get_task(task_id).status == CANCELLED


def test_many_outcomes_land_in_one_call_with_their_own_values(conn):
    ids = new_tasks(*[str(i) for i in range(50)])
    store.claim(ids)
    outcomes = [store.Outcome(i, COMPLETED, result=str(n)) for n, i in enumerate(ids)]
    outcomes[7] = store.Outcome(ids[7], FAILED, error_code="syntax_error", error_message="bad")
    assert store.finish(outcomes) == 50
    tasks = store.get_tasks(ids)
    assert [t.result for t in tasks[:7]] == [str(n) for n in range(7)]
    assert (tasks[7].status, tasks[7].error_code, tasks[7].result) == (FAILED, "syntax_error", None)
    assert all(t.finished_at is not None for t in tasks)


def test_overdue_open_tasks_are_taken_for_republishing_once(conn):
    old, fresh, done = new_tasks("1", "2", "3")
    past = utcnow() - dt.timedelta(minutes=10)
    Task.update(published_at=past).where(Task.id.in_([old, done])).execute()
    store.claim([done])
    store.finish([store.Outcome(done, COMPLETED, result="3")])
    cutoff = utcnow() - dt.timedelta(minutes=1)
    assert store.due_for_republish(older_than=cutoff, limit=100) == [(old, 2)]
    assert store.due_for_republish(older_than=cutoff, limit=100) == []
    assert store.get_task(fresh).status == SCHEDULED


def test_failing_open_tasks_leaves_final_ones_alone(conn):
    open_id, done = new_tasks("1", "2")
    store.claim([done])
    store.finish([store.Outcome(done, COMPLETED, result="2")])
    assert store.fail_open_tasks([open_id, done], "retries_exhausted", "gave up") == 1
    assert store.get_task(open_id).error_code == "retries_exhausted"
    assert store.get_task(done).status == COMPLETED
