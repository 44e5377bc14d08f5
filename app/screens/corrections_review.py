"""Proposed corrections, on the Adjudicate screen: each clinician's corrected rationale
beside the one it corrects, with its grounding checks; an adjudicator accepts it (it
becomes a training target in the next export) or rejects it with a reason.
"""

import gradio as gr
from sqlmodel import Session

from annotation_db import corrections
from annotation_db.models import ADJUDICATION_REASON_MAX_CHARS, Rationale
from app.auth import REVIEW_ROLES, address_of, bound, campaign_of, user_of

HEADERS = ["correction", "item", "proposed by", "checks", "original", "corrected", "note"]


def _text(rationale: Rationale) -> str:
    if rationale.steps:
        return " / ".join(f"{k}. {s['step']}" for k, s in enumerate(rationale.steps, start=1))
    return rationale.text


def _checks(rationale: Rationale) -> str:
    grounding = rationale.grounding or {}
    failed = [f"{c['kind']} {c['claim']}" for c in grounding.get("checks", []) if not c["ok"]]
    return "all passed" if not failed else "failed: " + "; ".join(failed[:4])


def correction_queue(engine, campaign_name: str, request: gr.Request) -> list[list]:
    with Session(engine) as s:
        user_of(s, request, roles=REVIEW_ROLES)
        rows = corrections.queue(s, campaign_of(s, campaign_name))
        return [[r["correction"].id, r["source"].id, r["proposed_by"], _checks(r["corrected"]),
                 _text(r["source"]), _text(r["corrected"]), r["correction"].note]
                for r in rows]


def correction_follow(engine, campaign_name: str, request: gr.Request):
    """The corrections of the campaign now chosen, for adjudicators and admins (everyone's
    campaign choice triggers it; anyone else gets nothing)."""
    with Session(engine) as s:
        if user_of(s, request).role not in REVIEW_ROLES or not campaign_name:
            return gr.skip()
    return correction_queue(engine, campaign_name, request)


def decide_correction(engine, campaign_name: str, correction_id, reason: str, accept: bool,
                      request: gr.Request):
    """Accept or reject the correction whose number is given; the refreshed queue and what
    was recorded."""
    if correction_id is None:
        return gr.update(), "Give the number of a correction from the list first."
    with Session(engine) as s:
        user = user_of(s, request, roles=REVIEW_ROLES)
        campaign = campaign_of(s, campaign_name)
        try:
            done = corrections.decide(s, correction_id=int(correction_id), user=user,
                                      accept=accept, reason=reason or "",
                                      address=address_of(request), campaign=campaign)
        except corrections.CorrectionError as exc:
            return gr.update(), f"Not recorded: {exc}."
    return (correction_queue(engine, campaign_name, request),
            f"Correction {done.id} {done.status}."
            + (" It is a training target in the next export." if accept else ""))


def corrections_panel(engine, campaign_dd) -> None:
    """The panel, inside the Adjudicate tab being built; wires its events."""
    with gr.Accordion("Proposed corrections", open=True, elem_id="corrections_panel"):
        gr.Markdown("Corrected rationales proposed by the raters, oldest first. Accepting "
                    "one makes it a training target (the export's `rationale_corrected` and "
                    "`preference` views); rejecting needs a reason.")
        refresh = gr.Button("Refresh corrections", size="sm", elem_id="corrections_refresh")
        table = gr.Dataframe(headers=HEADERS, datatype=["str"] * len(HEADERS),
                             interactive=False, wrap=True, elem_id="corrections_table")
        with gr.Row():
            number = gr.Number(label="Correction", precision=0, elem_id="correction_number",
                               scale=0, min_width=160)
            reason = gr.Textbox(label=f"Reason (required to reject, up to "
                                      f"{ADJUDICATION_REASON_MAX_CHARS:,} characters)",
                                max_length=ADJUDICATION_REASON_MAX_CHARS,
                                elem_id="correction_reason", scale=3)
        with gr.Row():
            accept = gr.Button("Accept correction", variant="primary",
                               elem_id="accept_correction")
            reject = gr.Button("Reject correction", elem_id="reject_correction")
        status = gr.Markdown(elem_id="correction_status")
    quiet = {"show_progress": "hidden"}
    refresh.click(bound(correction_queue, engine), campaign_dd, table,
                  api_name="correction_queue", **quiet)
    campaign_dd.change(bound(correction_follow, engine), campaign_dd, table,
                       api_name="correction_queue_follow", **quiet)
    accept.click(bound(decide_correction, engine), [campaign_dd, number, reason,
                                                    gr.State(True)],
                 [table, status], api_name="accept_correction", **quiet)
    reject.click(bound(decide_correction, engine), [campaign_dd, number, reason,
                                                    gr.State(False)],
                 [table, status], api_name="reject_correction", **quiet)
