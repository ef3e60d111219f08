"""Measure what tracing costs: single-submission throughput with every task traced, against tracing off.

Runs dalc's production shape (gunicorn and the dramatiq CLI, as bench_service.py starts them) in
alternating pairs on the real services: off (OTEL_SDK_DISABLED=true), then on (`always_on`, the batch
processor, OTLP/HTTP to a receiver in this process that keeps the bodies and answers at once). Each run
gets a database and queue of its own, warms up, then sends single submissions from keep-alive connections
and waits until every task is final. Prints each run's end-to-end throughput and the CPU per task of the
web's and the workers' process trees, each pair's on/off ratio, the median of the ratios and of the CPU per
task that tracing adds (steadier than throughput on a shared machine). The spans
received are decoded after each run, outside its measurement, and counted per task, so a run that
traced nothing cannot pass for one that did. Settings come from BENCH_TRACING_* variables; nothing here
asserts a speed.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import statistics
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench_service import Settings, run_load, running_dalc, spent, tree_cpu, wait_final
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from support import free_port  # tests/ is on the path once bench_service is imported

PAIRS = int(os.environ.get("BENCH_TRACING_PAIRS", "3"))
TASKS = int(os.environ.get("BENCH_TRACING_TASKS", "6000"))
CONCURRENCY = int(os.environ.get("BENCH_TRACING_CONCURRENCY", "16"))
WARM_UP_TASKS = 1000
# Everything that could make a run trace less than every task, or differently from the other runs.
_OTEL_UNSET = ("OTEL_TRACES_SAMPLER_ARG", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
               "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_BSP_SCHEDULE_DELAY",
               "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_EXPORTER_OTLP_COMPRESSION")


class DiscardingReceiver:
    """An OTLP/HTTP endpoint that answers every export at once and keeps the bodies, decoded only on demand."""

    def __init__(self):
        bodies = self._bodies = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's naming)
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True).start()

    def take_span_counts(self) -> collections.Counter:
        """Return the spans received so far, counted by (service, span kind), and forget them."""
        counts: collections.Counter = collections.Counter()
        bodies, self._bodies[:] = list(self._bodies), []
        for body in bodies:
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                service = next((kv.value.string_value for kv in resource_spans.resource.attributes
                                if kv.key == "service.name"), "?")
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        counts[(service, span.kind)] += 1
        return counts

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def measured_cpu(processes: dict[str, int], tasks: int, into: dict[str, float]) -> Iterator[None]:
    """Put each kind's CPU milliseconds per task, over the block, in `into`."""
    before = {kind: tree_cpu(pid) for kind, pid in processes.items()}
    yield
    for kind, pid in processes.items():
        into[kind] = spent(before[kind], tree_cpu(pid)) * 1000 / tasks


def one_run(settings: Settings, traced: bool, receiver: DiscardingReceiver, tasks: int) -> dict:
    env = {name: None for name in _OTEL_UNSET}
    if traced:
        env.update(OTEL_SDK_DISABLED="false", OTEL_TRACES_SAMPLER="always_on",
                   OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}")
    else:
        env.update(OTEL_SDK_DISABLED="true", OTEL_TRACES_SAMPLER=None, OTEL_EXPORTER_OTLP_ENDPOINT=None)
    with running_dalc(settings, "dalc-bench-tracing", env) as (port, database, processes):
        dsn = database.dsn
        wait_final(dsn, run_load(port, [{"expression": "1 + 1"}] * WARM_UP_TASKS, CONCURRENCY))
        time.sleep(6 if traced else 1)  # the warm-up's spans leave (the batch processor sends every 5 s)
        receiver.take_span_counts()
        cpu: dict[str, float] = {}
        with measured_cpu(processes, tasks, cpu):
            submitted = run_load(port, [{"expression": f"{i} * 3 + (2 ** 8) / 4"} for i in range(tasks)],
                                 CONCURRENCY)
            finished = wait_final(dsn, submitted)
        throughput = len(submitted) / (max(finished.values()) - min(submitted.values()))
    # Stopping the processes sent their last spans: every span of the measured tasks is in by now.
    spans = receiver.take_span_counts()
    return {"throughput": throughput, "cpu": cpu, "spans": spans}


def describe(label: str, run: dict, tasks: int) -> str:
    line = (f"{label:<4} {run['throughput']:>7.0f} tasks/s end to end; CPU per task: web "
            f"{run['cpu']['web']:.2f} ms, workers {run['cpu']['workers']:.2f} ms")
    if run["spans"]:
        per_service = collections.Counter()
        for (service, _), count in run["spans"].items():
            per_service[service] += count
        line += "; spans per task: " + ", ".join(f"{service} {count / tasks:.1f}"
                                                 for service, count in sorted(per_service.items()))
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small pair, for a smoke run")
    args = parser.parse_args()
    pairs, tasks = (1, 500) if args.quick else (PAIRS, TASKS)
    settings = Settings()
    receiver = DiscardingReceiver()
    print(f"tracing benchmark: {os.cpu_count()} cores; {pairs} pairs of {tasks} single submissions from "
          f"{CONCURRENCY} connections; on = always_on, OTLP/HTTP to a receiver in this process", flush=True)
    ratios = []
    added: dict[str, list[float]] = {"web": [], "workers": []}  # CPU per task, on minus off
    try:
        for pair in range(1, pairs + 1):
            off = one_run(settings, False, receiver, tasks)
            on = one_run(settings, True, receiver, tasks)
            if off["spans"]:
                raise SystemExit(f"spans arrived with tracing off: {dict(off['spans'])}")
            if not on["spans"]:
                raise SystemExit("no spans arrived with tracing on")
            ratios.append(on["throughput"] / off["throughput"])
            for kind, values in added.items():
                values.append(on["cpu"][kind] - off["cpu"][kind])
            print(f"pair {pair}:\n  {describe('off', off, tasks)}\n  {describe('on', on, tasks)}\n"
                  f"  on/off {ratios[-1]:.2f}", flush=True)
    finally:
        receiver.close()
    print(f"tracing on/off, single submissions: median {statistics.median(ratios):.2f} "
          f"(pairs: {', '.join(f'{r:.2f}' for r in ratios)})", flush=True)
    print("CPU per task that tracing adds, median of the pairs: " + ", ".join(
        f"{kind} {statistics.median(values):.2f} ms" for kind, values in added.items()), flush=True)


if __name__ == "__main__":
    main()
