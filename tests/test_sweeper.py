"""The sweeper on real PostgreSQL and RabbitMQ: overdue tasks published again, dead letters settled."""
from __future__ import annotations

import datetime as dt

from app import create_app
from app.store.database import db
from app.store.models import Task
from support import BIN, Process, dalc_env, wait_until


def read(client, task_id):
    return client.get(f"/tasks/{task_id}").get_json()


def test_a_task_whose_publish_was_lost_is_published_again_and_completes(client, runtime, worker):
    task = client.post("/tasks", json={"expression": "6 * 7"}).get_json()
    client.get(f"/tasks/{task['id']}?wait=10")
    # A second task whose message never reached the broker: stored, then the process died.
    with db.connection_context():
        lost = Task.create(expression="1 + 2", published_at=dt.datetime(2000, 1, 1))
    assert runtime.sweeper.sweep_once() == 1
    done = client.get(f"/tasks/{lost.id}?wait=10").get_json()
    assert (done["status"], done["result"]) == ("COMPLETED", 3)
    assert runtime.sweeper.sweep_once() == 0


def test_a_task_posted_while_the_broker_is_away_is_accepted_and_completes_later(pg_config, client, runtime, worker):
    away = create_app(pg_config.with_overrides(broker_url="amqp://guest:guest@127.0.0.1:1/%2F"))
    try:
        response = away.test_client().post("/tasks", json={"expression": "2 ** 5"})
        assert response.status_code == 202
        task = response.get_json()
        assert not away.extensions["dalc"].publisher.flush(timeout=1)  # still holding it, retrying
    finally:
        away.extensions["dalc"].close()
    assert read(client, task["id"])["status"] == "SCHEDULED"
    # The broker is reachable again (here: through the other runtime): the sweeper publishes it.
    assert runtime.sweeper.sweep_once(older_than=dt.datetime(9999, 1, 1)) >= 1
    done = client.get(f"/tasks/{task['id']}?wait=10").get_json()
    assert (done["status"], done["result"]) == ("COMPLETED", 32)


def test_tasks_of_dead_lettered_messages_end_failed_retries_exhausted(pg_config, client, runtime, tmp_path):
    task = client.post("/tasks", json={"expression": "1 + 1"}).get_json()
    # A worker that cannot reach its database and may not retry: the broker dead-letters the message.
    env = dalc_env(
        DALC_DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere",
        DALC_BROKER_URL=pg_config.broker_url,
        DALC_QUEUE_NAME=pg_config.queue_name,
        DALC_MAX_RETRIES="0",
    )
    worker = Process([str(BIN / "dramatiq"), "app.worker", "--processes", "1", "--threads", "1"],
                     env, tmp_path / "worker.log")
    try:
        def settled():
            return runtime.sweeper.settle_dead_letters()

        assert wait_until(settled, timeout=20) == 1
    finally:
        worker.stop()
    failed = read(client, task["id"])
    assert (failed["status"], failed["error_code"]) == ("FAILED", "retries_exhausted")
    assert runtime.sweeper.settle_dead_letters() == 0
