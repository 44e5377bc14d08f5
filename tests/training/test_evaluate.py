"""From an audited export to AUROC: scoring, few-shot, grid, report, DeLong, CLI."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from annotation_db.export import get_version
from annotation_db.models import EvaluationResult, TrainingRun
from annotation_db.student_task import ANSWER_PREFIX, user_message
from app.cli import app
from tests.helpers import audited_version
from training.data import prompt_text, read_view
from training.fewshot import choose_demonstrations, conversation
from training.fewshot_config import FewShotConfig
from training.scoring import TransformersScorer, label_token_ids, two_way
from training.sft import load_tokenizer


def test_label_tokens_are_single_tokens_after_the_answer_line(bundled_model):
    tokenizer = load_tokenizer(bundled_model.path)
    yes, no = label_token_ids(tokenizer)
    assert tokenizer.decode([yes]) == " yes" and tokenizer.decode([no]) == " no"


def test_two_way_probability_is_invariant_to_the_rest_of_the_vocabulary():
    p, mass = two_way(math.log(0.3), math.log(0.1))
    assert p == pytest.approx(0.75) and mass == pytest.approx(0.4)
    p2, mass2 = two_way(math.log(0.03), math.log(0.01))  # same ratio, little label mass
    assert p2 == pytest.approx(0.75) and mass2 == pytest.approx(0.04)
    assert two_way(-math.inf, -math.inf) == (0.5, 0.0)


def _pool(n_yes, n_no):
    return ([{"id": f"y{i}", "label": 1, "history": f"memory complaint APOE e4 {i}",
              "rationale": "r"} for i in range(n_yes)]
            + [{"id": f"n{i}", "label": 0, "history": f"hypertension only {i}",
                "rationale": "r"} for i in range(n_no)])


def test_demonstrations_are_balanced_seeded_and_never_empty_handed():
    pool = _pool(6, 6)
    query = {"id": "q", "prompt": [{"role": "system", "content": "s"},
                                    {"role": "user",
                                     "content": user_message("memory complaint APOE e4")}]}
    cfg = FewShotConfig(dataset="v", k=4, seed=1)
    demos = choose_demonstrations(pool, [query, query], cfg)
    assert [d["label"] for d in demos[0]].count(1) == 2 and demos[0] == demos[1]
    assert demos[0] != choose_demonstrations(pool, [query], cfg.model_copy(update={"seed": 2}))[0]
    nearest = choose_demonstrations(pool, [query], FewShotConfig(dataset="v", k=2,
                                                                 selection="nearest"))[0]
    assert nearest[-1]["label"] == 1  # the most similar record sits next to the query
    like_no = {"id": "q2", "prompt": [{"role": "user",
                                       "content": user_message("hypertension only")}]}
    nearest_no = choose_demonstrations(pool, [like_no], FewShotConfig(
        dataset="v", k=2, selection="nearest"))[0]
    assert [d["label"] for d in nearest_no] == [1, 0]  # balanced, and "no" nearest the query
    messages = conversation(query, nearest, with_rationales=True)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user",
                                             "assistant", "user"]
    assert messages[2]["content"].endswith("Final answer: " + ("yes" if nearest[0]["label"]
                                                               else "no"))
    assert conversation(query, nearest, with_rationales=False)[2]["content"].startswith(
        "Final answer:")
    with pytest.raises(ValueError, match="needs at least k with both labels"):
        choose_demonstrations(_pool(3, 0), [query], cfg)


def test_nearest_compares_the_querys_history_not_its_fixed_intro_and_question():
    """A pool record that happens to share the task's own words (the intro and the
    question every query carries) is not drawn nearer for it: k = 2 takes one record of
    each label, the nearest of each, and the "no" record matching the query's history
    wins over one that only repeats the question."""
    pool = [{"id": "y", "label": 1, "history": "memory complaint", "rationale": "r"},
            {"id": "n-question", "label": 0, "history": "Will this patient be diagnosed "
             "with ADRD within five years? Answer yes or no. Patient record as of the "
             "index date", "rationale": "r"},
            {"id": "n-history", "label": 0, "history": "hypertension statin",
             "rationale": "r"}]
    query = {"id": "q", "prompt": [{"role": "user",
                                    "content": user_message("hypertension statin")}]}
    chosen = choose_demonstrations(pool, [query], FewShotConfig(dataset="v", k=2,
                                                                selection="nearest"))[0]
    assert [d["id"] for d in chosen][-1] == "n-history"
    assert "n-question" not in {d["id"] for d in chosen}


GRID = """
name: tiny
dataset: t
sft:
  targets: [label, rationale-free]
  train_sizes: [8]
  seeds: [0]
  lora_ranks: [4]
  learning_rates: [1e-3]
  epochs: [1]
  settings: {per_device_train_batch_size: 4, max_length: 384, save_steps: 100}
fewshot:
  ks: [0, 2]
  with_rationales: [true, false]
  settings: {limit: 8, n_bootstrap: 200, min_reached_answer: 0.0}
evaluation: {limit: 8, n_bootstrap: 200, engine: vllm, min_reached_answer: 0.0,
  max_one_answer_share: 1.0, n_samples: 2}
extra_scorings: [sampled]
"""


@pytest.mark.slow
@pytest.mark.vllm
def test_export_to_auroc_end_to_end(tmp_path, tiny_model, model_cache, monkeypatch):
    """Every stage of a grid on a 2-layer model: what it learns does not matter here, only
    that each run is trained, scored, reported and reused (the plumbing of a study)."""
    pytest.importorskip("vllm")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    db = tmp_path / "e2e.sqlite"
    engine = audited_version(f"sqlite:///{db}", tmp_path / "exports", n=60)
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(GRID + f"cache_dir: {model_cache}\nruns_dir: {tmp_path / 'runs'}\n"
                         f"base_models: [{tiny_model}]\n")
    runner = CliRunner()
    result = runner.invoke(app, ["experiment", "run", str(grid_file), "--db", str(db)])
    assert result.exit_code == 0, result.output

    with Session(engine) as session:
        version = get_version(session, "t")
        test_ids = [r["id"] for r in read_view(version, "label_only", "test")][:8]
        rows = session.query(TrainingRun).order_by(TrainingRun.id).all()
        assert [(r.kind, r.target, r.status) for r in rows] == [
            ("sft", "label", "finished"), ("sft", "rationale-free", "finished"),
            ("fewshot", "fewshot-k0-label", "finished"),  # k = 0: one run, nothing to show
            ("fewshot", "fewshot-k2-rationale", "finished"),
            ("fewshot", "fewshot-k2-label", "finished")]
        results = session.query(EvaluationResult).all()
        # the rationale writers (SFT and few-shot) are scored by sampled rationales too
        assert sorted((r.training_run_id, r.scoring) for r in results) == [
            (1, "auto"), (2, "auto"), (2, "sampled"), (3, "auto"), (4, "auto"),
            (4, "sampled"), (5, "auto")]
        assert all(r.n == 8 for r in results)
        sampled = next(r for r in results if (r.training_run_id, r.scoring) == (4, "sampled"))
        assert sampled.metrics["scoring"] == {"requested": "sampled", "mode": "sampled",
                                              "n_samples": 2, "temperature": 1.0}
        assert Path(sampled.predictions_path).parent.name == "test-sampled"
        assert all(len(json.loads(line)["rationale"]) == 2 for line in open(
            Path(sampled.predictions_path).with_suffix(".jsonl")))
        for r in results:
            m = r.metrics
            assert m["dataset"]["content_sha256"] == version.content_hash
            if m["auroc"]["low"] is not None:
                assert m["auroc"]["low"] <= r.auroc <= m["auroc"]["high"]
            with open(r.predictions_path) as handle:
                preds = list(csv.DictReader(handle))
            assert [p["id"] for p in preds] == test_ids
            assert all(0 <= float(p["p_yes"]) <= 1 for p in preds)
        label_run = rows[0]
        label_preds = {p["id"]: float(p["p_yes"]) for p in csv.DictReader(
            open(session.query(EvaluationResult).filter_by(
                training_run_id=label_run.id).one().predictions_path))}

    # vLLM (merged adapter) and transformers + peft give the same P(yes).
    with Session(engine) as session:
        rows = read_view(get_version(session, "t"), "label_only", "test")[:4]
    scorer = TransformersScorer(tiny_model, str(Path(label_run.run_dir) / "adapter"))
    prompts = [prompt_text(scorer.tokenizer, r["prompt"]) + ANSWER_PREFIX for r in rows]
    p_yes, _ = scorer.label_probabilities(prompts)
    assert np.allclose(p_yes, [label_preds[r["id"]] for r in rows], atol=2e-3)

    # The report: every table populated, the figure drawn, runs traceable.
    folder = tmp_path / "runs" / "experiments" / "tiny"
    md = (folder / "results.md").read_text()
    assert "label vs rationale-free" in md and "auroc_by_size.png" in md
    assert (folder / "auroc_by_size.png").stat().st_size > 5000
    with open(folder / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert sorted((row["kind"], row["scoring"]) for row in table if row["kind"] == "fewshot"
                  ) == [("fewshot", ""), ("fewshot", ""), ("fewshot", ""),
                        ("fewshot", "sampled")]
    assert "| 2 | with rationales | random | sampled |" in md
    assert "Few-shot: demonstrations with their audited rationales minus" in md
    assert "| fewshot-k0-label | zero-shot |" in md
    assert len(table) == 7 and all(row["dataset_sha256"] == version.content_hash
                                   and not Path(row["run_dir"]).is_absolute()
                                   and (folder / row["run_dir"]).is_dir() for row in table)
    caps = [int(row["rationale_token_cap"]) for row in table if row["rationale_token_cap"]]
    assert caps and min(caps) > 64  # sized from the taught rationales, not a fixed 24
    comparisons = list(csv.DictReader(open(folder / "comparisons.csv")))
    assert len(comparisons) == 1 and 0 <= float(comparisons[0]["p_holm"]) <= 1
    refs = json.loads((folder / "summary.json").read_text())["references"]
    assert {r["model"] for r in refs} == {"structured", "tfidf", "age"} and all(r["n"] == 8
                                                                         for r in refs)
    stored = list(csv.DictReader(open(folder / "predictions.csv")))
    assert {p["kind"] for p in stored} == {"sft", "fewshot", "reference"}
    assert label_preds == {p["id"]: float(p["p_yes"]) for p in stored
                           if p["run_id"] == str(label_run.id)}

    # Re-running the grid reuses every finished run; compare works from the CLI.
    again = runner.invoke(app, ["experiment", "run", str(grid_file), "--db", str(db)])
    assert again.exit_code == 0 and "training" not in again.output
    assert "sampled rationales each" not in again.output
    compared = runner.invoke(app, ["evaluate", "compare", "1", "2", "--db", str(db)])
    assert compared.exit_code == 0 and "DeLong p =" in compared.output
    missing = runner.invoke(app, ["evaluate", "compare", "1", "99", "--db", str(db)])
    assert missing.exit_code == 1 and "no training run matches '99'" in missing.stderr
    # The line that serves both runs' adapters on their base model (run as such in
    # tests/training/test_served.py).
    from training.served import adapter_name

    serve = runner.invoke(app, ["evaluate", "serve-command", "1", "2", "--db", str(db)])
    assert serve.exit_code == 0, serve.output
    assert serve.output.startswith(f"vllm serve {tiny_model} --enable-lora --max-lora-rank ")
    with Session(engine) as session:
        for run in session.query(TrainingRun).filter(TrainingRun.id.in_([1, 2])):
            adapter = Path(run.run_dir).resolve() / "adapter"
            assert f"{adapter_name(adapter)}={adapter}" in serve.output
    fewshot = runner.invoke(app, ["evaluate", "serve-command", "1", "3", "--db", str(db)])
    assert fewshot.exit_code == 1 and "run 3 is a fewshot run" in fewshot.stderr

    # The label-only run's adapter reads the teacher's cited evidence (evidence ablation).
    from annotation_db.models import FaithfulnessRun, FaithfulnessScore, GenerationRun

    with Session(engine) as session:
        generation_run = session.query(GenerationRun).order_by(GenerationRun.id).first().id
    ablated = runner.invoke(app, ["faithfulness", "run", "--run", str(generation_run),
                                  "--scorer-run", "1", "--limit", "3", "--draws", "2",
                                  "--engine", "transformers", "--db", str(db)])
    assert ablated.exit_code == 0, ablated.output
    refused = runner.invoke(app, ["faithfulness", "run", "--run", str(generation_run),
                                  "--scorer-run", "3", "--db", str(db)])
    assert refused.exit_code == 1 and "needs a finished SFT run" in refused.stderr
    with Session(engine) as session:
        run = session.query(FaithfulnessRun).one()
        scores = session.query(FaithfulnessScore).all()
        policy_budget = get_version(session, "t").manifest["policy"]["history_budget"]
    assert run.scorer["kind"] == "training_run" and run.scorer["training_run"] == 1
    assert run.scorer["target"] == "label" and len(run.scorer["adapter_sha256"]) == 64
    assert run.settings["history_budget"] == policy_budget  # the run's own data policy
    assert len(scores) == 3 and all(0 < s.p_full < 1 for s in scores)


def test_adapter_ranks_round_up_to_a_rank_vllm_accepts():
    from generation.engine import vllm_lora_rank

    assert [vllm_lora_rank(r) for r in (1, 4, 16, 24, 300, 512)] == [1, 8, 16, 32, 320, 512]
    with pytest.raises(ValueError, match="--engine transformers"):
        vllm_lora_rank(1024)


@pytest.mark.slow
@pytest.mark.vllm
def test_one_cpu_engine_swaps_merged_adapters_in_place(tmp_path, tiny_model):
    """On CPU the pool loads each merged adapter into the running engine, and the base
    weights back for a base-model scorer: the same P(yes) as an engine started on the
    merged folder, and as the base model before the swap."""
    pytest.importorskip("vllm")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from generation.engine import EngineOptions, load_vllm, on_cpu
    from generation.models import resolve_model
    from training.evaluate import ScorerPool, merge_adapter
    from training.scoring import VLLMScorer

    if not on_cpu():
        pytest.skip("GPUs serve adapters through LoRARequest, not merged weights")
    model = resolve_model(tiny_model)  # the swap is the engine's, whatever the weights
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model.path, dtype=torch.float32)
    adapted = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear",
                                              init_lora_weights=False))  # not a no-op
    adapted.save_pretrained(tmp_path / "adapter")
    tokenizer = load_tokenizer(model.path)
    prompts = [tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Patient {i}: memory complaints. Dementia risk?"}],
        tokenize=False, add_generation_prompt=True) + ANSWER_PREFIX for i in range(4)]

    pool = ScorerPool("vllm", max_model_len=2048)
    before, _ = pool.scorer(model, None).label_probabilities(prompts)
    swapped, _ = pool.scorer(model, str(tmp_path / "adapter")).label_probabilities(
        prompts)
    back, _ = pool.scorer(model, None).label_probabilities(prompts)
    assert pool.engines_started == 1
    pool.close()
    merged = merge_adapter(model, str(tmp_path / "adapter"), tmp_path / "merged")
    fresh = load_vllm(merged, EngineOptions(max_model_len=2048, dtype="float32"))
    started_on_merged, _ = VLLMScorer(fresh).label_probabilities(prompts)
    del fresh
    assert np.abs(swapped - before).max() > 1e-3  # the adapter changes the answer
    assert np.allclose(swapped, started_on_merged, atol=1e-5)
    assert np.allclose(back, before, atol=1e-5)


def test_one_pairing_rule_refuses_other_patients_and_other_labels():
    from training.runs import RunError, paired

    a = {"P1": (1, 0.9), "P2": (0, 0.2)}
    ids, y, sa, sb = paired(a, {"P2": (0, 0.4), "P1": (1, 0.6)}, 1, 2)
    assert ids == ["P1", "P2"] and y.tolist() == [1, 0] and sb.tolist() == [0.6, 0.4]
    with pytest.raises(RunError, match="different patients \\(1 differ\\)"):
        paired(a, {"P1": (1, 0.6)}, 1, 2)
    with pytest.raises(RunError, match="disagree on patients' labels"):
        paired(a, {"P1": (0, 0.6), "P2": (0, 0.4)}, 1, 2)


@pytest.mark.parametrize("scoring, scores, degenerate", [
    ("auto", [0.99] * 97 + [0.01] * 3, "says yes 96% of the time (mean P(yes) 0.961), above 95%"),
    ("sampled", [0.4] * 50 + [0.6] * 50, None),  # yes in half its sampled answers
])
def test_a_result_keeps_its_yes_rate_and_whether_it_is_degenerate(scoring, scores,
                                                                  degenerate):
    """A stored result carries the report's degenerate rule, so a tuned cell can rank by
    it before any report is written."""
    from training.evaluate import Scored, summarize
    from training.evaluate_config import EvaluateConfig
    from training.grid.config import validation_rank

    n = len(scores)
    scored = Scored(ids=[str(i) for i in range(n)], labels=np.arange(n) % 2,
                    p_yes=np.asarray(scores), label_mass=np.ones(n),
                    reached_answer=[None] * n, rationales=[None] * n, seconds=0.0)
    metrics = summarize(scored, EvaluateConfig(scoring=scoring, n_bootstrap=100))
    assert metrics["degenerate"] == degenerate
    assert metrics["yes_rate"] == pytest.approx(0.97 if degenerate else 0.5)
    assert metrics["mean_p_yes"] == pytest.approx(np.mean(scores))
    assert validation_rank(metrics, 0.7) == (degenerate is None, 0.7)


def test_a_candidate_degenerate_on_validation_ranks_after_every_valid_one():
    from training.grid.config import validation_rank

    candidates = {"degenerate": validation_rank(
        {"valid": True, "degenerate": "says yes for 100% of test patients"}, 0.9),
        "valid": validation_rank({"valid": True, "degenerate": None}, 0.55)}
    assert max(candidates, key=candidates.get) == "valid"
    assert validation_rank({"valid": True}, 0.6) == (True, 0.6)  # scored before the rule


def test_gumbel_sampling_draws_from_the_softmax_at_the_temperature():
    """Greedy decoding over Gumbel-perturbed logits is sampling: over 20,000 rows with
    their own seeds, each token's share matches softmax(logits / T); and a row's draw
    depends on its seed, not on the rows beside it."""
    import torch

    from training.scoring import GumbelSampling

    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    for temperature in (1.0, 0.5):
        rows = 20_000
        sampler = GumbelSampling(range(rows), temperature)
        drawn = sampler(None, logits.expand(rows, -1)).argmax(dim=-1)
        shares = torch.bincount(drawn, minlength=4).double() / rows
        expected = torch.softmax(logits.double() / temperature, dim=0)
        assert torch.allclose(shares, expected, atol=0.012), (shares, expected)
    together = GumbelSampling([5, 9], 1.0)(None, logits.expand(2, -1))
    alone = GumbelSampling([9], 1.0)(None, logits.expand(1, -1))
    assert torch.equal(together[1], alone[0])


def test_transformers_samples_each_prompt_alike_in_any_batch(tiny_model):
    """Batched sampling gives a prompt the rationales it gets on its own, with its seed."""
    from annotation_db.student_task import prompt_messages
    from training.data import prompt_text
    from training.scoring import TransformersScorer

    scorer = TransformersScorer(tiny_model, batch_size=4)
    heads = [prompt_text(scorer.tokenizer, prompt_messages(h)) for h in
             ("2019-03 E1 memory complaint", "2020-01 E1 hypertension\n2021-05 E2 MMSE 24")]
    batch = scorer.sample_until_answer(heads, 10, 3, 1.0, [11, 12])
    alone = scorer.sample_until_answer(heads[1:], 10, 3, 1.0, [12])
    assert [c.text for c in batch[1]] == [c.text for c in alone[0]]
    assert len({c.text for c in batch[0]}) > 1  # three draws, not one
    other = scorer.sample_until_answer(heads[1:], 10, 3, 1.0, [13])
    assert [c.text for c in other[0]] != [c.text for c in alone[0]]


def test_the_transformers_scorer_sets_the_models_own_generation_defaults_aside(tiny_model,
                                                                               tmp_path):
    """A model's generation_config.json (a repetition penalty, say) would bend both the
    greedy and the sampled rationales away from vLLM's, which ignores it."""
    import shutil

    from training.scoring import TransformersScorer

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    config_file = folder / "generation_config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    config_file.write_text(json.dumps({**config, "repetition_penalty": 1.3,
                                       "no_repeat_ngram_size": 3, "eos_token_id": 2}))
    generation = TransformersScorer(str(folder)).model.generation_config
    assert generation.repetition_penalty in (None, 1.0)
    assert not generation.no_repeat_ngram_size
    assert generation.eos_token_id == 2
    # with an adapter too: the peft wrapper generates through the base model's config
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                   LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(adapter)
    wrapped = TransformersScorer(str(folder), str(adapter)).model
    assert wrapped.get_base_model().generation_config.repetition_penalty in (None, 1.0)


def test_a_few_shot_run_is_scored_again_only_with_the_demonstrations_it_recorded(tmp_path):
    """Sampled scoring of a finished few-shot run rebuilds its seeded demonstrations and
    refuses to go on if they are not the ones its demonstrations.jsonl recorded."""
    from training.fewshot import _check_demonstrations
    from training.runs import RunError

    queries = [{"id": "q1"}, {"id": "q2"}]
    demos = [[{"id": "a"}, {"id": "b"}], [{"id": "a"}, {"id": "b"}]]
    (tmp_path / "demonstrations.jsonl").write_text(
        '{"id": "q1", "demonstrations": ["a", "b"]}\n'
        '{"id": "q2", "demonstrations": ["a", "b"]}\n')
    _check_demonstrations(tmp_path, queries, demos)
    with pytest.raises(RunError, match="records other demonstrations than the pool gives"):
        _check_demonstrations(tmp_path, queries, [demos[0], [{"id": "a"}, {"id": "c"}]])
