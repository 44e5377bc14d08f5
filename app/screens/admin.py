"""The Admin screen: a campaign's progress, agreement and gold accuracy, and publishing a
verified dataset version (the same code as `rationale-audit export create`)."""

import gradio as gr
from sqlmodel import Session

from annotation_db import campaigns
from annotation_db.export import ApprovalPolicy
from app.auth import ADMIN_ROLES, address_of, bound, campaign_of, user_of

POLICY_TEMPLATE = ApprovalPolicy(campaigns=["pilot"]).to_yaml()


def campaign_summary(engine, campaign_name: str, request: gr.Request):
    from annotation_db.agreement import agreement_report
    from annotation_db.ratings import default_dimensions, load_campaign_ratings

    with Session(engine) as s:
        user_of(s, request, ADMIN_ROLES)
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


def admin_figures(engine, campaign_name: str, request: gr.Request):
    """The campaign in pictures; drawn when the tab opens or the campaign changes."""
    from annotation_db.campaign_figures import campaign_figures

    with Session(engine) as s:
        user_of(s, request, ADMIN_ROLES)
        if not campaign_name:
            return ("Choose a campaign.", *[gr.update(value=None)] * 5)
        figures = campaign_figures(s, campaign_of(s, campaign_name))
    note = (f"{figures['ratings']} ratings so far (simulated ones included)."
            + ("" if figures["judge"] is not None else
               " No judge has run on this campaign (`rationale-audit judge run`)."))
    return (note, figures["progress"], figures["alpha"], figures["leniency"], figures["gold"],
            gr.update(value=figures["judge"], visible=figures["judge"] is not None))


def budget_plan(engine, campaign_name: str, target: float, request: gr.Request):
    """`campaign plan` for the chosen campaign (simulated ratings included, as above)."""
    from annotation_db.planner import PlanError, campaign_plan

    with Session(engine) as s:
        user_of(s, request, ADMIN_ROLES)
        campaign = campaign_of(s, campaign_name)
        try:
            result = campaign_plan(s, campaign.name, target_width=float(target),
                                   raters=[2, 3, 4], include_simulated=True)
        except PlanError as exc:
            raise gr.Error(str(exc)) from None
    lines = [f"To bring α's 95% CI to a width of {target} on both dimensions "
             f"({result['seconds_source']} seconds per rating):", "",
             "| raters per item | items | more ratings | clinician hours more |",
             "|---|---|---|---|"]
    for row in result["options"]:
        hours = "—" if row["hours_more"] is None else f"{row['hours_more']:.1f}"
        lines.append(f"| {row['raters_per_item']} | {row['items']} | {row['more_ratings']} | "
                     f"{hours} |")
    return "\n".join(lines)


def export_preview(engine, policy_text: str, request: gr.Request):
    from annotation_db import export

    with Session(engine) as s:
        user_of(s, request, ADMIN_ROLES)
        try:
            result = export.preview(s, export.ApprovalPolicy.from_text(policy_text or ""))
        except export.ExportError as exc:
            raise gr.Error(str(exc)) from None
    return (f"{result['approved']} of {result['rationales']} rationales pass; failing: "
            + (", ".join(f"{k} {v}" for k, v in result["failing_by_criterion"].items())
               or "none"))


def export_create(engine, policy_text: str, name: str, request: gr.Request):
    from annotation_db import export
    from generation.models import history_counter

    with Session(engine) as s:
        admin = user_of(s, request, ADMIN_ROLES)
        try:
            version = export.create(s, name=(name or "").strip(), policy_text=policy_text,
                                    created_by=admin.id, counter_for=history_counter,
                                    actor=admin.username, address=address_of(request))
        except export.ExportError as exc:
            raise gr.Error(str(exc)) from None
    return f"Published {version.name}: sha256 {version.content_hash} → {version.path}"


def audit_events(engine, request: gr.Request):
    """The newest audit events (admins only): sign-ins, account changes, campaigns,
    adjudications, exports, jobs."""
    from annotation_db import audit

    with Session(engine) as s:
        user_of(s, request, ADMIN_ROLES)
        return [[e.at.strftime("%Y-%m-%d %H:%M:%S"), e.action, e.actor or "", e.address or "",
                 e.target or "", ", ".join(f"{k}={v}" for k, v in e.detail.items())]
                for e in audit.list_events(s, limit=AUDIT_ROWS)]


AUDIT_ROWS = 50


def admin_tab(engine, campaign_dd) -> gr.Tab:
    """Build the tab (hidden until a role allows) inside the current Blocks; wire it."""
    with gr.Tab("Admin", visible=False) as tab:
        summary_btn = gr.Button("Refresh")
        summary_md = gr.Markdown()
        summary_table = gr.Dataframe(headers=["annotator", "done", "assigned", "skipped",
                                              "mean seconds", "gold accuracy"],
                                     interactive=False)
        figures_md = gr.Markdown(elem_id="admin_figures_note")
        with gr.Row():
            progress_plot = gr.Plot(label="Progress", elem_id="admin_progress")
            alpha_plot = gr.Plot(label="Agreement", elem_id="admin_alpha")
        with gr.Row():
            leniency_plot = gr.Plot(label="Leniency", elem_id="admin_leniency")
            gold_plot = gr.Plot(label="Gold items", elem_id="admin_gold")
        judge_plot = gr.Plot(label="Judge vs panel", elem_id="admin_judge", visible=False)
        gr.Markdown("### How many more ratings (same code as `campaign plan`)")
        with gr.Row():
            target_box = gr.Number(0.1, label="Target width of α's 95% CI", minimum=0.01,
                                   maximum=1.9)
            plan_btn = gr.Button("Plan")
        plan_md = gr.Markdown()
        gr.Markdown("### Export a verified dataset version (same code as `export create`)")
        policy_box = gr.Code(POLICY_TEMPLATE, language="yaml", label="Approval policy")
        version_name = gr.Textbox(label="Version name", max_length=64,
                                  info="1–64 letters, digits, '-', '_' or '.', not starting "
                                       "with a dot; never reused")
        with gr.Row():
            preview_btn = gr.Button("Preview")
            export_btn = gr.Button("Create version", variant="primary")
        export_md = gr.Markdown()
        gr.Markdown(f"### Audit trail (newest {AUDIT_ROWS}; all: `rationale-audit audit list`)")
        audit_btn = gr.Button("Refresh audit trail")
        audit_table = gr.Dataframe(headers=["when (UTC)", "action", "actor", "address",
                                            "target", "detail"], interactive=False)
    figures = [figures_md, progress_plot, alpha_plot, leniency_plot, gold_plot, judge_plot]
    tab.select(bound(admin_figures, engine), campaign_dd, figures, api_name="admin_figures")
    plan_btn.click(bound(budget_plan, engine), [campaign_dd, target_box], plan_md,
                   api_name="budget_plan")
    audit_btn.click(bound(audit_events, engine), None, audit_table, api_name="audit_events")
    summary_btn.click(bound(campaign_summary, engine), campaign_dd, [summary_md, summary_table],
                      api_name="campaign_summary")
    preview_btn.click(bound(export_preview, engine), policy_box, export_md,
                      api_name="export_preview")
    export_btn.click(bound(export_create, engine), [policy_box, version_name], export_md,
                     api_name="export_create")
    return tab
