"""The chart's dalc pods, run for real: the image built from the Dockerfile, each pod as a container.

`helm template` renders the chart pointed at this machine's PostgreSQL (a database of this run's
own) and RabbitMQ (a queue of its own); tests/harness/containers.py runs each rendered pod with its
command, environment, security context, emptyDir volumes and grace period, and probes it as the
kubelet would. Needs a Docker engine: `.ci/run` starts one with scripts/docker-engine.sh.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
import time

import peewee
import psycopg2
import pytest
import requests
import yaml

from app.store.models import Task
from harness import containers
from harness.containers import Pod
from harness.helm_support import helm_binary, one, render
from support import AMQP_URL, PG_ADMIN_DSN, RUN_ID, delete_queues, free_port, own_database, require, wait_until

pytestmark = pytest.mark.timeout(600)

PREFIX = f"dalc-{RUN_ID}-"
QUEUE = f"dalc_containers_{RUN_ID}"
# Short, so the grace-period test stays short; the chart's defaults are 30 and 60.
SHUTDOWN_SECONDS = 3
GRACE_SECONDS = 20


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """Render the chart for this machine's services, build its image, and remove what ran afterwards."""
    require(shutil.which("docker") is not None and containers.engine_problem() is None,
            f"no Docker engine: {containers.engine_problem() if shutil.which('docker') else 'no docker CLI'}")
    helm_binary()
    database = f"dalc_containers_{RUN_ID}"
    with own_database(database) as database_url:
        web_port, web_metrics_port, metrics_port = free_port(), free_port(), free_port()
        values = {
            # A tag of this run's own: runs on the same engine never use each other's image.
            "image": {"tag": f"test-{RUN_ID}"},
            "postgresql": {"enabled": False},
            "rabbitmq": {"enabled": False},
            "externalDatabase": {"url": database_url},
            "externalBroker": {"url": AMQP_URL},
            "config": {"queueName": QUEUE, "extra": {"DALC_SWEEP_AFTER_SECONDS": "2"}},
            # Every container shares the host's network: ports of this run's own, and the Service's
            # port equal to the container's, as the name dalc-web maps to 127.0.0.1.
            "web": {"containerPort": web_port, "service": {"port": web_port}, "metrics": {"port": web_metrics_port}},
            "worker": {"metrics": {"port": metrics_port}, "shutdownSeconds": SHUTDOWN_SECONDS,
                       "terminationGracePeriodSeconds": GRACE_SECONDS},
        }
        path = tmp_path_factory.mktemp("containers") / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        objects = render((path,))
        image = containers.image_of(one(objects, "Deployment", "dalc-web"))
        started = time.monotonic()
        containers.build_image(image)
        print(f"image {image} built in {time.monotonic() - started:.1f} s")
        try:
            yield Release(objects, database, f"http://127.0.0.1:{web_port}")
        finally:
            containers.remove_all(PREFIX)
            # The tag only: its layers stay in the builder's cache for the next run.
            containers.docker("image", "rm", "--no-prune", image, check=False)
            delete_queues(AMQP_URL, QUEUE)


class Release:
    def __init__(self, objects, database: str, url: str):
        self.objects, self.database, self.url = objects, database, url
        # The chart requires API tokens: the pods fixture makes one in the web pod, as docs/security.md says.
        self.headers: dict[str, str] = {}
        self.owner_id = 0

    def start(self, kind: str, name: str, suffix: str = "") -> Pod:
        return Pod.start(one(self.objects, kind, name), self.objects, PREFIX + name.removeprefix("dalc-") + suffix)

    def connect(self):
        return psycopg2.connect(PG_ADMIN_DSN.replace("dbname=postgres", f"dbname={self.database}"))


@pytest.fixture(scope="module")
def migrated(release):
    job = release.start("Job", "dalc-migrate")
    assert job.wait(timeout=300) == 0, job.logs()
    return job


@pytest.fixture(scope="module")
def pods(release, migrated):
    """The web, a worker and the sweeper, each ready by its rendered readiness probe."""
    started = {name: release.start("Deployment", f"dalc-{name}") for name in ("web", "worker", "sweeper")}
    for pod in started.values():
        if "readinessProbe" in pod.container:
            pod.await_ready()
    made = containers.docker("exec", started["web"].name, "dalc", "tokens", "create", "containers")
    release.headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    with contextlib.closing(release.connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM api_token WHERE name = 'containers'")
        release.owner_id = cursor.fetchone()[0]
    return started


def submit(release, *expressions: str) -> list[int]:
    body = [{"expression": expression} for expression in expressions]
    answer = requests.post(f"{release.url}/tasks", json=body, headers=release.headers, timeout=30)
    assert answer.status_code == 202, answer.text
    return [task["id"] for task in answer.json()]


def final(release, task_id: int) -> dict:
    def done():
        task = requests.get(f"{release.url}/tasks/{task_id}?wait=10", headers=release.headers, timeout=30).json()
        return task if task["status"] in ("COMPLETED", "FAILED", "CANCELLED") else None

    return wait_until(done, timeout=120)


def test_the_migration_job_creates_the_schema(release, migrated):
    with contextlib.closing(release.connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('task') IS NOT NULL")
        assert cursor.fetchone() == (True,)
    assert "schema up to date" in migrated.logs()


def test_web_and_worker_pass_their_rendered_probes_and_the_sweeper_runs(pods):
    for pod in (pods["web"], pods["worker"]):
        assert pod.probe("readinessProbe") and pod.probe("livenessProbe"), pod.logs()
    assert pods["sweeper"].running(), pods["sweeper"].logs()


def test_every_pod_runs_as_rendered_unprivileged_on_a_read_only_root(release, pods):
    for name, pod in pods.items():
        state = pod.inspect()
        rendered = one(release.objects, "Deployment", f"dalc-{name}")["spec"]["template"]["spec"]
        assert state["Config"]["User"] == f"{rendered['securityContext']['runAsUser']}:" \
                                          f"{rendered['securityContext']['runAsGroup']}"
        assert state["HostConfig"]["ReadonlyRootfs"] is True
        assert state["HostConfig"]["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in state["HostConfig"]["SecurityOpt"]
        assert set(state["HostConfig"]["Tmpfs"]) == {mount["mountPath"] for mount in pod.container["volumeMounts"]}
        limit = pod.container["resources"]["limits"]["memory"]
        assert state["HostConfig"]["Memory"] == containers.quantity_bytes(limit)
        written = containers.docker("exec", pod.name, "python", "-c", "open('/dalc-was-here', 'w')", check=False)
        assert written.returncode != 0 and "Read-only file system" in written.stderr


def test_a_task_submitted_to_the_web_finishes_in_the_worker(release, pods):
    refused = requests.post(f"{release.url}/tasks", json={"expression": "1"}, timeout=30)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    [task_id] = submit(release, "(1 + 2) * 3")
    task = final(release, task_id)
    assert (task["status"], task["result"]) == ("COMPLETED", 9), task


def test_the_workers_metrics_count_the_tasks_they_evaluated(release, pods):
    [task_id] = submit(release, "2 ** 10")
    assert final(release, task_id)["status"] == "COMPLETED"
    port = pods["worker"].port("metrics")
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert re.search(r'^dalc_tasks_finished_total\{[^}]*status="COMPLETED"[^}]*\} [1-9]', text, re.MULTILINE), text


def test_the_web_counts_no_task_overdue_while_the_sweeper_runs(release, pods):
    text = requests.get(f"http://127.0.0.1:{pods['web'].port('metrics')}/metrics", timeout=10).text
    assert re.search(r"^dalc_tasks_overdue 0\.0$", text, re.MULTILINE), text
    # Not on the API's port, which clients reach.
    assert requests.get(f"{release.url}/metrics", timeout=10).status_code == 404


def test_the_helm_test_pod_gets_2_for_1_plus_1(release, pods):
    pod = release.start("Pod", "dalc-test-expression")
    assert pod.wait(timeout=300) == 0, pod.logs()
    assert "1 + 1 = 2" in pod.logs()


def test_the_sweeper_publishes_a_task_whose_message_was_lost(release, pods):
    # Stored, then the web died before publishing: only the sweeper can send it to a worker.
    database = peewee.PostgresqlDatabase(release.database, host="127.0.0.1", port=5432, user="postgres")
    with database.bind_ctx([Task]), database.connection_context():
        lost = Task.create(expression="6 * 7", published_at=dt.datetime(2000, 1, 1), owner_id=release.owner_id)
    task = final(release, lost.id)
    assert (task["status"], task["result"]) == ("COMPLETED", 42), pods["sweeper"].logs()[-4000:]


def test_the_purge_cronjobs_pod_runs_to_completion(release, migrated):
    pod = release.start("CronJob", "dalc-purge")
    assert pod.wait(timeout=300) == 0, pod.logs()
    assert "purge round:" in pod.logs()


def test_a_sigtermed_worker_ends_within_its_grace_period_and_its_tasks_finish_elsewhere(release, pods):
    worker = pods["worker"]
    # Hold the worker's claim on a row lock, so a task is in its hands when SIGTERM comes.
    containers.docker("pause", worker.name)
    ids = submit(release, *(f"{n} * 2" for n in range(20)))
    locker = release.connect()
    try:
        with locker.cursor() as cursor:
            cursor.execute("SELECT id FROM task WHERE id = %s FOR UPDATE", (ids[0],))
        containers.docker("unpause", worker.name)
        wait_until(lambda: _waiting_on_a_lock(release), timeout=60)
        started = time.monotonic()
        exit_code = worker.terminate()
        print(f"worker stopped {time.monotonic() - started:.1f} s after SIGTERM (shutdown timeout "
              f"{SHUTDOWN_SECONDS} s, grace {GRACE_SECONDS} s), exit code {exit_code}")
        # 137 would be the kubelet's SIGKILL at the end of the grace period.
        assert exit_code == 0, worker.logs()[-4000:]
    finally:
        locker.rollback()
        locker.close()
    replacement = release.start("Deployment", "dalc-worker", suffix="-2")
    replacement.await_ready()
    tasks = [final(release, task_id) for task_id in ids]
    assert [(task["status"], task["result"]) for task in tasks] == [("COMPLETED", n * 2) for n in range(20)]


def test_web_and_sweeper_end_by_themselves_on_sigterm(pods):
    for name in ("web", "sweeper"):
        assert pods[name].terminate() == 0, pods[name].logs()[-4000:]


def _waiting_on_a_lock(release) -> bool:
    with contextlib.closing(release.connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0] > 0

