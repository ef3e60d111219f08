"""The private services themselves: they start on their own ports and folders, keep data, and leave nothing."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pika
import psycopg2
import pytest

from harness.private_services import (
    PrivatePostgres,
    RabbitNode,
    epmd_names,
    postgres_available,
    rabbitmq_available,
    reap_orphans,
    require_binaries,
)
from support import run_sql


def publish_confirmed(url: str, queue: str, body: bytes) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue, durable=True)
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def take(url: str, queue: str) -> bytes | None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        _method, _properties, body = connection.channel().basic_get(queue, auto_ack=True)
        return body
    finally:
        connection.close()


def processes_mentioning(text: str) -> str:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in listing.splitlines() if text in line and "ps -eo" not in line)


def test_a_private_rabbitmq_node_keeps_confirmed_messages_through_a_stop_and_a_kill_and_leaves_nothing():
    require_binaries(rabbitmq_available(), "RabbitMQ")
    node = RabbitNode()
    try:
        node.start()
        assert node.port != 5672 and node.name.split("@")[0] in node.ctl("status")
        publish_confirmed(node.amqp_url, "kept", b"through a stop")
        node.stop()
        assert not node.running
        node.start()
        assert take(node.amqp_url, "kept") == b"through a stop"

        publish_confirmed(node.amqp_url, "kept", b"through a kill")
        node.kill()
        node.start()
        assert take(node.amqp_url, "kept") == b"through a kill"
    finally:
        node.cleanup()
    assert not node.dir.exists()
    assert processes_mentioning(str(node.dir)) == ""
    assert node.name.split("@")[0] not in epmd_names()


def rows(url: str) -> list:
    return [note for (note,) in run_sql("SELECT note FROM kept ORDER BY note", dsn=url)]


def insert(url: str, note: str) -> None:
    run_sql("CREATE TABLE IF NOT EXISTS kept (note text); INSERT INTO kept VALUES (%s)", [note], dsn=url)


def test_a_private_postgres_keeps_committed_rows_through_a_restart_and_a_kill_and_leaves_nothing():
    require_binaries(postgres_available(), "PostgreSQL 15")
    pg = PrivatePostgres()
    try:
        pg.start()
        assert pg.port != 5432
        url = pg.create_database("private")
        insert(url, "a: before the restart")
        pg.restart()
        insert(url, "b: before the kill")
        pg.kill()
        assert not pg.running
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(url, connect_timeout=2)
        pg.start()
        assert rows(url) == ["a: before the restart", "b: before the kill"]
        pg.stop()
        assert not pg.running
    finally:
        pg.cleanup()
    assert not pg.dir.exists()
    assert processes_mentioning(str(pg.dir)) == ""


ORPHAN = """
import sys, time
sys.path[:0] = [sys.argv[1]]
from harness.private_services import PrivatePostgres
pg = PrivatePostgres().start()
print(pg.dir, pg.postmaster_pid, flush=True)
time.sleep(120)
"""


def test_a_server_whose_test_process_died_without_cleaning_up_is_reaped():
    require_binaries(postgres_available(), "PostgreSQL 15")
    owner = subprocess.Popen([sys.executable, "-c", ORPHAN, str(Path(__file__).parent)], stdout=subprocess.PIPE,
                             text=True)
    try:
        folder, pid = owner.stdout.readline().split()
    finally:
        owner.kill()  # no atexit, no finalizer: the server is an orphan now
        owner.wait()
    assert Path(folder).exists() and processes_mentioning(folder) != ""
    reap_orphans()
    deadline = time.monotonic() + 30
    while processes_mentioning(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(folder) == "" and not Path(folder).exists(), f"postmaster {pid} left behind"
