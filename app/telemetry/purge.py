"""What the purge reports: one log line per round, and its totals as Prometheus metrics.

Purges run in sweepers and in `dalc purge` (a CronJob, gone before any scrape), possibly several at
once, so their totals live in the database (app.store.retention) and the web's /metrics reads them
at each scrape: every web process answers the same figures for all purgers.
"""
from __future__ import annotations

import datetime as dt
import logging

import peewee

from app.store import retention

log = logging.getLogger("app.purge")


def report(result: retention.Round) -> None:
    """Log one line for a purge round."""
    if result.skipped:
        log.info("purge round skipped: another purger is at work", extra={"skipped": True})
        return
    age = result.oldest_final_age
    kept = f"the oldest final task kept finished {_human(age.total_seconds())} ago" if age else "no final task kept"
    log.info(
        "purge round: %d task(s) and %d key(s) expired in %.2f s%s; %s",
        result.tasks, result.keys, result.seconds, "" if result.caught_up else " (more left)", kept,
        extra={"tasks_expired": result.tasks, "keys_expired": result.keys,
               "duration_ms": round(result.seconds * 1000, 1), "caught_up": result.caught_up,
               "oldest_final_task_age_seconds": round(age.total_seconds(), 1) if age else None},
    )


class PurgeTotals:
    """A collector that reads the purges' totals from the database at each scrape."""

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from app.store.database import UNAVAILABLE_ERRORS, db

        try:
            with db.connection_context():
                totals = retention.totals()
        except (peewee.PeeweeException, *UNAVAILABLE_ERRORS) as exc:  # the database is away, or not migrated yet
            log.warning("metrics: cannot read the purge totals: %s", exc)
            return
        yield CounterMetricFamily("dalc_tasks_expired",
                                  "Final tasks deleted after DALC_TASK_RETENTION, by every purger.",
                                  value=totals.tasks_expired)
        yield CounterMetricFamily("dalc_idempotency_keys_expired",
                                  "Idempotency-Keys forgotten after DALC_IDEMPOTENCY_RETENTION, by every purger.",
                                  value=totals.keys_expired)
        yield CounterMetricFamily("dalc_purge_rounds", "Purge rounds run, by every purger.", value=totals.rounds)
        if totals.last_round_at is not None:
            yield GaugeMetricFamily("dalc_purge_last_round_timestamp_seconds", "When the last purge round started.",
                                    value=totals.last_round_at.replace(tzinfo=dt.UTC).timestamp())
            yield GaugeMetricFamily("dalc_purge_last_round_duration_seconds", "How long the last purge round took.",
                                    value=totals.last_round_seconds)
        if totals.oldest_final_age_seconds is not None:
            yield GaugeMetricFamily(
                "dalc_oldest_final_task_age_seconds",
                "Age of the oldest final task kept, when the last purge round ended; far above the retention "
                "means the purge does not keep up.",
                value=totals.oldest_final_age_seconds,
            )


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"
