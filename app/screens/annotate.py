"""The Annotate screen: a rater's queue, one rationale at a time, scored 1–5 on two
dimensions with flags, skipped or revised.

Every rating is committed the moment it is submitted. Model and prompt identities,
other raters' scores and (by campaign setting) the automatic grounding results are
never shown to annotators.
"""

import time
from types import SimpleNamespace
from typing import Any, NamedTuple

import gradio as gr
from sqlmodel import Session

from annotation_db import campaigns
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
from annotation_db.rubric import FLAGS
from app.auth import address_of, bound, campaign_of, user_of
from app.views import evidence_line, grounding_summary, history_html, rationale_html, rubric_choices


class ItemView(NamedTuple):
    """What the screen shows for one queue item (the outputs of every queue event)."""

    assignment_id: int | None
    started: float | None
    history: str
    rationale: str
    label: str
    progress: str
    grounding: str
    accuracy: Any
    faithfulness: Any
    flags: list
    comment: str
    skip_reason: str
    evidence_id: str
    evidence_item: str


def item_view(s: Session, campaign: Campaign, user: User, assignment: Assignment | None,
              note: str = "") -> ItemView:
    """The item to show (the form cleared), or the empty-queue message."""
    done = campaigns.progress(s, campaign.id, user.id)
    progress = f"**{done.done} / {done.assigned}** done" + (f" · {note}" if note else "")
    cleared = dict(accuracy=gr.update(value=None), faithfulness=gr.update(value=None),
                   flags=[], comment="", skip_reason="", evidence_id="", evidence_item="")
    if assignment is None:
        return ItemView(None, None, "<p>Your queue is empty. Thank you!</p>", "", "", progress,
                        "", **cleared)
    rationale = s.get(Rationale, assignment.rationale_id)
    record = patient_record(s, s.get(Patient, rationale.patient_id))
    ids = {item["id"] for item in record["items"]}
    label = "will" if rationale.predicted_label else "will not"
    grounding = "" if campaign.blind_grounding else grounding_summary(rationale.grounding)
    return ItemView(assignment.id, time.time(), history_html(record, rationale.cited_evidence_ids),
                    rationale_html(rationale.text, rationale.steps, ids),
                    f"**Predicted:** the patient {label} be diagnosed with ADRD within five "
                    "years.", progress, grounding, **cleared)


def load_next(engine, campaign_name: str, request: gr.Request):
    with Session(engine) as s:
        user = user_of(s, request)
        campaign = campaign_of(s, campaign_name)
        return item_view(s, campaign, user, campaigns.next_assignment(s, campaign, user))


def submit_scores(engine, campaign_name: str, assignment_id, accuracy, faithfulness, flags,
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
                             seconds_on_task=seconds, address=address_of(request))
        except (campaigns.NotYours, campaigns.CampaignError) as exc:
            raise gr.Error(str(exc)) from None
        return item_view(s, campaign, user, campaigns.next_assignment(s, campaign, user),
                             note="saved")


def skip_item(engine, campaign_name: str, assignment_id, reason: str, request: gr.Request):
    if assignment_id is None:
        raise gr.Error("There is no item to skip.")
    with Session(engine) as s:
        user = user_of(s, request)
        campaign = campaign_of(s, campaign_name)
        try:
            campaigns.skip(s, assignment_id=int(assignment_id), user=user,
                           reason=reason or "", address=address_of(request))
        except (campaigns.NotYours, campaigns.CampaignError) as exc:
            raise gr.Error(str(exc)) from None
        return item_view(s, campaign, user, campaigns.next_assignment(s, campaign, user),
                             note="skipped")


def show_evidence(engine, assignment_id, evidence_id: str, request: gr.Request):
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


def my_ratings(engine, campaign_name: str, request: gr.Request):
    with Session(engine) as s:
        user = user_of(s, request)
        rows = campaigns.my_history(s, campaign_of(s, campaign_name), user)
    return [[r["assignment_id"], r["revision"], r["accuracy"], r["faithfulness"],
             ", ".join(r["flags"]), r["comment"]] for r in rows]


def open_for_revision(engine, campaign_name: str, assignment_id, request: gr.Request):
    with Session(engine) as s:
        user = user_of(s, request)
        campaign = campaign_of(s, campaign_name)
        try:
            assignment = campaigns.own_assignment(s, int(assignment_id), user)
        except (campaigns.NotYours, TypeError, ValueError):
            raise gr.Error("That item is not in your queue.") from None
        if assignment.status != "submitted":
            raise gr.Error("Only submitted items can be revised.")
        return item_view(s, campaign, user, assignment, note="revising")


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
            c.history = gr.HTML(elem_id="history_view")
        with gr.Column(scale=2):
            gr.Markdown("### Rationale")
            c.rationale = gr.HTML(elem_id="rationale_view")
            c.label = gr.Markdown(elem_id="label_md")
            c.grounding = gr.Markdown()
            with gr.Row():
                c.evidence_id = gr.Textbox(label="Evidence id (click one in the text)",
                                           elem_id="evidence_box", scale=1)
                c.show_evidence_btn = gr.Button("Show item", elem_id="show_evidence_btn",
                                                scale=0)
            c.evidence_item = gr.Textbox(label="Record item", interactive=False)
            c.accuracy = gr.Radio(rubric_choices(guidelines, "accuracy"), label="Medical accuracy",
                                  info=guidelines["dimensions"]["accuracy"]["question"],
                                  elem_id="accuracy_radio")
            c.faithfulness = gr.Radio(rubric_choices(guidelines, "faithfulness"),
                                      label="Faithfulness to this patient's record",
                                      info=guidelines["dimensions"]["faithfulness"]["question"],
                                      elem_id="faithfulness_radio")
            c.flags = gr.CheckboxGroup([(guidelines["flags"][k], k) for k in FLAGS],
                                       label="Flags", elem_id="flags_box")
            c.comment = gr.Textbox(label=f"Comment (up to {COMMENT_MAX_CHARS:,} characters)",
                                   lines=2, max_length=COMMENT_MAX_CHARS, elem_id="comment_box")
            with gr.Row():
                c.submit_btn = gr.Button("Submit (Enter)", variant="primary", elem_id="submit_btn")
                c.skip_reason = gr.Textbox(
                    label=f"Skip reason (up to {SKIP_REASON_MAX_CHARS:,} characters)",
                    max_length=SKIP_REASON_MAX_CHARS, elem_id="skip_reason", scale=2)
                c.skip_btn = gr.Button("Skip (s)", elem_id="skip_btn")
            gr.Markdown("Keys: **1–5** score the highlighted dimension, **↑/↓** switch dimension, "
                        "**Enter** submits, **s** skips. Keys are ignored while you type.")
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


def annotate_tab(engine, guidelines: dict, campaign_dd, started) -> gr.Tab:
    """Build the tab inside the current Blocks and wire its events."""
    with gr.Tab("Annotate") as tab:
        c = _item_layout(guidelines)
        _history_layout(guidelines, c)
    c.started = started
    view = [getattr(c, name) for name in ItemView._fields]
    # The annotator's hot path skips Gradio's queue (a direct request per event): each
    # handler is a few milliseconds of database work, and the queue's per-event overhead
    # would dominate the submit → next-item latency.
    fast = {"queue": False, "show_progress": "hidden"}
    campaign_dd.change(bound(load_next, engine), campaign_dd, view, api_name="load_next", **fast)
    c.submit_btn.click(bound(submit_scores, engine),
                       [campaign_dd, c.assignment_id, c.accuracy, c.faithfulness, c.flags,
                        c.comment, started], view, api_name="submit_scores", **fast)
    c.skip_btn.click(bound(skip_item, engine), [campaign_dd, c.assignment_id, c.skip_reason],
                     view, api_name="skip_item", **fast)
    c.show_evidence_btn.click(bound(show_evidence, engine), [c.assignment_id, c.evidence_id],
                              c.evidence_item, api_name="show_evidence", **fast)
    c.mine_btn.click(bound(my_ratings, engine), campaign_dd, c.mine_table, api_name="my_ratings")
    c.revise_btn.click(bound(open_for_revision, engine), [campaign_dd, c.revise_id], view,
                       api_name="open_for_revision")
    return tab
