"""The stored shapes: a task, the idempotency keys that map a client's key to its tasks, and API tokens."""
from __future__ import annotations

import datetime as dt
import json

import peewee

from app.store.database import db

SCHEDULED = "SCHEDULED"
RUNNING = "RUNNING"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
STATUSES = (SCHEDULED, RUNNING, COMPLETED, FAILED, CANCELLED)
FINAL_STATUSES = frozenset((COMPLETED, FAILED, CANCELLED))
OPEN_STATUSES = (SCHEDULED, RUNNING)
# What every new task starts as: the model's defaults, the INSERT and the answer to POST all take it from here.
NEW_TASK = {"status": SCHEDULED, "attempts": 0, "publish_count": 1}
# The error code of a task whose tries ran out (claimed too often, or its message dead-lettered).
RETRIES_EXHAUSTED = "retries_exhausted"
# The owner of what is created while DALC_AUTH=off: no token. Token ids start at 1.
NO_OWNER = 0


def utcnow() -> dt.datetime:
    """Return the current UTC time as the naive datetime the database stores."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class BaseModel(peewee.Model):
    class Meta:
        database = db
        legacy_table_names = False


class Task(BaseModel):
    """One expression to evaluate and what came of it."""

    id = peewee.BigAutoField()
    expression = peewee.TextField()
    status = peewee.CharField(max_length=16, default=NEW_TASK["status"])
    # The JSON text of the value, so integers of any size stay exact.
    result = peewee.TextField(null=True)
    error_code = peewee.CharField(max_length=64, null=True)
    error_message = peewee.TextField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    started_at = peewee.DateTimeField(null=True)
    finished_at = peewee.DateTimeField(null=True)
    attempts = peewee.IntegerField(default=NEW_TASK["attempts"])
    # When the task was last handed to the broker, and how often; the sweeper reads these.
    published_at = peewee.DateTimeField(default=utcnow)
    publish_count = peewee.IntegerField(default=NEW_TASK["publish_count"])
    trace_id = peewee.CharField(max_length=32, null=True)
    # The API token that created the task (NO_OWNER when auth is off); never part of the resource.
    owner_id = peewee.BigIntegerField(default=NO_OWNER)

    class Meta:
        table_name = "task"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def to_dict(self) -> dict:
        """Return the task resource as docs/api.md describes it."""
        return {
            "id": self.id,
            "expression": self.expression,
            "status": self.status,
            "result": json.loads(self.result) if self.result is not None else None,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "created_at": iso_timestamp(self.created_at),
            "started_at": iso_timestamp(self.started_at),
            "finished_at": iso_timestamp(self.finished_at),
            "attempts": self.attempts,
            "trace_id": self.trace_id,
        }


class IdempotencyKey(BaseModel):
    """A client's Idempotency-Key, the hash of the body it came with, and the tasks it created."""

    # Keys are scoped per token: two tokens may use the same key for different requests.
    owner_id = peewee.BigIntegerField(default=NO_OWNER)
    key = peewee.CharField(max_length=255)
    request_hash = peewee.CharField(max_length=64)
    # Comma-separated ids, in the order of the request; "batch" tells a list body from a single one.
    task_ids = peewee.TextField()
    batch = peewee.BooleanField(default=False)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "idempotency_key"
        primary_key = peewee.CompositeKey("owner_id", "key")

    @property
    def ids(self) -> list[int]:
        return [int(part) for part in self.task_ids.split(",")]


class ApiToken(BaseModel):
    """An API token: its name, and the SHA-256 of its secret (the secret itself is never stored)."""

    id = peewee.BigAutoField()
    name = peewee.CharField(max_length=100)
    token_hash = peewee.CharField(max_length=64, unique=True)
    created_at = peewee.DateTimeField(default=utcnow)
    # A revoked token stays, so that its tasks keep an owner no other token can ever be.
    revoked_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "api_token"


def iso_timestamp(value: dt.datetime | str | None) -> str | None:
    """Write a stored timestamp as the API does: ISO 8601, UTC, microseconds."""
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands back text where a raw UPDATE wrote it
        value = dt.datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
