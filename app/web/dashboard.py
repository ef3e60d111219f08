"""The dashboard at `/dashboard`, and `/stats`, the JSON it draws: throughput, latency, queues, failures."""
from __future__ import annotations

import threading
import time

from flask import Blueprint, current_app, render_template

from app.queue.depth import queue_depth
from app.store import stats
from app.store.models import iso_timestamp

bp = Blueprint("dashboard", __name__)

# The dashboard asks this often; however many poll, each web process computes the figures at most as often.
REFRESH_SECONDS = 5
CACHE_SECONDS = REFRESH_SECONDS


class _Cache:
    """The last answer of /stats in this process, shared by every request within CACHE_SECONDS, and the
    tracker that remembers the window's complete buckets between answers."""

    def __init__(self):
        self.tracker = stats.Tracker()
        self._lock = threading.Lock()
        self._body: dict | None = None
        self._at = 0.0

    def get(self, compute) -> dict:
        with self._lock:  # concurrent pollers wait for one computation rather than each running theirs
            if self._body is None or time.monotonic() - self._at >= CACHE_SECONDS:
                self._body = compute(self.tracker)
                self._at = time.monotonic()
            return self._body


@bp.get("/dashboard")
def view():
    """Render the dashboard; it fetches /stats itself and refreshes every few seconds."""
    return render_template("dashboard.html", refresh_seconds=REFRESH_SECONDS)


@bp.get("/stats")
def read():
    """Answer the dashboard's figures, computed from the task table and the broker's queue declarations."""
    cache = current_app.extensions.setdefault("dalc.stats_cache", _Cache())
    return cache.get(_compute)


def _compute(tracker: stats.Tracker) -> dict:
    runtime = current_app.extensions["dalc"]
    config = runtime.config
    activity = tracker.activity()
    depth = queue_depth(runtime.broker, config.queue_name, broker_url=config.broker_url)
    return {
        "generated_at": iso_timestamp(activity.generated_at),
        "window_seconds": stats.WINDOW_SECONDS,
        "bucket_seconds": stats.BUCKET_SECONDS,
        "buckets": [
            {
                "start": iso_timestamp(b.start),
                "submitted": b.submitted,
                "finished": b.finished,
                "failed": b.failed,
                "latency_p50_ms": _ms(b.latency_p50),
                "latency_p95_ms": _ms(b.latency_p95),
            }
            for b in activity.buckets
        ],
        "failures": [{"error_code": code, "count": n} for code, n in activity.failures.items()],
        "open_tasks": activity.open_tasks,
        "queue": None if depth is None else {
            "name": config.queue_name,
            "ready": depth.ready,
            "delayed": depth.delayed,
            "dead_letters": depth.dead_letters,
            "workers": depth.workers,
        },
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
