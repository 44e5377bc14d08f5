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
    rationales, cross-validated, cannot tell the label (AUROC < 0.6); on the first
    teacher's rationales the same regression can (the check is not blind)."""
    from generation import teacher
    from generation.models import load_tokenizer

    tokenizer = load_tokenizer(bundled_model.path)
    y = np.asarray([int(r["label"]) for r in records])

    def openings(writer) -> list[list[int]]:
        return [tokenizer(_text(writer(r, fmt)), add_special_tokens=False)["input_ids"][:10]
                for r in records]

    balanced = openings(write)
    assert _opening_auroc(balanced, y) < 0.6
    assert _opening_auroc(openings(teacher.write), y) > 0.65
    first_words = {tokenizer.decode(ids).split(" ")[0] for ids in balanced}
    assert first_words == {o.split(" ")[0] for o in OPENINGS}
