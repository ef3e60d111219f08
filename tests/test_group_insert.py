"""Group commit of new tasks on real PostgreSQL: requests that arrive together share one INSERT."""
from __future__ import annotations

import threading

import pytest

from app import store
from app.store.database import db, make_database
from app.store.errors import StoreUnavailable
from app.store.group_insert import GroupInserter


@pytest.fixture
def calls(app):
    """Wrap the real INSERT: record each statement's rows, and let a test hold the first one."""
    record = {"statements": [], "hold": threading.Event(), "held": threading.Event()}
    record["hold"].set()

    def insert(rows):
        record["statements"].append(len(rows))
        record["held"].set()
        record["hold"].wait(10)
        with db.connection_context():
            return store.insert_rows(rows)

    record["insert"] = insert
    return record


def rows(*expressions):
    return [(e, None, 0) for e in expressions]


def test_requests_queued_behind_a_statement_share_the_next_one(calls):
    inserter = GroupInserter(calls["insert"])
    calls["hold"].clear()
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", inserter.insert(rows("0"))))
    first.start()
    assert calls["held"].wait(5)
    others = [threading.Thread(target=lambda n=n: results.setdefault(n, inserter.insert(rows(f"{n}", f"{n}+1"))))
              for n in range(1, 9)]
    for t in others:
        t.start()
    while len(inserter._queue) < 8:
        threading.Event().wait(0.01)
    calls["hold"].set()
    for t in [first, *others]:
        t.join(10)
    assert calls["statements"] == [1, 16]
    all_ids = [i for stored in results.values() for i, _ in stored]
    assert len(set(all_ids)) == 17
    with db.connection_context():
        for n in range(1, 9):
            tasks = store.get_tasks([i for i, _ in results[n]])
            assert [t.expression for t in tasks] == [f"{n}", f"{n}+1"]


def test_a_statement_never_splits_a_request_and_respects_the_row_limit(calls):
    inserter = GroupInserter(calls["insert"], max_rows=5)
    calls["hold"].clear()
    threading.Thread(target=lambda: inserter.insert(rows("a"))).start()
    assert calls["held"].wait(5)
    results = []
    threads = [threading.Thread(target=lambda: results.append(inserter.insert(rows("b", "c", "d")))) for _ in range(3)]
    for t in threads:
        t.start()
    while len(inserter._queue) < 3:
        threading.Event().wait(0.01)
    calls["hold"].set()
    for t in threads:
        t.join(10)
    assert calls["statements"] == [1, 3, 3, 3]
    assert sorted(len(r) for r in results) == [3, 3, 3]


def test_when_the_database_is_away_every_waiting_request_gets_store_unavailable(app):
    working = db.obj
    db.initialize(make_database(app.extensions["dalc"].config.with_overrides(
        database_url="postgresql://postgres@127.0.0.1:1/nowhere")))
    inserter = GroupInserter(store.insert_rows)
    try:
        errors = []

        def attempt():
            try:
                inserter.insert(rows("1"))
            except StoreUnavailable as exc:
                errors.append(exc)

        threads = [threading.Thread(target=attempt) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(errors) == 4
        # Nothing is left stuck: once the database is back, the same inserter works again.
        db.initialize(working)
        assert len(inserter.insert(rows("2"))) == 1
    finally:
            db.initialize(working)
