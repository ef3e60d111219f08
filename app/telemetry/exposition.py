"""The workers' /metrics: one HTTP server per `dramatiq` command, summing the metrics of its processes."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from app.config import Config
from app.telemetry import metrics
from app.telemetry.logs import setup_logging

log = logging.getLogger(__name__)


def serve(config: Config, collectors: Sequence = ()) -> int:
    """Serve /metrics on DALC_HOST:DALC_WORKER_METRICS_PORT, with `collectors` too, until the process stops."""
    setup_logging(config)
    metrics.worker_multiprocess_dir()

    class Handler(_MetricsHandler):
        extra_collectors = list(collectors)

    try:
        server = ThreadingHTTPServer((config.host, config.worker_metrics_port), Handler)
    except OSError as exc:
        log.error("worker metrics: cannot listen on %s:%d: %s", config.host, config.worker_metrics_port, exc)
        return 1
    server.daemon_threads = True
    log.info("worker metrics on http://%s:%d/metrics", config.host, config.worker_metrics_port)
    server.serve_forever()
    return 0


class QueueDepth:
    """At each scrape, report how many messages wait in dalc's queue, its delay queue and its dead letters."""

    def __init__(self, read_depths: Callable[[], dict[str, int]]):
        self.read_depths = read_depths

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily(
            "dalc_queue_messages", "Messages ready in RabbitMQ, by queue (the queue, .DQ delayed, .XQ dead).",
            labels=["queue"],
        )
        try:
            counts = self.read_depths()
        except Exception as exc:  # pika raises many unrelated types for one unreachable broker
            log.warning("worker metrics: cannot read queue depths: %s", exc)
            counts = {}
        for queue, count in counts.items():
            depth.add_metric([queue], count)
        yield depth
        yield GaugeMetricFamily("dalc_broker_up", "1 if RabbitMQ answered the queue depth query.",
                                value=int(bool(counts)))


class _MetricsHandler(BaseHTTPRequestHandler):
    extra_collectors: list = []

    def do_GET(self):
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(404, "Only /metrics is served here.")
            return
        body, content_type = metrics.exposition(self.extra_collectors)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - the signature is BaseHTTPRequestHandler's
        pass
