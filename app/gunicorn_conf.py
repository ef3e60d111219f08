"""gunicorn settings for the web, read from the same DALC_* variables as everything else."""
import functools
import os

from app.config import Config
from app.ports import refuse_taken, web_ports
from app.runtime import freeze_startup_objects, warm_up_pool, warm_up_thread
from app.telemetry import metrics, tracing

_config = Config.from_env()

# DALC_PORT, and DALC_WEB_METRICS_PORT if set (/metrics on a port of its own; app/web/metrics.py keeps
# each to its own).
bind = [f"{_config.host}:{port}" for port, _ in web_ports(_config) if port]
workers = _config.web_workers
# gthread, except that a request is read whole in the event loop before a thread takes it (slow clients).
worker_class = "app.gunicorn_worker.BufferingThreadWorker"
threads = _config.web_threads
# Long-polls (`?wait=`) hold a thread up to DALC_MAX_WAIT_SECONDS; keep the worker timeout above it.
timeout = int(_config.max_wait_seconds) + 30
graceful_timeout = 30
keepalive = 5
# Let the kernel spread connections over the workers; without it one gthread worker can take them all.
reuse_port = True
# Each worker touches a heartbeat file at every turn of its loop; on a disk-backed /tmp that was a sixth
# of a web worker's busy time under load (gunicorn's FAQ: "Blocking OS calls"). Memory cannot stall.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
accesslog = None
errorlog = "-"
loglevel = _config.log_level.lower()


def on_starting(server):
    """Refuse a port another program holds (app/ports.py: reuse_port would share it), then give this web's
    processes one fresh metrics directory, so any of them answers /metrics for all."""
    refuse_taken(_config.host, web_ports(_config))
    metrics.web_multiprocess_dir()


def post_fork(server, worker):
    """Start tracing in each worker process: the SDK's threads and connections do not survive a fork."""
    tracing.setup_tracing("dalc-web")


def post_worker_init(worker):
    """The app is loaded: start its threads with their connections open, then keep start-up's objects out
    of the collector's full passes. The worker takes no request before this returns."""
    runtime = worker.wsgi.extensions["dalc"]
    metrics.warm_web()
    warm_up_pool(worker.tpool, worker.cfg.threads, functools.partial(warm_up_thread, runtime, publishes=True))
    freeze_startup_objects()
    # With reuse_port each worker binds its own socket and gunicorn's master logs no address: say it here.
    worker.log.info("dalc web serving on http://%s:%d (%d threads)", _config.host, _config.port, worker.cfg.threads)


def worker_exit(server, worker):
    """Send the worker's last spans before it goes."""
    tracing.shutdown()


def child_exit(server, worker):
    """Drop the live gauges of a worker process that exited."""
    metrics.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory once every worker is gone."""
    metrics.remove_multiprocess_dir()
