"""dalc's Prometheus metrics, and the multiprocess directories that make one scrape target per process kind.

gunicorn and the dramatiq CLI each run several processes. Their metrics go to files in one directory per
process kind (prometheus-client's multiprocess mode), and whichever process answers /metrics sums them.
prometheus_client picks that mode when it is imported, so it is imported here lazily, only after the
directory is chosen; nothing in dalc may import it at module level.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_WORKER_DIR_PREFIX = "dalc-worker-metrics-"

# Latency buckets in seconds: HTTP requests, message processing, and one evaluation (well under 1 s).
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
MESSAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
EVALUATION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


@dataclasses.dataclass(frozen=True)
class WebMetrics:
    request_duration: object
    tasks_accepted: object


@dataclasses.dataclass(frozen=True)
class WorkerMetrics:
    tasks_finished: object
    evaluation_duration: object
    message_duration: object
    message_retries: object
    dead_letters: object
    in_progress: object


def created_once(factory):
    """Cache a function without arguments, like functools.cache, but call it once even when threads race.

    A metric registered twice raises; the first requests of a process arrive on several threads at once.
    """
    lock = threading.Lock()
    made: list = []

    @functools.wraps(factory)
    def get():
        if not made:
            with lock:
                if not made:
                    made.append(factory())
        return made[0]

    return get


@created_once
def web() -> WebMetrics:
    """Return the web's metrics, created on first use (so other process kinds never export them)."""
    from prometheus_client import Counter, Histogram

    return WebMetrics(
        request_duration=Histogram(
            "http_server_request_duration_seconds", "Duration of HTTP requests, by method, route and status.",
            ["http_request_method", "http_route", "http_response_status_code"], buckets=HTTP_BUCKETS,
        ),
        tasks_accepted=Counter("dalc_tasks_accepted", "Tasks stored and queued for evaluation by the web."),
    )


@created_once
def worker() -> WorkerMetrics:
    """Return the workers' metrics, created on first use."""
    from prometheus_client import Counter, Gauge, Histogram

    return WorkerMetrics(
        tasks_finished=Counter(
            "dalc_tasks_finished", "Outcomes recorded by workers, by final status and error code.",
            ["status", "error_code"],
        ),
        evaluation_duration=Histogram(
            "dalc_task_evaluation_duration_seconds", "Time to evaluate one expression.", buckets=EVALUATION_BUCKETS,
        ),
        message_duration=Histogram(
            "dalc_message_duration_seconds", "Time to process one message, by queue and outcome (ok, error, skipped).",
            ["queue", "outcome"], buckets=MESSAGE_BUCKETS,
        ),
        message_retries=Counter("dalc_message_retries", "Messages scheduled again after a failure.", ["queue"]),
        dead_letters=Counter("dalc_messages_dead_lettered", "Messages given up on and dead-lettered.", ["queue"]),
        in_progress=Gauge(
            "dalc_messages_in_progress", "Messages being processed now.", ["queue"], multiprocess_mode="livesum",
        ),
    )


def warm_web() -> None:
    """Create the web's metrics, and the multiprocess files behind them, before the first request."""
    web().request_duration.labels("POST", "/tasks", "202")


def warm_worker(queue_names) -> None:
    """Create the workers' metrics, and the multiprocess files behind them, before the first message."""
    m = worker()
    m.tasks_finished.labels("COMPLETED", "")
    for queue_name in queue_names:
        m.in_progress.labels(queue_name)
        m.message_duration.labels(queue_name, "ok")


def exposition(extra_collectors: Iterable = ()) -> tuple[bytes, str]:
    """Render this process kind's metrics in the Prometheus text format; return (body, content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    if MULTIPROC_ENV in os.environ:
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    if extra_collectors:
        registry = _WithExtra(registry, extra_collectors)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def web_multiprocess_dir() -> str:
    """Give this gunicorn (and the workers it forks) a fresh directory of its own; call it in the master."""
    return _use(tempfile.mkdtemp(prefix="dalc-web-metrics-"))


def worker_multiprocess_dir() -> str:
    """Use the directory of the `dramatiq` command this process belongs to (its parent), and return it.

    The dramatiq CLI runs no dalc code before forking, so its children agree on a directory named after
    the parent's pid and start time: a new command (or a restarted container) starts from zero. Directories
    of commands that are gone are removed here.
    """
    parent = os.getppid()
    path = os.path.join(tempfile.gettempdir(), f"{_WORKER_DIR_PREFIX}{parent}-{_start_time(parent)}")
    _remove_stale_worker_dirs(keep=path)
    return _use(path)


def remove_multiprocess_dir() -> None:
    """Delete this process kind's directory (gunicorn's master, once its workers are gone)."""
    path = os.environ.pop(MULTIPROC_ENV, None)
    if path:
        shutil.rmtree(path, ignore_errors=True)


def mark_process_dead(pid: int) -> None:
    """Drop the live gauges of a process that exited."""
    if MULTIPROC_ENV in os.environ:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def _use(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    os.environ[MULTIPROC_ENV] = path
    return path


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Field 22 (start time); the command name before it may contain spaces, so count after ")".
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def _remove_stale_worker_dirs(*, keep: str) -> None:
    for path in glob.glob(os.path.join(tempfile.gettempdir(), _WORKER_DIR_PREFIX + "*")):
        match = re.fullmatch(r"(\d+)-(\d+)", os.path.basename(path)[len(_WORKER_DIR_PREFIX):])
        if path == keep or match is None:
            continue
        if not _running(int(match[1]), match[2]):
            with contextlib.suppress(OSError):
                shutil.rmtree(path)


def _running(pid: int, started: str) -> bool:
    now = _start_time(pid)
    if now != "0":
        return now == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class _WithExtra:
    """A registry view that adds collectors asked at scrape time (the queue depth)."""

    def __init__(self, registry, collectors):
        self._registry = registry
        self._collectors = list(collectors)

    def collect(self):
        yield from self._registry.collect()
        for collector in self._collectors:
            yield from collector.collect()
