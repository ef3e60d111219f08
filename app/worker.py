"""The module the dramatiq CLI loads: `dramatiq app.worker`."""
import dramatiq

from app.config import Config
from app.runtime import build_runtime, freeze_startup_objects, warm_up_thread
from app.telemetry import metrics, tracing
from app.telemetry.logs import setup_logging
from app.telemetry.metrics_middleware import WorkerMetricsMiddleware
from app.worker_metrics import serve as serve_metrics

# The dramatiq CLI imports this module in every worker process (after fork); the broker must exist
# before the actor. Metrics first: prometheus-client picks its multiprocess mode when first used.
metrics.worker_multiprocess_dir()
config = Config.from_env()
setup_logging(config)
tracing.setup_tracing("dalc-worker")  # before build_runtime: it instruments the connections made from here on
runtime = build_runtime(config)
runtime.broker.add_middleware(WorkerMetricsMiddleware(port=config.worker_metrics_port, serve=serve_metrics))


class WarmUp(dramatiq.Middleware):
    """Open each worker thread's database connection as it starts, not on its first message."""

    def after_worker_thread_boot(self, broker, thread):
        warm_up_thread(runtime, publishes=False)


runtime.broker.add_middleware(WarmUp())
broker = runtime.broker
freeze_startup_objects()  # last: everything above lives as long as the process
