"""Rate-limit counters in PostgreSQL, as a storage of the `limits` library.

dalc's web runs as several processes in several pods, and the Helm chart ships PostgreSQL and RabbitMQ,
not Redis or Memcached (the shared storages `limits` has). So the counters live in dalc's own database,
in an UNLOGGED table (no WAL: counters are worth nothing after a crash), and every process of every pod
counts against the same rows. `limits` keeps the strategy (the sliding window counter); this class only
answers its storage calls, each in one statement.
"""
from __future__ import annotations

import threading
import time

from limits.storage import Storage
from limits.storage.base import SlidingWindowCounterSupport, TimestampedSlidingWindow

from app.store.database import UNAVAILABLE_ERRORS, db

# Expired counters are deleted by the first request after this many seconds, in each process.
_PURGE_INTERVAL_SECONDS = 60.0


class DatabaseStorage(Storage, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """Counters in the `rate_limit` table: (key, count, expires_at in Unix seconds)."""

    STORAGE_SCHEME = ["dalc+database"]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._next_purge = 0.0
        self._purge_lock = threading.Lock()

    @property
    def base_exceptions(self):
        return UNAVAILABLE_ERRORS

    def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Count `amount` in the current window if the weighted count stays within `limit`, atomically."""
        if amount > limit:
            return False
        self._purge_now_and_then()
        now = time.time()
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        # The share of the previous window that still lies inside the sliding window.
        weight = 1 - ((now - expiry) / expiry) % 1
        p = db.param
        previous = f"COALESCE((SELECT count FROM rate_limit WHERE key = {p}), 0)"
        # The insert of a new window and the increment of an existing one check the same sum; the
        # increment runs under the row's lock, so concurrent requests cannot overshoot together.
        sql = (
            "INSERT INTO rate_limit AS r (key, count, expires_at) "
            f"SELECT {p}, {p}, {p} WHERE floor({p} * {previous}) + {p} <= {p} "
            "ON CONFLICT (key) DO UPDATE SET count = r.count + excluded.count "
            f"WHERE floor({p} * {previous} + r.count) + excluded.count <= {p} "
            "RETURNING count"
        )
        params = [current_key, amount, now + 2 * expiry, weight, previous_key, amount, limit,
                  weight, previous_key, limit]
        return db.execute_sql(sql, params).fetchone() is not None

    def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        """Return the previous window's count and time to live, and the current window's."""
        now = time.time()
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        counts = dict(db.execute_sql(
            f"SELECT key, count FROM rate_limit WHERE key IN ({db.param}, {db.param})", [previous_key, current_key]
        ).fetchall())
        previous_count, current_count = counts.get(previous_key, 0), counts.get(current_key, 0)
        previous_ttl = (1 - ((now - expiry) / expiry) % 1) * expiry if previous_count else 0.0
        current_ttl = (1 - (now / expiry) % 1) * expiry + expiry
        return previous_count, previous_ttl, current_count, current_ttl

    def clear_sliding_window(self, key: str, expiry: int) -> None:
        for window_key in self.sliding_window_keys(key, expiry, time.time()):
            self.clear(window_key)

    # The plain counter calls of a `limits` storage (the fixed window strategy uses them).

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        p = db.param
        sql = (
            f"INSERT INTO rate_limit AS r (key, count, expires_at) VALUES ({p}, {p}, {p}) "
            "ON CONFLICT (key) DO UPDATE SET "
            f"count = CASE WHEN r.expires_at <= {p} THEN excluded.count ELSE r.count + excluded.count END, "
            f"expires_at = CASE WHEN r.expires_at <= {p} THEN excluded.expires_at ELSE r.expires_at END "
            "RETURNING count"
        )
        return db.execute_sql(sql, [key, amount, now + expiry, now, now]).fetchone()[0]

    def get(self, key: str) -> int:
        row = db.execute_sql(
            f"SELECT count FROM rate_limit WHERE key = {db.param} AND expires_at > {db.param}", [key, time.time()]
        ).fetchone()
        return row[0] if row else 0

    def get_expiry(self, key: str) -> float:
        row = db.execute_sql(f"SELECT expires_at FROM rate_limit WHERE key = {db.param}", [key]).fetchone()
        return row[0] if row else time.time()

    def check(self) -> bool:
        try:
            db.execute_sql("SELECT 1 FROM rate_limit LIMIT 1")
            return True
        except UNAVAILABLE_ERRORS:
            return False

    def reset(self) -> int | None:
        return db.execute_sql("DELETE FROM rate_limit").rowcount

    def clear(self, key: str) -> None:
        db.execute_sql(f"DELETE FROM rate_limit WHERE key = {db.param}", [key])

    def _purge_now_and_then(self) -> None:
        now = time.monotonic()
        if now < self._next_purge or not self._purge_lock.acquire(blocking=False):
            return
        try:
            self._next_purge = now + _PURGE_INTERVAL_SECONDS
            db.execute_sql(f"DELETE FROM rate_limit WHERE expires_at <= {db.param}", [time.time()])
        finally:
            self._purge_lock.release()
