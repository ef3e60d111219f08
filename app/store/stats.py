"""What the dashboard shows of the tasks: submitted and finished over the last minutes, failures, open tasks.

A bucket of time that is complete never changes again (a task is created, and finishes, at the moment it
is written), so a Tracker keeps the window's buckets and each refresh reads only the rows of the buckets
completed since the one before. The rows are found through the primary key (ids grow with created_at):
no index is added to the task path.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter

from app.store.database import db, is_postgres
from app.store.models import COMPLETED, FAILED, OPEN_STATUSES, utcnow

WINDOW_SECONDS = 300
BUCKET_SECONDS = 5
# A bucket is read once it ended this long ago: a row is written a moment after its timestamp is taken.
SETTLE_SECONDS = 1
# A task counts as finished in a bucket when it was submitted at most this long before the bucket;
# looking further back would read more rows at every refresh.
LOOKBACK_SECONDS = 60
# Submit-to-finish latency is counted in these bins (seconds), and its percentiles estimated from them
# by linear interpolation, as Prometheus does with histograms; the last bin is open-ended.
LATENCY_BOUNDS = (
    0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300,
)


@dataclasses.dataclass(frozen=True)
class Bucket:
    """The tasks of one bucket of time: submitted, finished (and of those, failed), and their latency."""

    start: dt.datetime
    submitted: int
    finished: int
    failed: int
    latency_p50: float | None
    latency_p95: float | None


@dataclasses.dataclass(frozen=True)
class Activity:
    """The dashboard's view of the task table at one moment."""

    generated_at: dt.datetime
    buckets: list[Bucket]
    failures: dict[str, int]  # error_code -> tasks that FAILED with it in the window, most first
    open_tasks: dict[str, int]  # SCHEDULED and RUNNING tasks now, however old


@dataclasses.dataclass
class _Counts:
    submitted: int = 0
    first_id: int | None = None  # the smallest id submitted in the bucket
    finished: int = 0
    failed: int = 0
    latencies: list[int] = dataclasses.field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    failures: Counter = dataclasses.field(default_factory=Counter)


class Tracker:
    """The complete buckets of the window, read once each; not thread-safe (its caller holds a lock)."""

    def __init__(self):
        self._counts: dict[int, _Counts] = {}  # bucket start (epoch seconds) -> its counts
        self._end: int | None = None  # the end of the last bucket read
        self._max_id = 0

    def activity(self, now: dt.datetime | None = None) -> Activity:
        """Return the window's activity up to the last settled bucket, reading only what is new."""
        now = now or utcnow()
        end = (_epoch_of(now) - SETTLE_SECONDS) // BUCKET_SECONDS * BUCKET_SECONDS
        since = end - WINDOW_SECONDS
        if self._end is None or self._end < since:
            self._counts, start = {}, since
            scan_from = _last_id_before(_datetime_of(since - LOOKBACK_SECONDS)) + 1
        else:
            start = self._end
            scan_from = self._first_id_since(start - LOOKBACK_SECONDS - BUCKET_SECONDS)
        if start < end:
            self._read(scan_from, start, end)
            self._end = end
        for old in [b for b in self._counts if b < since]:
            del self._counts[old]
        return self._snapshot(now, since)

    def _first_id_since(self, moment: int) -> int:
        # Ids and created_at grow together up to a few milliseconds; a bucket's margin covers that.
        known = [c.first_id for b, c in self._counts.items() if b >= moment and c.first_id is not None]
        return min(known, default=self._max_id + 1)

    def _read(self, scan_from: int, start: int, end: int) -> None:
        bounds = [_datetime_of(start), _datetime_of(end)]
        for bucket, n, first_id, last_id in _submitted(scan_from, start, bounds):
            counts = self._bucket(start + bucket * BUCKET_SECONDS, end)
            if counts is not None:
                counts.submitted += n
                counts.first_id = first_id if counts.first_id is None else min(counts.first_id, first_id)
                self._max_id = max(self._max_id, last_id)
        for bucket, status, error_code, bin_, n in _finished(scan_from, start, bounds):
            counts = self._bucket(start + bucket * BUCKET_SECONDS, end)
            if counts is not None:
                counts.finished += n
                counts.latencies[bin_] += n
                if status == FAILED:
                    counts.failed += n
                    counts.failures[error_code or "unknown"] += n

    def _bucket(self, at: int, end: int) -> _Counts | None:
        if at >= end:  # floating point may put a row on the very edge outside
            return None
        return self._counts.setdefault(at, _Counts())

    def _snapshot(self, now: dt.datetime, since: int) -> Activity:
        buckets, failures = [], Counter()
        for at in range(since, since + WINDOW_SECONDS, BUCKET_SECONDS):
            c = self._counts.get(at) or _Counts()
            buckets.append(Bucket(_datetime_of(at), c.submitted, c.finished, c.failed,
                                  quantile(0.5, c.latencies), quantile(0.95, c.latencies)))
            failures.update(c.failures)
        return Activity(now, buckets, dict(failures.most_common()), _open_tasks())


def quantile(q: float, counts: list[int]) -> float | None:
    """Estimate the q-quantile of latencies counted in LATENCY_BOUNDS' bins; None when there are none."""
    total = sum(counts)
    if not total:
        return None
    rank, below = q * total, 0
    for i, n in enumerate(counts):
        if n and below + n >= rank:
            low = LATENCY_BOUNDS[i - 1] if i else 0.0
            if i == len(LATENCY_BOUNDS):
                return low  # the open-ended bin: its lower bound is all that is known
            return low + (LATENCY_BOUNDS[i] - low) * (rank - below) / n
        below += n
    return LATENCY_BOUNDS[-1]


def _epoch(column: str) -> str:
    """SQL for the seconds since 1970 of a naive UTC timestamp column."""
    if is_postgres():
        return f"EXTRACT(EPOCH FROM {column})::float8"
    return f"((julianday({column}) - 2440587.5) * 86400.0)"


def _bucket_sql(epoch_sql: str) -> str:
    p = db.param
    # CAST truncates in SQLite and rounds in PostgreSQL; FLOOR is only built into the latter.
    expression = f"({epoch_sql} - {p}) / {BUCKET_SECONDS}"
    return f"FLOOR({expression})::int" if is_postgres() else f"CAST({expression} AS INTEGER)"


def _last_id_before(moment: dt.datetime) -> int:
    # Walks the primary key down from the newest task: it reads only the rows newer than `moment`.
    row = db.execute_sql(
        f"SELECT id FROM task WHERE created_at < {db.param} ORDER BY id DESC LIMIT 1", [moment]
    ).fetchone()
    return row[0] if row else 0


def _submitted(scan_from: int, start: int, bounds: list[dt.datetime]) -> list[tuple[int, int, int, int]]:
    p = db.param
    sql = (
        f"SELECT {_bucket_sql(_epoch('created_at'))} AS bucket, COUNT(*), MIN(id), MAX(id) FROM task "
        f"WHERE id >= {p} AND created_at >= {p} AND created_at < {p} GROUP BY 1"
    )
    return db.execute_sql(sql, [start, scan_from, *bounds]).fetchall()


def _finished(scan_from: int, start: int, bounds: list[dt.datetime]) -> list[tuple[int, str, str, int, int]]:
    p = db.param
    bins = " ".join(f"WHEN latency < {bound} THEN {i}" for i, bound in enumerate(LATENCY_BOUNDS))
    sql = (
        f"SELECT {_bucket_sql('finished')} AS bucket, status, error_code, "
        f"CASE {bins} ELSE {len(LATENCY_BOUNDS)} END AS bin, COUNT(*) FROM ("
        f"SELECT {_epoch('finished_at')} AS finished, {_epoch('finished_at')} - {_epoch('created_at')} AS latency, "
        f"status, error_code FROM task WHERE id >= {p} AND finished_at >= {p} AND finished_at < {p} "
        f"AND status IN ('{COMPLETED}', '{FAILED}')"
        ") AS recent GROUP BY 1, 2, 3, 4"
    )
    return db.execute_sql(sql, [start, scan_from, *bounds]).fetchall()


def _open_tasks() -> dict[str, int]:
    # The (status, id) index answers this without reading the table's other rows.
    placeholders = ", ".join([db.param] * len(OPEN_STATUSES))
    rows = db.execute_sql(
        f"SELECT status, COUNT(*) FROM task WHERE status IN ({placeholders}) GROUP BY status", list(OPEN_STATUSES)
    ).fetchall()
    counts = dict.fromkeys(OPEN_STATUSES, 0)
    counts.update(rows)
    return counts


def _epoch_of(moment: dt.datetime) -> int:
    return int(moment.replace(tzinfo=dt.UTC).timestamp())


def _datetime_of(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).replace(tzinfo=None)
