"""When the web's gunicorn worker holds a request back, and when a thread may take it."""
from __future__ import annotations

import inspect
import json

import pytest
from gunicorn.workers.gthread import ThreadWorker

from app.gunicorn_worker import (
    HEADERS_TOO_LARGE,
    MAX_HEADER_BYTES,
    NEED_MORE,
    READY,
    WHOLE,
    BufferingThreadWorker,
    problem_answer,
    request_state,
)

HEAD = b"POST /tasks HTTP/1.1\r\nHost: dalc\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(("data", "state"), [
    (b"", NEED_MORE),
    (b"GET /healthz HTTP/1.1\r\nHost: d", NEED_MORE),
    (b"GET /healthz HTTP/1.1\r\nHost: d\r\n\r\n", WHOLE),
    (HEAD + b"Content-Length: 5\r\n\r\n12", NEED_MORE),
    (HEAD + b"Content-Length: 5\r\n\r\n12345", WHOLE),
    (HEAD + b"content-length: 5\r\n\r\n12345GET / HTTP/1.1\r\n", WHOLE),  # pipelined: the first is whole
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n", NEED_MORE),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n0\r\n", NEED_MORE),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n0\r\n\r\n", WHOLE),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\n12345\r\n0\r\nTrailer: x\r\n\r\n", WHOLE),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", READY),  # gunicorn's parser answers 400
    (HEAD + b"Content-Length: nope\r\n\r\n", READY),  # the same
    (HEAD + b"Content-Length: 999999999\r\n\r\n", READY),  # over the body limit: refused unread
    (HEAD + b"Content-Length: 1000\r\n\r\n" + b"x" * 1000, WHOLE),  # at the limit
])
def test_a_request_is_held_until_it_is_whole(data, state):
    assert request_state(data, max_body_bytes=1000) == state


def test_headers_over_the_limit_are_too_large_complete_or_not():
    big = HEAD + b"X-Pad: " + b"a" * MAX_HEADER_BYTES
    assert request_state(big, 1000) == HEADERS_TOO_LARGE
    assert request_state(big + b"\r\n\r\n", 1000) == HEADERS_TOO_LARGE
    assert request_state(HEAD + b"X-Pad: " + b"a" * (MAX_HEADER_BYTES // 2) + b"\r\n\r\n", 1000) == WHOLE


def test_the_worker_refuses_with_a_whole_problem_response():
    answer = problem_answer(431, "Request Header Fields Too Large", "Too big.")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"Content-Type: application/problem+json" in head and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (431, "request_header_fields_too_large")


def test_the_worker_overrides_what_gthread_really_calls():
    # The overrides save system calls per request; under another gunicorn they must not go unused.
    assert "_keepalive_after" in vars(ThreadWorker) and "_keepalive_after" in vars(BufferingThreadWorker)
    assert "self._keepalive_after(" in inspect.getsource(ThreadWorker.handle)
    loop = inspect.getsource(ThreadWorker.run)
    assert "self.notify()" in loop and "self.is_parent_alive()" in loop
