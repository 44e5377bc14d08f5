"""The SFT loss: token NLL of the completion, optionally weighted, with the answer
token located.

Every target's loss is ``Σ e_t · nll_t`` over the labelled tokens of a batch, with
*effective weights* ``e`` from a :class:`LossWeighting`:

``none``
    ``e = 1 / N`` (N labelled tokens): the plain token mean, what TRL computes.
``answer-share`` (``rationale-weighted``)
    In each row the answer token (the ``yes``/``no`` after ``Final answer:``) gets
    weight ``w = s·o / ((1 − s)·a)`` for ``a`` answer and ``o`` other labelled
    tokens, the rest weight 1, and ``e = w / Σw``: the answer tokens hold exactly the
    share ``s`` of the loss weight in every row and batch. ``s`` defaults to
    label-only's share on the same patients (1 of the 6 tokens of ``Final answer:
    yes<|im_end|>\\n`` with the bundled model).
``multitask``
    Each row's token mean, times ``2α`` for a ``predict:`` row (it has an answer
    token) or ``2(1 − α)`` for an ``explain:`` row, averaged over rows: over an
    epoch (one row of each per patient) the objective is ``α·L_predict + (1 −
    α)·L_explain`` whatever rows a batch happens to hold.

``align`` (``rationale-align``)
    Separately normalised and weighted label and rationale losses (the "Align" design
    of Shi et al. 2025, arXiv 2510.16686): in each row, the mean NLL of its label
    tokens times α plus the mean NLL of its other tokens times 1 − α, averaged over
    rows; the label part keeps the share α of every row's loss however long the
    rationale. Its label tokens are the answer token *and* the decision tokens (below),
    always: under teacher forcing the answer after a written conclusion is nearly free
    (the cpu scale's free-form runs: answer-token loss ~0.005 after 40 steps), so a
    label part of the answer alone would carry almost no gradient and leave the
    target plain free-form SFT.

The *answer part* of the loss (``Σ e_t · nll_t`` over answer tokens) is what the
diagnostics report as the answer tokens' share.

*Decision tokens.* With ``decision_ngrams`` set (``decision_tokens: branch``, or
``rationale-align``; learned by
:mod:`training.decision_tokens` from the run's training rows) the "answer tokens" above
are the answer token *and* the decision tokens, the rationale's branch points (the
first token of each run of consecutive tokens that end a decision 1-, 2- or 3-gram,
:func:`training.decision_tokens.decision_mask`): ``answer-share`` gives
them together the share ``s``, and the diagnostics' answer part is theirs. Left empty
(the default), everything is as it was.
"""

from dataclasses import dataclass

from annotation_db.student_task import ANSWER_PREFIX
from training.decision_tokens import IGNORE, DecisionRule, decision_mask, ngram_hash


@dataclass(frozen=True)
class LossWeighting:
    kind: str = "none"  # none | answer-share | multitask | align
    answer_share: float | None = None
    alpha: float = 0.5
    prefix_ids: tuple[int, ...] = ()
    label_ids: tuple[int, ...] = ()
    decision_ngrams: frozenset[tuple[int, ...]] = frozenset()  # empty: the answer alone
    decision_rule: DecisionRule | None = None  # the rule that found them (for the record)
    # rows restricted to their decision tokens and answer line (rationale-answer-only):
    # every labelled token before the answer line is a decision token (the n-grams cannot
    # be matched there any more: their other tokens are unlabelled)
    decisions_labelled: bool = False

    @classmethod
    def for_target(cls, tokenizer, kind: str, *, alpha: float = 0.5,
                   answer_share: float | None = None) -> "LossWeighting":
        from training.scoring import label_token_ids

        if kind == "answer-share" and not answer_share:
            raise ValueError("answer-share weighting needs the share to match")
        return cls(kind=kind, answer_share=answer_share if kind == "answer-share" else None,
                   alpha=alpha if kind in ("multitask", "align") else 0.5,
                   prefix_ids=tuple(tokenizer(ANSWER_PREFIX,
                                              add_special_tokens=False)["input_ids"]),
                   label_ids=tuple(label_token_ids(tokenizer)))

    def describe(self) -> dict:
        decisions = {"decision_tokens": {
            **(self.decision_rule or DecisionRule()).describe(),
            "ngrams": len(self.decision_ngrams),
            "ngrams_sha256": ngram_hash(self.decision_ngrams)}} if self.decision_ngrams else {}
        return {"kind": self.kind, "answer_share": self.answer_share,
                **({"alpha": self.alpha} if self.kind in ("multitask", "align") else {}),
                **decisions}

    def answer_mask(self, input_ids, targets):
        """True where the token predicted (``targets[:, t]`` = ``input_ids[:, t+1]``) is
        the label word right after ``Final answer:``, or, with ``decision_ngrams``, a
        decision token."""
        mask = self.answer_token_mask(input_ids, targets)
        if self.decisions_labelled:
            return mask | self._labelled_before_answer_line(mask, targets)
        if self.decision_ngrams:
            mask |= decision_mask(targets, self.decision_ngrams)
        return mask

    def _labelled_before_answer_line(self, answer, targets):
        """Labelled positions before each row's ``Final answer:`` (the row's first answer
        token less the prefix); none in a row without an answer token."""
        import torch

        first = answer.float().argmax(1, keepdim=True)
        positions = torch.arange(targets.shape[1], device=targets.device).unsqueeze(0)
        return ((targets != IGNORE) & (positions < first - len(self.prefix_ids))
                & answer.any(1, keepdim=True))

    def answer_token_mask(self, input_ids, targets):
        """True where the token predicted is the label word right after ``Final answer:``
        (the answer token alone, whatever ``decision_ngrams`` holds)."""
        import torch

        if not self.label_ids or not self.prefix_ids:
            return torch.zeros_like(targets, dtype=torch.bool)
        mask = torch.isin(targets, torch.tensor(self.label_ids, device=targets.device))
        width = input_ids.shape[1]
        for back, token in enumerate(reversed(self.prefix_ids)):
            shifted = torch.nn.functional.pad(input_ids, (back, 0), value=-1)[:, :width]
            mask &= shifted.to(targets.device) == token
        return mask

    def effective_weights(self, targets, answer, num_items_in_batch=None):
        """``e`` with ``loss = Σ e·nll`` (zero where there is no label)."""
        import torch

        on = targets != IGNORE
        answer = answer & on
        if self.kind == "multitask":
            per_row = on.sum(1, keepdim=True).clamp(min=1).float()
            factor = torch.where(answer.any(1, keepdim=True), 2 * self.alpha,
                                 2 * (1 - self.alpha))
            weights = on.float() * factor / (per_row * targets.shape[0])
        elif self.kind == "align":
            a = answer.sum(1, keepdim=True).float()
            o = (on & ~answer).sum(1, keepdim=True).float()
            split = torch.where(answer, self.alpha / a.clamp(min=1),
                                (1 - self.alpha) / o.clamp(min=1)) * on
            plain = on.float() / on.sum(1, keepdim=True).clamp(min=1)  # a row lacking a part
            weights = torch.where((a > 0) & (o > 0), split, plain) / targets.shape[0]
        else:
            weights = on.float()
            if self.kind == "answer-share":
                a = answer.sum(1, keepdim=True).float()
                o = (on & ~answer).sum(1, keepdim=True).float()
                s = self.answer_share
                w = torch.where((a > 0) & (o > 0), s * o / ((1 - s) * a.clamp(min=1)),
                                torch.ones_like(a))
                weights = torch.where(answer, w.expand_as(weights), weights)
            weights = weights / weights.sum().clamp(min=1e-12)
        if num_items_in_batch is not None:  # gradient accumulation: this batch's share
            weights = weights * (on.sum() / num_items_in_batch)
        return weights


def weighted_loss(model, inputs: dict, num_items_in_batch=None,
                  weighting: LossWeighting | None = None):
    """(loss, answer part, per-token tensors, model outputs), logits computed only at the
    positions that predict a labelled token."""
    import torch

    labels = inputs["labels"]
    targets = torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    keep = (targets != IGNORE).any(dim=0).nonzero().flatten()
    outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    logits_to_keep=keep, use_cache=False)
    logits = outputs.logits.float()
    kept = targets[:, keep].to(logits.device)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), kept,
                                            ignore_index=IGNORE, reduction="none")
    weighting = weighting or LossWeighting()
    answer = weighting.answer_mask(inputs["input_ids"], targets)[:, keep].to(logits.device)
    effective = weighting.effective_weights(kept, answer, num_items_in_batch)
    terms = effective * nll
    return terms.sum(), terms[answer].sum(), (kept, nll, answer, effective), outputs


def answer_counts(weighting: LossWeighting, rows: list[dict]) -> dict:
    """Loss-token accounting of tokenized rows: answer tokens, other labelled tokens, and
    the answer tokens' share of the loss weight, unweighted and as weighted.

    With decision tokens, "answer" counts cover the answer and decision tokens together;
    ``decision_tokens`` counts the decision tokens other than the answer token, and
    ``rows_without_answer`` still counts rows without the answer token itself."""
    import torch

    answer_tokens = other = without = decisions = 0
    weighted_answer = weighted_all = 0.0
    for row in rows:
        ids = torch.tensor([row["input_ids"]])
        targets = torch.nn.functional.pad(torch.tensor([row["labels"]]), (0, 1),
                                          value=IGNORE)[:, 1:]
        on = targets != IGNORE
        token = weighting.answer_token_mask(ids, targets) & on
        answer = weighting.answer_mask(ids, targets) & on
        # one row at a time: the row's own normalisation, which per-row weights keep
        e = weighting.effective_weights(targets, answer)
        answer_tokens += int(answer.sum())
        decisions += int((answer & ~token).sum())
        without += int(token.sum()) == 0
        other += int((on & ~answer).sum())
        weighted_answer += float(e[answer].sum())
        weighted_all += float(e.sum())
    total = answer_tokens + other
    return {"answer_tokens": answer_tokens, "other_loss_tokens": other,
            "rows_without_answer": without,
            **({"decision_tokens": decisions} if weighting.decision_ngrams else {}),
            "answer_token_share": answer_tokens / total if total else None,
            "answer_weight_share": weighted_answer / weighted_all if weighted_all else None}
