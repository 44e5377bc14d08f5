"""Benchmark: the LLM judge on a simulated campaign, and its calibration against the panel.

    .venv/bin/python benchmarks/judge.py                     # bundled model, 32 rationales
    .venv/bin/python benchmarks/judge.py --model /path/to/a/bigger/model --n 64

Template rationales for n patients, rated by three simulated raters; the judge scores every
one through vLLM offline. Prints seconds per rationale, how many answers parsed and carried
score probabilities, and the calibration figures (κ vs consensus, α with and without the
judge, the alt-test). Against simulated raters the calibration shows the plumbing, not a
judge's worth. Writes benchmarks/results/judge.json.
"""

import sys
from pathlib import Path

# benchmarks/generation.py is named like the `generation` package: keep this folder off the path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def main() -> None:
    from sqlmodel import Session

    from annotation_db import campaigns, migrate
    from annotation_db.cohorts import in_memory_batches, store_cohort
    from annotation_db.judges import calibration_report
    from annotation_db.render import render_text
    from annotation_db.session import make_engine
    from annotation_db.simulate import simulate, simulated_raters
    from app.views import load_guidelines
    from generation.backends import VLLMBackend
    from generation.cohort import generate
    from generation.cohort_config import CohortConfig
    from generation.engine import EngineOptions, load_vllm
    from generation.judge import run_judge
    from generation.judge_config import JudgeConfig
    from generation.models import DEFAULT_MODEL, resolve_model
    from generation.rationales import generate_rationales
    from generation.rationales_config import GenerateConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    engine = make_engine(f"sqlite:///{Path(tempfile.mkdtemp()) / 'judge.sqlite'}")
    migrate.upgrade(engine)
    records, _ = generate(CohortConfig(n=args.n + 8, seed=3))
    store_cohort(engine, name="c", source="benchmark", seed=3, config={}, sampling=None,
                 batches=in_memory_batches(records, render_text))
    run = generate_rationales(engine, GenerateConfig(split="all", n=args.n, backend="template"))
    with Session(engine) as s:
        campaign = campaigns.create_campaign(s, name="bench", run_ids=[run.run_id],
                                             annotators=simulated_raters(s, 3), k=3)
        simulate(s, campaign, seed=1)
    model = resolve_model(args.model)
    llm = load_vllm(model, EngineOptions(max_model_len=4096, dtype="float32"))
    started = time.perf_counter()
    summary = run_judge(engine, JudgeConfig(campaign="bench", max_tokens=args.max_tokens,
                                            batch_size=args.n), load_guidelines("1.0"),
                        backend=VLLMBackend(model, llm=llm))
    wall = time.perf_counter() - started
    with Session(engine) as s:
        report = calibration_report(s, "bench", include_simulated=True, replicates=500)
    print(f"{args.model}: {summary.scored}/{args.n} parsed ({summary.failed} not), "
          f"{summary.with_probabilities} with score probabilities, {wall:.1f} s "
          f"({wall / args.n:.1f} s per rationale)")
    figures = {}
    for d in report["dimensions"]:
        alt = d["alt_test"]
        figures[d["dimension"]] = {
            "kappa_vs_consensus": d["kappa_vs_consensus"].get("kappa"),
            "alpha_panel": d["alpha_panel"].get("alpha"),
            "alpha_with_judge": d["alpha_with_judge"].get("alpha"),
            "alt_test_winning_rate": alt.get("winning_rate")}
        print(f"{d['dimension']}: " + ", ".join(
            f"{k} {'—' if v is None else f'{v:.3f}'}" for k, v in figures[d['dimension']].items()))
    print(report["verdict"])
    out = Path(__file__).with_name("results") / "judge.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "n": args.n, "seconds": wall,
                               "parsed": summary.scored, "with_probabilities":
                               summary.with_probabilities, "calibration": figures,
                               "verdict": report["verdict"]}, indent=2))


if __name__ == "__main__":
    main()
