"""Measure what polling the dashboard costs the task path: submit throughput with and without /stats pollers.

Starts the production shape (gunicorn and the dramatiq CLI) on this machine's PostgreSQL and RabbitMQ, as
bench_service.py does, and drives single submissions from keep-alive connections in fixed-length phases:
A without anyone polling /stats, B with BENCH_VIEWERS dashboards polling it every BENCH_POLL_SECONDS.
Phases alternate A B B A ... so that drift (a growing table, a busy machine) falls on both sides. Each
phase prints its throughput and the CPU that dalc's own processes spent per accepted task: the web
(gunicorn and its workers), the dramatiq workers, and the PostgreSQL backends serving dalc's database.
CPU per task is the steadier figure on a shared machine: other programs slow dalc down, but do not add
to its processes' CPU. Each pair's B/A ratios are printed, then their medians. Nothing asserts a speed.
"""
from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import Settings, cpu_seconds, percentile, running_dalc, spent, tree_cpu  # noqa: E402

PAIRS = int(os.environ.get("BENCH_PAIRS", "4"))
PHASE_SECONDS = float(os.environ.get("BENCH_PHASE_SECONDS", "15"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
VIEWERS = int(os.environ.get("BENCH_VIEWERS", "10"))
POLL_SECONDS = float(os.environ.get("BENCH_POLL_SECONDS", "1"))


def database_cpu(admin, db_name: str) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend connected to dalc's database, by pid."""
    with admin.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (db_name,))
        return {pid: cpu_seconds(pid) for (pid,) in cur.fetchall()}


def submit_for(port: int, seconds: float) -> tuple[int, list[float]]:
    """Submit single tasks from CONCURRENCY connections for `seconds`; return (accepted, latencies in ms)."""
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    lock = threading.Lock()
    refused: list[int] = []

    def loop(n: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, i = [], 0
        while time.monotonic() < deadline:
            body = json.dumps({"expression": f"{n} * {i} + 1"})
            sent = time.perf_counter()
            conn.request("POST", "/tasks", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 202:  # the shared machine's PostgreSQL may be out of connections
                refused.append(response.status)
                time.sleep(0.1)
                continue
            mine.append((time.perf_counter() - sent) * 1000)
            i += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if refused:
        print(f"  {len(refused)} submissions refused, statuses {sorted(set(refused))}", flush=True)
    return len(latencies), latencies


class Viewers:
    """VIEWERS dashboards polling /stats every POLL_SECONDS, each on its own connection."""

    def __init__(self, port: int):
        self.port = port
        self.stop = threading.Event()
        self.times: list[float] = []
        self.threads = [threading.Thread(target=self._poll, args=(v,)) for v in range(VIEWERS)]

    def _poll(self, v: int):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.stop.wait(POLL_SECONDS * v / VIEWERS)  # spread the viewers over the period
        while not self.stop.is_set():
            sent = time.perf_counter()
            conn.request("GET", "/stats")
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                    self.times.append((time.perf_counter() - sent) * 1000)
            self.stop.wait(POLL_SECONDS)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def main() -> None:
    s = Settings()
    with running_dalc(s, "dalc-bench-dashboard") as (port, database, processes):
        admin, db_name = database.admin, database.name
        web, worker = processes["web"], processes["workers"]
        print(f"dalc dashboard cost: {os.cpu_count()} cores, web {s.web_workers}x{s.web_threads} gthread, "
              f"workers {s.worker_processes}x{s.worker_threads}; {CONCURRENCY} "
              f"connections submitting for {PHASE_SECONDS:g} s per phase; B adds {VIEWERS} dashboards polling "
              f"/stats every {POLL_SECONDS:g} s", flush=True)
        submit_for(port, 5)  # warm-up
        ratios: dict[str, list[float]] = {"throughput": [], "cpu": []}
        for pair in range(PAIRS):
            figures = {}
            for phase in ("AB" if pair % 2 == 0 else "BA"):
                cpu_before = (tree_cpu(web), tree_cpu(worker), database_cpu(admin, db_name))
                if phase == "A":
                    count, latencies = submit_for(port, PHASE_SECONDS)
                    polls = []
                else:
                    with Viewers(port) as viewers:
                        count, latencies = submit_for(port, PHASE_SECONDS)
                    polls = viewers.times
                cpu_after = (tree_cpu(web), tree_cpu(worker), database_cpu(admin, db_name))
                used = [spent(before, after) for before, after in zip(cpu_before, cpu_after, strict=True)]
                web_ms, worker_ms, db_ms = (1000 * seconds / max(count, 1) for seconds in used)
                figures[phase] = (count / PHASE_SECONDS, web_ms + worker_ms + db_ms)
                stats = f"  /stats p50 {percentile(polls, 50):6.1f} ms ({len(polls)} polls)" if polls else ""
                post = f"POST p50 {percentile(latencies, 50):5.1f} ms" if latencies else "no task accepted"
                print(f"pair {pair + 1} {phase}: {count / PHASE_SECONDS:6.0f} tasks/s  {post}  CPU per task: web "
                      f"{web_ms:.2f} ms, workers {worker_ms:.2f} ms, PostgreSQL {db_ms:.2f} ms{stats}", flush=True)
            ratios["throughput"].append(figures["B"][0] / max(figures["A"][0], 1e-9))
            ratios["cpu"].append(figures["B"][1] / max(figures["A"][1], 1e-9))
            print(f"pair {pair + 1} B/A: throughput {ratios['throughput'][-1]:.3f}, CPU per task "
                  f"{ratios['cpu'][-1]:.3f}", flush=True)
        for name, values in ratios.items():
            label = "throughput" if name == "throughput" else "CPU per task"
            print(f"median B/A {label} over {PAIRS} pairs: {statistics.median(values):.3f} "
                  f"(min {min(values):.3f}, max {max(values):.3f})", flush=True)


if __name__ == "__main__":
    main()
