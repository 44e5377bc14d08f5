"""Training data from a verified dataset version: rows, subsets and loss-masked tokens.

A run trains on one *view* of one :class:`~annotation_db.models.DatasetVersion`.
Rows are TRL's conversational prompt-completion format (``prompt`` = system and
user messages, ``completion`` = the assistant message ending in ``Final answer:
yes|no``). :func:`tokenize_row` renders them with the model's chat template and
masks every prompt token with ``-100``, so the loss falls on the assistant turn
only — its text and the end-of-turn token that closes it.
"""

import json
import random
import statistics
from collections import Counter
from pathlib import Path

from annotation_db.errors import UserError
from annotation_db.models import DatasetVersion
from annotation_db.student_task import ANSWER_PREFIX
from training.targets import (
    TARGET_VIEWS,
    TARGETS,
    FillerLength,
    Target,
    derive,
    patient_of,
    rationale_tokens,
)

__all__ = ["TARGET_VIEWS", "TARGETS", "Target", "patient_of"]
IGNORE = -100


class DataError(UserError):
    """Training data that cannot be used; the message says which file or row."""


def read_view(version: DatasetVersion, view: str, split: str) -> list[dict]:
    """The rows of ``<view>/<split>.jsonl`` of a version, checked against its manifest."""
    if version.deleted_at is not None:
        raise DataError(f"dataset version {version.name!r} was deleted; only its manifest is kept")
    relative = f"{view}/{split}.jsonl"
    if relative not in version.manifest.get("files", {}):
        raise DataError(f"dataset version {version.name!r} has no {relative}")
    path = Path(version.path) / relative
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    import hashlib

    if hashlib.sha256(blob).hexdigest() != version.manifest["files"][relative]:
        raise DataError(f"{path} does not match the version's manifest; run "
                        f"`rationale-audit export verify {version.name}`")
    return [json.loads(line) for line in blob.decode().splitlines() if line.strip()]


def subsample(rows: list[dict], size: int | None, seed: int) -> list[dict]:
    """``size`` rows drawn without replacement, keeping the label mix; all rows if None.

    Asking for more rows than there are is an error, never a silently smaller set."""
    if size is None:
        return list(rows)
    if size < 1:
        raise DataError(f"train_size must be at least 1 (got {size})")
    if size > len(rows):
        raise DataError(f"train_size {size} is more than the {len(rows)} rows available")
    rng = random.Random(seed)
    by_label: dict[int, list[dict]] = {}
    for row in rows:
        by_label.setdefault(int(row["label"]), []).append(row)
    chosen: list[dict] = []
    remaining = size
    labels = sorted(by_label)
    for i, label in enumerate(labels):
        group = by_label[label]
        take = remaining if i == len(labels) - 1 else round(size * len(group) / len(rows))
        take = min(take, len(group))
        chosen += rng.sample(group, take)
        remaining -= take
    order = {id(row): i for i, row in enumerate(rows)}
    return sorted(chosen, key=lambda row: order[id(row)])


def _first_per_patient(view_rows: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for row in view_rows:
        out.setdefault(patient_of(row), row)
    return out


def target_rows_by_patient(version: DatasetVersion, target: str, tokenizer=None,
                           filler_length: FillerLength = "median") -> dict[str, list[dict]]:
    """Every training row of ``target`` per patient (one, or two for ``multitask``),
    derived from the version's views (see :mod:`training.targets`). ``filler_length``
    (a filler target): ``median``, every row's filler as long as the median rationale
    of these patients (one length, whatever the label); ``own``, each patient's own."""
    spec = TARGETS[target]
    if not spec.derived:
        return {pid: [row] for pid, row in
                _first_per_patient(read_view(version, spec.view, "train")).items()}
    if spec.needs_tokenizer and tokenizer is None:
        raise DataError(f"target {target!r} needs the base model's tokenizer")
    free = _first_per_patient(read_view(version, "rationale_free", "train"))
    labels = _first_per_patient(read_view(version, "label_only", "train")) \
        if "label_only" in spec.sources else {}
    kept = {pid: row for pid, row in free.items() if not labels or pid in labels}
    try:
        length = round(statistics.median(rationale_tokens(tokenizer, row)
                                         for row in kept.values())) \
            if spec.filler and filler_length == "median" and kept else None
        return {pid: derive(target, row, labels.get(pid), tokenizer, length)
                for pid, row in kept.items()}
    except ValueError as exc:
        raise DataError(f"target {target!r}: {exc}") from exc


def pool_patients(version: DatasetVersion, targets: list[str]) -> set[str]:
    """Patients with a training row in every source view of every one of ``targets``."""
    views = {view for t in targets for view in TARGETS[t].sources}
    pool: set[str] | None = None
    for view in sorted(views):
        have = set(_first_per_patient(read_view(version, view, "train")))
        pool = have if pool is None else pool & have
    return pool or set()


def training_rows(version: DatasetVersion, target: str, size: int | None, seed: int,
                  paired_targets: list[str] | None = None, tokenizer=None,
                  filler_length: FillerLength = "median") -> list[dict]:
    """The training rows of ``target``, drawn by patient.

    With ``paired_targets``, patients are drawn only from those who have a training
    row in *every* view those targets (and this one) are built from, and the draw
    depends only on that pool, the size and the seed: every target of one (size,
    seed) cell trains on the same patients. A pool smaller than ``size`` is an
    error naming both.
    """
    own = target_rows_by_patient(version, target, tokenizer, filler_length)
    pool = set(own)
    if paired_targets:
        pool &= pool_patients(version, [target, *paired_targets])
    patients = [{"id": pid, "label": own[pid][0]["label"]} for pid in sorted(pool)]
    if size is not None and size > len(patients):
        paired = f" with a training row in every target ({', '.join(paired_targets)})" \
            if paired_targets else ""
        raise DataError(f"train_size {size} asks for more patients than the "
                        f"{len(patients)} in dataset version {version.name!r}{paired}")
    return [row for p in subsample(patients, size, seed) for row in own[p["id"]]]


def eval_rows(version: DatasetVersion, target: str, split: str) -> list[dict]:
    """The prompts a ``target`` model is scored on: its view's rows of ``split``, asked
    the way the target was taught (``predict:`` for multitask)."""
    from training.targets import scoring_prompt

    rows = read_view(version, TARGETS[target].view, split)
    return [dict(row, prompt=scoring_prompt(target, row["prompt"])) for row in rows]


def prompt_text(tokenizer, messages: list[dict]) -> str:
    """The chat-template text of ``messages`` up to the opening of the assistant turn."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def fit_prompt(tokenizer, messages: list[dict], max_tokens: int) -> tuple[list[dict], int]:
    """``messages`` whose chat-template prompt has at most ``max_tokens`` tokens.

    Only the history inside the last user turn is shortened, by whole lines, the
    oldest dated item first (:func:`annotation_db.render.drop_oldest_lines`); the
    system turn, the header and the demographic, genotype and family-history lines
    are never touched. The same rule serves training rows and scored prompts.
    Returns the messages and the number of history lines removed.
    """
    from annotation_db.render import HistoryBudgetError, drop_oldest_lines
    from annotation_db.student_task import split_user_message, user_message

    def length(msgs: list[dict]) -> int:
        return len(tokenizer.apply_chat_template(msgs, add_generation_prompt=True,
                                                 tokenize=True, return_dict=True)["input_ids"])

    if length(messages) <= max_tokens:
        return messages, 0
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")

    task, history = split_user_message(messages[last]["content"])

    def with_history(history: str) -> list[dict]:
        return [*messages[:last], {**messages[last], "content": user_message(history, task)},
                *messages[last + 1:]]

    try:
        history, removed = drop_oldest_lines(history,
                                             lambda h: length(with_history(h)) <= max_tokens)
    except HistoryBudgetError as exc:
        raise DataError(f"a prompt needs more than {max_tokens} tokens even with every dated "
                        "history line removed; raise max_length") from exc
    return with_history(history), removed


def tokenize_row(tokenizer, row: dict, max_length: int,
                 loss_on: str = "completion") -> dict:
    """``input_ids`` and ``labels`` (prompt tokens ``-100``) of one prompt-completion row.

    An over-long row loses whole history lines, oldest dated items first (see
    :func:`fit_prompt`), never the system turn, the header, the undated facts or
    the completion, so the label is always trained on. ``loss_on="answer"`` also
    masks the completion before its answer line (the rationale is context only).
    """
    def encode(prompt: list[dict]) -> tuple[list[int], list[int]]:
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True,
                                                   tokenize=True, return_dict=True)["input_ids"]
        full_ids = tokenizer.apply_chat_template(prompt + row["completion"], tokenize=True,
                                                 return_dict=True)["input_ids"]
        if full_ids[:len(prompt_ids)] != prompt_ids:
            raise DataError(f"row {row.get('id')}: the chat template renders the prompt "
                            "differently with and without the answer; cannot mask the prompt "
                            "exactly")
        return prompt_ids, full_ids[len(prompt_ids):]

    prompt_ids, completion_ids = encode(row["prompt"])
    if len(completion_ids) >= max_length:
        raise DataError(f"row {row.get('id')}: the completion alone has {len(completion_ids)} "
                        f"tokens, more than max_length={max_length}")
    removed = 0
    if len(prompt_ids) + len(completion_ids) > max_length:
        prompt, removed = fit_prompt(tokenizer, row["prompt"], max_length - len(completion_ids))
        prompt_ids, completion_ids = encode(prompt)
    labels = list(completion_ids)
    if loss_on == "answer":
        labels = [IGNORE] * answer_line_start(tokenizer, completion_ids) \
            + labels[answer_line_start(tokenizer, completion_ids):]
    return {"input_ids": prompt_ids + completion_ids,
            "labels": [IGNORE] * len(prompt_ids) + labels,
            "truncated": removed > 0}


def answer_line_start(tokenizer, completion_ids: list[int]) -> int:
    """Index of the first token of the last ``Final answer:`` in ``completion_ids``."""
    prefix = tokenizer(ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
    for start in range(len(completion_ids) - len(prefix), -1, -1):
        if completion_ids[start:start + len(prefix)] == prefix:
            return start
    raise DataError("the completion has no 'Final answer:' line to put the loss on")


def completion_lengths(tokenizer, rows: list[dict]) -> list[int]:
    """Tokens of each row's assistant turn (its text and the end-of-turn token)."""
    return [sum(t != IGNORE for t in tokenize_row(tokenizer, row, 1 << 30)["labels"])
            for row in rows]


def tokenize_rows(tokenizer, rows: list[dict], max_length: int,
                  loss_on: str = "completion") -> tuple[list[dict], dict]:
    """Tokenized rows and a summary (tokens, loss tokens, truncations, label counts)."""
    out = [tokenize_row(tokenizer, row, max_length, loss_on) for row in rows]
    summary = {
        "examples": len(out),
        "labels": dict(sorted(Counter(int(r["label"]) for r in rows).items())),
        "tokens": sum(len(r["input_ids"]) for r in out),
        **loss_token_tallies(out),
        "truncated_examples": sum(r.pop("truncated") for r in out),
    }
    return out, summary


def loss_token_tallies(tokenized: list[dict]) -> dict:
    """Labelled tokens of tokenized rows, in all and per row."""
    loss_tokens = [sum(1 for t in r["labels"] if t != IGNORE) for r in tokenized]
    return {"loss_tokens": sum(loss_tokens),
            "mean_loss_tokens_per_example": (sum(loss_tokens) / len(tokenized))
            if tokenized else 0.0}
