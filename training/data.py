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
from collections import Counter
from pathlib import Path
from typing import Literal

from annotation_db.models import DatasetVersion

Target = Literal["label", "rationale-free", "rationale-stepwise"]
TARGET_VIEWS: dict[str, str] = {
    "label": "label_only",
    "rationale-free": "rationale_free",
    "rationale-stepwise": "rationale_stepwise",
}
IGNORE = -100


class DataError(ValueError):
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


def patient_of(row: dict) -> str:
    """The patient a row belongs to (rationale rows are ``<patient>-r<rationale id>``)."""
    return str(row["id"]).split("-r")[0]


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


def training_rows(version: DatasetVersion, target: str, size: int | None, seed: int,
                  paired_targets: list[str] | None = None) -> list[dict]:
    """The training rows of ``target``: one per patient, drawn by patient.

    With ``paired_targets``, patients are drawn only from those who have a training
    row in *every* one of those targets' views, and the draw depends only on that
    pool, the size and the seed: every target of one (size, seed) cell trains on
    the same patients. A pool smaller than ``size`` is an error naming both.
    """
    def first_per_patient(view_rows: list[dict]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for row in view_rows:
            out.setdefault(patient_of(row), row)
        return out

    own = first_per_patient(read_view(version, TARGET_VIEWS[target], "train"))
    pool = set(own)
    for other in paired_targets or []:
        if other != target:
            pool &= set(first_per_patient(read_view(version, TARGET_VIEWS[other], "train")))
    patients = [{"id": pid, "label": own[pid]["label"]} for pid in sorted(pool)]
    if size is not None and size > len(patients):
        paired = f" with a training row in every target ({', '.join(paired_targets)})" \
            if paired_targets else ""
        raise DataError(f"train_size {size} asks for more patients than the "
                        f"{len(patients)} in dataset version {version.name!r}{paired}")
    return [own[p["id"]] for p in subsample(patients, size, seed)]


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
    from annotation_db.student_task import history_of, user_message

    def length(msgs: list[dict]) -> int:
        return len(tokenizer.apply_chat_template(msgs, add_generation_prompt=True,
                                                 tokenize=True, return_dict=True)["input_ids"])

    if length(messages) <= max_tokens:
        return messages, 0
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")

    def with_history(history: str) -> list[dict]:
        return [*messages[:last], {**messages[last], "content": user_message(history)},
                *messages[last + 1:]]

    try:
        history, removed = drop_oldest_lines(history_of(messages[last]["content"]),
                                             lambda h: length(with_history(h)) <= max_tokens)
    except HistoryBudgetError as exc:
        raise DataError(f"a prompt needs more than {max_tokens} tokens even with every dated "
                        "history line removed; raise max_length") from exc
    return with_history(history), removed


def tokenize_row(tokenizer, row: dict, max_length: int) -> dict:
    """``input_ids`` and ``labels`` (prompt tokens ``-100``) of one prompt-completion row.

    An over-long row loses whole history lines, oldest dated items first (see
    :func:`fit_prompt`), never the system turn, the header, the undated facts or
    the completion, so the label is always trained on.
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
    return {"input_ids": prompt_ids + completion_ids,
            "labels": [IGNORE] * len(prompt_ids) + completion_ids,
            "truncated": removed > 0}


def completion_lengths(tokenizer, rows: list[dict]) -> list[int]:
    """Tokens of each row's assistant turn (its text and the end-of-turn token)."""
    return [sum(t != IGNORE for t in tokenize_row(tokenizer, row, 1 << 30)["labels"])
            for row in rows]


def tokenize_rows(tokenizer, rows: list[dict], max_length: int) -> tuple[list[dict], dict]:
    """Tokenized rows and a summary (tokens, loss tokens, truncations, label counts)."""
    out = [tokenize_row(tokenizer, row, max_length) for row in rows]
    loss_tokens = [sum(1 for t in r["labels"] if t != IGNORE) for r in out]
    summary = {
        "examples": len(out),
        "labels": dict(sorted(Counter(int(r["label"]) for r in rows).items())),
        "tokens": sum(len(r["input_ids"]) for r in out),
        "loss_tokens": sum(loss_tokens),
        "mean_loss_tokens_per_example": (sum(loss_tokens) / len(out)) if out else 0.0,
        "truncated_examples": sum(r.pop("truncated") for r in out),
    }
    return out, summary
