"""The Annotate screen: a rater's queue, one rationale at a time, scored 1–5 on two
dimensions with flags, skipped or revised.

Every rating is committed the moment it is submitted. Model and prompt identities,
other raters' scores and (by campaign setting) the automatic grounding results are
never shown to annotators.

Nothing is lost, and nothing fails unseen:

- **Drafts.** A moment after each change the form (scores, flags, comment) is saved on
  the server as the assignment's draft (:mod:`annotation_db.drafts`); it comes back
  whenever the item is shown again (a reload, signing in after a session ended, another
  campaign and back) and is deleted when the rating is submitted.
- **Refusals where the user looks.** A missing score is reported under the scales, a
  missing skip reason under the skip box, anything else the server refuses above the
  buttons; the form stays as it was. What never reaches a handler (a session that ended,
  a busy or failing server, a lost connection) is a banner that stays until it is
  resolved (:data:`ANNOTATE_JS`), the form kept.
- **Undo and revise.** "Previous" reopens the rater's last rated item with every value
  filled in (and the one before it, on each press); an undo toast after each submission
  or skip reopens that item, or takes the skip back. A resubmission appends a revision;
  nothing is overwritten.
"""

import datetime as dt
import html
import json
import time
from types import SimpleNamespace
from typing import Any, NamedTuple

import gradio as gr
from sqlmodel import Session

from annotation_db import campaigns, claim_review, claims, corrections, drafts
from annotation_db.cohorts import patient_record
from annotation_db.models import (
    COMMENT_MAX_CHARS,
    SKIP_REASON_MAX_CHARS,
    Assignment,
    Campaign,
    Patient,
    Rationale,
    User,
)
from annotation_db.rubric import CLAIM_VERDICTS, FLAGS
from app.auth import address_of, bound, campaign_of, user_of
from app.views import (
    KEYS,
    claims_html,
    evidence_line,
    grounding_summary,
    history_html,
    rationale_html,
    rubric_choices,
)
from generation.corrections import editable, propose


class ItemView(NamedTuple):
    """What the screen shows for one queue item (the outputs of every queue event)."""

    assignment_id: int | None
    started: float | None
    history: str
    rationale: str
    label: str
    progress: str
    grounding: str
    claims: str  # claim review: the claims with their verdicts ('' when it is off)
    claim_verdicts: str  # the verdicts as JSON, kept in step by KEYBOARD_JS
    accuracy: int | None
    faithfulness: int | None
    flags: list
    comment: str
    skip_reason: str
    evidence_id: str
    evidence_item: str
    form_token: str  # "assignment:time shown": a draft save names the form it comes from
    draft_status: str
    score_error: str
    skip_error: str
    form_error: str
    claim_error: str
    correction_text: str  # the corrected-rationale editor, started from the rationale
    correction_note: str
    correction_result: str
    back_btn: Any
    undo_toast: Any
    undo_note: str
    undo: dict | None


ERRORS = ("score_error", "skip_error", "form_error", "claim_error")


def alert(message: str) -> str:
    """A refusal as the one-line alert shown beside the control it concerns."""
    message = message[:1].upper() + message[1:]
    return (f"<p class='ra-error' role='alert'>{html.escape(message)}"
            f"{'' if message.endswith('.') else '.'}</p>")


def refused(**errors: str) -> ItemView:
    """Every output left as it is (the form kept), with the refusal beside its control."""
    unchanged = {name: gr.update() for name in ItemView._fields}
    return ItemView(**unchanged | {name: alert(errors[name]) if name in errors else ""
                                   for name in ERRORS})


def _clock(moment: dt.datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).astimezone(
        ).strftime("%H:%M:%S")


def _form(s: Session, assignment: Assignment) -> tuple[dict, str]:
    """The form of an item: its draft, else (revising) its newest rating, else empty; and
    what the draft line says."""
    draft = drafts.draft_of(s, assignment.id)
    if draft is not None:
        return (dict(accuracy=draft.accuracy, faithfulness=draft.faithfulness,
                     flags=list(draft.flags), comment=draft.comment,
                     claims=dict(draft.claim_verdicts or {})),
                f"Draft restored (saved at {_clock(draft.updated_at)}).")
    rated = (campaigns.latest_annotation(s, assignment.id)
             if assignment.status == "submitted" else None)
    if rated is not None:
        return (dict(accuracy=rated.accuracy, faithfulness=rated.faithfulness,
                     flags=list(rated.flags), comment=rated.comment,
                     claims={str(k): v for k, v in
                             claim_review.verdicts_of(s, rated.id).items()}), "")
    return dict(accuracy=None, faithfulness=None, flags=[], comment="", claims={}), ""


def _claims_view(s: Session, campaign: Campaign, rationale: Rationale, known: set[str],
                 given: dict) -> tuple[Any, str]:
    """The claim review panel and its verdicts as JSON (hidden when the campaign has no
    claim review)."""
    if not claim_review.is_on(campaign):
        return "", "{}"
    listed = claims.claims_of(s, rationale.id)
    return (claims_html(listed, known, given, CLAIM_VERDICTS,
                        claims.rationale_level_ids(rationale, listed)),
            json.dumps(given, sort_keys=True))


def _note(s: Session, campaign: Campaign, assignment: Assignment) -> str:
    """What is special about the item shown: a revision, or a skip that came back."""
    if assignment.status == "submitted":
        revision = campaigns.latest_annotation(s, assignment.id).revision
        return (f"revising item {assignment.id}: your rating (revision {revision}) is filled "
                f"in; Submit adds revision {revision + 1}")
    if assignment.returned_at is not None:
        why = f" (“{assignment.skip_reason}”)" if assignment.skip_reason else ""
        return (f"item {assignment.id} came back: you skipped it{why}, and nobody else in "
                f"the campaign can give it the {campaign.ratings_per_item} ratings it needs; "
                "rate it, or skip it again to leave it")
    return ""


def item_view(s: Session, campaign: Campaign, user: User, assignment: Assignment | None,
              note: str = "", undo: dict | None = None, error: str = "") -> ItemView:
    """The item to show, its form filled from its draft or (revising) its newest rating,
    or the empty-queue message; ``undo`` is what the toast offers to take back."""
    done = campaigns.progress(s, campaign.id, user.id)
    notes = [n for n in (note, assignment and _note(s, campaign, assignment)) if n]
    progress = (f"**{done.done} / {done.assigned}** done"
                + (f" · {done.skipped} skipped" if done.skipped else "")
                + "".join(f" · {html.escape(n)}" for n in notes))
    chrome = dict(skip_reason="", evidence_id="", evidence_item="", score_error="",
                  skip_error="", form_error=alert(error) if error else "", claim_error="",
                  correction_result="", correction_note="",
                  back_btn=gr.update(visible=assignment is not None
                                     and assignment.status == "submitted"),
                  undo_toast=gr.update(visible=undo is not None),
                  undo_note=undo["note"] if undo else "", undo=undo)
    if assignment is None:
        return ItemView(None, None, "<p>Your queue is empty. Thank you!</p>", "", "",
                        progress, "", "", "{}", None, None, [], "",
                        form_token="", draft_status="", correction_text="", **chrome)
    values, draft_status = _form(s, assignment)
    rationale = s.get(Rationale, assignment.rationale_id)
    record = patient_record(s, s.get(Patient, rationale.patient_id))
    ids = {item["id"] for item in record["items"]}
    label = "will" if rationale.predicted_label else "will not"
    grounding = "" if campaign.blind_grounding else grounding_summary(rationale.grounding)
    claim_panel, claim_json = _claims_view(s, campaign, rationale, ids, values["claims"])
    started = time.time()
    return ItemView(assignment.id, started, history_html(record, rationale.cited_evidence_ids),
                    rationale_html(rationale.text, rationale.steps, ids),
                    f"**Predicted:** the patient {label} be diagnosed with ADRD within five "
                    "years.", progress, grounding, claim_panel, claim_json,
                    accuracy=values["accuracy"], faithfulness=values["faithfulness"],
                    flags=values["flags"], comment=values["comment"],
                    form_token=f"{assignment.id}:{started:.6f}", draft_status=draft_status,
                    correction_text=editable(rationale), **chrome)


def _next(s: Session, campaign: Campaign, user: User) -> Assignment | None:
    try:
        return campaigns.next_assignment(s, campaign, user)
    except campaigns.CampaignError as exc:  # many raters asking at once (adaptive)
        raise gr.Error(str(exc)) from None


def _own(s: Session, assignment_id, user: User) -> Assignment:
    try:
        return campaigns.own_assignment(s, int(assignment_id), user)
    except (campaigns.NotYours, TypeError, ValueError):
        raise gr.Error("That item is not in your queue.") from None


def load_next(engine, campaign_name: str, request: gr.Request):
    with Session(engine) as s:
        user = user_of(s, request)
        campaign = campaign_of(s, campaign_name)
        return item_view(s, campaign, user, _next(s, campaign, user))


def _verdicts(claim_json: str | None) -> dict:
    """The claim panel's JSON as submit and drafts take it (malformed: none)."""
    try:
        given = json.loads(claim_json or "{}")
    except ValueError:
        return {}
    return given if isinstance(given, dict) else {}


def submit_scores(engine, campaign_name: str, assignment_id, accuracy, faithfulness, flags,
                  comment: str, started, claim_json: str, request: gr.Request):
    if assignment_id is None:
        return refused(form_error="there is no item to submit")
    missing = [name for name, value in (("medical accuracy", accuracy),
                                        ("faithfulness", faithfulness)) if value is None]
    if missing:
        return refused(score_error=f"Not submitted: score {' and '.join(missing)} first "
                                   "(keys 1–5)")
    with Session(engine) as s:
        user = user_of(s, request)
        campaign = campaign_of(s, campaign_name)
        seconds = max(0.0, time.time() - float(started)) if started else None
        given = {claim: value for claim, value in _verdicts(claim_json).items()
                 if isinstance(value, dict) and value.get("verdict")}
        try:
            saved = campaigns.submit(s, assignment_id=int(assignment_id), user=user,
                                     accuracy=int(accuracy), faithfulness=int(faithfulness),
                                     flags=list(flags or []), comment=comment or "",
                                     seconds_on_task=seconds, address=address_of(request),
                                     claim_verdicts=given)
        except campaigns.NotYours as exc:
            raise gr.Error(str(exc)) from None
        except campaigns.CampaignError as exc:
            if s.get(Assignment, int(assignment_id)).status == "reclaimed":  # move on
                return item_view(s, campaign, user, _next(s, campaign, user),
                                 error=f"Not submitted: {exc}")
            if str(exc).startswith(("give every claim", "claim")):
                return refused(claim_error=f"Not submitted: {exc}")
            return refused(form_error=f"Not submitted: {exc}")
        what = f"item {saved.assignment_id}" + (f" (revision {saved.revision})"
                                                if saved.revision > 1 else "")
        return item_view(s, campaign, user, _next(s, campaign, user),
                         undo={"kind": "submitted", "assignment_id": saved.assignment_id,
                               "note": f"Saved {what}."})


def skip_item(engine, campaign_name: str, assignment_id, reason: str, request: gr.Request):
    if assignment_id is None:
        return refused(skip_error="there is no item to skip")
    with Session(engine) as s:
        user = user_of(s, request)
        campaign = campaign_of(s, campaign_name)
        try:
            campaigns.skip(s, assignment_id=int(assignment_id), user=user,
                           reason=reason or "", address=address_of(request))
        except campaigns.NotYours as exc:
            raise gr.Error(str(exc)) from None
        except campaigns.CampaignError as exc:
            return refused(skip_error=f"Not skipped: {exc}")
        return item_view(s, campaign, user, _next(s, campaign, user),
                         undo={"kind": "skipped", "assignment_id": int(assignment_id),
                               "note": f"Skipped item {int(assignment_id)}."})


def undo_last(engine, campaign_name: str, undo: dict | None, request: gr.Request):
    """Take back the last skip (the item is open again), or reopen the item just rated
    with its values filled in (a resubmission appends a revision)."""
    if not undo:
        return refused(form_error="there is nothing to undo")
    with Session(engine) as s:
        user = user_of(s, request)
        campaign = campaign_of(s, campaign_name)
        if undo["kind"] != "skipped":
            return item_view(s, campaign, user, _own(s, undo["assignment_id"], user))
        try:
            assignment = campaigns.unskip(s, assignment_id=int(undo["assignment_id"]),
                                          user=user, address=address_of(request))
        except campaigns.NotYours as exc:
            raise gr.Error(str(exc)) from None
        except campaigns.CampaignError as exc:
            return refused(form_error=f"Not undone: {exc}")
        return item_view(s, campaign, user, assignment, note="skip taken back")


def previous_item(engine, campaign_name: str, assignment_id, request: gr.Request):
    """The rater's item rated before the one shown (their last rated one from an open
    item), with every value filled in."""
    with Session(engine) as s:
        user = user_of(s, request)
        campaign = campaign_of(s, campaign_name)
        shown = int(assignment_id) if assignment_id is not None else None
        previous = campaigns.previous_submitted(s, campaign, user, before=shown)
        if previous is None:
            first = shown is not None and campaigns.previous_submitted(s, campaign, user)
            return refused(form_error="this is the first item you rated in this campaign"
                           if first else "you have not rated an item in this campaign yet")
        return item_view(s, campaign, user, previous)


def dismiss_undo():
    """The undo toast put away (what it offered stays in Previous and My ratings)."""
    return gr.update(visible=False)


def save_draft(engine, assignment_id, form_token: str, accuracy, faithfulness, flags,
               comment: str, claim_json: str, request: gr.Request):
    """Keep the form as it stands as the item's draft; what the draft line says."""
    if assignment_id is None:
        return ""
    with Session(engine) as s:
        user = user_of(s, request)
        try:
            draft = drafts.save_draft(
                s, assignment_id=int(assignment_id), user=user,
                accuracy=None if accuracy is None else int(accuracy),
                faithfulness=None if faithfulness is None else int(faithfulness),
                flags=list(flags or []), comment=comment or "",
                form_opened_at=_shown_at(form_token, int(assignment_id)),
                address=address_of(request), claim_verdicts=_verdicts(claim_json))
        except drafts.StaleDraft:  # the item was submitted meanwhile: nothing to keep
            return gr.update()
        except drafts.DraftError as exc:
            return alert(f"Draft not saved: {exc}")
        except campaigns.NotYours as exc:
            raise gr.Error(str(exc)) from None
        return f"Draft saved at {_clock(draft.updated_at)}." if draft else ""


def _shown_at(form_token: str | None, assignment_id: int) -> dt.datetime | None:
    """When the form a draft comes from was shown (None if its token is not this item's)."""
    item, _, shown = (form_token or "").partition(":")
    try:
        return (dt.datetime.fromtimestamp(float(shown), dt.UTC)
                if item == str(assignment_id) else None)
    except ValueError:
        return None


def propose_correction(engine, assignment_id, edited: str, note: str, request: gr.Request):
    """Check the corrected rationale as generation checks its own and, when it passes the
    schema and record checks, propose it to the adjudicators; what the checks found."""
    if assignment_id is None:
        return alert("There is no item to correct")
    with Session(engine) as s:
        user = user_of(s, request)
        try:
            blind = s.get(Campaign, campaigns.own_assignment(
                s, int(assignment_id), user).campaign_id).blind_grounding
            correction, checked = propose(s, assignment_id=int(assignment_id), user=user,
                                          edited=edited or "", note=note or "",
                                          address=address_of(request))
        except campaigns.NotYours as exc:
            raise gr.Error(str(exc)) from None
        except corrections.CorrectionError as exc:
            return alert(f"Not proposed: {exc}")
    if correction is None:
        return alert(f"Not proposed: {checked.problem}")
    if blind:  # the campaign hides the automatic checks from raters: these too
        return (f"<p role='status'>Correction {correction.id} proposed. An adjudicator "
                "accepts or rejects it.</p>")
    failed = [c for c in checked.grounding["checks"] if not c["ok"]]
    found = ("all automatic checks passed" if not failed else
             "automatic checks failed: " + "; ".join(
                 f"{c['kind']} {c['claim']} ({c['detail']})" for c in failed[:6]))
    return (f"<p role='status'>Correction {correction.id} proposed: {html.escape(found)}. "
            "An adjudicator accepts or rejects it.</p>")


def show_evidence(engine, assignment_id, evidence_id: str, request: gr.Request):
    if assignment_id is None or not evidence_id:
        return ""
    with Session(engine) as s:
        user = user_of(s, request)
        assignment = _own(s, assignment_id, user)
        rationale = s.get(Rationale, assignment.rationale_id)
        return evidence_line(patient_record(s, s.get(Patient, rationale.patient_id)),
                             evidence_id)


def my_ratings(engine, campaign_name: str, request: gr.Request):
    with Session(engine) as s:
        user = user_of(s, request)
        rows = campaigns.my_history(s, campaign_of(s, campaign_name), user)
    return [[r["assignment_id"], r["revision"], r["accuracy"], r["faithfulness"],
             ", ".join(r["flags"]), r["comment"]] for r in rows]


def open_for_revision(engine, campaign_name: str, assignment_id, request: gr.Request):
    """One's own rated item, every value filled in from its newest revision (or from the
    draft of a revision begun earlier)."""
    with Session(engine) as s:
        user = user_of(s, request)
        campaign = campaign_of(s, campaign_name)
        assignment = _own(s, assignment_id, user)
        if assignment.status != "submitted":
            raise gr.Error("Only submitted items can be revised.")
        return item_view(s, campaign, user, assignment)


def _item_layout(guidelines: dict) -> SimpleNamespace:
    """The item under review: record, rationale, rubric and buttons."""
    c = SimpleNamespace()
    with gr.Row():
        c.progress = gr.Markdown(elem_id="progress_md")
        # The item's number: shown so raters can refer to it; ownership is checked
        # on the server whatever number a browser sends back.
        c.assignment_id = gr.Number(label="Item", precision=0, interactive=False,
                                    elem_id="item_number", scale=0)
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("### Patient record (cited items highlighted)")
            c.history = gr.HTML(elem_id="history_view", elem_classes=KEYS)
        with gr.Column(scale=2):
            gr.Markdown("### Rationale")
            c.rationale = gr.HTML(elem_id="rationale_view", elem_classes=KEYS)
            c.label = gr.Markdown(elem_id="label_md")
            c.grounding = gr.Markdown()
            with gr.Row():
                c.evidence_id = gr.Textbox(label="Evidence id (click one in the text)",
                                           elem_id="evidence_box", scale=1)
                c.show_evidence_btn = gr.Button("Show item", elem_id="show_evidence_btn",
                                                scale=0)
            c.evidence_item = gr.Textbox(label="Record item", interactive=False)
            # empty when the campaign has no claim review: a plain value per item is far
            # cheaper for Gradio to send than a visibility update (benchmarks/annotation.py)
            c.claims = gr.HTML(elem_id="claims_view", elem_classes=KEYS, label="Claims")
            # an initial value: API clients that predate claim review may leave it out
            c.claim_verdicts = gr.Textbox("{}", visible="hidden", elem_id="claim_verdicts_box")
            c.claim_error = gr.HTML(elem_id="claim_error")  # a claim without a verdict, here
            c.accuracy = gr.Radio(rubric_choices(guidelines, "accuracy"), label="Medical accuracy",
                                  info=guidelines["dimensions"]["accuracy"]["question"],
                                  elem_id="accuracy_radio", elem_classes=KEYS)
            c.faithfulness = gr.Radio(rubric_choices(guidelines, "faithfulness"),
                                      label="Faithfulness to this patient's record",
                                      info=guidelines["dimensions"]["faithfulness"]["question"],
                                      elem_id="faithfulness_radio", elem_classes=KEYS)
            c.score_error = gr.HTML(elem_id="score_error")  # a missing score, said here
            c.flags = gr.CheckboxGroup([(guidelines["flags"][k], k) for k in FLAGS],
                                       label="Flags", elem_id="flags_box", elem_classes=KEYS)
            c.comment = gr.Textbox(label=f"Comment (up to {COMMENT_MAX_CHARS:,} characters)",
                                   lines=2, max_length=COMMENT_MAX_CHARS, elem_id="comment_box",
                                   elem_classes=KEYS)
            c.form_error = gr.HTML(elem_id="form_error")  # other refusals, above the buttons
            with gr.Row(elem_classes=KEYS):
                c.submit_btn = gr.Button("Submit (Enter)", variant="primary", elem_id="submit_btn")
                c.skip_reason = gr.Textbox(
                    label=f"Skip reason (up to {SKIP_REASON_MAX_CHARS:,} characters)",
                    max_length=SKIP_REASON_MAX_CHARS, elem_id="skip_reason", scale=2)
                c.skip_btn = gr.Button("Skip (s)", elem_id="skip_btn")
            c.skip_error = gr.HTML(elem_id="skip_error")  # a skip without a reason, said here
            with gr.Row(elem_classes=KEYS):
                c.previous_btn = gr.Button("Previous (p)", elem_id="previous_btn", size="sm")
                c.back_btn = gr.Button("Back to my queue", elem_id="back_btn", size="sm",
                                       visible=False)
                c.draft_status = gr.Markdown(elem_id="draft_status")
            _undo_layout(c)  # shown in a corner, next in the Tab order after the buttons
            _correction_layout(c)
            # The draft machinery: the form's token (which item, shown when) and the button
            # ANNOTATE_JS presses a moment after the last change.
            c.form_token = gr.Textbox(visible=False, elem_id="form_token")
            c.draft_save_btn = gr.Button("Save draft", visible="hidden", elem_id="draft_save_btn")
            gr.Markdown("Keys: **1–5** score the highlighted dimension, **↑/↓** switch dimension, "
                        "**Enter** submits, **s** skips, **p** reopens the previous item, "
                        "**?** lists every key. Keys are ignored while you type.")
    return c


def _history_layout(guidelines: dict, c: SimpleNamespace) -> None:
    """The guidelines and the rater's own ratings, with revision."""
    with gr.Accordion(f"Guidelines v{guidelines['version']}", open=False):
        gr.Markdown("\n".join(
            f"**{d['title']}** — {d['question']}\n\n" + "\n".join(
                f"- {k}: {v}" for k, v in d["anchors"].items())
            for d in guidelines["dimensions"].values()))
    with gr.Accordion("My ratings (revise)", open=False):
        c.mine_btn = gr.Button("Show my ratings")
        c.mine_table = gr.Dataframe(headers=["item", "revision", "accuracy", "faithfulness",
                                             "flags", "comment"], interactive=False)
        c.revise_id = gr.Number(label="Item to revise", precision=0)
        c.revise_btn = gr.Button("Open for revision")


def _correction_layout(c: SimpleNamespace) -> None:
    """The corrected-rationale editor: checked like generated text, then proposed."""
    with gr.Accordion("Propose a corrected rationale", open=False, elem_id="correction_panel"):
        c.correction_text = gr.Textbox(
            label="Corrected rationale: cite record lines inline as [E12]; for a step-by-step "
                  "rationale, one step per line", lines=5, elem_id="correction_box")
        c.correction_note = gr.Textbox(label="What you changed and why (optional)",
                                       max_length=COMMENT_MAX_CHARS, elem_id="correction_note")
        c.correction_btn = gr.Button("Check and propose", elem_id="correction_btn")
        c.correction_result = gr.HTML(elem_id="correction_result")


def _undo_layout(c: SimpleNamespace) -> None:
    """The toast after a submission or a skip, with the button that takes it back; it
    stays in the page's corner until the next one or until dismissed (no timeout to
    race)."""
    with gr.Row(visible=False, elem_id="undo_toast", elem_classes=KEYS) as c.undo_toast:
        c.undo_note = gr.Markdown(elem_id="undo_note")
        c.undo_btn = gr.Button("Undo (u)", elem_id="undo_btn", scale=0)
        c.undo_close = gr.Button("Dismiss", elem_id="undo_close", scale=0)
    c.undo = gr.State(None)


def annotate_tab(engine, guidelines: dict, campaign_dd, started) -> gr.Tab:
    """Build the tab inside the current Blocks and wire its events."""
    with gr.Tab("Annotate", id="annotate") as tab:
        c = _item_layout(guidelines)
        _history_layout(guidelines, c)
    c.started = started
    view = [getattr(c, name) for name in ItemView._fields]
    # The annotator's hot path skips Gradio's queue (a direct request per event): each
    # handler is a few milliseconds of database work, and the queue's per-event overhead
    # would dominate the submit → next-item latency. Their outputs are text, numbers and
    # lists already in the form the browser takes, so Gradio's per-output postprocess
    # (one worker-thread hop per output, about 35 per item) is skipped; not for
    # my_ratings, whose Dataframe needs it.
    fast = {"queue": False, "show_progress": "hidden", "postprocess": False}
    campaign_dd.change(bound(load_next, engine), campaign_dd, view, api_name="load_next", **fast)
    c.submit_btn.click(bound(submit_scores, engine),
                       [campaign_dd, c.assignment_id, c.accuracy, c.faithfulness, c.flags,
                        c.comment, started, c.claim_verdicts], view, api_name="submit_scores",
                       **fast)
    c.skip_btn.click(bound(skip_item, engine), [campaign_dd, c.assignment_id, c.skip_reason],
                     view, api_name="skip_item", **fast)
    c.undo_btn.click(bound(undo_last, engine), [campaign_dd, c.undo], view, api_name="undo_last",
                     **fast)
    c.undo_close.click(dismiss_undo, None, c.undo_toast, api_name="dismiss_undo", **fast)
    c.previous_btn.click(bound(previous_item, engine), [campaign_dd, c.assignment_id], view,
                         api_name="previous_item", **fast)
    c.back_btn.click(bound(load_next, engine), campaign_dd, view, api_name="back_to_queue",
                     **fast)
    # always_last: a save pressed while one is on its way runs after it, never dropped
    c.draft_save_btn.click(bound(save_draft, engine),
                           [c.assignment_id, c.form_token, c.accuracy, c.faithfulness, c.flags,
                            c.comment, c.claim_verdicts], c.draft_status, api_name="save_draft",
                           trigger_mode="always_last", **fast)
    c.correction_btn.click(bound(propose_correction, engine),
                           [c.assignment_id, c.correction_text, c.correction_note],
                           c.correction_result, api_name="propose_correction", **fast)
    c.show_evidence_btn.click(bound(show_evidence, engine), [c.assignment_id, c.evidence_id],
                              c.evidence_item, api_name="show_evidence", **fast)
    c.mine_btn.click(bound(my_ratings, engine), campaign_dd, c.mine_table, api_name="my_ratings",
                     **{**fast, "postprocess": True})
    c.revise_btn.click(bound(open_for_revision, engine), [campaign_dd, c.revise_id], view,
                       api_name="open_for_revision", **fast)
    return tab


# What keeps work from being lost in the browser, beside the server's drafts:
# - every answer of the app's API is watched: a session that ended (401/403), a busy server
#   (429), a failure (5xx, with the server's message when it sent one) or a lost connection
#   shows a banner that stays (role=alert) until the next request succeeds, or, for an ended
#   session, until the page is reloaded; nothing on the page is touched, so the form is kept;
# - a moment (DRAFT_DELAY_MS) after the last change in the rating form it presses the hidden
#   #draft_save_btn, and at once when a button is pressed before then (a save that arrives
#   after the item's submission is dropped by the server, see annotation_db.drafts);
# - when a session has ended, the form as it stands is kept in this browser (localStorage)
#   and put back once the same item is shown after signing in again (then saved as its draft).
ANNOTATE_JS = """
<style>
#error_banner{position:fixed;top:.5rem;left:50%;transform:translateX(-50%);z-index:1000;
  width:max-content;max-width:min(60rem,94vw);padding:.6rem 1rem;background:#fff5f5;
  color:#7d1414;border:2px solid #c92a2a;border-radius:6px;box-shadow:0 2px 10px #0004;
  font:1rem/1.4 "Source Sans Pro",ui-sans-serif,system-ui,sans-serif;display:flex;gap:.75rem;
  align-items:center}
#error_banner[hidden]{display:none}
#error_banner button{font:inherit;padding:.2rem .7rem;border-radius:4px;cursor:pointer;
  border:1px solid #7d1414;background:#fff;color:#7d1414}
#error_banner button.ra-signin{background:#7d1414;color:#fff}
.gradio-container .ra-error{color:#b00020!important;font-weight:600;margin:0}
:is(#score_error,#skip_error,#form_error,#claim_error){padding:0!important;border:0!important;min-height:0}
:is(#score_error,#skip_error,#form_error,#claim_error):not(:has(.ra-error)){display:none!important}
#undo_toast{position:fixed;left:1rem;bottom:1rem;z-index:999;width:auto!important;
  max-width:32rem;height:auto!important;padding:.4rem .5rem .4rem 1rem;gap:.6rem;
  align-items:center;flex-wrap:nowrap;background:#fff;border:2px solid #1c5fa8;
  border-radius:6px;box-shadow:0 2px 10px #0004}
#undo_toast>*{flex:0 0 auto!important;min-width:0!important;width:auto!important}
#undo_toast p{margin:0;font-weight:600}
html:has(#undo_toast){scroll-padding-bottom:5rem}
</style>
<script>
(() => {
  if (window.raAnnotate) return;
  window.raAnnotate = true;
  const DRAFT_DELAY_MS = 700, STASH = "ra-unsaved-form";
  const FORM = ["claims_view", "accuracy_radio", "faithfulness_radio", "flags_box",
                "comment_box"];
  const $ = (sel) => document.querySelector(sel);
  let banner = null, sessionEnded = false, timer = null;

  function show(message, ended) {
    if (!banner) {
      banner = document.createElement("div");
      banner.id = "error_banner";
      banner.setAttribute("role", "alert");
      banner.innerHTML = "<span class='ra-banner-text'></span>"
        + "<button type='button' class='ra-signin'>Sign in again</button>"
        + "<button type='button' class='ra-dismiss' aria-label='Dismiss'>Dismiss</button>";
      banner.querySelector(".ra-signin").onclick = () => location.reload();
      banner.querySelector(".ra-dismiss").onclick = hide;
      document.body.appendChild(banner);
    }
    sessionEnded = sessionEnded || ended;
    banner.querySelector(".ra-banner-text").textContent = message;
    banner.querySelector(".ra-signin").hidden = !ended;
    banner.querySelector(".ra-dismiss").hidden = ended;
    banner.hidden = false;
    // what takes focus is scrolled clear of the banner, never under it
    document.documentElement.style.scrollPaddingTop = `${banner.offsetHeight + 16}px`;
  }
  function hide() {
    if (!banner || sessionEnded) return;
    banner.hidden = true;
    document.documentElement.style.scrollPaddingTop = "";
  }

  function form() {
    const checked = (id) => { const i = $(`#${id} input[type=radio]:checked`);
                              return i ? i.value : null; };
    const item = $("#item_number input");
    const comment = $("#comment_box textarea");
    const claims = $("#claim_verdicts_box textarea, #claim_verdicts_box input");
    return {item: item ? item.value : "", accuracy: checked("accuracy_radio"),
            claims: claims ? claims.value : "{}",
            faithfulness: checked("faithfulness_radio"),
            flags: [...document.querySelectorAll("#flags_box input:checked")].map((i) => i.name),
            comment: comment ? comment.value : "", at: Date.now()};
  }

  function ended() {
    const kept = form();
    if (kept.item) localStorage.setItem(STASH, JSON.stringify(kept));
    const status = $("#draft_status");
    const at = status && status.innerText.match(/saved at (\\d\\d:\\d\\d:\\d\\d)/);
    show("Your session has ended (signed out, timed out, or your account changed). Nothing "
         + "you submitted is lost" + (at ? `, the server has your draft as of ${at[1]}` : "")
         + ", and this form is kept in this browser. Sign in again to go on with this item "
         + "where you left it.", true);
  }

  async function watch(response) {
    if (response.ok) return hide();
    if (response.status === 401 || response.status === 403) return ended();
    let detail = "";
    try {
      const body = await response.clone().json();
      detail = body.error || (typeof body.detail === "string" ? body.detail : "");
    } catch (e) { /* not JSON */ }
    if (sessionEnded) return;
    if (response.status === 429) {
      show("The server is busy (too many requests): wait a minute, then try again. Your form "
           + "is kept." + (detail ? ` (${detail})` : ""), false);
    } else if (detail) {
      show(`${detail} Your form is kept.`, false);
    } else {
      show(`The server could not do that (error ${response.status}). Your form is kept: try `
           + "again, and tell your admin if it happens again.", false);
    }
  }

  const fetchFirst = window.fetch;
  window.fetch = async (...args) => {
    const url = String(args[0] && args[0].url ? args[0].url : args[0]);
    const api = /\\/gradio_api\\/(run|queue\\/join|call|api)\\//.test(url);
    try {
      const response = await fetchFirst(...args);
      if (api) watch(response);
      return response;
    } catch (error) {
      if (api && !sessionEnded) show("The server cannot be reached: check your connection, "
                                     + "then try again. Your form is kept.", false);
      throw error;
    }
  };

  function saveNow() {
    clearTimeout(timer);
    timer = null;
    const button = document.getElementById("draft_save_btn");
    if (button) button.click();
  }
  function changed(e) {
    if (!e.target.closest || !FORM.some((id) => e.target.closest(`#${id}`))) return;
    clearTimeout(timer);
    timer = setTimeout(saveNow, DRAFT_DELAY_MS);
  }
  document.addEventListener("input", changed, true);
  document.addEventListener("change", changed, true);
  document.addEventListener("click", (e) => {
    const button = e.target.closest && e.target.closest("button");
    if (button && timer !== null && button.id !== "draft_save_btn") saveNow();
  }, true);
  document.addEventListener("focusin", (e) => {
    if (timer !== null && e.target.closest && e.target.closest("#campaign_dd")) saveNow();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden" && timer !== null) saveNow();
  });

  // After signing in again: the form kept in this browser goes back on its item, once the
  // item has been shown for a moment (its own values are in by then).
  let shownAt = null;
  function restore() {
    let kept;
    try { kept = JSON.parse(localStorage.getItem(STASH) || "null"); } catch (e) { kept = null; }
    if (!kept || Date.now() - kept.at > 24 * 3600 * 1000) {
      localStorage.removeItem(STASH);
      return true;
    }
    const item = $("#item_number input");
    if (!item || item.value !== kept.item) return false;
    if (shownAt === null) { shownAt = Date.now(); return false; }
    for (const id of ["accuracy", "faithfulness"]) {
      const radio = kept[id] && $(`#${id}_radio input[type=radio][value="${kept[id]}"]`);
      if (radio && !radio.checked) radio.click();
    }
    document.querySelectorAll("#flags_box input[type=checkbox]").forEach((box) => {
      if (box.checked !== kept.flags.includes(box.name)) box.click();
    });
    let claims = {};
    try { claims = JSON.parse(kept.claims || "{}"); } catch (e) { claims = {}; }
    for (const [claim, given] of Object.entries(claims)) {
      const r = given.verdict &&
        $(`#claim-${claim} input[type=radio][value="${given.verdict}"]`);
      if (r && !r.checked) r.click();
      const box = $(`#claim-${claim} .ra-should-input`);
      if (box) {
        box.value = (given.should_cite || []).join(" ");
        box.dispatchEvent(new Event("input", {bubbles: true}));
      }
    }
    const comment = $("#comment_box textarea");
    if (comment && comment.value !== kept.comment) {
      Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, "value").set
        .call(comment, kept.comment);
      comment.dispatchEvent(new Event("input", {bubbles: true}));
    }
    localStorage.removeItem(STASH);
    saveNow();
    return true;
  }
  let tries = 0;
  const restoring = setInterval(() => {
    if (++tries > 120 || (localStorage.getItem(STASH) === null) || restore())
      clearInterval(restoring);
  }, 500);
})();
</script>
"""
