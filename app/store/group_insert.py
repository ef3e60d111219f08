"""Group commit for new tasks: the tasks of requests that arrive together share one INSERT."""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from app.store.database import UNAVAILABLE_ERRORS, discard_connections
from app.store.errors import StoreUnavailable
from app.store.tasks import Row


class _Pending:
    __slots__ = ("rows", "done", "ids", "error")

    def __init__(self, rows: Sequence[Row]):
        self.rows = rows
        self.done = False
        self.ids: list[int] = []
        self.error: BaseException | None = None


class GroupInserter:
    """Insert the rows of concurrent requests together, led by whichever request thread comes first.

    A request that finds no INSERT in flight runs its own at once (no hand-off, no extra thread).
    Requests that arrive while one is in flight queue up, and the next of them to run takes the whole
    queue into one statement: one round trip and one commit (one WAL flush) for all of them. Measured
    with 16 concurrent writers: PostgreSQL's CPU per task fell from 0.23 to 0.07 ms and the kernel's
    from 0.46 to 0.28 ms. A request's rows always stay in one statement, so a request is atomic; if a
    statement fails, every request in it gets the error (a 503) and none of them is stored. The
    statement runs in the leading request's thread, so its database span joins that request's trace.
    """

    def __init__(self, insert: Callable[[Sequence[Row]], list[int]], *, max_rows: int = 1000,
                 timeout: float = 30.0):
        self._insert = insert
        self.max_rows = max_rows
        self.timeout = timeout
        self._queue: list[_Pending] = []
        self._leading = False
        self._changed = threading.Condition()

    def insert(self, rows: Sequence[Row]) -> list[int]:
        """Insert the rows (with whatever else is queued) and return their ids, in order."""
        mine = _Pending(rows)
        with self._changed:
            self._queue.append(mine)
            if not self._changed.wait_for(lambda: mine.done or not self._leading, self.timeout):
                if mine in self._queue:
                    self._queue.remove(mine)
                # Else a statement holding these rows is in flight and may still commit: the sweeper
                # then publishes those tasks.
                raise StoreUnavailable(f"no answer from the database within {self.timeout:g}s")
            leading = not mine.done
            self._leading = self._leading or leading
        if leading:
            try:
                while not mine.done:
                    self._run_one_statement()
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()
        if isinstance(mine.error, UNAVAILABLE_ERRORS):
            raise StoreUnavailable(str(mine.error)) from mine.error
        if mine.error is not None:
            raise RuntimeError("inserting the tasks failed") from mine.error
        return mine.ids

    def _take(self) -> list[_Pending]:
        with self._changed:
            group, rows = [], 0
            while self._queue and (not group or rows + len(self._queue[0].rows) <= self.max_rows):
                rows += len(self._queue[0].rows)
                group.append(self._queue.pop(0))
            return group

    def _run_one_statement(self) -> None:
        group = self._take()
        try:
            ids = self._insert([row for pending in group for row in pending.rows])
        except BaseException as exc:  # every request of the statement gets it, not only the leader
            if isinstance(exc, UNAVAILABLE_ERRORS):
                discard_connections()
            for pending in group:
                pending.error = exc
            ids = []
        start = 0
        with self._changed:
            for pending in group:
                if pending.error is None:
                    pending.ids = ids[start : start + len(pending.rows)]
                    start += len(pending.rows)
                pending.done = True
            self._changed.notify_all()
