"""Prometheus metrics of the web: /metrics, and the measurement of every request behind it."""
from __future__ import annotations

import time

from flask import Blueprint, g, request

from app.telemetry import metrics

bp = Blueprint("metrics", __name__)

# Any other method a client sends is counted as _OTHER, so a client cannot invent label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@bp.get("/metrics")
def scrape():
    """Answer the metrics of every process of this web, in the Prometheus text format."""
    body, content_type = metrics.exposition()
    return body, 200, {"Content-Type": content_type}


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
