"""Versioned schema migrations, applied by `dalc migrate` and at start-up under a lock."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import peewee
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as migrate_schema

from app.store.database import db, is_postgres

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every dalc process sharing a database.
ADVISORY_LOCK_KEY = 0x64616C63  # "dalc"


class SchemaMigration(peewee.Model):
    version = peewee.IntegerField(primary_key=True)
    name = peewee.CharField(max_length=200)
    applied_at = peewee.DateTimeField(constraints=[peewee.SQL("DEFAULT CURRENT_TIMESTAMP")])

    class Meta:
        database = db
        table_name = "schema_migration"


def _v1_tasks_and_idempotency_keys() -> None:
    # Frozen copies of the models as they were at version 1: later versions change the schema with
    # playhouse.migrate, and this step must keep creating exactly what version 1 created.
    class Task(peewee.Model):
        id = peewee.BigAutoField()
        expression = peewee.TextField()
        status = peewee.CharField(max_length=16)
        result = peewee.TextField(null=True)
        error_code = peewee.CharField(max_length=64, null=True)
        error_message = peewee.TextField(null=True)
        created_at = peewee.DateTimeField()
        started_at = peewee.DateTimeField(null=True)
        finished_at = peewee.DateTimeField(null=True)
        attempts = peewee.IntegerField(default=0)
        published_at = peewee.DateTimeField()
        publish_count = peewee.IntegerField(default=1)
        trace_id = peewee.CharField(max_length=32, null=True)

        class Meta:
            database = db
            table_name = "task"

    class IdempotencyKey(peewee.Model):
        key = peewee.CharField(max_length=255, primary_key=True)
        request_hash = peewee.CharField(max_length=64)
        task_ids = peewee.TextField()
        batch = peewee.BooleanField(default=False)
        created_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "idempotency_key"

    db.create_tables([Task, IdempotencyKey], safe=False)
    # The list endpoint filters by status and pages by id, newest first.
    db.execute_sql("CREATE INDEX task_status_id ON task (status, id)")
    # The sweeper looks only at open tasks, by when they were last published.
    db.execute_sql(
        "CREATE INDEX task_open_published_at ON task (published_at) "
        "WHERE status IN ('SCHEDULED', 'RUNNING')"
    )


def _v2_drop_the_sweepers_own_index() -> None:
    # Every new task and every claim wrote an entry into this index, a fifth of PostgreSQL's work per
    # task under load. The sweeper only ever looks at open tasks, which task_status_id finds as well.
    migrator = SchemaMigrator.from_database(db.obj)
    migrate_schema(migrator.drop_index("task", "task_open_published_at"))


def _v3_task_and_key_expiry() -> None:
    # What the purge (app/store/retention.py) keeps: one row with the task id frontier and its running
    # totals, and the ranges of ids below the frontier that no task ever had (see retention.py).
    db.execute_sql(
        "CREATE TABLE purge_state ("
        " id INTEGER PRIMARY KEY CHECK (id = 1),"
        " task_id_frontier BIGINT NOT NULL,"
        " tasks_expired BIGINT NOT NULL,"
        " keys_expired BIGINT NOT NULL,"
        " rounds BIGINT NOT NULL,"
        " last_round_at TIMESTAMP NULL,"
        " last_round_seconds DOUBLE PRECISION NULL,"
        " oldest_final_finished_at TIMESTAMP NULL)"
    )
    db.execute_sql("INSERT INTO purge_state VALUES (1, 1, 0, 0, 0, NULL, NULL, NULL)")
    db.execute_sql("CREATE TABLE unused_task_id (first_id BIGINT PRIMARY KEY, last_id BIGINT NOT NULL)")
    # Keys expire by age; without this index each purge batch would read the whole key table. Only
    # requests with an Idempotency-Key pay for it, and the task table gets no index at all.
    db.execute_sql("CREATE INDEX idempotency_key_created_at ON idempotency_key (created_at)")


def _v4_tokens_and_task_owners() -> None:
    # Frozen copies, as _v1 does. A token is never deleted, only revoked, so an owner id is never reused.
    class ApiToken(peewee.Model):
        id = peewee.BigAutoField()
        name = peewee.CharField(max_length=100)
        token_hash = peewee.CharField(max_length=64, unique=True)
        created_at = peewee.DateTimeField()
        revoked_at = peewee.DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "api_token"

    class IdempotencyKey(peewee.Model):
        owner_id = peewee.BigIntegerField()
        key = peewee.CharField(max_length=255)
        request_hash = peewee.CharField(max_length=64)
        task_ids = peewee.TextField()
        batch = peewee.BooleanField(default=False)
        created_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "idempotency_key_v3"
            primary_key = peewee.CompositeKey("owner_id", "key")

    db.create_tables([ApiToken], safe=False)
    # One active token per name; a revoked name can be given to a new token.
    db.execute_sql("CREATE UNIQUE INDEX api_token_active_name ON api_token (name) WHERE revoked_at IS NULL")
    # A constant default: PostgreSQL (11+) and SQLite add the column without rewriting the table.
    db.execute_sql("ALTER TABLE task ADD COLUMN owner_id BIGINT NOT NULL DEFAULT 0")
    # Listing a token's tasks, newest first. Partial: with auth off (owner 0) no insert pays for it.
    db.execute_sql("CREATE INDEX task_owner_id ON task (owner_id, id) WHERE owner_id <> 0")
    # Keys become per owner: a new primary key (owner_id, key), so the table is rebuilt; existing keys
    # were made without a token.
    db.create_tables([IdempotencyKey], safe=False)
    db.execute_sql(
        "INSERT INTO idempotency_key_v3 (owner_id, key, request_hash, task_ids, batch, created_at) "
        "SELECT 0, key, request_hash, task_ids, batch, created_at FROM idempotency_key"
    )
    db.execute_sql("DROP TABLE idempotency_key")
    db.execute_sql("ALTER TABLE idempotency_key_v3 RENAME TO idempotency_key")
    # Version 3's index went with the old table; the purge needs it (see _v3).
    db.execute_sql("CREATE INDEX idempotency_key_created_at ON idempotency_key (created_at)")


def _v5_rate_limit_counters() -> None:
    # UNLOGGED: counters are written at every request and worth nothing after a crash, so they skip the
    # WAL (PostgreSQL empties the table after a crash, which lifts every limit for one window).
    unlogged = "UNLOGGED " if is_postgres() else ""
    db.execute_sql(
        f"CREATE {unlogged}TABLE rate_limit (key VARCHAR(255) PRIMARY KEY, count BIGINT NOT NULL, "
        "expires_at DOUBLE PRECISION NOT NULL)"
    )


# Append only: a released version never changes.
MIGRATIONS: list[tuple[int, str, Callable[[], None]]] = [
    (1, "tasks and idempotency keys", _v1_tasks_and_idempotency_keys),
    (2, "drop the sweeper's own index", _v2_drop_the_sweepers_own_index),
    (3, "task and key expiry", _v3_task_and_key_expiry),
    (4, "API tokens, task owners, idempotency keys per owner", _v4_tokens_and_task_owners),
    (5, "rate limit counters", _v5_rate_limit_counters),
]


@contextlib.contextmanager
def _migration_lock():
    """Hold a lock that serialises migrators, so processes starting together do not race."""
    if is_postgres():
        db.execute_sql("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            yield
        finally:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    else:
        # SQLite has no advisory locks; an exclusive transaction serialises writers the same way.
        with db.atomic("EXCLUSIVE"):
            yield


def applied_versions() -> set[int]:
    """Return the versions already applied."""
    if not db.table_exists(SchemaMigration._meta.table_name):
        return set()
    return {row.version for row in SchemaMigration.select(SchemaMigration.version)}


def migrate() -> list[int]:
    """Apply the pending migrations in order and return the versions applied."""
    applied_now = []
    with db.connection_context():
        with _migration_lock():
            db.create_tables([SchemaMigration], safe=True)
            done = applied_versions()
            for version, name, step in MIGRATIONS:
                if version in done:
                    continue
                log.info("applying migration %d: %s", version, name)
                with db.atomic():
                    step()
                    SchemaMigration.create(version=version, name=name)
                applied_now.append(version)
    return applied_now
