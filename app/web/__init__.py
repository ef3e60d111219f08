"""The HTTP API: one blueprint per resource, and problem+json for every error."""
from __future__ import annotations


def init_app(app) -> None:
    """Register the error handlers and every blueprint of the API."""
    from app.web import health, metrics, problems, tasks

    problems.init_app(app)
    app.register_blueprint(tasks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
