"""Slow and abusive clients against the production web, started exactly as `make run` starts it.

The command comes from supervisord.conf, so these tests hold whichever HTTP server that file names.
"""
from __future__ import annotations

import configparser
import json
import shlex
import socket
import threading
import time

import pytest
import requests

from app.cli import SUPERVISOR_CONF
from support import BIN, Process, dalc_env, free_port, wait_for_http

SLOW_CLIENTS = 120
NORMAL_REQUESTS = 20
BODY = b'{"expression": "1 + 1"}'


def web_command() -> list[str]:
    """Return the web's command line as supervisord runs it."""
    parser = configparser.RawConfigParser()
    parser.read(SUPERVISOR_CONF)
    command = parser.get("program:web", "command").replace("%(ENV_DALC_SUPERVISOR_BIN)s", str(BIN))
    return shlex.split(command)


@pytest.fixture
def web(pg_url, amqp_url, queue_name, tmp_path):
    port = free_port()
    # The production defaults: 2 processes of 16 threads, fewer than the slow clients.
    env = dalc_env(DALC_DATABASE_URL=pg_url, DALC_BROKER_URL=amqp_url, DALC_QUEUE_NAME=queue_name,
                   DALC_PORT=str(port), DALC_WEB_WORKERS="2", DALC_WEB_THREADS="16")
    process = Process(web_command(), env, tmp_path / "web.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/readyz", process, timeout=40)
        yield base, port
    finally:
        process.stop()


def request_bytes(body: bytes = BODY, **headers: str) -> tuple[bytes, bytes]:
    """Return the head and body of a POST /tasks."""
    fields = {"Host": "dalc", "Content-Type": "application/json", "Content-Length": str(len(body)), **headers}
    head = "POST /tasks HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode(), body


class Trickle:
    """Connections that send their requests one byte at a time, round after round, until stopped."""

    def __init__(self, port: int, count: int):
        head, body = request_bytes()
        self.pending = []
        for n in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            # Half send their headers a byte at a time, half send headers at once and the body slowly.
            if n % 2:
                sock.sendall(head)
                self.pending.append([sock, body])
            else:
                self.pending.append([sock, head + body])
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            for entry in self.pending:
                sock, rest = entry
                if len(rest) > 1:  # never the last byte: the request stays incomplete
                    try:
                        sock.send(rest[:1])
                    except OSError:
                        continue
                    entry[1] = rest[1:]
            self.rounds += 1
            self._stop.wait(0.5)

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        for sock, _ in self.pending:
            sock.close()


def read_response(stream) -> tuple[int, dict, bytes]:
    """Read one HTTP/1.1 response with a Content-Length from a socket's binary file."""
    status_line = stream.readline()
    if not status_line:
        raise ConnectionError("closed before a response")
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = stream.read(int(headers.get("content-length", 0)))
    return int(status_line.split()[1]), headers, body


def test_a_normal_client_is_served_while_many_clients_send_a_byte_at_a_time(web):
    base, port = web
    trickle = Trickle(port, SLOW_CLIENTS)
    try:
        while trickle.rounds < 3:  # every slow client has started its request
            time.sleep(0.1)
        answered = 0
        for n in range(NORMAL_REQUESTS):
            # A generous bound: it is here so that a starved client fails the test instead of hanging it.
            created = requests.post(f"{base}/tasks", json={"expression": f"{n} + 1"}, timeout=15)
            assert created.status_code == 202
            read = requests.get(f"{base}/tasks/{created.json()['id']}", timeout=15)
            answered += read.status_code == 200
        assert answered == NORMAL_REQUESTS
    finally:
        trickle.stop()
    assert requests.get(f"{base}/healthz", timeout=15).status_code == 200


def test_oversized_headers_are_refused_with_431_and_the_server_keeps_serving(web):
    base, port = web
    # 40 fields of 2 KiB: each one is small, together they are 80 KiB.
    padding = {f"X-Padding-{n}": "a" * 2048 for n in range(40)}
    head, body = request_bytes(**padding)
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head + body)
        status, headers, answer = read_response(sock.makefile("rb"))
    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(answer)["status"] == 431
    assert requests.post(f"{base}/tasks", json={"expression": "1"}, timeout=15).status_code == 202


def test_a_client_that_expects_100_continue_gets_it_and_is_served(web):
    _, port = web
    head, body = request_bytes(Expect="100-continue")
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        stream = sock.makefile("rb")
        sock.sendall(head)
        status, _, _ = read_response(stream)
        assert status == 100
        sock.sendall(body)
        status, _, answer = read_response(stream)
        while status == 100:  # a server may send more than one 1xx before the answer (RFC 9110, 15.2)
            status, _, answer = read_response(stream)
    assert status == 202 and json.loads(answer)["expression"] == "1 + 1"


def test_pipelined_and_kept_alive_requests_are_all_answered(web):
    _, port = web
    one = b"".join(request_bytes())
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        stream = sock.makefile("rb")
        sock.sendall(one + one)  # two requests in one write
        first, second = read_response(stream), read_response(stream)
        sock.sendall(one)  # and a third on the same connection, later
        third = read_response(stream)
    assert [r[0] for r in (first, second, third)] == [202, 202, 202]
    assert len({json.loads(r[2])["id"] for r in (first, second, third)}) == 3


def test_a_body_the_application_never_reads_does_not_leak_into_the_next_request(web):
    # 404 and 405 answer without reading the body; what is left of it must not be taken for a request.
    _, port = web
    body = b'{"expression": "GET /livez HTTP/1.1"}' * 50
    head = (f"POST /no-such-page HTTP/1.1\r\nHost: dalc\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    chunked = (b"PUT /tasks HTTP/1.1\r\nHost: dalc\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        stream = sock.makefile("rb")
        sock.sendall(head + body + chunked + b"".join(request_bytes()))
        answers = [read_response(stream) for _ in range(3)]
        sock.sendall(b"".join(request_bytes()))  # the connection is still good
        answers.append(read_response(stream))
    assert [a[0] for a in answers] == [404, 405, 202, 202]
