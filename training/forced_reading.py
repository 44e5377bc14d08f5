"""Forced readings: a generate-then-score result read whether or not the model wrote the cue.

When a model ends its generation without ``Final answer:`` (at the token cap, or at
an end of turn), the scorer appends the cue where it stopped and reads P(yes) there
(:func:`training.evaluate.score_conversations`). The main comparison refuses such a
result when under 95% of patients reached the cue on their own: for a rationale
model it would score unfinished rationales. The mechanism section reads a few
targets' stored results this way on purpose (``training.mechanism.CONTRASTS`` names
which, docs/reproduction.md says why); this module builds those *forced* rows and
their table. Nothing is scored again: a forced row is its generate row's predictions.

A forced row says how much was forced and what came before the forced cue, over the
patients whose cue was appended:

- ``forced_share``: the share of patients whose cue was appended;
- ``forced_low_mass_share``: of those, the share that put under half of the
  next-token probability on yes/no there. The gate (``MAX_LOW_MASS_SHARE``) checks
  only that the model answers in the expected format at the forced position;
- ``forced_one_word_majority_share``: of those whose generation was kept and is not
  empty, the share in which one word is over half the words (a loop, unless the
  target's own completion is one word repeated, as filler is).
"""

import csv
import json
from collections import Counter
from pathlib import Path

from training.evaluate_config import ANSWER_NOT_REACHED

FORCED = "forced"
MAX_LOW_MASS_SHARE = 0.05
SUMMARY_KEYS = ("run_id", "target", "reached_answer_share", "forced_share",
                "forced_patients", "forced_low_mass_share", "forced_one_word_majority_share",
                "rationale_token_cap", "completion_max", "valid", "invalid_reason")


def forced_rows(rows: list[dict], targets: set[str]) -> list[dict]:
    """A forced row for each generate-scored SFT row of ``targets``; ``rows`` are left as
    they are. Only the reached-answer gate is lifted: a generate result invalid for any
    other reason gives an invalid forced row that says so."""
    out = []
    for r in rows:
        if not (r["kind"] == "sft" and r["scoring"] == "generate" and r["target"] in targets
                and r["predictions"]):
            continue
        stats = forced_patients(Path(r["predictions"]))
        low = stats["forced_low_mass_share"]
        # a generate row left out as degenerate: the same scores, the same verdict below
        other = not r["valid"] and r.get("invalid_code") not in (ANSWER_NOT_REACHED,
                                                                 "degenerate")
        valid = not other and stats["forced_patients"] is not None and (
            stats["forced_patients"] == 0 or low <= MAX_LOW_MASS_SHARE)
        reason = None if valid else (
            f"its generate result is invalid: {r['invalid_reason']}" if other else
            "its predictions do not say which patients reached the cue"
            if stats["forced_patients"] is None else
            f"{low:.0%} of the {stats['forced_patients']} patients whose cue was appended put "
            "under half of the next-token probability on yes/no there (at most "
            f"{MAX_LOW_MASS_SHARE:.0%} allowed)")
        code = None if valid else "forced_gate"
        if valid and r.get("degenerate"):  # the same scores: the same rule as every run's
            valid, reason, code = False, r["degenerate"], "degenerate"
        out.append({**r, "scoring": FORCED, "valid": valid,
                    "invalid_reason": reason, "invalid_code": code, **stats})
    return out


def forced_patients(predictions: Path) -> dict:
    """The forced share and what preceded the forced cue, from a run's stored
    ``predictions.csv`` (label mass, reached) and ``predictions.jsonl`` (generations)."""
    none = {"forced_share": None, "forced_patients": None, "forced_low_mass_share": None,
            "forced_one_word_majority_share": None}
    try:
        with predictions.open(newline="") as handle:
            scored = [row for row in csv.DictReader(handle)]
        if not scored or any(row.get("reached_answer") not in ("0", "1") for row in scored):
            return none
        forced = {row["id"]: float(row["label_mass"]) for row in scored
                  if row["reached_answer"] == "0"}
    except (OSError, ValueError, TypeError):  # unreadable, or a label mass that is no number
        return none
    texts = _generations(predictions.with_name("predictions.jsonl"))
    words = [texts[pid].split() for pid in forced if texts.get(pid, "").split()]
    return {"forced_share": len(forced) / len(scored), "forced_patients": len(forced),
            "forced_low_mass_share":
                sum(mass < 0.5 for mass in forced.values()) / len(forced) if forced else 0.0,
            "forced_one_word_majority_share":
                sum(Counter(w).most_common(1)[0][1] > len(w) / 2 for w in words) / len(words)
                if words else None}


def _generations(path: Path) -> dict[str, str]:
    try:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return {}
    return {str(x.get("id")): x["rationale"] for x in lines
            if isinstance(x, dict) and isinstance(x.get("rationale"), str)}


def table(forced: list[dict]) -> list[str]:
    """The report's "Forced readings" subsection (nothing when no row was read forced)."""
    from training.tables import number
    from training.tables import table as markdown_table

    if not forced:
        return []
    lines = ["", "### Forced readings", "",
             "Some contrasts read a target's generate-then-score predictions *forced*: where "
             "the model stopped without writing `Final answer:`, the cue was appended there "
             "and P(yes) read (docs/reproduction.md, Mechanism, says which and why). The "
             "last three figures are over the patients whose cue was appended. The gate "
             f"(at most {MAX_LOW_MASS_SHARE:.0%} of them with label mass under 0.5) checks "
             "only that the model answers yes or no there. The main comparison never reads "
             "a forced score.", ""]
    lines += markdown_table(
        ["target", "wrote the cue itself", "answer forced", "cap (tokens)",
         "longest training completion", "forced: label mass < 0.5",
         "forced: one word > half the words", "valid"], (
            [r["target"], number(r["reached_answer_share"], 2), number(r["forced_share"], 2),
             r["rationale_token_cap"] or "–", r.get("completion_max") or "–",
             number(r["forced_low_mass_share"], 3),
             number(r["forced_one_word_majority_share"], 2),
             "yes" if r["valid"] else f"no: {r['invalid_reason']}"] for r in forced))
    return lines
