"""The HTTP API: one blueprint per resource."""
from __future__ import annotations


def init_app(app) -> None:
    """Register every blueprint of the API."""
    from app.api import health, metrics, tasks

    app.register_blueprint(tasks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
