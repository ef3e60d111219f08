"""RFC 9457 problem+json: the one place where errors become HTTP answers."""
from __future__ import annotations

import logging
from http import HTTPStatus

from flask import json, make_response
from werkzeug.exceptions import HTTPException

from app.errors import DalcError
from app.store.database import UNAVAILABLE_ERRORS, discard_connections
from app.store.errors import StoreUnavailable

log = logging.getLogger(__name__)


class ProblemError(DalcError):
    """A request the API refuses, answered as RFC 9457 problem details."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title
        self.errors = errors
        self.headers = headers or {}


RETRY_AFTER_SECONDS = 5


def problem_response(problem: ProblemError):
    """Build the application/problem+json response for a problem."""
    body = {
        "type": f"urn:dalc:problem:{problem.code}",
        "title": problem.title or HTTPStatus(problem.status).phrase,
        "status": problem.status,
        "detail": problem.detail,
        "code": problem.code,
    }
    if problem.errors:
        body["errors"] = problem.errors
    response = make_response(json.dumps(body), problem.status)
    response.headers["Content-Type"] = "application/problem+json"
    response.headers.update(problem.headers)
    return response


def init_app(app) -> None:
    """Answer every error, ours and Werkzeug's, as problem+json; never leak a traceback."""
    app.register_error_handler(ProblemError, problem_response)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_").replace("'", "")
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return problem_response(ProblemError(exc.code or 500, code, exc.description or exc.name, headers=headers))

    def _unavailable(exc: Exception):
        log.warning("dependency unavailable: %s", exc)
        if isinstance(exc, UNAVAILABLE_ERRORS):
            discard_connections()
        return problem_response(ProblemError(
            503,
            "service_unavailable",
            "The service cannot take this request right now; retry after a few seconds.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ))

    for error in (*UNAVAILABLE_ERRORS, StoreUnavailable):
        app.register_error_handler(error, _unavailable)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return problem_response(
            ProblemError(500, "internal_error", "Something went wrong on our side; it has been logged.")
        )
