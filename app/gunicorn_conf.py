"""gunicorn settings for the web, read from the same DALC_* variables as everything else."""
from app.config import Config

_config = Config.from_env()

bind = [f"{_config.host}:{_config.port}"]
workers = _config.web_workers
worker_class = "gthread"
threads = _config.web_threads
# Long-polls (`?wait=`) hold a thread up to DALC_MAX_WAIT_SECONDS; keep the worker timeout above it.
timeout = int(_config.max_wait_seconds) + 30
graceful_timeout = 30
keepalive = 5
# Let the kernel spread connections over the workers; without it one gthread worker can take them all.
reuse_port = True
accesslog = None
errorlog = "-"
loglevel = _config.log_level.lower()
