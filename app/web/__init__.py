"""The HTTP API: one blueprint per resource, and problem+json for every error; the page, dashboard and docs."""
from __future__ import annotations


def init_app(app) -> None:
    """Register the error handlers, the security headers, the rate limiter and every blueprint."""
    from app.web import dashboard, health, metrics, openapi, page, problems, rate_limit, security, tasks

    problems.init_app(app)
    security.init_app(app)
    rate_limit.init_app(app)
    app.register_blueprint(tasks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(page.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(openapi.bp)
