"""The process the dramatiq CLI forks beside its workers to serve their /metrics (WorkerMetricsMiddleware)."""
from __future__ import annotations

import functools

from app.config import Config
from app.queue.broker import queue_depths
from app.telemetry import exposition


def serve() -> int:
    """Serve the workers' metrics, with the depth of dalc's queues when RabbitMQ is configured."""
    config = Config.from_env()
    collectors = []
    if config.broker_url:
        collectors.append(exposition.QueueDepth(functools.partial(queue_depths, config.broker_url, config.queue_name)))
    return exposition.serve(config, collectors)
