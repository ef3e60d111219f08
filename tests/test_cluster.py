"""Issue 4: on a three-node RabbitMQ cluster with quorum queues, losing one node loses no task.

A real cluster of three private nodes (tests/private_services.py), dalc's real processes (gunicorn and
the dramatiq CLI) on it with DALC_QUEUE_TYPE=quorum, and a few thousand tasks with known answers
submitted over HTTP, singly and in batches. Mid-load the first node stops: the one every dalc process
is connected to (the first URL of DALC_BROKER_URL) and the one leading the quorum queue. Submitting
goes on; then every accepted task must end COMPLETED with its right result.
"""
from __future__ import annotations

import collections
import json
import queue
import random
import signal
import threading
import time
import uuid

import pika
import pytest
import requests

from harness.private_services import RabbitCluster, rabbitmq_available, require_binaries
from support import BIN, RUN_ID, Process, dalc_env, free_port, own_database, task_rows, wait_for_http

pytestmark = pytest.mark.chaos

SINGLES = 600
BATCHES, BATCH_SIZE = 60, 40
CLIENT_THREADS = 4
PACE_SECONDS = 0.02  # between requests handed to the clients, so the load spans the node's stop
DRAIN_TIMEOUT = 60.0


@pytest.fixture
def database():
    """A database of this test's own on the machine's PostgreSQL, dropped afterwards."""
    with own_database(f"dalc_cluster_{RUN_ID}_{uuid.uuid4().hex[:4]}") as url:
        yield url


@pytest.fixture
def cluster():
    require_binaries(rabbitmq_available(), "RabbitMQ")
    started = time.monotonic()
    cluster = RabbitCluster(3)
    try:
        cluster.start()
        print(f"cluster of 3 up and joined in {time.monotonic() - started:.1f}s")
        yield cluster
    finally:
        cluster.cleanup()


def workload(seed: int = 4) -> list[list[tuple[str, int]]]:
    """The requests to send, in order: each a list of (expression, its value); one item is a single POST."""
    rnd = random.Random(seed)

    def task() -> tuple[str, int]:
        a, b, c = rnd.randint(-999, 999), rnd.randint(0, 999), rnd.randint(-999, 999)
        return f"{a} * {b} + ({c})", a * b + c

    requests_ = [[task()] for _ in range(SINGLES)] + [[task() for _ in range(BATCH_SIZE)] for _ in range(BATCHES)]
    rnd.shuffle(requests_)
    return requests_


class Load:
    """Clients that POST the workload, paced, and remember what was accepted with which answers."""

    def __init__(self, base: str):
        self.base = base
        self.todo: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.expected: dict[int, int] = {}  # task id -> its value, for every accepted task
        self.submitted = self.answered = 0
        self.refused: list[str] = []
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENT_THREADS)]
        for thread in self.threads:
            thread.start()

    def feed(self, items: list) -> None:
        for item in items:
            self.todo.put(item)
            time.sleep(PACE_SECONDS)

    def finish(self, timeout: float = 60.0) -> None:
        for _ in self.threads:
            self.todo.put(None)
        for thread in self.threads:
            thread.join(timeout)
            assert not thread.is_alive(), f"a client is still submitting after {timeout}s"

    def _client(self) -> None:
        session = requests.Session()
        while (item := self.todo.get()) is not None:
            single = len(item) == 1
            payload = {"expression": item[0][0]} if single else [{"expression": e} for e, _ in item]
            try:
                response = session.post(f"{self.base}/tasks", json=payload, timeout=30)
                tasks = response.json() if response.ok else None
                outcome = f"{response.status_code} {response.text[:200]}"
            except requests.RequestException as exc:
                tasks, outcome = None, repr(exc)
            if single and tasks is not None:
                tasks = [tasks]
            with self.lock:
                self.submitted += len(item)
                self.answered += 1
                if tasks is None or len(tasks) != len(item):
                    self.refused.append(f"{outcome} for {len(item)} task(s)")
                    continue
                for task, (_expression, value) in zip(tasks, item, strict=True):
                    self.expected[task["id"]] = value


def read_tasks(url: str, ids: list[int]) -> dict[int, tuple]:
    return task_rows(url, ids, "status, result, error_code, attempts")


def open_count(url: str, ids: list[int]) -> int:
    return sum(1 for status, *_ in read_tasks(url, ids).values() if status in ("SCHEDULED", "RUNNING"))


def queue_info(node, name: str) -> dict:
    listing = json.loads(node.ctl("list_queues", "name", "type", "leader", "members", "--formatter", "json"))
    return next((q for q in listing if q["name"] == name), {"name": name, "missing in": listing})


def ready_messages(node, name: str) -> int:
    """The messages ready in the queue, as its leader counts them now (list_queues' figures lag)."""
    connection = pika.BlockingConnection(pika.URLParameters(node.amqp_url))
    try:
        return connection.channel().queue_declare(name, passive=True).method.message_count
    finally:
        connection.close()


def bounded(predicate, timeout: float, failure) -> None:
    """Poll `predicate` for at most `timeout` seconds; fail with `failure()` if it never held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, failure()
        time.sleep(0.1)


def excerpt(process: Process) -> str:
    """The process's log without its one line per task or pika's reconnection noise, so what went wrong stands out."""
    lines = [line for line in process.output().splitlines() if '"app.tasks"' not in line and '"pika.' not in line]
    return "\n".join(lines[-25:])[-4000:]


@pytest.fixture
def dalc(cluster, database, tmp_path):
    """gunicorn and the dramatiq CLI on the cluster, quorum queues, every URL given with the first node first."""
    env = dalc_env(
        DALC_DATABASE_URL=database,
        DALC_BROKER_URL=cluster.amqp_urls,
        DALC_QUEUE_TYPE="quorum",
        DALC_QUEUE_NAME=f"dalc-cluster-{RUN_ID}",
        DALC_PORT=str(free_port()),
    )
    web = Process([str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", "app:create_app()"],
                  env, tmp_path / "web.log")
    worker = Process([str(BIN / "dramatiq"), "app.worker", "--processes", "1", "--threads", "4"],
                     env, tmp_path / "worker.log")
    dalc = Dalc(f"http://127.0.0.1:{env['DALC_PORT']}", env["DALC_QUEUE_NAME"], web, worker)
    try:
        wait_for_http(f"{dalc.base}/readyz", web)
        yield dalc
    finally:
        if worker.popen.poll() is None:
            worker.signal(signal.SIGCONT)
        codes = web.stop(), worker.stop()
    assert codes == (0, 0), f"exit codes of web and worker: {codes}{dalc.logs()}"


class Dalc:
    def __init__(self, base: str, queue_name: str, web: Process, worker: Process):
        self.base, self.queue_name, self.web, self.worker = base, queue_name, web, worker

    def logs(self) -> str:
        return f"\n--- web ---\n{excerpt(self.web)}\n--- worker ---\n{excerpt(self.worker)}"


def test_a_three_node_cluster_loses_no_task_when_the_node_dalc_is_connected_to_stops_under_load(
        cluster, database, dalc):
    first, second = cluster.nodes[0], cluster.nodes[1]
    items = workload()
    third = len(items) // 3
    load = Load(dalc.base)
    node_stopped = threading.Event()

    def feeder():
        load.feed(items[: 2 * third])
        node_stopped.wait(120)
        load.feed(items[2 * third :])

    def answered(count: int) -> None:
        bounded(lambda: load.answered >= count, 60,
                lambda: f"{count} requests not answered in 60s: {load.answered}{dalc.logs()}")

    feeding = threading.Thread(target=feeder, daemon=True)
    started = time.monotonic()
    feeding.start()
    answered(third)
    # Hold the worker for a moment, so that the queue has a backlog when its leader goes; the worker
    # keeps its connection to the first node, and finds it gone when it runs again.
    dalc.worker.signal(signal.SIGSTOP)
    answered(third + third // 2)
    info = queue_info(first, dalc.queue_name)
    assert (info.get("type"), info.get("leader")) == ("quorum", first.name), info
    assert set(info["members"]) == {node.name for node in cluster.nodes}, info
    bounded(lambda: ready_messages(first, dalc.queue_name) > 0, 30,
            lambda: f"no message reached the queue in 30s{dalc.logs()}")
    ready, backlog = ready_messages(first, dalc.queue_name), open_count(database, sorted(load.expected))

    stop_began = time.monotonic()
    first.stop()  # the node of the first URL: every dalc connection, and the queue's leader
    stopped = time.monotonic()
    dalc.worker.signal(signal.SIGCONT)
    node_stopped.set()
    feeding.join(120)
    load.finish()
    submitted_all = time.monotonic()
    assert load.expected, f"nothing was accepted: {load.refused[:5]}{dalc.logs()}"

    ids = sorted(load.expected)
    rows: dict = {}

    def all_final() -> bool:
        rows.update(read_tasks(database, ids))
        return all(i in rows and rows[i][0] in ("COMPLETED", "FAILED", "CANCELLED") for i in ids)

    while not all_final() and time.monotonic() < stopped + DRAIN_TIMEOUT:  # bounded; judged below
        time.sleep(0.25)
    drained = time.monotonic()
    open_ids = [i for i in ids if i not in rows or rows[i][0] not in ("COMPLETED", "FAILED", "CANCELLED")]
    statuses = collections.Counter(row[0] for row in rows.values())
    wrong = [(i, rows[i]) for i in ids if i in rows and rows[i][0] == "COMPLETED"
             and json.loads(rows[i][1]) != load.expected[i]]
    figures = (
        f"submitted {load.submitted} tasks in {load.answered} requests, accepted {len(ids)}, refused "
        f"{len(load.refused)}; at the stop ({stop_began - started:.1f}s into the load) {backlog} tasks were open "
        f"and {ready} messages ready in the queue; the stop took {stopped - stop_began:.1f}s; the load ended "
        f"{submitted_all - stopped:.1f}s after it, the last task was final {drained - stopped:.1f}s after it; "
        f"statuses {dict(statuses)}; most attempts of a task {max(row[3] for row in rows.values())}; the queue "
        f"is now led by {queue_info(second, dalc.queue_name).get('leader')}")
    print("\n" + figures)
    assert not open_ids, (
        f"{len(open_ids)} accepted tasks still open {drained - stopped:.0f}s after the node stopped, first "
        f"{[(i, rows.get(i)) for i in open_ids[:5]]}; {figures}{dalc.logs()}")
    assert statuses == {"COMPLETED": len(ids)}, f"not all COMPLETED; {figures}{dalc.logs()}"
    assert not wrong, f"wrong results (id, (status, result, error, attempts)): {wrong[:5]}; {figures}"
    assert not load.refused, f"submissions refused: {load.refused[:5]}; {figures}{dalc.logs()}"
