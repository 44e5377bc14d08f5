"""Decision tokens (issue 37): the weighted and answer-only ablations may treat the
tokens where a rationale commits to its label (its branch points) as part of the answer.

Hand-built token rows stand for tokenized training rows: prompt tokens unlabelled
(-100), then a completion of a lead-in shared by both labels, a label-specific opening
phrase, patient-specific words, a phrase shared by both labels, ``Final answer:``
(``PREFIX``), the answer word and an end token. The branch point is the opening's first
token: each of the opening's tokens is a label-pure 1-gram, so the 2- and 3-grams that
end in it add nothing. Other hand-built rows have openings that are label-pure only
with the token before them (a 2-gram) or whatever precedes them (a 1-gram). Two tests
run the whole path on template-teacher rationales with the bundled tokenizer."""

import inspect
import time
from collections import Counter
from dataclasses import replace

import pytest
import torch

from training.decision_tokens import (
    MARKING,
    DecisionRule,
    answer_line_start,
    decision_hits,
    decision_mask,
    learn_decision_ngrams,
    ngram_hash,
    rationale_tokens,
    reads_decisions,
    restrict_to_decisions,
)
from training.loss import LossWeighting, answer_counts

IGNORE = -100
PREFIX = (50, 51, 52)  # "Final answer:"
NO, YES = 60, 61
END = 70
OPENING = {1: (100, 101, 102, 103), 0: (200, 201, 202, 203)}
SHARED = (300, 301, 302)
LEAD = (310, 311)  # "At 57 years of age, …": every row's first words
# every token of an opening is in the rows of one label only: a label-pure 1-gram; the
# 2- and 3-grams ending in one (the lead-in's last tokens and it) end where it does
OPENING_GRAMS = {(t,) for label in (0, 1) for t in OPENING[label]}


def _row(label: int, words: tuple, opening: tuple | None = None, lead: tuple = ()) -> dict:
    prompt = (1, 2, 3, 4)
    completion = [*lead, *(OPENING[label] if opening is None else opening), *words,
                  *SHARED, *PREFIX, YES if label else NO, END]
    return {"input_ids": [*prompt, *completion],
            "labels": [IGNORE] * len(prompt) + completion}


def _batch(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, targets) as the loss sees them: targets[:, t] = labels[:, t + 1]."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE)
    for i, r in enumerate(rows):
        ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
        labels[i, :len(r["labels"])] = torch.tensor(r["labels"])
    return ids, torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[:, 1:]


def _cohort(n: int = 40) -> tuple[list[dict], list[int]]:
    """Half yes, half no; every patient has the lead-in, an opening of their label and
    words of their own; a finding (400 401 402) that leans yes but is not label-pure; one
    yes row with a rare label-pure phrase."""
    rows, labels = [], []
    for i in range(n):
        label = i % 2
        finding = (400, 401, 402) if (i % 5 < 3 if label else i % 5 < 2) else ()
        rows.append(_row(label, (1000 + i, 5000 + i, *finding), lead=LEAD))
        labels.append(label)
    rows[1] = _row(1, (1001, 5001, 900, 901, 902), lead=LEAD)  # yes-only, 1 row of 40
    return rows, labels


def _weighting(kind: str = "none", **kw) -> LossWeighting:
    return LossWeighting(kind=kind, prefix_ids=PREFIX, label_ids=(NO, YES), **kw)


def test_label_pure_frequent_ngrams_are_found_and_patient_words_are_not():
    rows, labels = _cohort()
    ngrams, summary = learn_decision_ngrams(rows, labels, PREFIX)
    # the openings' tokens; nothing of a patient's own words, the lead-in alone, the
    # shared phrase, the label-leaning finding, the rare phrase or the answer line
    assert ngrams == OPENING_GRAMS
    assert summary["ngrams"] == 8 and summary["rule"] == DecisionRule().describe()
    assert summary["ngrams_by_length"] == {"1": 8, "2": 0, "3": 0}
    assert DecisionRule().describe()["lengths"] == [1, 2, 3]
    assert summary["ngrams_sha256"] == ngram_hash(ngrams)
    assert summary["examples"] == [list(g) for g in sorted(OPENING_GRAMS)[:5]]
    # one branch point per row (the opening's first token), nothing else of its rationale
    rationale = sum(len(r["labels"]) - 4 - len(PREFIX) - 2 for r in rows)
    assert summary["decision_tokens"] == len(rows)
    assert summary["decision_tokens_per_row"] == 1.0
    assert summary["decision_token_share"] == round(len(rows) / rationale, 4)
    # deterministic: the same set whatever the order of the rows
    assert learn_decision_ngrams(rows[::-1], labels[::-1], PREFIX)[0] == ngrams
    # the support floor is what keeps one patient's words out: at one row in 40, every
    # n-gram of a single row is "pure", the rare phrase and the patients' own too
    loose = learn_decision_ngrams(rows, labels, PREFIX,
                                  DecisionRule(min_support=0.02, min_rows=1))[0]
    assert ngrams | {(900,), (901,), (902,), (1002,), (5002,)} <= loose
    assert not {g for g in loose if set(g) <= {300, 301, 302, 400, 401, 402}}
    # however few the rows, one row's n-grams are never decisions
    assert learn_decision_ngrams(rows[:10], labels[:10], PREFIX)[0] == OPENING_GRAMS
    # without the lead-in the opening starts the rationale: no 2- or 3-gram ends on its
    # first token, the 1-gram does, and it is still the branch point; with 3-grams alone
    # the branch point is the token completing the opening's first 3-gram
    bare = [_row(label, (1000 + i, 5000 + i)) for i, label in enumerate(labels)]
    for lengths, at in (((1, 2, 3), 0), ((3,), 2)):
        bare_ngrams, bare_summary = learn_decision_ngrams(bare, labels, PREFIX,
                                                          DecisionRule(lengths=lengths))
        assert bare_summary["decision_tokens"] == len(bare)
        assert [[t for t in r["labels"] if t != IGNORE][0] for r in restrict_to_decisions(
            bare, bare_ngrams, PREFIX)] == [OPENING[label][at] for label in labels]
    # one label only: nothing decides between labels
    assert learn_decision_ngrams(rows, [1] * len(rows), PREFIX)[0] == frozenset()


def test_the_ngrams_are_learned_from_the_training_rows_given_and_nothing_else():
    """The learner takes the training rows and their labels only (no version, no split
    to look up): validation and test rows cannot reach it. A run hands it its training
    rows (``training.sft._loss_rows``, checked on real rows below)."""
    assert list(inspect.signature(learn_decision_ngrams).parameters) == [
        "train_rows", "train_labels", "prefix_ids", "rule", "decode"]
    rows, labels = _cohort()
    with pytest.raises(ValueError, match="one label per training row"):
        learn_decision_ngrams(rows, labels[:-1], PREFIX)
    # unlabelled tokens (a prompt) are never read: the lead-in and opening moved into
    # the prompt are no longer found
    prompted = [{"input_ids": r["input_ids"],
                 "labels": [IGNORE] * 10 + r["labels"][10:]} for r in rows]
    assert learn_decision_ngrams(prompted, labels, PREFIX)[0] == frozenset()


def test_without_decision_ngrams_the_weights_and_counts_are_as_before():
    """Pinned from the code before decision tokens existed (three rows of 14, 13 and 16
    labelled tokens, one answer token each)."""
    rows = [_row(1, (1001, 2001)), _row(0, (1002,)), _row(1, (1003, 2003, 3003, 4003))]
    ids, targets = _batch(rows)
    answers = [[0, 15], [1, 14], [2, 17]]
    before = {  # kind: per row (weight of each other token, of its answer token)
        "none": [(1 / 43, 1 / 43)] * 3,
        "answer-share": [(0.01875, 0.08125), (0.01875, 0.075), (0.01875, 0.09375)],
        "align": [(0.7 / 13 / 3, 0.1), (0.7 / 12 / 3, 0.1), (0.7 / 15 / 3, 0.1)]}
    shares = {"none": 0.07028388480345409, "answer-share": 0.25, "align": 0.3}
    for kind, kw in (("none", {}), ("answer-share", {"answer_share": 0.25}),
                     ("align", {"alpha": 0.3})):
        weighting = _weighting(kind, **kw)
        assert weighting.decision_ngrams == frozenset()
        assert weighting.describe() == {"kind": kind, "answer_share": kw.get("answer_share"),
                                         **({"alpha": 0.3} if kind == "align" else {})}
        answer = weighting.answer_mask(ids, targets)
        assert answer.nonzero().tolist() == answers
        e = weighting.effective_weights(targets, answer)
        on = targets != IGNORE
        for row, (other, ans) in enumerate(before[kind]):
            assert torch.allclose(e[row][on[row] & ~answer[row]], torch.tensor(other))
            assert torch.allclose(e[row][answer[row]], torch.tensor(ans))
        counts = answer_counts(weighting, rows)
        assert counts == pytest.approx({
            "answer_tokens": 3, "other_loss_tokens": 40, "rows_without_answer": 0,
            "answer_token_share": 3 / 43, "answer_weight_share": shares[kind]})
        assert list(counts) == ["answer_tokens", "other_loss_tokens", "rows_without_answer",
                                "answer_token_share", "answer_weight_share"]


def test_answer_share_gives_answer_and_decision_tokens_the_share_s_in_every_row():
    rows, labels = _cohort()
    ngrams, _ = learn_decision_ngrams(rows, labels, PREFIX)
    rule = DecisionRule()
    weighting = _weighting("answer-share", answer_share=0.2, decision_ngrams=ngrams,
                           decision_rule=rule)
    ids, targets = _batch(rows[:8])
    answer = weighting.answer_mask(ids, targets)
    # the branch point (the opening's first token) and the answer word, as predicted
    # positions; the rest of the opening is not
    assert [targets[r][answer[r]].tolist() for r in range(8)] == [
        [OPENING[label][0], YES if label else NO] for label in labels[:8]]
    e = weighting.effective_weights(targets, answer)
    per_row = e[answer].reshape(8, 2).sum(1) / e.sum(1)
    assert torch.allclose(per_row, torch.full((8,), 0.2))
    counts = answer_counts(weighting, rows)
    assert counts["answer_weight_share"] == pytest.approx(0.2)
    assert counts["decision_tokens"] == len(rows) and counts["answer_tokens"] == 2 * 40
    assert counts["rows_without_answer"] == 0  # still the answer token itself
    assert weighting.describe()["decision_tokens"] == {
        "lengths": [1, 2, 3], "min_support": 0.05, "min_purity": 0.95, "min_rows": 2,
        "ngrams": 8, "ngrams_sha256": ngram_hash(ngrams)}
    # a row whose answer word is missing is still found out, decision tokens or not
    broken = [{**rows[0], "labels": rows[0]["labels"][:-2] + [IGNORE, END]}]
    assert answer_counts(weighting, broken)["rows_without_answer"] == 1


def test_answer_only_loss_covers_exactly_the_decision_tokens_and_the_answer_line():
    rows, labels = _cohort()
    ngrams, _ = learn_decision_ngrams(rows, labels, PREFIX)
    restricted = restrict_to_decisions(rows, ngrams, PREFIX)
    for row, original, label in zip(restricted, rows, labels, strict=True):
        kept = [t for t in row["labels"] if t != IGNORE]
        assert kept == [OPENING[label][0], *PREFIX, YES if label else NO, END]
        assert row["input_ids"] == original["input_ids"]  # the rest stays context
    # the accounting (and the diagnostics' answer part) finds the same decision tokens
    # in the restricted rows as the n-grams find in the full ones
    full = _weighting(decision_ngrams=ngrams)
    counted = answer_counts(replace(full, decisions_labelled=True), restricted)
    assert counted["decision_tokens"] == answer_counts(full, rows)["decision_tokens"] == len(rows)
    assert counted["answer_tokens"] == 2 * len(rows)
    assert counted["other_loss_tokens"] == (len(PREFIX) + 1) * len(rows)  # the answer line
    # no decision n-grams: the answer line alone, as `loss_on="answer"` has it
    kept = [t for t in restrict_to_decisions(rows[:1], frozenset(), PREFIX)[0]["labels"]
            if t != IGNORE]
    assert kept == [*PREFIX, NO, END]  # row 0 is a no
    from training.data import DataError

    with pytest.raises(DataError, match="no 'Final answer:' line"):
        restrict_to_decisions([{"input_ids": [1, 2, 100, 101], "labels": [IGNORE] * 2
                                + [100, 101]}], ngrams, PREFIX)


def _hits(row: list[int], ngrams: frozenset) -> list[bool]:
    """The definition, one token at a time: a token is a hit when a decision n-gram of
    any length, all of its tokens labelled, ends at it."""
    return [any(tuple(row[p - len(g) + 1:p + 1]) == g for g in ngrams if len(g) <= p + 1)
            for p in range(len(row))]


def _branch_points(row: list[int], ngrams: frozenset) -> list[int]:
    """The definition: the first hit of each maximal run of consecutive hits."""
    hit = _hits(row, ngrams)
    return [p for p in range(len(row)) if hit[p] and not (p and hit[p - 1])]


def test_the_mask_marks_the_first_hit_of_each_run_of_hits():
    ngrams = frozenset({(7, 8, 9), (8, 9, 10), (20, 21, 22), (22, 23, 24)})
    #         0  1  2   3  4  5  6       7  8   9 10 11  12 13 14 15 16
    tokens = [7, 8, 9, 10, 1, 7, 8, IGNORE, 9, 10, 8, 9, 10, 2, 7, 8, 9,
              20, 21, 22, 23, 24]
    #         17  18  19  20  21
    marked = decision_mask(torch.tensor([tokens]), ngrams)[0].nonzero()[:, 0].tolist()
    # 7 8 9 10: hits at 9 and 10, one run: its first hit (no hit before it);
    # 7 8 _ 9 10: an unlabelled token breaks every n-gram, nothing; 8 9 10 and 7 8 9
    # later: separate runs, one token each; 20 21 22 23 24: hits at 22 and 24 with
    # no hit between, two runs
    assert marked == [2, 12, 16, 19, 21] == _branch_points(tokens, ngrams)
    # a run begins where the token before is no hit: 1 7 8 9 10 marks the 9
    assert decision_mask(torch.tensor([[1, 7, 8, 9, 10]]), ngrams)[0].tolist() == [
        False, False, False, True, False]
    # n-grams of several lengths: a hit is the end of any of them. The 1-gram 30 is a
    # hit wherever it stands, the row's first token too; 4 5 6 marks the 6 (the 2-gram
    # 5 6), and the 30 after it is the same run; 31 is no hit (31 and 30 31 are no
    # n-grams), so 32, ending 30 31 32, begins a run; 40 41 another, which the 30 after
    # it continues; 41 after an unlabelled token is none
    mixed = frozenset({(5, 6), (30,), (30, 31, 32), (40, 41)})
    #       0  1  2  3   4   5   6  7   8   9  10       11  12
    row = [30, 4, 5, 6, 30, 31, 32, 1, 40, 41, 30, IGNORE, 41]
    assert decision_hits(torch.tensor([row]), mixed)[0].nonzero()[:, 0].tolist() == \
        [0, 3, 4, 6, 9, 10] == [p for p, h in enumerate(_hits(row, mixed)) if h]
    assert decision_mask(torch.tensor([row]), mixed)[0].nonzero()[:, 0].tolist() == \
        [0, 3, 6, 9] == _branch_points(row, mixed)
    # against the definition on random rows of a small vocabulary (many long runs), with
    # n-grams of one length and of several
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(0, 6, (64, 40), generator=g)
    rows[torch.rand(rows.shape, generator=g) < 0.05] = IGNORE
    for counts in ({3: 40}, {1: 1, 2: 8, 3: 20}):
        small = frozenset(tuple(int(x) for x in torch.randint(0, 6, (k,), generator=g))
                          for k, count in counts.items() for _ in range(count))
        hits, mask = decision_hits(rows, small), decision_mask(rows, small)
        for row, h, m in zip(rows.tolist(), hits, mask, strict=True):
            assert h.tolist() == _hits(row, small)
            assert m.nonzero()[:, 0].tolist() == _branch_points(row, small)
        assert 0 < mask.sum() < hits.sum()  # runs of several hits, one token each


def test_the_mask_is_exact_cheap_and_needs_every_token_of_an_ngram_labelled():
    ngrams = frozenset({(7, 8, 9), (8, 9, 10)})
    tokens = torch.tensor([[7, 8, 9, 10, 1, 7, 8, IGNORE, 9, 10, 8, 9]])
    assert decision_mask(tokens, ngrams).nonzero()[:, 1].tolist() == [2]
    mixed = ngrams | {(10, 8), (1,)}
    # hits at 9, 10 (8 9 10) and 1 (one run), then at the 8 after 10; none in 9 10 after
    # the unlabelled token
    assert decision_mask(tokens, mixed).nonzero()[:, 1].tolist() == [2, 10]
    # token ids too large for one int64 key per window: compared directly, same answer
    # (3-grams; 1- and 2-grams still keyed)
    big = 1 << 22
    for grams in (ngrams, mixed):
        assert torch.equal(decision_mask(tokens + big * (tokens >= 0), frozenset(
            tuple(t + big for t in g) for g in grams)), decision_mask(tokens, grams))
    assert not decision_mask(tokens, frozenset()).any()
    # batch 8 × 768 tokens, 150 n-grams of each length of a 49,152-token vocabulary: well
    # under 10 ms
    g = torch.Generator().manual_seed(0)
    many = frozenset(tuple(int(x) for x in torch.randint(0, 49152, (k,), generator=g))
                     for k in (1, 2, 3) for _ in range(150))
    batch = torch.randint(0, 49152, (8, 768), generator=g)
    timings = []
    for _ in range(20):
        start = time.perf_counter()
        decision_mask(batch, many)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.01


CLOSE, DOT = 320, 321  # "]." ending a cited evidence id, "." ending a sentence
THE, RECORD, SHOWS, REMAINING = 330, 331, 332, 333  # yes: "The record shows"
SOME, RISK, AN, ISOLATED = 340, 341, 342, 343  # no: "Some risk", "An isolated"


def _sentence_rows(n: int = 40) -> tuple[list[dict], list[int]]:
    """Rationales whose shared first sentence ends in an evidence id each patient has
    alone (``2000 + i``, then "]."), as a template's "… [E17]." does. A yes row goes on
    "The record shows … ."; a no row "Some risk … ." and "The remaining … .", so "The" and
    "." are in every row and "The" is label-pure after "]." (yes) and after "." (no); two
    no rows open "An isolated" instead, one right after the id and one after a "." ("An"
    is label-pure, in 2 rows, "]. An" and ". An" in one each)."""
    rows, labels = [], []
    for i in range(n):
        label = i % 2
        if label:
            words = (2000 + i, CLOSE, THE, RECORD, SHOWS, 5000 + i, DOT)
        elif i == 0:
            words = (2000 + i, CLOSE, AN, ISOLATED, 5000 + i, DOT, THE, REMAINING, DOT)
        elif i == 2:
            words = (2000 + i, CLOSE, SOME, RISK, 5000 + i, DOT, AN, ISOLATED, DOT)
        else:
            words = (2000 + i, CLOSE, SOME, RISK, 5000 + i, DOT, THE, REMAINING, DOT)
        rows.append(_row(label, words, opening=(), lead=LEAD))
        labels.append(label)
    return rows, labels


def _first_marked_after_the_id(rows: list[dict], ngrams: frozenset) -> list[int]:
    """Each row's first branch point after its evidence id's "]."."""
    out = []
    for row in rows:
        tokens = [t for t in row["labels"] if t != IGNORE]
        close = tokens.index(CLOSE)
        marked = decision_mask(torch.tensor([tokens]), ngrams)[0].tolist()
        out.append(tokens[next(p for p in range(close + 1, len(tokens)) if marked[p])])
    return out


def test_an_opening_is_marked_whatever_rare_token_precedes_it():
    """The defect of 3-grams alone: the 3-gram ending at an opening spans the evidence id
    before it, each patient's own, so no 3-gram ending there is frequent; the first
    label-pure 3-gram begins at the opening, and the token marked is the one after it
    ("record"), which the opening already decided. A shorter n-gram ending at the
    opening is frequent: "]. The" (a 2-gram) marks "The" in every yes row, and "An"
    (a 1-gram) is marked where neither "]. An" nor ". An" is frequent enough."""
    rows, labels = _sentence_rows()
    ngrams, summary = learn_decision_ngrams(rows, labels, PREFIX)
    assert (CLOSE, THE) in ngrams and (DOT, THE) in ngrams  # "]. The": yes; ". The": no
    assert (THE,) not in ngrams and (CLOSE,) not in ngrams  # in every row: no decision
    assert not {g for g in ngrams if len(g) > 1 and g[-2] >= 2000}  # no id is frequent
    assert (AN,) in ngrams and (CLOSE, AN) not in ngrams and (DOT, AN) not in ngrams
    first = _first_marked_after_the_id(rows, ngrams)
    assert first == [THE if label else AN if i == 0 else SOME
                     for i, label in enumerate(labels)]
    # all the branch points: the openings, each where its sentence begins; never the
    # words after them ("record", "shows", "risk", "isolated", "remaining")
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        tokens = [t for t in row["labels"] if t != IGNORE]
        marked = [tokens[p] for p in decision_mask(torch.tensor([tokens]), ngrams)[0]
                  .nonzero()[:, 0].tolist()]
        assert marked == ([THE] if label else {0: [AN, THE], 2: [SOME, AN]}.get(
            i, [SOME, THE]))
    assert summary["decision_tokens"] == 20 + 2 * 20
    # the rules that miss it: 3-grams alone mark the token after the opening (and find
    # nothing in "An isolated", in two rows, each with its own 3-grams around it, so row
    # 0's first is "remaining"); without 1-grams, "An" is no hit, "isolated" (ending "An
    # isolated", in two rows) is
    three = learn_decision_ngrams(rows, labels, PREFIX, DecisionRule(lengths=(3,)))[0]
    assert _first_marked_after_the_id(rows, three) == [
        RECORD if label else REMAINING if i == 0 else RISK for i, label in enumerate(labels)]
    two = learn_decision_ngrams(rows, labels, PREFIX, DecisionRule(lengths=(2, 3)))[0]
    assert _first_marked_after_the_id(rows, two) == [
        THE if label else ISOLATED if i == 0 else SOME for i, label in enumerate(labels)]


def test_the_decision_rule_is_in_the_identity_of_the_runs_that_read_it_and_no_other(
        monkeypatch):
    """A run that reads decision tokens names the rule that marks them (its lengths,
    floors and marking) in its identity, so a run marked under another rule (the 3-gram
    rule before it named none) is never reused as one marked under this; every other
    run's identity is as it was, archived runs' included."""
    import json
    from pathlib import Path

    from training.sft_config import SFTRunConfig
    from training.targets import TARGETS

    def config(target: str, **kw) -> SFTRunConfig:
        return SFTRunConfig(dataset="v1", target=target, precision="fp32", **kw)

    for target in TARGETS:
        for option in ("answer", "branch"):
            data = config(target, decision_tokens=option).identity_data()
            if reads_decisions(target, option):
                assert data["decision_rule"] == DecisionRule().identity() == {
                    "marking": MARKING, "lengths": [1, 2, 3], "min_support": 0.05,
                    "min_purity": 0.95, "min_rows": 2}
            else:
                assert "decision_rule" not in data
    assert {t for t in TARGETS if "decision_rule" in config(t).identity_data()} == {
        "rationale-align"}
    # pinned from the code before the rule was named: the identities of the runs that
    # read decisions moved, no other did
    before = {("rationale-weighted", "branch"): "407df3976716834d",
              ("rationale-answer-only", "branch"): "36d3c0ae7aadf3b7",
              ("rationale-align", "answer"): "887d6b7855b6864f"}
    for (target, option), old in before.items():
        assert not config(target, decision_tokens=option).identity("x").startswith(old)
    unchanged = {("rationale-free", "branch"): "dd7b2b1a58e1b85a",
                 ("rationale-stepwise", "branch"): "fca8d34bc9d1daa9",
                 ("label", "branch"): "7dfe7340d58dbcfb",
                 ("multitask", "branch"): "0321f700d09b5e38",
                 ("rationale-weighted", "answer"): "c512326b7663d700"}
    for (target, option), old in unchanged.items():
        assert config(target, decision_tokens=option).identity("x").startswith(old)
    # every archived run rebuilds to the identity it was stored under
    archive = Path(__file__).resolve().parents[2] / "experiments" / "archive"
    stored = [json.loads(p.read_text()) for p in sorted(archive.glob("*/sft-*/run.json"))]
    assert len(stored) > 20
    for run in stored:
        assert SFTRunConfig.from_stored(run["config"]).identity(
            run["dataset"]["sha256"]) == run["config_hash"], run["config"]["target"]
    # any other rule is another run: other lengths, or another floor
    weighted = config("rationale-weighted", decision_tokens="branch").identity("x")
    for other in ({"lengths": (2, 3)}, {"min_support": 0.1}):
        monkeypatch.setattr("training.sft_config.DecisionRule",
                            lambda other=other: DecisionRule(**other))
        assert config("rationale-weighted", decision_tokens="branch").identity("x") != \
            weighted
        assert config("rationale-free", decision_tokens="branch").identity("x") == \
            config("rationale-free").identity("x")


def test_the_switch_leaves_every_existing_runs_identity_where_it_was():
    """Identities pinned from the code before ``decision_tokens`` existed."""
    from training.grid.config import ExperimentGrid
    from training.sft_config import SFTRunConfig

    def identity(target: str, **kw) -> str:
        return SFTRunConfig(dataset="v1", target=target, precision="fp32", **kw).identity("x")

    assert identity("rationale-weighted").startswith("c512326b7663d700")
    assert identity("rationale-weighted", decision_tokens="answer").startswith(
        "c512326b7663d700")
    assert identity("rationale-answer-only").startswith("7e54201979cffef2")
    assert identity("rationale-weighted", answer_loss_share=0.2, train_size=40,
                    seed=3).startswith("915135df5971fee1")
    assert identity("rationale-weighted", decision_tokens="branch") != \
        identity("rationale-weighted")
    assert identity("rationale-answer-only", decision_tokens="branch") != \
        identity("rationale-answer-only")
    for other in ("label", "rationale-free", "multitask", "rationale-align"):
        assert identity(other, decision_tokens="branch") == identity(other)
    # rationale-align reads the decision tokens whatever the option: its identity says so
    assert SFTRunConfig(dataset="v1", target="rationale-align").identity_data()[
        "label_loss_tokens"] == "answer and decision tokens"
    assert reads_decisions("rationale-align", "answer")
    assert not reads_decisions("rationale-free", "branch")
    assert not reads_decisions("rationale-weighted", "answer")
    assert identity("label").startswith("7dfe7340d58dbcfb")
    # a grid's settings reach every run; only the two ablations' identities move
    grids = [ExperimentGrid(dataset="v", sft={"targets": ["label", "rationale-weighted"],
                                              "settings": settings})
             for settings in ({}, {"decision_tokens": "branch"})]
    (label, weighted), (label_b, weighted_b) = (
        [cands[0] for _, cands in grid.sft_cells()] for grid in grids)
    assert weighted_b.decision_tokens == "branch"
    assert label_b.identity("h") == label.identity("h")
    assert weighted_b.identity("h") != weighted.identity("h")


def test_mechanism_v2_trains_its_ablations_with_decision_tokens():
    from pathlib import Path

    import yaml

    from training.reproduce_config import ReproduceConfig

    root = Path(__file__).resolve().parents[2]
    config = ReproduceConfig.model_validate(
        yaml.safe_load((root / "experiments" / "mechanism-v2.yaml").read_text()))
    _, grid = config.resolve("cpu")
    runs = {c.target: c for _, cands in grid.sft_cells() for c in cands}
    assert runs["rationale-weighted"].identity_data()["decision_tokens"] == "branch"
    assert runs["rationale-answer-only"].identity_data()["decision_tokens"] == "branch"
    assert "decision_tokens" not in runs["label"].identity_data()
    assert "decision (branch-point) tokens" in grid.reading.contrasts["weighting"].what


@pytest.fixture(scope="module")
def template_rows():
    """Free-form template-teacher rationales of 100 generated patients, as training rows
    (a rationale row and a label-only row each)."""
    from annotation_db.student_task import completion_messages
    from generation.teacher import write
    from tests.helpers import cohort_records

    prompt = [{"role": "user", "content": "The patient's record."}]
    free, label_only = [], []
    for record in cohort_records(100, 5):
        label = int(record["label"])
        free.append({"id": f"{record['external_id']}-r1", "label": label, "prompt": prompt,
                     "completion": completion_messages(label, write(record, "free")[
                         "rationale"])})
        label_only.append({"id": record["external_id"], "label": label, "prompt": prompt,
                           "completion": completion_messages(label)})
    return free, label_only


def test_on_template_rationales_the_branch_openings_are_decision_tokens(
        template_rows, bundled_model, monkeypatch):
    """Through the trainer's own preparation (``training.sft._loss_rows``): the n-grams
    come from the training rows, reading nothing else of the version but label-only's
    training rows (for the share ``s``); the n-grams cover the branch sentences, and the
    decision tokens are a few branch points a rationale, the sentences' openings among
    them; the weighted target gives answer and decision tokens the share ``s``, above
    their natural share; the answer-only target trains on them and the answer line."""
    import training.data
    from generation.models import load_tokenizer
    from training.sft import _loss_rows
    from training.sft_config import SFTRunConfig

    free, label_only = template_rows
    tokenizer = load_tokenizer(bundled_model.path)
    read = []

    def read_view(version, view, split):
        read.append((view, split))
        assert (view, split) == ("label_only", "train")
        return label_only

    monkeypatch.setattr(training.data, "read_view", read_view)
    monkeypatch.setattr(training.data, "eval_rows", lambda *a: pytest.fail("eval rows read"))
    config = SFTRunConfig(dataset="v", target="rationale-weighted", decision_tokens="branch",
                          max_length=4096)
    tokenized, weighting, tallies = _loss_rows(tokenizer, config, None, free)
    assert read == [("label_only", "train")]
    found = tallies["decision_ngrams"]
    grams = tokenizer.decode([t for g in sorted(weighting.decision_ngrams) for t in g])
    decoded = {tokenizer.decode(list(g)) for g in weighting.decision_ngrams}
    # the openings of the label-specific sentences (alone, or after "]." where the word
    # alone is no decision: "The record" / "The remaining"), a conclusion's words
    assert {" Together", " Established", " Some", " An", "]. The", " years is",
            " unlikely"} <= decoded
    assert "Final" not in grams and found["ngrams"] == len(weighting.decision_ngrams) > 20
    assert found["ngrams_by_length"] == {
        str(k): sum(len(g) == k for g in weighting.decision_ngrams) for k in (1, 2, 3)}
    # a few branch points a rationale (6.7 of ~112 tokens when written), not its sentences
    per_row, marked = [], Counter()
    for row in tokenized:
        span = rationale_tokens(row["labels"], weighting.prefix_ids)
        at = decision_mask(torch.tensor([span]), weighting.decision_ngrams)[0].nonzero()
        per_row.append(len(at))
        marked.update(tokenizer.decode([span[i]]) for i in at[:, 0].tolist())
    assert 1 <= min(per_row) and max(per_row) <= 12 and sum(per_row) == found["decision_tokens"]
    assert found["decision_tokens_per_row"] < 8 and 0.02 < found["decision_token_share"] < 0.1
    # the openings of the label-specific sentences: "Established dementia risk factors
    # are present", "Some risk factors are recorded", "Together these make a diagnosis"
    assert {" Established", " Some", " Together"} <= {t for t, _ in marked.most_common(15)}
    s = weighting.answer_share
    assert s == pytest.approx(1 / 6) and tallies["answer_weight_share"] == pytest.approx(s)
    # answer and branch points hold far less than s of the tokens: s raises their weight
    assert tallies["answer_token_share"] < s / 2
    assert tallies["rows_without_answer"] == 0 and tallies["decision_tokens"] > 0
    assert weighting.describe()["decision_tokens"]["ngrams_sha256"] == found["ngrams_sha256"]

    only, only_weighting, only_tallies = _loss_rows(
        tokenizer, config.model_copy(update={"target": "rationale-answer-only"}), None, free)
    assert only_weighting.decision_ngrams == weighting.decision_ngrams
    for row, full in zip(only, tokenized, strict=True):
        labels = torch.tensor([row["labels"]])
        kept = (labels != IGNORE)[0]
        on = [i for i, t in enumerate(full["labels"]) if t != IGNORE]
        start = answer_line_start([full["labels"][i] for i in on], weighting.prefix_ids)
        answer_line = torch.zeros_like(kept)
        answer_line[on[start:]] = True
        assert torch.equal(kept, decision_mask(torch.tensor([full["labels"]]),
                                               weighting.decision_ngrams)[0] | answer_line)
        assert tokenizer.decode(labels[0][kept]).endswith(
            ("Final answer: yes<|im_end|>\n", "Final answer: no<|im_end|>\n"))
    assert only_tallies["loss_tokens"] < tallies["loss_tokens"]
    # with no decision n-grams it is the answer-only target as it always was
    from training.data import tokenize_rows

    assert restrict_to_decisions(tokenized, frozenset(), weighting.prefix_ids) == \
        tokenize_rows(tokenizer, free, 4096, "answer")[0]
    plain = _loss_rows(tokenizer, config.model_copy(update={"decision_tokens": "answer"}),
                       None, free)[1]
    assert plain == replace(weighting, decision_ngrams=frozenset(), decision_rule=None)


def _opening(tokenizer, span: list[int]) -> tuple[int, int]:
    """(the position of the token opening a template rationale's second sentence, its
    first label-specific one, and of the first token of the evidence id ending the
    shared first sentence: "At 69 years of age, age is the strongest background factor;
    Male, aged 69 at the index date [E17]. The record shows …")."""
    starts, text = [], ""
    for token in span:
        starts.append(len(text))
        text += tokenizer.decode([token])
    shared = text.index("strongest background factor")
    end = text.index(".", shared)  # the first sentence's last character
    cite = text.rfind(" [", shared, end)
    opening = starts.index(end + 1)  # " The", " Some", …: a token begins after the "."
    return opening, max(i for i, at in enumerate(starts) if at <= (cite if cite > 0 else end))


def test_on_template_rationales_every_opening_is_label_determined_at_its_first_word(
        template_rows, bundled_model):
    """The template teacher's first sentence is shared by both labels and ends in an
    evidence id ("… at the index date [E17]."); the second begins the label's own ("The
    record shows", "Established", "Some risk factors", "An isolated", "No memory …").
    Its first word is a hit in every row, whatever id precedes it, and the branch point
    of its run, the opening itself wherever the id before it decides nothing (where a
    label-pure id already does, say a high one only yes patients' longer records reach,
    the run begins in the id). With 3-grams alone (the first rule) the opening was a hit
    only where the id's last digit was common enough."""
    from generation.models import load_tokenizer
    from training.data import tokenize_rows
    from training.loss import LossWeighting

    free, _ = template_rows
    tokenizer = load_tokenizer(bundled_model.path)
    prefix = LossWeighting.for_target(tokenizer, "none").prefix_ids
    tokenized, _ = tokenize_rows(tokenizer, free, 4096, "completion")
    labels = [r["label"] for r in free]
    spans = [rationale_tokens(r["labels"], prefix) for r in tokenized]
    places = [_opening(tokenizer, span) for span in spans]
    openings = Counter(tokenizer.decode([span[at]]) for span, (at, _) in zip(
        spans, places, strict=True))
    assert {" The", " Established", " Some", " An", " No"} <= set(openings)

    def opening_marks(rule: DecisionRule) -> tuple[int, int]:
        """(rows whose opening is a hit, rows whose opening is its run's branch point)"""
        ngrams = learn_decision_ngrams(tokenized, labels, prefix, rule)[0]
        hit_rows = branch_rows = 0
        for span, (at, cite) in zip(spans, places, strict=True):
            tokens = torch.tensor([span])
            hit, mask = decision_hits(tokens, ngrams)[0], decision_mask(tokens, ngrams)[0]
            hit_rows += bool(hit[at])
            branch_rows += bool(mask[at])
            if hit[at]:  # its run's branch point: the opening, or in the id before it
                start = int(mask[:at + 1].nonzero()[-1])
                assert start >= cite, tokenizer.decode(span[start:at + 2])
        return hit_rows, branch_rows

    hit_rows, branch_rows = opening_marks(DecisionRule())
    assert hit_rows == len(free) == 100
    assert branch_rows >= 95  # (99 when written: one "[E22]." decides)
    old_hits, old_branches = opening_marks(DecisionRule(lengths=(3,)))
    assert old_hits < 90 and old_branches < 90  # (72 and 72 when written)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from tests.helpers import audited_version

    root = tmp_path_factory.mktemp("decision-study")
    return audited_version(f"sqlite:///{root / 'db.sqlite'}", root / "exports"), root


@pytest.mark.slow
def test_a_run_with_decision_tokens_records_them_and_trains(study, tiny_model, model_cache):
    """One optimizer step of each ablation with ``decision_tokens: branch`` through the
    trainer: ``dataset.json`` names the n-grams and their rule, the weighted target's
    answer and decision tokens hold label-only's share, the answer-only target trains on
    fewer tokens than the whole turn."""
    import json
    from pathlib import Path

    from training.sft import train
    from training.sft_config import SFTRunConfig

    engine, root = study
    records = {}
    for target in ("rationale-weighted", "rationale-answer-only", "rationale-align"):
        run = train(engine, SFTRunConfig(
            dataset="t", target=target,
            decision_tokens="answer" if target == "rationale-align" else "branch",
            train_size=16, align_alpha=0.4,
            max_steps=1, per_device_train_batch_size=4, max_length=512, lora_r=4,
            base_model=tiny_model, cache_dir=str(model_cache), logging_steps=1,
            probe_steps=1, validate_each_epoch=False, runs_dir=str(root / "runs")))
        records[target] = json.loads((Path(run.run_dir) / "dataset.json").read_text())
        assert (Path(run.run_dir) / "DONE").exists()
    weighted, only = records["rationale-weighted"], records["rationale-answer-only"]
    found = weighted["decision_ngrams"]
    assert found["ngrams"] > 0 and found["rule"] == DecisionRule().describe()
    assert weighted["loss_weighting"]["decision_tokens"]["ngrams_sha256"] == \
        found["ngrams_sha256"] == only["decision_ngrams"]["ngrams_sha256"]
    assert weighted["answer_weight_share"] == pytest.approx(
        weighted["loss_weighting"]["answer_share"], abs=1e-6)
    assert weighted["decision_tokens"] > 0 and weighted["rows_without_answer"] == 0
    assert only["loss_tokens"] < weighted["loss_tokens"]
    # the answer-only run's record counts the same branch points as the n-grams found
    assert only["decision_tokens"] == only["decision_ngrams"]["decision_tokens"] > 0
    # rationale-align, with the option left at "answer": its label part is the answer and
    # the same decision tokens, holding α of the loss weight
    align = records["rationale-align"]
    assert align["decision_ngrams"]["ngrams_sha256"] == found["ngrams_sha256"]
    assert align["decision_tokens"] == weighted["decision_tokens"] > 0
    assert align["answer_weight_share"] == pytest.approx(0.4, abs=1e-6)


def test_a_run_that_finds_no_decision_tokens_stops_instead_of_weighting_the_answer_alone(
        study, tiny_model, model_cache):
    """Two training rows cannot hold an n-gram in two rows of one label: Align (and the
    ablations with ``branch``) would silently become the answer-token design; the run
    says why it stops instead."""
    from training.data import DataError
    from training.sft import train
    from training.sft_config import SFTRunConfig

    engine, root = study
    with pytest.raises(DataError, match="no label-pure token"):
        train(engine, SFTRunConfig(
            dataset="t", target="rationale-align", train_size=2, max_steps=1,
            per_device_train_batch_size=2, max_length=512, lora_r=4, base_model=tiny_model,
            cache_dir=str(model_cache), validate_each_epoch=False,
            runs_dir=str(root / "runs-too-few")))
