"""The Adjudicate screen (adjudicators, admins): the queue of disputed items, each with
every rater's latest scores, and the final decision with its reason.

Items go by the numbers the annotators see (their "Item", one per rater), so an
annotator's "item 12" is found as it is: the queue lists each disputed rationale's
numbers, a snippet of it and its predicted label, and one click on a row opens it
(typing any of its numbers does too). The final scores use the annotators' anchored
scales and the flags their labels. After a decision the screen says what was recorded
and opens the next disputed item.
"""

import re
from typing import Any, NamedTuple

import gradio as gr
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import adjudication
from annotation_db.cohorts import patient_record
from annotation_db.models import (
    ADJUDICATION_REASON_MAX_CHARS,
    Assignment,
    Campaign,
    Patient,
    Rationale,
)
from annotation_db.rubric import FLAGS
from app.auth import REVIEW_ROLES, address_of, bound, campaign_of, user_of
from app.screens.corrections_review import corrections_panel
from app.views import history_html, rationale_html, rubric_choices

QUEUE_HEADERS = ["items", "rationale", "prediction", "largest range", "split flags",
                 "split claims", "ratings"]
RATING_HEADERS = ["rater", "item", "accuracy", "faithfulness", "flags", "comment"]
SNIPPET_CHARS = 90
CHOOSE_FIRST = "Choose an item from the queue first."


class DisputedView(NamedTuple):
    """The item under adjudication and a cleared decision form (the outputs of every
    event that opens an item)."""

    item: int | None
    history: str
    rationale: str
    label: str
    ratings: list
    decision: Any
    accuracy: Any
    faithfulness: Any
    flags: list
    reason: str


def flag_name(guidelines: dict, flag: str) -> str:
    """A flag's short label as the annotators read it ("Hallucinated fact")."""
    return guidelines["flags"].get(flag, flag).split(" — ")[0]


def _snippet(rationale: Rationale) -> str:
    text = " ".join(s["step"] for s in rationale.steps) if rationale.steps else rationale.text
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[:SNIPPET_CHARS - 1].rstrip() + "…"


def _prediction(rationale: Rationale) -> str:
    return "ADRD within 5 years" if rationale.predicted_label else "no ADRD within 5 years"


def _items(ratings: list[dict]) -> str:
    return ", ".join(str(n) for n in sorted(r["item"] for r in ratings))


def adjudication_queue(engine, guidelines: dict, campaign_name: str, request: gr.Request):
    """The disputed items of the campaign, largest disagreement first."""
    with Session(engine) as s:
        user_of(s, request, REVIEW_ROLES)
        items = adjudication.queue(s, campaign_of(s, campaign_name))
        rationales = {r.id: r for r in s.execute(select(Rationale).where(
            Rationale.id.in_([i["rationale_id"] for i in items]))).scalars()}
        return [[_items(i["ratings"]), _snippet(rationales[i["rationale_id"]]),
                 _prediction(rationales[i["rationale_id"]]), i["max_range"],
                 ", ".join(flag_name(guidelines, f) for f in i["split_flags"]),
                 ", ".join(f"claim {p}" for p in i["split_claims"]),
                 "; ".join(f"{r['rater']} #{r['item']}: A{r['accuracy']} F{r['faithfulness']}"
                           + (f" [{', '.join(flag_name(guidelines, f) for f in r['flags'])}]"
                              if r["flags"] else "") for r in i["ratings"])]
                for i in items]


def review_follow(engine, guidelines: dict, campaign_name: str, request: gr.Request):
    """The queue of the campaign now chosen, the screen cleared of the last one's item;
    for adjudicators and admins only (everyone's campaign choice triggers it, and
    anyone else gets nothing)."""
    with Session(engine) as s:
        if user_of(s, request).role not in REVIEW_ROLES or not campaign_name:
            return [gr.skip()] * (2 + len(DisputedView._fields))
        view = _view(s, guidelines, campaign_of(s, campaign_name), None, None)
    return (adjudication_queue(engine, guidelines, campaign_name, request), "", *view)


def _rationale_of(s: Session, campaign: Campaign, item) -> Rationale:
    """The rationale behind an item number (any of its raters' numbers) in the campaign."""
    if item is None or item == "":
        raise gr.Error(CHOOSE_FIRST)
    number = int(item)
    assignment = s.get(Assignment, number)
    if assignment is None or assignment.campaign_id != campaign.id:
        raise gr.Error(f"There is no item {number} in campaign {campaign.name}.")
    return s.get(Rationale, assignment.rationale_id)


def _view(s: Session, guidelines: dict, campaign: Campaign, rationale: Rationale | None,
          item: int | None) -> DisputedView:
    cleared = dict(decision=gr.update(value=None), accuracy=gr.update(value=None),
                   faithfulness=gr.update(value=None), flags=[], reason="")
    if rationale is None:
        return DisputedView(None, "", "", "", [], **cleared)
    record = patient_record(s, s.get(Patient, rationale.patient_id))
    ratings = adjudication.latest_ratings(s, campaign.id).get(rationale.id, [])
    table = [[r["rater"], r["item"], r["accuracy"], r["faithfulness"],
              ", ".join(flag_name(guidelines, f) for f in r["flags"]), r["comment"]]
             for r in sorted(ratings, key=lambda r: r["item"])]
    label = "will" if rationale.predicted_label else "will not"
    ids = {i["id"] for i in record["items"]}
    return DisputedView(item, history_html(record, rationale.cited_evidence_ids),
                        rationale_html(rationale.text, rationale.steps, ids),
                        f"**Predicted:** the patient {label} be diagnosed with ADRD within "
                        "five years.", table, **cleared)


def load_disputed(engine, guidelines: dict, campaign_name: str, item, request: gr.Request):
    """Open an item by any of its raters' numbers."""
    with Session(engine) as s:
        user_of(s, request, REVIEW_ROLES)
        campaign = campaign_of(s, campaign_name)
        rationale = _rationale_of(s, campaign, item)
        return _view(s, guidelines, campaign, rationale, int(item))


def load_selected(engine, guidelines: dict, campaign_name: str, evt: gr.SelectData,
                  request: gr.Request):
    """Open the queue row that was clicked (its first item number)."""
    row = evt.row_value or []
    found = re.match(r"\s*(\d+)", str(row[0])) if row else None
    if found is None:
        raise gr.Error(CHOOSE_FIRST)
    return load_disputed(engine, guidelines, campaign_name, int(found.group(1)), request)


def adjudicate(engine, guidelines: dict, campaign_name: str, item, decision: str, accuracy,
               faithfulness, flags, reason: str, request: gr.Request):
    """Record the decision, say so, and open the next disputed item."""
    with Session(engine) as s:
        user = user_of(s, request, REVIEW_ROLES)
        campaign = campaign_of(s, campaign_name)
        rationale = _rationale_of(s, campaign, item)
        try:
            row = adjudication.decide(s, campaign=campaign, rationale_id=rationale.id,
                                      adjudicator=user, decision=decision,
                                      address=address_of(request),
                                      accuracy=int(accuracy) if accuracy else None,
                                      faithfulness=int(faithfulness) if faithfulness else None,
                                      flags=list(flags or []), reason=reason or "")
        except (PermissionError, ValueError, TypeError) as exc:
            raise gr.Error(str(exc)) from None
        done = (f"Recorded {row.decision} for item {int(item)}"
                + (f" (revision {row.revision})" if row.revision > 1 else "") + ".")
        remaining = adjudication.queue(s, campaign)
        if remaining:
            following = s.get(Rationale, remaining[0]["rationale_id"])
            number = min(r["item"] for r in remaining[0]["ratings"])
            after = f"Now showing item {number} ({len(remaining)} left in the queue)."
        else:
            following, number = None, None
            after = "The queue is empty."
        view = _view(s, guidelines, campaign, following, number)
    gr.Info(f"{done} {after}")
    return (adjudication_queue(engine, guidelines, campaign_name, request),
            f"**✓ {done}** {after}", *view)


def adjudicate_tab(engine, campaign_dd, guidelines: dict) -> gr.Tab:
    """Build the tab (hidden until a role allows) inside the current Blocks; wire it."""
    with gr.Tab("Adjudicate", visible=False, id="adjudicate") as tab:
        gr.Markdown("Disputed items, largest disagreement first. **Click a row** to open "
                    "it; items go by the numbers the annotators see.")
        queue_btn = gr.Button("Refresh queue", size="sm")
        queue_table = gr.Dataframe(headers=QUEUE_HEADERS, datatype=["str"] * len(QUEUE_HEADERS),
                                   interactive=False, elem_id="adjudication_queue", wrap=True)
        with gr.Row():
            item_box = gr.Number(label="Item (any annotator's number)", precision=0,
                                 elem_id="adjudicate_item", scale=0, min_width=220)
            load_btn = gr.Button("Load item", scale=0)
        with gr.Row():
            with gr.Column(scale=3):
                history = gr.HTML(elem_id="adjudicate_history")
            with gr.Column(scale=2):
                rationale = gr.HTML(elem_id="adjudicate_rationale")
                label = gr.Markdown(elem_id="adjudicate_label")
        ratings = gr.Dataframe(headers=RATING_HEADERS, interactive=False, wrap=True,
                               elem_id="adjudicate_ratings")
        decision = gr.Radio(["approve", "reject"], label="Decision", elem_id="decision_radio")
        dims = guidelines["dimensions"]
        final_accuracy = gr.Radio(rubric_choices(guidelines, "accuracy"),
                                  label="Final medical accuracy",
                                  info=dims["accuracy"]["question"], elem_id="final_accuracy")
        final_faithfulness = gr.Radio(rubric_choices(guidelines, "faithfulness"),
                                      label="Final faithfulness",
                                      info=dims["faithfulness"]["question"],
                                      elem_id="final_faithfulness")
        final_flags = gr.CheckboxGroup([(guidelines["flags"][k], k) for k in FLAGS],
                                       label="Final flags", elem_id="final_flags")
        reason = gr.Textbox(
            label=f"Reason (required, up to {ADJUDICATION_REASON_MAX_CHARS:,} characters)",
            max_length=ADJUDICATION_REASON_MAX_CHARS, elem_id="adjudicate_reason")
        decide_btn = gr.Button("Record decision", variant="primary", elem_id="decide_btn")
        status = gr.Markdown(elem_id="adjudicate_status")
        corrections_panel(engine, campaign_dd)
    view = [item_box, history, rationale, label, ratings, decision, final_accuracy,
            final_faithfulness, final_flags, reason]
    quiet = {"show_progress": "hidden"}  # an error is a message, never a form covered over
    queue = bound(adjudication_queue, engine, guidelines)
    queue_btn.click(queue, campaign_dd, queue_table, api_name="adjudication_queue")
    tab.select(queue, campaign_dd, queue_table, api_name="adjudication_queue_open")
    campaign_dd.change(bound(review_follow, engine, guidelines), campaign_dd,
                       [queue_table, status, *view], api_name="adjudication_follow")
    queue_table.select(bound(load_selected, engine, guidelines), campaign_dd, view,
                       api_name="load_selected", **quiet)
    load_btn.click(bound(load_disputed, engine, guidelines), [campaign_dd, item_box], view,
                   api_name="load_disputed", **quiet)
    decide_btn.click(bound(adjudicate, engine, guidelines),
                     [campaign_dd, item_box, decision, final_accuracy, final_faithfulness,
                      final_flags, reason], [queue_table, status, *view],
                     api_name="adjudicate", **quiet)
    return tab
