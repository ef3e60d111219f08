"""Waking the requests that wait (`?wait=`) for tasks to become final."""
from __future__ import annotations

import contextlib
import logging
import select
import threading
from collections.abc import Callable, Iterable, Iterator

import psycopg2

log = logging.getLogger(__name__)


class FinalEvents:
    """A registry of threads waiting for particular tasks, woken when those tasks become final."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, set[threading.Event]] = {}

    @contextlib.contextmanager
    def waiting_for(self, task_id: int) -> Iterator[threading.Event]:
        """Register interest in a task for the duration of the block; the event fires when it is final."""
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(task_id, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                waiters = self._waiters.get(task_id)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[task_id]

    def wake(self, ids: Iterable[int]) -> None:
        """Wake every thread waiting for one of these tasks."""
        with self._lock:
            events = [e for i in ids for e in self._waiters.get(i, ())]
        for event in events:
            event.set()

    def wake_all(self) -> None:
        """Wake every waiter, so each re-reads the database (used after a listener reconnects)."""
        with self._lock:
            events = [e for waiters in self._waiters.values() for e in waiters]
        for event in events:
            event.set()


# One per process: workers in the same process (embedded mode) and the PostgreSQL listener feed it.
final_events = FinalEvents()


class PostgresListener(threading.Thread):
    """LISTEN for final tasks on PostgreSQL and wake local waiters; reconnect whenever the link drops."""

    def __init__(self, connect_kwargs: dict, channel: str, events: FinalEvents = final_events,
                 on_lost: Callable[[], None] | None = None):
        super().__init__(name="dalc-final-listener", daemon=True)
        self._connect_kwargs = connect_kwargs
        # Called when the server drops the connection: the process's other connections died with it.
        self._on_lost = on_lost
        self._channel = channel
        self._events = events
        self._stopping = threading.Event()
        self.connected = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._listen()
            except psycopg2.Error as exc:
                log.warning("final-task listener lost its connection (%s); reconnecting", exc)
                if self._on_lost is not None and self.connected.is_set():
                    self._on_lost()
            self.connected.clear()
            self._stopping.wait(1.0)

    def _listen(self) -> None:
        conn = psycopg2.connect(**self._connect_kwargs)
        try:
            conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
            with conn.cursor() as cur:
                cur.execute(f'LISTEN "{self._channel}"')
            self.connected.set()
            # Anything that became final while we were away was missed: let every waiter re-read.
            self._events.wake_all()
            while not self._stopping.is_set():
                if select.select([conn], [], [], 1.0) == ([], [], []):
                    continue
                conn.poll()
                ids = []
                while conn.notifies:
                    payload = conn.notifies.pop(0).payload
                    ids.extend(int(part) for part in payload.split(",") if part)
                if ids:
                    self._events.wake(ids)
        finally:
            conn.close()
