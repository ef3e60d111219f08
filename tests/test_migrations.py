"""Schema migrations: versioned, idempotent, and safe when processes start together."""
from __future__ import annotations

import threading

import pytest

from app.config import Config
from app.store import migrations
from app.store.database import db, init_db
from support import RUN_ID, own_database


@pytest.fixture
def fresh_pg(pg_url):
    """An empty PostgreSQL database of its own, dropped afterwards."""
    with own_database(f"dalc_test_{RUN_ID}_mig") as url:
        yield url


def test_migrate_applies_every_version_once(fresh_pg):
    init_db(Config(database_url=fresh_pg))
    assert migrations.migrate() == [v for v, _, _ in migrations.MIGRATIONS]
    assert migrations.migrate() == []
    with db.connection_context():
        assert set(db.get_tables()) >= {"task", "idempotency_key", "schema_migration"}
        indexes = {i.name for i in db.get_indexes("task")}
    assert "task_status_id" in indexes and "task_open_published_at" not in indexes


def test_a_database_at_version_1_is_brought_to_the_latest(fresh_pg):
    init_db(Config(database_url=fresh_pg))
    latest = migrations.MIGRATIONS
    migrations.MIGRATIONS = latest[:1]
    try:
        assert migrations.migrate() == [1]
    finally:
        migrations.MIGRATIONS = latest
    with db.connection_context():
        assert "task_open_published_at" in {i.name for i in db.get_indexes("task")}
    assert migrations.migrate() == [v for v, _, _ in latest[1:]]
    with db.connection_context():
        assert "task_open_published_at" not in {i.name for i in db.get_indexes("task")}


def test_processes_migrating_at_once_do_not_race(fresh_pg):
    init_db(Config(database_url=fresh_pg))
    results, errors = [], []

    def run():
        try:
            results.append(migrations.migrate())
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results, key=len) == [[]] * 5 + [[v for v, _, _ in migrations.MIGRATIONS]]


def test_migrate_works_on_sqlite(tmp_path):
    init_db(Config(database_url=f"sqlite:///{tmp_path / 'm.db'}"))
    assert migrations.migrate() == [v for v, _, _ in migrations.MIGRATIONS]
    assert migrations.migrate() == []


def test_tasks_and_idempotency_keys_from_before_tokens_belong_to_no_token(fresh_pg):
    init_db(Config(database_url=fresh_pg))
    latest = migrations.MIGRATIONS
    migrations.MIGRATIONS = latest[:2]
    try:
        migrations.migrate()
    finally:
        migrations.MIGRATIONS = latest
    with db.connection_context():
        db.execute_sql("INSERT INTO task (expression, status, created_at, published_at, attempts, publish_count) "
                       "VALUES ('1', 'SCHEDULED', now(), now(), 0, 1)")
        db.execute_sql("INSERT INTO idempotency_key (key, request_hash, task_ids, batch, created_at) "
                       "VALUES ('k', 'h', '1', false, now())")
    assert migrations.migrate() == [v for v, _, _ in latest[2:]]
    with db.connection_context():
        assert db.execute_sql("SELECT id, owner_id FROM task").fetchall() == [(1, 0)]
        assert db.execute_sql("SELECT owner_id, key FROM idempotency_key").fetchall() == [(0, "k")]
        assert "task_owner_id" in {i.name for i in db.get_indexes("task")}
