"""The `dalc` command: run dalc, apply migrations, run the sweeper, purge what expired, manage API tokens."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from app.config import Config, ConfigError, mask_password

log = logging.getLogger("app.cli")

SUPERVISOR_CONF = Path(__file__).with_name("supervisord.conf")


def _serve(config: Config) -> None:
    """Serve the embedded shape: web, in-process broker, workers and sweeper in this one process."""
    from werkzeug.serving import make_server

    from app import create_app
    from app.runtime import freeze_startup_objects
    from app.store import database
    from app.telemetry import tracing

    tracing.setup_tracing("dalc")
    app = create_app(config)
    app.teardown_request(database.release_connection)  # Werkzeug starts a thread per request
    server = make_server(config.host, config.port, app, threaded=True)
    metrics_server = None
    if config.web_metrics_port:  # /metrics on a port of its own, as gunicorn_conf.py binds it
        metrics_server = make_server(config.host, config.web_metrics_port, app, threaded=True)
        threading.Thread(target=metrics_server.serve_forever, name="dalc-metrics-server", daemon=True).start()
        log.info("metrics on http://%s:%d/metrics", config.host, config.web_metrics_port)
    log.info("dalc (embedded: %s, in-process broker) on http://%s:%d",
             mask_password(config.database_url), config.host, config.port)
    freeze_startup_objects()

    def _stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()  # Werkzeug's returns on the KeyboardInterrupt (Ctrl-C, SIGTERM) it swallows
    except KeyboardInterrupt:  # one that came before the loop started
        pass
    finally:
        log.info("stopping")
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        server.server_close()
        app.extensions["dalc"].close()


def _run(config: Config) -> None:
    """Start dalc in the shape the configuration asks for."""
    if config.embedded_broker:
        _serve(config)
        return
    # Production shape: gunicorn, dramatiq and the sweeper under supervisord, which restarts what dies.
    # Checked here too, not only by gunicorn: supervisord would keep restarting a web that cannot bind.
    from app.ports import PortTaken, refuse_taken, web_ports

    try:
        refuse_taken(config.host, web_ports(config))
    except PortTaken as exc:
        raise SystemExit(f"dalc: {exc}") from None
    _migrate(config)
    _refuse_without_room(config)
    bin_dir = Path(sys.executable).parent
    os.environ.update(
        DALC_SUPERVISOR_BIN=str(bin_dir),
        DALC_SUPERVISOR_PIDFILE=f"/tmp/dalc-supervisord-{os.getpid()}.pid",
        DALC_WORKER_PROCESSES=str(config.worker_processes),
        DALC_WORKER_THREADS=str(config.worker_threads),
        DALC_SUPERVISOR_WORKER_SHUTDOWN_MS=str(int(config.worker_shutdown_seconds * 1000)),
    )
    os.execvp(
        sys.executable,
        [sys.executable, "-m", "supervisor.supervisord", "--nodaemon", "--configuration", str(SUPERVISOR_CONF)],
    )


def _connections_needed(config: Config) -> tuple[int, str]:
    """Count the connections the production shape holds once started, and say what they are.

    Each web process keeps one per thread and one for its listener (`?wait=`), each worker process one
    per thread, the sweeper one: tests/test_processes.py counts them on real processes, and the Helm
    chart's "dalc.database.connections" adds them up the same way.
    """
    web = config.web_workers * (config.web_threads + 1)
    workers = config.worker_processes * config.worker_threads
    detail = (f"DALC_WEB_WORKERS x (DALC_WEB_THREADS + 1) + DALC_WORKER_PROCESSES x DALC_WORKER_THREADS + 1 "
              f"for the sweeper = {config.web_workers} x ({config.web_threads} + 1) + "
              f"{config.worker_processes} x {config.worker_threads} + 1")
    return web + workers + 1, detail


def _refuse_without_room(config: Config) -> None:
    """Stop before starting anything when PostgreSQL cannot take every connection the processes will hold.

    Started anyway, the processes that came last would answer 503 (`too many clients`) under load.
    """
    from app.store import capacity, database

    if not database.is_postgres():
        return
    need, detail = _connections_needed(config)
    try:
        room = capacity.connection_room()
    except database.UNAVAILABLE_ERRORS as exc:  # the processes wait for the database as they start
        log.warning("could not read how many connections PostgreSQL has room for: %s", exc)
        return
    if need > room.free:
        raise SystemExit(
            f"dalc: PostgreSQL has room for {room.free} more connections ({room.describe()}), and this dalc "
            f"would hold {need} ({detail}). Stop what else holds connections, raise max_connections, or lower "
            "those settings."
        )
    log.info("PostgreSQL has room for %d more connections; this dalc will hold %d", room.free, need)


def _migrate(config: Config) -> None:
    from app.store import migrations
    from app.store.database import init_db

    init_db(config)
    applied = migrations.migrate()
    log.info("schema up to date (applied now: %s)", applied or "none")


def _sweep(config: Config) -> None:
    from app.runtime import build_runtime
    from app.telemetry import tracing

    tracing.setup_tracing("dalc-sweeper")
    runtime = build_runtime(config)
    signal.signal(signal.SIGTERM, lambda *_: runtime.sweeper.stop())
    signal.signal(signal.SIGINT, lambda *_: runtime.sweeper.stop())
    log.info("sweeper: publishing open tasks idle for %ss, every %ss",
             config.sweep_after_seconds, config.sweep_interval_seconds)
    runtime.sweeper.run_forever()
    runtime.close()


# `dalc purge` reports a round (one log line) at least this often while it works through a backlog.
PURGE_REPORT_SECONDS = 60.0


def _purge(config: Config) -> None:
    """Delete expired tasks and keys until none is left (the chart's CronJob runs this), then exit."""
    from app.store import retention
    from app.store.database import UNAVAILABLE_ERRORS, init_db
    from app.telemetry.purge import report

    init_db(config)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    policy = retention.Policy.from_config(config)
    while True:
        try:
            result = retention.purge(policy, budget_seconds=PURGE_REPORT_SECONDS, stopping=lambda: bool(stopping))
        except UNAVAILABLE_ERRORS as exc:
            # What was deleted stays deleted; the next run (the CronJob's, or a retry) goes on from there.
            log.error("purge: cannot reach the database: %s", exc)
            raise SystemExit(1) from None
        report(result)
        if result.caught_up or stopping:
            return


def _tokens(config: Config, args: argparse.Namespace) -> int:
    """Create, list or revoke API tokens; a new token's secret is printed once, on stdout alone."""
    from app.store import TokenNameTaken, migrations, tokens
    from app.store.database import init_db
    from app.web.auth import TOKEN_CACHE_SECONDS

    init_db(config)
    migrations.migrate()  # a token can be made before dalc first starts
    if args.action == "create":
        if not tokens.NAME_PATTERN.fullmatch(args.name):
            print("dalc: a token name is 1 to 100 letters, digits and _ . @ -", file=sys.stderr)
            return 2
        try:
            info, secret = tokens.create_token(args.name)
        except TokenNameTaken:
            print(f"dalc: an active token is already called {args.name!r}; revoke it or choose another name",
                  file=sys.stderr)
            return 1
        print(f"Token {info.name!r} created. It is shown this once; only its hash is stored:", file=sys.stderr)
        print(secret)
    elif args.action == "list":
        print(f"{'NAME':<30} {'CREATED (UTC)':<20} REVOKED (UTC)")
        for info in tokens.list_tokens():
            revoked = f"{info.revoked_at:%Y-%m-%d %H:%M:%S}" if info.revoked_at else "-"
            print(f"{info.name:<30} {info.created_at:%Y-%m-%d %H:%M:%S}  {revoked}")
    else:
        if tokens.revoke_token(args.name) is None:
            print(f"dalc: no active token is called {args.name!r}", file=sys.stderr)
            return 1
        print(f"Token {args.name!r} revoked; web processes refuse it within "
              f"{TOKEN_CACHE_SECONDS:g} seconds.", file=sys.stderr)
    return 0


COMMANDS = {
    "run": (_run, "start dalc: embedded without DALC_BROKER_URL, else gunicorn + dramatiq + sweeper"),
    "serve": (_serve, "serve the embedded shape in one process"),
    "migrate": (_migrate, "apply pending schema migrations and exit"),
    "sweep": (_sweep, "run the sweeper that re-publishes overdue tasks (and purges what expired)"),
    "purge": (_purge, "delete the tasks and idempotency keys past their retention, then exit"),
}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(prog="dalc", description="dalc, a distributed calculator.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text)
    tokens = sub.add_parser("tokens", help="manage API tokens (DALC_AUTH=required)")
    actions = tokens.add_subparsers(dest="action", required=True)
    actions.add_parser("create", help="create a token and print it once").add_argument("name")
    actions.add_parser("list", help="list tokens (names and dates, never secrets)")
    actions.add_parser("revoke", help="revoke the active token of this name").add_argument("name")
    args = parser.parse_args(argv)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"dalc: configuration error: {exc}", file=sys.stderr)
        return 2
    from app.telemetry.logs import setup_logging

    setup_logging(config)
    if args.command == "tokens":
        return _tokens(config, args)
    COMMANDS[args.command][0](config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
