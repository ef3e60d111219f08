"""dalc: a distributed calculator service."""
from __future__ import annotations

from flask import Flask

from app.config import Config


def create_app(config: Config | None = None) -> Flask:
    """Create the web application, reading the environment when no config is given."""
    from app import api, db, errors, logs, migrations
    from app.runtime import build_runtime
    from app.telemetry import tracing

    config = config or Config.from_env()
    logs.setup_logging(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False
    app.json.compact = True
    tracing.instrument_app(app)

    runtime = build_runtime(config)
    app.extensions["dalc"] = runtime
    if config.migrate_on_start:
        migrations.migrate()
    db.init_app(app)
    errors.init_app(app)
    api.init_app(app)
    runtime.start_intake()
    if config.embedded_broker:
        runtime.start_embedded_worker()
    runtime.start_listener()
    return app
