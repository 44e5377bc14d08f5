"""The annotator's keyboard flow in a real headless Chromium (Debian's), driven by Playwright."""

import re

import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import campaigns as camp
from annotation_db import users
from annotation_db.models import Annotation
from tests.app.browser_kit import chromium, fill_settled, log_in, screenshot, serve_app
from tests.helpers import add_users, serving


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    def pilot(s, run_id):
        camp.create_campaign(s, name="pilot", run_ids=[run_id], annotators=["ann", "bob"], k=2,
                             claim_review=False)

    with serve_app(tmp_path_factory.mktemp("browser"),
                   {"ann": "annotator", "bob": "annotator", "root": "admin"},
                   setup=pilot) as app:
        yield app.engine, app.url


def test_log_in_score_with_the_keyboard_submit_and_reach_the_next_item(app_url):
    from playwright.sync_api import expect

    engine, url = app_url
    with chromium() as browser:
        page = log_in(browser, url, "ann")
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
        screenshot(page, "annotate.png")
    with Session(engine) as s:
        saved = s.execute(select(Annotation)).scalars().one()
    assert (saved.accuracy, saved.faithfulness, saved.comment) == (4, 5, "12345")
    assert saved.seconds_on_task is not None and saved.seconds_on_task > 0


def test_an_admin_opens_the_admin_tab_and_sees_the_campaign_in_pictures(app_url):
    from playwright.sync_api import expect

    engine, url = app_url
    with Session(engine) as s:  # both annotators rate two items, so α has something to say
        campaign = camp.get_campaign(s, "pilot")
        for name, scores in (("ann", (4, 5)), ("bob", (4, 4))):
            user = users.require_user(s, name)
            for score in scores:
                item = camp.next_assignment(s, campaign, user)
                camp.submit(s, assignment_id=item.id, user=user, accuracy=score,
                            faithfulness=score, flags=[])
    with chromium() as browser:
        page = log_in(browser, url, "root")
        page.get_by_role("tab", name="Admin").click()  # opening the tab is the only click
        for plot in ("admin_progress", "admin_alpha", "admin_leniency", "admin_gold"):
            expect(page.locator(f"#{plot} img")).to_be_visible(timeout=30_000)
        expect(page.locator("#admin_figures_note")).to_contain_text("ratings so far")
        expect(page.locator("#admin_judge")).to_be_hidden()  # no judge has run
        screenshot(page, "admin-figures.png")


def test_an_admin_reads_measured_faithfulness_beside_the_judge_with_the_keyboard(app_url):
    from gradio_client.exceptions import AppError
    from playwright.sync_api import expect

    from annotation_db import faithfulness
    from annotation_db.models import JudgeRating, JudgeRun, Rationale
    from tests.helpers import client

    engine, url = app_url
    with Session(engine) as s:
        campaign = camp.get_campaign(s, "pilot")
        ids = s.execute(select(Rationale.id).order_by(Rationale.id)).scalars().all()
        run = faithfulness.open_run(s, generation_run_id=campaign.settings["runs"][0],
                                    scorer={"kind": "model", "model": "bundled:x"},
                                    settings={"draws": 2, "seed": 0, "history_budget": 1500})
        faithfulness.store(s, run.id, [{
            "rationale_id": rid, "direction": 1, "shown_items": 9, "cited_shown": 1,
            "cited_missing": 0, "p_full": 0.8, "p_without_cited": 0.8 - 0.1 * (rid % 5),
            "p_only_cited": 0.7, "p_random": [0.78, 0.79], "comprehensiveness": 0.1 * (rid % 5),
            "sufficiency": 0.1, "baseline": 0.015, "claims": []} for rid in ids], seconds=1.0)
        faithfulness.finish(s, run.id, complete=True)
        judge = JudgeRun(campaign_id=campaign.id, content_hash="j" * 64, model="judge-m",
                         backend="vllm", settings={})
        s.add(judge)
        s.flush()
        s.add_all(JudgeRating(judge_run_id=judge.id, rationale_id=rid, accuracy=4,
                              faithfulness=3 + rid % 3, flags=[]) for rid in ids)
        s.commit()
    with chromium() as browser:
        page = log_in(browser, url, "root")
        page.get_by_role("tab", name="Admin").click()
        button = page.get_by_role("button", name="Faithfulness and judge estimates")
        button.focus()
        page.keyboard.press("Enter")
        measured = page.locator("#admin_measured")
        expect(measured).to_contain_text("beat the random baseline", timeout=30_000)
        expect(measured).to_contain_text("Campaign estimates with judge run")
        screenshot(page, "admin-faithfulness.png")
    with pytest.raises(AppError, match="role"):  # annotators never see these numbers
        client(url, "ann").predict("pilot", api_name="/measured_faithfulness")


@pytest.fixture(scope="module")
def runs_url(tmp_path_factory, model_cache, bundled_model):
    from tests.helpers import audited_version

    root = tmp_path_factory.mktemp("browser-runs")
    engine = audited_version(f"sqlite:///{root / 'r.sqlite'}", root / "exports")
    add_users(engine, rita="researcher", ann="annotator")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RATIONALE_AUDIT_CACHE_DIR", str(model_cache))  # the jobs inherit it
        with serving(engine, jobs_dir=str(root / "jobs"), workdir=str(root)) as url:
            yield url
    engine.dispose()


def test_a_researcher_opens_runs_sees_the_manifest_and_checks_a_launch(runs_url):
    from playwright.sync_api import expect

    with chromium() as browser:
        page = log_in(browser, runs_url, "rita")
        expect(page.get_by_text("(researcher)")).to_be_visible(timeout=30_000)
        page.get_by_role("tab", name="Runs").click()
        # Opening the tab lists the versions and shows the newest one's manifest.
        expect(page.get_by_text(re.compile(r"sha256 [0-9a-f]{64}"))).to_be_visible(
            timeout=30_000)
        # The form is generated from the CLI's config: a field set here is in the command.
        page.get_by_text("Advanced: every setting of the SFT run").click()
        fill_settled(page.get_by_label("max steps"), "3")
        page.get_by_role("button", name="Check", exact=True).click()
        expect(page.get_by_text("rationale-audit train sft --dataset t --max-steps 3")
               ).to_be_visible(timeout=60_000)
        screenshot(page, "runs-tab.png")

        annotator = log_in(browser, runs_url, "ann")
        expect(annotator.get_by_text("(annotator)")).to_be_visible(timeout=30_000)
        expect(annotator.get_by_role("tab", name="Runs")).to_have_count(0)


def test_a_researcher_launches_the_quick_check_preset_and_watches_it_finish(runs_url):
    """The preset fills the form; the job's step, tokens/s and time left show in the jobs
    table while it trains (refreshed without a click), then it finishes."""
    from playwright.sync_api import expect

    with chromium() as browser:
        page = log_in(browser, runs_url, "rita")
        expect(page.get_by_text("(researcher)")).to_be_visible(timeout=30_000)
        page.get_by_role("tab", name="Runs").click()
        expect(page.get_by_text(re.compile(r"sha256 [0-9a-f]{64}"))).to_be_visible(
            timeout=30_000)
        page.locator("#runs_preset input").click()
        page.get_by_role("option", name="quick-check").click()
        page.get_by_text("Advanced: every setting of the SFT run").click()
        expect(page.get_by_label("max steps")).to_have_value("4")
        page.get_by_text("Scoring of the SFT run").click()  # a short scoring, for the test
        fill_settled(page.get_by_role("textbox", name=re.compile(r"^limit")), "8")
        page.get_by_role("combobox", name=re.compile(r"^engine")).click()
        page.get_by_role("option", name="transformers").click()
        page.get_by_role("button", name="Check", exact=True).click()
        expect(page.get_by_text(re.compile(r"Memory: about \d+\.\d GiB peak"))).to_be_visible(
            timeout=60_000)
        page.locator("#runs_launch_btn").click()
        expect(page.get_by_text(re.compile(r"Queued job \d+"))).to_be_visible(timeout=30_000)
        jobs = page.locator("#runs_jobs_table")
        expect(jobs).to_contain_text(re.compile(r"step \d / 4 · \d+ tok/s"), timeout=300_000)
        screenshot(page, "runs-progress.png")
        expect(jobs).to_contain_text("finished", timeout=300_000)
