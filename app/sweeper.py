"""The sweeper: publishes again every open task that has waited too long since it was last published."""
from __future__ import annotations

import datetime as dt
import logging
import threading

from app import store
from app.db import UNAVAILABLE_ERRORS, db
from app.dispatch import Dispatcher
from app.models import utcnow

log = logging.getLogger(__name__)

BATCH = 1_000


class Sweeper:
    """Find open tasks whose last publish is older than `after_seconds` and publish them again."""

    def __init__(self, dispatcher: Dispatcher, *, after_seconds: float, interval_seconds: float):
        self.dispatcher = dispatcher
        self.after = dt.timedelta(seconds=after_seconds)
        self.interval = interval_seconds
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
                left = self.dispatcher.publish(ids)
                published += len(ids) - len(left)
                log.info("sweeper published %d overdue task(s) again", len(ids) - len(left))
                if left:
                    return published

    def run_forever(self) -> None:
        """Sweep every `interval_seconds` until stop() is called."""
        while not self._stop.is_set():
            try:
                self.sweep_once()
            except UNAVAILABLE_ERRORS as exc:
                log.warning("sweeper cannot reach the database: %s", exc)
            self._stop.wait(self.interval)

    def start_thread(self) -> threading.Thread:
        """Run the sweeper in a daemon thread of this process."""
        thread = threading.Thread(target=self.run_forever, name="dalc-sweeper", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
