"""The Gradio app through its API (gradio_client), as two annotators and an admin."""

import pytest
from gradio_client import Client
from gradio_client.exceptions import AuthenticationError
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import audit, migrate, users
from annotation_db import campaigns as camp
from annotation_db.models import Annotation, Assignment, GenerationRun
from annotation_db.session import make_engine
from app.screens.annotate import ItemView
from app.ui import build_app
from tests.helpers import add_users, client, seed_rationales, serving

pytestmark = pytest.mark.server  # the app's server (or the CLI) as a process or thread

# the Annotate screen's outputs a client sees (gradio_client leaves out states, buttons, rows)
SHOWN = [f for f in ItemView._fields if f not in ("started", "back_btn", "undo_toast", "undo")]


def shown(outputs) -> dict:
    """A queue event's outputs, by name."""
    return dict(zip(SHOWN, outputs, strict=True))


@pytest.fixture(scope="module")
def annotation_server(tmp_path_factory):
    path = tmp_path_factory.mktemp("ui") / "ui.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    add_users(engine, ann="annotator", bob="annotator", eve="annotator", judy="adjudicator",
              root="admin")
    run_id = seed_rationales(engine, n=6, gold=1)
    with Session(engine) as s:
        camp.create_campaign(s, name="pilot", run_ids=[run_id], annotators=["ann", "bob"], k=2,
                             claim_review=False)
    with serving(engine) as url:
        yield engine, url
    engine.dispose()


def test_every_event_has_an_api_name(annotation_server):
    engine, url = annotation_server
    info = client(url, "ann").view_api(print_info=False, return_format="dict")
    names = set(info["named_endpoints"])
    # what a client sees is exactly what the app registers, each event named on purpose
    # (an unnamed handler would show as its function's name, a lambda as "lambda")
    registered = {f"/{fn.api_name}" for fn in build_app(engine).fns.values()
                  if fn.api_visibility == "public"}
    assert registered == names and not any("lambda" in name for name in names)
    for expected in ("/list_my_campaigns", "/load_next", "/submit_scores", "/skip_item",
                     "/show_evidence", "/my_ratings", "/open_for_revision", "/save_draft",
                     "/previous_item", "/undo_last", "/back_to_queue",
                     "/adjudication_queue", "/load_disputed", "/adjudicate", "/campaign_summary",
                     "/export_preview", "/export_create", "/admin_figures", "/budget_plan",
                     "/measured_faithfulness"):
        assert expected in names


def test_unauthenticated_and_wrong_password_are_rejected(annotation_server):
    _, url = annotation_server
    with pytest.raises(AuthenticationError, match="credentials were not provided"):
        Client(url, verbose=False).predict("pilot", api_name="/load_next")
    with pytest.raises(ValueError, match="Could not login"):
        Client(url, auth=("ann", "not the password"), verbose=False)


def test_annotator_sees_own_queue_scores_and_gets_the_next_item(annotation_server):
    engine, url = annotation_server
    ann = client(url, "ann")
    first = ann.predict("pilot", api_name="/load_next")
    assignment_id = first[0]
    with Session(engine) as s:
        owner = s.get(Assignment, assignment_id).user_id
        assert owner == users.require_user(s, "ann").id
    assert "ra-cited" in first[1] and "ra-ref" in first[2]
    assert "Predicted" in first[3] and "0 / " in first[4]
    assert "model" not in first[2].lower() and first[5] == "", "blinded"
    evidence = ann.predict(assignment_id, "E1", api_name="/show_evidence")
    assert evidence.startswith("[E1]")
    after = ann.predict("pilot", assignment_id, 4, 5, ["missed_key_risk_factor"], "ok",
                        api_name="/submit_scores")
    assert after[0] != assignment_id and "1 / " in after[4]
    with Session(engine) as s:
        saved = s.execute(select(Annotation).where(Annotation.assignment_id == assignment_id)
                          ).scalars().one()
        assert (saved.accuracy, saved.faithfulness, saved.flags) == (4, 5,
                                                                     ["missed_key_risk_factor"])
    mine = ann.predict("pilot", api_name="/my_ratings")
    assert mine["data"][0][0] == assignment_id


def test_an_annotator_cannot_read_or_overwrite_anothers_item(annotation_server):
    engine, url = annotation_server
    bob_item = client(url, "bob").predict("pilot", api_name="/load_next")[0]
    ann = client(url, "ann")
    with pytest.raises(Exception, match="not in your queue"):
        ann.predict("pilot", bob_item, 1, 1, [], "", api_name="/submit_scores")
    with pytest.raises(Exception, match="not in your queue"):
        ann.predict(bob_item, "E1", api_name="/show_evidence")
    with Session(engine) as s:
        assert s.execute(select(Annotation).where(Annotation.assignment_id == bob_item)
                         ).first() is None
    with pytest.raises(Exception, match="role does not allow"):
        ann.predict("pilot", api_name="/adjudication_queue")


def test_ratings_revisions_and_skips_in_the_app_are_audited_with_the_clients_address(
        annotation_server):
    engine, url = annotation_server
    with Session(engine) as s:
        run_id = s.execute(select(GenerationRun.id)).scalars().first()
        camp.create_campaign(s, name="audited", run_ids=[run_id], annotators=["eve"], k=1,
                             claim_review=False)
    eve = client(url, "eve")
    rated = eve.predict("audited", api_name="/load_next")[0]
    skipped = eve.predict("audited", rated, 4, 4, [], "fine", api_name="/submit_scores")[0]
    eve.predict("audited", rated, api_name="/open_for_revision")
    eve.predict("audited", rated, 2, 4, [], "on reflection", api_name="/submit_scores")
    eve.predict("audited", skipped, "cannot read it", api_name="/skip_item")
    with Session(engine) as s:
        events = [(e.action, e.address, e.target) for e in reversed(audit.list_events(s))
                  if e.actor == "eve" and e.action not in ("login", "logout")]
    assert events == [("rating_submitted", "127.0.0.1", f"assignment {rated}"),
                      ("rating_revised", "127.0.0.1", f"assignment {rated}"),
                      ("item_skipped", "127.0.0.1", f"assignment {skipped}")]


def test_missing_scores_are_refused_and_markup_in_comments_stays_text(annotation_server):
    engine, url = annotation_server
    ann = client(url, "ann")
    item = ann.predict("pilot", api_name="/load_next")[0]
    # refused beside the scales, every other output left as it was (the form kept)
    refused = shown(ann.predict("pilot", item, None, 3, [], "", api_name="/submit_scores"))
    assert refused["score_error"] == ("<p class='ra-error' role='alert'>Not submitted: score "
                                      "medical accuracy first (keys 1–5).</p>")
    assert all(value["__type__"] == "update" and "value" not in value
               for name, value in refused.items() if not name.endswith("_error"))
    ann.predict("pilot", item, 2, 2, [], "<script>alert(1)</script>", api_name="/submit_scores")
    with Session(engine) as s:
        saved = s.execute(select(Annotation).where(Annotation.assignment_id == item)
                          ).scalars().one()
    assert saved.comment == "<script>alert(1)</script>"  # stored verbatim, shown as table text
    summary, table = client(url, "root").predict("pilot", api_name="/campaign_summary")
    assert "items" in summary and {row[0] for row in table["data"]} == {"ann", "bob"}


def test_adjudicator_sees_disputed_items_and_decides(annotation_server):
    engine, url = annotation_server
    ann, bob = client(url, "ann"), client(url, "bob")
    with Session(engine) as s:
        ann_id, bob_id = (users.require_user(s, n).id for n in ("ann", "bob"))
        shared = s.execute(select(Assignment.rationale_id).where(
            Assignment.user_id == ann_id, Assignment.status == "assigned")).scalars().all()
        both = s.execute(select(Assignment).where(Assignment.user_id == bob_id,
                                                  Assignment.rationale_id.in_(shared),
                                                  Assignment.status == "assigned")
                         ).scalars().first()
        a_item = s.execute(select(Assignment.id).where(
            Assignment.user_id == ann_id, Assignment.rationale_id == both.rationale_id)
        ).scalar()
        rationale_id, b_item = both.rationale_id, both.id
    ann.predict("pilot", a_item, 5, 5, [], "", api_name="/submit_scores")
    bob.predict("pilot", b_item, 1, 2, ["hallucinated_fact"], "", api_name="/submit_scores")
    judy = client(url, "judy")
    queue = judy.predict("pilot", api_name="/adjudication_queue")
    numbers = ", ".join(map(str, sorted((a_item, b_item))))  # as ann and bob see the item
    assert numbers in [row[0] for row in queue["data"]]
    loaded = judy.predict("pilot", b_item, api_name="/load_disputed")  # either number opens it
    from annotation_db.models import Rationale

    with Session(engine) as s:
        text = s.get(Rationale, rationale_id).text  # "rationale N [E1]"
    assert loaded[0] == b_item and f">{text.split(' [')[0]} [" in loaded[2]
    assert len(loaded[4]["data"]) == 2, "the adjudicator sees every rating"
    after, status, *_ = judy.predict("pilot", a_item, "reject", 2, 2, ["hallucinated_fact"],
                                     "invented HbA1c", api_name="/adjudicate")
    assert numbers not in [row[0] for row in after["data"]]
    assert status.startswith(f"**✓ Recorded reject for item {a_item}.**")


def test_the_admin_figures_are_for_admins_and_say_what_they_hold(annotation_server):
    _, url = annotation_server
    with pytest.raises(Exception, match="role does not allow"):
        client(url, "ann").predict("pilot", api_name="/admin_figures")
    note, progress, alpha, leniency, gold, judge = client(url, "root").predict(
        "pilot", api_name="/admin_figures")
    assert "ratings so far" in note and "No judge has run" in note
    assert progress is not None and leniency is not None and gold is not None


def test_only_admins_reach_the_export_action(annotation_server):
    _, url = annotation_server
    policy = "campaigns: [pilot]\nmin_ratings: 1\nmin_accuracy: 1\nmin_faithfulness: 1\n"
    with pytest.raises(Exception, match="role does not allow"):
        client(url, "judy").predict(policy, api_name="/export_preview")
    preview = client(url, "root").predict(policy, api_name="/export_preview")
    assert "rationales pass" in preview


def test_text_boxes_state_their_limit_and_text_over_it_is_refused_unsaved(annotation_server):
    from annotation_db.models import (
        ADJUDICATION_REASON_MAX_CHARS,
        COMMENT_MAX_CHARS,
        SKIP_REASON_MAX_CHARS,
        Adjudication,
    )

    engine, url = annotation_server
    boxes = {(c["props"].get("label"), c["props"].get("max_length"))
             for c in build_app(engine).get_config_file()["components"]
             if c.get("type") == "textbox"}
    assert {("Comment (up to 5,000 characters)", COMMENT_MAX_CHARS),
            ("Skip reason (up to 500 characters)", SKIP_REASON_MAX_CHARS),
            ("Reason (required, up to 5,000 characters)", ADJUDICATION_REASON_MAX_CHARS)} <= boxes
    ann = client(url, "ann")
    item = ann.predict("pilot", api_name="/load_next")[0]
    too_long = shown(ann.predict("pilot", item, 3, 3, [], "x" * 5_001, api_name="/submit_scores"))
    assert ("Not submitted: the comment is 5,001 characters long; the limit is 5,000 "
            "characters.") in too_long["form_error"]
    nul = shown(ann.predict("pilot", item, 3, 3, [], "fine\x00", api_name="/submit_scores"))
    assert ("Not submitted: the comment contains a NUL character (\\x00), which cannot be "
            "stored; remove it.") in nul["form_error"]
    skip = shown(ann.predict("pilot", item, "y" * 501, api_name="/skip_item"))
    assert "Not skipped: the skip reason is 501 characters long" in skip["skip_error"]
    with Session(engine) as s:
        assignment = s.get(Assignment, item)
        assert assignment.status == "assigned" and assignment.skip_reason is None
        assert s.execute(select(Annotation).where(Annotation.assignment_id == item)).first() is None
        before = len(s.execute(select(Adjudication.id)).all())
    with pytest.raises(Exception, match="the reason is 5,001 characters long"):
        client(url, "judy").predict("pilot", item, "reject", 2, 2, [], "z" * 5_001,
                                    api_name="/adjudicate")
    with Session(engine) as s:
        assert len(s.execute(select(Adjudication.id)).all()) == before
