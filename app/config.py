"""dalc's settings: the one place that reads the environment."""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import limits

from app.errors import DalcError

DEFAULT_DATABASE_URL = "sqlite:///dalc.db"


class ConfigError(DalcError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting dalc has, with its default; built once when a process starts."""

    database_url: str = DEFAULT_DATABASE_URL
    # None means the in-process broker (and an in-process worker beside the web).
    broker_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    # A port of its own for the web's /metrics (then answered there only); 0: /metrics on DALC_PORT.
    web_metrics_port: int = 0
    queue_name: str = "dalc"
    queue_type: str = "classic"
    # Database connections each process keeps open at most.
    db_pool_size: int = 20
    # API limits.
    max_expression_length: int = 10_000
    max_batch_size: int = 1_000
    max_body_bytes: int = 16 * 1024 * 1024
    max_wait_seconds: float = 30.0
    default_page_size: int = 50
    max_page_size: int = 500
    # How many task ids one message carries at most: a batch of 1,000 is one message. Batches of 1,000
    # went 9,100-10,200 tasks/s end to end with 100, 15,400-21,500 with 1,000 (README, Performance).
    message_chunk_size: int = 1_000
    # Evaluation bounds (see docs/expressions.md).
    eval_max_seconds: float = 1.0
    eval_max_memory_bytes: int = 64 * 1024 * 1024
    eval_max_result_digits: int = 4_300
    # Retries of transient failures (database or broker away) by the broker.
    max_retries: int = 10
    retry_min_backoff_ms: int = 500
    retry_max_backoff_ms: int = 60_000
    # A task is tried at most this many times before it ends FAILED retries_exhausted.
    max_attempts: int = 5
    # The sweeper re-publishes a task that is not final this long after it was last published.
    sweep_after_seconds: float = 60.0
    sweep_interval_seconds: float = 5.0
    # How long a final task, and an Idempotency-Key, is kept; zero keeps it forever (app/store/retention.py).
    task_retention: dt.timedelta = dt.timedelta(days=7)
    idempotency_retention: dt.timedelta = dt.timedelta(hours=24)
    # The sweeper purges what expired this often (0: never; `dalc purge` still does), in batches of this
    # many rows, resting this long after each so the task path keeps the database's attention.
    purge_interval_seconds: float = 60.0
    purge_batch_size: int = 1_000
    purge_pause_seconds: float = 0.5
    # Embedded mode: worker threads beside the web.
    embedded_worker_threads: int = 4
    # gunicorn, production shape.
    web_workers: int = 2
    web_threads: int = 16
    # dramatiq CLI, production shape (`dalc run`); the Helm chart passes its own.
    worker_processes: int = 2
    worker_threads: int = 8
    # On SIGTERM a worker stops taking messages and finishes the ones in hand for this long; what is
    # still running then is handed back to the broker (unacknowledged), never lost.
    worker_shutdown_seconds: float = 30.0
    # Port of the workers' Prometheus /metrics (one server per dramatiq command, on DALC_HOST); 0: none.
    worker_metrics_port: int = 9191
    # text, json, or auto: text on a terminal, JSON otherwise.
    log_format: str = "auto"
    log_level: str = "INFO"
    # Apply pending schema migrations when the web starts (under an advisory lock).
    migrate_on_start: bool = True
    # required: every task endpoint needs an API token (`dalc tokens create`); off: anyone may call them.
    auth: str = "off"
    # Tasks one token (or, with auth off, one client address) may send, e.g. "200/second"; None: no limit.
    rate_limit: str | None = None
    # Where the counters live: "database" (dalc's PostgreSQL, shared by every process; memory when the
    # database is SQLite) or a `limits` storage URI such as memory:// or redis://host:6379.
    rate_limit_storage: str = "database"

    @property
    def embedded_broker(self) -> bool:
        """Tell whether tasks go through the in-process broker."""
        return self.broker_url is None

    def with_overrides(self, **changes) -> Config:
        """Return a copy with some settings changed (tests and tools use this)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build the configuration from DALC_* variables, failing on the first bad one."""
        env = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            name = "DALC_" + f.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            parse = _PARSERS.get(f.name) or _parser_for(f.type)
            try:
                values[f.name] = parse(raw.strip())
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{name}={mask_password(raw)!r} is not valid: {exc}") from None
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Refuse contradictory settings with a message naming the variable."""
        checks = [
            ("port", 0 < self.port < 65536, "must be between 1 and 65535"),
            ("queue_type", self.queue_type in ("classic", "quorum"), "must be classic or quorum"),
            ("log_format", self.log_format in ("text", "json", "auto"), "must be text, json or auto"),
            ("auth", self.auth in ("required", "off"), "must be required or off"),
            ("worker_metrics_port", 0 <= self.worker_metrics_port < 65536, "must be between 0 and 65535"),
            ("web_metrics_port", 0 <= self.web_metrics_port < 65536, "must be between 0 and 65535"),
            ("web_metrics_port", self.web_metrics_port != self.port, "must differ from DALC_PORT"),
            ("max_batch_size", 1 <= self.max_batch_size <= 10_000, "must be between 1 and 10000"),
            ("max_wait_seconds", 0 <= self.max_wait_seconds <= 300, "must be between 0 and 300"),
            ("default_page_size", 1 <= self.default_page_size <= self.max_page_size,
             "must be between 1 and DALC_MAX_PAGE_SIZE"),
            ("message_chunk_size", 1 <= self.message_chunk_size <= 1_000, "must be between 1 and 1000"),
            ("retry_max_backoff_ms", self.retry_min_backoff_ms <= self.retry_max_backoff_ms,
             "must not be below DALC_RETRY_MIN_BACKOFF_MS"),
            ("max_attempts", self.max_attempts >= 1, "must be at least 1"),
            ("purge_batch_size", 1 <= self.purge_batch_size <= 100_000, "must be between 1 and 100000"),
            ("eval_max_result_digits", 1 <= self.eval_max_result_digits <= 100_000, "must be between 1 and 100000"),
            ("max_expression_length", 1 <= self.max_expression_length <= 1_000_000,
             "must be between 1 and 1000000"),
            # Each gunicorn thread and each dramatiq worker thread keeps a connection, and the process's own
            # threads need a few more: a thread left without one would fail its requests or messages.
            ("db_pool_size", self.db_pool_size >= max(self.web_threads, self.worker_threads) + 4,
             "must be at least DALC_WEB_THREADS + 4 and DALC_WORKER_THREADS + 4"),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ConfigError(f"DALC_{name.upper()}={getattr(self, name)!r} {why}.")


def mask_password(text: str) -> str:
    """Return `text` with the password of every URL in it (`;`-separated) replaced by ***."""
    parts = []
    for part in text.split(";"):
        try:
            url = urlsplit(part)
            password = url.password
        except ValueError:  # not even a URL (a bad port, say): keep nothing after the scheme's user part
            parts.append(re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", part))
            continue
        if password is not None:
            user, _, host = url.netloc.rpartition("@")
            part = url._replace(netloc=f"{user.partition(':')[0]}:***@{host}").geturl()
        parts.append(part)
    return ";".join(parts)


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a finite number, not negative")
    return value


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(raw: str) -> dt.timedelta:
    """Parse `0` or a whole number with one unit: 30s, 90m, 12h, 7d."""
    match = re.fullmatch(r"(\d{1,9})([smhd])", raw.lower())
    if raw == "0":
        return dt.timedelta(0)
    if match is None:
        raise ValueError("expected a duration such as 30s, 90m, 12h or 7d, or 0 for forever")
    return dt.timedelta(seconds=int(match[1]) * _DURATION_UNITS[match[2]])


def _database_url(raw: str) -> str:
    scheme = urlsplit(raw).scheme
    if scheme not in ("sqlite", "postgres", "postgresql", "postgresql+pool", "postgres+pool"):
        raise ValueError("expected postgresql://user:password@host:port/name or sqlite:///path")
    return raw


def _broker_url(raw: str) -> str:
    for part in raw.split(";"):
        if urlsplit(part).scheme not in ("amqp", "amqps"):
            raise ValueError("expected amqp://user:password@host:port/vhost")
    return raw


def _queue_name(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", raw):
        raise ValueError("use letters, digits and _ . : - only")
    return raw


def _rate_limit(raw: str) -> str:
    try:
        items = limits.parse_many(raw)
    except ValueError:
        items = []
    if len(items) != 1:
        raise ValueError("expected one count per period, such as 200/second or 10000/minute")
    if items[0].amount < 1:
        raise ValueError("the count must be at least 1")
    return raw


def _rate_limit_storage(raw: str) -> str:
    if raw != "database" and "://" not in raw:
        raise ValueError("expected database, or a storage URI such as memory:// or redis://host:6379")
    return raw


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _boolean(raw: str) -> bool:
    value = raw.lower()
    if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
        raise ValueError("expected true or false")
    return value in ("1", "true", "yes", "on")


def _parser_for(annotation: str) -> Callable[[str], object]:
    return {"int": _positive_int, "float": _positive_float, "bool": _boolean}.get(annotation, str)


_PARSERS: dict[str, Callable[[str], object]] = {
    "database_url": _database_url,
    "task_retention": _duration,
    "idempotency_retention": _duration,
    "broker_url": _broker_url,
    "queue_name": _queue_name,
    "log_level": _log_level,
    "log_format": str.lower,
    "queue_type": str.lower,
    "auth": str.lower,
    "rate_limit": _rate_limit,
    "rate_limit_storage": _rate_limit_storage,
}
