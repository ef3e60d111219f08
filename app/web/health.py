"""Liveness and readiness probes."""
from __future__ import annotations

from flask import Blueprint, current_app

from app.queue import broker
from app.store import database
from app.web.problems import RETRY_AFTER_SECONDS

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Answer 200 while the process can serve requests at all."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Answer 200 when the database and the broker are reachable, 503 otherwise."""
    checks = {"database": database.reachable(), "broker": broker.reachable(current_app.extensions["dalc"].broker)}
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": {k: "ok" if v else "down" for k, v in checks.items()}}
    return body, 200 if ready else 503, {} if ready else {"Retry-After": str(RETRY_AFTER_SECONDS)}
