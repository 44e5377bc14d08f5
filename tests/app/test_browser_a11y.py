"""WCAG 2.2 AA on the four screens, in a real headless Chromium (Debian's): axe-core finds no
serious or critical violation, text (buttons included) reaches 4.5:1, each rating scale is
one labelled radio group and one Tab stop, focus is visible, and the record's lines and the
rationale's citations are reachable by keyboard.
"""

import re
from contextlib import contextmanager

import pytest
from sqlmodel import Session

from annotation_db import campaigns as camp
from annotation_db import users
from tests.app.browser_kit import LAPTOP, serve_app, signed_in, tab_until

AA_TEXT = 4.5  # WCAG 1.4.3, normal-size text
AA_NON_TEXT = 3.0  # WCAG 1.4.11, focus indicators and other graphics


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """An admin (who sees all four tabs and rates too) and two annotators who disagree on
    every item, so Adjudicate has a queue and Admin has figures."""

    def disagreeing(s: Session, run_id: int) -> None:
        campaign = camp.create_campaign(s, name="pilot", run_ids=[run_id],
                                        annotators=["ann", "bob", "root"], k=3, claim_review=False)
        for name, score in (("ann", 1), ("bob", 5)):
            user = users.require_user(s, name)
            while item := camp.next_assignment(s, campaign, user):
                camp.submit(s, assignment_id=item.id, user=user, accuracy=score,
                            faithfulness=score, flags=[])

    with serve_app(tmp_path_factory.mktemp("a11y"),
                   {"ann": "annotator", "bob": "annotator", "root": "admin"},
                   setup=disagreeing) as app:
        yield app.url


def _luminance(rgb: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(foreground: tuple, background: tuple) -> float:
    """The WCAG contrast ratio of two sRGB colours."""
    light, dark = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


# The colour an element draws its text (or outline) in, and the opaque background behind it
# (behind the element itself for an outline, which is drawn outside it).
COLOURS_JS = """(e, prop) => {
  const rgb = (s) => s.match(/[\\d.]+/g).map(Number);
  let bg = prop === "outlineColor" ? e.parentElement : e, back = [255, 255, 255];
  while (bg) {
    const c = rgb(getComputedStyle(bg).backgroundColor);
    if (c.length < 4 || c[3] === 1) { back = c.slice(0, 3); break; }
    bg = bg.parentElement;
  }
  return {fore: rgb(getComputedStyle(e)[prop]).slice(0, 3), back: back};
}"""


def _contrast_of(locator, prop: str = "color") -> float:
    colours = locator.evaluate(COLOURS_JS, prop)
    return contrast(tuple(colours["fore"]), tuple(colours["back"]))


@contextmanager
def _annotate_page(url, username="root"):
    """``username`` signed in (1440×900) and on the Annotate tab, with an item shown."""
    from playwright.sync_api import expect

    with signed_in(url, username, viewport=LAPTOP) as page:
        expect(page.get_by_text(f"Signed in as {username}")).to_be_visible(timeout=30_000)
        page.get_by_role("tab", name="Annotate").click()  # an admin may land on another tab
        expect(page.locator("#history_view .ra-item").first).to_be_visible(timeout=30_000)
        yield page


def _settled(page):
    """The page once no output is pending: Gradio dims a pending output to 20% opacity
    while its event runs, which axe would rightly read as too little contrast."""
    from playwright.sync_api import expect

    expect(page.locator(".pending")).to_have_count(0, timeout=30_000)
    page.wait_for_timeout(400)  # the opacity transition back to full
    return page


def _serious(results) -> list[str]:
    return [f"{v['id']} ({v['impact']}): {v['help']} — "
            + "; ".join(f"{n['target']} {n['html'][:160]}" for n in v["nodes"][:3])
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


def _show(page, tab: str) -> None:
    """Opens a tab and waits until what it loads on opening is on screen."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name=tab).click()
    if tab == "Admin":
        expect(page.locator("#admin_progress img")).to_be_visible(timeout=30_000)
    page.wait_for_timeout(1_000)  # what opening the tab loads (Gradio never goes network-idle)
    page.wait_for_function(  # Gradio fades a component (opacity .2) while it updates
        "() => !document.querySelector('.pending, .generating')", timeout=30_000)
    page.wait_for_timeout(500)


@pytest.mark.parametrize("tab", ["Annotate", "Adjudicate", "Admin", "Runs"])
def test_axe_core_finds_no_serious_or_critical_violation(app_url, tab):
    from axe_playwright_python.sync_playwright import Axe

    with _annotate_page(app_url) as page:
        _show(page, tab)
        found = _serious(Axe().run(_settled(page)))
        if tab == "Annotate":  # the keyboard help too
            page.locator("#history_view").click()
            page.keyboard.press("?")
            page.get_by_role("dialog", name="Keyboard shortcuts").wait_for()
            found += _serious(Axe().run(_settled(page)))
        if tab == "Admin":  # the measured-faithfulness panel, opened from the keyboard
            from playwright.sync_api import expect

            page.get_by_role("button", name="Faithfulness and judge estimates").focus()
            page.keyboard.press("Enter")
            measured = page.locator("#admin_measured")
            # this campaign has no ablation and no judge yet: both say what to run
            expect(measured).to_contain_text("No evidence ablation", timeout=30_000)
            expect(measured).to_contain_text("No estimates with a judge")
            found += _serious(Axe().run(_settled(page)))
    assert found == []


def test_the_questions_and_the_submit_button_reach_aa_contrast(app_url):
    with _annotate_page(app_url) as page:
        measured = {
            "accuracy question": _contrast_of(page.locator("#accuracy_radio .info-text")),
            "faithfulness question": _contrast_of(page.locator("#faithfulness_radio .info-text")),
            "Submit": _contrast_of(page.locator("#submit_btn")),
        }
    print({name: round(ratio, 2) for name, ratio in measured.items()})
    assert {name: ratio for name, ratio in measured.items() if ratio < AA_TEXT} == {}


def test_each_rating_scale_is_one_labelled_radio_group_and_one_tab_stop(app_url):
    from playwright.sync_api import expect

    with _annotate_page(app_url) as page:
        accuracy = page.get_by_role("radiogroup", name="Medical accuracy")
        expect(accuracy).to_have_count(1)
        expect(accuracy).to_have_accessible_description(
            re.compile(r"^Is what the rationale says medically correct"))
        expect(accuracy.get_by_role("radio")).to_have_count(5)
        expect(accuracy.get_by_role(
            "radio", name="3 – Broadly correct but with an error or an important omission.",
            exact=True)).to_have_count(1)
        expect(page.get_by_role("radiogroup", name="Faithfulness to this patient's record")
               ).to_have_count(1)
        tab_until(page, "e => e.type === 'radio' && !!e.closest('#accuracy_radio')")
        page.keyboard.press("Tab")
        expect(page.locator("#faithfulness_radio input:focus")).to_have_count(1)
        page.keyboard.press("Tab")
        expect(page.locator("#flags_box input:focus")).to_have_count(1)


def test_focus_is_visible_on_a_rating_and_on_submit(app_url):
    with _annotate_page(app_url) as page:
        rings = {}
        for name, where in (("rating", "e => e.type === 'radio'"),
                            ("Submit", "e => e.id === 'submit_btn'")):
            tab_until(page, where)
            page.wait_for_timeout(500)  # Gradio's buttons fade their outline in
            focused = page.locator(":focus")
            style = focused.evaluate("e => [getComputedStyle(e).outlineStyle, "
                                     "parseFloat(getComputedStyle(e).outlineWidth)]")
            rings[name] = (style[0] != "none", style[1] >= 2,
                           _contrast_of(focused, "outlineColor") >= AA_NON_TEXT)
    assert rings == {"rating": (True, True, True), "Submit": (True, True, True)}


def test_record_lines_and_citations_are_reachable_by_keyboard(app_url):
    from playwright.sync_api import expect

    with _annotate_page(app_url) as page:
        tab_until(page, "e => e.classList.contains('ra-ref')")  # a citation in the rationale
        page.keyboard.press("Enter")
        expect(page.locator("#history_view #ev-E1")).to_be_focused()
        expect(page.get_by_label("Record item")).to_have_value(re.compile(r"^\[E1\] "),
                                                              timeout=10_000)
        page.keyboard.press("ArrowDown")  # along the record, one line at a time
        expect(page.locator("#history_view #ev-E2")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.get_by_label("Record item")).to_have_value(re.compile(r"^\[E2\] "),
                                                              timeout=10_000)
