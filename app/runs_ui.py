"""The Runs screen: dataset versions, launching training jobs, following them, results.

For admins and researchers only (every handler re-checks the role on the server).
Researchers see dataset versions, runs and results — aggregate agreement and
pseudonymised ratings, never an annotator's identity. A launch is validated by
the same typed config the CLI uses, and the equivalent command is shown so the
run can be repeated elsewhere. Jobs run in the background (:mod:`app.jobs`) and
their state lives in the database, so a reload loses nothing.
"""

import json
from pathlib import Path

import gradio as gr
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import jobs as job_crud
from annotation_db.models import DatasetVersion, EvaluationResult, Job, TrainingRun
from annotation_db.provenance import ConfigError
from app.jobs import log_tail

RESEARCH_ROLES = ("admin", "researcher")
TARGETS = ["label", "rationale-free", "rationale-stepwise"]


def _fmt(metric: dict | None) -> str:
    if not metric or metric.get("value") is None:
        return "–"
    if metric.get("low") is None:
        return f"{metric['value']:.3f}"
    return f"{metric['value']:.3f} [{metric['low']:.3f}, {metric['high']:.3f}]"


GRID_FOLDER = "experiments"


def grid_file(grid_path: str, workdir: str | Path) -> Path:
    """A grid YAML inside ``<workdir>/experiments/`` (relative paths start there)."""
    if not grid_path or not grid_path.strip():
        raise ConfigError(f"give the name of a grid YAML file in the server's {GRID_FOLDER}/ "
                          "folder")
    root = (Path(workdir) / GRID_FOLDER).resolve()
    given = Path(grid_path.strip())
    if given.parts and given.parts[0] == GRID_FOLDER:
        given = Path(*given.parts[1:])
    path = (root / given).resolve()
    if not path.is_relative_to(root) or path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"a grid must be a .yaml file inside the server's {GRID_FOLDER}/ "
                          f"folder; {grid_path!r} is not")
    if not path.is_file():
        raise ConfigError(f"no grid file {GRID_FOLDER}/{path.relative_to(root)} on the server")
    return path


def build_config(kind: str, dataset: str, target: str, base_model: str, lora_r, lr, epochs,
                 seed, max_steps, k, with_rationales: bool, grid_path: str,
                 eval_limit, eval_engine: str = "auto", workdir: str | Path = "."
                 ) -> tuple[dict, str]:
    """The job's validated config and its equivalent command line.

    ``workdir`` is the job runner's working folder: grid files are read from its
    ``experiments/`` folder only, so the form cannot be used to read other files."""
    from training.evaluate import EvaluateConfig
    from training.fewshot import FewShotConfig
    from training.grid import ExperimentGrid
    from training.sft import SFTRunConfig

    limit = int(eval_limit) if eval_limit else None
    if kind == "sft":
        cfg = SFTRunConfig.load(
            None, dataset=dataset or None, target=target, base_model=base_model or None,
            lora_r=int(lora_r) if lora_r else None, learning_rate=lr or None,
            num_train_epochs=epochs or None, seed=int(seed) if seed is not None else None,
            max_steps=int(max_steps) if max_steps else None)
        evaluate = EvaluateConfig.load(None, limit=limit, engine=eval_engine or None)
        return ({"config": cfg.model_dump(mode="json"),
                 "evaluate": evaluate.model_dump(mode="json")}, cfg.cli())
    if kind == "fewshot":
        cfg = FewShotConfig.load(None, dataset=dataset or None, k=int(k) if k is not None
                                 else None, with_rationales=with_rationales,
                                 base_model=base_model or None, limit=limit,
                                 engine=eval_engine or None,
                                 seed=int(seed) if seed is not None else None)
        command = (f"rationale-audit train fewshot --dataset {cfg.dataset} --k {cfg.k} "
                   f"--{'with' if cfg.with_rationales else 'without'}-rationales --seed "
                   f"{cfg.seed}" + (f" --limit {cfg.limit}" if cfg.limit else ""))
        return {"config": cfg.model_dump(mode="json")}, command
    if kind == "grid":
        path = grid_file(grid_path, workdir)
        cfg = ExperimentGrid.load(path)
        if Path(cfg.runs_dir).is_absolute() or ".." in Path(cfg.runs_dir).parts:
            raise ConfigError(f"runs_dir: from the app, a grid writes inside the server's "
                              f"working folder; give a relative path, not {cfg.runs_dir!r}")
        relative = path.relative_to(Path(workdir).resolve())
        return ({"config": cfg.model_dump(mode="json"), "path": str(relative)},
                f"rationale-audit experiment run {relative}")
    raise ConfigError(f"kind must be sft, fewshot or grid, not {kind!r}")


def runs_tab(engine, user_of, workdir: str | Path | None = None) -> gr.Tab:
    """Build the tab inside the current Blocks; returns it (hidden until a role allows).

    ``workdir`` is where the job runner starts jobs (relative run folders live there)."""
    workdir = Path(workdir or Path.cwd()).resolve()

    def research_user(session, request):
        return user_of(session, request, RESEARCH_ROLES)

    def list_versions(request: gr.Request):
        with Session(engine) as s:
            research_user(s, request)
            names = list(s.execute(select(DatasetVersion.name).where(
                DatasetVersion.deleted_at.is_(None)).order_by(DatasetVersion.id)).scalars())
        return gr.update(choices=names, value=names[-1] if names else None)

    def show_manifest(name: str, request: gr.Request):
        with Session(engine) as s:
            research_user(s, request)
            version = s.execute(select(DatasetVersion).where(DatasetVersion.name == name)
                                ).scalars().first()
            if version is None:
                return "Choose a dataset version."
            m = version.manifest
        agreement = []
        for campaign, dims in (m.get("agreement") or {}).items():
            for dim, d in (dims or {}).items():
                if isinstance(d, dict) and d.get("alpha") is not None:
                    agreement.append(f"{campaign} {dim}: α = {d['alpha']:.2f} "
                                     f"[{d['ci95'][0]:.2f}, {d['ci95'][1]:.2f}]")
        return "\n".join([
            f"**{m['name']}** — sha256 `{m['content_sha256']}`", "",
            f"Counts: `{json.dumps(m['counts'])}`", "",
            f"Decisions: `{json.dumps(m['decisions'])}`", "",
            "Agreement: " + ("; ".join(agreement) or "–"), "",
            "Policy:", "```yaml", (m.get("policy_text") or "").strip(), "```"])

    def check(kind, dataset, target, base_model, lora_r, lr, epochs, seed, max_steps, k,
              with_rationales, grid_path, eval_limit, eval_engine, request: gr.Request):
        with Session(engine) as s:
            research_user(s, request)
        try:
            _, command = build_config(kind, dataset, target, base_model, lora_r, lr, epochs,
                                      seed, max_steps, k, with_rationales, grid_path,
                                      eval_limit, eval_engine, workdir)
        except (ConfigError, OSError) as exc:
            raise gr.Error(str(exc)) from None
        return f"Valid. Equivalent command:\n\n```\n{command}\n```"

    def launch(kind, dataset, target, base_model, lora_r, lr, epochs, seed, max_steps, k,
               with_rationales, grid_path, eval_limit, eval_engine, request: gr.Request):
        with Session(engine) as s:
            user = research_user(s, request)
            try:
                config, command = build_config(kind, dataset, target, base_model, lora_r, lr,
                                               epochs, seed, max_steps, k, with_rationales,
                                               grid_path, eval_limit, eval_engine, workdir)
            except (ConfigError, OSError) as exc:
                raise gr.Error(str(exc)) from None
            job = job_crud.enqueue(s, kind=kind, config=config, command=command, user=user)
            return (f"Queued job {job.id}. Equivalent command:\n\n```\n{command}\n```",
                    job.id)

    def list_jobs(request: gr.Request):
        with Session(engine) as s:
            research_user(s, request)
            rows = [[j.id, j.kind, j.status, j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                     j.training_run_id or "", (j.error or "").splitlines()[-1:][0]
                     if j.error else "", j.command] for j in job_crud.list_jobs(s)]
        return rows

    def job_log(job_id, request: gr.Request):
        with Session(engine) as s:
            research_user(s, request)
            if not job_id:
                return "Choose a job."
            try:
                job = job_crud.get_job(s, int(job_id))
            except job_crud.JobError as exc:
                raise gr.Error(str(exc)) from None
            head = f"job {job.id}: {job.status}" + (f" — {job.error}" if job.error else "")
            return head + "\n\n" + log_tail(job)

    def cancel(job_id, request: gr.Request):
        with Session(engine) as s:
            research_user(s, request)
            try:
                job = job_crud.cancel(s, int(job_id or 0))
            except job_crud.JobError as exc:
                raise gr.Error(str(exc)) from None
            return f"job {job.id}: {job.status}"

    def resume(job_id, request: gr.Request):
        with Session(engine) as s:
            user = research_user(s, request)
            try:
                job = job_crud.resume(s, int(job_id or 0), user)
            except job_crud.JobError as exc:
                raise gr.Error(str(exc)) from None
            return f"Queued job {job.id}, resuming job {job.resumed_from}", job.id

    def results(request: gr.Request):
        with Session(engine) as s:
            research_user(s, request)
            rows = []
            for run, result, version in s.execute(
                    select(TrainingRun, EvaluationResult, DatasetVersion)
                    .join(EvaluationResult, EvaluationResult.training_run_id == TrainingRun.id)
                    .join(DatasetVersion, DatasetVersion.id == TrainingRun.dataset_version_id)
                    .where(EvaluationResult.split == "test").order_by(TrainingRun.id)):
                m = result.metrics
                rows.append([run.id, run.kind, run.target, run.config.get("train_size") or "",
                             run.config.get("seed", ""), result.n, _fmt(m.get("auroc")),
                             _fmt(m.get("auprc")),
                             f"{version.name} ({version.content_hash[:12]})", run.run_dir])
        return rows

    def compare_runs(run_a, run_b, request: gr.Request):
        from training.evaluate import compare
        from training.runs import RunError

        with Session(engine) as s:
            research_user(s, request)
        try:
            r = compare(engine, str(int(run_a or 0)), str(int(run_b or 0)))
        except RunError as exc:
            raise gr.Error(str(exc)) from None
        return (f"Run {r['run_a']['id']} ({r['run_a']['target']}) AUROC {r['auc1']:.3f} vs run "
                f"{r['run_b']['id']} ({r['run_b']['target']}) AUROC {r['auc2']:.3f} on "
                f"{r['n']} patients: difference {r['difference']:+.3f} "
                f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], DeLong p = {r['p_value']:.4g}.")

    def grid_figure(job_id, request: gr.Request):
        with Session(engine) as s:
            research_user(s, request)
            job = s.get(Job, int(job_id or 0))
            if job is None or job.kind != "grid":
                raise gr.Error("Choose a grid job.")
            grid = job.config["config"]
        folder = workdir / grid["runs_dir"] / "experiments" / grid["name"]
        figure = folder / "auroc_by_size.png"
        if not figure.exists():
            raise gr.Error(f"job {job_id} has no figure yet ({figure})")
        return str(figure.resolve()), (folder / "results.md").read_text()

    with gr.Tab("Runs", visible=False) as tab:
        with gr.Row():
            version_dd = gr.Dropdown(label="Dataset version", choices=[],
                                     allow_custom_value=True)
            versions_btn = gr.Button("Refresh versions")
        manifest_md = gr.Markdown()
        gr.Markdown("### Launch")
        with gr.Row():
            kind_radio = gr.Radio(["sft", "fewshot", "grid"], value="sft", label="Kind")
            target_dd = gr.Dropdown(TARGETS, value="label", label="SFT target")
            base_model_box = gr.Textbox(label="Base model", value="bundled:smollm2-135m-instruct")
        with gr.Row():
            lora_r_box = gr.Number(label="LoRA rank", value=16, precision=0)
            lr_box = gr.Number(label="Learning rate", value=2e-4)
            epochs_box = gr.Number(label="Epochs", value=2)
            seed_box = gr.Number(label="Seed", value=0, precision=0)
            max_steps_box = gr.Number(label="Max steps (0: epochs)", value=0, precision=0)
        with gr.Row():
            k_box = gr.Number(label="Few-shot k", value=4, precision=0)
            with_rationales_box = gr.Checkbox(label="Demonstrations with rationales", value=True)
            grid_path_box = gr.Textbox(label="Grid YAML (file in the server's experiments/ folder)")
            eval_limit_box = gr.Number(label="Score first N test patients (0: all)", value=0,
                                       precision=0)
            eval_engine_dd = gr.Dropdown(["auto", "vllm", "transformers"], value="auto",
                                         label="Scoring engine")
        with gr.Row():
            check_btn = gr.Button("Check")
            launch_btn = gr.Button("Launch", variant="primary")
        launch_md = gr.Markdown()
        gr.Markdown("### Jobs")
        jobs_table = gr.Dataframe(headers=["job", "kind", "status", "created", "run", "error",
                                           "command"], interactive=False)
        with gr.Row():
            job_id_box = gr.Number(label="Job", precision=0)
            log_btn = gr.Button("Show log")
            cancel_btn = gr.Button("Cancel job", variant="stop")
            resume_btn = gr.Button("Resume job")
        job_md = gr.Markdown()
        log_box = gr.Textbox(label="Log (last lines)", lines=12, max_lines=20)
        timer = gr.Timer(2.0, active=False)  # started when the tab is opened
        gr.Markdown("### Results (test split)")
        results_btn = gr.Button("Refresh results")
        results_table = gr.Dataframe(headers=["run", "kind", "target", "size", "seed", "n",
                                              "AUROC [95% CI]", "AUPRC [95% CI]",
                                              "dataset version", "run folder"],
                                     interactive=False)
        with gr.Row():
            run_a_box = gr.Number(label="Run A", precision=0)
            run_b_box = gr.Number(label="Run B", precision=0)
            compare_btn = gr.Button("Compare (DeLong)")
        compare_md = gr.Markdown()
        with gr.Row():
            figure_btn = gr.Button("Show grid figure for the job above")
        figure_img = gr.Image(label="AUROC by target and size", type="filepath")
        grid_md = gr.Markdown()

        form = [kind_radio, version_dd, target_dd, base_model_box, lora_r_box, lr_box,
                epochs_box, seed_box, max_steps_box, k_box, with_rationales_box, grid_path_box,
                eval_limit_box, eval_engine_dd]
        tab.select(list_versions, None, version_dd, api_name="runs_versions")
        tab.select(lambda: gr.Timer(active=True), None, timer, api_name=False)
        versions_btn.click(list_versions, None, version_dd, api_name="runs_versions_refresh")
        version_dd.change(show_manifest, version_dd, manifest_md, api_name="runs_manifest")
        check_btn.click(check, form, launch_md, api_name="runs_check")
        launch_btn.click(launch, form, [launch_md, job_id_box], api_name="runs_launch")
        timer.tick(list_jobs, None, jobs_table, api_name="runs_jobs_tick", show_progress="hidden")
        log_btn.click(job_log, job_id_box, log_box, api_name="runs_log")
        timer.tick(job_log, job_id_box, log_box, api_name="runs_log_tick",
                   show_progress="hidden")
        cancel_btn.click(cancel, job_id_box, job_md, api_name="runs_cancel")
        resume_btn.click(resume, job_id_box, [job_md, job_id_box], api_name="runs_resume")
        results_btn.click(results, None, results_table, api_name="runs_results")
        compare_btn.click(compare_runs, [run_a_box, run_b_box], compare_md,
                          api_name="runs_compare")
        figure_btn.click(grid_figure, job_id_box, [figure_img, grid_md], api_name="runs_figure")
        gr.on([launch_btn.click], list_jobs, None, jobs_table, api_name="runs_jobs")
    return tab
