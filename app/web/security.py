"""Headers that make every answer safe to open in a browser: no framing, no sniffing, no foreign script."""
from __future__ import annotations

from flask import request

# Everything the page, the dashboard and the docs load comes from dalc itself; nothing runs inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
# Swagger UI's stylesheet draws its icons as data: images; only /docs allows them.
_DOCS_POLICY = CONTENT_SECURITY_POLICY + "; img-src 'self' data:"

_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def init_app(app) -> None:
    """Add the security headers to every response, API answers included."""

    @app.after_request
    def _secure(response):
        headers = response.headers
        headers.update(_HEADERS)
        docs = request.path == "/docs" or request.path.startswith("/docs/")
        headers["Content-Security-Policy"] = _DOCS_POLICY if docs else CONTENT_SECURITY_POLICY
        return response
