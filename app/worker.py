"""The module the dramatiq CLI loads: `dramatiq app.worker`."""
from app.config import Config
from app.logs import setup_logging
from app.runtime import build_runtime

# The dramatiq CLI imports this module in every worker process; the broker must exist before the actor.
config = Config.from_env()
setup_logging(config)
runtime = build_runtime(config)
broker = runtime.broker
