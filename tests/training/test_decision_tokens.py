"""Decision tokens (issue 37): the weighted and answer-only ablations may treat the
tokens where a rationale commits to its label (its branch points) as part of the answer.

Hand-built token rows stand for tokenized training rows: prompt tokens unlabelled
(-100), then a completion of a lead-in shared by both labels, a label-specific opening
phrase, patient-specific words, a phrase shared by both labels, ``Final answer:``
(``PREFIX``), the answer word and an end token. The branch point is the opening's first
token: the first label-pure 3-gram is the lead-in's last two tokens and it. One test
runs the whole path on template-teacher rationales with the bundled tokenizer."""

import inspect
import time
from collections import Counter
from dataclasses import replace

import pytest
import torch

from training.decision_tokens import (
    DecisionRule,
    answer_line_start,
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
OPENING_GRAMS = {(310, 311, 100), (311, 100, 101), (100, 101, 102), (101, 102, 103),
                 (310, 311, 200), (311, 200, 201), (200, 201, 202), (201, 202, 203)}


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
    # the 3-grams that reach into an opening, nothing that crosses into a patient's own
    # words, the lead-in alone, the shared phrase, the label-leaning finding, the rare
    # phrase or the answer line
    assert ngrams == OPENING_GRAMS
    assert summary["ngrams"] == 8 and summary["rule"] == DecisionRule().describe()
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
    assert ngrams | {(900, 901, 902), (1002, 5002, 300)} <= loose
    assert (300, 301, 302) not in loose and (400, 401, 402) not in loose
    # however few the rows, one row's n-grams are never decisions
    assert learn_decision_ngrams(rows[:10], labels[:10], PREFIX)[0] == OPENING_GRAMS
    # without the lead-in the opening starts the rationale: no window ends on its first
    # token, and the branch point is the one completing its first 3-gram
    bare = [_row(label, (1000 + i, 5000 + i)) for i, label in enumerate(labels)]
    bare_ngrams, bare_summary = learn_decision_ngrams(bare, labels, PREFIX)
    assert bare_summary["decision_tokens"] == len(bare)
    assert [[t for t in r["labels"] if t != IGNORE][0] for r in restrict_to_decisions(
        bare, bare_ngrams, PREFIX)] == [OPENING[label][2] for label in labels]
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
        "n": 3, "min_support": 0.05, "min_purity": 0.95, "min_rows": 2, "ngrams": 8,
        "ngrams_sha256": ngram_hash(ngrams)}
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


def _branch_points(row: list[int], ngrams: frozenset, n: int = 3) -> list[int]:
    """The definition, one window at a time: the last token of each window that is a
    decision n-gram of labelled tokens while the window a token earlier is not."""
    def pure(j: int) -> bool:
        window = tuple(row[j:j + n])
        return j >= 0 and len(window) == n and IGNORE not in window and window in ngrams
    return [j + n - 1 for j in range(len(row) - n + 1) if pure(j) and not pure(j - 1)]


def test_the_mask_marks_the_token_completing_each_runs_first_window():
    ngrams = frozenset({(7, 8, 9), (8, 9, 10), (20, 21, 22), (22, 23, 24)})
    #         0  1  2   3  4  5  6       7  8   9 10 11  12 13 14 15 16
    tokens = [7, 8, 9, 10, 1, 7, 8, IGNORE, 9, 10, 8, 9, 10, 2, 7, 8, 9,
              20, 21, 22, 23, 24]
    #         17  18  19  20  21
    marked = decision_mask(torch.tensor([tokens]), ngrams)[0].nonzero()[:, 0].tolist()
    # 7 8 9 10: two overlapping pure windows, one run: its first window's last token
    # (the window before it holds no tokens); 7 8 _ 9 10: an unlabelled token breaks
    # every window, nothing; 8 9 10 and 7 8 9 later: separate runs, one token each;
    # 20 21 22 23 24: two pure windows with an impure one between, two runs
    assert marked == [2, 12, 16, 19, 21] == _branch_points(tokens, ngrams)
    # a run begins where the window a token earlier is impure: 1 7 8 9 10 marks the 9
    assert decision_mask(torch.tensor([[1, 7, 8, 9, 10]]), ngrams)[0].tolist() == [
        False, False, False, True, False]
    # against the definition on random rows of a small vocabulary (many long runs)
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(0, 6, (64, 40), generator=g)
    rows[torch.rand(rows.shape, generator=g) < 0.05] = IGNORE
    small = frozenset(tuple(int(x) for x in torch.randint(0, 6, (3,), generator=g))
                      for _ in range(40))
    mask = decision_mask(rows, small)
    for row, m in zip(rows.tolist(), mask, strict=True):
        assert m.nonzero()[:, 0].tolist() == _branch_points(row, small)
    pure = sum(tuple(r[j:j + 3]) in small for r in rows.tolist() for j in range(38))
    assert 0 < mask.sum() < pure  # runs of several windows were there, one token each


def test_the_mask_is_exact_cheap_and_needs_every_token_of_an_ngram_labelled():
    ngrams = frozenset({(7, 8, 9), (8, 9, 10)})
    tokens = torch.tensor([[7, 8, 9, 10, 1, 7, 8, IGNORE, 9, 10, 8, 9]])
    assert decision_mask(tokens, ngrams).nonzero()[:, 1].tolist() == [2]
    # token ids too large for one int64 key per window: compared directly, same answer
    big = 1 << 22
    assert torch.equal(decision_mask(tokens + big * (tokens >= 0), frozenset(
        tuple(t + big for t in g) for g in ngrams)), decision_mask(tokens, ngrams))
    assert not decision_mask(tokens, frozenset()).any()
    # batch 8 × 768 tokens, 150 n-grams of a 49,152-token vocabulary: well under 10 ms
    g = torch.Generator().manual_seed(0)
    many = frozenset(tuple(int(x) for x in torch.randint(0, 49152, (3,), generator=g))
                     for _ in range(150))
    batch = torch.randint(0, 49152, (8, 768), generator=g)
    timings = []
    for _ in range(20):
        start = time.perf_counter()
        decision_mask(batch, many)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.01


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
    for phrase in ("Together these make", "years is unlikely", "Established dementia risk",
                   "Some risk factors"):
        assert phrase in " ".join(tokenizer.decode(list(g)) for g in weighting.decision_ngrams)
    assert "Final" not in grams and found["ngrams"] == len(weighting.decision_ngrams) > 20
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
    with pytest.raises(DataError, match="no label-pure token 3-gram"):
        train(engine, SFTRunConfig(
            dataset="t", target="rationale-align", train_size=2, max_steps=1,
            per_device_train_batch_size=2, max_length=512, lora_r=4, base_model=tiny_model,
            cache_dir=str(model_cache), validate_each_epoch=False,
            runs_dir=str(root / "runs-too-few")))
