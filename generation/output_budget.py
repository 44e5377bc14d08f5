"""How long a structured rationale may be so that a constrained decode closes in time.

A JSON schema whose strings may be longer than ``max_tokens`` can hold lets the decoder
run out of tokens mid-string: the output is cut off and fails, however good it was. So
the schema's length bounds (rationale characters, steps, step characters, evidence
items) are derived from the run's token budget:

    counter = tokenizer_counter(tokenizer)     # annotation_db.render
    bounds = derive_bounds(384, "free", counter, ids=all_ids, texts=histories)
    schema = json_schema(ids, "free", bounds)

Characters per token are measured with the generating model's tokenizer on the densest
text the model is given, the patients' compact histories (dates, codes and numbers),
JSON-escaped as the decoder writes them; the lowest ratio over the run's patients, times
``SAFETY``, sizes the strings. The derived bounds are then checked constructively: the
largest document they allow, its strings filled with that densest history, is
tokenized with the JSON separators the engine may write (``", "`` and ``": "``); while it
exceeds the budget the string lengths shrink. A budget too small for the format's
minimum (a 20-character rationale, a 10-character step) is a :class:`BudgetError`.
"""

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from annotation_db.errors import UserError

# The content limits of a rationale, whatever the budget (the budget only lowers them).
MAX_RATIONALE_CHARS = 1200
MIN_RATIONALE_CHARS = 20
MAX_STEPS = 6
MAX_STEP_CHARS = 400
MIN_STEP_CHARS = 10
MAX_EVIDENCE = 12
MAX_STEP_EVIDENCE = 4

SAFETY = 0.9  # share of the measured characters per token that a string may use
MARGIN_TOKENS = 4  # the end-of-sequence token and a partial token at a forced close
EVIDENCE_SHARE = 0.15  # of the budget, for the top-level evidence list
STEP_TOKENS = 80  # tokens per step that justify another step (up to MAX_STEPS)

# Without the model's tokenizer: a count that errs long for dense clinical text (the
# bundled tokenizer measures about 1.9 characters per token on the compact histories).
ESTIMATED_CHARS_PER_TOKEN = 1.5

Counter = Callable[[str], int]


class BudgetError(UserError):
    """A token budget too small for the format's shortest valid rationale."""


@dataclass(frozen=True)
class SchemaBounds:
    """The length bounds of one run's rationale schema, and what they were derived from."""

    max_tokens: int
    format: str
    chars_per_token: float  # measured, before SAFETY
    evidence: int  # top-level evidence ids
    rationale_chars: int  # free format: the rationale's characters
    steps: int  # stepwise: the number of steps ...
    step_chars: int  # ... their characters ...
    step_evidence: int  # ... and their evidence ids
    largest_document_tokens: int  # the largest valid document, tokenized
    tokenizer: str = ""  # what counted the tokens (a model spec, or "estimate")

    def as_dict(self) -> dict:
        return asdict(self)


def estimated_tokens(text: str) -> int:
    """A tokenizer-free count (see :data:`ESTIMATED_CHARS_PER_TOKEN`)."""
    return max(1, math.ceil(len(text) / ESTIMATED_CHARS_PER_TOKEN))


def escaped(text: str) -> str:
    """``text`` as it appears inside a JSON string."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def densest(texts: Sequence[str], count: Counter) -> tuple[str, float]:
    """The text with the fewest characters per token (as written in JSON), and that ratio."""
    best, ratio = "", math.inf
    for text in texts:
        if text:
            r = len(text) / max(1, count(escaped(text)))
            if r < ratio:
                best, ratio = text, r
    if not best:
        raise ValueError("no text to measure characters per token on")
    return best, ratio


def largest_document(bounds: SchemaBounds, ids: Sequence[str], filler: str) -> dict:
    """The longest document the bounds allow: every list full, with the longest ids, and
    every string at its maximum length, cut from ``filler`` (repeated as needed)."""
    longest = max(ids, key=len)

    def text(n: int) -> str:
        return (filler * (n // max(1, len(filler)) + 1))[:n]

    if bounds.format == "free":
        rationale = text(bounds.rationale_chars)
    else:
        rationale = [{"step": text(bounds.step_chars), "evidence": [longest] * bounds.step_evidence}
                     for _ in range(bounds.steps)]
    return {"prediction": "yes", "evidence": [longest] * bounds.evidence, "rationale": rationale}


def document_tokens(document: dict, count: Counter) -> int:
    """Tokens of a document written with the widest separators the engine emits."""
    return count(json.dumps(document, ensure_ascii=False, separators=(", ", ": ")))


def derive_bounds(max_tokens: int, format: str, count: Counter, *, ids: Sequence[str],
                  texts: Sequence[str], tokenizer: str = "") -> SchemaBounds:
    """Schema bounds whose largest document fits ``max_tokens`` (see the module doc).

    ``ids`` are the evidence ids the schema may list (their longest one is costed);
    ``texts`` are the histories the model is shown (their densest one is the filler).
    """
    if format not in ("free", "stepwise"):
        raise ValueError(f"unknown format {format!r}")
    if not ids:
        raise ValueError("a rationale schema needs at least one evidence id")
    filler, ratio = densest(texts, count)
    cpt = ratio * SAFETY
    longest = max(ids, key=len)
    id_tokens = count(json.dumps(longest) + ", ")
    evidence = max(1, min(MAX_EVIDENCE, len(set(ids)),
                          int(EVIDENCE_SHARE * max_tokens) // id_tokens))
    base = SchemaBounds(max_tokens, format, round(ratio, 4), evidence, 0, 0, 0, 0, 0, tokenizer)
    spare = max_tokens - MARGIN_TOKENS

    if format == "free":
        fixed = document_tokens(largest_document(base, ids, filler), count)
        chars = min(MAX_RATIONALE_CHARS, int((spare - fixed) * cpt))
        bounds = _with(base, rationale_chars=chars)
        minimum, what = MIN_RATIONALE_CHARS, "rationale"
    else:
        steps = max(1, min(MAX_STEPS, max_tokens // STEP_TOKENS))
        step_evidence = min(MAX_STEP_EVIDENCE, len(set(ids)),
                            int(0.1 * max_tokens / steps) // id_tokens)
        shape = _with(base, steps=steps, step_evidence=step_evidence)
        fixed = document_tokens(largest_document(shape, ids, filler), count)
        chars = min(MAX_STEP_CHARS, int((spare - fixed) / steps * cpt))
        bounds = _with(shape, step_chars=chars)
        minimum, what = MIN_STEP_CHARS, "step"

    def length(b: SchemaBounds) -> int:
        return b.rationale_chars if format == "free" else b.step_chars

    tokens = document_tokens(largest_document(bounds, ids, filler), count)
    while tokens > spare and length(bounds) >= minimum:
        shorter = int(length(bounds) * 0.95)
        bounds = _with(bounds, **{"rationale_chars" if format == "free" else "step_chars":
                                  shorter})
        tokens = document_tokens(largest_document(bounds, ids, filler), count)
    if length(bounds) < minimum:
        raise BudgetError(
            f"max_tokens {max_tokens} is too small for the {format} format: after the JSON "
            f"and {bounds.evidence} evidence ids, a {what} could have only {length(bounds)} "
            f"characters (at least {minimum}); raise max_tokens")
    return _with(bounds, largest_document_tokens=tokens)


def _with(bounds: SchemaBounds, **changes) -> SchemaBounds:
    return SchemaBounds(**{**asdict(bounds), **changes})
