"""The database: one Peewee proxy, configured from DALC_DATABASE_URL, with pooled connections."""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

import peewee
from playhouse.db_url import parse as parse_db_url
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

from app.config import Config

log = logging.getLogger(__name__)

db = peewee.DatabaseProxy()

# Errors that mean "the database is away or saturated", as opposed to a bug in a query.
UNAVAILABLE_ERRORS = (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded)


class PooledPostgres(PooledPostgresqlDatabase):
    """A connection pool that trusts its connections instead of pinging one at every checkout.

    Peewee's pool sends `SELECT 1` on each checkout while it holds the database-wide lock, which
    serialises every request of a process behind a round trip. Instead, the first query that finds
    the server gone starts a new generation (discard_connections): every connection opened before
    it is dropped at its next checkout or request (refresh_connection) rather than failing in turn.

    Peewee's pool has no public hook for this, so it overrides the pool's private `_connect`,
    `_is_closed` and `_close_raw`: setup.cfg pins Peewee to the 4.5 series these were written and tested
    against (tests/test_db.py exercises them), to be checked again before widening the range.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generation = 0
        self._born: dict[int, int] = {}  # id(connection) -> the generation it was opened in

    def _connect(self):
        conn = super()._connect()
        self._born.setdefault(id(conn), self.generation)
        return conn

    def _is_closed(self, conn):
        return bool(conn.closed) or self.is_stale(conn)

    def _close_raw(self, conn):
        self._born.pop(id(conn), None)
        return super()._close_raw(conn)

    def is_stale(self, conn) -> bool:
        """Tell whether the connection was opened before the server was last found gone."""
        return self._born.get(id(conn), self.generation) < self.generation


def make_database(config: Config) -> peewee.Database:
    """Build the Peewee database that DALC_DATABASE_URL names."""
    scheme = urlsplit(config.database_url).scheme
    params = parse_db_url(config.database_url, unquote_password=True, unquote_user=True)
    name = params.pop("database")
    if scheme == "sqlite":
        # WAL lets readers run beside the one writer; busy_timeout makes writers queue instead of failing.
        pragmas = {"journal_mode": "wal", "busy_timeout": 10_000, "synchronous": "normal", "foreign_keys": 1}
        return peewee.SqliteDatabase(name, pragmas=pragmas, **params)
    params.setdefault("connect_timeout", 5)
    params.setdefault("application_name", "dalc")
    return PooledPostgres(
        name,
        max_connections=config.db_pool_size,
        stale_timeout=300,
        timeout=10,
        **params,
    )


def init_db(config: Config) -> peewee.Database:
    """Point the shared proxy at the configured database and return it."""
    database = make_database(config)
    db.initialize(database)
    return database


# Each server thread keeps its connection from one request to the next, and each worker thread from one
# message to the next, opened lazily by the first query (so /healthz never needs the database). Peewee's
# usual connect-per-request and close-on-teardown takes its database-wide lock twice per request, which
# measured as the web's largest wait under load. A connection that breaks is dropped by
# discard_connections(), called by the error handlers.


def retire_connections() -> None:
    """Mark every pooled connection opened so far as stale: each is dropped before its next use."""
    if isinstance(db.obj, PooledPostgres):
        db.obj.generation += 1
        db.obj.close_idle()


def discard_connections() -> None:
    """Drop this thread's connection and retire every other one: after one failed, the others likely did too."""
    if isinstance(db.obj, PooledPostgres):
        retire_connections()
        if db.in_transaction():
            db.rollback()
        db.obj.manual_close()
    elif not db.is_closed():
        db.close()


def refresh_connection() -> None:
    """Drop this thread's connection if it was opened before the database was last found gone."""
    if isinstance(db.obj, PooledPostgres) and not db.is_closed() and db.obj.is_stale(db.connection()):
        db.obj.manual_close()


def release_connection(_exc=None) -> None:
    """Hand this thread's connection back to the pool.

    For servers that start a thread per request (the embedded shape's): a thread that ends holding its
    connection leaks it, and the pool, full of them, refuses the next request.
    """
    if not db.is_closed():
        db.close()


def init_app(app) -> None:
    """Check, before each request, that the thread's kept connection is not from before an outage."""
    app.before_request(refresh_connection)


def write_transaction():
    """Open a write transaction that takes SQLite's write lock up front, to avoid lock-upgrade deadlocks."""
    if isinstance(db.obj, peewee.SqliteDatabase):
        return db.atomic("IMMEDIATE")
    return db.atomic()


def reachable() -> bool:
    """Tell whether the database answers a trivial query (readiness)."""
    try:
        db.execute_sql("SELECT 1").fetchone()
        return True
    except UNAVAILABLE_ERRORS as exc:
        log.warning("readiness: database unreachable: %s", exc)
        return False


def is_postgres() -> bool:
    """Tell whether the proxy points at PostgreSQL."""
    return isinstance(db.obj, peewee.PostgresqlDatabase)
