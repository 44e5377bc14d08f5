"""Decision tokens: the completion tokens where a rationale commits to its label (its
branch points), learned from the training rows alone.

A rationale written for a label often decides it early, in a *branch* sentence ("risk
factors are present: …" for yes, "some risk factors are recorded, but …" for no); by
the time ``Final answer:`` comes, the answer token is nearly free under teacher forcing.
Up-weighting that token alone (``rationale-weighted``) or training on the answer line
alone (``rationale-answer-only``) then moves little of the loss onto the decision. With
``decision_tokens: branch`` (:class:`training.sft_config.SFTRunConfig`) both ablations
treat the decision tokens as part of the answer (:class:`training.loss.LossWeighting`).

The rule knows nothing of any teacher: a *decision n-gram* is a run of ``k`` token ids,
for each ``k`` of :attr:`DecisionRule.lengths` (1, 2 and 3, each length by the same
rule), of a training row's rationale (its labelled completion tokens before the last
``Final answer:``) that is

- *frequent*: it occurs in at least ``min_support`` (5%) of the training rows, and in
  at least ``min_rows`` (2) of them (one row's words are that row's, never a decision,
  however few the rows), and
- *label-pure*: at least ``min_purity`` (95%) of the rows it occurs in have one label.

(An n-gram whose last tokens are already a shorter decision n-gram ends wherever that
one does, adds nothing and is left out.) A token is a *hit* when a decision n-gram of
any length ends at it, all of the n-gram's tokens labelled. A *decision token* is a
*branch point*: the first hit of each maximal run of consecutive hits. The token before
it is no hit, so it is where the continuation becomes label-determined; under teacher
forcing the rest of a label-specific phrase, once begun, is predictable and is not
marked (marking every token inside an occurrence marked whole sentences, 45% of the
rationale tokens, so weighting them to a share of 1/6 *lowered* their weight below plain
SFT's). Phrases shared by both labels, and patient-specific words (a cited finding, an
evidence id) that are rare, are not.

Why several lengths: with 3-grams alone (the first rule), the 3-gram ending at the
opening word of a label-specific sentence spans the last digit of the evidence id before
it ("7", "].", " The" in "… [E17]. The record shows"); that digit varies, so each variant
fell below the support floor, the first label-pure window began *at* the opening, and
the token marked was the one after it (" record", " risk", " dementia"), nearly free
under teacher forcing: on the 400 rows below the opening was marked in 265 rows (" The"
in 0 of 58, " Some" in 127 of 171, " Established" in 115 of 141), which rows depending
on an evidence id. The 2-gram ("].", " The") ends at the opening whatever the id; the
1-gram " An" (an isolated possible early symptom) ends there even where "]. An" is in
too few rows (5 of 400) to count, as "]),", closing a list of cited findings, does
after any id. With 1-, 2- and 3-grams the opening is marked in 400 of 400 rows, with as
many branch points a row as before. (Where a label-pure n-gram already ends at the token
before the opening, say a high evidence id that only yes patients' longer records
reach, the run and its branch point begin there.)

The n-grams are computed once per run from the tokenized training rows
(:func:`learn_decision_ngrams` takes no version and no split: validation and test rows
cannot enter it), sorted, and summarised in the run's ``dataset.json`` (the rule, the
count in all and per length, the share of rationale tokens that are branch points, a few
decoded examples, the set's hash). The rule's parameters are the constants of
:class:`DecisionRule`; they and the marking (:data:`MARKING`) are in the identity of
every run that reads decision tokens (:meth:`DecisionRule.identity`, named by
:meth:`training.sft_config.SFTRunConfig.identity_data`), so a run marked under one rule
is never reused as one marked under another; other targets' identities do not name it.

Marking is vectorised (:func:`decision_hits`, :func:`decision_mask`): each window of
``k`` labelled tokens is encoded as one integer (a window's key from the key one token
shorter) and looked up among the sorted keys of the ``k``-grams (a binary search in numpy
on a CPU, torch's ``isin`` elsewhere); about 0.22 ms for a batch of 8 × 768 tokens of
the rows below and their 118 n-grams on a 2-core CPU with the other core busy (the
3-gram rule with numpy's ``isin``: 0.25 ms; torch's lookup took 5-7 ms there).

What it finds on the template teacher's free-form rationales (bundled tokenizer; the cpu
scale's dataset version ``study-cpu-v1``, the first free-form row of its first 400
training patients, 201 yes and 199 no; in brackets the 400 patients a run of seed 0
draws): 118 n-grams, 44 1-grams, 48 2-grams and 26 3-grams (115: 44, 45, 26; the
3-gram rule found 140); 6.6 branch points per rationale of ~109 tokens (6.5; the
3-gram rule 6.6), 6.0% of the rationale tokens (6.0%); with the answer token, 6.6% of
the loss tokens (6.5%). The branch points are the openings of the label-specific
sentences (" Established" dementia risk factors are present, " Some" risk factors are
recorded, " The" record shows possible early …, " An" isolated possible early symptom,
" Together" these make a diagnosis, " A" diagnosis … is unlikely), the words that settle
a frame both labels share (within five years " is" unlikely / " likely", risk factors
are " present" / " recorded", before the index date ".", "…])," but they are modest),
and cited findings that lean hard one way (APOE ε3/ε"3", "; No" Alzheimer's
disease/dementia " reported" in parents, an age: At "4"7 years).
``answer-share`` at label-only's share (1/6 with the bundled model) therefore gives the
branch points and the answer token about 2.5 times their weight under plain SFT.
"""

import functools
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

IGNORE = -100
# Decision tokens apply to these targets only (elsewhere the option is not read and is
# left out of a run's identity).
DECISION_TARGETS = ("rationale-weighted", "rationale-answer-only")
# ...and always to these, whatever the option says: rationale-align's label loss is the
# answer token's *and* the decision tokens' (under teacher forcing the answer token after
# a written conclusion is nearly free, answer loss ~0.005 in the cpu scale's free-form
# runs, so a label part of the answer alone would carry almost no gradient)
ALWAYS_DECISION_TARGETS = ("rationale-align",)
# What the marking does with the decision n-grams (the rule's parameters are
# DecisionRule's): in the identity of every run that reads decision tokens
# (DecisionRule.identity), so that a run marked under one rule is never taken for one
# marked under another; change it whenever the marking changes. (The first rule had no
# such name: it learned 3-grams only and marked the token completing a run's first
# 3-gram, and left an opening unmarked wherever the evidence id before it was rare; no
# archived run used it, and its runs' identities differ from this rule's.)
MARKING = "branch points: the first hit of each run of hits, a hit ending a decision n-gram"


def reads_decisions(target: str, decision_tokens: str) -> bool:
    """Whether a run of ``target`` with ``decision_tokens`` learns and weights the
    decision tokens."""
    return target in ALWAYS_DECISION_TARGETS or (
        decision_tokens == "branch" and target in DECISION_TARGETS)


@dataclass(frozen=True)
class DecisionRule:
    """Which n-grams are decision n-grams (see the module docstring): ``lengths``, the
    n-gram lengths learned (each with the same frequency and purity rule)."""

    lengths: tuple[int, ...] = (1, 2, 3)
    min_support: float = 0.05
    min_purity: float = 0.95
    min_rows: int = 2

    def __post_init__(self):
        if not self.lengths or any(k < 1 for k in self.lengths) or \
                tuple(sorted(set(self.lengths))) != tuple(self.lengths):
            raise ValueError(f"n-gram lengths must be distinct and ascending, at least 1 "
                             f"(got {self.lengths})")

    @property
    def n(self) -> int:
        """The longest n-gram length (what :func:`training.sft._loss_rows`'s message names
        when a run finds no decision n-gram)."""
        return self.lengths[-1]

    def describe(self) -> dict:
        return {"lengths": list(self.lengths), "min_support": self.min_support,
                "min_purity": self.min_purity, "min_rows": self.min_rows}

    def identity(self) -> dict:
        """What a run's identity names the rule by: the marking and the parameters."""
        return {"marking": MARKING, **self.describe()}


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

    Every length of ``rule.lengths`` is learned with the same rule; an n-gram whose last
    tokens are already a shorter decision n-gram ends where that one does, adds no hit and
    is left out. Only these rows are read: the caller hands over the run's training split.
    Rows of a single label decide nothing: no n-grams."""
    if len(train_rows) != len(train_labels):
        raise ValueError("one label per training row")
    rows_with: Counter = Counter()
    by_label: dict[int, Counter] = {}
    spans = [rationale_tokens(row["labels"], prefix_ids) for row in train_rows]
    for tokens, label in zip(spans, train_labels, strict=True):
        grams = {tuple(tokens[i:i + k]) for k in rule.lengths
                 for i in range(len(tokens) - k + 1)}
        rows_with.update(grams)
        by_label.setdefault(int(label), Counter()).update(grams)
    floor = max(rule.min_support * len(train_rows), rule.min_rows)
    pure = {gram for gram, count in rows_with.items()
            if len(by_label) > 1 and count >= floor
            and max(c[gram] for c in by_label.values()) >= rule.min_purity * count}
    ngrams = frozenset(gram for gram in pure
                       if not any(gram[i:] in pure for i in range(1, len(gram))))
    return ngrams, _summary(ngrams, spans, rows_with, rule, decode)


def _summary(ngrams: frozenset, spans: list[list[int]], rows_with: Counter,
             rule: DecisionRule, decode: Callable[[list[int]], str] | None) -> dict:
    """Count (in all and per length), hash, the branch points (decision tokens: in all,
    per row and as a share of the rationale tokens) and the most frequent n-grams."""
    import torch

    width = max((len(s) for s in spans), default=0)
    tokens = torch.full((len(spans), max(width, 1)), IGNORE, dtype=torch.long)
    for i, span in enumerate(spans):
        tokens[i, :len(span)] = torch.tensor(span, dtype=torch.long)
    marked = int(decision_mask(tokens, ngrams).sum())
    total = sum(len(s) for s in spans)
    per_length = Counter(len(g) for g in ngrams)
    common = sorted(ngrams, key=lambda g: (-rows_with[g], g))[:5]
    return {"rule": rule.describe(), "ngrams": len(ngrams),
            "ngrams_by_length": {str(k): per_length[k] for k in rule.lengths},
            "ngrams_sha256": ngram_hash(ngrams),
            "rationale_tokens": total, "decision_tokens": marked,
            "decision_tokens_per_row": round(marked / len(spans), 2) if spans else None,
            "decision_token_share": round(marked / total, 4) if total else None,
            "examples": [decode(list(g)) if decode else list(g) for g in common]}


@functools.lru_cache(maxsize=8)
def _tables(ngrams: frozenset[tuple[int, ...]]):
    """The base (one more than the largest id, and one for any other token) and, per
    length ``k``, the n-grams' sorted integer keys (``Σ token_i · base^(k−1−i)``), or the
    n-grams as a tensor where the keys would overflow int64."""
    import torch

    base = max(max(g) for g in ngrams) + 2  # base − 1 stands for any token in no n-gram
    tables = {}
    for k in sorted({len(g) for g in ngrams}):
        table = torch.tensor(sorted(g for g in ngrams if len(g) == k), dtype=torch.long)
        if base ** k >= 2 ** 62:  # compare windows with the n-grams directly
            tables[k] = (None, table)
        else:
            powers = torch.tensor([base ** (k - 1 - i) for i in range(k)], dtype=torch.long)
            tables[k] = ((table * powers).sum(-1).sort().values, table)
    return base, tables


def _isin(keys, table_keys):
    """``keys`` (any shape) found among the sorted ``table_keys``. On a CPU a binary search
    in numpy (single-threaded: torch's ``isin`` waited 5-7 ms for a busy second core of a
    2-core CPU, numpy's took ~0.27 ms, a search ~0.06 ms for 8 × 768 keys)."""
    import torch

    if keys.device.type != "cpu":
        return torch.isin(keys, table_keys.to(keys.device))
    import numpy as np

    flat, table = keys.numpy(), table_keys.numpy()
    at = np.minimum(np.searchsorted(table, flat), len(table) - 1)
    return torch.from_numpy(table[at] == flat)


def decision_hits(tokens, ngrams: frozenset[tuple[int, ...]]):
    """True where ``tokens`` (batch × length; ``IGNORE`` unlabelled) holds a *hit*: the
    last token of a decision n-gram, of any length, all of whose tokens are labelled."""
    import torch

    hit = torch.zeros_like(tokens, dtype=torch.bool)
    if not ngrams:
        return hit
    base, tables = _tables(ngrams)
    other = base - 1
    t = torch.where((tokens >= 0) & (tokens < other), tokens, other).long()
    keys = None  # keys[:, j]: the window of length k starting at j, as one integer
    for k in range(1, max(tables) + 1):
        if tokens.shape[1] < k:
            break
        keys = t if keys is None else keys[:, :-1] * base + t[:, k - 1:]
        if k not in tables:
            continue
        table_keys, table = tables[k]
        if table_keys is not None:
            found = _isin(keys, table_keys)
        else:
            windows = t.unfold(1, k, 1)  # batch × (length − k + 1) × k
            found = (windows.unsqueeze(2) == table.to(t.device)).all(-1).any(-1)
        hit[:, k - 1:] |= found  # window j's last token is j + k − 1
    return hit


def decision_mask(tokens, ngrams: frozenset[tuple[int, ...]]):
    """True where ``tokens`` (batch × length; ``IGNORE`` unlabelled) holds a *branch
    point*: the first hit (:func:`decision_hits`) of each maximal run of consecutive hits.

    The token before it is no hit, so it is where the continuation becomes
    label-determined; the rest of the run follows from it."""
    hit = decision_hits(tokens, ngrams)
    first = hit.clone()
    first[:, 1:] &= ~hit[:, :-1]
    return first


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
