"""The balanced template teacher: grounded like the first one, but its opening does not
predict the label and only its last sentence depends on it."""

import re

import numpy as np
import pytest

from generation.cohort import generate
from generation.cohort_config import CohortConfig
from generation.teacher_balanced import OPENINGS, write


@pytest.fixture(scope="module")
def records():
    records, _ = generate(CohortConfig(n=200, seed=11, mode="case-enriched"))
    assert 60 <= sum(r["label"] for r in records) <= 140  # both classes, well represented
    return records


def _text(out: dict) -> str:
    return out["rationale"] if isinstance(out["rationale"], str) else " ".join(
        s["step"] for s in out["rationale"])


def _parsed(out: dict):
    """The output as generation parses it: ``.text`` is what the student is trained on
    (stepwise: numbered lines), ``.cited_ids()`` every id it cites."""
    from generation.rationale_schema import RationaleOutput

    return RationaleOutput.model_validate(out)


@pytest.mark.parametrize("fmt", ["free", "stepwise"])
def test_it_follows_the_label_and_cites_only_the_record(records, fmt):
    for record in records[:40]:
        out = write(record, fmt)
        ids = {item["id"] for item in record["items"]}
        assert out["prediction"] == ("yes" if record["label"] else "no")
        assert out["evidence"] and set(out["evidence"]) <= ids
        cited = set(re.findall(r"\[(E\d+)\]", _text(out)))
        assert cited <= ids
        last = _text(out).rstrip().rsplit(". ", 1)[-1]
        assert last.endswith("is likely." if record["label"] else "is unlikely.")


@pytest.mark.parametrize("fmt", ["free", "stepwise"])
def test_only_the_conclusion_depends_on_the_label(records, fmt):
    """Every record, written for each label: the texts are the same up to the last word,
    and so are the evidence cited and the steps."""
    for record in records:
        yes, no = write({**record, "label": 1}, fmt), write({**record, "label": 0}, fmt)
        assert _text(yes).removesuffix("likely.") == _text(no).removesuffix("unlikely.")
        assert yes["evidence"] == no["evidence"]
        if fmt == "stepwise":
            assert [s["evidence"] for s in yes["rationale"]] == \
                [s["evidence"] for s in no["rationale"]]


@pytest.fixture(scope="module")
def cpu_cohort():
    """The cpu scale's cohort (1,000 patients, seed 7, case-enriched)."""
    records, _ = generate(CohortConfig(n=1000, seed=7, mode="case-enriched"))
    return records


@pytest.mark.parametrize("fmt", ["free", "stepwise"])
def test_written_from_the_history_shown_it_states_no_absence_the_record_contradicts(
        cpu_cohort, bundled_model, fmt):
    """As generation gives it (only the items the prompt's history shows, at the cpu
    scale's budget of 224 tokens), every rationale passes every grounding check against
    the whole record: the first 100 patients, and every patient whose possible early
    changes were all left out of the prompt (version 1 wrote "No memory complaint … is
    documented" for them, which a memory complaint left out contradicts)."""
    from annotation_db.render import render_compact, tokenizer_counter
    from generation.grounding import check_rationale
    from generation.models import load_tokenizer

    count = tokenizer_counter(load_tokenizer(bundled_model.path))
    hidden_complaints = 0
    for n, record in enumerate(cpu_cohort):
        shown_ids = set(render_compact(record, 224, count).shown_ids)
        shown = {**record, "items": [i for i in record["items"] if i["id"] in shown_ids]}
        early = [i for i in record["items"] if i.get("role") == "possible_prodrome"]
        left_out = bool(early) and not any(i["id"] in shown_ids for i in early)
        if n >= 100 and not left_out:
            continue
        hidden_complaints += left_out and any(i.get("code") == "R41.3" for i in early)
        out = _parsed(write(shown, fmt))
        report = check_rationale(out.text, out.cited_ids(), out.prediction, record,
                                 mode="label-conditioned")
        failed = [c for c in report.checks if not c["ok"]]
        assert not failed, (record["external_id"], failed)
    assert hidden_complaints >= 10  # a memory complaint the budget left out (16 here)


def test_a_body_cut_to_length_is_cut_the_same_for_both_labels(records):
    """A record with enough findings to pass 1,200 characters: its body is cut at the
    same place whatever the label (the cut once depended on the conclusion's length)."""
    record = max(records, key=lambda r: len(r["items"]))
    many = {**record, "items": [dict(item, description=item["description"] + " " + "x" * 300)
                                for item in record["items"]]}
    yes, no = write({**many, "label": 1}, "free"), write({**many, "label": 0}, "free")
    assert len(no["rationale"]) == 1200 and len(yes["rationale"]) == 1198  # cut, both
    assert yes["rationale"].removesuffix("likely.") == no["rationale"].removesuffix("unlikely.")


def _opening_auroc(openings: list[list[int]], y: np.ndarray) -> float:
    """Cross-validated AUROC of a logistic regression on token (1- and 2-gram) counts."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    texts = [" ".join(map(str, ids)) for ids in openings]
    model = make_pipeline(CountVectorizer(token_pattern=r"\S+", ngram_range=(1, 2)),
                          LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    p = cross_val_predict(model, texts, y, cv=folds, method="predict_proba")[:, 1]
    return roc_auc_score(y, p)


@pytest.mark.parametrize("fmt", ["free", "stepwise"])
def test_the_opening_does_not_predict_the_label(records, bundled_model, fmt):
    """A logistic regression on the first 10 tokens (the student's tokenizer) of 200
    rationales, cross-validated, cannot tell the label (AUROC < 0.6). The check is not
    blind: the first teacher's opening sentence is about age, so the same regression on
    the first 10 tokens of its second sentence, where its decision is, tells the label
    (AUROC > 0.9)."""
    from generation import teacher
    from generation.models import load_tokenizer

    tokenizer = load_tokenizer(bundled_model.path)
    y = np.asarray([int(r["label"]) for r in records])

    def first_tokens(texts: list[str]) -> list[list[int]]:
        return [tokenizer(t, add_special_tokens=False)["input_ids"][:10] for t in texts]

    balanced = first_tokens([_parsed(write(r, fmt)).text for r in records])
    assert _opening_auroc(balanced, y) < 0.6
    second = [_text(teacher.write(r, fmt)).split(". ", 1)[1] for r in records]
    assert _opening_auroc(first_tokens(second), y) > 0.9
    first_words = {tokenizer.decode(ids).removeprefix("1. ").split(" ")[0] for ids in balanced}
    assert first_words == {o.split(" ")[0] for o in OPENINGS}
