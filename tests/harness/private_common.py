"""What the private services share: their folders, commands run as the service's user, bounded waits, cleanup.

See private_services.py for the classes and how to use them.
"""
from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from support import require

RUN_TAG = f"dalc-p{os.getpid()}"  # in every node name and folder of this process, for reap_orphans()
TMP = Path(tempfile.gettempdir())
_LIVE: set = set()  # started instances, cleaned up at exit


class ServiceError(RuntimeError):
    """A private service did not start, stop or answer in time."""


def require_binaries(available: bool, what: str) -> None:
    """Require a service's binaries, to start private instances of it."""
    require(available, f"{what} binaries (and root, to run them as their own user) are not on this machine")


def has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return os.geteuid() == 0  # running as the service's user needs root


def private_dir(kind: str, owner: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"{RUN_TAG}-{kind}-"))
    shutil.chown(path, owner, owner)
    return path


def run_as(args: list, *, user: str, env: dict | None = None, timeout: float, what: str, log: str = "") -> str:
    """Run a command as `user`; return its output, or raise ServiceError with it and the service's log."""
    try:
        done = subprocess.run([str(a) for a in args], env=env, user=user, group=user, extra_groups=[],
                              cwd=TMP, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ServiceError(f"{what}: no answer within {timeout}s{log}") from None
    if done.returncode != 0:
        raise ServiceError(f"{what}: exit {done.returncode}\n{done.stdout[-1500:]}{done.stderr[-1500:]}{log}")
    return done.stdout


def wait_for(predicate, timeout: float, what: str, log) -> None:
    """Poll `predicate` every 50 ms for at most `timeout` seconds; `log()` explains a failure."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ServiceError(f"{what}: not within {timeout}s{log()}")
        time.sleep(0.05)


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\n--- last lines of {path} ---\n" + "\n".join(text)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans() -> None:
    """Kill the processes, and remove the folders, of private services whose creating process is gone."""
    owner = re.compile(rb"dalc-p(\d+)-")
    service_users = {pwd.getpwnam(name).pw_uid for name in ("rabbitmq", "postgres") if has_user(name)}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid not in service_users:
                continue
            found = owner.search((proc / "cmdline").read_bytes())
        except OSError:
            continue
        if found and not alive(int(found.group(1))):
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass
    for path in TMP.glob("dalc-p*-*"):
        found = re.match(r"dalc-p(\d+)-(rabbit|pg)-", path.name)
        if found and not alive(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True)


class Service:
    """What RabbitNode and PrivatePostgres share: `with` starts and cleans up; tracked for the exit."""

    def __init__(self):
        _LIVE.add(self)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def start(self):
        raise NotImplementedError

    def cleanup(self) -> None:
        _LIVE.discard(self)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@atexit.register
def _cleanup_all() -> None:
    for service in list(_LIVE):
        service.cleanup()
