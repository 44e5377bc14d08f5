"""Review, admin, landing and sign-in in a real headless Chromium, driven by Playwright:
the adjudicator's queue, the admin's campaign views, report and users, where each role
lands, and what a refused sign-in is told."""

import re

import httpx
import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import audit
from annotation_db import campaigns as camp
from annotation_db import users as accounts
from annotation_db.models import Adjudication, Assignment, Rationale
from app.login_guard_config import LoginPolicy
from tests.app.browser_kit import (
    chromium,
    log_in,
    open_page,
    screenshot,
    serve_app,
    sign_in,
    signed_in,
)
from tests.helpers import PASSWORD

# Two wrong passwords for one account from one address, then refusals; the window is
# the default 15 minutes, so a refusal says "about 15 minutes".
POLICY = LoginPolicy(max_failures=2, max_failures_per_address=200,
                     max_failures_per_account=200, first_delay_seconds=0, max_delay_seconds=0)


def _rate(s: Session, campaign, name: str, rationale_id: int, accuracy: int, faithfulness: int,
          flags=()) -> int:
    """``name`` rates the item of ``rationale_id`` in ``campaign``; its item number."""
    user = accounts.require_user(s, name)
    item = s.execute(select(Assignment).where(
        Assignment.campaign_id == campaign.id, Assignment.user_id == user.id,
        Assignment.rationale_id == rationale_id)).scalars().one()
    camp.submit(s, assignment_id=item.id, user=user, accuracy=accuracy,
                faithfulness=faithfulness, flags=list(flags))
    return item.id


@pytest.fixture(scope="module")
def review_app(tmp_path_factory):
    """pilot: two annotators on every item; two items disputed (the first predicts ADRD),
    one agreed. second: one rating per item, two given."""

    def disputes(s: Session, run_id: int) -> dict:
        pilot = camp.create_campaign(s, name="pilot", run_ids=[run_id],
                                     annotators=["ann", "bob"], k=2, claim_review=False)
        second = camp.create_campaign(s, name="second", run_ids=[run_id],
                                      annotators=["ann", "bob"], k=1, claim_review=False)
        first, other, agreed = s.execute(select(Rationale.id).order_by(Rationale.id)
                                         ).scalars().all()[:3]
        s.get(Rationale, first).predicted_label = True
        s.commit()
        text = s.get(Rationale, first).text  # "rationale N [E1]"
        disputed = {first: (_rate(s, pilot, "ann", first, 5, 5),
                            _rate(s, pilot, "bob", first, 1, 2, ["hallucinated_fact"])),
                    other: (_rate(s, pilot, "ann", other, 4, 4),
                            _rate(s, pilot, "bob", other, 2, 4))}
        _rate(s, pilot, "ann", agreed, 4, 4)
        _rate(s, pilot, "bob", agreed, 4, 4)
        for name in ("ann", "bob"):
            user = accounts.require_user(s, name)
            item = camp.next_assignment(s, second, user)
            camp.submit(s, assignment_id=item.id, user=user, accuracy=3, faithfulness=3,
                        flags=[])
        return {"first": first, "disputed": disputed, "text": text}

    with serve_app(tmp_path_factory.mktemp("review"),
                   {"ann": "annotator", "bob": "annotator", "judy": "adjudicator",
                    "root": "admin", "rita": "researcher", "locked": "annotator"},
                   rationales=6, setup=disputes, policy=POLICY) as app:
        yield app.engine, app.url, app.seeded


def _selected_tab(page):
    return page.locator("[role=tab][aria-selected=true]")


def _choose_campaign(page, name: str) -> None:
    page.locator("#campaign_dd input").click()
    page.get_by_role("option", name=name, exact=True).click()


def test_each_role_lands_on_its_own_work(review_app):
    from playwright.sync_api import expect

    _, url, _ = review_app
    with chromium() as browser:
        for name, role, tab, work in (
                ("judy", "adjudicator", "Adjudicate", "#adjudication_queue [role=gridcell]"),
                ("root", "admin", "Admin", "#admin_figures_note"),
                ("rita", "researcher", "Runs", "#runs_launch_btn"),
                ("ann", "annotator", "Annotate", "#progress_md")):
            page = log_in(browser, url, name)
            expect(page.get_by_text(f"({role})")).to_be_visible(timeout=30_000)
            expect(_selected_tab(page)).to_have_text(tab, timeout=30_000)
            expect(page.locator(work).first).to_be_visible(timeout=30_000)
            page.close()


def test_an_adjudicator_opens_a_queue_row_and_records_a_decision(review_app):
    from playwright.sync_api import expect

    engine, url, seeded = review_app
    first = seeded["first"]
    numbers = sorted(seeded["disputed"][first])  # as ann and bob see the item
    cell = ", ".join(map(str, numbers))
    with signed_in(url, "judy") as page:
        expect(_selected_tab(page)).to_have_text("Adjudicate", timeout=30_000)
        queue = page.locator("#adjudication_queue")
        row = queue.get_by_role("row").filter(has_text=cell)
        expect(row).to_contain_text(seeded["text"], timeout=30_000)
        expect(row).to_contain_text("ADRD within 5 years")

        # Nothing loaded yet: the decision is refused in words, never a traceback.
        page.get_by_role("button", name="Record decision").click()
        expect(page.get_by_text("Choose an item from the queue first.").first).to_be_visible(
            timeout=10_000)
        expect(page.get_by_text("int()")).to_have_count(0)

        item_box = page.locator("#adjudicate_item input")
        row.get_by_text(cell, exact=True).click()  # one click opens the item
        expect(item_box).to_have_value(str(numbers[0]), timeout=15_000)
        # From the keyboard: arrows move along the queue, Enter opens the row.
        other = min(n for r, ns in seeded["disputed"].items() if r != first for n in ns)
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        expect(item_box).to_have_value(str(other), timeout=15_000)
        page.keyboard.press("ArrowUp")
        page.keyboard.press("Enter")
        expect(item_box).to_have_value(str(numbers[0]), timeout=15_000)
        expect(page.locator("#adjudicate_rationale")).to_contain_text(seeded["text"][:-5])
        expect(page.locator("#adjudicate_label")).to_contain_text(
            "the patient will be diagnosed with ADRD")
        ratings = page.locator("#adjudicate_ratings")
        expect(ratings).to_contain_text("Hallucinated fact")
        expect(ratings).to_contain_text(str(numbers[1]))

        # The final scores are the annotators' anchored scales; flags carry their labels.
        page.locator("#decision_radio").get_by_label("reject").check()
        page.locator("#final_accuracy").get_by_label(
            re.compile(r"2 – Several medical errors")).check()
        page.locator("#final_faithfulness").get_by_label(
            re.compile(r"2 – A clear invented")).check()
        page.locator("#final_flags").get_by_label(re.compile(r"Hallucinated fact — ")).check()
        page.locator("#adjudicate_reason textarea").click()
        page.keyboard.type("invented HbA1c")
        page.get_by_role("button", name="Record decision").click()
        status = page.locator("#adjudicate_status")
        expect(status).to_contain_text(f"Recorded reject for item {numbers[0]}",
                                       timeout=15_000)
        expect(queue).not_to_contain_text(cell)
        screenshot(page, "adjudicate.png")
    with Session(engine) as s:
        decided = s.execute(select(Adjudication).where(Adjudication.rationale_id == first)
                            ).scalars().one()
    assert (decided.decision, decided.accuracy, decided.faithfulness, decided.flags,
            decided.comment) == ("reject", 2, 2, ["hallucinated_fact"], "invented HbA1c")


def test_the_admin_screen_follows_the_chosen_campaign(review_app):
    from playwright.sync_api import expect

    _, url, _ = review_app
    with signed_in(url, "root") as page:
        note = page.locator("#admin_figures_note")
        expect(note).to_contain_text("6 ratings so far", timeout=30_000)
        policy = page.locator("#export_policy")
        expect(policy).to_contain_text("campaigns: [pilot]")
        page.get_by_role("button", name="Preview").click()
        expect(page.locator("#export_md")).to_contain_text("rationales pass", timeout=30_000)
        progress = page.locator("#admin_progress img")
        expect(progress).to_be_visible()
        before = progress.get_attribute("src")

        _choose_campaign(page, "second")
        expect(note).to_contain_text("2 ratings so far", timeout=30_000)
        expect(policy).to_contain_text("campaigns: [second]")
        expect(progress).not_to_have_attribute("src", before)
        expect(page.locator("#admin_summary")).to_contain_text("k = 1")
        page.get_by_role("button", name="Refresh", exact=True).click()
        page.wait_for_timeout(2_000)
        expect(note).to_contain_text("2 ratings so far")
        expect(page.locator("#admin_summary")).to_contain_text("k = 1")


def test_the_admin_downloads_the_agreement_report_from_the_tab(review_app):
    from playwright.sync_api import expect

    _, url, _ = review_app
    with signed_in(url, "root") as page:
        expect(page.locator("#admin_figures_note")).to_contain_text("ratings so far",
                                                                   timeout=30_000)
        page.get_by_role("button", name="Agreement report (HTML)").click()
        link = page.locator("#agreement_report_file a").first
        expect(link).to_be_visible(timeout=60_000)
        with page.expect_download() as download:
            link.click()
        html = open(download.value.path(), encoding="utf-8").read()
    assert "<html" in html and "Agreement report: campaign pilot" in html
    assert "Krippendorff" in html


def test_the_admin_adds_resets_disables_and_unlocks_accounts(review_app):
    from playwright.sync_api import expect

    engine, url, _ = review_app

    def sign_in(name, password):
        return httpx.post(url + "login", data={"username": name, "password": password},
                          timeout=30).status_code

    with signed_in(url, "root") as page:
        table, status = page.locator("#users_table"), page.locator("#users_status")
        expect(table).to_contain_text("judy", timeout=30_000)

        page.locator("#new_username input, #new_username textarea").fill("dr.new")
        page.locator("#new_password input").fill("first password")
        page.get_by_role("button", name="Add user").click()
        expect(status).to_contain_text("Added dr.new (annotator)", timeout=15_000)
        expect(table).to_contain_text("dr.new")
        expect(page.locator("#new_password input")).to_have_value("")  # not left on screen
        assert sign_in("dr.new", "first password") == 200
        page.locator("#new_username input, #new_username textarea").fill("dr.new")
        page.locator("#new_password input").fill("first password")
        page.get_by_role("button", name="Add user").click()
        expect(page.get_by_text("user 'dr.new' already exists").first).to_be_visible(
            timeout=15_000)

        page.locator("#account_name input").click()
        page.get_by_role("option", name="dr.new", exact=True).click()
        page.locator("#account_password input").fill("second password")
        page.get_by_role("button", name="Reset password").click()
        expect(status).to_contain_text("New password set for dr.new", timeout=15_000)
        assert sign_in("dr.new", "first password") == 400
        assert sign_in("dr.new", "second password") == 200

        for _ in range(2):
            sign_in("dr.new", "wrong password")
        assert sign_in("dr.new", "second password") == 429  # throttled from here
        page.get_by_role("button", name="Unlock").click()
        expect(status).to_contain_text("Unlocked dr.new", timeout=15_000)
        assert sign_in("dr.new", "second password") == 200

        page.get_by_role("button", name="Disable").click()
        expect(status).to_contain_text("Disabled dr.new", timeout=15_000)
        expect(table.get_by_role("row").filter(has_text="dr.new")).to_contain_text("no")
        assert sign_in("dr.new", "second password") == 400

        page.locator("#account_name input").click()
        page.get_by_role("option", name="root", exact=True).click()
        page.get_by_role("button", name="Disable").click()
        expect(page.get_by_text("You cannot disable your own account").first).to_be_visible(
            timeout=15_000)
        screenshot(page, "admin-users.png")
    with Session(engine) as s:
        changes = [(e.action, e.actor, e.address) for e in reversed(audit.list_events(s))
                   if e.target == "dr.new"]
        assert accounts.require_user(s, "root").active
    assert changes == [("user_created", "root", "127.0.0.1"),
                       ("password_reset", "root", "127.0.0.1"),
                       ("user_unlocked", "root", "127.0.0.1"),
                       ("user_disabled", "root", "127.0.0.1")]


def test_a_throttled_or_unknown_account_is_told_to_try_again_in_minutes(review_app):
    from playwright.sync_api import expect

    _, url, _ = review_app
    told = {}
    with chromium() as browser:
        page = open_page(browser, url)
        wrong = page.get_by_text("Incorrect Credentials")
        refusal = page.get_by_role("alert")
        for name in ("locked", "nobody-here"):
            for password in ("wrong password!", "wrong password!", PASSWORD):
                sign_in(page, name, password, enter=True)  # the keyboard signs in
                if password != PASSWORD:
                    expect(wrong).to_be_visible(timeout=15_000)
                    expect(refusal).to_have_count(0)
            expect(refusal).to_contain_text("Try again in about 15 minutes", timeout=15_000)
            expect(wrong).to_be_hidden()
            told[name] = refusal.inner_text()
            if name == "locked":
                screenshot(page, "sign-in-refused.png", full_page=False)
    # the same words whether the account exists or not
    assert told["locked"] == told["nobody-here"]
    assert told["locked"].startswith("Too many failed sign-ins")
