"""Check a stored cohort against its targets: incidence, hazard ratios, marginals, integrity.

    rationale-audit cohort validate --cohort NAME --out reports/cohort

Everything is computed from the records as stored (what a model or a clinician
sees), not from the simulator's internals. Case-enriched cohorts are re-weighted
with their recorded sampling fractions for prevalence and incidence; hazard ratios
are estimated by logistic regression, which recovers odds ratios under case-control
sampling (close to hazard ratios for a rare outcome over a fixed horizon).
"""

import datetime as dt
import html
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np

from annotation_db.records import DAYS_PER_YEAR, years_between
from generation.cohort import APOE_ORDER, CohortModel

ICD10 = re.compile(r"^[A-Z][0-9]{2}(\.[0-9A-Z]{1,4})?$")
ENOUGH_CASES = 100  # per age band, for the ±20 % incidence check (relative SE ≈ 10 %)
AUC_ALARM = 0.9
RISK_FACTOR_PREFIXES = {
    "hypertension": ("I10",), "diabetes": ("E11",), "hyperlipidaemia": ("E78",),
    "obesity": ("E66",), "depression": ("F32", "F33"), "hearing_loss": ("H90", "H91"),
    "head_injury": ("S06",), "vision_loss": ("H54",),
}
PRODROME_CODES = ("R41.3", "R29.6", "R63.4", "G47.0")


@dataclass
class Features:
    """Per-patient covariates read back from records."""

    names: list[str]
    x: np.ndarray
    age: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    male: np.ndarray
    prodrome: np.ndarray
    baseline: dict[str, np.ndarray]


def _date(value) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def extract_features(records: list[dict], model: CohortModel) -> Features:
    exposures = list(model.params["exposures"])
    apoe_names = [f"apoe_{g.replace('/', '_')}" for g in APOE_ORDER[1:]]
    names = [*exposures, "male", "less_education", "family_history", *apoe_names]
    x = np.zeros((len(records), len(names)))
    col = {name: j for j, name in enumerate(names)}
    age, label, weight, male = (np.zeros(len(records)) for _ in range(4))
    prodrome = np.zeros((len(records), len(PRODROME_CODES)))
    baseline = {key: np.full(len(records), np.nan) for key in model.params["marginal_targets"]}
    loinc = {spec["loinc"]: key for key, spec in model.codes["measurements"].items()}
    for i, record in enumerate(records):
        index = _date(record["index_date"])
        birth = _date(record["birth_date"])
        age[i] = years_between(birth, index)
        label[i], weight[i] = record["label"], record.get("weight", 1.0)
        male[i] = x[i, col["male"]] = record["sex"] == "M"
        for item in record["items"]:
            code, kind, value = item.get("code") or "", item["kind"], item.get("value")
            if kind == "diagnosis":
                for name, prefixes in RISK_FACTOR_PREFIXES.items():
                    if code.startswith(prefixes):
                        x[i, col[name]] = 1
            elif kind == "symptom" and code in PRODROME_CODES:
                prodrome[i, PRODROME_CODES.index(code)] = 1
            elif kind == "genotype" and value and value != "e3/e3":
                x[i, col[f"apoe_{value.replace('/', '_')}"]] = 1
            elif kind == "family_history" and item.get("role") == "risk_factor":
                x[i, col["family_history"]] = 1
            elif kind == "demographic" and value == "none":
                x[i, col["less_education"]] = 1
            elif kind == "lifestyle":
                text = item["description"]
                if text.startswith("Smoking status") and value == "current":
                    x[i, col["current_smoking"]] = 1
                elif text.startswith("Alcohol") and value is not None and float(value) > 21:
                    x[i, col["alcohol_excess"]] = 1
                elif text.startswith("Physical activity") and value == "low":
                    x[i, col["physical_inactivity"]] = 1
                elif text == "Lives alone":
                    x[i, col["social_isolation"]] = 1
            elif kind == "measurement" and code in loinc and _date(item["date"]) == index:
                baseline[loinc[code]][i] = float(value)
    return Features(names, x, age, label.astype(bool), weight, male.astype(bool), prodrome,
                    baseline)


def _weighted_share(mask: np.ndarray, weight: np.ndarray) -> float:
    return float(np.sum(weight * mask) / np.sum(weight)) if np.sum(weight) else math.nan


def incidence_table(features: Features, model: CohortModel, records: list[dict],
                    horizon: float, age_min: int) -> list[dict]:
    """Observed (re-weighted) vs target five-year incidence by baseline age band and sex."""
    target = model.cumulative_target(features.age, horizon)
    target = 1 - np.exp(-target)
    expected = np.array([(r.get("outcome") or {}).get("expected_risk") or np.nan for r in records])
    band = ((features.age - age_min) // 5).astype(int)
    rows = []
    for b in sorted(set(band.tolist())):
        for sex in ("all", "F", "M"):
            mask = band == b
            if sex != "all":
                mask = mask & (features.male == (sex == "M"))
            if not mask.any():
                continue
            w, y = features.weight[mask], features.label[mask]
            cases = int(y.sum())
            observed = float(np.sum(w * y) / np.sum(w))
            tgt = float(np.sum(w * target[mask]) / np.sum(w))
            exp_ = (float(np.nansum(w * expected[mask]) / np.sum(w))
                    if not np.all(np.isnan(expected[mask])) else None)
            low = age_min + 5 * b
            row = {"age_band": f"{low}-{low + 4}", "sex": sex, "patients": int(mask.sum()),
                   "cases": cases, "observed": observed, "target": tgt, "expected": exp_,
                   "ratio_to_target": observed / tgt if tgt > 0 else None}
            if sex == "all":
                row["enough_cases"] = cases >= ENOUGH_CASES
                row["within_20pct"] = (abs(observed / tgt - 1) <= 0.2
                                       if cases >= ENOUGH_CASES and tgt > 0 else None)
            rows.append(row)
    return rows


def hazard_ratio_recovery(features: Features, model: CohortModel, age_min: int) -> dict:
    """Logistic regression on the records; ORs with 95 % and family-wise CIs vs injected HRs."""
    import statsmodels.api as sm
    from scipy.stats import norm

    keep = [j for j in range(features.x.shape[1]) if features.x[:, j].std() > 0]
    band = ((features.age - age_min) // 5).astype(int)
    bands = sorted(set(band.tolist()))[1:]
    design = np.column_stack([
        np.ones(len(features.age)), features.age - features.age.mean(),
        *[(band == b).astype(float) for b in bands], features.x[:, keep],
    ])
    injected = model.hazard_ratios()
    not_computable = {"computable": False, "rows": [], "all_covered_familywise": None}
    if features.label.all() or not features.label.any():
        return {**not_computable, "reason": "every patient has the same label"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence is checked explicitly below
            fit = sm.Logit(features.label.astype(float), design).fit(disp=0, maxiter=200)
    except Exception as exc:  # a singular design: say so, do not crash
        return {**not_computable, "reason": f"the regression cannot be fitted ({exc})"}
    if not fit.mle_retvals.get("converged", False) or np.any(np.abs(fit.params) > 15):
        return {**not_computable, "reason": "the regression did not converge (too few patients "
                                            "or perfect separation); generate a larger cohort"}
    offset = 2 + len(bands)
    z95, z_family = norm.ppf(0.975), norm.ppf(1 - 0.025 / max(1, len(keep)))
    rows = []
    for k, j in enumerate(keep):
        name = features.names[j]
        beta, se = fit.params[offset + k], fit.bse[offset + k]
        row = {
            "covariate": name, "injected_hr": injected.get(name),
            "exposed": int(features.x[:, j].sum()),
            "odds_ratio": math.exp(beta),
            "ci95": [math.exp(beta - z95 * se), math.exp(beta + z95 * se)],
            "ci_familywise": [math.exp(beta - z_family * se), math.exp(beta + z_family * se)],
        }
        hr = row["injected_hr"]
        row["covered_95"] = hr is not None and row["ci95"][0] <= hr <= row["ci95"][1]
        row["covered_familywise"] = (hr is not None
                                     and row["ci_familywise"][0] <= hr <= row["ci_familywise"][1])
        rows.append(row)
    return {"computable": True, "rows": rows, "n": int(len(features.age)),
            "cases": int(features.label.sum()),
            "all_covered_familywise": all(r["covered_familywise"] for r in rows),
            "familywise_level": "95% simultaneous (Bonferroni over the covariates)"}


def marginals(features: Features, model: CohortModel) -> list[dict]:
    rows = []
    w = features.weight
    exposures = model.params["exposures"]
    for j, name in enumerate(features.names):
        if name in exposures:
            rows.append({"measure": f"{name} (share)", "target": exposures[name]["prevalence"],
                         "observed": _weighted_share(features.x[:, j] > 0, w)})
    rows.append({"measure": "female (share)", "target": model.params["sex"]["female_share"],
                 "observed": _weighted_share(~features.male, w)})
    rows.append({"measure": "no qualifications (share)",
                 "target": model.params["education"]["none"],
                 "observed": _weighted_share(features.x[:, features.names.index("less_education")]
                                             > 0, w)})
    freq = model.params["apoe_genotype_frequencies"]
    total = sum(freq.values())
    for genotype in APOE_ORDER[1:]:
        j = features.names.index(f"apoe_{genotype.replace('/', '_')}")
        rows.append({"measure": f"APOE {genotype} (share)", "target": freq[genotype] / total,
                     "observed": _weighted_share(features.x[:, j] > 0, w)})
    for key, target in model.params["marginal_targets"].items():
        values = features.baseline[key]
        ok = ~np.isnan(values)
        if ok.any():
            mean = float(np.average(values[ok], weights=w[ok]))
            sd = float(np.sqrt(np.average((values[ok] - mean) ** 2, weights=w[ok])))
            rows.append({"measure": f"{key} at index (mean)", "target": target["mean"],
                         "observed": mean})
            rows.append({"measure": f"{key} at index (SD)", "target": target["sd"],
                         "observed": sd})
    for row in rows:
        row["difference"] = row["observed"] - row["target"]
    return rows


INTEGRITY_CHECKS = (
    "item_after_index", "item_after_death", "anti_dementia_drug_before_diagnosis",
    "outcome_code_in_history", "invalid_icd10_code", "sex_inappropriate_code",
    "label_disagrees_with_outcome",
)


def record_problems(record: dict, model: CohortModel, gap_days: int = 0,
                    horizon_years: float = 5.0) -> list[tuple[str, str]]:
    """Every temporal or coding problem of one record, as (check, where) pairs."""
    leak = model.codes["leakage"]
    sex_codes = model.codes["sex_specific_icd10_prefixes"]
    pid, index = record["external_id"], _date(record["index_date"])
    outcome = record.get("outcome") or {}
    death = _date(outcome["death_date"]) if outcome.get("death_date") else None
    adrd = _date(outcome["adrd_date"]) if outcome.get("adrd_date") else None
    wrong_sex = tuple(sex_codes["female_only" if record["sex"] == "M" else "male_only"])
    problems = []
    for item in record["items"]:
        when = _date(item["date"]) if item.get("date") else None
        code, system = item.get("code") or "", item.get("code_system")
        where = f"{pid} {item.get('id') or item['description']}"
        if when and when > index - dt.timedelta(days=gap_days):
            problems.append(("item_after_index", f"{where} ({when})"))
        if when and death and when > death:
            problems.append(("item_after_death", f"{where} ({when})"))
        if (system == "ATC" and code.startswith(tuple(leak["anti_dementia_atc_prefixes"]))) or (
                system == "RxNorm" and code in model.codes.get("anti_dementia_rxnorm", ())):
            if adrd is None or (when and when < adrd):
                problems.append(("anti_dementia_drug_before_diagnosis", f"{where} {code}"))
        if system == "ICD-10":
            if not ICD10.match(code):
                problems.append(("invalid_icd10_code", f"{where} {code!r}"))
            if code.startswith(tuple(leak["outcome_icd10_prefixes"])):
                problems.append(("outcome_code_in_history", f"{where} {code}"))
            if code.startswith(wrong_sex):
                problems.append(("sex_inappropriate_code", f"{where} {code}"))
    if adrd is not None:
        horizon_end = index + dt.timedelta(days=round(horizon_years * DAYS_PER_YEAR))
        if record["label"] != (index < adrd <= horizon_end):
            problems.append(("label_disagrees_with_outcome", pid))
    return problems


def integrity(records: list[dict], model: CohortModel, gap_days: int = 0,
              horizon_years: float = 5.0) -> dict:
    """Temporal and coding checks; every violation is counted (up to 20 examples each)."""
    found: dict[str, list[str]] = {name: [] for name in INTEGRITY_CHECKS}
    for record in records:
        for check, where in record_problems(record, model, gap_days, horizon_years):
            found[check].append(where)
    return {name: {"violations": len(hits), "examples": hits[:20]} for name, hits in found.items()}


def discrimination(features: Features) -> dict:
    """In-sample AUC of logistic models; a full-information AUC above 0.9 raises an alarm."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    y = features.label
    if y.all() or not y.any():
        return {"computable": False, "reason": "the cohort has only one label value"}
    age = (features.age - features.age.mean())[:, None]
    base = np.column_stack([features.baseline[k] for k in sorted(features.baseline)])
    base = np.where(np.isnan(base), np.nanmean(base, axis=0), base)
    base = (base - base.mean(axis=0)) / np.maximum(base.std(axis=0), 1e-9)
    sets = {
        "age_sex": np.column_stack([age, features.male]),
        "risk_factors": np.column_stack([age, features.x]),
        "full_information": np.column_stack([age, features.x, features.prodrome, base]),
        "full_without_prodrome": np.column_stack([age, features.x, base]),
    }
    out: dict = {"computable": True}
    for name, design in sets.items():
        clf = LogisticRegression(max_iter=2000, C=10.0).fit(design, y)
        out[name] = float(roc_auc_score(y, clf.predict_proba(design)[:, 1]))
    out["alarm"] = out["full_information"] > AUC_ALARM
    out["note"] = (f"AUC above {AUC_ALARM} suggests over-signal or leakage"
                   if out["alarm"] else f"full-information AUC is at or below {AUC_ALARM}")
    return out


def validate(records: list[dict], *, horizon_years: float = 5.0, age_min: int = 40,
             gap_days: int = 0, model: CohortModel | None = None) -> dict:
    model = model or CohortModel.load()
    features = extract_features(records, model)
    return {
        "patients": len(records),
        "cases": int(features.label.sum()),
        "incidence": incidence_table(features, model, records, horizon_years, age_min),
        "hazard_ratios": hazard_ratio_recovery(features, model, age_min),
        "marginals": marginals(features, model),
        "integrity": integrity(records, model, gap_days, horizon_years),
        "discrimination": discrimination(features),
    }


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "–".join(_fmt(v) for v in value)
    if value is None:
        return "—"
    return html.escape(str(value))


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict, title: str) -> str:
    hr = report["hazard_ratios"]
    disc = report["discrimination"]
    integrity_rows = [{"check": k, **v, "examples": ", ".join(v["examples"][:5])}
                      for k, v in report["integrity"].items()]
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{report['patients']} patients, {report['cases']} with ADRD within the horizon. "
        "Prevalence and incidence are re-weighted by the recorded sampling fractions.</p>",
        "<h2>Incidence: observed vs target (and model-expected) by baseline age band and sex</h2>",
        f"<p>The ±20% check applies to bands with at least {ENOUGH_CASES} cases.</p>",
        _table(report["incidence"], ["age_band", "sex", "patients", "cases", "observed",
                                     "expected", "target", "ratio_to_target", "within_20pct"]),
        "<h2>Injected hazard ratios recovered by logistic regression</h2>",
        (f"<p>{html.escape(hr.get('familywise_level', ''))}; all covered: "
         f"{hr.get('all_covered_familywise')}</p>" if hr["computable"]
         else f"<p>Not computable: {html.escape(hr['reason'])}</p>"),
        _table(hr["rows"], ["covariate", "exposed", "injected_hr", "odds_ratio", "ci95",
                            "covered_95", "ci_familywise", "covered_familywise"]),
        "<h2>Marginals vs targets</h2>",
        _table(report["marginals"], ["measure", "target", "observed", "difference"]),
        "<h2>Temporal and coding integrity</h2>",
        _table(integrity_rows, ["check", "violations", "examples"]),
        "<h2>Discrimination (in-sample AUC)</h2>",
        _table([{"model": k, "auc": v} for k, v in disc.items()
                if k not in ("computable", "alarm", "note", "reason")], ["model", "auc"]),
        f"<p><strong>{html.escape(disc.get('note', disc.get('reason', '')))}</strong></p>",
    ]
    style = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
             "padding:.25em .6em;text-align:right}th{background:#f3f3f3}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{''.join(sections)}</body></html>\n")
