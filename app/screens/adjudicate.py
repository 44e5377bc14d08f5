"""The Adjudicate screen (adjudicators, admins): the queue of disputed items, each with
every rater's latest scores, and the final decision with its reason."""

import gradio as gr
from sqlmodel import Session

from annotation_db import adjudication
from annotation_db.cohorts import patient_record
from annotation_db.models import ADJUDICATION_REASON_MAX_CHARS, Patient, Rationale
from annotation_db.rubric import FLAGS
from app.auth import REVIEW_ROLES, address_of, bound, campaign_of, user_of
from app.views import history_html, rationale_html


def adjudication_queue(engine, campaign_name: str, request: gr.Request):
    with Session(engine) as s:
        user_of(s, request, REVIEW_ROLES)
        items = adjudication.queue(s, campaign_of(s, campaign_name))
    return [[i["rationale_id"], i["max_range"], ", ".join(i["split_flags"]),
             "; ".join(f"{r['rater']}: A{r['accuracy']} F{r['faithfulness']}"
                       + (f" [{', '.join(r['flags'])}]" if r["flags"] else "")
                       for r in i["ratings"])] for i in items]


def load_disputed(engine, campaign_name: str, rationale_id, request: gr.Request):
    with Session(engine) as s:
        user_of(s, request, REVIEW_ROLES)
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


def adjudicate(engine, campaign_name: str, rationale_id, decision: str, accuracy, faithfulness,
               flags, reason: str, request: gr.Request):
    with Session(engine) as s:
        user = user_of(s, request, REVIEW_ROLES)
        campaign = campaign_of(s, campaign_name)
        try:
            adjudication.decide(s, campaign=campaign, rationale_id=int(rationale_id),
                                adjudicator=user, decision=decision, address=address_of(request),
                                accuracy=int(accuracy) if accuracy else None,
                                faithfulness=int(faithfulness) if faithfulness else None,
                                flags=list(flags or []), reason=reason or "")
        except (PermissionError, ValueError, TypeError) as exc:
            raise gr.Error(str(exc)) from None
    return adjudication_queue(engine, campaign_name, request)


def adjudicate_tab(engine, campaign_dd) -> gr.Tab:
    """Build the tab (hidden until a role allows) inside the current Blocks; wire it."""
    with gr.Tab("Adjudicate", visible=False) as tab:
        queue_btn = gr.Button("Refresh queue")
        queue_table = gr.Dataframe(headers=["item", "largest range", "split flags", "ratings"],
                                   interactive=False)
        disputed_id = gr.Number(label="Item", precision=0)
        load_disputed_btn = gr.Button("Load item")
        with gr.Row():
            disputed_history = gr.HTML()
            disputed_rationale = gr.HTML()
        disputed_ratings = gr.Dataframe(headers=["rater", "accuracy", "faithfulness", "flags",
                                                 "comment"], interactive=False)
        decision_radio = gr.Radio(["approve", "reject"], label="Decision")
        final_accuracy = gr.Radio([1, 2, 3, 4, 5], label="Final medical accuracy")
        final_faithfulness = gr.Radio([1, 2, 3, 4, 5], label="Final faithfulness")
        final_flags = gr.CheckboxGroup(list(FLAGS), label="Final flags")
        decision_reason = gr.Textbox(
            label=f"Reason (required, up to {ADJUDICATION_REASON_MAX_CHARS:,} characters)",
            max_length=ADJUDICATION_REASON_MAX_CHARS)
        decide_btn = gr.Button("Record decision", variant="primary")
    queue_btn.click(bound(adjudication_queue, engine), campaign_dd, queue_table,
                    api_name="adjudication_queue")
    load_disputed_btn.click(bound(load_disputed, engine), [campaign_dd, disputed_id],
                            [disputed_history, disputed_rationale, disputed_ratings],
                            api_name="load_disputed")
    decide_btn.click(bound(adjudicate, engine),
                     [campaign_dd, disputed_id, decision_radio, final_accuracy,
                      final_faithfulness, final_flags, decision_reason],
                     queue_table, api_name="adjudicate")
    return tab
