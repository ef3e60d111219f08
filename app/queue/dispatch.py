"""Handing stored tasks to the workers."""
from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Sequence

import dramatiq
from dramatiq.errors import BrokerConnectionError

from app.telemetry.publishing import producing

log = logging.getLogger(__name__)


class Dispatcher:
    """Publish task ids to the evaluate actor, many ids to a message."""

    def __init__(self, actor: dramatiq.Actor, *, chunk_size: int):
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.actor = actor
        self.chunk_size = chunk_size

    def publish(self, ids: Sequence[int], contexts: Sequence | None = None) -> list[int]:
        """Publish the ids, each message confirmed by the broker; return the ids it could not take.

        The tasks are already committed, so ids left over are not lost: the caller may try again,
        and the sweeper publishes them once they are overdue. `contexts`, parallel to `ids`, are the
        trace contexts the ids were submitted in (see app.telemetry.publishing).
        """
        for start in range(0, len(ids), self.chunk_size):
            end = start + self.chunk_size
            try:
                with producing(self.actor.queue_name, ids[start:end], contexts and contexts[start:end]):
                    self.actor.send(list(ids[start:end]))
            except BrokerConnectionError as exc:
                log.warning("broker refused %d task id(s): %s", len(ids) - start, exc)
                return list(ids[start:])
        return []


class BackgroundPublisher:
    """Publish ids handed over by request threads from a few threads of this process.

    A request answers as soon as its tasks are committed; it does not wait for the broker's confirm.
    Ids that arrive while publishes are in flight go out together in the next message, so under load
    one confirmed publish carries many tasks instead of one each. Several threads (each with its own
    channel: Dramatiq keeps one per thread) keep several publishes in flight: RabbitMQ confirms a
    persistent message only once it is on disk (milliseconds here), and with one thread each new id
    waited for the confirm of the message before it. While the broker is away the ids wait here and
    are tried again with backoff; past `max_held` they are left to the sweeper.
    """

    def __init__(self, dispatcher: Dispatcher, *, threads: int = 4, min_backoff: float = 0.2,
                 max_backoff: float = 5.0, max_held: int = 100_000):
        self.dispatcher = dispatcher
        self.min_backoff, self.max_backoff, self.max_held = min_backoff, max_backoff, max_held
        self._pending: list[int] = []
        self._contexts: list = []  # the trace context each pending id was submitted in, in step with _pending
        self._publishing = 0  # threads with ids in hand
        self._backoff, self._retry_at = min_backoff, 0.0  # after a failed publish, no thread tries before _retry_at
        self._wakeup = threading.Condition()
        self._closing = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._threads = [threading.Thread(target=self._run, name=f"dalc-publisher-{n}", daemon=True)
                         for n in range(threads)]
        for thread in self._threads:
            thread.start()
        # gunicorn workers exit through sys.exit: publish what is pending before the process ends.
        atexit.register(self.close)

    def submit(self, ids: Sequence[int], trace_context=None) -> None:
        """Queue ids for publishing and return almost at once; their messages join `trace_context`'s trace."""
        with self._wakeup:
            self._pending.extend(ids)
            self._contexts.extend([trace_context] * len(ids))
            self._idle.clear()
            self._wakeup.notify()
        # Hand the GIL to the publisher now: else it waits out the switch interval while this thread
        # builds its answer, and that wait (0.7 ms median at 200 tasks/s here) is in every task's latency.
        time.sleep(0)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted id has been published (or left to the sweeper)."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is pending, then stop the threads."""
        with self._wakeup:
            self._closing.set()
            self._wakeup.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _take(self) -> tuple[list[int], list] | None:
        """Wait for ids (and out the backoff after a failure) and take them all; None once closing and done."""
        with self._wakeup:
            while not self._closing.is_set():
                wait = self._retry_at - time.monotonic()
                if self._pending and wait <= 0:
                    break
                if not self._pending and not self._publishing:
                    self._idle.set()
                self._wakeup.wait(wait if self._pending else None)
            if not self._pending:
                if not self._publishing:
                    self._idle.set()
                return None
            self._publishing += 1
            ids, self._pending = self._pending, []
            contexts, self._contexts = self._contexts, []
            return ids, contexts

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            ids, contexts = taken
            try:
                left = self.dispatcher.publish(ids, contexts)
            except Exception:  # a bug, not the broker (publish handles that): keep the ids, for the sweeper too
                log.exception("publishing %d task id(s) failed", len(ids))
                left = list(ids)
            with self._wakeup:
                self._publishing -= 1
                if not left:
                    self._backoff, self._retry_at = self.min_backoff, 0.0
                elif self._closing.is_set():
                    log.warning("closing with %d unpublished task id(s); the sweeper will publish them", len(left))
                else:
                    # Every thread waits out one backoff, shared, so an absent broker is not asked by each.
                    kept = (left + self._pending)[: self.max_held]
                    self._contexts = (contexts[len(ids) - len(left):] + self._contexts)[: self.max_held]
                    if len(kept) < len(left) + len(self._pending):
                        log.warning("holding %d ids; leaving the rest to the sweeper", len(kept))
                    self._pending = kept
                    self._retry_at = time.monotonic() + self._backoff
                    self._backoff = min(self._backoff * 2, self.max_backoff)
                    self._wakeup.notify()
                if not self._pending and not self._publishing:
                    self._idle.set()
