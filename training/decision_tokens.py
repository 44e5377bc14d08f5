"""Decision tokens: the completion tokens where a rationale commits to its label (its
branch points), learned from the training rows alone.

A rationale written for a label often decides it early, in a *branch* sentence ("risk
factors are present: …" for yes, "some risk factors are recorded, but …" for no); by
the time ``Final answer:`` comes, the answer token is nearly free under teacher forcing.
Up-weighting that token alone (``rationale-weighted``) or training on the answer line
alone (``rationale-answer-only``) then moves little of the loss onto the decision. With
``decision_tokens: branch`` (:class:`training.sft_config.SFTRunConfig`) both ablations
treat the decision tokens as part of the answer (:class:`training.loss.LossWeighting`).

The rule knows nothing of any teacher: a *decision n-gram* is a run of ``n`` (3) token
ids of a training row's rationale (its labelled completion tokens before the last
``Final answer:``) that is

- *frequent*: it occurs in at least ``min_support`` (5%) of the training rows, and in
  at least ``min_rows`` (2) of them (one row's words are that row's, never a decision,
  however few the rows), and
- *label-pure*: at least ``min_purity`` (95%) of the rows it occurs in have one label.

A *decision token* is a *branch point*: the labelled token that completes the first
occurrence of a decision n-gram in each maximal run of consecutive occurrences (windows
starting at consecutive positions). The window ending one token earlier is no
decision n-gram, so that token is where the continuation becomes label-determined; under
teacher forcing the rest of a label-specific phrase, once begun, is predictable and is
not marked (marking every token inside an occurrence marked whole sentences, 45% of the
rationale tokens, so weighting them to a share of 1/6 *lowered* their weight below plain
SFT's). Phrases shared by both labels, and patient-specific words (a cited finding, an
evidence id) that are rare, are not. The n-grams are computed once
per run from the tokenized training rows (:func:`learn_decision_ngrams` takes no
version and no split: validation and test rows cannot enter it), sorted, and summarised
in the run's ``dataset.json`` (count, share of rationale tokens that are branch points,
a few decoded examples, the set's hash). The rule's parameters are constants of
:class:`DecisionRule` and the branch-point marking is fixed (a run's identity names only
``decision_tokens: branch``): a different rule must come with a new value of that field.

Marking is vectorised (:func:`decision_mask`): each window of ``n`` labelled tokens is
encoded as one integer and looked up among the n-grams' (numpy's ``isin`` on a CPU,
torch's elsewhere); about 0.25 ms for a batch of 8 × 768 tokens and 153 n-grams on a
2-core CPU (torch's lookup took 5-7 ms there while the other core was busy).

What it finds on the template teacher's free-form rationales (bundled tokenizer, a
generated cohort's rationales as training rows, half of each label): with 200 rows, 145
n-grams (169 with 100 rows); 6.3 branch points per rationale of ~111 tokens (6.7 with
100 rows), 5.7% of the rationale tokens (6.0%); with the answer token, 6.3% of the loss
tokens (6.5%). The branch points are the openings of the label-specific sentences
(" Established" dementia risk factors are present, " Some" risk factors are recorded,
"…]), but" " they" are modest on their own, " Together" these make a diagnosis, " A"
diagnosis … is unlikely, The " record" shows possible early …), the words that
settle a frame both labels share (within five years " is" unlikely / " likely", risk
factors are " present" / " recorded", before the index date "."), and cited findings
that lean hard one way (APOE ε3/ε"3", "; No" Alzheimer's disease/dementia " reported"
in parents). Where the token before an opening is rare (an uncommon evidence id), the
first pure window starts at the opening and the marked token is the one after it
(" dementia" after "]. Established").
``answer-share`` at label-only's share (1/6 with the bundled model) therefore gives the
branch points and the answer token about 2.6 times their weight under plain SFT.
"""

import functools
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

IGNORE = -100
# Decision tokens apply to these targets only (elsewhere the option is not read and is
# left out of a run's identity).
DECISION_TARGETS = ("rationale-weighted", "rationale-answer-only")
# ...and always to these, whatever the option says: rationale-align's label loss is the
# answer token's *and* the decision tokens' (under teacher forcing the answer token after
# a written conclusion is nearly free, answer loss ~0.005 in the cpu scale's free-form
# runs, so a label part of the answer alone would carry almost no gradient)
ALWAYS_DECISION_TARGETS = ("rationale-align",)


def reads_decisions(target: str, decision_tokens: str) -> bool:
    """Whether a run of ``target`` with ``decision_tokens`` learns and weights the
    decision tokens."""
    return target in ALWAYS_DECISION_TARGETS or (
        decision_tokens == "branch" and target in DECISION_TARGETS)


@dataclass(frozen=True)
class DecisionRule:
    """Which n-grams are decision n-grams (see the module docstring)."""

    n: int = 3
    min_support: float = 0.05
    min_purity: float = 0.95
    min_rows: int = 2

    def describe(self) -> dict:
        return asdict(self)


def ngram_hash(ngrams: frozenset[tuple[int, ...]]) -> str:
    """sha256 of the sorted n-grams (what a run's record names its set by)."""
    return hashlib.sha256(json.dumps(sorted(ngrams)).encode()).hexdigest()


def answer_line_start(tokens: Sequence[int], prefix_ids: Sequence[int]) -> int | None:
    """Index of the last ``Final answer:`` (``prefix_ids``) in ``tokens``, if any."""
    width = len(prefix_ids)
    for start in range(len(tokens) - width, -1, -1) if width else ():
        if tuple(tokens[start:start + width]) == tuple(prefix_ids):
            return start
    return None


def rationale_tokens(labels: Sequence[int], prefix_ids: Sequence[int]) -> list[int]:
    """The labelled tokens of a row before its last ``Final answer:`` (all its labelled
    tokens when it has none)."""
    tokens = [t for t in labels if t != IGNORE]
    start = answer_line_start(tokens, prefix_ids)
    return tokens if start is None else tokens[:start]


def learn_decision_ngrams(train_rows: Sequence[dict], train_labels: Sequence[int],
                          prefix_ids: Sequence[int], rule: DecisionRule = DecisionRule(),
                          decode: Callable[[list[int]], str] | None = None
                          ) -> tuple[frozenset[tuple[int, ...]], dict]:
    """The decision n-grams of tokenized training rows (``labels`` with the completion
    labelled, ``train_labels`` their outcomes) and a summary for the run's record.

    Only these rows are read: the caller hands over the run's training split. Rows of
    a single label decide nothing: no n-grams."""
    if len(train_rows) != len(train_labels):
        raise ValueError("one label per training row")
    rows_with: Counter = Counter()
    by_label: dict[int, Counter] = {}
    spans = [rationale_tokens(row["labels"], prefix_ids) for row in train_rows]
    for tokens, label in zip(spans, train_labels, strict=True):
        grams = {tuple(tokens[i:i + rule.n]) for i in range(len(tokens) - rule.n + 1)}
        rows_with.update(grams)
        by_label.setdefault(int(label), Counter()).update(grams)
    floor = max(rule.min_support * len(train_rows), rule.min_rows)
    ngrams = frozenset(
        gram for gram, count in rows_with.items()
        if len(by_label) > 1 and count >= floor
        and max(c[gram] for c in by_label.values()) >= rule.min_purity * count)
    return ngrams, _summary(ngrams, spans, rows_with, rule, decode)


def _summary(ngrams: frozenset, spans: list[list[int]], rows_with: Counter,
             rule: DecisionRule, decode: Callable[[list[int]], str] | None) -> dict:
    """Count, hash, the branch points (decision tokens: in all, per row and as a share
    of the rationale tokens) and the most frequent n-grams."""
    import torch

    width = max((len(s) for s in spans), default=0)
    tokens = torch.full((len(spans), max(width, 1)), IGNORE, dtype=torch.long)
    for i, span in enumerate(spans):
        tokens[i, :len(span)] = torch.tensor(span, dtype=torch.long)
    marked = int(decision_mask(tokens, ngrams).sum())
    total = sum(len(s) for s in spans)
    common = sorted(ngrams, key=lambda g: (-rows_with[g], g))[:5]
    return {"rule": rule.describe(), "ngrams": len(ngrams), "ngrams_sha256": ngram_hash(ngrams),
            "rationale_tokens": total, "decision_tokens": marked,
            "decision_tokens_per_row": round(marked / len(spans), 2) if spans else None,
            "decision_token_share": round(marked / total, 4) if total else None,
            "examples": [decode(list(g)) if decode else list(g) for g in common]}


@functools.lru_cache(maxsize=8)
def _table(ngrams: frozenset[tuple[int, ...]]):
    """(base, the digits' powers and the n-grams' integer keys, or None when the keys
    would overflow int64, and the n-grams as a tensor)."""
    import torch

    table = torch.tensor(sorted(ngrams), dtype=torch.long)
    n = table.shape[1]
    base = int(table.max()) + 2  # base − 1 stands for any token in no n-gram
    if base ** n >= 2 ** 62:  # compare windows with the n-grams directly
        return base, None, table
    powers = torch.tensor([base ** (n - 1 - i) for i in range(n)], dtype=torch.long)
    return base, (powers, (table * powers).sum(-1)), table


def decision_mask(tokens, ngrams: frozenset[tuple[int, ...]]):
    """True where ``tokens`` (batch × length; ``IGNORE`` unlabelled) holds a *branch
    point*: the token that completes the first occurrence (made of labelled tokens) of a
    decision n-gram in each maximal run of consecutive windows that are occurrences.

    The window ending one token earlier is no decision n-gram, so this token is where
    the continuation becomes label-determined; the rest of the run follows from it."""
    import torch

    mask = torch.zeros_like(tokens, dtype=torch.bool)
    if not ngrams:
        return mask
    base, keys, table = _table(ngrams)
    n = table.shape[1]
    if tokens.shape[1] < n:
        return mask
    other = base - 1
    t = torch.where((tokens >= 0) & (tokens < other), tokens, other).long()
    windows = t.unfold(1, n, 1)  # batch × (length − n + 1) × n
    if keys is not None:
        powers, table_keys = (k.to(t.device) for k in keys)
        window_keys = (windows * powers).sum(-1)
        if window_keys.device.type == "cpu":  # numpy's lookup is single-threaded: torch's
            import numpy as np  # waited 5-7 ms for a busy second core of a 2-core CPU

            hit = torch.from_numpy(np.isin(window_keys.numpy(), table_keys.numpy()))
        else:
            hit = torch.isin(window_keys, table_keys)
    else:
        hit = (windows.unsqueeze(2) == table.to(t.device)).all(-1).any(-1)
    # a window that is an occurrence while the one starting a token earlier is not
    first = hit.clone()
    first[:, 1:] &= ~hit[:, :-1]
    mask[:, n - 1:] = first  # window j's last token is j + n − 1
    return mask


def restrict_to_decisions(tokenized: list[dict], ngrams: frozenset[tuple[int, ...]],
                          prefix_ids: Sequence[int]) -> list[dict]:
    """Rows whose loss is on their decision tokens (the branch points of
    :func:`decision_mask`) and their answer line only; the rest of the rationale,
    including the continuation of each label-specific phrase, stays context:
    ``rationale-answer-only`` with decision tokens."""
    import torch

    from training.data import DataError

    out = []
    for number, row in enumerate(tokenized):
        keep = decision_mask(torch.tensor([row["labels"]]), ngrams)[0].tolist()
        on = [i for i, t in enumerate(row["labels"]) if t != IGNORE]
        start = answer_line_start([row["labels"][i] for i in on], prefix_ids)
        if start is None:
            raise DataError(f"training row {number}: the completion has no 'Final answer:' "
                            "line to put the loss on")
        answer_line = set(on[start:])
        out.append({**row, "labels": [t if keep[i] or i in answer_line else IGNORE
                                      for i, t in enumerate(row["labels"])]})
    return out
