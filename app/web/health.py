"""Liveness and readiness probes."""
from __future__ import annotations

import logging

from flask import Blueprint, current_app

from app.store.database import UNAVAILABLE_ERRORS, db

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Answer 200 while the process can serve requests at all."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    """Answer 200 when the database and the broker are reachable, 503 otherwise."""
    checks = {"database": _database_ok(), "broker": _broker_ok()}
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": {k: "ok" if v else "down" for k, v in checks.items()}}
    return body, 200 if ready else 503, {} if ready else {"Retry-After": "5"}


def _database_ok() -> bool:
    try:
        db.execute_sql("SELECT 1").fetchone()
        return True
    except UNAVAILABLE_ERRORS as exc:
        log.warning("readiness: database unreachable: %s", exc)
        return False


def _broker_ok() -> bool:
    broker = current_app.extensions["dalc"].broker
    connection_of = getattr(type(broker), "connection", None)
    if connection_of is None:  # the in-process broker is always there
        return True
    try:
        broker.connection.process_data_events(time_limit=0)
        return True
    except Exception as exc:  # pika raises many unrelated types for one dead socket
        log.warning("readiness: broker unreachable: %s", exc)
        del broker.connection  # the next probe connects afresh
        return False
