"""Training diagnostics written to a run's ``metrics.jsonl`` beside the loss.

At every logged step (:func:`training.sft._loss_split`): the mean loss of the
answer tokens and of the other labelled tokens, and the answer tokens' share of
the loss. Here, two callbacks:

- :class:`GradientProbe` — every ``probe_steps`` optimizer steps (and at the last),
  on a fixed probe batch (the first ``probe_rows`` training rows), the norms of the
  gradients of the loss's answer part and of the rest, and the answer share
  ``|g_answer| / (|g_answer| + |g_rest|)``. The gradients are taken with
  ``torch.autograd.grad`` in eval mode (no dropout), so training's own gradients,
  random state and weights are untouched.
- :class:`EpochValidation` — after every epoch, the validation AUROC of *direct*
  scoring (P(yes) right after the prompt and ``Final answer:``, one forward pass);
  for a rationale target that is the "direct" variant, not its generate-then-score
  result.
"""

import json
import math
from pathlib import Path

from annotation_db.student_task import ANSWER_PREFIX
from training.loss import LossWeighting, weighted_loss


def label_only_answer_share(tokenizer, version, config, rows: list[dict]) -> float:
    """The answer token's share of the labelled tokens of label-only rows of the same
    patients as ``rows`` (what ``rationale-weighted`` matches)."""
    from training.data import patient_of, read_view, tokenize_rows
    from training.loss import answer_counts

    patients = {patient_of(r) for r in rows}
    label_rows = [r for r in read_view(version, "label_only", "train")
                  if patient_of(r) in patients]
    tokenized, _ = tokenize_rows(tokenizer, label_rows, config.max_length)
    share = answer_counts(LossWeighting.for_target(tokenizer, "none"), tokenized)[
        "answer_token_share"]
    if not share:
        raise ValueError("no label-only rows of these patients to match the answer share to")
    return share


def _append(path: Path, row: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")


def gradient_shares(model, batch: dict, weighting: LossWeighting) -> dict:
    """Gradient norms of the answer part and the rest of the loss on ``batch``."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            loss, answer_part, _, _ = weighted_loss(model, batch, None, weighting)
            g_answer = torch.autograd.grad(answer_part, params, retain_graph=True,
                                           allow_unused=True)
            g_rest = torch.autograd.grad(loss - answer_part, params, allow_unused=True)
    finally:
        model.train(was_training)

    def norm(grads) -> float:
        return math.sqrt(sum(float((g.float() ** 2).sum()) for g in grads if g is not None))

    a, r = norm(g_answer), norm(g_rest)
    return {"probe_answer_grad_norm": round(a, 6), "probe_rest_grad_norm": round(r, 6),
            "probe_answer_grad_share": round(a / (a + r), 6) if a + r else None,
            "probe_answer_loss_share": round(float(answer_part.detach() / loss.detach()), 6)
            if float(loss.detach()) else None}


def direct_p_yes(model, tokenizer, rows: list[dict], max_length: int,
                 batch_size: int = 8) -> list[float]:
    """P(yes | yes or no) right after each row's prompt and ``Final answer:``."""
    import torch

    from training.data import fit_prompt, prompt_text
    from training.scoring import label_token_ids, two_way

    yes, no = label_token_ids(tokenizer)
    texts = [prompt_text(tokenizer, fit_prompt(tokenizer, r["prompt"], max_length - 8)[0])
             + ANSWER_PREFIX for r in rows]
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[float] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = tokenizer(texts[start:start + batch_size], return_tensors="pt",
                                  padding=True, add_special_tokens=False).to(device)
                logits = model(**batch, logits_to_keep=1, use_cache=False).logits[:, -1, :]
                logprobs = torch.log_softmax(logits.float(), dim=-1)
                out += [two_way(float(row[yes]), float(row[no]))[0] for row in logprobs]
    finally:
        tokenizer.padding_side = side
    return out


def diagnostics_callbacks(metrics_path: Path, tokenizer, weighting: LossWeighting,
                          stats: dict, tokenized: list[dict], config,
                          validation: list[dict] | None) -> list:
    """The probe and per-epoch validation callbacks of one run."""
    from transformers import TrainerCallback

    class GradientProbe(TrainerCallback):
        def __init__(self):
            self.batch = None

        def on_train_begin(self, args, state, control, **kwargs):
            rows = [{"input_ids": r["input_ids"], "labels": r["labels"]}
                    for r in tokenized[:config.probe_rows]]
            collate = kwargs.get("train_dataloader").collate_fn \
                if kwargs.get("train_dataloader") is not None else None
            if collate is None:
                return
            self.batch = collate(rows)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if self.batch is None or model is None:
                return
            if state.global_step % config.probe_steps and state.global_step != state.max_steps:
                return
            device = next(model.parameters()).device
            batch = {k: v.to(device) for k, v in self.batch.items()}
            _append(metrics_path, {"step": state.global_step,
                                   "epoch": round(state.epoch or 0, 4),
                                   **gradient_shares(model, batch, weighting)})

    class EpochValidation(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            from sklearn.metrics import roc_auc_score

            if model is None or not validation:
                return
            was_training = model.training
            model.eval()
            try:
                p = direct_p_yes(model, tokenizer, validation, config.max_length)
            finally:
                model.train(was_training)
            _append(metrics_path, {"step": state.global_step,
                                   "epoch": round(state.epoch or 0, 4),
                                   "validation_auroc_direct": round(float(roc_auc_score(
                                       [int(r["label"]) for r in validation], p)), 6)})

    return [GradientProbe(), *([EpochValidation()] if validation else [])]
