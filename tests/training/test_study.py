"""The study's data stages: template teacher, simulated audit, export; idempotent."""

import json
import re

import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db.export import ExportError
from annotation_db.models import Campaign, DatasetVersion, Rationale
from generation.cohort import generate
from generation.cohort_config import CohortConfig
from generation.teacher import write
from training.data import read_view
from training.reproduce_config import ReproduceConfig
from training.study import prepare_dataset
from training.study_config import AuditSettings, DataSettings


def test_the_template_teacher_follows_the_label_and_cites_only_the_record():
    records, _ = generate(CohortConfig(n=40, seed=5))
    for record in records:
        ids = {item["id"] for item in record["items"]}
        for fmt in ("free", "stepwise"):
            out = write(record, fmt)
            assert out["prediction"] == ("yes" if record["label"] else "no")
            assert out["evidence"] and set(out["evidence"]) <= ids
            text = out["rationale"] if fmt == "free" else " ".join(
                s["step"] for s in out["rationale"])
            assert ("likely" in text) and (("unlikely" in text) != bool(record["label"]))


def test_prepare_dataset_builds_a_grounded_audited_version_once(engine, tmp_path):
    data = DataSettings(cohort="c", n=60, history_budget=160, dataset="v",
                        audit=AuditSettings(campaign="audit"))
    stages = []
    version, info = prepare_dataset(engine, data, exports_dir=tmp_path, on_stage=stages.append)
    assert info["audit"]["simulated"] is True and info["teacher"] == ["template-teacher-v1"]
    assert any("SIMULATED raters" in s for s in stages)
    assert version.manifest["policy"]["include_simulated"] is True
    assert version.manifest["policy"]["history_budget"] == 160
    counts = version.manifest["counts"]
    assert counts["rationale_free"]["train"] > 0 and counts["rationale_stepwise"]["train"] > 0
    assert counts["label_only"]["test"] == 12  # every test patient of 60
    with Session(engine) as session:
        originals = session.execute(select(Rationale).where(
            Rationale.variant == "original")).scalars().all()
        assert originals and all(r.status == "ok" and r.grounding_score == 1.0
                                 for r in originals)
        assert session.execute(select(Campaign)).scalars().one().name == "audit"
    # At this small budget the prompts leave old items out; the teacher cites only shown ones.
    for view in ("rationale_free", "rationale_stepwise"):
        rows = read_view(version, view, "train")
        shown = [set(re.findall(r"^(E\d+) ", r["prompt"][-1]["content"], re.M)) for r in rows]
        cited = [set(re.findall(r"\[(E\d+)\]", r["completion"][0]["content"])) for r in rows]
        assert any("older items omitted" in r["prompt"][-1]["content"] for r in rows)
        assert all(c and c <= s for c, s in zip(cited, shown, strict=True))
    again, info = prepare_dataset(engine, data, exports_dir=tmp_path)
    assert again.id == version.id and info["reused"] is True
    # a reused version is described from its own files, not from defaults
    assert info["teacher"] == ["template-teacher-v1"] and info["audit"]["simulated"] is True
    assert info["audit"]["campaigns"] == ["audit"] and info["audit"]["ratings"] > 0
    with Session(engine) as session:
        assert len(session.execute(select(DatasetVersion)).scalars().all()) == 1


def test_simulated_ratings_are_never_used_silently(engine, tmp_path):
    data = DataSettings(cohort="c", n=40, dataset="v", audit=AuditSettings(campaign="a"),
                        policy={"min_ratings": 2, "include_simulated": False})
    with pytest.raises(ExportError, match="only simulated ratings"):
        prepare_dataset(engine, data, exports_dir=tmp_path)


def test_reproduce_scales_override_the_shared_settings(tmp_path):
    from annotation_db.command_config import ConfigError

    cfg = ReproduceConfig.load("experiments/reproduce.yaml")
    data, grid = cfg.resolve("smoke")
    assert grid.dataset == data.dataset == "study-smoke-v1"
    assert len(grid.sft.targets) == 3 and len(grid.sft.train_sizes) >= 2
    assert len(grid.sft.seeds) == 2 and grid.fewshot.ks == [0, 4]
    assert grid.fewshot.with_rationales == [True, False]
    cpu_data, cpu = cfg.resolve("cpu")
    assert cpu_data.n >= 1000 and cpu_data.n * 0.2 >= 200 and cpu.sft.train_sizes[0] >= 400
    assert len(cpu.sft.seeds) >= 2 and len(cpu.sft.learning_rates) * len(cpu.sft.epochs) >= 2
    assert cpu.sft.tune_with_first_seed and cpu.sft.pair_targets
    full_data, full = cfg.resolve("gpu")
    assert max(full.sft.train_sizes) >= 2000 and full_data.n * 0.7 >= 2000
    assert cfg.throughput("gpu").source.startswith("stated, not measured")
    with pytest.raises(ConfigError, match="unknown scale 'huge'"):
        cfg.resolve("huge")


def test_a_scale_based_on_another_changes_only_what_it_states():
    from annotation_db.command_config import ConfigError

    cfg = ReproduceConfig.load("experiments/reproduce.yaml")
    cpu_data, cpu = cfg.resolve("cpu")
    data, grid = cfg.resolve("cpu-balanced")
    assert data.teacher == "template-balanced" and cpu_data.teacher == "template"
    assert (data.n, data.seed, data.history_budget) == (cpu_data.n, cpu_data.seed,
                                                        cpu_data.history_budget)
    assert data.dataset != cpu_data.dataset and data.cohort != cpu_data.cohort
    assert grid.archive != cpu.archive and grid.name == "reproduce-cpu-balanced"
    assert grid.sft.model_dump() == cpu.sft.model_dump()
    assert grid.fewshot.model_dump() == cpu.fewshot.model_dump()
    assert cfg.throughput("cpu-balanced") == cfg.throughput("cpu")
    looped = ReproduceConfig.model_validate({**cfg.model_dump(), "scales": {
        "a": {"based_on": "b"}, "b": {"based_on": "a"}}})
    with pytest.raises(ConfigError, match="scales based on each other: a → b → a"):
        looped.resolve("a")
    dangling = ReproduceConfig.model_validate({**cfg.model_dump(), "scales": {
        "a": {"based_on": "nope"}}})
    with pytest.raises(ConfigError, match="'a' is based on 'nope'"):
        dangling.resolve("a")
    listed = ReproduceConfig.model_validate({**cfg.model_dump(), "scales": {
        "a": {"based_on": ["cpu"]}}})
    with pytest.raises(ConfigError, match="based_on names one scale"):
        listed.resolve("a")


def test_the_report_says_what_kind_of_ratings_the_version_holds():
    from types import SimpleNamespace

    from training.reproduce import _study_markdown

    version = SimpleNamespace(name="v", content_hash="ab" * 32, manifest={
        "counts": {}, "agreement": {"real": {"accuracy": {
            "alpha": 0.1, "ci95": [0.0, 0.2], "computable": True}}}})
    summary = {"scale": "smoke", "wall_seconds": 1, "data_seconds": 1, "command": "c",
               "data": {"teacher": ["t"], "audit": {
                   "campaigns": ["real"], "ratings": 40, "simulated": False,
                   "simulated_share": 0.0, "same_score_share": {"accuracy": 0.9}}}}
    text = _study_markdown(summary, "# r\n", version, DataSettings())
    assert "clinicians' ratings (no simulated ones)" in text and "simulated raters" not in text
    assert "90% of accuracy ratings share one score" in text
    summary["data"]["audit"].update(simulated_share=0.25, same_score_share={"accuracy": 0.5})
    text = _study_markdown(summary, "# r\n", version, DataSettings())
    assert "mixed with **simulated ratings (25%)**" in text and "share one score" not in text


def test_few_shot_draws_demonstrations_per_seed_and_nearest_draws_none():
    from training.grid.config import ExperimentGrid

    grid = ExperimentGrid(dataset="v", fewshot={"ks": [0, 4], "with_rationales": [True],
                                                "seeds": [0, 1, 2],
                                                "selections": ["random", "nearest"]})
    runs = [(c.k, c.with_rationales, c.seed, c.selection) for c in grid.fewshot_runs()]
    assert runs == [(0, False, 0, "random"), (4, True, 0, "random"), (4, True, 0, "nearest"),
                    (4, True, 1, "random"), (4, True, 2, "random")]


def test_a_grid_survives_the_round_trip_through_a_jobs_stored_config():
    """The Runs screen stores a grid as JSON and the job runner rebuilds it: the same
    runs, few-shot included (its seed is its own, not the evaluation's)."""
    from training.grid.config import ExperimentGrid

    grid = ExperimentGrid(dataset="v", evaluation={"limit": 8, "engine": "vllm", "seed": 3},
                          fewshot={"ks": [0, 4], "seeds": [1]})
    again = ExperimentGrid.model_validate(grid.model_dump(mode="json"))
    assert again.fewshot_runs() == grid.fewshot_runs()
    # k = 0 is one run (no demonstrations to draw or show); k = 4 with and without
    assert [(c.k, c.with_rationales, c.seed) for c in grid.fewshot_runs()] == [
        (0, False, 1), (4, True, 1), (4, False, 1)]
    assert {c.limit for c in grid.fewshot_runs()} == {8}
    assert again.evaluate_config("test") == grid.evaluate_config("test")


def _auroc(value, low=None, high=None):
    return {"value": value, "low": value - 0.05 if low is None else low,
            "high": value + 0.05 if high is None else high}


def _head(target, scoring, primary, value, low, high, left_out=None):
    return {"train_size": 400, "comparison": f"label vs {target}", "target": target,
            "scoring": scoring, "primary": primary, "value": value, "low": low, "high": high,
            "p": 0.01, "rationale_seeds": [0, 1, 2], "interval": "seeds, then patients",
            "left_out": left_out}


def test_the_conclusions_lead_with_the_seed_level_primary_comparison():
    """The conclusions quote the seeds-then-patients headline in each target's primary
    scoring (greedy beside it), say plainly whether any rationale target is not shown
    worse than label-only, set label-only against age alone and the ceiling, and count
    the runs left out by kind."""
    from training.reproduce import conclusions

    def run(target, scoring, value, seed, valid=True, extra=False, **more):
        return {"kind": "sft", "target": target, "train_size": 400, "scoring": scoring,
                "seed": seed, "valid": valid, "extra_scoring": extra, "auroc": _auroc(value),
                **more}

    label = [run("label", "direct", v, s) for s, v in enumerate((0.73, 0.72, 0.71))]
    free = [run("rationale-free", "generate", v, s) for s, v in enumerate((0.55, 0.57, 0.50))]
    free_sampled = [run("rationale-free", "sampled", v, s, extra=True, **(
        {"auroc": _auroc(v, low=0.48)} if v < 0.6 else {}))
        for s, v in enumerate((0.64, 0.62, 0.58))]
    align = [run("rationale-align", "sampled", v, s, extra=True)
             for s, v in enumerate((0.70, 0.71, 0.69))]
    degenerate = run("rationale-stepwise", "generate", 0.6, 0, valid=False,
                     invalid_code="degenerate")
    results = {
        "rows": [*label, *free, degenerate],
        "all_rows": [*label, *free, *free_sampled, *align, degenerate],
        "references": [{"model": model, "train_size": 400, "seed": seed,
                        "auroc": _auroc(value)}
                       for model, value in (("age", 0.78), ("tfidf", 0.73),
                                            ("structured", 0.82)) for seed in (0, 1, 2)]
        # a seed no SFT run of these settings has: not in their comparison
        + [{"model": "age", "train_size": 400, "seed": 5, "auroc": _auroc(0.1)}],
        "seeds": {"headline": [
            _head("rationale-free", "sampled", True, 0.06, 0.004, 0.12),
            _head("rationale-free", "generate", False, 0.11, 0.02, 0.20),
            _head("rationale-align", "sampled", True, 0.02, -0.05, 0.09),
            _head("multitask", "direct", True, 0.01, -0.04, 0.06),  # an ablation
            _head("rationale-stepwise", "generate", True, None, None, None,
                  left_out="says yes for 100% of test patients (above 95%)")]},
        "joint": [{"comparison": "label vs rationale-free", "pairs": 3, "difference": 0.11,
                   "low": 0.05, "high": 0.17, "p_value": 0.001}]}
    text = conclusions(results)
    assert ("label vs rationale-free (400 patients, scored sampled, primary): label − "
            "rationale-free +0.060 [+0.004, +0.120]") in text
    assert "label-only higher. Scored generate: +0.110 [+0.020, +0.200]." in text
    named = text.split("Not shown worse:")[1].split("(")[0]
    assert named.strip() == "rationale-align"  # not rationale-free; no ablation either
    assert "label vs rationale-stepwise (400 patients, generate): not compared" in text
    # learned: counted per setting the headline reads, each in its primary scoring
    # (multitask is primary in the headline but has no runs here: not counted)
    assert ("Runs whose test AUROC CI lies above 0.5 (it learned something): label 3 of 3; "
            "rationale-free (sampled) 2 of 3; rationale-align (sampled) 3 of 3.") in text
    assert "has not shown it learned" in text and ": rationale-free (sampled)." in text
    # every reference against label-only and each primary target, on the same patients
    assert ("Against age alone (the floor any model of the record must beat), mean test "
            "AUROC over the same seeds' training patients: label 0.720 against 0.780 "
            "(-0.060); rationale-free (sampled) 0.613 against 0.780 (-0.167)") in text
    assert "Against TF-IDF on the history text" in text and "label 0.720 against 0.730" in text
    assert "Against the structured-feature ceiling" in text
    assert "each primary interval rests on 3 seed(s)" in text
    assert "3 primary comparison(s) are read, none adjusted for multiplicity" in text
    assert "Secondary, each cell's own scoring" in text
    assert "1 run(s) scored generate, degenerate" in text
    # a target whose primary scoring has no valid seed still shows its valid greedy one
    greedy_only = {**results, "seeds": {"headline": [
        _head("rationale-free", "sampled", True, None, None, None,
              left_out="every seed says yes for more than 95% of test patients"),
        _head("rationale-free", "generate", False, 0.11, 0.02, 0.20)]}}
    assert ("label vs rationale-free (400 patients, sampled): not compared; every seed was "
            "left out (every seed says yes for more than 95% of test patients). Scored "
            "generate (secondary): label − rationale-free +0.110 [+0.020, +0.200], 3 seed(s)."
            ) in conclusions(greedy_only)
    every_worse = {**results, "seeds": {"headline": results["seeds"]["headline"][:2]}}
    assert "No: label-only is higher than every rationale target compared" in conclusions(
        every_worse)


def test_a_reproduction_with_a_failed_cell_writes_its_report_then_fails(monkeypatch,
                                                                        tmp_path):
    """A failed cell must not cost the study's report: report.md and reproduce.json are
    written from the cells that finished, then the command fails with the cells' error."""
    from types import SimpleNamespace

    from training import reproduce
    from training.runs import RunError

    cfg = ReproduceConfig.load("experiments/reproduce.yaml").model_copy(
        update={"output_dir": str(tmp_path)})
    version = SimpleNamespace(name="v1", content_hash="h" * 64,
                              manifest={"counts": {"train": 4}, "agreement": {},
                                        "files": {"label_only/train.jsonl": "a" * 64}})
    monkeypatch.setattr(reproduce, "prepare_dataset",
                        lambda *a, **k: (version, {"audit": {}, "teacher": ["template"]}))

    def grid_with_a_failed_cell(engine, grid, *, out_dir, raise_failed, **_):
        assert raise_failed is False
        (out_dir / "results.md").write_text("# Results\n\n## Failed cells\n\n- label seed 1\n")
        return {"rows": [], "comparisons": [], "joint": [], "references": [], "seeds": {},
                "failure": RunError("1 of the grid's cells failed: label seed 1: boom")}

    monkeypatch.setattr(reproduce, "run_experiment", grid_with_a_failed_cell)
    with pytest.raises(RunError, match="label seed 1: boom"):
        reproduce.reproduce(None, cfg, "smoke", config_path=None)
    report = (tmp_path / "reproduce-smoke" / "report.md").read_text()
    assert "## Failed cells" in report and "What this design can and cannot conclude" in report
    written = json.loads((tmp_path / "reproduce-smoke" / "reproduce.json").read_text())
    assert set(written["dataset"]["views"]) == {"label_only"}  # for `experiment compare`


def test_the_label_blind_teacher_is_one_setting_away(monkeypatch):
    """A reproduction can have its teacher write without the outcome (the label-blind
    path, for a model teacher on a GPU); the study's default tells it the outcome."""
    from types import SimpleNamespace

    import generation.rationales
    from training import study
    from training.study_config import DataSettings

    asked = []
    monkeypatch.setattr(generation.rationales, "generate_rationales", lambda engine, cfg: (
        asked.append(cfg.mode) or SimpleNamespace(run_id=len(asked), generated=0, skipped=0,
                                                  failed=0)))
    study._rationales(None, DataSettings(formats=["free"]), None, lambda _: None)
    study._rationales(None, DataSettings(formats=["free"], teacher="hf:org/teacher",
                                         teacher_mode="label-blind"), None, lambda _: None)
    assert asked == ["label-conditioned"] * 2 + ["label-blind"] * 2  # train and validation
