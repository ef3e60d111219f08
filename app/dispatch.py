"""Handing stored tasks to the workers."""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import dramatiq
from dramatiq.errors import BrokerConnectionError

log = logging.getLogger(__name__)


class Dispatcher:
    """Publish task ids to the evaluate actor, many ids to a message."""

    def __init__(self, actor: dramatiq.Actor, *, chunk_size: int):
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.actor = actor
        self.chunk_size = chunk_size

    def publish(self, ids: Sequence[int]) -> bool:
        """Publish the ids and wait for the broker's confirms; return False if it could not take them all.

        The tasks are already committed, so a failed publish loses nothing: the sweeper publishes
        them again once they are overdue.
        """
        try:
            for start in range(0, len(ids), self.chunk_size):
                self.actor.send(list(ids[start : start + self.chunk_size]))
        except BrokerConnectionError as exc:
            log.warning("broker refused %d task id(s); the sweeper will publish them: %s", len(ids), exc)
            return False
        return True


class BackgroundPublisher:
    """Publish ids handed over by request threads from one thread of this process.

    A request answers as soon as its tasks are committed; it does not wait for the broker's confirm.
    Ids that arrive while a publish is in flight go out together in the next message, so under load
    one confirmed publish carries many tasks instead of one each.
    """

    # After the broker refused, wait this long before trying again (the sweeper covers the gap).
    BACKOFF_SECONDS = 1.0

    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self._pending: list[int] = []
        self._wakeup = threading.Condition()
        self._closing = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="dalc-publisher", daemon=True)
        self._thread.start()

    def submit(self, ids: Sequence[int]) -> None:
        """Queue ids for publishing and return at once."""
        with self._wakeup:
            self._pending.extend(ids)
            self._idle.clear()
            self._wakeup.notify()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted id has been published (or dropped for the sweeper)."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is pending, then stop the thread."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._pending and not self._closing:
                    self._idle.set()
                    self._wakeup.wait()
                if not self._pending:
                    self._idle.set()
                    return
                ids, self._pending = self._pending, []
            if not self.dispatcher.publish(ids):
                threading.Event().wait(self.BACKOFF_SECONDS)
