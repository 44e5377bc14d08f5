"""`rationale-audit demo`: the main job, end to end, on the embedded default.

Stages so far: prepare the bundled model → create/migrate the SQLite database →
seed a small synthetic cohort (kept on re-runs) → write grounded rationales for some of
its patients with vLLM (resumed on re-runs) → demo accounts and a campaign over those
rationales, plus a campaign rated by simulated raters with its agreement report → the
evidence ablation of the template teacher's rationales → a verified export → a tiny
LoRA SFT run and its test evaluation → serve the annotation app (unless --no-serve).
"""

import json
import time
from pathlib import Path

from rich.console import Console
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import migrate
from annotation_db.cohorts import cohort_summary
from annotation_db.export import ApprovalPolicy
from annotation_db.models import Campaign, Cohort, DatasetVersion
from annotation_db.provenance import echo_config
from annotation_db.session import check_connection, database_url, make_engine, redact
from app.commands.cohort import store_generated
from app.common import config_options, user_errors
from app.demo_config import DemoConfig
from app.quiet import StageStatus, quiet_libraries
from generation.cohort_config import CohortConfig
from generation.models import history_counter, resolve_model

console = Console(soft_wrap=True)  # paths and hashes stay copyable

DEMO_PASSWORD = "rationale-demo"  # local demo only: printed, and the app listens on loopback
DEMO_ACCOUNTS = (("clinician1", "annotator"), ("clinician2", "annotator"),
                 ("adjudicator", "adjudicator"), ("admin", "admin"))
DEMO_CAMPAIGN = "demo"
SIMULATED_CAMPAIGN = "demo-simulated"
DEMO_EXPORT = "demo-simulated-v1"
# The demo's ratings come from simulated raters, so its policy must say it includes them.
DEMO_POLICY = ApprovalPolicy(campaigns=[SIMULATED_CAMPAIGN], min_accuracy=3, min_faithfulness=3,
                             blocking_flags=["unsafe_or_misleading"], min_gold_accuracy=None,
                             include_simulated=True).to_yaml()


def _demo_campaigns(engine, run_ids: list[int], out: Path) -> dict:
    """Demo accounts, a campaign for them, and a simulated campaign with its agreement report."""
    from annotation_db import campaigns, users
    from annotation_db.agreement import agreement_report
    from annotation_db.agreement_report import to_html
    from annotation_db.ratings import default_dimensions, load_campaign_ratings
    from annotation_db.simulate import simulate, simulated_raters

    with Session(engine) as session:
        for name, role in DEMO_ACCOUNTS:
            if users.get_user(session, name) is None:
                users.create_user(session, username=name, password=DEMO_PASSWORD, role=role)
        existing = set(session.execute(select(Campaign.name)).scalars())
        if DEMO_CAMPAIGN not in existing:
            campaigns.create_campaign(session, name=DEMO_CAMPAIGN, run_ids=run_ids,
                                      annotators=["clinician1", "clinician2"], k=2,
                                      calibration=2, gold_share=0.25)
        if SIMULATED_CAMPAIGN not in existing:
            names = simulated_raters(session, 4)
            campaign = campaigns.create_campaign(session, name=SIMULATED_CAMPAIGN,
                                                 run_ids=run_ids[:1], annotators=names, k=3,
                                                 gold_share=0.5, seed=1)
            simulate(session, campaign, seed=1)
        ratings, gold, design = load_campaign_ratings(session, SIMULATED_CAMPAIGN,
                                                      include_simulated=True)
    report = agreement_report(ratings, default_dimensions({r.dimension for r in ratings}),
                              replicates=500, seed=0, gold_items=gold, design=design)
    (out / "agreement.html").write_text(
        to_html(report, f"Agreement report: campaign {SIMULATED_CAMPAIGN} (simulated raters)"))
    from annotation_db import export

    policy = out / "policy.yaml"
    policy.write_text(DEMO_POLICY)
    with Session(engine) as session:
        existing = session.execute(select(DatasetVersion).where(
            DatasetVersion.name == DEMO_EXPORT)).scalars().first()
        try:
            version = existing or export.create(session, name=DEMO_EXPORT, policy_path=policy,
                                                root=out.parent / "exports",
                                                counter_for=history_counter)
            exported = {"version": version.name, "sha256": version.content_hash,
                        "path": version.path, "counts": version.manifest["counts"]}
        except export.ExportError as exc:  # e.g. no rationale of the tiny demo passes
            exported = {"version": None, "reason": str(exc)}
    return {"accounts": [name for name, _ in DEMO_ACCOUNTS], "campaign": DEMO_CAMPAIGN,
            "simulated_campaign": SIMULATED_CAMPAIGN, "simulated_ratings": len(ratings),
            "export": exported}


def _demo_training(engine, version: str, cfg, out: Path) -> dict:
    """Two LoRA steps on the demo export's label-only view, then the test AUROC.

    Far too little training to predict anything: it shows the loop
    (export → run folder → evaluation row), not a result.
    """
    from annotation_db.models import EvaluationResult
    from training.evaluate import evaluate_run
    from training.evaluate_config import EvaluateConfig
    from training.sft import train
    from training.sft_config import SFTRunConfig

    run = train(engine, SFTRunConfig(
        dataset=version, target="label", max_steps=2, per_device_train_batch_size=2,
        max_length=512, lora_r=8, save_steps=1000, logging_steps=1, cache_dir=cfg.cache_dir,
        probe_rows=2,  # the gradient probe on one batch of the run's size, not twice it
        runs_dir=str(out.parent / "runs")))
    with Session(engine) as session:
        result = session.execute(select(EvaluationResult).where(
            EvaluationResult.training_run_id == run.id)).scalars().first()
    if result is None:
        result = evaluate_run(engine, str(run.id), EvaluateConfig(
            engine="transformers", limit=8, n_bootstrap=200))
    auroc = result.metrics["auroc"]
    return {"run_id": run.id, "run_dir": run.run_dir, "steps": 2, "n_test": result.n,
            "auroc": None if auroc["value"] is None else round(auroc["value"], 3),
            "auroc_ci": [auroc["low"], auroc["high"]], "predictions": result.predictions_path}


def _model_stage(cfg: DemoConfig, summary: dict) -> None:
    with StageStatus(console, "preparing the model") as status:
        started = time.perf_counter()
        resolved = resolve_model(cfg.model, cache_dir=cfg.cache_dir, on_stage=status.update)
    summary["stages"]["model"] = {"spec": resolved.spec, "path": resolved.path,
                                  "sha256": resolved.checksum,
                                  "seconds": round(time.perf_counter() - started, 2)}
    console.print(f"[green]✓[/] model {resolved.spec} → {resolved.path}", highlight=False)


def _database_stage(cfg: DemoConfig, summary: dict):
    engine = make_engine(database_url(cfg.db))
    check_connection(engine)
    migrate.upgrade(engine)
    summary["stages"]["database"] = {"url": redact(str(engine.url)),
                                     "revision": migrate.current_revision(engine)}
    console.print(f"[green]✓[/] database {redact(str(engine.url))} at revision "
                  f"{summary['stages']['database']['revision']}", highlight=False)
    return engine


def _cohort_stage(engine, cfg: DemoConfig, summary: dict) -> None:
    with Session(engine) as session:
        existing = session.execute(
            select(Cohort).where(Cohort.name == cfg.cohort_name)).scalars().first()
    if existing is None:
        cohort_cfg = CohortConfig(name=cfg.cohort_name, n=cfg.cohort_n, seed=cfg.cohort_seed)
        made = store_generated(engine, cohort_cfg, workers=1, quiet=True)
        with Session(engine) as session:
            summary["stages"]["cohort"] = {"name": cfg.cohort_name, "created": True,
                                           "splits": cohort_summary(session, made["cohort_id"])}
    else:
        with Session(engine) as session:
            summary["stages"]["cohort"] = {"name": cfg.cohort_name, "created": False,
                                           "splits": cohort_summary(session, existing.id)}
    splits = summary["stages"]["cohort"]["splits"]
    console.print(
        f"[green]✓[/] cohort {cfg.cohort_name!r}: "
        + ", ".join(f"{s} {v['patients']} ({v['cases']} cases)" for s, v in splits.items())
        + ("" if summary["stages"]["cohort"]["created"] else " (already there, reused)"),
        highlight=False,
    )


def _rationales_stage(engine, cfg: DemoConfig, summary: dict) -> list[int]:
    """The bundled model's rationales (vLLM) and, for the same patients, the template
    teacher's step-by-step ones (several claims each, every step citing the record inline),
    so that claim review has realistic text beside a 135M model's sentence or two."""
    from generation.rationales import generate_rationales
    from generation.rationales_config import GenerateConfig

    gen_cfg = GenerateConfig(cohort=cfg.cohort_name, split="train", n=cfg.generate_n,
                             model=cfg.model, cache_dir=cfg.cache_dir, gold_share=0.25,
                             batch_size=cfg.generate_n)
    with StageStatus(console, f"writing {cfg.generate_n} rationales with vLLM"):
        result = generate_rationales(engine, gen_cfg)
    template = generate_rationales(engine, gen_cfg.model_copy(update={
        "backend": "template", "format": "stepwise", "gold_share": 0.0}))
    summary["stages"]["template_rationales"] = {
        "run_id": template.run_id, "generated": template.generated,
        "already_done": template.skipped, "source": "template teacher (generation/teacher.py)"}
    summary["stages"]["rationales"] = {
        "run_id": result.run_id, "generated": result.generated, "failed": result.failed,
        "already_done": result.skipped, "gold_copies": result.gold,
        "tokens_per_second": round(result.tokens_per_second, 1)}
    console.print(
        f"[green]✓[/] rationales: run {result.run_id}, {result.generated} new "
        f"({result.failed} failed), {result.skipped} already done, {result.gold} gold copies"
        + (f", {result.tokens_per_second:.0f} tok/s" if result.tokens else "")
        + f"; template teacher: run {template.run_id} ({template.generated} new, step by step)",
        highlight=False)
    return [result.run_id, template.run_id]


def _campaigns_stage(engine, run_ids: list[int], out: Path, summary: dict) -> dict:
    summary["stages"]["campaigns"] = _demo_campaigns(engine, run_ids, out)
    exported = summary["stages"]["campaigns"]["export"]
    console.print(
        f"[green]✓[/] campaign {DEMO_CAMPAIGN!r} (claim review on; the model's and the "
        f"template teacher's rationales, runs {run_ids}) for the demo accounts; simulated campaign "
        f"{SIMULATED_CAMPAIGN!r} with its agreement report in {out / 'agreement.html'}; "
        + (f"dataset version {exported['version']} in {exported['path']}"
           if exported.get("version") else f"no dataset exported ({exported['reason']})"),
        highlight=False)
    return exported


def _faithfulness_stage(engine, run_id: int, cfg: DemoConfig, summary: dict) -> None:
    """Evidence ablation of the template teacher's rationales, read by the demo's model
    (two random draws each and no per-claim ablation, to keep the demo short)."""
    from annotation_db.faithfulness_report import report
    from training.evidence_ablation import run_ablation
    from training.evidence_ablation_config import FaithfulnessConfig

    with StageStatus(console, "evidence ablation of the template teacher's rationales"):
        result = run_ablation(engine, FaithfulnessConfig(
            run=run_id, scorer=cfg.model, cache_dir=cfg.cache_dir, draws=2, per_claim=False))
        with Session(engine) as session:
            beats = report(session, run_id=result.run_id, replicates=100)["beats_baseline"]
    summary["stages"]["faithfulness"] = {
        "faithfulness_run": result.run_id, "generation_run": run_id, "scored": result.scored,
        "already_done": result.skipped, "beats_baseline": beats}
    share = (f"{beats['above']} of {beats['n']} beat the random baseline by more than "
             f"{beats['threshold']:g}" if beats.get("n") else "none cite shown evidence")
    console.print(f"[green]✓[/] faithfulness: run {result.run_id} over generation run {run_id}, "
                  f"{result.scored} new, {result.skipped} already done; {share} "
                  "(`rationale-audit faithfulness report`, the Admin tab)", highlight=False)


def _training_stage(engine, version: str, cfg: DemoConfig, out: Path, summary: dict) -> None:
    with StageStatus(console, "a tiny LoRA SFT run and its evaluation on CPU"):
        summary["stages"]["training"] = _demo_training(engine, version, cfg, out)
    t = summary["stages"]["training"]
    console.print(
        f"[green]✓[/] training: run {t['run_id']} (label-only LoRA, {t['steps']} steps) "
        f"→ test AUROC {t['auroc']} on {t['n_test']} patients; see {t['run_dir']}",
        highlight=False)


@user_errors
@config_options(DemoConfig)
def demo(cfg: DemoConfig) -> None:
    """Run every pipeline stage on the embedded default (SQLite + the bundled model on CPU).

    Example:

        rationale-audit demo --no-serve
        rationale-audit demo --config demo.yaml
    """
    out = echo_config(cfg, cfg.output_dir, command="demo")
    summary: dict = {"config_sha256": cfg.content_hash(), "stages": {}}
    with quiet_libraries(console, out / "libraries.log", cfg.verbose):
        _model_stage(cfg, summary)
        engine = _database_stage(cfg, summary)
        _cohort_stage(engine, cfg, summary)
        if cfg.generate_n:
            run_ids = _rationales_stage(engine, cfg, summary)
            exported = _campaigns_stage(engine, run_ids, out, summary)
            if cfg.faithfulness:
                _faithfulness_stage(engine, run_ids[1], cfg, summary)
            if cfg.train and exported.get("version"):
                _training_stage(engine, exported["version"], cfg, out, summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"Run record: {out}/config.yaml, provenance.json, summary.json", highlight=False)
    if cfg.serve:
        from app.ui import launch

        console.print(
            f"\nServing the annotation app on http://{cfg.host}:{cfg.port}/ (Ctrl+C stops it).\n"
            f"Log in as clinician1 or clinician2 (annotators), adjudicator, or admin; the demo "
            f"password for all four is {DEMO_PASSWORD!r}.", highlight=False)
        launch(engine, host=cfg.host, port=cfg.port, block=True)
