"""Private RabbitMQ nodes and clusters, run by the machine's RabbitMQ as the rabbitmq user (see private_services.py)."""
from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

from harness.private_common import RUN_TAG, Service, ServiceError, has_user, private_dir, run_as, tail, wait_for
from support import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_available() -> bool:
    return (RABBITMQ_BIN / "rabbitmq-server").exists() and has_user("rabbitmq")


class RabbitNode(Service):
    """One private RabbitMQ node: its own node name, AMQP and distribution ports, data and log folders."""

    _numbers = itertools.count(1)

    def __init__(self, cookie: str | None = None):
        super().__init__()
        self.name = f"{RUN_TAG}-{next(self._numbers)}@localhost"
        self.port, self.dist_port = free_port(), free_port()
        self.dir = private_dir("rabbit", "rabbitmq")
        self.log_path = self.dir / "log" / f"{self.name}.log"
        self.process: subprocess.Popen | None = None
        home = self.dir / "home"
        for sub in ("home", "mnesia", "log"):
            (self.dir / sub).mkdir()
        # Its own Erlang cookie (the same for every node of a cluster), which rabbitmqctl reads from HOME too.
        (home / ".erlang.cookie").write_text(cookie or secrets.token_hex(16).upper())
        (home / ".erlang.cookie").chmod(0o400)
        (self.dir / "enabled_plugins").write_text("[].\n")  # no plugins: a faster start
        (self.dir / "env.conf").write_text("")  # not the machine's rabbitmq-env.conf
        # Erlang terms, not the machine's rabbitmq.conf (which takes port 5672), and no cuttlefish pass.
        (self.dir / "rabbitmq.config").write_text(
            f'[{{rabbit, [{{tcp_listeners, [{{"127.0.0.1", {self.port}}}]}}, {{loopback_users, []}}]}}].\n')
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", self.dir], check=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(home),
            "RABBITMQ_NODENAME": self.name, "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"), "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "beam.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.dir / "stdout.log", 8) + tail(self.log_path, lines)

    def launch(self) -> None:
        """Start the node's process (on the data it has) without waiting for it."""
        if self.running:
            raise ServiceError(f"{self.name} is already running")
        with open(self.dir / "stdout.log", "ab") as out:
            self.process = subprocess.Popen(
                [RABBITMQ_BIN / "rabbitmq-server"], env=self.env, cwd=self.dir, user="rabbitmq", group="rabbitmq",
                extra_groups=[], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the node answers the AMQP protocol header on its port."""
        def ready() -> bool:
            if not self.running:
                raise ServiceError(f"{self.name} exited while starting{self.log_tail()}")
            return _speaks_amqp(self.port)

        wait_for(ready, timeout, f"{self.name} accepting AMQP on port {self.port}", self.log_tail)

    def start(self, timeout: float = 60.0) -> RabbitNode:
        """Start the node (again, on the data it has) and wait until it accepts AMQP connections."""
        self.launch()
        self.wait_ready(timeout)
        return self

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run `rabbitmqctl -n <this node> args…` and return its output."""
        return run_as([RABBITMQ_BIN / "rabbitmqctl", "-n", self.name, *args], user="rabbitmq", env=self.env,
                      timeout=timeout, what=f"rabbitmqctl {' '.join(args)} on {self.name}", log=self.log_tail())

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the node cleanly (`rabbitmqctl stop`) and wait for its process to end."""
        if not self.running:
            return
        self.ctl("stop", timeout=timeout)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ServiceError(f"{self.name} still running {timeout}s after stop{self.log_tail()}") from None
        self._wait_unregistered()

    def kill(self) -> None:
        """SIGKILL the node's beam and its helpers (its whole process group), as a crash would."""
        if self.running:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self._wait_unregistered()

    def _wait_unregistered(self) -> None:
        """Wait until epmd has noticed that the node's process ended, so that nothing names it any more."""
        short = self.name.split("@")[0]
        wait_for(lambda: short not in epmd_names(), 10, f"epmd forgetting {self.name}", self.log_tail)

    def cleanup(self) -> None:
        """Kill the node if it runs and remove its folder; epmd forgets a node whose process ended."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
        super().cleanup()


def epmd_names() -> set[str]:
    """The short names of the Erlang nodes epmd knows on this machine (its NAMES request, on port 4369)."""
    try:
        with socket.create_connection(("127.0.0.1", 4369), timeout=2) as sock:
            sock.sendall(b"\x00\x01n")
            answer = b"".join(iter(lambda: sock.recv(4096), b""))
    except OSError:
        return set()
    return {line.split()[1] for line in answer[4:].decode(errors="replace").splitlines() if line.startswith("name ")}


def _speaks_amqp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(7).startswith(b"\x01\x00\x00")  # a method frame on channel 0: connection.start
    except OSError:
        return False


class RabbitCluster(Service):
    """`size` private RabbitMQ nodes joined into one cluster (`stop_app`, `join_cluster`, `start_app`)."""

    def __init__(self, size: int = 3):
        super().__init__()
        cookie = secrets.token_hex(16).upper()
        self.nodes = [RabbitNode(cookie) for _ in range(size)]

    @property
    def amqp_urls(self) -> str:
        """Every node's URL, `;`-joined, first node first: the form DALC_BROKER_URL takes for a cluster."""
        return ";".join(node.amqp_url for node in self.nodes)

    def start(self, timeout: float = 90.0) -> RabbitCluster:
        """Start every node at once, then join the others to the first, one at a time."""
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready(timeout)
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", seed.name)
            node.ctl("start_app")
        running = self.running_nodes()
        if running != {node.name for node in self.nodes}:
            raise ServiceError(f"the cluster runs {sorted(running)}, not all of its nodes{seed.log_tail()}")
        return self

    def running_nodes(self) -> set[str]:
        """The names of the nodes the cluster sees running, asked of the first node that runs."""
        node = next(n for n in self.nodes if n.running)
        return set(json.loads(node.ctl("cluster_status", "--formatter", "json"))["running_nodes"])

    def stop_node(self, index: int) -> None:
        self.nodes[index].stop()

    def start_node(self, index: int, timeout: float = 60.0) -> None:
        """Start a stopped member again: it rejoins the cluster from its own data."""
        self.nodes[index].start(timeout)

    def cleanup(self) -> None:
        threads = [threading.Thread(target=node.cleanup) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        super().cleanup()
