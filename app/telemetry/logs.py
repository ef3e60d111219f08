"""Logging: one JSON object per line for machines, or readable lines in a terminal."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
import threading
import time

from opentelemetry import trace

from app.config import Config
from app.telemetry.tracing import hex_ids

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


def _trace_ids() -> dict:
    """Return the active span's trace and span ids, to tie a log line to its trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return hex_ids(context)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: the message, any `extra=` fields, and the active trace's ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="microseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if "trace_id" not in entry:
            entry.update(_trace_ids())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Format a record as a readable line, with any `extra=` fields as key=value after the message."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in _extras(record).items() if v is not None}
        if not fields:
            return line
        first, newline, rest = line.partition("\n")  # keep a traceback below the fields
        return f"{first}  " + " ".join(f"{k}={v}" for k, v in fields.items()) + newline + rest


class OncePerInterval(logging.Filter):
    """Let records of some loggers through at most once per interval each.

    An unreachable OTLP collector makes the exporter warn at every batch; one line a minute says the
    same without burying everything else.
    """

    def __init__(self, prefix: str, interval: float = 60.0):
        super().__init__()
        self.prefix = prefix
        self.interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        now = time.monotonic()
        with self._lock:
            last = self._last.get(record.name)
            if last is not None and now - last < self.interval:
                return False
            self._last[record.name] = now
        return True


class PlainRequestLines(logging.Filter):
    """Strip the terminal colours and the trailing newline from the request lines of Werkzeug's server.

    The embedded shape serves with Werkzeug, which colours every request line that is not a 200 (a 202
    from `POST /tasks` included) for a terminal; inside a JSON line the escapes are noise to search around.
    """

    _ESCAPES = re.compile(r"\x1b\[[0-9;]*m")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "werkzeug":
            record.msg, record.args = self._ESCAPES.sub("", record.getMessage()).rstrip(), ()
        return True


def log_format(config: Config) -> str:
    """Return `json` or `text`: DALC_LOG_FORMAT, where `auto` means text on a terminal and JSON elsewhere."""
    if config.log_format != "auto":
        return config.log_format
    try:
        # File descriptor 2, not sys.stderr: the dramatiq CLI swaps sys.stderr for a pipe in its children.
        return "text" if os.isatty(2) else "json"
    except OSError:
        return "json"


def setup_logging(config: Config) -> None:
    """Send dalc's logs to stderr in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format(config) == "json":
        handler.setFormatter(JsonFormatter())
        handler.addFilter(PlainRequestLines())
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(OncePerInterval("opentelemetry"))
    # No line shows where it was logged from, so skip the stack walk that finds it for every record
    # (the logging HOWTO's "Optimization": a third of a record's cost here).
    logging._srcfile = None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.log_level)
    # pika logs several ERROR lines for every failed connection attempt, each time it tries a broker URL;
    # dalc says once, in its own words, what a broker outage means (app.queue.dispatch, app.web.health, Dramatiq).
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    # Peewee's DEBUG lines are every statement with its parameters: token hashes and every client's
    # expressions. Not even DEBUG writes those.
    logging.getLogger("peewee").setLevel(max(logging.INFO, root.level))
