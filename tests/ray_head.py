"""A private Ray head node for a test module: its own process group, and every port it
opens chosen free here.

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import free_port

RAY_DEFAULT_AGENT_PORT = 52365  # a bare ray.init()'s, elsewhere in the suite
PORT_FLAGS = ("--port", "--dashboard-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
              "--metrics-export-port", "--node-manager-port", "--object-manager-port",
              "--ray-client-server-port")


@dataclass(frozen=True)
class RayHead:
    address: str  # what ray.init(address=...) joins: host:port of the head's GCS
    dashboard_url: str  # the job API


def _ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    while len(set(ports.values()) - {RAY_DEFAULT_AGENT_PORT}) < len(PORT_FLAGS):
        ports = {flag: free_port() for flag in PORT_FLAGS}
    return ports


@contextmanager
def ray_head(log: Path, *, num_cpus: int = 2, dashboard: bool = True,
             timeout: float = 120) -> Iterator[RayHead]:
    """A head node on loopback until the block ends; its output goes to ``log``."""
    ports = _ports()
    command = [sys.executable, "-c", "from ray.scripts.scripts import main; main()",
               "start", "--head", "--block", "--disable-usage-stats",
               "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus),
               "--include-dashboard", str(dashboard).lower(), "--dashboard-host", "127.0.0.1"]
    for flag, port in ports.items():
        command += [flag, str(port)]
    # Its own temporary root (short: Ray's socket paths must fit in 107 bytes), so it does
    # not become the machine's "current cluster" that a bare ray.init() would join; and
    # no token authentication (Ray 2.60's `ray start` turns it on), as ray.init() has it.
    temp_root = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    command += ["--temp-dir", temp_root]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=env)
    node = RayHead(address=f"127.0.0.1:{ports['--port']}",
                   dashboard_url=f"http://127.0.0.1:{ports['--dashboard-port']}")
    try:
        _wait_until_up(head, node, log, dashboard=dashboard, timeout=timeout)
        yield node
    finally:
        _stop(head)
        shutil.rmtree(temp_root, ignore_errors=True)


def _wait_until_up(head: subprocess.Popen, node: RayHead, log: Path, *, dashboard: bool,
                   timeout: float) -> None:
    import socket

    host, port = node.address.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        if head.poll() is not None:
            raise RuntimeError(f"the Ray head exited ({head.returncode}):\n{log.read_text()}")
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                pass
            if dashboard:
                from ray.job_submission import JobSubmissionClient

                JobSubmissionClient(node.dashboard_url).list_jobs()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _stop(head: subprocess.Popen) -> None:
    """The head's whole process group: GCS, raylet, agents and workers."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(head.pid, sig)
        except ProcessLookupError:
            return
        try:
            head.wait(timeout=grace)
            # the group may outlive its leader for a moment
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        return
