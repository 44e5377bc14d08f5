"""Keyboard-first annotation that cannot misfire, in a real headless Chromium (Debian's).

Shortcuts act only when focus is on nothing or in the item under review; Enter on a
focused button presses that button only; the number keys score the dimension that holds
focus; an annotator scores, revises the previous item and skips without the mouse.
"""

import re
from contextlib import contextmanager

import pytest
from sqlalchemy import select
from sqlmodel import Session

from annotation_db import campaigns as camp
from annotation_db import users
from annotation_db.models import Annotation, Assignment
from tests.app.browser_kit import LAPTOP, serve_app, signed_in, tab_until

ANNOTATORS = ("ann", "bob", "cat", "dan", "eve")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """Five annotators who each rate all five items of one campaign (k = 5); each test signs
    in as its own annotator."""

    def pilot(s: Session, run_id: int) -> None:
        camp.create_campaign(s, name="pilot", run_ids=[run_id], annotators=list(ANNOTATORS),
                             k=len(ANNOTATORS), claim_review=False)

    with serve_app(tmp_path_factory.mktemp("keys"), dict.fromkeys(ANNOTATORS, "annotator"),
                   setup=pilot) as app:
        yield app.engine, app.url


@contextmanager
def _at_first_item(url, username):
    """Signs in with the keyboard (Enter in the password box) at 1440×900; waits for the
    first item."""
    from playwright.sync_api import expect

    with signed_in(url, username, viewport=LAPTOP, enter=True) as page:
        expect(page.locator("#progress_md")).to_contain_text("0 /", timeout=30_000)
        expect(page.locator("#history_view .ra-item").first).to_be_visible()
        yield page


def _annotations(engine, username: str) -> list[Annotation]:
    with Session(engine) as s:
        user = users.require_user(s, username)
        return list(s.execute(select(Annotation).join(Assignment)
                              .where(Assignment.user_id == user.id)
                              .order_by(Annotation.id)).scalars())


def _item(page) -> str:
    return page.locator("#item_number input").input_value()


def test_enter_on_the_guidelines_opens_them_and_no_key_there_scores_or_submits(app_url):
    from playwright.sync_api import expect

    engine, url = app_url
    with _at_first_item(url, "ann") as page:
        page.locator("#accuracy_radio input[value='4']").check()  # a complete item: a
        page.locator("#faithfulness_radio input[value='4']").check()  # misfire would save it
        tab_until(page, "e => e.innerText && e.innerText.startsWith('Guidelines')")
        page.keyboard.press("3")  # focus is outside the item: not a score
        page.keyboard.press("Enter")
        expect(page.get_by_text("1: Dangerous or plainly wrong medicine")).to_be_visible()
        page.wait_for_timeout(1_000)  # a submit would have come back by now
        expect(page.locator("#progress_md")).to_contain_text("0 /")
        expect(page.locator("#accuracy_radio input[value='4']")).to_be_checked()
    assert _annotations(engine, "ann") == []


def test_a_number_key_scores_the_dimension_that_holds_focus_and_it_is_highlighted(app_url):
    from playwright.sync_api import expect

    engine, url = app_url
    with _at_first_item(url, "bob") as page:
        tab_until(page, "e => e.type === 'radio' && !!e.closest('#faithfulness_radio')")
        expect(page.locator("#faithfulness_radio")).to_have_class(
            re.compile(r"\bra-dim-focus\b"))
        expect(page.locator("#accuracy_radio")).not_to_have_class(
            re.compile(r"\bra-dim-focus\b"))
        page.keyboard.press("2")
        expect(page.locator("#faithfulness_radio input[value='2']")).to_be_checked()
        expect(page.locator("#accuracy_radio input:checked")).to_have_count(0)
    assert _annotations(engine, "bob") == []


def test_after_scoring_a_dimension_the_next_one_holds_focus_and_is_scrolled_into_view(app_url):
    from playwright.sync_api import expect

    _, url = app_url
    with _at_first_item(url, "dan") as page:  # 1440×900: faithfulness starts below the fold
        page.keyboard.press("4")
        expect(page.locator("#accuracy_radio input[value='4']")).to_be_checked()
        expect(page.locator("#faithfulness_radio input:focus")).to_have_count(1)
        expect(page.locator("#faithfulness_radio")).to_be_in_viewport()


def test_an_annotator_scores_revises_the_previous_item_and_skips_without_the_mouse(app_url):
    from playwright.sync_api import expect

    engine, url = app_url
    with _at_first_item(url, "cat") as page:
        progress = page.locator("#progress_md")
        first = _item(page)
        page.keyboard.press("4")  # accuracy, then faithfulness holds focus
        page.keyboard.press("5")
        page.keyboard.press("Enter")
        expect(progress).to_contain_text("1 /", timeout=15_000)
        second = _item(page)
        assert second != first

        page.keyboard.press("p")  # the previous item, every value prefilled
        expect(page.locator("#item_number input")).to_have_value(first, timeout=15_000)
        expect(page.locator("#accuracy_radio input[value='4']")).to_be_checked()
        expect(page.locator("#faithfulness_radio input[value='5']")).to_be_checked()
        page.keyboard.press("3")  # revise accuracy; faithfulness stays 5
        page.keyboard.press("Enter")
        expect(page.locator("#item_number input")).not_to_have_value(first, timeout=15_000)

        skipped = _item(page)
        page.keyboard.press("s")  # asks for a reason first: focus goes to the reason box
        page.keyboard.type("record too thin to judge")
        page.keyboard.press("Enter")
        expect(page.locator("#item_number input")).not_to_have_value(skipped, timeout=15_000)

        taken_back = _item(page)  # a second skip, taken back with u
        page.keyboard.press("s")
        page.keyboard.type("not sure")
        page.keyboard.press("Enter")
        expect(page.locator("#item_number input")).not_to_have_value(taken_back,
                                                                     timeout=15_000)
        expect(page.locator("#undo_btn")).to_be_visible()  # the undo notice
        page.keyboard.press("u")
        expect(page.locator("#item_number input")).to_have_value(taken_back, timeout=15_000)
    ratings = _annotations(engine, "cat")
    assert [(a.revision, a.accuracy, a.faithfulness) for a in ratings] == [(1, 4, 5), (2, 3, 5)]
    with Session(engine) as s:
        statuses = [s.get(Assignment, int(item)).status for item in (skipped, taken_back)]
    assert statuses == ["skipped", "assigned"]


def test_question_mark_opens_the_keyboard_help_and_escape_closes_it(app_url):
    from playwright.sync_api import expect

    _, url = app_url
    with _at_first_item(url, "eve") as page:
        page.locator("#history_view").click()
        page.keyboard.press("?")
        help_dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
        expect(help_dialog).to_be_visible()
        expect(help_dialog).to_contain_text("previous item")
        page.keyboard.press("4")  # the help is modal: no key reaches the item behind it
        expect(page.locator("#accuracy_radio input:checked")).to_have_count(0)
        page.keyboard.press("Escape")
        expect(help_dialog).to_be_hidden()
        page.keyboard.press("4")
        expect(page.locator("#accuracy_radio input[value='4']")).to_be_checked()
