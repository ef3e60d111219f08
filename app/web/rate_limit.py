"""DALC_RATE_LIMIT on the task endpoints: per token (per client address with auth off), counted in tasks."""
from __future__ import annotations

import math
import time

import limits
from flask import current_app
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from app.store.database import is_postgres
from app.store.rate_limits import DatabaseStorage
from app.web import auth
from app.web.problems import ProblemError


class RateLimiter:
    """One limit, shared by every process that uses the same storage, counted with `limits`."""

    def __init__(self, limit: str, storage: str):
        self.item = limits.parse(limit)
        if storage == "database":
            # The embedded shape is one process on SQLite: its own memory is the whole truth.
            backend = DatabaseStorage() if is_postgres() else storage_from_string("memory://")
        else:
            backend = storage_from_string(storage)
        # The sliding window counter: no double burst at a window's edge, two counters per client.
        self.strategy = SlidingWindowCounterRateLimiter(backend)
        self.window = self.item.get_expiry()
        self.policy = f"{self.item.amount};w={self.window}"

    def spend(self, key: str, cost: int) -> None:
        """Count `cost` against `key`'s budget, or refuse the request with 429 and count nothing."""
        if self.strategy.hit(self.item, key, cost=cost):
            return
        stats = self.strategy.get_window_stats(self.item, key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise ProblemError(
            429, "rate_limited",
            f"Over the rate limit of {self.item.amount} tasks per {_window_text(self.window)}; "
            f"retry after {retry_after} s.",
            headers={
                "Retry-After": str(retry_after),
                # draft-ietf-httpapi-ratelimit-headers, as most clients read them.
                "RateLimit-Limit": str(self.item.amount),
                "RateLimit-Remaining": str(stats.remaining),
                "RateLimit-Reset": str(retry_after),
                "RateLimit-Policy": self.policy,
            },
        )


def _window_text(seconds: int) -> str:
    return "second" if seconds == 1 else f"{seconds} seconds"


def init_app(app) -> None:
    """Build the limiter DALC_RATE_LIMIT asks for (none when it is unset)."""
    config = app.extensions["dalc"].config
    app.extensions["dalc_rate_limiter"] = (
        RateLimiter(config.rate_limit, config.rate_limit_storage) if config.rate_limit else None
    )


def _limiter() -> RateLimiter | None:
    return current_app.extensions["dalc_rate_limiter"]


def spend_one() -> None:
    """Count one against the caller's budget (every task request; a POST tops it up to its tasks)."""
    limiter = _limiter()
    if limiter is not None:
        limiter.spend(auth.caller().rate_key, 1)


def spend_tasks(count: int) -> None:
    """Count the rest of a POST of `count` tasks, refusing a batch no window could ever hold."""
    limiter = _limiter()
    if limiter is None:
        return
    if count > limiter.item.amount:
        raise ProblemError(
            413, "batch_over_rate_limit",
            f"The list has {count} tasks, more than the rate limit lets through in one "
            f"{_window_text(limiter.window)} ({limiter.item.amount}); send smaller lists.",
        )
    if count > 1:
        limiter.spend(auth.caller().rate_key, count - 1)
