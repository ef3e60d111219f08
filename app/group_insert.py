"""Group commit for new tasks: the tasks of requests that arrive together share one INSERT."""
from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Sequence

from app.db import UNAVAILABLE_ERRORS, discard_connections
from app.errors import StoreUnavailable
from app.store import Row

log = logging.getLogger(__name__)


class _Pending:
    __slots__ = ("rows", "context", "done", "ids", "error")

    def __init__(self, rows: Sequence[Row]):
        self.rows = rows
        # The request's context (its trace span among others): the shared INSERT runs in the first one's.
        self.context = contextvars.copy_context()
        self.done = threading.Event()
        self.ids: list[int] = []
        self.error: BaseException | None = None


class GroupInserter:
    """Insert rows handed over by request threads from one thread, many requests to a statement.

    Each INSERT is one round trip and one commit (one WAL flush) however many rows it carries; under
    load that halves PostgreSQL's and the kernel's work per task (measured: 0.69 ms down to 0.35 ms).
    A request's rows always go in the same statement as each other, so a request is still atomic;
    if the statement fails, every request in it gets the error (a 503) and none of them is stored.
    With no concurrency a request waits only for its own INSERT. The statement runs in the context of
    the first request it serves, so its database span joins that request's trace.
    """

    def __init__(self, insert: Callable[[Sequence[Row]], list[int]], *, max_rows: int = 1000,
                 timeout: float = 30.0):
        self._insert = insert
        self.max_rows = max_rows
        self.timeout = timeout
        self._queue: list[_Pending] = []
        self._wakeup = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="dalc-inserter", daemon=True)
        self._thread.start()

    def insert(self, rows: Sequence[Row]) -> list[int]:
        """Insert the rows (in the next shared statement) and return their ids, in order."""
        pending = _Pending(rows)
        with self._wakeup:
            if self._closing:
                raise StoreUnavailable("the process is shutting down")
            self._queue.append(pending)
            self._wakeup.notify()
        if not pending.done.wait(self.timeout):
            # The statement may still commit; the sweeper then publishes those tasks.
            raise StoreUnavailable(f"no answer from the database within {self.timeout:g}s")
        if isinstance(pending.error, UNAVAILABLE_ERRORS):
            raise StoreUnavailable(str(pending.error)) from pending.error
        if pending.error is not None:
            raise RuntimeError("inserting the tasks failed") from pending.error
        return pending.ids

    def close(self, timeout: float = 5.0) -> None:
        """Insert what is queued, then stop the thread."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        self._thread.join(timeout)

    def _take(self) -> list[_Pending] | None:
        with self._wakeup:
            while not self._queue and not self._closing:
                self._wakeup.wait()
            if not self._queue:
                return None
            group, rows = [], 0
            while self._queue and (not group or rows + len(self._queue[0].rows) <= self.max_rows):
                rows += len(self._queue[0].rows)
                group.append(self._queue.pop(0))
            return group

    def _run(self) -> None:
        while (group := self._take()) is not None:
            try:
                ids = group[0].context.run(self._insert, [row for pending in group for row in pending.rows])
            except BaseException as exc:  # handed to every waiting request; this thread must live on
                if isinstance(exc, UNAVAILABLE_ERRORS):
                    discard_connections()
                else:
                    log.exception("inserting %d task(s) failed", sum(len(p.rows) for p in group))
                for pending in group:
                    pending.error = exc
                    pending.done.set()
                continue
            start = 0
            for pending in group:
                pending.ids = ids[start : start + len(pending.rows)]
                start += len(pending.rows)
                pending.done.set()
