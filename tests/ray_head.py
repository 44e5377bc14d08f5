"""A private Ray head node for a test module: its own process group, its own temporary
root, and every port it opens chosen free here.

Why not ``ray.init()``: a local instance started that way puts its dashboard agent on
Ray's fixed default port (52365), whether or not the dashboard is included. Two test
modules holding clusters at once (the full suite runs on two workers) then collide: the
second node's agent cannot bind, and its job API answers every submission with "No
available agent to submit job, please try again later" for as long as the first lives
(CI on 2026-12-06; reproduced here by holding one cluster while starting another).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port

RAY_DEFAULT_AGENT_PORT = 52365  # a bare ray.init()'s, elsewhere in the suite
PORT_FLAGS = ("--port", "--dashboard-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
              "--metrics-export-port", "--node-manager-port", "--object-manager-port",
              "--ray-client-server-port")
STARTS = 3  # a port found free may be taken before Ray binds it: start again on new ones


@dataclass(frozen=True)
class RayHead:
    address: str  # what ray.init(address=...) joins: host:port of the head's GCS
    dashboard_url: str  # the job API


class HeadNotUp(RuntimeError):
    pass


def _ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(set(ports.values()) - {RAY_DEFAULT_AGENT_PORT}) < len(PORT_FLAGS):
        ports = {flag: free_port() for flag in PORT_FLAGS}
    return ports


@contextmanager
def ray_head(log: Path, *, num_cpus: int = 2, dashboard: bool = True,
             timeout: float = 120) -> Iterator[RayHead]:
    """A head node on loopback until the block ends; its output goes to ``log``.

    Token authentication stays off, for the head and for this process's drivers and job
    clients while the block lasts: Ray 2.60 turns it on for a bare ``ray.init()`` (which
    then sets ``RAY_AUTH_MODE=token`` in its process) and for ``ray start`` where a token
    file exists."""
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        with ExitStack() as stack:
            for attempt in range(1, STARTS + 1):
                try:
                    node = stack.enter_context(_started(log, num_cpus=num_cpus,
                                                        dashboard=dashboard, timeout=timeout))
                    break
                except HeadNotUp:
                    if attempt == STARTS:
                        raise
            yield node
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


@contextmanager
def _started(log: Path, *, num_cpus: int, dashboard: bool, timeout: float
             ) -> Iterator[RayHead]:
    ports = _ports()
    # its own temporary root (short: Ray's socket paths must fit in 107 bytes), so it
    # does not become the machine's "current cluster" that a bare ray.init() would join
    temp_root = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    command = [sys.executable, "-c", "from ray.scripts.scripts import main; main()",
               "start", "--head", "--block", "--disable-usage-stats",
               "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus),
               "--include-dashboard", str(dashboard).lower(), "--dashboard-host", "127.0.0.1",
               "--temp-dir", temp_root,
               "--min-worker-port", "0", "--max-worker-port", "0"]  # random, as ray.init
    for flag, port in ports.items():
        command += [flag, str(port)]
    # RAY_AUTH_MODE=disabled comes with os.environ (ray_head); SIGTERM stops it at once
    env = {**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    node = RayHead(address=f"127.0.0.1:{ports['--port']}",
                   dashboard_url=f"http://127.0.0.1:{ports['--dashboard-port']}")
    with log.open("a") as out:
        head = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
    try:
        _wait_until_up(head, node, ports, log, dashboard=dashboard, timeout=timeout)
        yield node
    finally:
        _stop(head)
        shutil.rmtree(temp_root, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait_until_up(head: subprocess.Popen, node: RayHead, ports: dict[str, int], log: Path,
                   *, dashboard: bool, timeout: float) -> None:
    """Until the GCS listens and, with the dashboard, the job API answers and the agent
    listens on *its* port (an agent that lost its port is the failure this module
    exists for)."""
    deadline = time.monotonic() + timeout
    while True:
        if head.poll() is not None:
            raise HeadNotUp(f"the Ray head exited ({head.returncode}):\n{log.read_text()}")
        up = _listening(ports["--port"])
        if up and dashboard:
            try:
                with urllib.request.urlopen(f"{node.dashboard_url}/api/version", timeout=5):
                    pass
            except OSError:
                up = False
            up = up and _listening(ports["--dashboard-agent-listen-port"])
        if up:
            return
        if time.monotonic() > deadline:
            raise HeadNotUp(f"the Ray head was not up within {timeout:.0f} s:\n"
                            f"{log.read_text()}")
        time.sleep(1)


def _stop(head: subprocess.Popen) -> None:
    """The head's whole process group: GCS, raylet, agents and workers (Ray puts them in
    their own groups only with RAY_process_group_cleanup_enabled, which is off)."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(head.pid, sig)
        except ProcessLookupError:
            return
        try:
            head.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        try:  # the group may outlive its leader for a moment
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
