"""API tokens: made once, kept only as a hash, found by their hash, revoked by name."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import secrets

import peewee

from app.store.database import db
from app.store.errors import TokenNameTaken
from app.store.models import ApiToken, utcnow

# Recognisable in a leaked-secret scan, and long enough that guessing is hopeless (256 random bits).
PREFIX = "dalc_"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.@-]{1,100}")


@dataclasses.dataclass(frozen=True)
class TokenInfo:
    """What can be shown about a token: everything but its secret."""

    id: int
    name: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def hash_token(token: str) -> str:
    """Return the hex SHA-256 that is stored in place of the token.

    A plain hash is enough: the token is 256 random bits, not a password a person chose, so there is
    nothing for a slow, salted hash to protect against, and every request can afford to check it.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(name: str) -> tuple[TokenInfo, str]:
    """Store a new token under `name`; return it and its secret, which exists nowhere else."""
    secret = PREFIX + secrets.token_urlsafe(32)
    try:
        with db.atomic():
            row = ApiToken.create(name=name, token_hash=hash_token(secret), created_at=utcnow())
    except peewee.IntegrityError:
        raise TokenNameTaken(name) from None
    return _info(row), secret


def list_tokens() -> list[TokenInfo]:
    """Return every token, active and revoked, oldest first."""
    return [_info(row) for row in ApiToken.select().order_by(ApiToken.id)]


def revoke_token(name: str) -> TokenInfo | None:
    """Revoke the active token called `name`; return it, or None if there is none."""
    with db.atomic():
        row = ApiToken.get_or_none((ApiToken.name == name) & ApiToken.revoked_at.is_null())
        if row is None:
            return None
        row.revoked_at = utcnow()
        row.save()
    return _info(row)


def active_token_id(secret: str) -> int | None:
    """Return the id of the active token with this secret, or None."""
    cursor = db.execute_sql(
        f"SELECT id FROM api_token WHERE token_hash = {db.param} AND revoked_at IS NULL", [hash_token(secret)]
    )
    row = cursor.fetchone()
    return row[0] if row else None


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo(id=row.id, name=row.name, created_at=row.created_at, revoked_at=row.revoked_at)
