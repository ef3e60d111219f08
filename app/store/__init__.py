"""The task store: the database, its models and migrations, and every SQL statement dalc runs.

The package answers for its task operations (`app.store.tasks`), so callers write `store.get_task(...)`.
"""
from app.store.errors import IdempotencyConflict, StoreUnavailable, TasksExpired, TokenNameTaken
from app.store.tasks import (
    FINAL_CHANNEL,
    Claimed,
    Idempotency,
    Outcome,
    cancel_task,
    claim,
    count_overdue,
    create_tasks,
    due_for_republish,
    fail_open_tasks,
    finish,
    get_task,
    get_tasks,
    insert_rows,
    list_tasks,
    read_open,
    trace_ids,
    wait_for_final,
    warm_statements,
)

__all__ = [
    "FINAL_CHANNEL", "Claimed", "Idempotency", "IdempotencyConflict", "Outcome", "StoreUnavailable",
    "cancel_task", "claim", "count_overdue", "create_tasks", "due_for_republish", "fail_open_tasks", "finish",
    "get_task", "get_tasks", "insert_rows", "list_tasks", "read_open", "trace_ids", "wait_for_final", "TasksExpired",
    "TokenNameTaken", "warm_statements",
]
