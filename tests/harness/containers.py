"""Run the chart's pods as Docker containers, as the kubelet would, for tests/test_containers.py.

No Kubernetes API server runs here, so this harness plays the kubelet's part for dalc's own pods:
it takes a rendered pod spec and runs its container with the rendered command, environment
(ConfigMap and Secret references resolved from the rendered objects), user and group, read-only
root, emptyDir volumes (as tmpfs), dropped capabilities, no new privileges, memory limit and grace
period. Every container shares the host's network (the private engine has no bridge), so a
Service's name is mapped to 127.0.0.1 and the tests render the chart with free ports.
"""
from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass

import requests

from harness.helm_support import ROOT, find, one, pod_spec, secret_data

ENGINE_SCRIPT = ROOT / "scripts" / "docker-engine.sh"
# Where scripts/docker-engine.sh puts its engine's socket; DOCKER_HOST, when set, wins, and without
# either the docker CLI looks for the machine's own engine.
PRIVATE_SOCKET = "/tmp/dalc-docker/docker.sock"
LABEL = "dalc.test.run"


def docker_env() -> dict[str, str]:
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    if "DOCKER_HOST" not in env and os.path.exists(PRIVATE_SOCKET):
        env["DOCKER_HOST"] = f"unix://{PRIVATE_SOCKET}"
    return env


def docker(*args: str, check: bool = True, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run the docker CLI against the engine; fail with its output when check is set."""
    done = subprocess.run(["docker", *args], env=docker_env(), capture_output=True, text=True,
                          timeout=timeout, check=False, **kwargs)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} ... exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done


@functools.cache
def engine_problem() -> str | None:
    """Say why no Docker engine answers, or None when one does."""
    try:
        done = docker("version", "--format", "{{.Server.Version}}", check=False, timeout=20)
    except FileNotFoundError:
        return "the docker CLI is not installed (scripts/docker-engine.sh start installs it)"
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 20 s"
    if done.returncode != 0:
        where = docker_env().get("DOCKER_HOST", "the docker CLI's default socket")
        return f"no Docker engine answers at {where}: {done.stderr.strip()[:300]}"
    return None


def build_image(tag: str) -> None:
    """Build the project's Dockerfile as `tag`, on the Debian base image of scripts/docker-engine.sh."""
    base = subprocess.run(["bash", str(ENGINE_SCRIPT), "base-image"], env=docker_env(), capture_output=True,
                          text=True, timeout=900, check=False)
    if base.returncode != 0:
        raise AssertionError(f"the base image could not be built:\n{base.stderr[-3000:]}")
    docker("build", "--quiet", "--force-rm", "--network", "host",
           "--build-arg", f"PYTHON_IMAGE={base.stdout.split()[-1]}", "--tag", tag, str(ROOT), timeout=900)
    # The builder leaves its build stages untagged; keep a day of them for its layer cache.
    docker("image", "prune", "--force", "--filter", "until=24h", check=False)


def image_of(obj: dict) -> str:
    """The image of a rendered workload's first container."""
    return pod_spec(obj)["containers"][0]["image"]


def quantity_bytes(quantity: str) -> int:
    """Turn a Kubernetes quantity such as 512Mi or 1G into bytes."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(quantity)


def resolve_env(container: dict, objects) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first, then env, references resolved."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(secret_data(one(objects, "Secret", source["secretRef"]["name"])))
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        ref = entry["valueFrom"]
        if "secretKeyRef" in ref:
            env[entry["name"]] = secret_data(one(objects, "Secret", ref["secretKeyRef"]["name"]))[
                ref["secretKeyRef"]["key"]]
        else:
            env[entry["name"]] = one(objects, "ConfigMap", ref["configMapKeyRef"]["name"])["data"][
                ref["configMapKeyRef"]["key"]]
    return env


def run_args(obj: dict, objects, name: str) -> list[str]:
    """The `docker run` arguments that reproduce the first container of a rendered pod or workload."""
    spec = pod_spec(obj)
    container = spec["containers"][0]
    pod_context, context = spec.get("securityContext", {}), container.get("securityContext", {})
    user = context.get("runAsUser", pod_context.get("runAsUser"))
    group = context.get("runAsGroup", pod_context.get("runAsGroup"))
    args = ["run", "--detach", "--name", name, "--label", f"{LABEL}={name}", "--network", "host",
            "--stop-timeout", str(spec.get("terminationGracePeriodSeconds", 30))]
    if user is not None:
        args += ["--user", f"{user}:{group if group is not None else user}"]
    if "fsGroup" in pod_context:
        args += ["--group-add", str(pod_context["fsGroup"])]
    if context.get("readOnlyRootFilesystem"):
        args.append("--read-only")
    if context.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    for capability in context.get("capabilities", {}).get("drop", []):
        args += ["--cap-drop", capability]
    for capability in context.get("capabilities", {}).get("add", []):
        args += ["--cap-add", capability]
    if memory := container.get("resources", {}).get("limits", {}).get("memory"):
        args += ["--memory", str(quantity_bytes(memory))]
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        assert "emptyDir" in volume, f"only emptyDir volumes are reproduced, not {volume}"
        # An emptyDir is a fresh world-writable directory; sizeLimit caps it.
        options = "rw,mode=1777,exec"
        if limit := volume["emptyDir"].get("sizeLimit"):
            options += f",size={quantity_bytes(limit)}"
        args += ["--tmpfs", f"{mount['mountPath']}:{options}"]
    # Cluster DNS, for the Services the pod may call: every port is on 127.0.0.1.
    for service in find(objects, "Service"):
        args += ["--add-host", f"{service['metadata']['name']}:127.0.0.1"]
    for key, value in resolve_env(container, objects).items():
        args += ["--env", f"{key}={value}"]
    args += ["--entrypoint", container["command"][0], container["image"], *container["command"][1:],
             *container.get("args", [])]
    return args


@dataclass
class Pod:
    """One running container made from a rendered pod spec."""

    name: str
    spec: dict

    @classmethod
    def start(cls, obj: dict, objects, name: str) -> Pod:
        docker("rm", "--force", name, check=False)
        docker(*run_args(obj, objects, name))
        return cls(name, pod_spec(obj))

    @property
    def container(self) -> dict:
        return self.spec["containers"][0]

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.name).stdout)[0]

    def running(self) -> bool:
        return self.inspect()["State"]["Running"]

    def logs(self) -> str:
        done = docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def wait(self, timeout: float) -> int:
        """Wait for the container to exit; return its exit code."""
        return int(docker("wait", self.name, timeout=timeout).stdout.strip())

    def terminate(self) -> int:
        """Stop as the kubelet does: SIGTERM, SIGKILL after the grace period; return the exit code."""
        grace = self.spec.get("terminationGracePeriodSeconds", 30)
        docker("stop", "--time", str(grace), self.name, timeout=grace + 60)
        return self.inspect()["State"]["ExitCode"]

    def remove(self) -> None:
        docker("rm", "--force", self.name, check=False)

    def port(self, reference) -> int:
        """A probe's port: a number, or the name of one of the container's ports."""
        if isinstance(reference, int):
            return reference
        return next(port["containerPort"] for port in self.container["ports"] if port["name"] == reference)

    def probe(self, kind: str) -> bool:
        """Run the container's rendered probe (readinessProbe or livenessProbe) once."""
        probe = self.container[kind]
        timeout = probe.get("timeoutSeconds", 1)
        if "httpGet" in probe:
            url = f"http://127.0.0.1:{self.port(probe['httpGet']['port'])}{probe['httpGet'].get('path', '/')}"
            try:
                return 200 <= requests.get(url, timeout=timeout).status_code < 400
            except requests.RequestException:
                return False
        try:
            with socket.create_connection(("127.0.0.1", self.port(probe["tcpSocket"]["port"])), timeout=timeout):
                return True
        except OSError:
            return False

    def await_ready(self) -> None:
        """Wait until the readiness probe passes, within what the liveness probe allows before a restart."""
        liveness = self.container["livenessProbe"]
        budget = (liveness.get("initialDelaySeconds", 0)
                  + liveness.get("periodSeconds", 10) * liveness.get("failureThreshold", 3))
        deadline = time.monotonic() + budget
        while not self.probe("readinessProbe"):
            if not self.running():
                raise AssertionError(f"{self.name} exited:\n{self.logs()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready after {budget} s, when its liveness probe would "
                                     f"have restarted it:\n{self.logs()[-4000:]}")
            time.sleep(0.5)


def remove_all(prefix: str) -> None:
    """Remove every container this run started (their names start with prefix)."""
    done = docker("ps", "--all", "--quiet", "--filter", f"name={prefix}", check=False)
    if ids := done.stdout.split():
        docker("rm", "--force", *ids, check=False)
