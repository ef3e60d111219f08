"""What the store raises on purpose."""
from __future__ import annotations

from app.errors import DalcError


class StoreUnavailable(DalcError):
    """The database cannot be reached right now: transient, worth retrying."""


class IdempotencyConflict(DalcError):
    """The Idempotency-Key was used before with a different body."""


class TasksExpired(DalcError):
    """Tasks an Idempotency-Key created were purged after their retention; the key cannot answer them."""

    def __init__(self, ids: list[int]):
        super().__init__(f"tasks {ids} have expired")
        self.ids = ids


class TokenNameTaken(DalcError):
    """An active token already has this name."""
