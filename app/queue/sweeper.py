"""The sweeper: re-publishes open tasks idle too long, fails the tasks of dead-lettered messages, and
purges what expired."""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from app import store
from app.queue.broker import DeadLetterQueue
from app.queue.dispatch import Dispatcher
from app.store import retention
from app.store.database import UNAVAILABLE_ERRORS, db, discard_connections
from app.store.models import RETRIES_EXHAUSTED, utcnow
from app.telemetry import purge as purge_report
from app.telemetry.publishing import stored_contexts

log = logging.getLogger(__name__)

BATCH = 1_000
# A purge round started by the sweeper stops after this long, so that sweeping is never held up by a
# large backlog of expired tasks; the next pass goes on where it stopped.
PURGE_ROUND_SECONDS = 10.0


class Sweeper:
    """Publish again open tasks whose last publish is older than `after_seconds`; settle dead letters."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        dead_letters: DeadLetterQueue | None = None,
        *,
        after_seconds: float,
        interval_seconds: float,
        purge_policy: retention.Policy | None = None,
        purge_interval_seconds: float = 0.0,
    ):
        self.dispatcher = dispatcher
        self.dead_letters = dead_letters
        self.after = dt.timedelta(seconds=after_seconds)
        self.interval = interval_seconds
        self.purge_policy = purge_policy
        self.purge_interval = purge_interval_seconds
        self._next_purge = 0.0  # time.monotonic() of the next purge round
        self._stop = threading.Event()

    def sweep_once(self, *, older_than: dt.datetime | None = None) -> int:
        """Publish every overdue open task once; return how many were published."""
        cutoff = older_than or utcnow() - self.after
        published = 0
        with db.connection_context():
            while True:
                due = store.due_for_republish(older_than=cutoff, limit=BATCH)
                if not due:
                    return published
                ids = [task_id for task_id, _count in due]
                # Back into each task's trace.
                left = self.dispatcher.publish(ids, stored_contexts(ids, store.trace_ids))
                published += len(ids) - len(left)
                log.info("sweeper published %d overdue task(s) again", len(ids) - len(left))
                if left:
                    return published

    def settle_dead_letters(self) -> int:
        """Mark FAILED the open tasks of messages the broker gave up on; return how many tasks failed."""
        if self.dead_letters is None:
            return 0
        failed = 0
        with db.connection_context():
            for message, settle in self.dead_letters.take(BATCH):
                ids = list(message.args[0]) if message.args else []
                try:
                    failed += store.fail_open_tasks(
                        ids,
                        RETRIES_EXHAUSTED,
                        "The task could not be processed after every retry (see the worker logs); submit it again.",
                    )
                except BaseException:
                    settle(False)  # back to the dead-letter queue, for the next sweep
                    raise
                settle(True)
        if failed:
            log.warning("sweeper failed %d task(s) whose messages were dead-lettered", failed)
        return failed

    def purge_once(self, *, budget_seconds: float | None = None) -> retention.Round:
        """Run one purge round (log it) and return what it did."""
        result = retention.purge(self.purge_policy, budget_seconds=budget_seconds, stopping=self._stop.is_set)
        purge_report.report(result)
        return result

    def _purge_if_due(self) -> None:
        if self.purge_policy is None or not self.purge_interval or time.monotonic() < self._next_purge:
            return
        result = self.purge_once(budget_seconds=PURGE_ROUND_SECONDS)
        # Behind: go on at the next pass rather than after a whole purge interval.
        self._next_purge = time.monotonic() + (self.purge_interval if result.caught_up else 0.0)

    def run_forever(self) -> None:
        """Sweep every `interval_seconds`, and purge every `purge_interval_seconds`, until stop() is called."""
        while not self._stop.is_set():
            try:
                self.settle_dead_letters()
                self.sweep_once()
                self._purge_if_due()
            except UNAVAILABLE_ERRORS as exc:
                log.warning("sweeper cannot reach the database: %s", exc)
                discard_connections()
            except Exception as exc:  # a broker hiccup must not end the sweeper; the next pass retries
                log.warning("sweep failed, retrying in %ss: %s", self.interval, exc)
            self._stop.wait(self.interval)

    def start_thread(self) -> threading.Thread:
        """Run the sweeper in a daemon thread of this process."""
        thread = threading.Thread(target=self.run_forever, name="dalc-sweeper", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
