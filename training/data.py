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

from annotation_db.export import FINAL_LINE
from annotation_db.models import DatasetVersion

Target = Literal["label", "rationale-free", "rationale-stepwise"]
TARGET_VIEWS: dict[str, str] = {
    "label": "label_only",
    "rationale-free": "rationale_free",
    "rationale-stepwise": "rationale_stepwise",
}
ANSWER_PREFIX = FINAL_LINE.split("{label}")[0].rstrip()  # "Final answer:"
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


def subsample(rows: list[dict], size: int | None, seed: int) -> list[dict]:
    """``size`` rows drawn without replacement, keeping the label mix; all rows if None."""
    if size is None or size >= len(rows):
        return list(rows)
    if size < 1:
        raise DataError(f"train_size must be at least 1 (got {size})")
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


def prompt_text(tokenizer, messages: list[dict]) -> str:
    """The chat-template text of ``messages`` up to the opening of the assistant turn."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def tokenize_row(tokenizer, row: dict, max_length: int) -> dict:
    """``input_ids`` and ``labels`` (prompt tokens ``-100``) of one prompt-completion row.

    Over-long rows lose tokens from the start of the *prompt* (the oldest history),
    never from the completion, so the label is always trained on.
    """
    prompt_ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True,
                                               tokenize=True, return_dict=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True,
                                             return_dict=True)["input_ids"]
    if full_ids[:len(prompt_ids)] != prompt_ids:
        raise DataError(f"row {row.get('id')}: the chat template renders the prompt differently "
                        "with and without the answer; cannot mask the prompt exactly")
    completion_ids = full_ids[len(prompt_ids):]
    if len(completion_ids) >= max_length:
        raise DataError(f"row {row.get('id')}: the completion alone has {len(completion_ids)} "
                        f"tokens, more than max_length={max_length}")
    keep_prompt = max_length - len(completion_ids)
    truncated = len(prompt_ids) > keep_prompt
    if truncated:
        prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt:]
    return {"input_ids": prompt_ids + completion_ids,
            "labels": [IGNORE] * len(prompt_ids) + completion_ids,
            "truncated": truncated}


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
