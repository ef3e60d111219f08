"""Private PostgreSQL 15 servers, run by the machine's PostgreSQL as the postgres user (see private_services.py)."""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import psycopg2

from harness.private_common import Service, alive, group_alive, has_user, private_dir, run_as, tail, wait_for
from support import free_port

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


def postgres_available() -> bool:
    return (POSTGRES_BIN / "initdb").exists() and has_user("postgres")


class PrivatePostgres(Service):
    """A private PostgreSQL server: its own data folder, a free port on 127.0.0.1, trust authentication."""

    _template: Path | None = None  # one initdb per test process; each server starts from a copy of it
    _template_lock = threading.Lock()

    def __init__(self, **settings: str | int):
        super().__init__()
        self.settings = settings  # server settings (`-c name=value`), e.g. max_connections=20
        self.port = free_port()
        self.dir = private_dir("pg", "postgres")
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if alive(pid) else None

    @property
    def running(self) -> bool:
        return self.postmaster_pid is not None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def _pg_ctl(self, *args: str, timeout: float) -> str:
        return run_as([POSTGRES_BIN / "pg_ctl", "-D", self.data, "-t", int(timeout), *args], user="postgres",
                      timeout=timeout + 10, what=f"pg_ctl {args[-1]} on port {self.port}", log=self.log_tail())

    @classmethod
    def _initdb_template(cls) -> Path:
        with cls._template_lock:
            if cls._template is None:
                path = private_dir("pg", "postgres") / "template"
                run_as([POSTGRES_BIN / "initdb", "-D", path, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                        "--locale=C", "--no-sync"], user="postgres", timeout=120, what="initdb")
                cls._template = path
                atexit.register(shutil.rmtree, path.parent, True)
            return cls._template

    def start(self, timeout: float = 60.0) -> PrivatePostgres:
        """Start the server (the first time on a fresh cluster) and wait until it accepts connections."""
        if not self.data.exists():
            shutil.copytree(self._initdb_template(), self.data, symlinks=True)
            subprocess.run(["chown", "-R", "postgres:postgres", self.data], check=True)
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._pg_ctl("-l", str(self.log_path), "-w", "-o", options, "start", timeout=timeout)
        return self

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop the server: `smart`, `fast` (the default) or `immediate`, as `pg_ctl stop -m` means them."""
        if self.running:
            self._pg_ctl("-w", "-m", mode, "stop", timeout=timeout)

    def restart(self, timeout: float = 60.0) -> None:
        self.stop(timeout=timeout)
        self.start(timeout)

    def kill(self) -> None:
        """SIGKILL the postmaster and every process of its group, as a crash would; start() recovers."""
        pid = self.postmaster_pid
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        try:
            os.killpg(pid, signal.SIGKILL)  # its backends: a new postmaster refuses shared memory still in use
        except ProcessLookupError:
            pass
        wait_for(lambda: not group_alive(pid), 30, f"the processes of postmaster {pid} ending", self.log_tail)

    def create_database(self, name: str) -> str:
        """Create database `name` and return its URL."""
        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        connection.autocommit = True
        try:
            with connection.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)

    def cleanup(self) -> None:
        """Kill the server if it runs and remove its folder."""
        if self.running:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        super().cleanup()
