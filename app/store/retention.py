"""Expiry: final tasks and Idempotency-Keys are deleted once their retention has passed.

Open tasks (SCHEDULED, RUNNING) are never expired. A purge round deletes what expired in small batches,
each one statement, resting between them. Purgers (sweepers, `dalc purge`) take turns: a round holds an
advisory lock of its own, and a purger that finds it held skips its round, since another is at work.
The task path never takes that lock, and never waits for a purge: it only ever writes open tasks, and a
purge only deletes final ones. (Rows are not taken FOR UPDATE SKIP LOCKED, which would let purgers run
at once: locking a row writes it, and measured, it doubled the WAL of a purge.)

Batched DELETEs rather than a task table partitioned by time, whose expired partitions would be dropped
whole, for what benchmarks/bench_partitioning.py measured (2026-12-04, two cores shared with other
work, load average about 10):
- The task path (INSERT, claim, outcome, read by id) cost PostgreSQL 870 us of CPU per task on the plain
  table and 997 us on one partitioned by ranges of 100,000 ids: a median ratio of 1.02 over six
  interleaved pairs, which ranged from 0.89 to 1.34. No difference this machine can see.
- Dropping a partition of 99,999 tasks took 0.027 s; deleting them in batches of 1,000 took 1.18 s
  (85,000 tasks/s; 217,000/s in another run). At the 1,000 tasks/s dalc sustains that is about 1% of
  one core, which is all partitions could save.
- What partitions would cost instead: a partition may go only once every task in it is final and past
  its retention, so an open task (never expired) would have to be moved out first, a DELETE and an
  INSERT, the very work saved; an existing table has to be rewritten to become partitioned; partitions
  have to be created ahead of the ids; and SQLite, the embedded shape, has none.

Telling "expired" from "never existed": ids come from one sequence and only grow, but not every id
became a task (an INSERT rolled back, a server crash skipping sequence values). So the purge keeps a
*frontier*: before it deletes anything below an id, it records which ids below it never had a row
(table unused_task_id; rare, so tiny). Below the frontier, an id without a row either never was a task
(it is in unused_task_id) or was a task that expired; at or above it, a missing id never was one. The
frontier only moves over ids whose rows were all created before the retention cutoff, which is what
every expired task's row was (a task finishes after it is created). An INSERT still uncommitted when
the frontier passes its id (one that took longer than the retention) counts as unused: should it commit
after all, that task answers "not found" rather than "expired" once it has expired.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterator

from app.config import Config
from app.store.database import db, is_postgres, write_transaction
from app.store.models import CANCELLED, COMPLETED, FAILED, utcnow

# Any constant works; only purgers take it, never the task path. Distinct from the migration lock.
PURGE_LOCK_KEY = 0x64616C64
_FINAL = (COMPLETED, FAILED, CANCELLED)
# How many of the lowest-id final tasks one query reads while looking for the oldest one.
_OLDEST_PAGE = 200
_OLDEST_PAGES = 20


@dataclasses.dataclass(frozen=True)
class Policy:
    """What expires and how a purge paces itself; a retention of None keeps things forever."""

    task_retention: dt.timedelta | None
    key_retention: dt.timedelta | None
    batch_size: int = 1_000
    pause_seconds: float = 0.5

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        """Build the policy from DALC_TASK_RETENTION, DALC_IDEMPOTENCY_RETENTION and DALC_PURGE_*."""
        return cls(config.task_retention or None, config.idempotency_retention or None,
                   config.purge_batch_size, config.purge_pause_seconds)


@dataclasses.dataclass
class Round:
    """What one purge round did."""

    at: dt.datetime
    tasks: int = 0
    keys: int = 0
    seconds: float = 0.0
    # False when the round ran out of time (or was stopped) with expired rows left.
    caught_up: bool = True
    # True when another purger held the lock: this round did nothing.
    skipped: bool = False
    oldest_final_finished_at: dt.datetime | None = None

    @property
    def oldest_final_age(self) -> dt.timedelta | None:
        """The age, at the end of the round, of the oldest final task still kept."""
        if self.oldest_final_finished_at is None:
            return None
        return self.at + dt.timedelta(seconds=self.seconds) - self.oldest_final_finished_at


@dataclasses.dataclass(frozen=True)
class Totals:
    """What every purge so far did, across processes (kept in the database)."""

    tasks_expired: int
    keys_expired: int
    rounds: int
    last_round_at: dt.datetime | None
    last_round_seconds: float | None
    oldest_final_age_seconds: float | None


def purge(policy: Policy, *, budget_seconds: float | None = None,
          stopping: Callable[[], bool] = lambda: False) -> Round:
    """Delete expired tasks and keys in batches until none is left, the budget is spent or `stopping()`."""
    started = time.monotonic()
    result = Round(at=utcnow())

    def more_time() -> bool:
        return not stopping() and (budget_seconds is None or time.monotonic() - started < budget_seconds)

    def drain(batch: Callable[[], int]) -> int:
        deleted = 0
        while True:
            n = batch()
            deleted += n
            if n < policy.batch_size:
                return deleted
            if not more_time():
                result.caught_up = False
                return deleted
            time.sleep(policy.pause_seconds)  # let the task path have the database between batches

    with db.connection_context(), _round_lock() as locked:
        if not locked:
            result.skipped = True
            return result
        if policy.task_retention is not None:
            cutoff = result.at - policy.task_retention
            frontier = advance_frontier(cutoff)
            for status in _FINAL:
                cursor = [0]  # each batch starts past the last id the previous one deleted

                def batch(status=status, cursor=cursor) -> int:
                    n, last = delete_expired_tasks(status, cutoff, below=frontier, after=cursor[0],
                                                   limit=policy.batch_size)
                    cursor[0] = last or cursor[0]
                    return n

                result.tasks += drain(batch)
                if not result.caught_up:
                    break
        if policy.key_retention is not None and result.caught_up:
            key_cutoff = result.at - policy.key_retention
            result.keys = drain(lambda: delete_expired_keys(key_cutoff, limit=policy.batch_size))
        result.oldest_final_finished_at = oldest_final_finished_at()
        result.seconds = time.monotonic() - started
        # Once per round, not per batch: purgers working together would queue on this one row.
        p = db.param
        db.execute_sql(
            f"UPDATE purge_state SET tasks_expired = tasks_expired + {p}, keys_expired = keys_expired + {p}, "
            f"rounds = rounds + 1, last_round_at = {p}, last_round_seconds = {p}, oldest_final_finished_at = {p} "
            "WHERE id = 1",
            [result.tasks, result.keys, result.at, result.seconds, result.oldest_final_finished_at],
        )
    return result


@contextlib.contextmanager
def _round_lock() -> Iterator[bool]:
    """Hold the purgers' lock for the block if no other purger does; yield whether it is held.

    A session lock, so that it spans the round's many transactions; it goes with the connection if
    the process dies. SQLite serialises writers by itself.
    """
    if not is_postgres():
        yield True
        return
    locked = db.execute_sql("SELECT pg_try_advisory_lock(%s)", (PURGE_LOCK_KEY,)).fetchone()[0]
    try:
        yield locked
    finally:
        if locked:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (PURGE_LOCK_KEY,))


def advance_frontier(cutoff: dt.datetime) -> int:
    """Move the task id frontier up to the first task created since `cutoff`; return the frontier.

    Only the purger holding the round's lock calls it.
    """
    p = db.param
    with write_transaction():
        frontier = db.execute_sql("SELECT task_id_frontier FROM purge_state WHERE id = 1").fetchone()[0]
        bound = _first_id_created_since(cutoff, frontier)
        if bound <= frontier:
            return frontier
        gaps = _unused_ids(frontier, bound)
        for start in range(0, len(gaps), 400):  # SQLite takes at most a few thousand parameters
            chunk = gaps[start : start + 400]
            db.execute_sql(
                f"INSERT INTO unused_task_id (first_id, last_id) VALUES {', '.join([f'({p}, {p})'] * len(chunk))}",
                [i for gap in chunk for i in gap],
            )
        db.execute_sql(f"UPDATE purge_state SET task_id_frontier = {p} WHERE id = 1", [bound])
        return bound


def _first_id_created_since(cutoff: dt.datetime, low: int) -> int:
    """Return an id at or above `low` below which every task that can have expired lies.

    A task created at or after the cutoff finished after it, and so did every task with a higher id:
    its id was drawn later. A binary search over the primary key finds such a task in some 30 probes,
    without an index on created_at (which every INSERT would pay for).
    """
    top = db.execute_sql("SELECT max(id) FROM task").fetchone()[0]
    if top is None:
        return low
    # SQLite hands out max(id) + 1: the newest task is never purged there, so no id is handed out twice.
    lo, hi = low, top + 1 if is_postgres() else top
    while lo < hi:
        mid = (lo + hi) // 2
        row = db.execute_sql(
            f"SELECT id, created_at FROM task WHERE id >= {db.param} ORDER BY id LIMIT 1", [mid]
        ).fetchone()
        if row is None or _as_datetime(row[1]) >= cutoff:
            hi = mid
        else:
            lo = min(row[0] + 1, hi)
    return max(lo, low)


def _unused_ids(low: int, high: int) -> list[tuple[int, int]]:
    """Return the ranges of ids in [low, high) that have no row (none below the frontier was purged yet)."""
    p = db.param
    sql = (
        "SELECT prev + 1, id - 1 FROM ("
        " SELECT id, lag(id) OVER (ORDER BY id) AS prev FROM ("
        f"  SELECT id FROM task WHERE id >= {p} AND id < {p} UNION ALL SELECT {p} UNION ALL SELECT {p}"
        " ) AS ids) AS pairs "
        "WHERE id > prev + 1"
    )
    return [tuple(row) for row in db.execute_sql(sql, [low, high, low - 1, high]).fetchall()]


def delete_expired_tasks(status: str, cutoff: dt.datetime, *, below: int, after: int,
                         limit: int) -> tuple[int, int | None]:
    """Delete up to `limit` tasks of a final status that finished before `cutoff`, lowest ids first.

    Only ids between `after` and `below` (the frontier) are looked at. Returns how many were deleted
    and the highest id deleted. An index (the primary key, or (status, id) for a rare status) walks the
    candidates in id order, from where the previous batch stopped.
    """
    p = db.param
    sql = (
        f"DELETE FROM task WHERE id IN (SELECT id FROM task WHERE status = {p} AND id > {p} AND id < {p} "
        f"AND finished_at < {p} ORDER BY id LIMIT {p}) RETURNING id"
    )
    with write_transaction():
        ids = [row[0] for row in db.execute_sql(sql, [status, after, below, cutoff, limit]).fetchall()]
    return len(ids), max(ids, default=None)


def delete_expired_keys(cutoff: dt.datetime, *, limit: int) -> int:
    """Forget up to `limit` Idempotency-Keys created before `cutoff`, oldest first; return how many."""
    p = db.param
    sql = (
        # Keys are per owner: the same key of another token may be younger.
        f"DELETE FROM idempotency_key WHERE (owner_id, key) IN (SELECT owner_id, key FROM idempotency_key "
        f"WHERE created_at < {p} ORDER BY created_at LIMIT {p}) RETURNING key"
    )
    with write_transaction():
        return len(db.execute_sql(sql, [cutoff, limit]).fetchall())


def was_expired(task_id: int) -> bool:
    """Tell whether a task id that has no row belonged to a task that expired (else it never existed)."""
    p = db.param
    sql = (
        f"SELECT s.task_id_frontier > {p} AND COALESCE(("
        f" SELECT u.last_id < {p} FROM unused_task_id AS u WHERE u.first_id <= {p} ORDER BY u.first_id DESC LIMIT 1"
        "), TRUE) FROM purge_state AS s WHERE s.id = 1"
    )
    row = db.execute_sql(sql, [task_id, task_id, task_id]).fetchone()
    return bool(row and row[0])


def oldest_final_finished_at() -> dt.datetime | None:
    """Return when the oldest final task still kept finished, or None if there is none.

    Without an index on finished_at: walk final tasks in id order, that is in order of creation, and
    stop at the first one created after the oldest finish seen so far, since it and every later task
    finished after that.
    """
    p = db.param
    per_status = " UNION ALL ".join(
        f"SELECT * FROM (SELECT id, created_at, finished_at FROM task WHERE status = '{s}' AND id > {p} "
        f"ORDER BY id LIMIT {_OLDEST_PAGE}) AS s{i}"
        for i, s in enumerate(_FINAL)
    )
    oldest, after = None, 0
    for _ in range(_OLDEST_PAGES):
        rows = db.execute_sql(f"SELECT * FROM ({per_status}) AS f ORDER BY id LIMIT {_OLDEST_PAGE}",
                              [after] * len(_FINAL)).fetchall()
        for _id, created, finished in rows:
            if oldest is not None and _as_datetime(created) >= oldest:
                return oldest
            finished = _as_datetime(finished)
            if finished is not None and (oldest is None or finished < oldest):
                oldest = finished
        if len(rows) < _OLDEST_PAGE:
            break
        after = rows[-1][0]
    return oldest


def totals() -> Totals:
    """Return what the purges did so far, as recorded in the database."""
    row = db.execute_sql(
        "SELECT tasks_expired, keys_expired, rounds, last_round_at, last_round_seconds, oldest_final_finished_at "
        "FROM purge_state WHERE id = 1"
    ).fetchone()
    last_at, oldest = _as_datetime(row[3]), _as_datetime(row[5])
    age = (last_at + dt.timedelta(seconds=row[4]) - oldest).total_seconds() if last_at and oldest else None
    return Totals(row[0], row[1], row[2], last_at, row[4], age)


def _as_datetime(value) -> dt.datetime | None:
    if isinstance(value, str):  # SQLite hands back text
        return dt.datetime.fromisoformat(value)
    return value
