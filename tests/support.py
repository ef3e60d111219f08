"""Helpers for tests that start dalc's real processes and talk to them over HTTP."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        self._log.close()
        return self.popen.returncode

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
