"""Claim review on the Annotate screen, in a real headless Chromium (Debian's), as a
clinician uses it: each claim of a rationale gets a verdict with the number keys, its cited
lines are outlined in the record, a line it should have cited is marked with ``m`` in the
record, and a partly reviewed item is kept as a draft.
"""

import re
from contextlib import contextmanager

import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import campaigns as camp
from annotation_db import claim_review, users
from annotation_db.claims import claims_of
from annotation_db.models import (
    Annotation,
    Assignment,
    Draft,
    GenerationRun,
    PromptTemplate,
    Rationale,
)
from tests.app.browser_kit import LAPTOP, screenshot, serve_app, signed_in, tab_until

STEPS = [{"step": "An MCI diagnosis is recorded.", "evidence": ["E2"]},
         {"step": "Memory complaints came before it [E3].", "evidence": []},
         {"step": "Age alone raises the five-year risk.", "evidence": []}]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """Two step-by-step rationales of three claims each, in a campaign with claim review
    (k = 1) for each of two annotators."""

    def reviewed(s: Session, run_id: int) -> None:
        prompt = PromptTemplate(name="stepwise", version="1", mode="label-conditioned",
                                format="stepwise", body="b", content_hash="s" * 64)
        s.add(prompt)
        s.flush()
        run = GenerationRun(content_hash="t" * 64, cohort_id=1, prompt_template_id=prompt.id,
                            model="m", backend="vllm", selection={}, sampling_params={},
                            seed=0)
        s.add(run)
        s.flush()
        for patient in (1, 2):
            s.add(Rationale(run_id=run.id, patient_id=patient, format="stepwise",
                            cited_evidence_ids=["E2", "E3", "E1"], steps=STEPS,
                            text=" ".join(step["step"] for step in STEPS),
                            predicted_label=True))
        s.flush()
        for name in ("ann", "bob", "cat"):
            camp.create_campaign(s, name=f"claims-{name}", run_ids=[run.id], annotators=[name],
                                 k=1, claim_review=True)

    with serve_app(tmp_path_factory.mktemp("claims"),
                   {"ann": "annotator", "bob": "annotator", "cat": "annotator",
                    "adj": "adjudicator"}, setup=reviewed) as app:
        yield app.engine, app.url


@contextmanager
def _first_item(url, username):
    from playwright.sync_api import expect

    with signed_in(url, username, viewport=LAPTOP, enter=True) as page:
        expect(page.locator("#claims_view .ra-claim")).to_have_count(3, timeout=30_000)
        yield page


def _claim(page, position: int):
    return page.locator("#claims_view .ra-claim").nth(position - 1)


def _line(page, evidence_id: str):
    return page.locator(f"#history_view li[data-evidence='{evidence_id}']")


def test_a_clinician_reviews_every_claim_marks_a_missing_citation_and_submits_by_keyboard(
        app_url):
    from playwright.sync_api import expect

    engine, url = app_url
    with _first_item(url, "ann") as page:
        expect(_claim(page, 1)).to_have_class(re.compile("ra-dim-focus"))  # the first question
        expect(page.locator("#history_view li.ra-claim-cites")).to_have_count(1)
        expect(_line(page, "E2")).to_have_class(re.compile("ra-claim-cites"))
        page.keyboard.press("1")  # claim 1: supported by the record
        expect(_claim(page, 2)).to_have_class(re.compile("ra-dim-focus"))
        expect(_claim(page, 1)).not_to_have_class(re.compile("ra-dim-focus"))
        expect(page.locator("#history_view li.ra-claim-cites")).to_have_count(1)
        expect(_line(page, "E3")).to_have_class(re.compile("ra-claim-cites"))
        page.keyboard.press("3")  # claim 2: not in the record
        expect(_claim(page, 3)).to_have_class(re.compile("ra-dim-focus"))
        expect(page.locator("#history_view li.ra-claim-cites")).to_have_count(0)
        # claim 3 cites nothing: the age line is the one it should have cited
        page.keyboard.press("r")  # to the record (claim 3 cites nothing: its first line)
        while page.evaluate("document.activeElement.dataset.evidence") != "E1":
            page.keyboard.press("ArrowDown")
        page.keyboard.press("m")
        expect(_claim(page, 3).locator(".ra-should-input")).to_have_value("E1")
        expect(_line(page, "E1")).to_have_class(re.compile("ra-claim-marked"))
        expect(page.locator("#ra_live")).to_have_text("E1 marked for claim 3")
        screenshot(page, "claim-review-marking.png", full_page=False)
        page.keyboard.press("5")  # claim 3 (still highlighted): general medical knowledge
        expect(page.locator("#accuracy_radio")).to_have_class(re.compile("ra-dim-focus"))
        page.keyboard.press("4")  # accuracy
        page.keyboard.press("4")  # faithfulness
        page.keyboard.press("Enter")
        expect(page.locator("#undo_note")).to_contain_text("Saved item", timeout=15_000)
    with Session(engine) as s:
        user = users.require_user(s, "ann")
        rated = s.execute(select(Annotation).join(Assignment)
                          .where(Assignment.user_id == user.id)).scalars().one()
        verdicts = claim_review.verdicts_of(s, rated.id)
        positions = {c.id: c.position for c in claims_of(
            s, s.get(Assignment, rated.assignment_id).rationale_id)}
    assert {positions[claim]: v for claim, v in verdicts.items()} == {
        1: {"verdict": "supported", "should_cite": []},
        2: {"verdict": "not_in_record", "should_cite": []},
        3: {"verdict": "general_knowledge", "should_cite": ["E1"]}}
    assert (rated.accuracy, rated.faithfulness) == (4, 4)


def test_a_claim_left_without_a_verdict_is_named_and_the_partial_review_is_a_draft(app_url):
    from playwright.sync_api import expect

    engine, url = app_url
    with _first_item(url, "bob") as page:
        item = page.locator("#item_number input").input_value()
        page.keyboard.press("2")  # claim 1: partly supported
        page.keyboard.press("4")  # claim 2: contradicted; claim 3 left open
        _claim(page, 3).locator(".ra-should-input").fill("E2")
        page.locator("#accuracy_radio input[value='3']").check()
        page.locator("#faithfulness_radio input[value='3']").check()
        page.get_by_role("button", name="Submit (Enter)").click()
        expect(page.locator("#claim_error")).to_contain_text(
            "give every claim a verdict (claim review is on for this campaign); claim 3 has "
            "none")
        expect(page.locator("#draft_status")).to_contain_text("Draft saved", timeout=10_000)
        page.reload()
        expect(page.locator("#claims_view .ra-claim")).to_have_count(3, timeout=30_000)
        assert page.locator("#item_number input").input_value() == item
        expect(page.locator("#draft_status")).to_contain_text("Draft restored")
        expect(_claim(page, 1).locator("input[value='partly_supported']")).to_be_checked()
        expect(_claim(page, 2).locator("input[value='contradicted']")).to_be_checked()
        expect(_claim(page, 3).locator(".ra-should-input")).to_have_value("E2")
    with Session(engine) as s:
        user = users.require_user(s, "bob")
        draft = s.execute(select(Draft).join(Assignment, Assignment.id == Draft.assignment_id)
                          .where(Assignment.user_id == user.id)).scalars().one()
        marked = [v for v in draft.claim_verdicts.values() if v["verdict"] is None]
        assert marked == [{"verdict": None, "should_cite": ["E2"]}]
        assert s.execute(select(Annotation).join(Assignment)
                         .where(Assignment.user_id == user.id)).first() is None


def test_a_correction_is_checked_refused_for_an_unknown_id_and_accepted_by_an_adjudicator(
        app_url):
    from playwright.sync_api import expect

    engine, url = app_url
    with _first_item(url, "cat") as page:
        tab_until(page, "e => e.innerText && e.innerText.startsWith('Propose a corrected')",
                  limit=150)
        page.keyboard.press("Enter")  # opens the editor, started from the rationale
        editor = page.locator("#correction_box textarea")
        expect(editor).to_have_value(
            "An MCI diagnosis is recorded. [E2]\nMemory complaints came before it [E3].\n"
            "Age alone raises the five-year risk.")
        editor.focus()
        page.keyboard.press("Control+End")
        page.keyboard.type(" [E999]")
        tab_until(page, "e => e.id === 'correction_btn'")
        page.keyboard.press("Enter")
        expect(page.locator("#correction_result")).to_contain_text(
            "Not proposed: E999 is not in this patient's record")
        editor.fill("An MCI diagnosis is recorded [E2].\nMemory complaints came before it "
                    "[E3].\nThe APOE genotype is recorded [E1].")
        page.locator("#correction_note textarea, #correction_note input").fill(
            "the genotype, not age, is in the record")
        page.locator("#correction_btn").click()
        expect(page.locator("#correction_result")).to_contain_text("Correction 1 proposed")
    with signed_in(url, "adj", viewport=LAPTOP) as page:
        expect(page.get_by_text("Signed in as adj")).to_be_visible(timeout=30_000)
        page.get_by_role("tab", name="Adjudicate").click()
        page.locator("#campaign_dd input").click()
        page.get_by_role("option", name="claims-cat").click()
        expect(page.locator("#corrections_table")).to_contain_text("The APOE genotype is "
                                                                   "recorded", timeout=15_000)
        page.locator("#correction_number input").fill("1")
        page.locator("#accept_correction").click()
        expect(page.locator("#correction_status")).to_contain_text("Correction 1 accepted")
    from annotation_db.models import Correction
    with Session(engine) as s:
        row = s.get(Correction, 1)
        corrected = s.get(Rationale, row.rationale_id)
        assert (row.status, users.require_user(s, "adj").id) == ("accepted", row.decided_by)
        assert [c.cited_ids for c in claims_of(s, corrected.id)] == [["E2"], ["E3"], ["E1"]]


def test_the_claims_panel_passes_axe_core(app_url):
    from axe_playwright_python.sync_playwright import Axe

    from tests.app.test_browser_a11y import _serious

    _, url = app_url
    with _first_item(url, "ann") as page:
        page.locator("#claims_view").hover()
        assert _serious(Axe().run(page)) == []
