"""Benchmark: disagreement-driven (adaptive) assignment against random order, simulated
with known true scores.

    .venv/bin/python benchmarks/assignment.py                 # 200 items, k = 2, cap 5
    .venv/bin/python benchmarks/assignment.py --noise 0.6 --replicates 20

Both orders first bring every item to k ratings. Random order (the baseline, in the same
run, on the same true scores and rating noise) then gives each rating to a random item below
the cap; adaptive order to the most uncertain approval decision
(:func:`annotation_db.adaptive.choose`). Prints, for each budget of random order, how many
decisions it gets right and how many ratings adaptive order needs for as many; writes
benchmarks/results/assignment.json.
"""

import sys
from pathlib import Path

# benchmarks/generation.py is named like the `generation` package: keep this folder off the path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import time

from annotation_db.adaptive import simulate_allocation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--max-ratings", type=int, default=5)
    parser.add_argument("--noise", type=float, default=0.9, help="rating noise SD (points)")
    parser.add_argument("--replicates", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    result = simulate_allocation(items=args.items, k=args.k, max_ratings=args.max_ratings,
                                 noise_sd=args.noise, replicates=args.replicates,
                                 seed=args.seed)
    seconds = time.perf_counter() - started
    print(f"{args.items} items, k = {args.k}, cap {args.max_ratings}, noise SD {args.noise}, "
          f"{args.replicates} simulated campaigns ({seconds:.1f} s); "
          f"{result['true_approvals']:.1f} truly approvable on average")
    print(f"correct decisions with every item at k: random {result['correct_at_k']['random']:.1f}"
          f", adaptive {result['correct_at_k']['adaptive']:.1f}")
    print("random ratings  correct  adaptive ratings for as many  saved")
    for level in result["levels"]:
        adaptive = level["adaptive_ratings"]
        saved = (f"{level['random_ratings'] - adaptive} "
                 f"({1 - adaptive / level['random_ratings']:.0%})" if adaptive else "never")
        print(f"{level['random_ratings']:>14}  {level['correct']:>7.1f}  "
              f"{adaptive if adaptive else '—':>28}  {saved}")
    print(f"with the whole budget ({result['budget']} ratings): random "
          f"{result['correct_at_budget']['random']:.1f}, adaptive "
          f"{result['correct_at_budget']['adaptive']:.1f} correct")
    out = Path(__file__).with_name("results") / "assignment.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({k: v for k, v in result.items() if k != "curves"}, indent=2))


if __name__ == "__main__":
    main()
