"""gunicorn's gthread worker, made to read each request whole before a thread takes it.

gthread hands a connection to one of its threads as soon as the first byte arrives, and the thread
then blocks until the headers and body are in: 120 clients sending a byte at a time took all 2 x 16
threads, and a normal client was not answered at all. This worker reads requests in its event loop
instead, without blocking, and gives a thread only a request that has fully arrived. A slow client then
costs a socket and its bytes so far, not a thread; it has REQUEST_READ_SECONDS to send its request,
headers above MAX_HEADER_BYTES are refused with 431, and a process buffers at most MAX_BUFFERED_BYTES.
"""
from __future__ import annotations

import collections
import json
import selectors
import time
from functools import partial

from gunicorn import http
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import ThreadWorker

from app.config import Config

REQUEST_READ_SECONDS = 30.0
MAX_HEADER_BYTES = 32 * 1024
MAX_BUFFERED_BYTES = 256 * 1024 * 1024
_RECV_BYTES = 64 * 1024

NEED_MORE, READY, HEADERS_TOO_LARGE = "need more", "ready", "headers too large"


def request_state(buf: bytes | bytearray, max_body_bytes: int) -> str:
    """Tell whether `buf` starts with a whole HTTP/1 request (READY), a part of one, or too large headers.

    Whatever this cannot make sense of is READY: gunicorn's parser then answers it as it always did.
    A body longer than `max_body_bytes` is READY at its headers: the application refuses it (413)
    without reading it, so it is never held in memory here.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return HEADERS_TOO_LARGE if len(buf) > MAX_HEADER_BYTES else NEED_MORE
    if end > MAX_HEADER_BYTES:
        return HEADERS_TOO_LARGE
    length, chunked, _ = _framing(buf[:end])
    body = end + 4
    if chunked:
        return _chunked_state(buf, body, max_body_bytes)
    if length is None or length > max_body_bytes:
        return READY
    return READY if len(buf) - body >= length else NEED_MORE


def _framing(head: bytes | bytearray) -> tuple[int | None, bool, bool]:
    """Return (Content-Length or None, chunked, expects 100-continue) from the header block."""
    length, chunked, expect = None, False, False
    for line in bytes(head).split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length" and value.isdigit():
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = value.endswith(b"chunked")
        elif name == b"expect":
            expect = value == b"100-continue"
    return length, chunked, expect


def _chunked_state(buf: bytes | bytearray, pos: int, max_body_bytes: int) -> str:
    start = pos
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return NEED_MORE if len(buf) - pos <= 1024 else READY
        try:
            size = int(bytes(buf[pos:line_end]).split(b";")[0].strip(), 16)
        except ValueError:
            return READY
        if size == 0:
            # The size line's own CRLF, any trailer fields, then an empty line.
            return READY if buf.find(b"\r\n\r\n", line_end) >= 0 else NEED_MORE
        pos = line_end + 2 + size + 2
        if pos - start > max_body_bytes:
            return READY
        if pos > len(buf):
            return NEED_MORE


def problem_answer(status: int, title: str, detail: str) -> bytes:
    """Return a whole HTTP/1.1 response carrying an RFC 9457 problem, for the worker to send itself."""
    code = title.lower().replace(" ", "_")
    body = json.dumps({"type": f"urn:dalc:problem:{code}", "title": title, "status": status,
                       "detail": detail, "code": code}).encode()
    head = (f"HTTP/1.1 {status} {title}\r\nContent-Type: application/problem+json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


class _Reading:
    __slots__ = ("buf", "deadline", "registered", "continued")

    def __init__(self, buf: bytes, deadline: float):
        self.buf = bytearray(buf)
        self.deadline = deadline
        self.registered = False
        self.continued = False


class BufferingThreadWorker(ThreadWorker):
    """A gthread worker whose threads only ever see requests that have fully arrived."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reading: dict[object, _Reading] = {}
        self._whole: set = set()  # connections whose request is in their parser, on the way to a thread
        self._deadlines: collections.deque = collections.deque()
        self._buffered = 0
        self._max_body_bytes = Config.from_env().max_body_bytes

    def enqueue_req(self, conn):
        """Read the connection's next request in the event loop; hand it to a thread once it is whole."""
        if conn in self._whole or self.cfg.is_ssl or negotiation.prior_knowledge_allowed(self.cfg, conn.client):
            self._whole.discard(conn)
            super().enqueue_req(conn)  # a whole request (see _advance), or a protocol this does not read
            return
        # A kept-alive connection's parser may hold the start of the next request already.
        leftover = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        reading = _Reading(leftover, time.monotonic() + REQUEST_READ_SECONDS)
        self._reading[conn] = reading
        self._buffered += len(leftover)
        self._deadlines.append((reading.deadline, conn))
        conn.sock.setblocking(False)
        if leftover and self._advance(conn, reading):
            return
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        reading.registered = True

    def _on_readable(self, conn, sock):
        reading = self._reading[conn]
        try:
            while True:
                chunk = sock.recv(_RECV_BYTES)
                if not chunk:  # the client went away
                    self._drop(conn)
                    return
                reading.buf += chunk
                self._buffered += len(chunk)
                if len(chunk) < _RECV_BYTES:
                    break
        except BlockingIOError:
            pass
        except OSError:
            self._drop(conn)
            return
        self._advance(conn, reading)

    def _advance(self, conn, reading: _Reading) -> bool:
        """Hand the request to a thread if it is whole, refuse it if it cannot be; True if either."""
        state = request_state(reading.buf, self._max_body_bytes)
        if state == HEADERS_TOO_LARGE:
            self._refuse(conn, problem_answer(431, "Request Header Fields Too Large",
                                              f"The request's headers are larger than {MAX_HEADER_BYTES} bytes."))
            return True
        if state == NEED_MORE:
            if self._buffered > MAX_BUFFERED_BYTES:
                self._refuse(conn, problem_answer(503, "Service Unavailable",
                                                  "Too many requests are arriving at once; retry in a few seconds."))
                return True
            self._continue_if_expected(conn, reading)
            return False
        self._forget(conn)
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(reading.buf))
        conn.data_ready = True  # the bytes are in the parser: the thread must not wait for the socket
        self._whole.add(conn)
        self.enqueue_req(conn)
        return True

    def _continue_if_expected(self, conn, reading: _Reading) -> None:
        # A client that sent "Expect: 100-continue" waits for this before its body; gunicorn would only
        # send it once a thread reads the body, which here happens after the body is in.
        end = reading.buf.find(b"\r\n\r\n")
        if reading.continued or end < 0 or not _framing(reading.buf[:end])[2]:
            return
        reading.continued = True
        try:
            conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        except OSError:
            pass

    def murder_pending(self):
        """Drop requests that did not arrive in time (all of them once the worker stops)."""
        super().murder_pending()
        now = time.monotonic()
        while self._deadlines and (self._deadlines[0][0] <= now or not self.alive):
            deadline, conn = self._deadlines.popleft()
            reading = self._reading.get(conn)
            if reading is not None and reading.deadline == deadline:
                self._refuse(conn, problem_answer(408, "Request Timeout",
                                                  f"The request did not arrive within {REQUEST_READ_SECONDS:g} s."))

    def _refuse(self, conn, answer: bytes) -> None:
        try:
            conn.sock.send(answer)
        except OSError:
            pass
        self._drop(conn)

    def _forget(self, conn) -> None:
        reading = self._reading.pop(conn)
        self._buffered -= len(reading.buf)
        if reading.registered:
            self.poller.unregister(conn.sock)

    def _drop(self, conn) -> None:
        self._forget(conn)
        self.nr_conns -= 1
        conn.close()
