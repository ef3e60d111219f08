"""Who is calling a task endpoint: the API token (DALC_AUTH=required), or anyone (off)."""
from __future__ import annotations

import dataclasses
import threading
import time

from flask import current_app, g, request

from app.store import tokens
from app.store.models import NO_OWNER
from app.web.problems import ProblemError

# A web process remembers a valid token this long, so most requests cost no query for it; a revoked
# token is refused by every process within this time.
TOKEN_CACHE_SECONDS = 5.0
_CACHE_MAX_ENTRIES = 10_000
_REALM = 'Bearer realm="dalc"'


@dataclasses.dataclass(frozen=True)
class Caller:
    """The caller of a request, as the task endpoints need it."""

    # The owner of the tasks it creates, and of its idempotency keys.
    owner: int
    # The owner whose tasks it can read and cancel; None: every task (auth off).
    scope: int | None
    # Whose rate limit the request counts against.
    rate_key: str


class _TokenCache:
    """Recently seen valid tokens, by hash: hash -> (token id, when to look again)."""

    def __init__(self):
        self._entries: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def token_id(self, secret: str) -> int | None:
        digest = tokens.hash_token(secret)
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is not None and entry[1] > now:
            return entry[0]
        # Unknown tokens are never cached: a client sending random ones cannot fill the cache.
        token_id = tokens.active_token_id(secret)
        with self._lock:
            if token_id is None:
                self._entries.pop(digest, None)
            else:
                if len(self._entries) >= _CACHE_MAX_ENTRIES:
                    self._entries.clear()
                self._entries[digest] = (token_id, now + TOKEN_CACHE_SECONDS)
        return token_id


_cache = _TokenCache()


def authenticate() -> None:
    """Identify the caller of a task endpoint (flask.g.dalc_caller), or refuse it with 401."""
    if current_app.extensions["dalc"].config.auth == "off":
        g.dalc_caller = Caller(owner=NO_OWNER, scope=None, rate_key=f"address:{request.remote_addr}")
        return
    header = request.headers.get("Authorization")
    if header is None:
        raise _unauthorized(None, "This endpoint needs an API token: send Authorization: Bearer <token>.")
    scheme, _, secret = header.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise _unauthorized("invalid_request", "Send the token as Authorization: Bearer <token>.")
    token_id = _cache.token_id(secret) if secret.isascii() and len(secret) <= 200 else None
    if token_id is None:
        raise _unauthorized("invalid_token", "The token is not valid, or it was revoked.")
    g.dalc_caller = Caller(owner=token_id, scope=token_id, rate_key=f"token:{token_id}")


def caller() -> Caller:
    """Return the caller that authenticate() identified for this request."""
    return g.dalc_caller


def _unauthorized(error: str | None, detail: str) -> ProblemError:
    # RFC 6750: a request without credentials gets the bare challenge, a bad one says why.
    challenge = _REALM if error is None else f'{_REALM}, error="{error}"'
    return ProblemError(401, "unauthorized", detail, headers={"WWW-Authenticate": challenge})
