"""Refuse to start on a port another program already holds.

gunicorn's workers bind with SO_REUSEPORT (app/gunicorn_conf.py), so that the kernel spreads connections
over them. The same option would let a second dalc, or anything else that sets it, bind the same port
without an error and take part of the requests: a `make run` forgotten in another terminal would then
answer from another database. A probe socket without SO_REUSEPORT cannot share a port, so its bind fails
while anything holds it.
"""
from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from app.config import Config


class PortTaken(RuntimeError):
    """A port dalc needs is held by another socket."""


def is_taken(host: str, port: int) -> bool:
    """Tell whether another socket is bound to `port` on `host` (an address or a name)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, kind, proto) as probe:
        # Connections of an earlier run in TIME_WAIT do not hold the port (gunicorn's own bind allows them).
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def web_ports(config: Config) -> list[tuple[int, str]]:
    """Return the ports the web binds, each with the variable that sets it (0: not bound)."""
    return [(config.port, "DALC_PORT"), (config.web_metrics_port, "DALC_WEB_METRICS_PORT")]


def refuse_taken(host: str, ports: Iterable[tuple[int, str]]) -> None:
    """Raise PortTaken naming the first of `ports` ((port, the variable that sets it)) already held; 0 is skipped."""
    for port, variable in ports:
        if port and is_taken(host, port):
            raise PortTaken(
                f"port {port} on {host} ({variable}) is already in use, perhaps by another dalc; "
                f"stop that program or set {variable} to a free port"
            )
