"""dalc refuses a port another program holds, though its web binds with SO_REUSEPORT (app/ports.py)."""
from __future__ import annotations

import contextlib
import socket
import sys

import pytest
import requests

from app.ports import PortTaken, is_taken, refuse_taken
from support import BIN, Process, dalc_env, free_port, wait_for_http


@contextlib.contextmanager
def holding(port: int, *, reuse_port: bool, listen: bool = True):
    """Hold 127.0.0.1:`port` as another program would; with `reuse_port`, as a gunicorn worker of dalc does."""
    with socket.socket() as held:
        if reuse_port:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", port))
        if listen:
            held.listen()
        yield


@pytest.mark.parametrize("reuse_port", [False, True])
@pytest.mark.parametrize("listen", [False, True])
def test_a_port_bound_by_another_socket_is_taken_and_a_free_one_is_not(reuse_port, listen):
    port = free_port()
    assert not is_taken("127.0.0.1", port)
    with holding(port, reuse_port=reuse_port, listen=listen):
        assert is_taken("127.0.0.1", port)
        assert is_taken("localhost", port)
    assert not is_taken("127.0.0.1", port)


def test_refuse_taken_names_the_port_and_the_variable_and_skips_unset_ports():
    web, metrics = free_port(), free_port()
    refuse_taken("127.0.0.1", [(web, "DALC_PORT"), (0, "DALC_WEB_METRICS_PORT")])
    with holding(metrics, reuse_port=True), pytest.raises(PortTaken) as refused:
        refuse_taken("127.0.0.1", [(web, "DALC_PORT"), (metrics, "DALC_WEB_METRICS_PORT")])
    assert f"port {metrics} on 127.0.0.1 (DALC_WEB_METRICS_PORT) is already in use" in str(refused.value)


@pytest.fixture
def services_env(pg_url, amqp_url, queue_name):
    return dalc_env(DALC_DATABASE_URL=pg_url, DALC_BROKER_URL=amqp_url, DALC_QUEUE_NAME=queue_name,
                    DALC_PORT=str(free_port()), DALC_WORKER_METRICS_PORT=str(free_port()),
                    DALC_WEB_WORKERS="1", DALC_WORKER_PROCESSES="1", DALC_WORKER_THREADS="2")


def test_dalc_run_refuses_a_port_held_with_reuse_port_before_starting_anything(services_env, tmp_path):
    port = int(services_env["DALC_PORT"])
    with holding(port, reuse_port=True):
        run = Process([sys.executable, "-m", "app", "run"], services_env, tmp_path / "run.log")
        try:
            assert run.popen.wait(30) == 1
        finally:
            run.stop()
    assert f"dalc: port {port} on 127.0.0.1 (DALC_PORT) is already in use" in run.output()
    assert "gunicorn" not in run.output()  # refused before supervisord started anything


def test_a_second_gunicorn_web_on_the_same_port_exits_and_the_first_keeps_serving(services_env, tmp_path):
    command = [str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", "app:create_app()"]
    base = f"http://127.0.0.1:{services_env['DALC_PORT']}"
    first = Process(command, services_env, tmp_path / "first.log")
    try:
        wait_for_http(f"{base}/readyz", first)
        second = Process(command, services_env, tmp_path / "second.log")
        assert second.popen.wait(30) == 1
        assert f"port {services_env['DALC_PORT']} on 127.0.0.1 (DALC_PORT) is already in use" in second.output()
        assert all(requests.get(f"{base}/readyz", timeout=5).status_code == 200 for _ in range(20))
    finally:
        assert first.stop() == 0, first.output()[-2000:]
