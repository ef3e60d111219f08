"""Prometheus metrics of the web: /metrics, and the measurement of every request behind it."""
from __future__ import annotations

import datetime as dt
import logging
import time

from flask import Blueprint, abort, current_app, g, request

from app import store
from app.store.database import UNAVAILABLE_ERRORS
from app.store.models import utcnow
from app.telemetry import metrics
from app.telemetry.purge import PurgeTotals

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

# Any other method a client sends is counted as _OTHER, so a client cannot invent label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@bp.get("/metrics")
def scrape():
    """Answer the metrics of every process of this web, in the Prometheus text format."""
    config = current_app.extensions["dalc"].config
    body, content_type = metrics.exposition(
        [OverdueTasks(config.sweep_after_seconds, config.sweep_interval_seconds), PurgeTotals()])
    return body, 200, {"Content-Type": content_type}


@bp.before_app_request
def _keep_metrics_on_their_port():
    """With DALC_WEB_METRICS_PORT set, that port answers /metrics and nothing else, and DALC_PORT the rest.

    SERVER_PORT is the port of the socket the request came in on (gunicorn and Werkzeug both take it
    from the listener, not from the Host header), so a client cannot choose it.
    """
    port = current_app.extensions["dalc"].config.web_metrics_port
    if port:
        rule = request.url_rule
        asks_metrics = rule is not None and rule.endpoint == "metrics.scrape"
        if (request.environ.get("SERVER_PORT") == str(port)) != asks_metrics:
            abort(404)


@bp.before_app_request
def _start_clock():
    g.dalc_started = time.perf_counter()


@bp.after_app_request
def _measure(response):
    started = g.pop("dalc_started", None)
    if started is not None:
        rule = request.url_rule
        method = request.method if request.method in _METHODS else "_OTHER"
        metrics.web().request_duration.labels(
            method, rule.rule if rule is not None else "unmatched", str(response.status_code)
        ).observe(time.perf_counter() - started)
    return response


class OverdueTasks:
    """Count, at each scrape, the open tasks that a working sweeper would have published again by now.

    The sweeper publishes a task again once it has waited DALC_SWEEP_AFTER_SECONDS, so a task that has
    waited twice that (and a sweep interval) means no sweeper runs, or its publishing fails.
    """

    def __init__(self, sweep_after_seconds: float, sweep_interval_seconds: float):
        self.waited = dt.timedelta(seconds=2 * sweep_after_seconds + sweep_interval_seconds)

    def describe(self):
        """The family without its value: what prometheus-client asks of a collector to know its names."""
        from prometheus_client.core import GaugeMetricFamily

        return [GaugeMetricFamily(
            "dalc_tasks_overdue", "Open tasks waiting twice DALC_SWEEP_AFTER_SECONDS since last published.",
            labels=[],
        )]

    def collect(self):
        [family] = self.describe()
        try:
            family.add_metric([], store.count_overdue(older_than=utcnow() - self.waited))
        except UNAVAILABLE_ERRORS as exc:
            log.warning("metrics: cannot count overdue tasks: %s", exc)
        yield family
