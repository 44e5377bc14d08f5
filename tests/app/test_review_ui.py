"""The review screens' handlers through the app's API (gradio_client), on SQLite and
PostgreSQL: accounts managed from the Admin tab, adjudication by the annotators' item
numbers, the agreement report, the export policy that follows the campaign, landing."""

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import audit, migrate, users
from annotation_db import campaigns as camp
from annotation_db.models import Adjudication, Assignment
from annotation_db.session import make_engine
from app.screens.admin import _untouched, default_policy
from tests.helpers import PASSWORD, add_users, client, seed_rationales, serving

pytestmark = pytest.mark.server  # the app's server (or the CLI) as a process or thread


@pytest.fixture
def review_server(database_url):
    """pilot (ann and bob on every item, one item rated by both) and empty (no ratings)."""
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    add_users(engine, ann="annotator", bob="annotator", judy="adjudicator", root="admin",
              rita="researcher")
    run_id = seed_rationales(engine, n=4, gold=0)
    with Session(engine) as s:
        pilot = camp.create_campaign(s, name="pilot", run_ids=[run_id],
                                     annotators=["ann", "bob"], k=2, claim_review=False)
        camp.create_campaign(s, name="empty", run_ids=[run_id], annotators=["ann"], k=1,
                             claim_review=False)
        ann_item = camp.next_assignment(s, pilot, users.require_user(s, "ann"))
        bob_item = s.execute(select(Assignment).where(
            Assignment.campaign_id == pilot.id, Assignment.rationale_id == ann_item.rationale_id,
            Assignment.user_id == users.require_user(s, "bob").id)).scalars().one()
        camp.submit(s, assignment_id=ann_item.id, user=users.require_user(s, "ann"),
                    accuracy=5, faithfulness=5, flags=[])
        camp.submit(s, assignment_id=bob_item.id, user=users.require_user(s, "bob"),
                    accuracy=1, faithfulness=1, flags=["hallucinated_fact"])
        items = (ann_item.id, bob_item.id)
    with serving(engine) as url:
        yield engine, url, items
    engine.dispose()


def _changes(engine, target: str) -> list[tuple]:
    with Session(engine) as s:
        return [(e.action, e.actor, e.address) for e in reversed(audit.list_events(s))
                if e.target == target]


def test_each_role_is_sent_to_its_own_tab(review_server):
    from types import SimpleNamespace

    from app.ui import list_my_campaigns

    engine, _, _ = review_server
    # (the tab a role lands on is layout, which gradio_client does not return)
    landing = {name: list_my_campaigns(engine, SimpleNamespace(username=name)).tabs.selected
               for name in ("ann", "judy", "root", "rita")}
    assert landing == {"ann": "annotate", "judy": "adjudicate", "root": "admin",
                       "rita": "runs"}


def test_only_admins_manage_accounts_and_each_change_names_the_admin(review_server):
    engine, url, _ = review_server
    with pytest.raises(Exception, match="role does not allow"):
        client(url, "ann").predict("mallory", "admin", "long enough!", api_name="/users_add")
    root = client(url, "root")
    with pytest.raises(Exception, match="passwords need at least 8 characters"):
        root.predict("dr.new", "annotator", "short", api_name="/users_add")
    with pytest.raises(Exception, match="username 'd' must be 2–64 letters, digits"):
        root.predict("d", "annotator", "long enough!", api_name="/users_add")
    with Session(engine) as s:
        assert users.get_user(s, "mallory") is None and users.get_user(s, "dr.new") is None

    status, table, _, name_box, password_box = root.predict(
        "dr.new", "annotator", "long enough!", api_name="/users_add")
    assert status == "Added dr.new (annotator)." and (name_box, password_box) == ("", "")
    assert ["dr.new", "annotator", "yes"] in [row[:3] for row in table["data"]]
    status, *_ = root.predict("dr.new", "another password", api_name="/users_reset_password")
    assert status.startswith("New password set for dr.new")
    root.predict("dr.new", api_name="/users_unlock")
    root.predict("dr.new", api_name="/users_disable")
    root.predict("dr.new", api_name="/users_enable")
    assert _changes(engine, "dr.new") == [("user_created", "root", "127.0.0.1"),
                                          ("password_reset", "root", "127.0.0.1"),
                                          ("user_unlocked", "root", "127.0.0.1"),
                                          ("user_disabled", "root", "127.0.0.1"),
                                          ("user_enabled", "root", "127.0.0.1")]
    with Session(engine) as s:
        assert users.authenticate(s, "dr.new", "another password") is not None

    with pytest.raises(Exception, match="You cannot disable your own account; ask another "
                                        "admin."):
        root.predict("root", api_name="/users_disable")
    with pytest.raises(Exception, match="no user named 'nobody'"):
        root.predict("nobody", api_name="/users_unlock")
    with pytest.raises(Exception, match="Choose an account first."):
        root.predict("", "whatever password", api_name="/users_reset_password")
    with Session(engine) as s:
        assert users.require_user(s, "root").active
        assert users.authenticate(s, "root", PASSWORD) is not None


def test_adjudication_goes_by_the_numbers_annotators_see(review_server):
    engine, url, (ann_item, bob_item) = review_server
    judy = client(url, "judy")
    with pytest.raises(Exception, match="Choose an item from the queue first."):
        judy.predict("pilot", None, "reject", 2, 2, [], "a reason", api_name="/adjudicate")
    with Session(engine) as s:
        elsewhere = s.execute(select(Assignment.id).where(
            Assignment.campaign_id == camp.get_campaign(s, "empty").id)).scalars().first()
    with pytest.raises(Exception, match=f"There is no item {elsewhere} in campaign pilot."):
        judy.predict("pilot", elsewhere, api_name="/load_disputed")
    with Session(engine) as s:
        assert s.execute(select(Adjudication)).first() is None

    queue = judy.predict("pilot", api_name="/adjudication_queue")["data"]
    assert [row[0] for row in queue] == [f"{ann_item}, {bob_item}"]
    assert queue[0][2] == "no ADRD within 5 years" and queue[0][4] == "Hallucinated fact"
    opened = judy.predict("pilot", bob_item, api_name="/load_disputed")
    assert opened[0] == bob_item
    assert [row[:5] for row in opened[4]["data"]] == [["ann", ann_item, 5, 5, ""],
                                                      ["bob", bob_item, 1, 1,
                                                       "Hallucinated fact"]]
    after, status, *cleared = judy.predict("pilot", bob_item, "approve", 4, 4, [], "fine",
                                           api_name="/adjudicate")
    assert status == f"**✓ Recorded approve for item {bob_item}.** The queue is empty."
    assert after["data"] == [] or after["data"] == [["", "", "", "", "", ""]]
    assert cleared[0] is None  # nothing left to show
    with Session(engine) as s:
        decided = s.execute(select(Adjudication)).scalars().one()
    assert (decided.decision, decided.accuracy, decided.faithfulness) == ("approve", 4, 4)


def test_the_agreement_report_downloads_for_admins_only(review_server):
    _, url, _ = review_server
    with pytest.raises(Exception, match="role does not allow"):
        client(url, "judy").predict("pilot", False, api_name="/agreement_report")
    root = client(url, "root")
    html = Path(root.predict("pilot", False, api_name="/agreement_report")).read_text()
    assert "Agreement report: campaign pilot" in html and "<html" in html
    with pytest.raises(Exception, match="campaign 'empty' has no submitted ratings yet"):
        root.predict("empty", False, api_name="/agreement_report")


def test_the_export_policy_names_the_chosen_campaign_and_keeps_an_edited_one(review_server):
    _, url, _ = review_server
    follow = client(url, "root").predict("pilot", "", api_name="/admin_follow")
    assert follow[0].startswith("**4 items**") and "campaigns: [pilot]" in follow[-1]
    assert "rationales pass" in client(url, "root").predict(follow[-1],
                                                            api_name="/export_preview")
    assert _untouched(default_policy("pilot")) and _untouched("")
    assert not _untouched(default_policy("pilot").replace("min_ratings: 2", "min_ratings: 1"))
    assert not _untouched("campaigns: [pilot, empty]\n")
