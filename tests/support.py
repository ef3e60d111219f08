"""The tests' one support module: the services they need, their own databases and queues, real processes."""
from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pika
import psycopg2
import pytest
import requests
from dramatiq.common import dq_name, xq_name

from app.store.database import db

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


PG_ADMIN_DSN = os.environ.get("DALC_TEST_PG_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_HOST = os.environ.get("DALC_TEST_PG_HOST", "127.0.0.1:5432")
AMQP_URL = os.environ.get("DALC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
RUN_ID = uuid.uuid4().hex[:8]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require(available: bool, message: str) -> None:
    """The one rule for a test whose service or tool is missing: fail under CI=true, skip elsewhere."""
    if available:
        return
    if IN_CI:
        pytest.fail(message + " (CI=true: a missing service fails the run)")
    pytest.skip(message)


def require_service(name: str, host: str, port: int) -> None:
    """Require a service listening at host:port."""
    require(_reachable(host, port), f"{name} is not reachable at {host}:{port}")


def run_sql(sql: str, params: Sequence = (), dsn: str = PG_ADMIN_DSN) -> list[tuple]:
    """Run `sql` (autocommitted) over a connection of its own to `dsn`; return the rows it read.

    A new connection each time: a test may have restarted the server since the last one, and the
    statements stay out of the test's own connections.
    """
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    try:
        with connection.cursor() as cur:
            cur.execute(sql, params or None)
            return cur.fetchall() if cur.description else []
    finally:
        connection.close()


def task_rows(dsn: str, ids: Sequence[int], columns: str) -> dict[int, tuple]:
    """Read `columns` (SQL, comma-separated) of the tasks with these ids straight from the database, by id."""
    found = run_sql(f"SELECT id, {columns} FROM task WHERE id = ANY(%s)", [list(ids)], dsn=dsn)
    return {row[0]: row[1:] for row in found}


@contextlib.contextmanager
def own_database(name: str) -> Iterator[str]:
    """Create database `name` on the machine's PostgreSQL for the block; drop it afterwards, whatever it holds."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    run_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    run_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@{PG_HOST}/{name}"
    finally:
        if db.obj is not None and hasattr(db.obj, "close_all"):
            db.obj.close_all()
        run_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def delete_queues(amqp_url: str, name: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        for queue in (name, dq_name(name), xq_name(name)):
            channel.queue_delete(queue=queue)
    finally:
        connection.close()


def clean_tables() -> None:
    with db.connection_context():
        if db.table_exists("task"):
            db.execute_sql("DELETE FROM idempotency_key")
            db.execute_sql("DELETE FROM task")
        if db.table_exists("purge_state"):  # the tasks just deleted did not expire
            db.execute_sql("UPDATE purge_state SET task_id_frontier = 1, tasks_expired = 0, keys_expired = 0, "
                           "rounds = 0, last_round_at = NULL, last_round_seconds = NULL, "
                           "oldest_final_finished_at = NULL")
            db.execute_sql("DELETE FROM unused_task_id")
        if db.table_exists("api_token"):
            db.execute_sql("DELETE FROM api_token")
        if db.table_exists("rate_limit"):
            db.execute_sql("DELETE FROM rate_limit")


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port() -> int:
    """Return a free port below the kernel's ephemeral range.

    A server that a test stops and starts again on its port (the chaos suite's RabbitMQ) would otherwise
    find it taken by an outgoing connection's local port, picked from that range meanwhile.
    """
    ephemeral = _ephemeral_ports()
    for _ in range(200):
        port = random.randrange(10_000, ephemeral.start) if ephemeral.start > 11_000 else random.randrange(1024, 65536)
        if port in ephemeral:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found below the ephemeral range")


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def dalc_env(**settings: str) -> dict[str, str]:
    """Return an environment for a dalc process: this one's, without stray DALC_ variables, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DALC_")}
    env.update(settings)
    return env


class Process:
    """A child process in its own process group, stopped (and reaped) by stop()."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def signal(self, signum: int) -> None:
        os.killpg(self.popen.pid, signum)

    def stop(self, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            # Only the leader: gunicorn and dramatiq forward it to their children (a second TERM
            # sent to a dramatiq child directly would make it kill itself instead of finishing).
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait()
        self._kill_session()
        self._log.close()
        return self.popen.returncode

    def _kill_session(self) -> None:
        """Kill what is left of the session the process started: supervisord (`dalc run`) puts each of its
        programs in a process group of its own, out of reach of killpg, and a gunicorn it could not stop
        in time outlived a failed test, serving on."""
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                session = int(stat.read_text().rpartition(")")[2].split()[3])
            except (OSError, ValueError, IndexError):
                continue
            if session == self.popen.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(stat.parent.name), signal.SIGKILL)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_http(url: str, process: Process, timeout: float = 30.0) -> None:
    """Wait until `url` answers 200, failing early with the log if the process died."""

    def up():
        if process.popen.poll() is not None:
            raise AssertionError(f"process exited with {process.popen.returncode}:\n{process.output()[-3000:]}")
        try:
            return requests.get(url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(up, timeout=timeout, interval=0.2)


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Serve a Flask app over real HTTP from a thread for the block; yield its base URL."""
    import threading

    from werkzeug.serving import make_server

    def closing(environ, start_response):
        # werkzeug starts a thread per request, and a thread keeps its pooled connection: hand it back.
        try:
            yield from app(environ, start_response)
        finally:
            if not db.is_closed():
                db.close()

    server = make_server("127.0.0.1", 0, closing, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


# Debian's Chromium: Playwright's own browser download cannot work on these machines.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
