"""The Gradio app: Annotate (every rater), Adjudicate (adjudicators, admins), Admin (admins).

    rationale-audit serve --host 127.0.0.1 --port 7860

Login checks the database (argon2 hashes). Every handler takes the user from
``gr.Request.username`` and re-checks ownership and role on the server: an assignment id sent
by a browser is only a request, never a permission. Every rating is committed the moment it
is submitted. Model and prompt identities, other raters' scores and (by campaign setting) the
automatic grounding results are never shown to annotators.
"""

import time

import gradio as gr
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import adjudication, campaigns
from annotation_db.cohorts import patient_record
from annotation_db.models import Assignment, Campaign, Patient, Rationale, User
from annotation_db.users import authenticate
from app.runs_ui import runs_tab
from app.views import (
    CSS,
    KEYBOARD_JS,
    evidence_line,
    grounding_summary,
    history_html,
    load_guidelines,
    rationale_html,
    rubric_choices,
)

FLAG_KEYS = campaigns.FLAGS
EXPORT_POLICY_TEMPLATE = """\
campaigns: [pilot]
min_ratings: 2
min_accuracy: 4
min_faithfulness: 4
aggregate: mean          # or: each
blocking_flags: [hallucinated_fact, unsafe_or_misleading, label_contradicts_record]
adjudication_overrides: true
min_gold_accuracy: 0.5   # raters who catch fewer gold items are left out
include_simulated: false
"""


def build_app(engine, workdir: str | None = None) -> gr.Blocks:
    guidelines = load_guidelines()

    def user_of(session: Session, request: gr.Request, roles: tuple[str, ...] = ()) -> User:
        name = getattr(request, "username", None)
        user = session.execute(select(User).where(User.username == name)).scalars().first()
        if user is None or not user.active:
            raise gr.Error("Please log in again.")
        if roles and user.role not in roles:
            raise gr.Error("Your role does not allow this.")
        return user

    def campaign_of(session: Session, name: str | None) -> Campaign:
        if not name:
            raise gr.Error("Choose a campaign first.")
        try:
            return campaigns.get_campaign(session, name)
        except campaigns.CampaignError as exc:
            raise gr.Error(str(exc)) from None

    # --- shared loading ------------------------------------------------------------

    def list_my_campaigns(request: gr.Request):
        with Session(engine) as s:
            user = user_of(s, request)
            if user.role in ("annotator", "researcher"):
                names = list(s.execute(select(Campaign.name).join(
                    Assignment, Assignment.campaign_id == Campaign.id)
                    .where(Assignment.user_id == user.id).distinct()).scalars())
            else:
                names = list(s.execute(select(Campaign.name).order_by(Campaign.id)).scalars())
            role = user.role
        names = sorted(names)
        return (gr.update(choices=names, value=names[0] if names else None),
                f"Signed in as **{request.username}** ({role})",
                gr.update(visible=role in ("adjudicator", "admin")),
                gr.update(visible=role == "admin"),
                gr.update(visible=role in ("admin", "researcher")))

    def _item_outputs(s: Session, campaign: Campaign, user: User, assignment: Assignment | None,
                      note: str = ""):
        done = campaigns.progress(s, campaign.id, user.id)
        progress = f"**{done.done} / {done.assigned}** done" + (f" · {note}" if note else "")
        empty = (None, None, "", "", "", progress, "", gr.update(value=None),
                 gr.update(value=None), [], "", "", "", "")
        if assignment is None:
            return (*empty[:2], "<p>Your queue is empty. Thank you!</p>", *empty[3:])
        rationale = s.get(Rationale, assignment.rationale_id)
        record = patient_record(s, s.get(Patient, rationale.patient_id))
        ids = {item["id"] for item in record["items"]}
        label = "will" if rationale.predicted_label else "will not"
        grounding = "" if campaign.blind_grounding else grounding_summary(rationale.grounding)
        return (assignment.id, time.time(), history_html(record, rationale.cited_evidence_ids),
                rationale_html(rationale.text, rationale.steps, ids),
                f"**Predicted:** the patient {label} be diagnosed with ADRD within five years.",
                progress, grounding, gr.update(value=None), gr.update(value=None), [], "", "",
                "", "")

    def load_next(campaign_name: str, request: gr.Request):
        with Session(engine) as s:
            user = user_of(s, request)
            campaign = campaign_of(s, campaign_name)
            return _item_outputs(s, campaign, user, campaigns.next_assignment(s, campaign, user))

    def submit_scores(campaign_name: str, assignment_id, accuracy, faithfulness, flags,
                      comment: str, started, request: gr.Request):
        if assignment_id is None:
            raise gr.Error("There is no item to submit.")
        if accuracy is None or faithfulness is None:
            raise gr.Error("Score both medical accuracy and faithfulness (keys 1–5).")
        with Session(engine) as s:
            user = user_of(s, request)
            campaign = campaign_of(s, campaign_name)
            seconds = max(0.0, time.time() - float(started)) if started else None
            try:
                campaigns.submit(s, assignment_id=int(assignment_id), user=user,
                                 accuracy=int(accuracy), faithfulness=int(faithfulness),
                                 flags=list(flags or []), comment=comment or "",
                                 seconds_on_task=seconds)
            except (campaigns.NotYours, campaigns.CampaignError) as exc:
                raise gr.Error(str(exc)) from None
            return _item_outputs(s, campaign, user, campaigns.next_assignment(s, campaign, user),
                                 note="saved")

    def skip_item(campaign_name: str, assignment_id, reason: str, request: gr.Request):
        if assignment_id is None:
            raise gr.Error("There is no item to skip.")
        with Session(engine) as s:
            user = user_of(s, request)
            campaign = campaign_of(s, campaign_name)
            try:
                campaigns.skip(s, assignment_id=int(assignment_id), user=user,
                               reason=reason or "")
            except (campaigns.NotYours, campaigns.CampaignError) as exc:
                raise gr.Error(str(exc)) from None
            return _item_outputs(s, campaign, user, campaigns.next_assignment(s, campaign, user),
                                 note="skipped")

    def show_evidence(assignment_id, evidence_id: str, request: gr.Request):
        if assignment_id is None or not evidence_id:
            return ""
        with Session(engine) as s:
            user = user_of(s, request)
            try:
                assignment = campaigns.own_assignment(s, int(assignment_id), user)
            except campaigns.NotYours as exc:
                raise gr.Error(str(exc)) from None
            rationale = s.get(Rationale, assignment.rationale_id)
            return evidence_line(patient_record(s, s.get(Patient, rationale.patient_id)),
                                 evidence_id)

    def my_ratings(campaign_name: str, request: gr.Request):
        with Session(engine) as s:
            user = user_of(s, request)
            rows = campaigns.my_history(s, campaign_of(s, campaign_name), user)
        return [[r["assignment_id"], r["revision"], r["accuracy"], r["faithfulness"],
                 ", ".join(r["flags"]), r["comment"]] for r in rows]

    def open_for_revision(campaign_name: str, assignment_id, request: gr.Request):
        with Session(engine) as s:
            user = user_of(s, request)
            campaign = campaign_of(s, campaign_name)
            try:
                assignment = campaigns.own_assignment(s, int(assignment_id), user)
            except (campaigns.NotYours, TypeError, ValueError):
                raise gr.Error("That item is not in your queue.") from None
            if assignment.status != "submitted":
                raise gr.Error("Only submitted items can be revised.")
            return _item_outputs(s, campaign, user, assignment, note="revising")

    # --- adjudication and admin -------------------------------------------------------

    def adjudication_queue(campaign_name: str, request: gr.Request):
        with Session(engine) as s:
            user_of(s, request, ("adjudicator", "admin"))
            items = adjudication.queue(s, campaign_of(s, campaign_name))
        return [[i["rationale_id"], i["max_range"], ", ".join(i["split_flags"]),
                 "; ".join(f"{r['rater']}: A{r['accuracy']} F{r['faithfulness']}"
                           + (f" [{', '.join(r['flags'])}]" if r["flags"] else "")
                           for r in i["ratings"])] for i in items]

    def load_disputed(campaign_name: str, rationale_id, request: gr.Request):
        with Session(engine) as s:
            user_of(s, request, ("adjudicator", "admin"))
            campaign = campaign_of(s, campaign_name)
            rationale = s.get(Rationale, int(rationale_id)) if rationale_id else None
            if rationale is None:
                raise gr.Error("Choose an item from the queue.")
            record = patient_record(s, s.get(Patient, rationale.patient_id))
            ratings = adjudication.latest_ratings(s, campaign.id).get(rationale.id, [])
        ids = {item["id"] for item in record["items"]}
        table = [[r["rater"], r["accuracy"], r["faithfulness"], ", ".join(r["flags"]),
                  r["comment"]] for r in ratings]
        return (history_html(record, rationale.cited_evidence_ids),
                rationale_html(rationale.text, rationale.steps, ids), table)

    def adjudicate(campaign_name: str, rationale_id, decision: str, accuracy, faithfulness,
                   flags, reason: str, request: gr.Request):
        with Session(engine) as s:
            user = user_of(s, request, ("adjudicator", "admin"))
            campaign = campaign_of(s, campaign_name)
            try:
                adjudication.decide(s, campaign=campaign, rationale_id=int(rationale_id),
                                    adjudicator=user, decision=decision,
                                    accuracy=int(accuracy) if accuracy else None,
                                    faithfulness=int(faithfulness) if faithfulness else None,
                                    flags=list(flags or []), reason=reason or "")
            except (PermissionError, ValueError, TypeError) as exc:
                raise gr.Error(str(exc)) from None
        return adjudication_queue(campaign_name, request)

    def campaign_summary(campaign_name: str, request: gr.Request):
        from annotation_db.agreement import agreement_report
        from annotation_db.ratings import default_dimensions, load_campaign_ratings

        with Session(engine) as s:
            user_of(s, request, ("admin",))
            campaign = campaign_of(s, campaign_name)
            state = campaigns.status(s, campaign)
            ratings, gold, _ = load_campaign_ratings(s, campaign.name, include_simulated=True)
        gold_acc = {}
        lines = [f"**{state['items']} items**, k = {state['k']}"]
        if ratings:
            report = agreement_report(ratings, default_dimensions({r.dimension for r in ratings}),
                                      replicates=200, seed=0, gold_items=gold)
            gold_acc = {g["rater"]: g["accuracy"] for g in report["gold_accuracy"]}
            for section in report["dimensions"][:2]:
                alpha = section["alpha"]
                lines.append(f"- {section['dimension']}: α = {alpha['alpha']:.3f} "
                             f"[{alpha['ci95'][0]:.3f}, {alpha['ci95'][1]:.3f}]"
                             if alpha.get("computable") and "ci95" in alpha else
                             f"- {section['dimension']}: α not computable "
                             f"({alpha.get('reason', section.get('reason'))})")
        table = [[name, a["done"], a["assigned"], a["skipped"], a["mean_seconds"],
                  gold_acc.get(name)] for name, a in state["annotators"].items()]
        return "\n".join(lines), table

    def export_preview(policy_text: str, request: gr.Request):
        from annotation_db import export

        with Session(engine) as s:
            user_of(s, request, ("admin",))
            try:
                result = export.preview(s, export.ApprovalPolicy.from_text(policy_text or ""))
            except export.ExportError as exc:
                raise gr.Error(str(exc)) from None
        return (f"{result['approved']} of {result['rationales']} rationales pass; failing: "
                + (", ".join(f"{k} {v}" for k, v in result["failing_by_criterion"].items())
                   or "none"))

    def export_create(policy_text: str, name: str, request: gr.Request):
        from annotation_db import export
        from generation.models import history_counter

        with Session(engine) as s:
            admin = user_of(s, request, ("admin",))
            try:
                version = export.create(s, name=(name or "").strip(), policy_text=policy_text,
                                        created_by=admin.id, counter_for=history_counter)
            except export.ExportError as exc:
                raise gr.Error(str(exc)) from None
        return f"Published {version.name}: sha256 {version.content_hash} → {version.path}"

    # --- layout ---------------------------------------------------------------------------

    with gr.Blocks(title="Rationale Audit") as demo:
        with gr.Row():
            who_md = gr.Markdown()
            campaign_dd = gr.Dropdown(label="Campaign", choices=[], elem_id="campaign_dd",
                                      allow_custom_value=True)  # checked on the server
        started_state = gr.State(None)
        with gr.Tab("Annotate"):
            with gr.Row():
                progress_md = gr.Markdown(elem_id="progress_md")
                # The item's number: shown so raters can refer to it; ownership is checked
                # on the server whatever number a browser sends back.
                assignment_state = gr.Number(label="Item", precision=0, interactive=False,
                                             elem_id="item_number", scale=0)
            with gr.Row():
                with gr.Column(scale=3):
                    gr.Markdown("### Patient record (cited items highlighted)")
                    history_view = gr.HTML(elem_id="history_view")
                with gr.Column(scale=2):
                    gr.Markdown("### Rationale")
                    rationale_view = gr.HTML(elem_id="rationale_view")
                    label_md = gr.Markdown(elem_id="label_md")
                    grounding_md = gr.Markdown()
                    with gr.Row():
                        evidence_box = gr.Textbox(label="Evidence id (click one in the text)",
                                                  elem_id="evidence_box", scale=1)
                        show_evidence_btn = gr.Button("Show item", elem_id="show_evidence_btn",
                                                      scale=0)
                    evidence_out = gr.Textbox(label="Record item", interactive=False)
                    accuracy_radio = gr.Radio(
                        rubric_choices(guidelines, "accuracy"), label="Medical accuracy",
                        info=guidelines["dimensions"]["accuracy"]["question"],
                        elem_id="accuracy_radio")
                    faithfulness_radio = gr.Radio(
                        rubric_choices(guidelines, "faithfulness"),
                        label="Faithfulness to this patient's record",
                        info=guidelines["dimensions"]["faithfulness"]["question"],
                        elem_id="faithfulness_radio")
                    flags_box = gr.CheckboxGroup([(guidelines["flags"][k], k) for k in FLAG_KEYS],
                                                 label="Flags", elem_id="flags_box")
                    comment_box = gr.Textbox(label="Comment", lines=2, elem_id="comment_box")
                    with gr.Row():
                        submit_btn = gr.Button("Submit (Enter)", variant="primary",
                                               elem_id="submit_btn")
                        skip_reason = gr.Textbox(label="Skip reason", elem_id="skip_reason",
                                                 scale=2)
                        skip_btn = gr.Button("Skip (s)", elem_id="skip_btn")
                    gr.Markdown(
                        "Keys: **1–5** score the highlighted dimension, **↑/↓** switch dimension, "
                        "**Enter** submits, **s** skips. Keys are ignored while you type.")
            with gr.Accordion(f"Guidelines v{guidelines['version']}", open=False):
                gr.Markdown("\n".join(
                    f"**{d['title']}** — {d['question']}\n\n" + "\n".join(
                        f"- {k}: {v}" for k, v in d["anchors"].items())
                    for d in guidelines["dimensions"].values()))
            with gr.Accordion("My ratings (revise)", open=False):
                mine_btn = gr.Button("Show my ratings")
                mine_table = gr.Dataframe(headers=["item", "revision", "accuracy",
                                                   "faithfulness", "flags", "comment"],
                                          interactive=False)
                revise_id = gr.Number(label="Item to revise", precision=0)
                revise_btn = gr.Button("Open for revision")
        with gr.Tab("Adjudicate", visible=False) as adjudicate_tab:
            queue_btn = gr.Button("Refresh queue")
            queue_table = gr.Dataframe(headers=["item", "largest range", "split flags",
                                                "ratings"], interactive=False)
            disputed_id = gr.Number(label="Item", precision=0)
            load_disputed_btn = gr.Button("Load item")
            with gr.Row():
                disputed_history = gr.HTML()
                disputed_rationale = gr.HTML()
            disputed_ratings = gr.Dataframe(headers=["rater", "accuracy", "faithfulness",
                                                     "flags", "comment"], interactive=False)
            decision_radio = gr.Radio(["approve", "reject"], label="Decision")
            final_accuracy = gr.Radio([1, 2, 3, 4, 5], label="Final medical accuracy")
            final_faithfulness = gr.Radio([1, 2, 3, 4, 5], label="Final faithfulness")
            final_flags = gr.CheckboxGroup(list(FLAG_KEYS), label="Final flags")
            decision_reason = gr.Textbox(label="Reason (required)")
            decide_btn = gr.Button("Record decision", variant="primary")
        with gr.Tab("Admin", visible=False) as admin_tab:
            summary_btn = gr.Button("Refresh")
            summary_md = gr.Markdown()
            summary_table = gr.Dataframe(headers=["annotator", "done", "assigned", "skipped",
                                                  "mean seconds", "gold accuracy"],
                                         interactive=False)
            gr.Markdown("### Export a verified dataset version (same code as `export create`)")
            policy_box = gr.Code(EXPORT_POLICY_TEMPLATE, language="yaml", label="Approval policy")
            version_name = gr.Textbox(label="Version name")
            with gr.Row():
                preview_btn = gr.Button("Preview")
                export_btn = gr.Button("Create version", variant="primary")
            export_md = gr.Markdown()

        runs = runs_tab(engine, user_of, workdir)

        item_outputs = [assignment_state, started_state, history_view, rationale_view, label_md,
                        progress_md, grounding_md, accuracy_radio, faithfulness_radio, flags_box,
                        comment_box, skip_reason, evidence_box, evidence_out]
        demo.load(list_my_campaigns, None, [campaign_dd, who_md, adjudicate_tab, admin_tab, runs],
                  api_name="list_my_campaigns")
        # The annotator's hot path skips Gradio's queue (a direct request per event): each
        # handler is a few milliseconds of database work, and the queue's per-event overhead
        # would dominate the submit → next-item latency.
        fast = {"queue": False, "show_progress": "hidden"}
        campaign_dd.change(load_next, campaign_dd, item_outputs, api_name="load_next", **fast)
        submit_btn.click(submit_scores, [campaign_dd, assignment_state, accuracy_radio,
                                         faithfulness_radio, flags_box, comment_box,
                                         started_state], item_outputs, api_name="submit_scores",
                         **fast)
        skip_btn.click(skip_item, [campaign_dd, assignment_state, skip_reason], item_outputs,
                       api_name="skip_item", **fast)
        show_evidence_btn.click(show_evidence, [assignment_state, evidence_box], evidence_out,
                                api_name="show_evidence", **fast)
        mine_btn.click(my_ratings, campaign_dd, mine_table, api_name="my_ratings")
        revise_btn.click(open_for_revision, [campaign_dd, revise_id], item_outputs,
                         api_name="open_for_revision")
        queue_btn.click(adjudication_queue, campaign_dd, queue_table,
                        api_name="adjudication_queue")
        load_disputed_btn.click(load_disputed, [campaign_dd, disputed_id],
                                [disputed_history, disputed_rationale, disputed_ratings],
                                api_name="load_disputed")
        decide_btn.click(adjudicate, [campaign_dd, disputed_id, decision_radio, final_accuracy,
                                      final_faithfulness, final_flags, decision_reason],
                         queue_table, api_name="adjudicate")
        summary_btn.click(campaign_summary, campaign_dd, [summary_md, summary_table],
                          api_name="campaign_summary")
        preview_btn.click(export_preview, policy_box, export_md, api_name="export_preview")
        export_btn.click(export_create, [policy_box, version_name], export_md,
                         api_name="export_create")
    demo.queue(default_concurrency_limit=16)
    return demo


def auth_checker(engine):
    def check(username: str, password: str) -> bool:
        with Session(engine) as s:
            return authenticate(s, username, password) is not None

    return check


def launch(engine, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
           jobs_dir: str = "jobs", workdir: str | None = None):
    """Serve the app and its background job runner (training jobs from the Runs screen)."""
    from app.jobs import JobRunner

    runner = JobRunner(engine, jobs_dir, workdir=workdir)
    runner.start()  # first marks jobs a previous app left "running" as failed
    demo = build_app(engine, str(runner.workdir))
    demo.job_runner = runner
    demo.launch(server_name=host, server_port=port, auth=auth_checker(engine),
                auth_message="Rationale Audit — sign in with your account",
                prevent_thread_lock=not block, css=CSS, head=KEYBOARD_JS, quiet=not block,
                footer_links=[])
    return demo
