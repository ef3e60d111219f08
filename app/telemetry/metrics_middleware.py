"""Count and time the messages a worker process handles, and have the dramatiq CLI serve them on /metrics.

Why not Dramatiq's own `dramatiq.middleware.prometheus`: it keeps its multiprocess files in one folder per
machine (`$TMPDIR/dramatiq-prometheus`, cleared by every start), so two dramatiq commands on one host (a
second deployment, the tests, the benchmark) wipe and mix each other's counts; it takes its address from
its own `dramatiq_prom_*` variables instead of dalc's settings; and it lacks what dalc reports beside the
messages: tasks by outcome, evaluation time and the queues' depth. Its message metrics are kept here, in
seconds (as Prometheus names them) rather than milliseconds.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import dramatiq
from dramatiq.common import q_name

from app.telemetry import metrics


class WorkerMetricsMiddleware(dramatiq.Middleware):
    """Measure messages (duration by outcome, in progress, retries, dead letters) in prometheus-client.

    With `port` set, the dramatiq CLI forks one extra process that runs `serve` (a module-level function,
    which the CLI imports by name), serving /metrics for all of its worker processes.
    """

    def __init__(self, *, port: int, serve: Callable[[], int]):
        if not 0 <= port < 65536:
            raise ValueError("port must be between 0 (no metrics server) and 65535")
        self.port = port
        self.serve = serve
        self._local = threading.local()

    @property
    def forks(self):
        return [self.serve] if self.port else []

    def after_worker_boot(self, broker, worker):
        metrics.warm_worker(broker.get_declared_queues())

    def before_process_message(self, broker, message):
        metrics.worker().in_progress.labels(message.queue_name).inc()
        self._local.started = time.perf_counter()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        self._observe(message, "ok" if exception is None else "error")

    def after_skip_message(self, broker, message):
        self._observe(message, "skipped")

    def after_enqueue(self, broker, message, delay):
        # Retries re-enqueue with a delay; the later move from the delay queue (no delay) is not a retry.
        if delay is not None and message.options.get("retries"):
            metrics.worker().message_retries.labels(q_name(message.queue_name)).inc()

    def after_nack(self, broker, message):
        metrics.worker().dead_letters.labels(q_name(message.queue_name)).inc()

    def after_worker_shutdown(self, broker, worker):
        metrics.mark_process_dead(os.getpid())

    def _observe(self, message, outcome: str) -> None:
        started = getattr(self._local, "started", None)
        if started is None:  # skipped before this middleware saw the message
            return
        self._local.started = None
        m = metrics.worker()
        m.in_progress.labels(message.queue_name).dec()
        m.message_duration.labels(message.queue_name, outcome).observe(time.perf_counter() - started)
