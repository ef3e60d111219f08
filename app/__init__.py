"""dalc: a distributed calculator service."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing a part (app.evaluator, say) must not load Flask
    from flask import Flask

    from app.config import Config


def create_app(config: Config | None = None) -> Flask:
    """Create the web application, reading the environment when no config is given."""
    from flask import Flask

    from app import web
    from app.config import Config
    from app.runtime import build_runtime
    from app.store import database, migrations
    from app.telemetry import logs, tracing

    config = config or Config.from_env()
    logs.setup_logging(config)
    app = Flask(__name__, static_folder=None)  # the page serves its own (app/web/static)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False
    app.json.compact = True
    tracing.instrument_app(app)

    runtime = build_runtime(config)
    app.extensions["dalc"] = runtime
    if config.migrate_on_start:
        migrations.migrate()
    database.init_app(app)
    web.init_app(app)
    runtime.start_intake()
    if config.embedded_broker:
        runtime.start_embedded_worker()
    runtime.start_listener()
    return app
