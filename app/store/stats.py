"""What the dashboard shows of the tasks: submitted and finished over the last minutes, failures, open tasks.

A few aggregate statements, cheap enough to run every few seconds under load: the window's tasks are
found through the primary key (ids grow with created_at), so no index is added to the task path.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter

from app.store.database import db, is_postgres
from app.store.models import COMPLETED, FAILED, OPEN_STATUSES, utcnow

WINDOW_SECONDS = 300
BUCKET_SECONDS = 5
# A task counts as finished in the window when it was submitted at most this long before the window;
# looking further back would scan more of the table at every refresh.
LOOKBACK_SECONDS = 60
# Submit-to-finish latency is counted in these bins (seconds), and its percentiles estimated from them
# by linear interpolation, as Prometheus does with histograms; the last bin is open-ended.
LATENCY_BOUNDS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 60, 120, 300)


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


def activity(now: dt.datetime | None = None) -> Activity:
    """Count the window's tasks by bucket of time; the bucket still filling is left out."""
    now = now or utcnow()
    end = _epoch_of(now) // BUCKET_SECONDS * BUCKET_SECONDS
    since = end - WINDOW_SECONDS
    count = WINDOW_SECONDS // BUCKET_SECONDS
    first_id = _last_id_before(_datetime_of(since - LOOKBACK_SECONDS))
    bounds = [_datetime_of(since), _datetime_of(end)]

    submitted = [0] * count
    for bucket, n in _submitted(first_id, since, bounds):
        if 0 <= bucket < count:  # floating point may put a task on the very edge outside
            submitted[bucket] += n
    finished, failed = [0] * count, [0] * count
    histograms = [[0] * (len(LATENCY_BOUNDS) + 1) for _ in range(count)]
    failures: Counter[str] = Counter()
    for bucket, status, error_code, bin_, n in _finished(first_id, since, bounds):
        if not 0 <= bucket < count:
            continue
        finished[bucket] += n
        histograms[bucket][bin_] += n
        if status == FAILED:
            failed[bucket] += n
            failures[error_code or "unknown"] += n

    buckets = [
        Bucket(
            start=_datetime_of(since + i * BUCKET_SECONDS),
            submitted=submitted[i],
            finished=finished[i],
            failed=failed[i],
            latency_p50=quantile(0.5, histograms[i]),
            latency_p95=quantile(0.95, histograms[i]),
        )
        for i in range(count)
    ]
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


def _bucket(epoch_sql: str) -> str:
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


def _submitted(first_id: int, since: int, bounds: list[dt.datetime]) -> list[tuple[int, int]]:
    p = db.param
    sql = (
        f"SELECT {_bucket(_epoch('created_at'))} AS bucket, COUNT(*) FROM task "
        f"WHERE id > {p} AND created_at >= {p} AND created_at < {p} GROUP BY 1"
    )
    return db.execute_sql(sql, [since, first_id, *bounds]).fetchall()


def _finished(first_id: int, since: int, bounds: list[dt.datetime]) -> list[tuple[int, str, str, int, int]]:
    p = db.param
    bins = " ".join(f"WHEN latency < {bound} THEN {i}" for i, bound in enumerate(LATENCY_BOUNDS))
    sql = (
        f"SELECT {_bucket('finished')} AS bucket, status, error_code, "
        f"CASE {bins} ELSE {len(LATENCY_BOUNDS)} END AS bin, COUNT(*) FROM ("
        f"SELECT {_epoch('finished_at')} AS finished, {_epoch('finished_at')} - {_epoch('created_at')} AS latency, "
        f"status, error_code FROM task WHERE id > {p} AND finished_at >= {p} AND finished_at < {p} "
        f"AND status IN ('{COMPLETED}', '{FAILED}')"
        ") AS recent GROUP BY 1, 2, 3, 4"
    )
    return db.execute_sql(sql, [since, first_id, *bounds]).fetchall()


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
