"""Fault injection against dalc's real processes: a steady load of tasks with known answers, then faults.

The stack is dalc's local production shape (`dalc run`: gunicorn, the dramatiq CLI and the sweeper under
supervisord) on a private PostgreSQL and a private RabbitMQ node (tests/private_services.py), so the
faults never touch the machine's own services. After each fault every accepted task (a 2xx answer) must
be final with the right result; at the end no task may have changed after it was final.

`make chaos` runs the full form and prints the table; tests/test_chaos.py runs a bounded form in CI.
"""
from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for support and harness
from harness.private_services import PrivatePostgres, RabbitNode  # noqa: E402
from support import Process, dalc_env, free_port, task_rows, wait_for_http  # noqa: E402


@dataclasses.dataclass
class Scale:
    """How hard and how long each phase pushes."""

    rate: float = 150.0  # tasks per second submitted by the load
    before: float = 3.0  # seconds of load before the fault
    after: float = 3.0  # seconds of load after the fault ends
    drain_timeout: float = 120.0  # seconds to wait for every accepted task to be final
    worker_kills: int = 3


CI = Scale(before=2.0, after=2.0, worker_kills=2)
FULL = Scale(rate=400.0, before=8.0, after=8.0, drain_timeout=240.0, worker_kills=5)


@dataclasses.dataclass
class Row:
    fault: str
    submitted: int = 0
    accepted: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    wrong: int = 0
    drain_seconds: float = 0.0

    def line(self) -> str:
        return (f"| {self.fault:<22} | {self.submitted:>9} | {self.accepted:>8} | {self.completed:>9} | "
                f"{self.failed:>6} | {self.lost:>4} | {self.wrong:>5} | {self.drain_seconds:>10.1f} |")


HEADER = ("| fault                  | submitted | accepted | completed | failed | lost | wrong | drain (s)  |\n"
          "|------------------------|-----------|----------|-----------|--------|------|-------|------------|")


class Stack:
    """dalc's production shape under supervisord, on a private PostgreSQL and RabbitMQ node."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.pg = PrivatePostgres().start()
        self.rabbit = RabbitNode().start()
        self.database_url = self.pg.create_database("dalc")
        self.port = free_port()
        self.env = dalc_env(
            DALC_DATABASE_URL=self.database_url,
            DALC_BROKER_URL=self.rabbit.amqp_url,
            DALC_QUEUE_NAME="chaos",
            DALC_PORT=str(self.port),
            DALC_WEB_WORKERS="2",
            DALC_WEB_THREADS="8",
            DALC_WORKER_PROCESSES="2",
            DALC_WORKER_THREADS="4",
            DALC_WORKER_SHUTDOWN_SECONDS="10",
            # Short enough that the suite measures recovery, not the default one-minute patience.
            DALC_SWEEP_AFTER_SECONDS="10",
            DALC_SWEEP_INTERVAL_SECONDS="1",
            DALC_RETRY_MAX_BACKOFF_MS="2000",
            DALC_MAX_RETRIES="30",
            DALC_LOG_LEVEL="WARNING",
        )
        self.run = Process([sys.executable, "-m", "app", "run"], self.env, workdir / "dalc.log")
        wait_for_http(f"http://127.0.0.1:{self.port}/readyz", self.run, timeout=60)
        self.wait_for_workers()

    def processes(self, marker: str) -> list[int]:
        """Return the pids under supervisord whose command line contains `marker`."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self.run.popen.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                todo.append(child)
                try:
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if marker in cmdline:
                    found.append(child)
        return found

    def worker_master(self) -> int | None:
        """Return the dramatiq CLI's main process (the one whose parent is supervisord)."""
        for pid in self.processes("app.worker"):
            try:
                ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:  # it has just ended
                continue
            if ppid == self.run.popen.pid:
                return pid
        return None

    def wait_for_workers(self, timeout: float = 60.0) -> None:
        """Wait until supervisord has a dramatiq main process with its children running again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            master = self.worker_master()
            if master and len(self.processes("app.worker")) >= 3:
                return
            time.sleep(0.2)
        raise AssertionError(f"workers did not come back within {timeout}s:\n{self.run.output()[-3000:]}")

    def close(self) -> None:
        self.run.stop(timeout=60)
        self.rabbit.cleanup()
        self.pg.cleanup()


class Load:
    """Submit tasks with known answers at a steady rate, singly and in small batches; remember what was accepted."""

    def __init__(self, port: int, rate: float):
        self.port, self.rate = port, rate
        self.expected: dict[int, int] = {}
        self.submitted = 0
        self.refusals: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._random = random.Random(7)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _refused(self, why: str, size: int) -> None:
        self.refusals[why] = self.refusals.get(why, 0) + size

    def _one(self) -> tuple[str, int]:
        a, b, c = (self._random.randint(-10**6, 10**6) for _ in range(3))
        return f"{a} * {b} - {c}", a * b - c

    def _run(self) -> None:
        connection = None
        started, sent = time.monotonic(), 0
        while not self._stop.is_set():
            size = 1 if sent % 3 else 10
            batch = [self._one() for _ in range(size)]
            body = json.dumps([{"expression": e} for e, _ in batch] if size > 1 else {"expression": batch[0][0]})
            self.submitted += size
            sent += size
            try:
                connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("POST", "/tasks", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = json.loads(response.read())
                if response.status == 202:
                    tasks = answer if isinstance(answer, list) else [answer]
                    for task, (_, value) in zip(tasks, batch, strict=True):
                        self.expected[task["id"]] = value
                else:
                    code = answer.get("code") if isinstance(answer, dict) else ""
                    self._refused(f"HTTP {response.status} {code}", size)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                connection = None  # not accepted: the client would retry; nothing to check
                self._refused(type(exc).__name__, size)
            pause = started + sent / self.rate - time.monotonic()
            if pause > 0:
                self._stop.wait(pause)


def read_tasks(database_url: str, ids: list[int]) -> dict[int, tuple]:
    """Read (status, result, error_code, finished_at) of the tasks straight from the database."""
    return task_rows(database_url, ids, "status, result, error_code, finished_at")


def settle(stack: Stack, expected: dict[int, int], timeout: float) -> tuple[dict[int, tuple], float]:
    """Wait until every accepted task is final (or the timeout passes); return their rows and the wait."""
    started = time.monotonic()
    ids = list(expected)
    while True:
        try:
            rows = read_tasks(stack.database_url, ids)
        except psycopg2.OperationalError:
            rows = {}
        done = all(rows.get(i, ("",))[0] in ("COMPLETED", "FAILED", "CANCELLED") for i in ids)
        if done or time.monotonic() - started > timeout:
            return rows, time.monotonic() - started
        time.sleep(0.25)


def kill_worker(stack: Stack) -> None:
    """SIGKILL one of the dramatiq CLI's worker processes (supervisord brings the workers back)."""
    stack.wait_for_workers()
    master = stack.worker_master()
    victims = [pid for pid in stack.processes("app.worker") if pid != master]
    os.kill(victims[0], signal.SIGKILL)
    time.sleep(1)
    stack.wait_for_workers()


def restart_rabbitmq(stack: Stack) -> None:
    stack.rabbit.stop()
    stack.rabbit.start()


def restart_postgres(stack: Stack) -> None:
    stack.pg.restart()


def broker_down_10s(stack: Stack) -> None:
    stack.rabbit.stop()
    time.sleep(10)
    stack.rabbit.start()


def sigterm_workers(stack: Stack) -> None:
    """SIGTERM the dramatiq CLI, as a rolling deploy would; supervisord starts it again."""
    os.kill(stack.worker_master(), signal.SIGTERM)
    time.sleep(1)
    stack.wait_for_workers()


def faults(scale: Scale) -> list[tuple[str, Callable[[Stack], None]]]:
    kills = [(f"kill -9 worker #{n + 1}", kill_worker) for n in range(scale.worker_kills)]
    return [*kills, ("restart RabbitMQ", restart_rabbitmq), ("restart PostgreSQL", restart_postgres),
            ("broker down 10 s", broker_down_10s), ("SIGTERM workers", sigterm_workers)]


def run_suite(workdir: Path, scale: Scale, *, out=print) -> tuple[list[Row], int]:
    """Run every fault in turn; return the table's rows and how many final tasks changed afterwards."""
    stack = Stack(workdir)
    rows, finals = [], {}
    out(HEADER)
    try:
        for name, inject in faults(scale):
            with Load(stack.port, scale.rate) as load:
                time.sleep(scale.before)
                inject(stack)
                fault_over = time.monotonic()
                time.sleep(scale.after)
            final_rows, _ = settle(stack, load.expected, scale.drain_timeout)
            # From the end of the fault until every task accepted before, during and after it is final.
            row = Row(name, submitted=load.submitted, accepted=len(load.expected),
                      drain_seconds=time.monotonic() - fault_over)
            for task_id, value in load.expected.items():
                status, result, _code, _finished = final_rows.get(task_id, (None, None, None, None))
                if status == "COMPLETED":
                    row.completed += 1
                    row.wrong += json.loads(result) != value
                elif status == "FAILED":
                    row.failed += 1
                    row.wrong += 1
                else:
                    row.lost += 1
            finals.update({i: r for i, r in final_rows.items() if r[0] in ("COMPLETED", "FAILED")})
            rows.append(row)
            out(row.line() + (f" not accepted: {load.refusals}" if load.refusals else ""))
        time.sleep(2)  # let any late duplicate message arrive before the last look
        again = read_tasks(stack.database_url, list(finals))
        changed = sum(again.get(i) != r for i, r in finals.items())
        out(f"final tasks changed after they were final: {changed} of {len(finals)}")
        return rows, changed
    finally:
        stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="dalc fault-injection suite")
    parser.add_argument("--ci", action="store_true", help="the bounded form that CI runs")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dalc-chaos-") as tmp:
        rows, changed = run_suite(Path(tmp), CI if args.ci else FULL)
    bad = [r for r in rows if r.lost or r.wrong] or changed
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
