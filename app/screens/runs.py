"""The Runs screen: dataset versions, launching training jobs, following them, results.

For admins and researchers only (every handler re-checks the role on the server).
Researchers see dataset versions, runs and results — aggregate agreement and
pseudonymised ratings, never an annotator's identity. A launch is validated by
the same typed config the CLI uses, and the equivalent command is shown so the
run can be repeated elsewhere. Jobs run in the background (:mod:`app.jobs`) and
their state lives in the database, so a reload loses nothing.
"""

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import gradio as gr
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import jobs as job_crud
from annotation_db.command_config import ConfigError
from annotation_db.models import DatasetVersion, EvaluationResult, Job, TrainingRun
from app.auth import RESEARCH_ROLES, address_of, bound, user_of
from app.jobs import log_tail
from app.ray_jobs import ADDRESS_VARIABLE
from app.screens.config_form import ConfigForm
from training.memory import available_gib, fitting, for_config
from training.presets import PRESETS, described, preset_settings
from training.tables import format_metric

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


# Where files go is the server's business: no form sets a folder.
SERVER_FIELDS = frozenset({"dataset", "runs_dir", "cache_dir"})


class LaunchForms(NamedTuple):
    """The generated settings of each kind of job (see :mod:`app.screens.config_form`)."""

    sft: ConfigForm
    evaluate: ConfigForm
    fewshot: ConfigForm

    def split(self, values: list) -> dict[str, dict]:
        """The form's flat values → the overrides of each config."""
        out, start = {}, 0
        for name, form in zip(self._fields, self, strict=True):
            out[name] = form.overrides(list(values[start:start + len(form.fields)]))
            start += len(form.fields)
        if start != len(values):
            raise ValueError(f"launch form: {start} values expected, {len(values)} given")
        return out


def launch_forms() -> LaunchForms:
    """Fresh (unrendered) forms for the SFT run, its scoring and a few-shot run."""
    from training.evaluate_config import EvaluateConfig
    from training.fewshot_config import FewShotConfig
    from training.sft_config import SFTRunConfig

    return LaunchForms(sft=ConfigForm(SFTRunConfig, SERVER_FIELDS),
                       evaluate=ConfigForm(EvaluateConfig, SERVER_FIELDS),
                       fewshot=ConfigForm(FewShotConfig, SERVER_FIELDS))


def build_config(kind: str, dataset: str, grid_path: str = "", sft: dict | None = None,
                 evaluate: dict | None = None, fewshot: dict | None = None,
                 workdir: str | Path = ".") -> tuple[dict, str]:
    """The job's validated config and its equivalent command line.

    ``sft``, ``evaluate`` and ``fewshot`` are field overrides of the three configs
    (blank fields left out). ``workdir`` is the job runner's working folder: grid
    files are read from its ``experiments/`` folder only, so the form cannot be used
    to read other files."""
    from training.evaluate_config import EvaluateConfig
    from training.fewshot_config import FewShotConfig
    from training.grid.config import ExperimentGrid
    from training.sft_config import SFTRunConfig

    for given in (sft, evaluate, fewshot):
        if given and SERVER_FIELDS & set(given):
            raise ConfigError(f"{', '.join(sorted(SERVER_FIELDS & set(given)))}: set by the "
                              "server, not by a launch")
    if kind == "sft":
        cfg = SFTRunConfig.load(None, **{**(sft or {}), "dataset": dataset or None})
        scoring = EvaluateConfig.load(None, **(evaluate or {}))
        return ({"config": cfg.model_dump(mode="json"),
                 "evaluate": scoring.model_dump(mode="json")}, cfg.cli())
    if kind == "fewshot":
        cfg = FewShotConfig.load(None, **{**(fewshot or {}), "dataset": dataset or None})
        return {"config": cfg.model_dump(mode="json")}, cfg.cli()
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


NO_PRESET = "none (the defaults)"


def fill_preset(forms: LaunchForms, name: str) -> list:
    """The SFT form's values for a preset (its fields set, the rest at their defaults)."""
    return forms.sft.shown(preset_settings(None if name in (None, NO_PRESET) else name))


def list_versions(engine, request: gr.Request):
    with Session(engine) as s:
        user_of(s, request, RESEARCH_ROLES)
        names = list(s.execute(select(DatasetVersion.name).where(
            DatasetVersion.deleted_at.is_(None)).order_by(DatasetVersion.id)).scalars())
    return gr.update(choices=names, value=names[-1] if names else None)


def show_manifest(engine, name: str, request: gr.Request):
    with Session(engine) as s:
        user_of(s, request, RESEARCH_ROLES)
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


def _validated(forms: LaunchForms, workdir: Path, kind, dataset, grid_path,
               values) -> tuple[dict, str]:
    try:
        return build_config(kind, dataset, grid_path, **forms.split(values), workdir=workdir)
    except (ConfigError, OSError, ValueError) as exc:
        raise gr.Error(str(exc)) from None


def job_memory_gib(engine) -> float | None:
    """What a job may use when it starts: the memory free now plus what the running local
    job holds (it ends before the next one starts; jobs run one at a time)."""
    free = available_gib()
    with Session(engine) as s:
        running = [j for j in job_crud.list_jobs(s)
                   if j.status == "running" and j.executor == "local" and j.pid]
    for job in running:
        try:
            status = Path(f"/proc/{job.pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:") and free is not None:
                free += int(line.split()[1]) * 1024 / 1024 ** 3
    return free


def memory_check(engine, kind: str, config: dict) -> tuple[str, str | None]:
    """An SFT job's memory estimate against what it may use, and (over it) why the launch
    is refused, with settings that fit."""
    if kind != "sft":
        return "", None
    if os.environ.get(ADDRESS_VARIABLE):  # jobs run on the cluster's nodes, not on this host
        return "Memory: not checked here (jobs run on the Ray cluster).", None
    import torch

    from generation.models import resolve_model
    from training.precision import resolve_precision
    from training.sft_config import SFTRunConfig

    cfg = SFTRunConfig.model_validate(config["config"])
    try:
        path = resolve_model(cfg.base_model, cache_dir=cfg.cache_dir).path
    except Exception as exc:  # the launch itself names a model it cannot find
        return f"Memory: not estimated ({exc}).", None
    precision = resolve_precision(cfg.precision, strict=False)
    budget = (torch.cuda.mem_get_info()[0] / 1024 ** 3 if torch.cuda.is_available()
              else job_memory_gib(engine))  # a GPU run's weights and activations are there
    estimated = for_config(cfg, path, precision, available=budget)
    said = f"Memory: {estimated.describe()}."
    if estimated.fits:
        return said, None
    fit = fitting(cfg, path, precision, budget)
    return said, (f"Not launched: the run needs {estimated.total:.1f} GiB and "
                  f"{budget:.1f} GiB is free for it; "
                  + ("settings that fit with the same effective batch: " + ", ".join(
                      f"{name} {value}" for name, value in fit.items()) if fit else
                     "nothing fits on this machine: free memory or run it on a GPU")
                  + ".")


def check(engine, workdir: Path, forms: LaunchForms, request: gr.Request, kind, dataset,
          grid_path, *values):
    """Validate the form; show the equivalent command and the memory estimate."""
    with Session(engine) as s:
        user_of(s, request, RESEARCH_ROLES)
    config, command = _validated(forms, workdir, kind, dataset, grid_path, values)
    said, refused = memory_check(engine, kind, config)
    return (f"Valid. Equivalent command:\n\n```\n{command}\n```"
            + (f"\n\n{refused or said}" if said else ""))


def launch(engine, workdir: Path, forms: LaunchForms, request: gr.Request, kind, dataset,
           grid_path, *values):
    """Validate the form and queue the job (an SFT job whose memory estimate exceeds what
    it may use is refused, with settings that fit)."""
    with Session(engine) as s:
        user = user_of(s, request, RESEARCH_ROLES)
        config, command = _validated(forms, workdir, kind, dataset, grid_path, values)
        _, refused = memory_check(engine, kind, config)
        if refused:
            raise gr.Error(refused)
        job = job_crud.enqueue(s, kind=kind, config=config, command=command, user=user,
                               address=address_of(request))
        return (f"Queued job {job.id}. Equivalent command:\n\n```\n{command}\n```",
                job.id)


def progress_text(run_dir: str | Path | None) -> str:
    """A training run's progress as its ``progress.json`` says: step of steps, tokens/s
    and the time left ('' before its first step)."""
    try:
        p = json.loads((Path(run_dir) / "progress.json").read_text()) if run_dir else None
    except (OSError, ValueError):
        return ""
    if not p:
        return ""
    parts = [f"step {p['step']} / {p['max_steps']}"]
    if p.get("tokens_per_second"):
        parts.append(f"{p['tokens_per_second']:.0f} tok/s")
    eta = p.get("eta_seconds")
    if eta is not None and p["step"] < p["max_steps"]:
        parts.append(f"about {eta // 60} min {eta % 60} s left" if eta >= 60
                     else f"about {eta} s left")
    return " · ".join(parts)


def _error_line(error: str | None) -> str:
    """The line of a job's error the table shows: the reason, when one precedes the log's
    last output (a kill), else the log's last line (an exception's message)."""
    if not error:
        return ""
    lines = error.split("\nlast output:")[0].splitlines()
    return lines[-1] if lines else ""


def list_jobs(engine, request: gr.Request):
    with Session(engine) as s:
        user_of(s, request, RESEARCH_ROLES)
        jobs = job_crud.list_jobs(s)
        run_dirs = dict(s.execute(select(TrainingRun.id, TrainingRun.run_dir).where(
            TrainingRun.id.in_([j.training_run_id for j in jobs if j.training_run_id]))).all())
        rows = [[j.id, j.kind, j.status,
                 progress_text(run_dirs.get(j.training_run_id))
                 if j.status == "running" else "",
                 j.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                 j.training_run_id or "", _error_line(j.error), j.command,
                 j.executor + (f" ({j.external_id})" if j.external_id else "")]
                for j in jobs]
    return rows


def job_log(engine, job_id, request: gr.Request):
    with Session(engine) as s:
        user_of(s, request, RESEARCH_ROLES)
        if not job_id:
            return "Choose a job."
        try:
            job = job_crud.get_job(s, int(job_id))
        except job_crud.JobError as exc:
            raise gr.Error(str(exc)) from None
        head = f"job {job.id}: {job.status}" + (f" — {job.error}" if job.error else "")
        if job.external_id:
            head += f"\n(Ray job {job.external_id})"
        return head + "\n\n" + log_tail(job)


def cancel(engine, job_id, request: gr.Request):
    job = _job_change(engine, job_crud.cancel, job_id, request)
    return f"job {job.id}: {job.status}"


def resume(engine, job_id, request: gr.Request):
    job = _job_change(engine, job_crud.resume, job_id, request)
    return f"Queued job {job.id}, resuming job {job.resumed_from}", job.id


def _job_change(engine, change, job_id, request: gr.Request) -> Job:
    """Cancel or resume a job as the signed-in researcher (audited)."""
    with Session(engine) as s:
        user = user_of(s, request, RESEARCH_ROLES)
        try:
            return change(s, int(job_id or 0), user, address_of(request))
        except job_crud.JobError as exc:
            raise gr.Error(str(exc)) from None


def results(engine, request: gr.Request):
    with Session(engine) as s:
        user_of(s, request, RESEARCH_ROLES)
        rows = []
        for run, result, version in s.execute(
                select(TrainingRun, EvaluationResult, DatasetVersion)
                .join(EvaluationResult, EvaluationResult.training_run_id == TrainingRun.id)
                .join(DatasetVersion, DatasetVersion.id == TrainingRun.dataset_version_id)
                .where(EvaluationResult.split == "test").order_by(TrainingRun.id)):
            m = result.metrics
            rows.append([run.id, run.kind, run.target, result.scoring,
                         run.config.get("train_size") or "",
                         run.config.get("seed", ""), result.n, format_metric(m.get("auroc")),
                         format_metric(m.get("auprc")),
                         f"{version.name} ({version.content_hash[:12]})", run.run_dir])
    return rows


def compare_runs(engine, run_a, run_b, request: gr.Request):
    from training.evaluate import compare
    from training.runs import RunError

    with Session(engine) as s:
        user_of(s, request, RESEARCH_ROLES)
    try:
        r = compare(engine, str(int(run_a or 0)), str(int(run_b or 0)))
    except RunError as exc:
        raise gr.Error(str(exc)) from None
    return (f"Run {r['run_a']['id']} ({r['run_a']['target']}) AUROC {r['auc1']:.3f} vs run "
            f"{r['run_b']['id']} ({r['run_b']['target']}) AUROC {r['auc2']:.3f} on "
            f"{r['n']} patients: difference {r['difference']:+.3f} "
            f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], DeLong p = {r['p_value']:.4g}.")


def grid_figure(engine, workdir: Path, job_id, request: gr.Request):
    with Session(engine) as s:
        user_of(s, request, RESEARCH_ROLES)
        job = s.get(Job, int(job_id or 0))
        if job is None or job.kind != "grid":
            raise gr.Error("Choose a grid job.")
        grid = job.config["config"]
    folder = workdir / grid["runs_dir"] / "experiments" / grid["name"]
    figure = folder / "auroc_by_size.png"
    if not figure.exists():
        raise gr.Error(f"job {job_id} has no figure yet ({figure})")
    return str(figure.resolve()), (folder / "results.md").read_text()


def _launch_layout() -> SimpleNamespace:
    c = SimpleNamespace(forms=launch_forms())
    with gr.Row():
        c.version = gr.Dropdown(label="Dataset version", choices=[], allow_custom_value=True)
        c.versions_btn = gr.Button("Refresh versions")
    c.manifest = gr.Markdown()
    gr.Markdown("### Launch")
    with gr.Row():
        c.kind = gr.Radio(["sft", "fewshot", "grid"], value="sft", label="Kind")
        c.grid_path = gr.Textbox(label="Grid YAML (file in the server's experiments/ folder)")
    c.preset = gr.Dropdown([NO_PRESET, *PRESETS], value=NO_PRESET, label="Preset",
                           info="fills the SFT form below: " + described(),
                           elem_id="runs_preset")
    # Every option of the CLI's configs; a blank field takes the config's default.
    with gr.Accordion("Advanced: every setting of the SFT run (rationale-audit train sft)",
                      open=False):
        c.forms.sft.render()
    with gr.Accordion("Scoring of the SFT run (rationale-audit evaluate run)", open=False):
        c.forms.evaluate.render()
    with gr.Accordion("Few-shot run (rationale-audit train fewshot)", open=False):
        c.forms.fewshot.render()
    with gr.Row():
        c.check_btn = gr.Button("Check")
        c.launch_btn = gr.Button("Launch", variant="primary", elem_id="runs_launch_btn")
    c.launch_md = gr.Markdown()
    return c


def _jobs_layout(c: SimpleNamespace) -> None:
    gr.Markdown("### Jobs")
    c.jobs_table = gr.Dataframe(headers=["job", "kind", "status", "progress", "created", "run",
                                         "error", "command", "runs on"], interactive=False,
                                elem_id="runs_jobs_table")
    with gr.Row():
        c.job_id = gr.Number(label="Job", precision=0)
        c.log_btn = gr.Button("Show log")
        c.cancel_btn = gr.Button("Cancel job", variant="stop")
        c.resume_btn = gr.Button("Resume job")
    c.job_md = gr.Markdown()
    c.log_box = gr.Textbox(label="Log (last lines)", lines=12, max_lines=20)
    c.timer = gr.Timer(2.0, active=False)  # started when the tab is opened


def _results_layout(c: SimpleNamespace) -> None:
    gr.Markdown("### Results (test split)")
    c.results_btn = gr.Button("Refresh results")
    c.results_table = gr.Dataframe(headers=["run", "kind", "target", "scoring", "size", "seed",
                                            "n",
                                            "AUROC [95% CI]", "AUPRC [95% CI]",
                                            "dataset version", "run folder"], interactive=False)
    with gr.Row():
        c.run_a = gr.Number(label="Run A", precision=0)
        c.run_b = gr.Number(label="Run B", precision=0)
        c.compare_btn = gr.Button("Compare (DeLong)")
    c.compare_md = gr.Markdown()
    with gr.Row():
        c.figure_btn = gr.Button("Show grid figure for the job above")
    c.figure = gr.Image(label="AUROC by target and size", type="filepath")
    c.grid_md = gr.Markdown()


def _wire(tab: gr.Tab, c: SimpleNamespace, engine, workdir: Path) -> None:
    form = [c.kind, c.version, c.grid_path, *(x for f in c.forms for x in f.components)]
    versions = bound(list_versions, engine)
    tab.select(versions, None, c.version, api_name="runs_versions")
    tab.select(lambda: gr.Timer(active=True), None, c.timer, api_name=False)
    c.versions_btn.click(versions, None, c.version, api_name="runs_versions_refresh")
    c.version.change(bound(show_manifest, engine), c.version, c.manifest,
                     api_name="runs_manifest")
    c.preset.change(bound(fill_preset, c.forms), c.preset, c.forms.sft.components,
                    api_name="runs_preset")
    c.check_btn.click(bound(check, engine, workdir, c.forms), form, c.launch_md,
                      api_name="runs_check")
    c.launch_btn.click(bound(launch, engine, workdir, c.forms), form, [c.launch_md, c.job_id],
                       api_name="runs_launch")
    jobs = bound(list_jobs, engine)
    c.timer.tick(jobs, None, c.jobs_table, api_name="runs_jobs_tick", show_progress="hidden")
    log = bound(job_log, engine)
    c.log_btn.click(log, c.job_id, c.log_box, api_name="runs_log")
    c.timer.tick(log, c.job_id, c.log_box, api_name="runs_log_tick", show_progress="hidden")
    c.cancel_btn.click(bound(cancel, engine), c.job_id, c.job_md, api_name="runs_cancel")
    c.resume_btn.click(bound(resume, engine), c.job_id, [c.job_md, c.job_id],
                       api_name="runs_resume")
    c.results_btn.click(bound(results, engine), None, c.results_table, api_name="runs_results")
    c.compare_btn.click(bound(compare_runs, engine), [c.run_a, c.run_b], c.compare_md,
                        api_name="runs_compare")
    c.figure_btn.click(bound(grid_figure, engine, workdir), c.job_id, [c.figure, c.grid_md],
                       api_name="runs_figure")
    gr.on([c.launch_btn.click], jobs, None, c.jobs_table, api_name="runs_jobs")


def runs_tab(engine, workdir: str | Path | None = None) -> gr.Tab:
    """Build the tab (hidden until a role allows) inside the current Blocks; wire it.

    ``workdir`` is where the job runner starts jobs (relative run folders live there)."""
    workdir = Path(workdir or Path.cwd()).resolve()
    with gr.Tab("Runs", visible=False, id="runs") as tab:
        c = _launch_layout()
        _jobs_layout(c)
        _results_layout(c)
    _wire(tab, c, engine, workdir)
    return tab
