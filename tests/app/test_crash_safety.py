"""No acknowledged rating is lost or doubled when the server is killed mid-run.

The app runs as its own process (as in production); 20 annotators submit through
HTTP the way the browser page does; the server gets SIGKILL while they submit;
a restarted server must hold every submission a client saw acknowledged, exactly
once, and every queue must go on from where it stopped. SQLite and PostgreSQL.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from annotation_db import campaigns, migrate, users
from annotation_db.models import Annotation, Assignment
from annotation_db.session import make_engine
from tests.helpers import PASSWORD, free_port, seed_rationales

pytestmark = pytest.mark.server  # the app's server (or the CLI) as a process or thread

ROOT = Path(__file__).resolve().parents[2]
ANNOTATORS = [f"rater{i:02d}" for i in range(20)]
KILL_AFTER = 60  # acknowledged submissions before the SIGKILL


def _serve(url: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": url, "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code < 500:
                return server
        except httpx.HTTPError:
            time.sleep(0.3)
    server.kill()
    raise AssertionError("the server did not start within 120 s")


def _rater(base: str, name: str, acknowledged: list, stop: threading.Event,
           all_in: threading.Barrier) -> None:
    """Log in, wait for the others (sign-ins from one address are checked one at a
    time), then submit item after item until the server goes away."""
    body = {"session_hash": f"crash-{name}"}
    try:
        # a slow start (20 sign-ins and first items at once, on a busy machine) is no fault:
        # the timeout is generous, and a rater that could not start still arrives at the
        # barrier, so the others start together whatever happened to it
        with httpx.Client(base_url=base, timeout=120) as http:
            item = None
            try:
                http.post("/login", data={"username": name, "password": PASSWORD}
                          ).raise_for_status()
                item = http.post("/gradio_api/run/load_next",
                                 json={"data": ["crash"], **body}).json()["data"][0]
            finally:
                all_in.wait()
            while item is not None and not stop.is_set():
                response = http.post("/gradio_api/run/submit_scores", json={
                    "data": ["crash", item, 4, 3, [], "", None, "{}"], **body})
                response.raise_for_status()
                acknowledged.append(item)  # the client saw this one stored
                item = response.json()["data"][0]
    except (httpx.HTTPError, json.JSONDecodeError, KeyError, threading.BrokenBarrierError):
        return  # the server was killed: what was acknowledged is recorded


def test_sigkill_mid_run_loses_and_doubles_nothing(database_url, tmp_path):
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    run_id = seed_rationales(engine, n=400, gold=0)
    with Session(engine) as s:
        for name in ANNOTATORS:
            users.create_user(s, username=name, password=PASSWORD, role="annotator")
        campaigns.create_campaign(s, name="crash", run_ids=[run_id], annotators=ANNOTATORS,
                                  k=1, claim_review=False)
    engine.dispose()
    port, log = free_port(), tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}/"
    server = _serve(database_url, port, log)
    acknowledged: list[int] = []
    stop = threading.Event()
    # All 20 submit at once when the server dies; none has emptied its queue (20 items)
    # while the others were still signing in.
    all_in = threading.Barrier(len(ANNOTATORS), timeout=240)
    threads = [threading.Thread(target=_rater, args=(base, n, acknowledged, stop, all_in))
               for n in ANNOTATORS]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 420
    while len(acknowledged) < KILL_AFTER and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(server.pid, signal.SIGKILL)  # mid-run: requests are in flight
    server.wait()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    assert len(acknowledged) >= KILL_AFTER, log.read_text()[-3000:]

    server = _serve(database_url, port, log)  # restarted on the same database
    try:
        engine = make_engine(database_url)
        with Session(engine) as s:
            per_assignment = dict(s.execute(select(Annotation.assignment_id, func.count())
                                            .group_by(Annotation.assignment_id)).all())
        acked = set(acknowledged)
        lost = sorted(a for a in acked if a not in per_assignment)
        doubled = sorted(a for a, n in per_assignment.items() if n > 1)
        print(f"\nacknowledged {len(acked)}, stored {len(per_assignment)}, lost {len(lost)}, "
              f"duplicated {len(doubled)}, stored but not acknowledged "
              f"{len(set(per_assignment) - acked)}")
        assert len(acked) == len(acknowledged)  # no item was acknowledged twice
        assert lost == [] and doubled == []
        # Every queue goes on: the next item is one not yet rated, and it can be rated.
        ongoing: list[int] = []
        for name in ANNOTATORS[:5]:
            _rater_once(base, name, ongoing)
        with Session(engine) as s:
            statuses = s.execute(select(Assignment.status).where(
                Assignment.id.in_(ongoing))).scalars().all()
            assert len(ongoing) == 5 and not set(ongoing) & set(per_assignment)
            assert statuses == ["submitted"] * 5
        engine.dispose()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _rater_once(base: str, name: str, out: list) -> None:
    body = {"session_hash": f"after-{name}"}
    with httpx.Client(base_url=base, timeout=30) as http:
        http.post("/login", data={"username": name, "password": PASSWORD}).raise_for_status()
        item = http.post("/gradio_api/run/load_next", json={"data": ["crash"], **body}
                         ).json()["data"][0]
        http.post("/gradio_api/run/submit_scores", json={
            "data": ["crash", item, 5, 5, [], "", None, "{}"], **body}).raise_for_status()
        out.append(item)
