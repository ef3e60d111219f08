"""What the store raises on purpose."""
from __future__ import annotations

from app.errors import DalcError


class StoreUnavailable(DalcError):
    """The database cannot be reached right now: transient, worth retrying."""


class IdempotencyConflict(DalcError):
    """The Idempotency-Key was used before with a different body."""
