"""Reading and writing tasks: every state change a task goes through happens here."""
from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence

import peewee

from app.store.database import db, is_postgres, write_transaction
from app.store.errors import IdempotencyConflict, TasksExpired
from app.store.models import (
    CANCELLED,
    COMPLETED,
    FAILED,
    NEW_TASK,
    NO_OWNER,
    OPEN_STATUSES,
    RUNNING,
    SCHEDULED,
    IdempotencyKey,
    Task,
    utcnow,
)
from app.store.notify import final_events

# Where a worker tells web processes that tasks became final (PostgreSQL LISTEN/NOTIFY).
FINAL_CHANNEL = "dalc_task_final"
# pg_notify payloads are limited to 8000 bytes; ids are short, so this many fit with room to spare.
_NOTIFY_IDS_PER_PAYLOAD = 500


@dataclasses.dataclass(frozen=True)
class Idempotency:
    key: str
    request_hash: str
    batch: bool
    # A key created before this is past DALC_IDEMPOTENCY_RETENTION: forgotten, even before a purge
    # deletes it. None remembers keys forever.
    remembered_since: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A task a worker has claimed: what to evaluate, and how often it has been tried."""

    id: int
    expression: str
    attempts: int


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a worker records for one task."""

    id: int
    status: str
    result: str | None = None
    error_code: str | None = None
    error_message: str | None = None


Row = tuple[str, "str | None", int]  # (expression, trace_id, owner_id) of a new task
Stored = tuple[int, dt.datetime]  # (id, created_at) of a task just inserted


def now_sql() -> tuple[str, list]:
    """Return SQL for "now" as the task columns hold it (naive UTC), and the parameters it needs.

    On PostgreSQL every time a task carries comes from the database's clock, when it receives the
    statement: one clock for every web, worker and sweeper process, whichever node each runs on, so a
    task's times are in order and `finished_at - created_at` is its real latency. Embedded (SQLite) dalc
    is one process with one clock already, and SQLite's own keeps milliseconds only: there it is the
    process's.
    """
    if is_postgres():
        return "(statement_timestamp() AT TIME ZONE 'UTC')", []
    return db.param, [utcnow()]


def create_tasks(
    expressions: Sequence[str],
    *,
    owner: int = NO_OWNER,
    idempotency: Idempotency | None = None,
    trace_id: str | None = None,
    insert: Callable[[Sequence[Row]], list[Stored]] | None = None,
) -> tuple[list[Task] | list[NewTask], bool]:
    """Store new SCHEDULED tasks atomically; return them and whether they are new.

    The tasks belong to `owner` (an API token's id). With an idempotency key this owner used before
    (same body), return the tasks it created then instead.
    `insert` stores rows without a key (app.group_insert.GroupInserter.insert shares one statement
    among concurrent requests); by default each call runs its own INSERT.
    """
    rows = [(expression, trace_id, owner) for expression in expressions]
    if idempotency is None:
        # One INSERT is atomic on its own: no BEGIN/COMMIT round trips on the hottest path.
        stored = (insert or insert_rows)(rows)
    else:
        earlier = _tasks_for_key(owner, idempotency)
        if earlier is not None:
            return earlier, False
        try:
            with write_transaction():
                stored = insert_rows(rows)
                _remember_key(owner, idempotency, [task_id for task_id, _ in stored], utcnow())
        except peewee.IntegrityError:
            # Another request with the same key committed first: answer what it created.
            earlier = _tasks_for_key(owner, idempotency)
            if earlier is None:
                raise
            return earlier, False
    # A request's rows are always in one statement, so they share one created_at.
    shape = _SharedShape(stored[0][1], trace_id)
    return [NewTask(task_id, e, shape) for (task_id, _), e in zip(stored, expressions, strict=True)], True


class _SharedShape:
    """The resource of the tasks of one request but for id and expression, built when first asked for.

    One model gives it for the whole request: a model per task (and its to_dict) cost about 25 µs a task,
    a third of the web's work on a batch of 1,000. Built lazily because the request publishes its tasks
    before it writes its answer: building it first put about 30 µs more in every task's latency.
    """

    __slots__ = ("_created_at", "_trace_id", "_shape")

    def __init__(self, created_at: dt.datetime, trace_id: str | None):
        self._created_at, self._trace_id, self._shape = created_at, trace_id, None

    def get(self) -> dict:
        if self._shape is None:
            self._shape = Task(id=0, expression="", created_at=self._created_at, published_at=self._created_at,
                               trace_id=self._trace_id, **NEW_TASK).to_dict()
        return self._shape


class NewTask:
    """A task just stored by create_tasks: its id and expression, and its resource."""

    __slots__ = ("id", "expression", "_shape")

    def __init__(self, task_id: int, expression: str, shape: _SharedShape):
        self.id = task_id
        self.expression = expression
        self._shape = shape

    def to_dict(self) -> dict:
        """Return the task resource, as Task.to_dict() would."""
        return {**self._shape.get(), "id": self.id, "expression": self.expression}


_NEW_TASK_COLUMNS = ", ".join(NEW_TASK)
_NEW_TASK_VALUES = ", ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in NEW_TASK.values())


# Up to this many rows a VALUES list is cheaper to plan than unnest() (0.47 against 0.58 ms for one row
# here, the single submission's case); from 16 rows on the arrays win, and by far for a batch.
_VALUES_MAX_ROWS = 8


def insert_rows(rows: Sequence[Row]) -> list[Stored]:
    """INSERT new SCHEDULED tasks with one statement; return their ids and created_at in the order of `rows`."""
    sql, params, stamp = _insert_statement(rows)
    # Ids come from one sequence in row order; sorting makes the row-to-id mapping explicit. SQLite hands a
    # stored time back as text: there the statement's time is the parameter it was given.
    stored = db.execute_sql(sql, params).fetchall()
    return sorted((r[0], r[1] if stamp is None else stamp) for r in stored)


def _insert_statement(rows: Sequence[Row]) -> tuple[str, list, dt.datetime | None]:
    """Return the INSERT of `rows`, its parameters, and the time it stamps if given as a parameter (SQLite)."""
    # Written as SQL rather than Task.insert_many: building the query costs Peewee about 0.5 ms
    # for one row and grows with every row, and this is the hottest statement of the web.
    columns = f"INSERT INTO task (expression, created_at, published_at, trace_id, owner_id, {_NEW_TASK_COLUMNS}) "
    now, now_params = now_sql()  # no parameters on PostgreSQL
    postgres = is_postgres()
    returning = "RETURNING id, created_at" if postgres else "RETURNING id"
    if postgres and len(rows) > _VALUES_MAX_ROWS:
        # One array per column instead of a VALUES row per task: for 1,000 rows PostgreSQL spent 12 ms of
        # CPU parsing 4,000 parameters, and 5 ms with arrays; building the statement halved here too.
        sql = (
            f"{columns}SELECT e, {now}, {now}, t, o, {_NEW_TASK_VALUES} "
            "FROM unnest(%s::text[], %s::text[], %s::bigint[]) WITH ORDINALITY AS r (e, t, o, n) "
            f"ORDER BY n {returning}"
        )
        params: list = [list(column) for column in zip(*rows, strict=True)]
    else:
        p = db.param
        row = f"({p}, {now}, {now}, {p}, {p}, {_NEW_TASK_VALUES})"
        sql = f"{columns}VALUES {', '.join([row] * len(rows))} {returning}"
        params = []
        for expression, trace_id, owner in rows:
            params += [expression, *now_params, *now_params, trace_id, owner]
    return sql, params, now_params[0] if now_params else None


# No task has this id (the sequence starts at 1): statements about it change nothing.
_NO_TASK = 0


def warm_statements(*, web: bool) -> None:
    """Run on this thread's connection the statements its tasks will run, changing no row.

    A new PostgreSQL backend loads the catalog entries of each table, index and sequence the first time
    a statement uses them: a fresh connection's first INSERT of a task took 0.64 ms against 0.19 for the
    next, and a process's first tasks after a start paid that on each of its threads' connections. The
    web plans its INSERT (EXPLAIN: running it would take an id from the sequence) and reads a task that
    cannot exist; a worker reads and finishes one.
    """
    if not is_postgres():
        return  # SQLite lives in the process: nothing for a server to load
    if web:
        sql, params, _ = _insert_statement([("0", None, NO_OWNER)])
        db.execute_sql(f"EXPLAIN {sql}", params).fetchall()
        get_task(_NO_TASK)
    else:
        read_open([_NO_TASK])
        finish([Outcome(_NO_TASK, COMPLETED, result="0")], started=time.monotonic(), expressions=["0"])


def _remember_key(owner: int, idempotency: Idempotency, ids: list[int], now: dt.datetime) -> None:
    """Store the owner's key with its tasks, taking over a key past its retention; IntegrityError if it is live."""
    p = db.param
    sql = (f"INSERT INTO idempotency_key (owner_id, key, request_hash, task_ids, batch, created_at) "
           f"VALUES ({p}, {p}, {p}, {p}, {p}, {p})")
    params = [owner, idempotency.key, idempotency.request_hash, ",".join(map(str, ids)), idempotency.batch, now]
    if idempotency.remembered_since is None:
        db.execute_sql(sql, params)
        return
    sql += (
        " ON CONFLICT (owner_id, key) DO UPDATE SET request_hash = excluded.request_hash, task_ids = excluded.task_ids,"
        f" batch = excluded.batch, created_at = excluded.created_at WHERE idempotency_key.created_at < {p}"
        " RETURNING key"
    )
    if db.execute_sql(sql, [*params, idempotency.remembered_since]).fetchone() is None:
        raise peewee.IntegrityError(f"Idempotency-Key {idempotency.key!r} is in use")


def _tasks_for_key(owner: int, idempotency: Idempotency) -> list[Task] | None:
    row = IdempotencyKey.get_or_none((IdempotencyKey.owner_id == owner) & (IdempotencyKey.key == idempotency.key))
    if row is None or (idempotency.remembered_since is not None and row.created_at < idempotency.remembered_since):
        return None
    if row.request_hash != idempotency.request_hash or row.batch != idempotency.batch:
        raise IdempotencyConflict(idempotency.key)
    tasks = get_tasks(row.ids)
    if len(tasks) < len(row.ids):
        # The key outlived its tasks (DALC_TASK_RETENTION is the shorter): answering a new task would
        # break the key's promise, answering nothing would hide why.
        found = {t.id for t in tasks}
        raise TasksExpired([i for i in row.ids if i not in found])
    return tasks


# Reads are plain SQL for the same reason as _insert_tasks: Peewee spends about 0.4 ms of CPU building
# a SELECT and its model, four times the cost of the query itself, and reads serve every ?wait= poll.
_COLUMNS = [f.column_name for f in Task._meta.sorted_fields]
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM task"


def _select_tasks(where: str, params: Sequence, suffix: str = "") -> list[Task]:
    cursor = db.execute_sql(f"{_SELECT} WHERE {where} {suffix}", list(params))
    return [Task(**dict(zip(_COLUMNS, row, strict=True))) for row in cursor.fetchall()]


# Reads and cancels take `owner`: None reaches every task (auth off, and the workers); a token's id
# reaches only that token's tasks. Another owner's task is filtered by the same statement that looks
# for the id, so it is answered exactly as a task that does not exist, in the same time.


def _owned(where: str, params: list, owner: int | None) -> tuple[str, list]:
    if owner is None:
        return where, params
    return f"{where} AND owner_id = {db.param}", [*params, owner]


def get_task(task_id: int, *, owner: int | None = None) -> Task | None:
    """Return the task with this id (if `owner` owns it), or None."""
    found = _select_tasks(*_owned(f"id = {db.param}", [task_id], owner))
    return found[0] if found else None


def wait_for_final(task_id: int, timeout: float, *, owner: int | None = None, pushed: bool) -> Task | None:
    """Return the task (if `owner` owns it) once final or `timeout` seconds passed, reading only when woken.

    `pushed`: this process hears of final tasks (LISTEN/NOTIFY, or in-process workers); if not, poll.
    """
    recheck = 1.0 if pushed else 0.2
    deadline = time.monotonic() + timeout
    with final_events.waiting_for(task_id) as event:
        while True:
            task = get_task(task_id, owner=owner)
            remaining = deadline - time.monotonic()
            if task is None or task.is_final or remaining <= 0:
                return task
            db.close()  # hold no pooled connection while idle
            event.wait(min(remaining, recheck))
            event.clear()


def trace_ids(ids: Sequence[int]) -> dict[int, str | None]:
    """Return the trace id each task was created in, by task id."""
    p = db.param
    sql = f"SELECT id, trace_id FROM task WHERE id IN ({', '.join([p] * len(ids))})"
    return dict(db.execute_sql(sql, list(ids)).fetchall()) if ids else {}


def get_tasks(ids: Sequence[int]) -> list[Task]:
    """Return the tasks with these ids, in the order given."""
    if not ids:
        return []
    by_id = {t.id: t for t in _select_tasks(f"id IN ({', '.join([db.param] * len(ids))})", ids)}
    return [by_id[i] for i in ids if i in by_id]


def list_tasks(*, status: str | None, limit: int, before: int | None, owner: int | None = None) -> list[Task]:
    """Return up to `limit` tasks (of `owner`), newest first, with ids below `before`."""
    conditions, params = ["1 = 1"], []
    if owner is not None:
        conditions.append(f"owner_id = {db.param}")
        params.append(owner)
    if status is not None:
        conditions.append(f"status = {db.param}")
        params.append(status)
    if before is not None:
        conditions.append(f"id < {db.param}")
        params.append(before)
    return _select_tasks(" AND ".join(conditions), params, f"ORDER BY id DESC LIMIT {int(limit)}")


def cancel_task(task_id: int, *, owner: int | None = None) -> tuple[Task | None, bool]:
    """Cancel a task (of `owner`) that is not final; return the task and whether this call cancelled it."""
    p = db.param
    now, now_params = now_sql()
    where, params = _owned(f"id = {p} AND status IN {_OPEN_SQL}", [*now_params, task_id], owner)
    changed = _update_final(f"UPDATE task SET status = '{CANCELLED}', finished_at = {now} WHERE {where}", params)
    return get_task(task_id, owner=owner), bool(changed)


# The claim alone commits without waiting for its WAL to reach the disk (about 0.15 ms of a task's latency
# here). Losing it in a database crash loses nothing: the task is open again and its message, not yet
# acknowledged, is retried; the outcome's commit waits for the disk, and with it for the claim's WAL.
_ASYNC_COMMIT = "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit "


def read_open(ids: Iterable[int]) -> list[Claimed]:
    """Return the open tasks among `ids` as a first delivery evaluates them: read, not claimed.

    A message's first delivery writes nothing before its outcome (finish() with `started_at` counts the
    attempt and stamps the start): one statement and one row version fewer per task. `attempts` is the
    count this try makes.
    """
    ids = list(ids)
    p = db.param
    sql = (
        f"SELECT id, expression, attempts + 1 FROM task WHERE id IN ({', '.join([p] * len(ids))}) "
        f"AND status IN {_OPEN_SQL}"
    )
    return [Claimed(*row) for row in db.execute_sql(sql, ids).fetchall()]


def claim(ids: Iterable[int]) -> list[Claimed]:
    """Mark the open tasks among `ids` RUNNING, count the attempt, and return them.

    Workers claim for a message that was delivered before (redelivered by RabbitMQ, or retried): a try
    may have died in it. A task still SCHEDULED then had an unclaimed first try (see read_open), which
    this counts too, so a task that kills its workers ends after DALC_MAX_ATTEMPTS tries all the same.
    A task already RUNNING is claimed again; evaluation is pure, and finish() lets only the first
    outcome land.
    """
    ids = list(ids)
    p = db.param
    now, now_params = now_sql()
    sql = (
        f"UPDATE task SET status = '{RUNNING}', started_at = COALESCE(started_at, {now}), "
        f"attempts = attempts + CASE WHEN status = '{SCHEDULED}' THEN 2 ELSE 1 END "
        f"{_ASYNC_COMMIT if is_postgres() else ''}"
        f"WHERE id IN ({', '.join([p] * len(ids))}) AND status IN {_OPEN_SQL} "
        "RETURNING id, expression, attempts"
    )
    return [Claimed(*row) for row in db.execute_sql(sql, [*now_params, *ids]).fetchall()]


def finish(outcomes: Sequence[Outcome], *, started: float | None = None,
           expressions: Sequence[str] | None = None) -> int:
    """Record final outcomes in one statement, stamping `finished_at` (now_sql); return how many landed.

    Without `started` the tasks were claimed (RUNNING). With it (the time.monotonic() at which this try
    began) they were not claimed (read_open, or carried by their message): the outcome then also counts
    the attempt and stamps `started_at`, for tasks still open, as `finished_at` less the time the try
    took, so that both come from the same clock. `expressions`, parallel to `outcomes`, are what the
    message carried and was evaluated: an outcome lands only where the stored expression is the same.
    A task that is already final (finished by a duplicate message, or cancelled) is left as it is.
    """
    if not outcomes:
        return 0
    p = db.param
    now, now_params = now_sql()
    cast = "::bigint" if is_postgres() else ""
    carried = expressions is not None
    row_sql = f"({p}{cast}, {p}, {p}, {p}, {p}{f', {p}' if carried else ''})"
    params: list = []
    for i, o in enumerate(outcomes):
        params += [o.id, o.status, o.result, o.error_code, o.error_message]
        if carried:
            params.append(expressions[i])
    values = ", ".join([row_sql] * len(outcomes))
    if started is None:
        unclaimed, condition = "", f"task.status = '{RUNNING}'"
    else:
        took = max(0.0, time.monotonic() - started)
        if is_postgres():
            start_sql, start_params = f"{now} - make_interval(secs => {p})", [took]
        else:
            start_sql, start_params = p, [now_params[0] - dt.timedelta(seconds=took)]
        unclaimed = f"attempts = task.attempts + 1, started_at = COALESCE(task.started_at, {start_sql}), "
        condition = f"task.status IN {_OPEN_SQL}"
        params += start_params
    params += now_params
    if carried:
        condition += " AND task.expression = v.expression"
    sql = (
        f"UPDATE task SET {unclaimed}status = v.status, result = v.result, error_code = v.error_code, "
        f"error_message = v.error_message, finished_at = {now} FROM v WHERE task.id = v.id AND {condition}"
    )
    return _update_final(sql, params, with_values=f"v (id, status, result, error_code, error_message"
                                                  f"{', expression' if carried else ''}) "
                                                  f"AS (VALUES {values})")


def fail_open_tasks(ids: Sequence[int], code: str, message: str) -> int:
    """Mark open tasks FAILED with a code (retries exhausted, dead-lettered); return how many."""
    p = db.param
    now, now_params = now_sql()
    sql = (
        f"UPDATE task SET status = '{FAILED}', error_code = {p}, error_message = {p}, finished_at = {now} "
        f"WHERE id IN ({', '.join([p] * len(ids))}) AND status IN {_OPEN_SQL}"
    )
    return _update_final(sql, [code, message, *now_params, *ids])


_OPEN_SQL = "(" + ", ".join(f"'{s}'" for s in OPEN_STATUSES) + ")"


def _update_final(update_sql: str, params: list, *, with_values: str | None = None) -> int:
    """Run an UPDATE that makes tasks final, tell waiters which ones, and return how many changed.

    On PostgreSQL the UPDATE and its NOTIFY are one statement, so one round trip and atomic;
    the notification goes out when it commits, and only for the rows that really changed.
    """
    ctes = [with_values] if with_values else []
    if is_postgres():
        ctes.append(f"u AS ({update_sql} RETURNING task.id)")
        ctes.append(
            "n AS (SELECT pg_notify(%s, string_agg(id::text, ',')) FROM "
            f"(SELECT id, (row_number() OVER ()) / {_NOTIFY_IDS_PER_PAYLOAD} AS g FROM u) AS x GROUP BY g)"
        )
        # The condition on n is always true; referencing n is what makes PostgreSQL run it.
        sql = f"WITH {', '.join(ctes)} SELECT u.id FROM u WHERE (SELECT count(*) FROM n) >= 0"
        ids = [r[0] for r in db.execute_sql(sql, [*params, FINAL_CHANNEL]).fetchall()]
    else:
        prefix = f"WITH {', '.join(ctes)} " if ctes else ""
        ids = [r[0] for r in db.execute_sql(f"{prefix}{update_sql} RETURNING task.id", params).fetchall()]
    final_events.wake(ids)
    return len(ids)


def count_overdue(*, older_than: dt.datetime) -> int:
    """Count the open tasks last published before `older_than`."""
    return Task.select().where(Task.status.in_(OPEN_STATUSES) & (Task.published_at < older_than)).count()


def due_for_republish(*, older_than: dt.datetime, limit: int) -> list[tuple[int, int]]:
    """Take open tasks last published before `older_than`, stamp them published now; return (id, count)."""
    now = peewee.SQL(*now_sql())
    with write_transaction():
        query = (
            Task.select(Task.id)
            .where(Task.status.in_(OPEN_STATUSES) & (Task.published_at < older_than))
            .order_by(Task.published_at)
            .limit(limit)
        )
        if is_postgres():
            # Several sweepers may run at once; each takes different rows.
            query = query.for_update("FOR UPDATE SKIP LOCKED")
        ids = [row.id for row in query]
        if not ids:
            return []
        rows = (
            Task.update(published_at=now, publish_count=Task.publish_count + 1)
            .where(Task.id.in_(ids))
            .returning(Task.id, Task.publish_count)
            .tuples()
            .execute()
        )
        return list(rows)
