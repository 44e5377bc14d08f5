"""The Admin screen: a campaign's progress, agreement and gold accuracy (its figures and
tables follow the campaign chosen at the top, and its HTML agreement report downloads
from here), the faithfulness measured by evidence ablation and the campaign's estimates
with its judge (never shown to annotators), publishing a verified dataset version (the
same code as `rationale-audit export create`), and accounts (the same code as
`rationale-audit users`, audited with the admin as actor)."""

import re
import tempfile
from pathlib import Path

import gradio as gr
from sqlmodel import Session

from annotation_db import campaigns, users
from annotation_db.export import ApprovalPolicy, ExportError
from annotation_db.models import Role
from app.auth import ADMIN_ROLES, address_of, bound, campaign_of, user_of

REPORT_REPLICATES = 1000  # bootstrap resamples, as `agreement report` by default
USER_HEADERS = ["username", "role", "active", "created"]


def default_policy(campaign_name: str | None) -> str:
    """The approval policy an export starts from: the defaults, for the chosen campaign."""
    return ApprovalPolicy(campaigns=[campaign_name or "CAMPAIGN"]).to_yaml()


def _untouched(policy_text: str | None) -> bool:
    """Whether the policy on screen is still a default one (blank, or the defaults for
    one campaign), so that choosing another campaign may replace it; edits are kept."""
    if not (policy_text or "").strip():
        return True
    try:
        policy = ApprovalPolicy.from_text(policy_text)
    except ExportError:
        return False
    return (len(policy.campaigns) == 1
            and policy_text.strip() == default_policy(policy.campaigns[0]).strip())


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


def _demoted(markdown: str) -> str:
    """A report's headings two levels down, under the tab's own."""
    return re.sub(r"^(#+) ", r"\1## ", markdown, flags=re.MULTILINE)


def measured_faithfulness(engine, campaign_name: str, request: gr.Request):
    """`faithfulness report` for the campaign's generation runs and `judge estimate` for its
    newest judge run (simulated ratings included, as above); never shown to annotators."""
    from annotation_db.faithfulness import FaithfulnessError, runs_for
    from annotation_db.faithfulness_report import report, to_markdown
    from annotation_db.judge_estimates import estimates
    from annotation_db.judge_estimates import to_markdown as estimates_markdown

    parts = []
    with Session(engine) as s:
        user_of(s, request, ADMIN_ROLES)
        campaign = campaign_of(s, campaign_name)
        found = runs_for(s, set((campaign.settings or {}).get("runs", [])))
        for run in found:
            try:
                text = to_markdown(report(s, run_id=run.id, campaign=campaign.name,
                                          include_simulated=True, replicates=200))
            except FaithfulnessError as exc:
                text = str(exc)
            parts.append(_demoted(text))
        if not found:
            parts.append("No evidence ablation of this campaign's rationales yet: "
                         "`rationale-audit faithfulness run --run GENERATION_RUN`.")
        try:
            parts.append(_demoted(estimates_markdown(estimates(s, campaign.name,
                                                               include_simulated=True))))
        except campaigns.CampaignError as exc:
            parts.append(f"No estimates with a judge: {exc}.")
    return "\n\n".join(parts)


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


def admin_follow(engine, campaign_name: str, policy_text: str, request: gr.Request):
    """Everything on the screen that belongs to a campaign, for the one now chosen: the
    summary, the figures and (unless edited) the export policy. Everyone's campaign
    choice triggers it; only admins get anything back."""
    with Session(engine) as s:
        if user_of(s, request).role not in ADMIN_ROLES:
            return [gr.skip()] * 9
    if not campaign_name:
        return ("", [], *admin_figures(engine, campaign_name, request), gr.skip())
    summary = campaign_summary(engine, campaign_name, request)
    figures = admin_figures(engine, campaign_name, request)
    policy = default_policy(campaign_name) if _untouched(policy_text) else gr.skip()
    return (*summary, *figures, policy)


def agreement_report_file(engine, campaign_name: str, include_simulated: bool,
                          request: gr.Request) -> str:
    """The campaign's HTML agreement report (as `agreement report --format html`), as a
    file to download."""
    from annotation_db.agreement import agreement_report
    from annotation_db.agreement_report import to_html
    from annotation_db.ratings import default_dimensions, load_campaign_ratings

    with Session(engine) as s:
        user_of(s, request, ADMIN_ROLES)
        campaign = campaign_of(s, campaign_name)
        ratings, gold, design = load_campaign_ratings(s, campaign.name,
                                                      include_simulated=bool(include_simulated))
    if not ratings:
        raise gr.Error(f"campaign {campaign.name!r} has no submitted ratings yet"
                       + ("" if include_simulated else " (simulated ratings are left out; "
                          "tick “include simulated raters”)"))
    result = agreement_report(ratings, default_dimensions({r.dimension for r in ratings}),
                              replicates=REPORT_REPLICATES, seed=0, gold_items=gold,
                              design=design)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", campaign.name).strip("._") or "campaign"
    path = Path(tempfile.mkdtemp(prefix="agreement-")) / f"agreement-{stem}.html"
    path.write_text(to_html(result, f"Agreement report: campaign {campaign.name}"),
                    encoding="utf-8")
    return str(path)


def _user_rows(s: Session) -> list[list]:
    return [[u.username, u.role, "yes" if u.active else "no",
             u.created_at.strftime("%Y-%m-%d")] for u in users.list_users(s)]


def users_list(engine, request: gr.Request):
    """The accounts, and the same names to choose from."""
    with Session(engine) as s:
        user_of(s, request, ADMIN_ROLES)
        rows = _user_rows(s)
    return rows, gr.update(choices=[r[0] for r in rows])


def users_add(engine, username: str, role: str, password: str, request: gr.Request):
    """Add an account (`users add`); the password box is emptied."""
    with Session(engine) as s:
        admin = user_of(s, request, ADMIN_ROLES)
        try:
            user = users.create_user(s, username=(username or "").strip(),
                                     password=password or "", role=role or "",
                                     actor=admin.username, address=address_of(request))
        except users.AccountError as exc:
            raise gr.Error(str(exc)) from None
        done = f"Added {user.username} ({user.role})."
    return (done, *users_list(engine, request), "", "")


def _account_change(engine, request: gr.Request, done: str, change, username: str, *args):
    """One change to an account as the signed-in admin (audited with the client's
    address); the status, the accounts and an emptied password box."""
    name = (username or "").strip()
    with Session(engine) as s:
        admin = user_of(s, request, ADMIN_ROLES)
        if not name:
            raise gr.Error("Choose an account first.")
        if change is users.set_active and args == (False,) and name == admin.username:
            raise gr.Error("You cannot disable your own account; ask another admin.")
        try:
            change(s, name, *args, actor=admin.username, address=address_of(request))
        except users.AccountError as exc:
            raise gr.Error(str(exc)) from None
    return (done.format(name=name), *users_list(engine, request), "")


def users_disable(engine, username: str, request: gr.Request):
    """`users disable`: the account cannot sign in and its open sessions end."""
    return _account_change(engine, request, "Disabled {name}; their open sessions ended.",
                           users.set_active, username, False)


def users_enable(engine, username: str, request: gr.Request):
    """`users enable`."""
    return _account_change(engine, request, "Enabled {name}.", users.set_active, username,
                           True)


def users_reset_password(engine, username: str, password: str, request: gr.Request):
    """`users reset-password`: sessions signed in with the old password end."""
    return _account_change(engine, request, "New password set for {name}; their open "
                           "sessions ended.", users.reset_password, username, password or "")


def users_unlock(engine, username: str, request: gr.Request):
    """`users unlock`: clears the account's sign-in throttle at its next attempt."""
    return _account_change(engine, request, "Unlocked {name}: they can sign in again now.",
                           users.unlock, username)


AUDIT_ROWS = 50


def admin_tab(engine, campaign_dd) -> gr.Tab:
    """Build the tab (hidden until a role allows) inside the current Blocks; wire it."""
    with gr.Tab("Admin", visible=False, id="admin") as tab:
        summary_btn = gr.Button("Refresh", size="sm")
        summary_md = gr.Markdown(elem_id="admin_summary")
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
        gr.Markdown("### Agreement report (same code as `agreement report --format html`)")
        with gr.Row():
            simulated_box = gr.Checkbox(False, label="include simulated raters", scale=0,
                                        min_width=220)
            report_btn = gr.Button("Agreement report (HTML)", scale=0, min_width=240)
            report_file = gr.File(label="Report", elem_id="agreement_report_file",
                                  interactive=False, height=100)
        gr.Markdown("### How many more ratings (same code as `campaign plan`)")
        with gr.Row():
            target_box = gr.Number(0.1, label="Target width of α's 95% CI", minimum=0.01,
                                   maximum=1.9)
            plan_btn = gr.Button("Plan")
        plan_md = gr.Markdown()
        gr.Markdown("### Measured faithfulness and estimates with the judge (same code as "
                    "`faithfulness report` and `judge estimate`)")
        measured_btn = gr.Button("Faithfulness and judge estimates", scale=0, min_width=280)
        measured_md = gr.Markdown(elem_id="admin_measured")
        gr.Markdown("### Export a verified dataset version (same code as `export create`)")
        # wrapped: a scrolling editor would be a region the keyboard cannot scroll (axe)
        policy_box = gr.Code("", language="yaml", label="Approval policy",
                             elem_id="export_policy", wrap_lines=True)
        version_name = gr.Textbox(label="Version name", max_length=64,
                                  info="1–64 letters, digits, '-', '_' or '.', not starting "
                                       "with a dot; never reused")
        with gr.Row():
            preview_btn = gr.Button("Preview")
            export_btn = gr.Button("Create version", variant="primary")
        export_md = gr.Markdown(elem_id="export_md")
        account = _users_layout()
        gr.Markdown(f"### Audit trail (newest {AUDIT_ROWS}; all: `rationale-audit audit list`)")
        audit_btn = gr.Button("Refresh audit trail")
        audit_table = gr.Dataframe(headers=["when (UTC)", "action", "actor", "address",
                                            "target", "detail"], interactive=False)
    figures = [figures_md, progress_plot, alpha_plot, leniency_plot, gold_plot, judge_plot]
    summary = [summary_md, summary_table]
    # The campaign's views follow the campaign dropdown (the landing sets it, too).
    campaign_dd.change(bound(admin_follow, engine), [campaign_dd, policy_box],
                       [*summary, *figures, policy_box], api_name="admin_follow")
    summary_btn.click(bound(campaign_summary, engine), campaign_dd, summary,
                      api_name="campaign_summary")
    summary_btn.click(bound(admin_figures, engine), campaign_dd, figures,
                      api_name="admin_figures")
    report_btn.click(bound(agreement_report_file, engine), [campaign_dd, simulated_box],
                     report_file, api_name="agreement_report")
    plan_btn.click(bound(budget_plan, engine), [campaign_dd, target_box], plan_md,
                   api_name="budget_plan")
    measured_btn.click(bound(measured_faithfulness, engine), campaign_dd, measured_md,
                       api_name="measured_faithfulness")
    audit_btn.click(bound(audit_events, engine), None, audit_table, api_name="audit_events")
    preview_btn.click(bound(export_preview, engine), policy_box, export_md,
                      api_name="export_preview")
    export_btn.click(bound(export_create, engine), [policy_box, version_name], export_md,
                     api_name="export_create")
    _wire_users(engine, tab, account)
    return tab


def _users_layout() -> dict:
    """The Users section: the accounts, adding one, and changes to one."""
    c = {}
    gr.Markdown("### Users (same code as `rationale-audit users`; every change is audited)")
    c["table"] = gr.Dataframe(headers=USER_HEADERS, interactive=False, elem_id="users_table")
    with gr.Row():
        c["new_name"] = gr.Textbox(label="New username", max_length=64,
                                   elem_id="new_username")
        c["new_role"] = gr.Dropdown([r.value for r in Role], value="annotator", label="Role",
                                    elem_id="new_role")
        c["new_password"] = gr.Textbox(label=f"Password (at least {users.MIN_PASSWORD} "
                                       "characters)", type="password", elem_id="new_password")
        c["add"] = gr.Button("Add user", scale=0, min_width=140)
    with gr.Row():
        c["name"] = gr.Dropdown([], label="Account", elem_id="account_name",
                                allow_custom_value=True)  # checked on the server
        c["password"] = gr.Textbox(label="New password (for a reset)", type="password",
                                   elem_id="account_password")
    with gr.Row():
        c["reset"] = gr.Button("Reset password")
        c["unlock"] = gr.Button("Unlock")
        c["enable"] = gr.Button("Enable")
        c["disable"] = gr.Button("Disable", variant="stop")
    c["status"] = gr.Markdown(elem_id="users_status")
    return c


def _wire_users(engine, tab: gr.Tab, c: dict) -> None:
    listed = [c["table"], c["name"]]
    quiet = {"show_progress": "hidden"}  # an error is a message, never a form covered over
    tab.select(bound(users_list, engine), None, listed, api_name="users_list")
    c["add"].click(bound(users_add, engine), [c["new_name"], c["new_role"], c["new_password"]],
                   [c["status"], *listed, c["new_name"], c["new_password"]],
                   api_name="users_add", **quiet)
    changed = [c["status"], *listed, c["password"]]
    for button, handler, inputs in (("reset", users_reset_password, [c["name"], c["password"]]),
                                    ("unlock", users_unlock, [c["name"]]),
                                    ("enable", users_enable, [c["name"]]),
                                    ("disable", users_disable, [c["name"]])):
        c[button].click(bound(handler, engine), inputs, changed, api_name=handler.__name__,
                        **quiet)
