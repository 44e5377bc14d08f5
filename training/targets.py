"""What each SFT target teaches: its rows, derived from one verified dataset version.

The study's three targets are the exported views as they are: ``label`` (the
answer line), ``rationale-free`` and ``rationale-stepwise`` (a rationale, then the
answer line). The mechanism ablations separate "a narrative conflicts with
discrimination" from simpler explanations; each is derived here, per patient,
from the ``label_only`` and ``rationale_free`` rows of the *same* version, so no
new export and no new audit is involved:

``label-padded``
    The answer line after neutral filler (``. . . .``: one punctuation token
    repeated, no patient information). Length without content: with
    ``filler_length: median`` (the default) every row's filler is as long as the
    median free-form rationale of the version's training split, whatever the
    patient's label; with ``own`` (the first mechanism grid's) as long as the same
    patient's rationale, which gives the label away where rationale length follows it
    (template rationales: "no" ones run longer; length alone separates the cpu
    scale's training rows with AUROC 0.99).
``rationale-weighted``
    The free-form rows, with the answer token's weight in the loss raised until
    its share of the loss weight equals label-only's (:mod:`training.sft`).
``rationale-answer-only``
    The free-form rows with the loss on the answer line only: the rationale is
    context, never a target (the limit of the weighting above).
``answer-first``
    The answer line, then the free-form rationale. Scored at the first answer
    token, without generating.
``multitask``
    Two rows per patient, distilling step-by-step style: the user turn prefixed
    ``predict:`` → the answer line, ``explain:`` → the rationale alone, their losses
    weighted α and 1 − α (``multitask_alpha``). Scored with the ``predict:`` prefix.
``rationale-shuffled``
    The free-form rationale with its words shuffled (seeded by patient): the same
    content and length, no narrative.
``rationale-align``
    The free-form rows, the label's and the rationale's losses each normalised by its
    own length and weighted α and 1 − α (``align_alpha``; :mod:`training.loss`); the
    label's tokens are the answer token and the rationale's decision tokens (below),
    whatever ``decision_tokens`` says. Not an ablation: a rationale target that aims
    not to lose to label-only, trained in the main grid beside the study's three.

With ``decision_tokens: branch``, ``rationale-weighted`` and ``rationale-answer-only``
treat the rationale's *decision tokens* (its branch points: the first token of each run
of tokens that end an n-gram label-pure in the training rows,
:mod:`training.decision_tokens`) as part of the
answer: weighted with it, or trained on with the answer line.

Each target also says how a model trained on it is scored by default: *direct*
(P(yes) right after the prompt and ``Final answer:``) or *generate* (write until
``Final answer:`` first). A filler model can also be read *prefilled*: its filler
written in for it, at the training rows' median length, then ``Final answer:``.
"""

import random
from dataclasses import dataclass
from typing import Literal

from annotation_db.student_task import (
    answer_line,
    completion_messages,
    split_assistant_text,
    with_task,
)

Target = Literal["label", "rationale-free", "rationale-stepwise", "label-padded",
                 "rationale-weighted", "rationale-answer-only", "answer-first", "multitask",
                 "rationale-shuffled", "rationale-align"]
Scoring = Literal["direct", "generate"]
FILLER_UNIT = "."
FillerLength = Literal["median", "own"]


@dataclass(frozen=True)
class TargetSpec:
    """One target: the views its rows come from and how its model is scored."""

    view: str  # the view whose rows (and validation/test prompts) it is built on
    sources: tuple[str, ...]  # every view a patient needs a row in
    scoring: Scoring
    loss_on: Literal["completion", "answer"] = "completion"
    weighting: Literal["none", "answer-share", "multitask", "align"] = "none"
    needs_tokenizer: bool = False
    derived: bool = True
    ablation: bool = True  # a mechanism ablation (its grid gets the Mechanism section)
    filler: bool = False  # writes neutral filler before its answer (scorable "prefilled")
    summary: str = ""  # what a model trained on it learns, in a report's words


TARGETS: dict[str, TargetSpec] = {
    "label": TargetSpec("label_only", ("label_only",), "direct", derived=False,
                        summary="the answer line alone"),
    "rationale-free": TargetSpec("rationale_free", ("rationale_free",), "generate",
                                 derived=False, summary="the audited free-form rationale, "
                                 "then the answer line, every token weighted alike"),
    "rationale-stepwise": TargetSpec("rationale_stepwise", ("rationale_stepwise",),
                                     "generate", derived=False,
                                     summary="the audited step-by-step rationale, then the "
                                     "answer line, every token weighted alike"),
    "label-padded": TargetSpec("rationale_free", ("label_only", "rationale_free"),
                               "generate", needs_tokenizer=True, filler=True),
    "rationale-weighted": TargetSpec("rationale_free", ("rationale_free",), "generate",
                                     weighting="answer-share"),
    "rationale-answer-only": TargetSpec("rationale_free", ("rationale_free",), "generate",
                                        loss_on="answer"),
    "answer-first": TargetSpec("rationale_free", ("rationale_free",), "direct"),
    "multitask": TargetSpec("rationale_free", ("rationale_free",), "direct",
                            weighting="multitask"),
    "rationale-shuffled": TargetSpec("rationale_free", ("rationale_free",), "generate"),
    "rationale-align": TargetSpec("rationale_free", ("rationale_free",), "generate",
                                  weighting="align", ablation=False,
                                  summary="the free-form rows with two losses, each the "
                                  "mean over its own tokens: the label part (the answer "
                                  "token and the rationale's decision tokens, its branch "
                                  "points) weighted α and the rest of the rationale 1 − α "
                                  "(after the Align design of Shi et al. 2025, arXiv "
                                  "2510.16686)"),
}
MAIN_TARGETS = tuple(t for t, spec in TARGETS.items() if not spec.derived)
# The target views of the three main targets (the name each has in an export).
TARGET_VIEWS: dict[str, str] = {t: TARGETS[t].view for t in MAIN_TARGETS}


def patient_of(row: dict) -> str:
    """The patient a row belongs to (rationale rows are ``<patient>-r<rationale id>``,
    multitask rows add ``:predict`` or ``:explain``)."""
    rid = str(row["id"])
    for task in (":predict", ":explain"):
        rid = rid.removesuffix(task)
    return rid.split("-r")[0]


def filler(tokenizer, n_tokens: int) -> str:
    """Neutral text of exactly ``n_tokens`` tokens (fewer only if the tokenizer merges
    the unit): ``. . .``, one punctuation mark repeated, no patient information."""
    units = max(n_tokens, 1)
    text = ""
    for _ in range(4):  # a tokenizer that merges units: adjust the count and retry
        text = " ".join([FILLER_UNIT] * units)
        have = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if have == n_tokens:
            break
        units = max(units + n_tokens - have, 1)
    return text


def shuffle_words(text: str, key: str) -> str:
    """``text``'s words in an order drawn from ``key`` (same words, no narrative)."""
    words = text.split()
    random.Random(f"shuffle:{key}").shuffle(words)
    return " ".join(words)


def _rationale(row: dict) -> str:
    rationale, _ = split_assistant_text(row["completion"][-1]["content"])
    if rationale is None:
        raise ValueError(f"row {row['id']} has no rationale before its answer line")
    return rationale


def rationale_tokens(tokenizer, row: dict) -> int:
    """The length in tokens of a ``rationale_free`` row's rationale."""
    return len(tokenizer(_rationale(row), add_special_tokens=False)["input_ids"])


def derive(target: str, row: dict, label_row: dict | None = None,
           tokenizer=None, filler_tokens: int | None = None) -> list[dict]:
    """The training rows of ``target`` for one patient, from its ``rationale_free`` row
    (and, for ``label-padded``, its ``label_only`` row). ``filler_tokens``: label-padded's
    filler length for every patient (None: this patient's rationale length)."""
    label = int(row["label"])
    if target == "label-padded":
        if tokenizer is None:
            raise ValueError("label-padded needs the model's tokenizer to match lengths")
        n = rationale_tokens(tokenizer, row) if filler_tokens is None else filler_tokens
        base = label_row or row
        return [{**base, "completion": completion_messages(label, filler(tokenizer, n)),
                 "filler_tokens": n}]
    if target in ("rationale-weighted", "rationale-answer-only", "rationale-align"):
        return [row]
    if target == "answer-first":
        return [{**row, "completion": [{"role": "assistant", "content":
                                        f"{answer_line(label)}\n{_rationale(row)}"}]}]
    if target == "multitask":
        return [{**row, "id": f"{row['id']}:predict", "task": "predict",
                 "prompt": with_task(row["prompt"], "predict"),
                 "completion": completion_messages(label)},
                {**row, "id": f"{row['id']}:explain", "task": "explain",
                 "prompt": with_task(row["prompt"], "explain"),
                 "completion": [{"role": "assistant", "content": _rationale(row)}]}]
    if target == "rationale-shuffled":
        return [{**row, "completion": completion_messages(
            label, shuffle_words(_rationale(row), patient_of(row)))}]
    raise ValueError(f"{target!r} is not a derived target")


def scoring_prompt(target: str, messages: list[dict]) -> list[dict]:
    """The prompt a model trained on ``target`` is scored with (``predict:`` for
    multitask, the prompt itself otherwise)."""
    return with_task(messages, "predict") if target == "multitask" else messages
