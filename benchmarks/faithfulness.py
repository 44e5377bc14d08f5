"""Benchmark: evidence ablation's speed, with vLLM's prefix cache on and off in one run.

    .venv/bin/python benchmarks/faithfulness.py               # 48 step-by-step rationales
    .venv/bin/python benchmarks/faithfulness.py --n 96 --draws 5

The template teacher writes step-by-step rationales (several claims, each citing record
items) for n patients; the bundled model reads every variant of every rationale (full,
cited removed, only cited, the random draws, and each claim's own ablation and draws)
through the project's scorer pool, once with the prefix cache and once without, each on
its own copy of the data. Prints rationales and prompts per second for each, their ratio,
the largest difference between the two runs' probabilities (the cache must not change a
number), and the cost of a 400-rationale run at the faster rate. Engine start-up is left
out of the rates and printed apart. Writes benchmarks/results/faithfulness.json.
"""

import sys
from pathlib import Path

# benchmarks/generation.py is named like the `generation` package: keep this folder off the path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import shutil
import tempfile
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def build(folder: Path, n: int) -> tuple[str, int]:
    from annotation_db import migrate
    from annotation_db.cohorts import in_memory_batches, store_cohort
    from annotation_db.render import render_text
    from annotation_db.session import make_engine
    from generation.cohort import generate
    from generation.cohort_config import CohortConfig
    from generation.rationales import generate_rationales
    from generation.rationales_config import GenerateConfig

    url = f"sqlite:///{folder / 'base.sqlite'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    records, _ = generate(CohortConfig(n=n + 8, seed=3))
    store_cohort(engine, name="c", source="benchmark", seed=3, config={}, sampling=None,
                 batches=in_memory_batches(records, render_text))
    run = generate_rationales(engine, GenerateConfig(split="all", n=n, backend="template",
                                                     format="stepwise"))
    engine.dispose()
    return str(folder / "base.sqlite"), run.run_id


def measure(db_file: str, run_id: int, draws: int, prefix_caching: bool) -> dict:
    from sqlmodel import Session, select

    from annotation_db.models import FaithfulnessScore
    from annotation_db.session import make_engine
    from training.evidence_ablation import run_ablation
    from training.evidence_ablation_config import FaithfulnessConfig

    engine = make_engine(f"sqlite:///{db_file}")
    started = time.perf_counter()
    summary = run_ablation(engine, FaithfulnessConfig(run=run_id, draws=draws, engine="vllm",
                                                      batch_size=16,
                                                      prefix_caching=prefix_caching))
    wall = time.perf_counter() - started
    with Session(engine) as s:
        rows = {r.rationale_id: r for r in s.execute(select(FaithfulnessScore)).scalars()}
    return {"prefix_caching": prefix_caching, "rationales": summary.scored,
            "prompts": summary.prompts, "distinct_prompts": summary.distinct_prompts,
            "scoring_seconds": summary.seconds, "startup_seconds": wall - summary.seconds,
            "rationales_per_second": summary.scored / summary.seconds,
            "prompts_per_second": summary.distinct_prompts / summary.seconds,
            "p": {rid: [r.p_full, r.p_without_cited, *r.p_random] for rid, r in rows.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--draws", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="faithfulness-bench-"))
    try:
        base, run_id = build(folder, args.n)
        results = []
        for cached in (True, False):
            copy = folder / f"run-{cached}.sqlite"
            shutil.copy(base, copy)
            results.append(measure(str(copy), run_id, args.draws, cached))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    on, off = results
    diff = max(abs(a - b) for rid in on["p"] for a, b in zip(on["p"][rid], off["p"][rid],
                                                               strict=True) if a is not None)
    for r in results:
        print(f"prefix cache {'on ' if r['prefix_caching'] else 'off'}: {r['rationales']} "
              f"rationales, {r['distinct_prompts']} distinct prompts of {r['prompts']}, "
              f"{r['scoring_seconds']:.1f} s → {r['rationales_per_second']:.2f} rationales/s, "
              f"{r['prompts_per_second']:.1f} prompts/s "
              f"(engine start {r['startup_seconds']:.1f} s)")
    speedup = on["rationales_per_second"] / off["rationales_per_second"]
    best = max(on["rationales_per_second"], off["rationales_per_second"])
    print(f"cache on / off: {speedup:.2f}× · largest P(yes) difference {diff:.2e}")
    print(f"a 400-rationale run at {best:.2f} rationales/s: {400 / best / 60:.1f} min "
          "(plus one engine start)")
    out = Path(__file__).with_name("results") / "faithfulness.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"n": args.n, "draws": args.draws, "speedup_cache": speedup,
                               "max_abs_difference": diff, "minutes_for_400": 400 / best / 60,
                               "runs": [{k: v for k, v in r.items() if k != "p"}
                                        for r in results]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
