"""The annotator's keyboard flow in a real headless Chromium (Debian's), driven by Playwright."""

import os
import re
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import campaigns as camp
from annotation_db import migrate, users
from annotation_db.models import Annotation
from annotation_db.session import make_engine
from app.ui import launch
from tests.helpers import PASSWORD, free_port, seed_rationales

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    if os.environ.get("RATIONALE_AUDIT_REQUIRE_BROWSER") == "1":
        pytest.fail("RATIONALE_AUDIT_REQUIRE_BROWSER=1 but no chromium on PATH",
                    pytrace=False)
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)",
                allow_module_level=True)

SCREENSHOTS = Path(os.environ.get("RATIONALE_AUDIT_SCREENSHOTS", "test-screenshots"))


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('browser') / 'b.sqlite'}")
    migrate.upgrade(engine)
    with Session(engine) as s:
        for name in ("ann", "bob"):
            users.create_user(s, username=name, password=PASSWORD, role="annotator")
        users.create_user(s, username="root", password=PASSWORD, role="admin")
    run_id = seed_rationales(engine, n=5, gold=0)
    with Session(engine) as s:
        camp.create_campaign(s, name="pilot", run_ids=[run_id], annotators=["ann", "bob"], k=2)
    port = free_port()
    demo = launch(engine, port=port, block=False)
    yield engine, f"http://127.0.0.1:{port}/"
    demo.job_runner.stop()
    demo.close()
    engine.dispose()


def _chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"])


def _log_in(browser, url, username):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_label("username").fill(username)
    page.get_by_label("password").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    return page


def test_log_in_score_with_the_keyboard_submit_and_reach_the_next_item(app_url):
    from playwright.sync_api import expect, sync_playwright

    engine, url = app_url
    with sync_playwright() as p:
        browser = _chromium(p)
        page = _log_in(browser, url, "ann")
        progress = page.locator("#progress_md")
        expect(progress).to_contain_text("0 /", timeout=30_000)
        expect(page.locator("#history_view .ra-cited").first).to_be_visible()
        first_item = page.locator("#item_number input").input_value()

        # Clicking a cited id in the rationale shows its record item.
        page.locator("#rationale_view .ra-ref").first.click()
        expect(page.get_by_label("Record item")).to_have_value(re.compile(r"^\[E1\] "),
                                                              timeout=10_000)

        # Typing in the comment box must not score anything.
        page.locator("#comment_box textarea").fill("12345")
        page.locator("#history_view").click()
        expect(page.locator("#accuracy_radio input:checked")).to_have_count(0)

        page.keyboard.press("4")  # accuracy
        page.keyboard.press("5")  # faithfulness (focus moved on)
        expect(page.locator("#accuracy_radio input[value='4']")).to_be_checked()
        expect(page.locator("#faithfulness_radio input[value='5']")).to_be_checked()
        page.keyboard.press("Enter")
        expect(progress).to_contain_text("1 /", timeout=15_000)
        expect(page.locator("#item_number input")).not_to_have_value(first_item)
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "annotate.png"), full_page=True)
        browser.close()
    with Session(engine) as s:
        saved = s.execute(select(Annotation)).scalars().one()
    assert (saved.accuracy, saved.faithfulness, saved.comment) == (4, 5, "12345")
    assert saved.seconds_on_task is not None and saved.seconds_on_task > 0


def test_an_admin_opens_the_admin_tab_and_sees_the_campaign_in_pictures(app_url):
    from playwright.sync_api import expect, sync_playwright

    engine, url = app_url
    with Session(engine) as s:  # both annotators rate two items, so α has something to say
        campaign = camp.get_campaign(s, "pilot")
        for name, scores in (("ann", (4, 5)), ("bob", (4, 4))):
            user = users.require_user(s, name)
            for score in scores:
                item = camp.next_assignment(s, campaign, user)
                camp.submit(s, assignment_id=item.id, user=user, accuracy=score,
                            faithfulness=score, flags=[])
    with sync_playwright() as p:
        browser = _chromium(p)
        page = _log_in(browser, url, "root")
        page.get_by_role("tab", name="Admin").click()  # opening the tab is the only click
        for plot in ("admin_progress", "admin_alpha", "admin_leniency", "admin_gold"):
            expect(page.locator(f"#{plot} img")).to_be_visible(timeout=30_000)
        expect(page.locator("#admin_figures_note")).to_contain_text("ratings so far")
        expect(page.locator("#admin_judge")).to_be_hidden()  # no judge has run
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "admin-figures.png"), full_page=True)
        browser.close()


@pytest.fixture(scope="module")
def runs_url(tmp_path_factory, model_cache):
    from tests.helpers import audited_version

    root = tmp_path_factory.mktemp("browser-runs")
    engine = audited_version(f"sqlite:///{root / 'r.sqlite'}", root / "exports")
    with Session(engine) as s:
        users.create_user(s, username="rita", password=PASSWORD, role="researcher")
        users.create_user(s, username="ann", password=PASSWORD, role="annotator")
    port = free_port()
    demo = launch(engine, port=port, block=False, jobs_dir=str(root / "jobs"),
                  workdir=str(root))
    yield f"http://127.0.0.1:{port}/"
    demo.job_runner.stop()
    demo.close()
    engine.dispose()


def test_a_researcher_opens_runs_sees_the_manifest_and_checks_a_launch(runs_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = _chromium(p)
        page = _log_in(browser, runs_url, "rita")
        expect(page.get_by_text("(researcher)")).to_be_visible(timeout=30_000)
        page.get_by_role("tab", name="Runs").click()
        # Opening the tab lists the versions and shows the newest one's manifest.
        expect(page.get_by_text(re.compile(r"sha256 [0-9a-f]{64}"))).to_be_visible(
            timeout=30_000)
        # The form is generated from the CLI's config: a field set here is in the command.
        page.get_by_label("max steps").fill("3")
        page.get_by_role("button", name="Check", exact=True).click()
        expect(page.get_by_text("rationale-audit train sft --dataset t --max-steps 3")
               ).to_be_visible(timeout=30_000)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "runs-tab.png"), full_page=True)

        annotator = _log_in(browser, runs_url, "ann")
        expect(annotator.get_by_text("(annotator)")).to_be_visible(timeout=30_000)
        expect(annotator.get_by_role("tab", name="Runs")).to_have_count(0)
        browser.close()
