"""Benchmark: submit → next-item latency of the annotation app under load.

    .venv/bin/python benchmarks/annotation.py     # 100k rationales, 20 concurrent raters

Builds a SQLite database with 100,000 patients and one rationale each, a campaign with
20 annotators and k = 2 (200,000 assignments), serves the Gradio app on loopback, and times
`/submit_scores` (which stores the rating and returns the next item) two ways: plain HTTP
clients posting to the event's endpoint, as the browser page does, and gradio_client (which
adds its own protocol overhead). Baseline measured in the same run: one client alone.
Drafts included: before each submission a client saves the form as a draft twice
(`/save_draft`, as the page does a moment after each score), so the submissions compete
with the draft writes of all the others; the drafts' own latency is reported beside.
Two loads, both with 20 clients: *paced*, each client pausing a random think time
(exponential, mean ``--think-seconds``, default 1 s) before every draft save and submit:
still about ten times faster than a clinician who reads the record, and the load the
target is judged at: p95 < 150 ms with 20 clients; and *flat out*, no pause at all, which
saturates the server and measures its throughput (ratings/s) and queueing, not a
clinician's wait.
Claim review is on (``--no-claim-review`` turns it off): each rationale has three claims
(sentences citing the record), and every draft save and submission carries the verdicts
given so far (the form's hidden JSON, as the page sends it), so each submission also
checks and stores three claim verdicts.
Writes benchmarks/results/annotation.json.
"""

import sys
from pathlib import Path

# benchmarks/generation.py is named like the `generation` package: keep this folder off the path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from gradio_client import Client
from sqlalchemy import insert
from sqlmodel import Session

from annotation_db import campaigns, claims, migrate, users
from annotation_db.cohorts import store_cohort
from annotation_db.models import GenerationRun, PromptTemplate, Rationale
from annotation_db.render import render_text
from annotation_db.session import make_engine
from app.screens.annotate import ItemView
from generation.cohort import CohortSimulator
from generation.cohort_config import CohortConfig

RATIONALES = 100_000
CLIENTS = 20
SUBMITS = 25  # per client
PASSWORD = "benchmark-password"
# where the form's token is among a queue event's outputs: every output over HTTP; over
# gradio_client, those it shows (it leaves out states, buttons and rows)
SHOWN = [f for f in ItemView._fields if f not in ("started", "back_btn", "undo_toast", "undo")]
TOKEN, CLAIMS = ItemView._fields.index("form_token"), ItemView._fields.index("claims")
CLIENT_TOKEN, CLIENT_CLAIMS = SHOWN.index("form_token"), SHOWN.index("claims")
CLAIM_ID = re.compile(r"data-claim='(\d+)'")


def verdicts(panel, upto: int | None = None) -> str:
    """The claim panel's JSON for the claims of the item shown (its first ``upto`` judged
    supported), as the page keeps it."""
    html = panel.get("value", "") if isinstance(panel, dict) else str(panel or "")
    ids = list(dict.fromkeys(CLAIM_ID.findall(html)))
    return json.dumps({cid: {"verdict": "supported", "should_cite": []}
                       for cid in ids[:upto]})


def build(folder: Path, n: int, clients: int, claim_review: bool = True):
    engine = make_engine(f"sqlite:///{folder / 'bench.sqlite'}")
    migrate.upgrade(engine)
    plan = CohortSimulator(CohortConfig(n=n, mode="population", seed=3)).plan()
    cohort_id = store_cohort(engine, name="bench", source="generator", seed=3, config={},
                             sampling=plan.sampling, batches=plan.row_batches(render_text, 2))
    with Session(engine) as s:
        prompt = PromptTemplate(name="p", version="1", mode="label-conditioned", format="free",
                                body="b", content_hash="b" * 64)
        s.add(prompt)
        s.flush()
        run = GenerationRun(content_hash="r" * 64, cohort_id=cohort_id,
                            prompt_template_id=prompt.id, model="bench", backend="vllm",
                            selection={}, sampling_params={}, seed=0)
        s.add(run)
        s.flush()
        now = dt.datetime.now(dt.UTC)
        s.execute(insert(Rationale), [
            {"run_id": run.id, "patient_id": pid, "variant": "original", "is_gold": False,
             "format": "free", "status": "ok", "predicted_label": pid % 2 == 0,
             "cited_evidence_ids": ["E1", "E2"],
             "text": f"Risk factors are recorded in [E1]. Blood pressure is high [E2]. Age "
                     f"adds to the risk ({pid}).",
             "raw_output": "", "attempts": 1, "created_at": now}
            for pid in range(1, n + 1)])
        s.commit()
        run_id = run.id
        claims.backfill(s)  # a bulk insert skips the ORM hook that writes claims
    names = [f"rater{i:02d}" for i in range(clients)]
    with Session(engine) as s:
        for name in names:
            users.create_user(s, username=name, password=PASSWORD, role="annotator")
        campaigns.create_campaign(s, name="bench", run_ids=[run_id], annotators=names, k=2,
                                  claim_review=claim_review)
    return engine, names


def pauser(name: str, think: float):
    """A client's think time before each action (none when ``think`` is 0), seeded per
    client so that runs offer the same load."""
    rng = random.Random(f"think-{name}")
    return (lambda: time.sleep(rng.expovariate(1 / think))) if think > 0 else (lambda: None)


def http_loop(url: str, name: str, submits: int, out: list[float], errors: list[str],
              drafts: list[float], think: float = 0.0):
    """What a logged-in browser does: one POST per draft save and per submit (the events
    skip the queue)."""
    import httpx

    pause = pauser(name, think)
    session = {"session_hash": f"bench-{name}"}  # a browser tab keeps one session
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            client.post("/login", data={"username": name, "password": PASSWORD}).raise_for_status()
            response = client.post("/gradio_api/run/load_next",
                                   json={"data": ["bench"], **session})
            shown = response.json()["data"]
            for _ in range(submits):
                item, token, panel = shown[0], shown[TOKEN], shown[CLAIMS]
                for scores, judged in (((4, None), 2), ((4, 4), None)):  # a draft each time
                    pause()
                    start = time.perf_counter()
                    client.post("/gradio_api/run/save_draft", json={
                        "data": [item, token, *scores, [], "", verdicts(panel, judged)],
                        **session}).raise_for_status()
                    drafts.append(time.perf_counter() - start)
                pause()
                start = time.perf_counter()
                response = client.post("/gradio_api/run/submit_scores", json={
                    "data": ["bench", item, 4, 4, [], "", None, verdicts(panel)], **session})
                response.raise_for_status()
                shown = response.json()["data"]
                out.append(time.perf_counter() - start)
    except Exception as exc:  # reported, never silently dropped
        errors.append(f"{name}: {exc!r}")


def rater_loop(url: str, name: str, submits: int, out: list[float], errors: list[str],
               drafts: list[float], think: float = 0.0):
    pause = pauser(name, think)
    try:
        # 20 sign-ins at once from one address are checked one after another (argon2, off
        # the event loop): the last waits longer than gradio_client's 5 s default
        client = Client(url, auth=(name, PASSWORD), verbose=False,
                        httpx_kwargs={"timeout": 60})
        shown = client.predict("bench", api_name="/load_next")
        for _ in range(submits):
            item, token, panel = shown[0], shown[CLIENT_TOKEN], shown[CLIENT_CLAIMS]
            for scores, judged in (((4, None), 2), ((4, 4), None)):
                pause()
                start = time.perf_counter()
                client.predict(item, token, *scores, [], "", verdicts(panel, judged),
                               api_name="/save_draft")
                drafts.append(time.perf_counter() - start)
            pause()
            start = time.perf_counter()
            shown = client.predict("bench", item, 4, 4, [], "", verdicts(panel),
                                   api_name="/submit_scores")
            out.append(time.perf_counter() - start)
    except Exception as exc:  # reported, never silently dropped
        errors.append(f"{name}: {exc!r}")


def _wait_for(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    import httpx

    deadline = time.time() + seconds
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit("server did not start")


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"n": len(values), "p50_ms": round(pick(0.5), 1), "p95_ms": round(pick(0.95), 1),
            "mean_ms": round(statistics.mean(values) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rationales", type=int, default=RATIONALES)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--submits", type=int, default=SUBMITS)
    parser.add_argument("--think-seconds", type=float, default=1.0,
                        help="mean pause before each action in the paced load")
    parser.add_argument("--claim-review", action=argparse.BooleanOptionalAction, default=True,
                        help="a verdict on each of the three claims with every rating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ra-bench-ui-") as tmp:
        started = time.perf_counter()
        engine, names = build(Path(tmp), args.rationales, args.clients, args.claim_review)
        print(f"setup: {args.rationales} rationales, {args.clients} annotators, k = 2, claim "
              f"review {'on' if args.claim_review else 'off'} in "
              f"{time.perf_counter() - started:.1f} s")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        engine.dispose()
        # The server runs in its own process, as in production: the clients' threads here
        # must not share its interpreter lock.
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--db",
             str(Path(tmp) / "bench.sqlite")], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
        url = f"http://127.0.0.1:{port}/"
        _wait_for(url, server)
        results, errors = {}, []
        try:
            for kind, loop in (("http", http_loop), ("gradio_client", rater_loop)):
                alone: list[float] = []
                loop(url, names[0], args.submits, alone, errors, [])
                results[kind] = {"single_client": percentiles(alone)}
                for load, think in (("paced", args.think_seconds), ("flat_out", 0.0)):
                    loaded: list[float] = []
                    drafts: list[float] = []
                    threads = [threading.Thread(target=loop, args=(
                        url, n, args.submits, loaded, errors, drafts, think)) for n in names]
                    began = time.perf_counter()
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    seconds = time.perf_counter() - began
                    results[kind][load] = {
                        "think_seconds": think, "submits": percentiles(loaded),
                        "draft_saves": percentiles(drafts),
                        "ratings_per_second": round(len(loaded) / seconds, 1),
                        "requests_per_second": round((len(loaded) + len(drafts)) / seconds, 1)}
        finally:
            server.terminate()
            server.wait(timeout=30)
    if errors:
        raise SystemExit(f"{len(errors)} raters failed: {errors[:3]}")
    for kind, result in results.items():
        one = result["single_client"]
        print(f"{kind:13s} 1 client : p50 {one['p50_ms']} ms, p95 {one['p95_ms']} ms "
              f"({one['n']} submits)")
        for load in ("paced", "flat_out"):
            run = result[load]
            many, saves = run["submits"], run["draft_saves"]
            verdict = ("met" if many["p95_ms"] < 150 else "NOT met") if load == "paced" else (
                "saturation: not judged against the target")
            print(f"{kind:13s} {args.clients} clients, {load} (think {run['think_seconds']} s):"
                  f" submit p50 {many['p50_ms']} ms, p95 {many['p95_ms']} ms "
                  f"({many['n']} submits, {run['ratings_per_second']} ratings/s, "
                  f"{run['requests_per_second']} requests/s) · p95 ratio to one client "
                  f"{many['p95_ms'] / one['p95_ms']:.1f}x · target p95 < 150 ms: {verdict}")
            print(f"{kind:13s} {args.clients} clients, {load}: draft saves p50 "
                  f"{saves['p50_ms']} ms, p95 {saves['p95_ms']} ms ({saves['n']} saves)")
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "annotation.json").write_text(json.dumps({
        "rationales": args.rationales, "clients": args.clients, "submits_per_client":
        args.submits, "claim_review": args.claim_review, **results, "cpu_count": os.cpu_count(),
        "machine": platform.machine()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
