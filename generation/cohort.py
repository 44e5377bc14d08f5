"""Synthetic UK Biobank-like participants with a calibrated five-year ADRD label.

    rationale-audit cohort generate --n 5000 --seed 7 --case-ratio 1:1

How a cohort is made (parameters and their sources: ``data/cohort_model.yaml``,
``data/incidence.csv``, ``data/codes.yaml``; the assumptions: docs/cohort.md):

1. **Population** (vectorized, numpy): age at recruitment, sex, education, APOE
   genotype, family history and twelve binary Lancet-2024 exposures. Two latent
   scores correlate the exposures (metabolic: obesity, diabetes, hypertension,
   lipids; psychosocial: depression, isolation, smoking, alcohol); each exposure's
   intercept is solved so that its baseline prevalence hits its target.
2. **Outcome**: a person's ADRD hazard is the recorded UK Biobank-like incidence of
   their age (``incidence.csv``, integrated over the five years as they age) times
   the product of their hazard ratios, renormalised within each baseline age band so
   that the band's average incidence equals the target. Death competes. The label
   is "ADRD diagnosed within ``horizon_years`` after the index date".
3. **Sampling**: ``population`` keeps everyone simulated; ``case-enriched`` simulates
   until it has enough cases, keeps them, draws controls uniformly, and records both
   sampling fractions so that prevalence and calibration can be re-weighted.
4. **Histories** (per patient, seeded by cohort seed and patient number): dated
   diagnoses, treatments started after them, measurements at four visits with
   trajectories, lifestyle at the baseline assessment, and prodromal symptoms before
   the future diagnosis of some cases (and at background rates in everyone). Items
   after ``index_date - prediction_gap_days`` are never written.
5. **Split**: patient-level train/validation/test, stratified by label, by seed.
"""

import csv
import datetime as dt
import math
import multiprocessing
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from annotation_db.records import DAYS_PER_YEAR, assign_evidence_ids
from generation.cohort_config import CohortConfig  # re-exported: the simulator's input

DATA = Path(__file__).with_name("data")
APOE_ORDER = ("e3/e3", "e3/e4", "e2/e3", "e2/e4", "e4/e4", "e2/e2")
EDUCATION_TEXT = {
    "degree": "College or university degree",
    "other": "A levels, O levels/GCSEs or vocational qualifications",
    "none": "None of the listed qualifications",
}


@dataclass(frozen=True)
class CohortModel:
    """The parameters in generation/data, loaded once."""

    params: dict
    codes: dict
    incidence: np.ndarray  # rows of (age_low, age_high, per_1000_py)

    @classmethod
    def load(cls, folder: Path = DATA) -> "CohortModel":
        params = yaml.safe_load((folder / "cohort_model.yaml").read_text())
        codes = yaml.safe_load((folder / "codes.yaml").read_text())
        lines = [line for line in (folder / "incidence.csv").read_text().splitlines()
                 if line.strip() and not line.startswith("#")]
        rows = list(csv.DictReader(lines))
        incidence = np.array([[float(r["age_low"]), float(r["age_high"]), float(r["per_1000_py"])]
                              for r in rows])
        return cls(params=params, codes=codes, incidence=incidence)

    @cached_property
    def exposure_names(self) -> list[str]:
        return list(self.params["exposures"])

    def hazard_ratios(self) -> dict[str, float]:
        """Every injected hazard ratio by covariate name (the reference is everything off)."""
        hr = {name: spec["hazard_ratio"] for name, spec in self.params["exposures"].items()}
        hr["male"] = self.params["sex"]["male_hazard_ratio"]
        hr["less_education"] = self.params["hazard_ratios"]["less_education"]
        hr["family_history"] = self.params["hazard_ratios"]["family_history"]
        for genotype, value in self.params["hazard_ratios"]["apoe"].items():
            hr[f"apoe_{genotype.replace('/', '_')}"] = value
        return hr

    def rate_per_year(self, age: np.ndarray) -> np.ndarray:
        """Target recorded ADRD incidence (per person-year) at each age."""
        table = self.incidence
        band = np.clip(np.searchsorted(table[:, 0], age, side="right") - 1, 0, len(table) - 1)
        return table[band, 2] / 1000.0

    def cumulative_target(self, age0: np.ndarray, years: float, steps: int = 60) -> np.ndarray:
        """Target cumulative hazard over ``years`` from baseline age (ageing as time passes)."""
        grid = (np.arange(steps) + 0.5) * (years / steps)
        return self.rate_per_year(age0[:, None] + grid[None, :]).sum(axis=1) * (years / steps)


@dataclass
class Population:
    """Person-level arrays for one simulated chunk."""

    age0: np.ndarray
    male: np.ndarray
    education: np.ndarray  # index into ("degree", "other", "none")
    apoe: np.ndarray  # index into APOE_ORDER
    family_history: np.ndarray
    exposures: np.ndarray  # (n, n_exposures) bool
    metabolic: np.ndarray
    psychosocial: np.ndarray
    index_ordinal: np.ndarray
    log_rr: np.ndarray = field(default=None)  # type: ignore[assignment]
    adrd_years: np.ndarray = field(default=None)  # type: ignore[assignment]  (inf = none)
    death_years: np.ndarray = field(default=None)  # type: ignore[assignment]
    risk: np.ndarray = field(default=None)  # type: ignore[assignment]
    label: np.ndarray = field(default=None)  # type: ignore[assignment]

    def take(self, idx: np.ndarray) -> "Population":
        return Population(**{name: getattr(self, name)[idx] for name in self.__dataclass_fields__})

    @staticmethod
    def concat(parts: list["Population"]) -> "Population":
        return Population(**{
            name: np.concatenate([getattr(p, name) for p in parts])
            for name in Population.__dataclass_fields__
        })

    def __len__(self) -> int:
        return len(self.age0)


class CohortSimulator:
    """Simulate populations and build patient histories for one configuration."""

    def __init__(self, config: CohortConfig, model: CohortModel | None = None):
        self.config = config
        self.model = model or CohortModel.load()
        self._intercepts = self._solve_intercepts()
        self._band_norm = self._band_normalisation()

    # --- population --------------------------------------------------------------

    def _draw(self, rng: np.random.Generator, n: int, intercepts: np.ndarray | None = None,
              with_outcome: bool = True) -> Population:
        cfg, params = self.config, self.model.params
        age0 = cfg.age_min + (cfg.age_max - cfg.age_min) * rng.beta(1.5, 1.2, n)
        male = rng.random(n) >= params["sex"]["female_share"]
        edu_p = [params["education"][k] for k in ("degree", "other", "none")]
        education = rng.choice(3, size=n, p=np.array(edu_p) / sum(edu_p))
        apoe_p = np.array([params["apoe_genotype_frequencies"][g] for g in APOE_ORDER])
        apoe = rng.choice(len(APOE_ORDER), size=n, p=apoe_p / apoe_p.sum())
        family = rng.random(n) < params["family_history_share"]
        metabolic, psychosocial = rng.standard_normal(n), rng.standard_normal(n)
        specs = params["exposures"]
        weights = np.array([[s["age"], s["male"], s["metabolic"], s["psychosocial"]]
                            for s in specs.values()])
        covariates = np.column_stack([age0 - 55.0, male, metabolic, psychosocial])
        logits = covariates @ weights.T + (self._intercepts if intercepts is None else intercepts)
        exposures = rng.random((n, len(specs))) < 1.0 / (1.0 + np.exp(-logits))
        span = cfg.index_end.toordinal() - cfg.index_start.toordinal()
        index_ordinal = cfg.index_start.toordinal() + rng.integers(0, span + 1, n)
        pop = Population(age0, male, education, apoe, family, exposures, metabolic,
                         psychosocial, index_ordinal)
        if with_outcome:
            self._outcome(rng, pop)
        return pop

    def _solve_intercepts(self) -> np.ndarray:
        """Intercepts that give every exposure its target baseline prevalence."""
        rng = np.random.default_rng([self.config.seed, 1])
        ref = self._draw(rng, 200_000, intercepts=np.zeros(len(self.model.exposure_names)),
                         with_outcome=False)
        specs = self.model.params["exposures"]
        weights = np.array([[s["age"], s["male"], s["metabolic"], s["psychosocial"]]
                            for s in specs.values()])
        linear = np.column_stack([ref.age0 - 55.0, ref.male, ref.metabolic,
                                  ref.psychosocial]) @ weights.T
        intercepts = np.zeros(len(specs))
        for j, spec in enumerate(specs.values()):
            low, high = -15.0, 15.0
            for _ in range(60):  # bisection on the mean predicted prevalence
                mid = (low + high) / 2
                if np.mean(1 / (1 + np.exp(-(linear[:, j] + mid)))) < spec["prevalence"]:
                    low = mid
                else:
                    high = mid
            intercepts[j] = (low + high) / 2
        return intercepts

    def log_relative_risk(self, pop: Population) -> np.ndarray:
        hr = self.model.hazard_ratios()
        log_rr = pop.exposures @ np.log([hr[name] for name in self.model.exposure_names])
        log_rr = log_rr + pop.male * math.log(hr["male"])
        log_rr = log_rr + (pop.education == 2) * math.log(hr["less_education"])
        log_rr = log_rr + pop.family_history * math.log(hr["family_history"])
        apoe_log = np.array([0.0] + [math.log(hr[f"apoe_{g.replace('/', '_')}"])
                                     for g in APOE_ORDER[1:]])
        return log_rr + apoe_log[pop.apoe]

    def age_band(self, age0: np.ndarray) -> np.ndarray:
        return np.clip(((age0 - self.config.age_min) // 5).astype(int), 0, None)

    def _band_normalisation(self) -> np.ndarray:
        """Divide hazards by the band's mean relative risk, so each band hits its target."""
        rng = np.random.default_rng([self.config.seed, 2])
        ref = self._draw(rng, 200_000, with_outcome=False)
        rr, band = np.exp(self.log_relative_risk(ref)), self.age_band(ref.age0)
        n_bands = int(band.max()) + 1
        return np.array([rr[band == b].mean() if np.any(band == b) else 1.0
                         for b in range(n_bands)])

    @cached_property
    def _age_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Target cumulative hazard over the horizon, tabulated by baseline age (0.01 y)."""
        ages = np.arange(self.config.age_min - 1, self.config.age_max + 1, 0.01)
        return ages, self.model.cumulative_target(ages, self.config.horizon_years)

    def _outcome(self, rng: np.random.Generator, pop: Population) -> None:
        cfg, params = self.config, self.model.params
        horizon = cfg.horizon_years
        pop.log_rr = self.log_relative_risk(pop)
        band = np.minimum(self.age_band(pop.age0), len(self._band_norm) - 1)
        scale = np.exp(pop.log_rr) / self._band_norm[band]
        ages, target = self._age_grid
        total = np.interp(pop.age0, ages, target) * scale
        pop.risk = 1.0 - np.exp(-total)
        draw = rng.exponential(size=len(pop))
        has = draw <= total
        adrd = np.full(len(pop), np.inf)
        if has.any():  # time of onset only for the few with one: invert the cumulative hazard
            steps = 240
            grid = (np.arange(steps) + 0.5) * (horizon / steps)
            rates = self.model.rate_per_year(pop.age0[has, None] + grid[None, :]) * scale[has, None]
            cumulative = np.cumsum(rates, axis=1) * (horizon / steps)
            cumulative *= (total[has] / cumulative[:, -1])[:, None]  # agree with the table
            step = np.argmax(cumulative >= draw[has, None], axis=1)
            rows = np.arange(int(has.sum()))
            before = np.where(step > 0, cumulative[rows, np.maximum(step - 1, 0)], 0.0)
            width = cumulative[rows, step] - before
            frac = np.clip((draw[has] - before) / np.maximum(width, 1e-15), 0.0, 1.0)
            adrd[has] = (step + frac) * (horizon / steps)
        pop.adrd_years = adrd
        mort = params["mortality"]
        gamma = math.log(2) / mort["doubling_years"]
        base = mort["per_1000_py_at_60"] / 1000 * np.exp(gamma * (pop.age0 - 60))
        exposure_index = {name: j for j, name in enumerate(self.model.exposure_names)}
        death_hr = np.where(pop.exposures[:, exposure_index["current_smoking"]],
                            mort["smoking_hazard_ratio"], 1.0)
        death_hr = death_hr * np.where(pop.exposures[:, exposure_index["diabetes"]],
                                       mort["diabetes_hazard_ratio"], 1.0)
        e = rng.exponential(size=len(pop))
        pop.death_years = np.log1p(gamma * e / (base * death_hr)) / gamma
        pop.label = has & (pop.adrd_years <= pop.death_years)
        pop.adrd_years = np.where(pop.label, pop.adrd_years, np.inf)

    def population(self) -> tuple[Population, dict]:
        """Simulate and sample; return the selected people and the sampling record."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 3])
        if cfg.mode == "population":
            pop = self._draw(rng, cfg.n)
            sampling = {"mode": "population", "simulated": cfg.n,
                        "cases_in_population": int(pop.label.sum()),
                        "case_fraction": 1.0, "control_fraction": 1.0}
            return pop, sampling
        n_cases = max(1, round(cfg.n * cfg.case_share))
        n_controls = cfg.n - n_cases
        chunk = 1_000_000
        case_parts, simulated, total_cases, total_controls = [], 0, 0, 0
        control_pool: Population | None = None
        while total_cases < n_cases:
            part = self._draw(rng, chunk)
            simulated += chunk
            total_cases += int(part.label.sum())
            total_controls += int((~part.label).sum())
            case_parts.append(part.take(np.flatnonzero(part.label)))
            if control_pool is None:
                control_pool = part.take(np.flatnonzero(~part.label))
            if simulated > 200 * chunk:
                raise ValueError("case-enriched sampling found too few cases; widen the ages")
        cases = Population.concat(case_parts).take(np.arange(n_cases))
        assert control_pool is not None
        if n_controls > len(control_pool):
            raise ValueError(f"n is too large for one control pool of {len(control_pool)}")
        controls = control_pool.take(np.sort(rng.choice(len(control_pool), n_controls,
                                                        replace=False)))
        sampling = {
            "mode": "case-enriched", "case_ratio": cfg.case_ratio, "simulated": simulated,
            "cases_in_population": total_cases, "controls_in_population": total_controls,
            "case_fraction": n_cases / total_cases, "control_fraction": n_controls / total_controls,
            "population_prevalence": total_cases / simulated,
        }
        order = np.random.default_rng([cfg.seed, 4]).permutation(cfg.n)
        return Population.concat([cases, controls]).take(order), sampling

    # --- histories -----------------------------------------------------------------

    def records(self) -> tuple[list[dict], dict]:
        """Every patient record of the cohort (JSON-ready dicts in the PatientRecord format)."""
        plan = self.plan()
        return [plan.build(i) for i in range(plan.n)], plan.sampling

    def plan(self) -> "CohortPlan":
        """Simulate and sample now; build histories later, in batches, possibly in parallel."""
        pop, sampling = self.population()
        splits = stratified_split(pop.label, self.config.split_fractions, self.config.seed)
        weights = {True: 1 / sampling["case_fraction"], False: 1 / sampling["control_fraction"]}
        return CohortPlan(HistoryBuilder(self.config, self.model), pop, splits, weights, sampling)


@dataclass
class CohortPlan:
    """A simulated, sampled and split population whose histories are built on demand."""

    builder: "HistoryBuilder"
    pop: Population
    splits: list[str]
    weights: dict[bool, float]
    sampling: dict

    @property
    def n(self) -> int:
        return len(self.pop)

    def build(self, i: int) -> dict:
        weight = self.weights[bool(self.pop.label[i])]
        return self.builder.build(i, self.pop, self.splits[i], weight)

    def row_batches(self, render: Callable[[dict], str], workers: int = 1, size: int = 5_000):
        """A ``batches`` callback for ``annotation_db.cohorts.store_cohort``.

        With ``workers > 1`` the histories are built, rendered and serialised in forked
        worker processes while the caller writes earlier batches to the database.
        """
        ranges = [(lo, min(lo + size, self.n)) for lo in range(0, self.n, size)]

        def batches(cohort_id: int, first_patient_id: int):
            jobs = [(lo, hi, cohort_id, first_patient_id + lo) for lo, hi in ranges]
            if workers <= 1 or len(ranges) < 2:
                for job in jobs:
                    yield _rows_for(self, render, job)
                return
            global _FORK_STATE
            _FORK_STATE = (self, render)  # inherited by the forked workers, never pickled
            try:
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    yield from pool.imap(_rows_in_worker, jobs)
            finally:
                _FORK_STATE = None

        return batches


_FORK_STATE: tuple["CohortPlan", Callable[[dict], str]] | None = None


def _rows_for(plan: CohortPlan, render: Callable[[dict], str], job: tuple) -> tuple:
    from annotation_db.cohorts import prepare_rows

    lo, hi, cohort_id, first_id = job
    records = [plan.build(i) for i in range(lo, hi)]
    return prepare_rows(records, cohort_id=cohort_id, first_patient_id=first_id, render=render)


def _rows_in_worker(job: tuple) -> tuple:
    assert _FORK_STATE is not None
    return _rows_for(*_FORK_STATE, job)


def stratified_split(label: np.ndarray, fractions: tuple[float, float, float],
                     seed: int) -> list[str]:
    """Deterministic patient-level split, stratified by label."""
    rng = np.random.default_rng([seed, 5])
    names = np.array(["train", "validation", "test"])
    out = np.empty(len(label), dtype=object)
    for value in (True, False):
        members = np.flatnonzero(label == value)
        rng.shuffle(members)
        cuts = np.round(np.cumsum(fractions)[:2] * len(members)).astype(int)
        for part, chunk in enumerate(np.split(members, cuts)):
            out[chunk] = names[part]
    return [str(name) for name in out]


@dataclass
class _History:
    """One patient's history while it is built: the RNG, the key dates, the items so far.

    :meth:`HistoryBuilder.build` is written as sections (background, diagnoses,
    lifestyle, measurements, symptoms) that draw from one per-patient ``rng`` in a fixed
    order — the cohort's content hash depends on that order — so they share this state
    instead of handing a dozen values to each other."""

    rng: random.Random
    index: dt.date
    birth: dt.date
    age0: float
    male: bool
    has: dict[str, bool]
    dx_date: dt.date | None  # the future ADRD diagnosis, if within the simulation
    first: dt.date  # where the history starts
    feature_end: dt.date  # nothing after it is written (the prediction gap)
    items: list[dict] = field(default_factory=list)
    dx_dates: dict[str, dt.date] = field(default_factory=dict)
    treated: dict[str, dt.date] = field(default_factory=dict)

    def add(self, kind, date, description, code=None, system=None, value=None, unit=None,
            role="context") -> None:
        """Record an item, unless it is dated after the end of the features."""
        if date is None or date <= self.feature_end:
            self.items.append({"id": None, "kind": kind,
                               "date": None if date is None else date.isoformat(),
                               "code": code, "code_system": system,
                               "description": description, "value": value, "unit": unit,
                               "role": role})

    def days_before(self, years: float) -> dt.date:
        return self.index - dt.timedelta(days=int(years * DAYS_PER_YEAR))


class HistoryBuilder:
    """Turn one simulated person into a dated, coded history (pure Python, per-patient RNG)."""

    def __init__(self, config: CohortConfig, model: CohortModel):
        self.config = config
        self.codes = model.codes
        self.params = model.params
        self.exposures = model.exposure_names
        self.measure = model.codes["measurements"]

    def build(self, i: int, pop: Population, split: str, weight: float) -> dict:
        h = self._start(i, pop)
        self._background(h, i, pop)
        self._diagnoses(h)
        self._lifestyle(h)
        self._measurements(h, float(pop.metabolic[i]))
        self._symptoms(h)
        assign_evidence_ids(h.items)
        return self._record(h, i, pop, split, weight)

    def _start(self, i: int, pop: Population) -> _History:
        """The patient's seeded RNG, dates and exposures, before any item."""
        cfg = self.config
        index = dt.date.fromordinal(int(pop.index_ordinal[i]))
        age0 = float(pop.age0[i])
        adrd_years = float(pop.adrd_years[i])
        # A diagnosis is at least one day after the index date (the label window is open there).
        dx_date = (index + dt.timedelta(days=max(1, int(adrd_years * DAYS_PER_YEAR)))
                   if math.isfinite(adrd_years) else None)
        return _History(
            rng=random.Random(cfg.seed * 1_000_003 + i), index=index,
            birth=index - dt.timedelta(days=int(age0 * DAYS_PER_YEAR)), age0=age0,
            male=bool(pop.male[i]),
            has=dict(zip(self.exposures, map(bool, pop.exposures[i]), strict=True)),
            dx_date=dx_date,
            first=index - dt.timedelta(days=int(cfg.history_years * DAYS_PER_YEAR)),
            feature_end=index - dt.timedelta(days=cfg.prediction_gap_days))

    def _background(self, h: _History, i: int, pop: Population) -> None:
        """Age and sex, APOE genotype, family history and education."""
        index, birth, add = h.index, h.birth, h.add
        age_int = index.year - birth.year - ((index.month, index.day) < (birth.month, birth.day))
        add("demographic", index, f"{'Male' if h.male else 'Female'}, aged {age_int} at the "
            "index date", value=str(age_int), unit="years")
        genotype = APOE_ORDER[int(pop.apoe[i])]
        add("genotype", None, f"APOE genotype {genotype.replace('e', 'ε')}", code="APOE",
            system="genotype", value=genotype,
            role="risk_factor" if "e4" in genotype else "context")
        if pop.family_history[i]:
            add("family_history", index, "Parent or sibling with Alzheimer's disease/dementia",
                role="risk_factor")
        else:
            add("family_history", index, "No Alzheimer's disease/dementia reported in parents "
                "or siblings")
        education = ("degree", "other", "none")[int(pop.education[i])]
        add("demographic", index, f"Highest qualification: {EDUCATION_TEXT[education]}",
            value=education, role="risk_factor" if education == "none" else "context")

    def _diagnoses(self, h: _History) -> None:
        """The exposures' diagnoses (coded for a share of them), then their treatments."""
        rng = h.rng
        for name in self.exposures:
            # Obesity is coded from the first obese BMI measurement (_measurements).
            if not h.has[name] or name not in self.codes["diagnoses"] or name == "obesity":
                continue
            when = h.first + dt.timedelta(days=rng.randint(0, max(1, (h.index - h.first).days
                                                                  - 30)))
            h.dx_dates[name] = when
            if rng.random() > self.codes.get("coded_share", {}).get(name, 1.0):
                continue
            option = _weighted(rng, self.codes["diagnoses"][name])
            h.add("diagnosis", when, option["description"], code=option["code"],
                  system="ICD-10", role="risk_factor")
        for name, when in h.dx_dates.items():
            self._treat(h, name, when)

    def _treat(self, h: _History, name: str, when: dt.date) -> None:
        """Medications for a condition diagnosed ``when``, each started by chance."""
        for drug in self.codes["medications"].get(name, []):
            if h.rng.random() < drug["probability"]:
                start = when + dt.timedelta(days=h.rng.randint(7, 365))
                if start <= h.index:
                    h.treated.setdefault(name, start)
                    h.add("medication", start, f"{drug['name']} {drug['dose']}",
                          code=drug["code"], system="ATC")

    def _lifestyle(self, h: _History) -> None:
        """Smoking, alcohol, physical activity and household at the baseline assessment."""
        rng, has, index, add = h.rng, h.has, h.index, h.add
        smoking = ("current" if has["current_smoking"] else "previous"
                   if rng.random() < self.params["previous_smoking_share"]
                   / (1 - self.params["exposures"]["current_smoking"]["prevalence"]) else "never")
        add("lifestyle", index, f"Smoking status: {smoking} smoker" if smoking != "never"
            else "Smoking status: never smoked", value=smoking,
            role="risk_factor" if smoking == "current" else "context")
        units = (22 + rng.expovariate(1 / 12) if has["alcohol_excess"]
                 else 0.0 if rng.random() < 0.1 else min(21.0, rng.lognormvariate(1.8, 0.8)))
        add("lifestyle", index, f"Alcohol: {units:.0f} units per week", value=f"{units:.0f}",
            unit="units/week", role="risk_factor" if has["alcohol_excess"] else "context")
        activity = ("low" if has["physical_inactivity"]
                    else "moderate" if rng.random() < 0.45 else "high")
        add("lifestyle", index, f"Physical activity (IPAQ group): {activity}", value=activity,
            role="risk_factor" if activity == "low" else "context")
        if has["social_isolation"]:
            add("lifestyle", index, "Lives alone", value="1", unit="people in household",
                role="risk_factor")
        else:
            size = rng.choice((2, 2, 2, 3, 4))
            add("lifestyle", index, f"Lives with others ({size} people in household)",
                value=str(size), unit="people in household")

    def _measurements(self, h: _History, z_m: float) -> None:
        """Four visits: a BMI trajectory (declining before ADRD), BP, HbA1c and LDL."""
        rng, has = h.rng, h.has
        bmi_mid = (30.0 + rng.expovariate(1 / 3.5) if has["obesity"]
                   else min(29.9, rng.gauss(25.3 + 0.6 * z_m, 2.7)))
        obesity_coded = False
        for years_before, labs in ((10, False), (6, False), (3, True), (0, True)):
            when = h.index if years_before == 0 else h.days_before(
                years_before + rng.uniform(-0.5, 0.5))
            age_then = h.age0 - (h.index - when).days / DAYS_PER_YEAR
            obesity_coded = self._bmi(h, when, bmi_mid, obesity_coded)
            self._blood_pressure(h, when, age_then, z_m)
            if labs:
                self._labs(h, when, age_then, z_m)
        if has["obesity"] and not obesity_coded:
            when = h.days_before(rng.uniform(3, 10))
            h.add("diagnosis", when, "Obesity, unspecified", code="E66.9", system="ICD-10",
                  role="risk_factor")
            self._treat(h, "obesity", when)

    def _bmi(self, h: _History, when: dt.date, bmi_mid: float, obesity_coded: bool) -> bool:
        """One visit's BMI; codes obesity at the first obese one. Whether it is coded now."""
        bmi = bmi_mid - 0.08 * (h.index - when).days / DAYS_PER_YEAR + h.rng.gauss(0, 0.6)
        if h.dx_date is not None:
            years_to_dx = (h.dx_date - when).days / DAYS_PER_YEAR
            if years_to_dx < 5:
                bmi -= self.params["prodrome"]["bmi_decline_per_year"] * (5 - years_to_dx)
        self._measure(h.add, "bmi", when, bmi)
        if h.has["obesity"] and not obesity_coded and bmi >= 30:
            h.add("diagnosis", when, "Obesity, unspecified", code="E66.9", system="ICD-10",
                  role="risk_factor")
            self._treat(h, "obesity", when)
            return True
        return obesity_coded

    def _blood_pressure(self, h: _History, when: dt.date, age_then: float, z_m: float) -> None:
        """One visit's systolic and diastolic pressure (raised, then lowered by treatment)."""
        rng = h.rng
        sbp = 123 + 0.6 * (age_then - 40) + 5 * h.male + 5 * z_m + rng.gauss(0, 16)
        if h.has["hypertension"]:
            sbp += 18 if when >= h.dx_dates["hypertension"] else 10
            if "hypertension" in h.treated and when >= h.treated["hypertension"]:
                sbp -= 14
        self._measure(h.add, "sbp", when, sbp)
        self._measure(h.add, "dbp", when, 46 + 0.25 * sbp + 2 * h.male + rng.gauss(0, 8.5))

    def _labs(self, h: _History, when: dt.date, age_then: float, z_m: float) -> None:
        """One visit's HbA1c and LDL cholesterol (diabetes, lipids and their treatment)."""
        rng, has, treated = h.rng, h.has, h.treated
        if has["diabetes"] and when >= h.dx_dates["diabetes"]:
            hba1c = 58 + rng.gauss(0, 9) - (8 if "diabetes" in treated
                                            and when >= treated["diabetes"] else 0)
        elif has["diabetes"]:
            hba1c = 44 + rng.gauss(0, 3)
        else:
            hba1c = max(25.0, 34 + 0.1 * (age_then - 55) + 1.5 * z_m + rng.gauss(0, 3.5))
        self._measure(h.add, "hba1c", when, hba1c)
        ldl = 3.5 + 0.25 * z_m + (0.6 if has["hyperlipidaemia"] else 0) + rng.gauss(0, 0.7)
        if "hyperlipidaemia" in treated and when >= treated["hyperlipidaemia"]:
            ldl -= 1.4
        self._measure(h.add, "ldl", when, max(1.0, ldl))

    def _symptoms(self, h: _History) -> None:
        """Prodromal symptoms before a future diagnosis, and background ones in everyone."""
        rng = h.rng
        age_factor = math.exp(0.07 * (h.age0 - 60))
        for name, spec in self.params["prodrome"].items():
            if not isinstance(spec, dict):
                continue
            dates = []
            if h.dx_date is not None and rng.random() < spec["case_probability"]:
                low, high = spec["window"]
                dates.append(h.dx_date - dt.timedelta(days=int(rng.uniform(low, high)
                                                               * DAYS_PER_YEAR)))
            if rng.random() < 1 - math.exp(-spec["background_per_year"] * 10 * age_factor):
                dates.append(h.days_before(rng.uniform(0, 10)))
            if dates:  # the earliest occurrence is the one a record would carry
                when = min(dates)
                h.add("symptom", when, spec["description"], code=spec["code"],
                      system="ICD-10", role="possible_prodrome")
                if name == "sleep_problems":
                    self._sleep_medication(h, when)

    def _sleep_medication(self, h: _History, when: dt.date) -> None:
        for drug in self.codes["medications"]["sleep_problems"]:
            start = when + dt.timedelta(days=h.rng.randint(0, 60))
            if h.rng.random() < drug["probability"] and start <= h.index:
                h.add("medication", start, f"{drug['name']} {drug['dose']}",
                      code=drug["code"], system="ATC")

    def _record(self, h: _History, i: int, pop: Population, split: str, weight: float) -> dict:
        """The PatientRecord-format dict: the items, the label and the outcome."""
        death_years = float(pop.death_years[i])
        index, dx_date = h.index, h.dx_date
        return {
            "external_id": f"P{i + 1:07d}",
            "sex": "M" if h.male else "F",
            "birth_date": h.birth.isoformat(),
            "index_date": index.isoformat(),
            "label": bool(pop.label[i]),
            "split": split,
            "weight": weight,
            "items": h.items,
            "outcome": {
                "adrd_date": dx_date.isoformat() if dx_date else None,
                "adrd_code": _subtype(h.rng, self.params["subtypes"]) if dx_date else None,
                "death_date": (
                    (index + dt.timedelta(days=int(death_years * DAYS_PER_YEAR))).isoformat()
                    if death_years <= self.config.horizon_years else None),
                "expected_risk": round(float(pop.risk[i]), 6),
            },
        }

    def _measure(self, add, key: str, when: dt.date, value: float) -> None:
        spec = self.measure[key]
        text = f"{value:.{spec['decimals']}f}"
        add("measurement", when, f"{spec['name']} {text} {spec['unit']}", code=spec["loinc"],
            system="LOINC", value=text, unit=spec["unit"])


def _weighted(rng: random.Random, options: list[dict]) -> dict:
    if len(options) == 1:
        return options[0]
    return rng.choices(options, weights=[o.get("weight", 1.0) for o in options])[0]


def _subtype(rng: random.Random, subtypes: list[dict]) -> str:
    return rng.choices([s["code"] for s in subtypes], weights=[s["share"] for s in subtypes])[0]


def generate(config: CohortConfig) -> tuple[list[dict], dict]:
    """Records and the sampling record of a cohort."""
    return CohortSimulator(config).records()
