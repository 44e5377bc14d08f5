"""The Annotate screen keeps a clinician's work and says what went wrong, in a real headless
Chromium (Debian's), driven by Playwright: refusals beside their control, a banner for an
ended session or a failing server with the form kept, drafts on the server, Previous and
undo, skips that are not done and come back when nobody else can rate the item."""

import re
from contextlib import contextmanager

import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import campaigns as camp
from annotation_db import users
from annotation_db.models import Annotation, Assignment, Draft
from tests.app.browser_kit import screenshot, serve_app, sign_in, signed_in

NAMES = ("ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal", "ida")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The app on a SQLite file; each test has its own annotators and campaign."""
    with serve_app(tmp_path_factory.mktemp("annotate"),
                   dict.fromkeys(NAMES, "annotator")) as served:
        yield served


def _campaign(app, name: str, annotators: list[str], k: int = 2) -> None:
    with Session(app.engine) as s:
        camp.create_campaign(s, name=name, run_ids=[app.run_id], annotators=annotators, k=k,
                             claim_review=False)


def _an_item_is_shown(page) -> None:
    """Waits until the progress line counts items (an item is on screen)."""
    page.locator("#progress_md").filter(has_text=re.compile(r"\d+ / \d+")).wait_for(
        timeout=30_000)


@contextmanager
def _at_an_item(app, username: str):
    """A page signed in as ``username`` (the Login button), once an item is shown."""
    with signed_in(app.url, username) as page:
        _an_item_is_shown(page)
        yield page


def _switch(page, campaign: str) -> None:
    """Choose a campaign and wait for its item (assignment ids differ between campaigns)."""
    from playwright.sync_api import expect

    if page.locator("#campaign_dd input").input_value() == campaign:
        return
    before = page.locator("#item_number input").input_value()
    page.locator("#campaign_dd input").click()
    page.get_by_role("option", name=campaign).click()
    expect(page.locator("#item_number input")).not_to_have_value(before, timeout=15_000)


def _item(page) -> int:
    return int(page.locator("#item_number input").input_value())


def _draft(engine, assignment_id: int) -> tuple | None:
    with Session(engine) as s:
        draft = s.execute(select(Draft).where(Draft.assignment_id == assignment_id)
                          ).scalars().first()
        return draft and (draft.accuracy, draft.faithfulness, draft.flags, draft.comment)


def _annotations(engine, assignment_id: int) -> list[tuple]:
    with Session(engine) as s:
        return [tuple(r) for r in s.execute(
            select(Annotation.revision, Annotation.accuracy, Annotation.faithfulness,
                   Annotation.flags, Annotation.comment)
            .where(Annotation.assignment_id == assignment_id).order_by(Annotation.revision))]


def _holders(engine, assignment_id: int) -> list[str]:
    """The status of every assignment of the same item in the same campaign."""
    with Session(engine) as s:
        mine = s.get(Assignment, assignment_id)
        return sorted(s.execute(select(Assignment.status).where(
            Assignment.campaign_id == mine.campaign_id,
            Assignment.rationale_id == mine.rationale_id)).scalars())


def test_a_refused_submit_or_skip_says_why_beside_the_control_and_keeps_the_form(app):
    from playwright.sync_api import expect

    engine = app.engine
    _campaign(app, "refusals", ["ann", "bob"])
    with _at_an_item(app, "ann") as page:
        item = _item(page)
        page.locator("#accuracy_radio input[value='4']").check()
        page.locator("#comment_box textarea").fill("E2 is misread")
        page.locator("#submit_btn").click()
        error = page.locator("#score_error [role=alert]")
        expect(error).to_have_text("Not submitted: score faithfulness first (keys 1–5).",
                                   timeout=15_000)
        # beside the scales, on screen
        expect(error).to_be_in_viewport()
        expect(page.locator("#accuracy_radio input[value='4']")).to_be_checked()
        expect(page.locator("#comment_box textarea")).to_have_value("E2 is misread")
        assert _item(page) == item and _annotations(engine, item) == []

        page.locator("#skip_btn").click()
        skip_error = page.locator("#skip_error [role=alert]")
        expect(skip_error).to_have_text("Not skipped: say why you skip this item.",
                                        timeout=15_000)
        expect(page.locator("#score_error [role=alert]")).to_have_count(0)
        screenshot(page, "annotate-refused.png")
        with Session(engine) as s:
            assert s.get(Assignment, item).status == "assigned"


def test_an_ended_session_is_a_banner_the_form_is_kept_and_after_signing_in_it_comes_back(app):
    from playwright.sync_api import expect

    engine = app.engine
    _campaign(app, "expiry", ["bob", "cat"])
    with _at_an_item(app, "bob") as page:
        item = _item(page)
        page.locator("#accuracy_radio input[value='2']").check()
        page.locator("#flags_box input[name='hallucinated_fact']").check()
        page.locator("#comment_box textarea").fill("HbA1c is invented")
        expect(page.locator("#draft_status")).to_contain_text("Draft saved at",
                                                              timeout=15_000)
        assert _draft(engine, item) == (2, None, ["hallucinated_fact"], "HbA1c is invented")
        # The session ends (as when it idles out or the account's password is reset).
        store = app.demo.login_guard.store
        for token, name in list(dict.items(store)):
            if name == "bob":
                del store[token]
        page.locator("#faithfulness_radio input[value='3']").check()
        page.locator("#comment_box textarea").fill("HbA1c is invented; E4 misdated")
        page.locator("#submit_btn").click()
        banner = page.locator("#error_banner")
        expect(banner).to_be_visible(timeout=15_000)
        expect(banner).to_contain_text("Your session has ended")
        expect(banner).to_have_attribute("role", "alert")
        expect(banner).to_be_in_viewport()
        # the form is as it was, nothing was stored, the banner stays
        expect(page.locator("#faithfulness_radio input[value='3']")).to_be_checked()
        expect(page.locator("#comment_box textarea")).to_have_value(
            "HbA1c is invented; E4 misdated")
        page.wait_for_timeout(1_500)
        expect(banner).to_be_visible()
        screenshot(page, "annotate-session-ended.png")
        assert _annotations(engine, item) == []

        banner.get_by_role("button", name="Sign in again").click()
        sign_in(page, "bob")
        expect(page.locator("#item_number input")).to_have_value(str(item), timeout=30_000)
        expect(page.locator("#accuracy_radio input[value='2']")).to_be_checked()
        expect(page.locator("#flags_box input[name='hallucinated_fact']")).to_be_checked()
        # what was changed after the session ended comes back too, and reaches the server
        expect(page.locator("#faithfulness_radio input[value='3']")).to_be_checked(
            timeout=15_000)
        expect(page.locator("#comment_box textarea")).to_have_value(
            "HbA1c is invented; E4 misdated")
        expect(page.locator("#draft_status")).to_contain_text("Draft saved at",
                                                              timeout=15_000)
        assert _draft(engine, item) == (2, 3, ["hallucinated_fact"],
                                        "HbA1c is invented; E4 misdated")
        screenshot(page, "annotate-signed-in-again.png")
        page.locator("#submit_btn").click()
        expect(page.locator("#item_number input")).not_to_have_value(str(item), timeout=15_000)
    assert _annotations(engine, item) == [(1, 2, 3, ["hallucinated_fact"],
                                           "HbA1c is invented; E4 misdated")]
    assert _draft(engine, item) is None, "submitting clears the draft"


def test_a_busy_or_failing_server_is_a_banner_until_a_request_succeeds(app):
    from playwright.sync_api import expect

    engine = app.engine
    _campaign(app, "busy", ["cat", "dan"])
    with _at_an_item(app, "cat") as page:
        item = _item(page)
        page.locator("#accuracy_radio input[value='5']").check()
        page.locator("#faithfulness_radio input[value='5']").check()
        # a proxy in front of the app refuses, then the app itself refuses an item that
        # is not the user's (its message is shown, not a blank screen)
        page.route("**/gradio_api/run/**", lambda route: route.fulfill(
            status=429, content_type="application/json",
            body='{"detail": "Too many requests"}'))
        page.locator("#submit_btn").click()
        banner = page.locator("#error_banner")
        expect(banner).to_contain_text("The server is busy (too many requests): wait a "
                                       "minute, then try again. Your form is kept.",
                                       timeout=15_000)
        page.unroute("**/gradio_api/run/**")
        expect(page.locator("#faithfulness_radio input[value='5']")).to_be_checked()
        assert _annotations(engine, item) == []
        page.get_by_text("My ratings (revise)").click()
        page.get_by_label("Item to revise").fill("999999")
        page.get_by_role("button", name="Open for revision").click()
        expect(banner).to_contain_text("That item is not in your queue. Your form is kept.",
                                       timeout=15_000)
        page.locator("#submit_btn").click()  # the next request that works clears it
        expect(page.locator("#item_number input")).not_to_have_value(str(item), timeout=15_000)
        expect(banner).to_be_hidden()
    assert [r[:3] for r in _annotations(engine, item)] == [(1, 5, 5)]


def test_drafts_come_back_on_reload_and_after_switching_campaigns_and_go_on_submit(app):
    from playwright.sync_api import expect

    engine = app.engine
    _campaign(app, "drafts-a", ["dan", "eve"])
    _campaign(app, "drafts-b", ["dan", "eve"])
    with _at_an_item(app, "dan") as page:
        _switch(page, "drafts-a")
        expect(page.locator("#progress_md")).to_contain_text("0 / 5", timeout=15_000)
        item = _item(page)
        page.locator("#faithfulness_radio input[value='4']").check()
        page.locator("#flags_box input[name='missed_key_risk_factor']").check()
        page.locator("#comment_box textarea").fill("misses the statin")
        expect(page.locator("#draft_status")).to_contain_text("Draft saved at",
                                                              timeout=15_000)
        _switch(page, "drafts-b")
        expect(page.locator("#item_number input")).not_to_have_value(str(item),
                                                                     timeout=15_000)
        expect(page.locator("#comment_box textarea")).to_have_value("")
        _switch(page, "drafts-a")
        expect(page.locator("#item_number input")).to_have_value(str(item), timeout=15_000)
        expect(page.locator("#comment_box textarea")).to_have_value("misses the statin")
        expect(page.locator("#draft_status")).to_contain_text("Draft restored")

        page.reload()
        _an_item_is_shown(page)
        _switch(page, "drafts-a")
        expect(page.locator("#item_number input")).to_have_value(str(item), timeout=30_000)
        expect(page.locator("#faithfulness_radio input[value='4']")).to_be_checked()
        expect(page.locator("#flags_box input[name='missed_key_risk_factor']")).to_be_checked()
        expect(page.locator("#comment_box textarea")).to_have_value("misses the statin")
        assert _annotations(engine, item) == [], "a draft is not a rating"
        page.locator("#accuracy_radio input[value='3']").check()
        page.locator("#submit_btn").click()
        expect(page.locator("#progress_md")).to_contain_text("1 / 5", timeout=15_000)
        expect(page.locator("#comment_box textarea")).to_have_value("")
    assert _draft(engine, item) is None
    assert _annotations(engine, item) == [(1, 3, 4, ["missed_key_risk_factor"],
                                           "misses the statin")]


def test_previous_and_open_for_revision_fill_in_every_value_and_revisions_are_appended(app):
    from playwright.sync_api import expect

    engine = app.engine
    _campaign(app, "revise", ["eve", "fay"])
    with _at_an_item(app, "eve") as page:
        _switch(page, "revise")
        expect(page.locator("#progress_md")).to_contain_text("0 / 5", timeout=15_000)
        first = _item(page)
        page.locator("#accuracy_radio input[value='4']").check()
        page.locator("#faithfulness_radio input[value='5']").check()
        page.locator("#flags_box input[name='unsafe_or_misleading']").check()
        page.locator("#comment_box textarea").fill("dose advice is unsafe")
        page.locator("#submit_btn").click()
        expect(page.locator("#progress_md")).to_contain_text("1 / 5", timeout=15_000)
        second = _item(page)

        page.locator("#previous_btn").click()
        expect(page.locator("#item_number input")).to_have_value(str(first), timeout=15_000)
        expect(page.locator("#progress_md")).to_contain_text(
            f"revising item {first}: your rating (revision 1) is filled in")
        expect(page.locator("#accuracy_radio input[value='4']")).to_be_checked()
        expect(page.locator("#faithfulness_radio input[value='5']")).to_be_checked()
        expect(page.locator("#flags_box input[name='unsafe_or_misleading']")).to_be_checked()
        expect(page.locator("#comment_box textarea")).to_have_value("dose advice is unsafe")
        screenshot(page, "annotate-previous.png")
        page.locator("#accuracy_radio input[value='2']").check()
        page.locator("#submit_btn").click()
        # back to the open item, where the rater was
        expect(page.locator("#item_number input")).to_have_value(str(second), timeout=15_000)
        expect(page.locator("#undo_toast")).to_contain_text(f"Saved item {first} (revision 2).")
        page.locator("#undo_close").click()  # the toast is put away
        expect(page.locator("#undo_toast")).to_be_hidden()

        page.get_by_text("My ratings (revise)").click()
        page.get_by_label("Item to revise").fill(str(first))
        page.get_by_role("button", name="Open for revision").click()
        expect(page.locator("#item_number input")).to_have_value(str(first), timeout=15_000)
        expect(page.locator("#accuracy_radio input[value='2']")).to_be_checked()
        expect(page.locator("#flags_box input[name='unsafe_or_misleading']")).to_be_checked()
        expect(page.locator("#comment_box textarea")).to_have_value("dose advice is unsafe")
        page.locator("#back_btn").click()
        expect(page.locator("#item_number input")).to_have_value(str(second), timeout=15_000)
    assert _annotations(engine, first) == [
        (1, 4, 5, ["unsafe_or_misleading"], "dose advice is unsafe"),
        (2, 2, 5, ["unsafe_or_misleading"], "dose advice is unsafe")]


def test_the_undo_toast_takes_a_skip_back_and_reopens_a_submission(app):
    from playwright.sync_api import expect

    engine = app.engine
    _campaign(app, "undo", ["fay", "gus", "hal"], k=1)
    with _at_an_item(app, "fay") as page:
        _switch(page, "undo")
        expect(page.locator("#progress_md")).to_contain_text("0 /", timeout=15_000)
        skipped = _item(page)
        page.locator("#skip_reason textarea, #skip_reason input").fill("pressed by mistake")
        page.locator("#skip_btn").click()
        toast = page.locator("#undo_toast")
        expect(toast).to_contain_text(f"Skipped item {skipped}.", timeout=15_000)
        expect(toast).to_be_in_viewport()
        expect(page.locator("#progress_md")).to_contain_text("1 skipped")
        screenshot(page, "annotate-undo-toast.png")
        page.locator("#undo_btn").click()
        expect(page.locator("#item_number input")).to_have_value(str(skipped), timeout=15_000)
        expect(page.locator("#progress_md")).to_contain_text("skip taken back")
        expect(toast).to_be_hidden()
        assert _holders(engine, skipped) == ["assigned"], (
            "open again, and the copy handed on is withdrawn")

        page.locator("#accuracy_radio input[value='3']").check()
        page.locator("#faithfulness_radio input[value='3']").check()
        page.locator("#submit_btn").click()
        expect(toast).to_contain_text(f"Saved item {skipped}.", timeout=15_000)
        page.locator("#undo_btn").click()
        expect(page.locator("#item_number input")).to_have_value(str(skipped), timeout=15_000)
        expect(page.locator("#accuracy_radio input[value='3']")).to_be_checked()
        expect(page.locator("#progress_md")).to_contain_text("revising")


def test_a_skip_is_not_done_and_the_item_comes_back_when_nobody_else_can_rate_it(app):
    """k = 2 with two annotators: the second rating can only be the skipper's."""
    from playwright.sync_api import expect

    engine = app.engine
    _campaign(app, "pool", ["hal", "ida"])
    with Session(engine) as s:  # ida rates everything
        campaign, ida = camp.get_campaign(s, "pool"), users.require_user(s, "ida")
        while (item := camp.next_assignment(s, campaign, ida)) is not None:
            camp.submit(s, assignment_id=item.id, user=ida, accuracy=4, faithfulness=4,
                        flags=[])
    with _at_an_item(app, "hal") as page:
        _switch(page, "pool")
        expect(page.locator("#progress_md")).to_contain_text("0 / 5", timeout=15_000)
        skipped = _item(page)
        page.locator("#skip_reason textarea, #skip_reason input").fill("need the full notes")
        page.locator("#skip_btn").click()
        expect(page.locator("#progress_md")).to_contain_text("0 / 4 done · 1 skipped",
                                                             timeout=15_000)
        for done in range(1, 5):
            page.locator("#accuracy_radio input[value='4']").check()
            page.locator("#faithfulness_radio input[value='4']").check()
            page.locator("#submit_btn").click()
            expect(page.locator("#progress_md")).to_contain_text(f"{done} / ", timeout=15_000)
        expect(page.locator("#item_number input")).to_have_value(str(skipped))
        expect(page.locator("#progress_md")).to_contain_text(
            f"item {skipped} came back: you skipped it (“need the full notes”), and nobody "
            "else in the campaign can give it the 2 ratings it needs; rate it, or skip it "
            "again to leave it")
        screenshot(page, "annotate-skip-came-back.png")
        page.locator("#accuracy_radio input[value='5']").check()
        page.locator("#faithfulness_radio input[value='4']").check()
        page.locator("#submit_btn").click()
        expect(page.locator("#progress_md")).to_contain_text("5 / 5 done", timeout=15_000)
        expect(page.get_by_text("Your queue is empty")).to_be_visible()
    assert _holders(engine, skipped) == ["submitted", "submitted"], "it reached k = 2"
