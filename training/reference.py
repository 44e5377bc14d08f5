"""Non-LLM reference models, fitted on the same training patients as a grid cell.

- **Structured-feature logistic regression** (the ceiling): age, sex, APOE ε4
  count, education, family history and an indicator for every coded risk factor
  and possible prodrome in the *full* record (not the budgeted prompt). The
  cohort's label comes from a hazard model over exactly these facts, so this is
  about the best a model can do with them.
- **TF-IDF logistic regression** on the prompt's history text, the same text the
  LLM sees.
- **Age alone** (logistic regression on the age at the index date): the floor any model
  of the record must beat. The cohort's hazard rises steeply with age, so age alone
  already ranks patients well.

Each is fitted on a cell's training patients (the same draw as the SFT runs of
that size and seed; :func:`training.data.training_rows`) and scored on the same
test patients, with the same stratified bootstrap CIs as the runs.
"""


import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db.models import DatasetVersion
from annotation_db.records import years_between
from training.metrics import bootstrap_metrics
from training.seed_level import balanced_accuracy_at_rate


def _features(record: dict) -> dict[str, float]:
    out: dict[str, float] = {"age": years_between(record["birth_date"], record["index_date"]),
                             "male": float(record["sex"] == "M")}
    for item in record["items"]:
        kind, value = item["kind"], item.get("value") or ""
        if kind == "genotype" and item.get("code") == "APOE":
            out["apoe_e4"] = float(value.count("e4"))
        elif kind == "demographic" and item["description"].startswith("Highest qualification"):
            out[f"education={value}"] = 1.0
        elif kind == "family_history":
            out["family_history"] = float(not item["description"].startswith("No "))
        if item.get("role") in ("risk_factor", "possible_prodrome"):
            name = item.get("code") or item["description"].split(":")[0]
            out[f"{item['role']}:{kind}:{name}"] = 1.0
    return out


def structured_features(engine: Engine, version: DatasetVersion) -> dict[str, dict]:
    """Feature dicts of every patient of the version's cohort, by external id."""
    from annotation_db.cohorts import get_cohort, iter_records

    with Session(engine) as session:
        cohort = get_cohort(session, version.manifest["cohort"]["name"])
    out = {}
    for record in iter_records(engine, cohort.id):
        out[record["external_id"]] = _features(record)
    return out


def _scored(model, x_train, y_train, x_test, y_test, evaluation) -> dict:
    model.fit(x_train, y_train)
    p = model.predict_proba(x_test)[:, 1]
    boot = bootstrap_metrics(y_test, p, threshold=evaluation.threshold,
                             n_resamples=evaluation.n_bootstrap, seed=evaluation.seed)
    return {name: est.as_dict() for name, est in boot.items()} | {
        "n": int(len(y_test)), "train_examples": int(len(y_train)), "p_yes": p.tolist(),
        "balanced_accuracy_matched": balanced_accuracy_at_rate(y_test, p)}


def fit_references(features: dict[str, dict], train_rows: list[dict], test_rows: list[dict],
                   evaluation) -> dict[str, dict]:
    """The reference models fitted on ``train_rows``' patients, scored on ``test_rows``."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from training.data import patient_of

    y_train = np.asarray([int(r["label"]) for r in train_rows])
    y_test = np.asarray([int(r["label"]) for r in test_rows])
    if len(set(y_train.tolist())) < 2 or len(set(y_test.tolist())) < 2:
        return {}
    structured = make_pipeline(DictVectorizer(sparse=False), StandardScaler(),
                               LogisticRegression(max_iter=5000, C=1.0))
    out = {"structured": _scored(
        structured, [features[patient_of(r)] for r in train_rows], y_train,
        [features[patient_of(r)] for r in test_rows], y_test, evaluation)}
    tfidf = make_pipeline(TfidfVectorizer(token_pattern=r"[A-Za-z0-9.]+", sublinear_tf=True,
                                          ngram_range=(1, 2), min_df=1),
                          LogisticRegression(max_iter=2000, C=1.0))
    age = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    out["age"] = _scored(age, [[features[patient_of(r)]["age"]] for r in train_rows], y_train,
                         [[features[patient_of(r)]["age"]] for r in test_rows], y_test,
                         evaluation)
    out["tfidf"] = _scored(tfidf, [r["prompt"][-1]["content"] for r in train_rows], y_train,
                           [r["prompt"][-1]["content"] for r in test_rows], y_test, evaluation)
    return out
