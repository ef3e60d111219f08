"""Handing stored tasks to the workers."""
from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import dramatiq
from dramatiq.errors import BrokerConnectionError

from app.telemetry.publishing import producing

log = logging.getLogger(__name__)

# The message option that carries the tasks' expressions beside their ids, so that a worker's first try
# needs no read of the database (app.queue.actors). The database stays the record: the outcome lands only
# where the stored expression is the one evaluated.
EXPRESSIONS_OPTION = "dalc_expressions"
# Past this many characters in one message, expressions stay home and the worker reads them.
MAX_CARRIED_CHARACTERS = 64 * 1024


class Dispatcher:
    """Publish task ids to the evaluate actor, many ids to a message."""

    def __init__(self, actor: dramatiq.Actor, *, chunk_size: int):
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.actor = actor
        self.chunk_size = chunk_size

    def publish(self, ids: Sequence[int], contexts: Sequence | None = None,
                expressions: Sequence[str | None] | None = None) -> list[int]:
        """Publish the ids, each message confirmed by the broker; return the ids it could not take.

        The tasks are already committed, so ids left over are not lost: the caller may try again,
        and the sweeper publishes them once they are overdue. `contexts`, parallel to `ids`, are the
        trace contexts the ids were submitted in (see app.telemetry.publishing); `expressions`, also
        parallel, are the tasks' expressions (None where unknown), carried when a message's are all known
        and short enough together.
        """
        for start in range(0, len(ids), self.chunk_size):
            end = start + self.chunk_size
            options = _carrying(expressions[start:end]) if expressions else {}
            try:
                with producing(self.actor.queue_name, ids[start:end], contexts and contexts[start:end]):
                    self.actor.send_with_options(args=(list(ids[start:end]),), **options)
            except BrokerConnectionError as exc:
                log.warning("broker refused %d task id(s): %s", len(ids) - start, exc)
                return list(ids[start:])
        return []


def _carrying(expressions: Sequence[str | None]) -> dict:
    if None in expressions or sum(map(len, expressions)) > MAX_CARRIED_CHARACTERS:
        return {}
    return {EXPRESSIONS_OPTION: list(expressions)}


class BackgroundPublisher:
    """Publish the ids request threads hand over: in the request's own thread while it is alone, else from
    one thread of this process that gathers them.

    A request that is the only one on its way in its process, with nothing else being published,
    publishes its own tasks before it answers and takes RabbitMQ's confirm after (see `after_answer`):
    no hand-off to another thread, whose wake-up and race with the answering thread for the GIL cost
    0.4 ms of every task's latency at 200 tasks/s here. When requests come together, their ids queue up
    for the background thread and go out together in its next message, so under load one confirmed
    publish carries many tasks instead of one each. While the broker is away the ids wait here and are
    tried again with backoff (requests stop publishing themselves until a publish succeeds again); past
    `max_held` they are left to the sweeper.
    """

    def __init__(self, dispatcher: Dispatcher, *, min_backoff: float = 0.2, max_backoff: float = 5.0,
                 max_held: int = 100_000):
        self.dispatcher = dispatcher
        self.min_backoff, self.max_backoff, self.max_held = min_backoff, max_backoff, max_held
        self._pending: list[int] = []
        self._contexts: list = []  # the trace context each pending id was submitted in, in step with _pending
        self._expressions: list = []  # and its task's expression (None if not given)
        self._wakeup = threading.Condition()
        self._closing = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._inline = 0  # publishes running in request threads now, until confirmed
        self._arriving = 0  # requests between arriving and handing over their ids (see arriving)
        self._inline_allowed = True  # False from a failed publish until one succeeds
        self._thread = threading.Thread(target=self._run, name="dalc-publisher", daemon=True)
        self._thread.start()
        # gunicorn workers exit through sys.exit: publish what is pending before the process ends.
        atexit.register(self.close)

    def submit(self, ids: Sequence[int], trace_context=None, expressions: Sequence[str] | None = None, *,
               after_answer: Callable[[Callable[[], None]], object] | None = None) -> None:
        """Publish ids, or queue them for publishing; their messages join `trace_context`'s trace and may
        carry the tasks' `expressions` (parallel to `ids`).

        `after_answer(work)`, if given, runs `work` once the caller's answer is sent: a publish made here
        then waits for RabbitMQ's confirm in it rather than before the answer.
        """
        broker = self.dispatcher.actor.broker
        if after_answer is not None and self._inline_allowed and not getattr(broker, "has_channel", lambda: True)():
            # Opening this thread's connection takes milliseconds: hand over the ids this time, and open
            # it once the answer is out, so that the next request of this thread can publish itself.
            after_answer(broker.open_channel)
            inline = False
        else:
            with self._wakeup:
                inline = (self._inline_allowed and self._arriving <= 1 and not self._inline and not self._pending
                          and self._idle.is_set())
                if inline:
                    self._inline += 1
        if inline:
            self._publish_inline(ids, trace_context, expressions, after_answer)
            return
        if self._queue(ids, trace_context, expressions):
            # Hand the GIL to the publisher now: else it waits out the switch interval while this thread
            # builds its answer, and that wait (0.7 ms median at 200 tasks/s here) is in every task's
            # latency. A publisher already busy takes these ids when its publish returns: no need.
            time.sleep(0)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Count a request of this process that may submit ids, for the block.

        A request publishes its own ids only while no other is on its way: when requests come together,
        their ids are worth more gathered into one message by the background thread (a publish of its
        own for each request cost 10% of the single-submission throughput here).
        """
        with self._wakeup:
            self._arriving += 1
        try:
            yield
        finally:
            with self._wakeup:
                self._arriving -= 1

    def _publish_inline(self, ids: Sequence[int], trace_context, expressions: Sequence[str] | None,
                        after_answer) -> None:
        deferring = getattr(self.dispatcher.actor.broker, "confirms_deferred", None)
        confirms: list[Callable[[], None]] = []
        try:
            with deferring() if deferring and after_answer else contextlib.nullcontext(confirms) as confirms:
                left = self.dispatcher.publish(ids, [trace_context] * len(ids), expressions)
        except Exception:  # the tasks are committed: whatever went wrong, the background thread retries
            log.exception("publishing %d task id(s) failed; retrying in the background", len(ids))
            left = list(ids)
        settle = functools.partial(self._settle_inline, ids, trace_context, expressions, left, confirms)
        if confirms:
            try:
                after_answer(settle)
                return
            except Exception:
                log.exception("could not defer the confirm; waiting for it now")
        settle()

    def _settle_inline(self, ids, trace_context, expressions, left: list[int], confirms) -> None:
        try:
            for confirm in confirms:
                confirm()
        except Exception as exc:  # not confirmed: publish them all again (a duplicate message is harmless)
            log.warning("RabbitMQ did not confirm %d task id(s) (%s); retrying in the background", len(ids), exc)
            left = list(ids)
        with self._wakeup:
            self._inline -= 1
            if left:
                self._inline_allowed = False
            self._wakeup.notify_all()
        if left:
            self._queue(left, trace_context, expressions and expressions[len(ids) - len(left):])

    def _queue(self, ids: Sequence[int], trace_context, expressions: Sequence[str] | None) -> bool:
        """Queue ids for the background thread; return whether it was waiting for work (now woken)."""
        with self._wakeup:
            was_idle = self._idle.is_set()
            self._pending.extend(ids)
            self._contexts.extend([trace_context] * len(ids))
            self._expressions.extend(expressions if expressions is not None else [None] * len(ids))
            self._idle.clear()
            self._wakeup.notify()
            return was_idle

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every submitted id has been published (or left to the sweeper), `timeout` in all."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._wakeup:
            if not self._wakeup.wait_for(lambda: not self._inline, timeout):
                return False
        return self._idle.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is pending, then stop the thread."""
        with self._wakeup:
            self._closing.set()
            self._wakeup.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = self.min_backoff
        while True:
            with self._wakeup:
                while not self._pending and not self._closing.is_set():
                    self._idle.set()
                    self._wakeup.wait()
                if not self._pending:
                    self._idle.set()
                    return
                ids, self._pending = self._pending, []
                contexts, self._contexts = self._contexts, []
                expressions, self._expressions = self._expressions, []
            try:
                left = self.dispatcher.publish(ids, contexts, expressions)
            except Exception:  # keep the thread alive: the ids are held and tried again
                log.exception("publishing %d task id(s) failed", len(ids))
                left = ids
            self._inline_allowed = not left
            if not left:
                backoff = self.min_backoff
                continue
            with self._wakeup:
                if self._closing.is_set():
                    log.warning("closing with %d unpublished task id(s); the sweeper will publish them", len(left))
                    self._pending, self._contexts, self._expressions = [], [], []
                    continue
                kept = (left + self._pending)[: self.max_held]
                self._contexts = (contexts[len(ids) - len(left):] + self._contexts)[: self.max_held]
                self._expressions = (expressions[len(ids) - len(left):] + self._expressions)[: self.max_held]
                if len(kept) < len(left) + len(self._pending):
                    log.warning("holding %d ids; leaving the rest to the sweeper", len(kept))
                self._pending = kept
            self._closing.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff)
