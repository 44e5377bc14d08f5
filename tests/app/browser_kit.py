"""What the headless-Chromium tests (tests/app/test_browser*.py) share: the app served on a
fresh SQLite database, Debian's Chromium driven by Playwright, signing in, Tab and screenshots.

Importing this module skips the importing test module when Chromium is not installed (or
fails it when ``RATIONALE_AUDIT_REQUIRE_BROWSER=1``).
"""

import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from annotation_db import migrate
from annotation_db.session import make_engine
from tests.helpers import PASSWORD, add_users, free_port, seed_rationales

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    if os.environ.get("RATIONALE_AUDIT_REQUIRE_BROWSER") == "1":
        pytest.fail("RATIONALE_AUDIT_REQUIRE_BROWSER=1 but no chromium on PATH",
                    pytrace=False)
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)",
                allow_module_level=True)

SCREENSHOTS = Path(os.environ.get("RATIONALE_AUDIT_SCREENSHOTS", "test-screenshots"))
VIEWPORT = {"width": 1400, "height": 1000}  # where a page opens unless a test says otherwise
LAPTOP = {"width": 1440, "height": 900}  # a clinician's laptop: Annotate scrolls


class Served(NamedTuple):
    """The app being served: its database, its URL, the Gradio app itself (its
    ``login_guard`` holds the sessions), the seeded run and what ``setup`` returned."""

    engine: Engine
    url: str
    demo: Any
    run_id: int
    seeded: Any


@contextmanager
def serve_app(directory: Path, users: Mapping[str, str], *, rationales: int = 5,
              setup: Callable[[Session, int], Any] | None = None,
              **launch_options) -> Iterator[Served]:
    """The app on a free loopback port, on a new SQLite database in ``directory`` with
    ``users`` (name → role, each with :data:`~tests.helpers.PASSWORD`) and one run of
    ``rationales`` items; ``setup(session, run_id)`` then makes campaigns (and ratings).
    ``launch_options`` go to :func:`app.ui.launch`. Stopped and disposed of on exit."""
    from app.ui import launch

    with ExitStack() as stack:
        engine = make_engine(f"sqlite:///{directory / 'app.sqlite'}")
        stack.callback(engine.dispose)
        migrate.upgrade(engine)
        add_users(engine, **users)
        run_id = seed_rationales(engine, n=rationales, gold=0)
        with Session(engine) as s:
            seeded = setup(s, run_id) if setup else None
        port = free_port()
        demo = launch(engine, port=port, block=False, **launch_options)
        stack.callback(demo.close)
        stack.callback(demo.job_runner.stop)  # callbacks run last first: this one first
        yield Served(engine, f"http://127.0.0.1:{port}/", demo, run_id, seeded)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Debian's) under Playwright, closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


def open_page(browser, url: str, viewport: Mapping[str, int] = VIEWPORT):
    """A new page at ``url`` (the sign-in form, when nobody is signed in)."""
    page = browser.new_page(viewport=dict(viewport))
    page.goto(url)
    return page


def sign_in(page, username: str, password: str = PASSWORD, *, enter: bool = False) -> int:
    """Fills in the sign-in form, sends it (the Login button, or with ``enter`` the
    keyboard: Enter in the password box) and waits for the server's answer to that
    request; returns its HTTP status.

    Waiting for the answer matters: a failed sign-in is answered after a growing delay,
    and the page resets its form when the answer lands. A caller that typed the next
    attempt before then (its "Incorrect Credentials" still showing from the attempt
    before) had its fields emptied and sent them empty: HTTP 422, in the full suite
    twice on 2026-12-06. Each field is also checked to hold its value a moment after
    typing."""
    def is_sign_in(response) -> bool:
        return (response.request.method == "POST"
                and response.url.split("?")[0].rstrip("/").endswith("/login"))

    fill_settled(page.get_by_label("username"), username)
    fill_settled(page.get_by_label("password"), password)
    with page.expect_response(is_sign_in, timeout=60_000) as answer:
        if enter:
            page.get_by_label("password").press("Enter")
        else:
            page.get_by_role("button", name="Login").click()
    return answer.value.status


def log_in(browser, url: str, username: str, *, viewport: Mapping[str, int] = VIEWPORT,
           enter: bool = False):
    """A new page signed in as ``username`` (see :func:`sign_in`): the server has answered
    the sign-in; the app's page may still be loading."""
    page = open_page(browser, url, viewport)
    sign_in(page, username, enter=enter)
    return page


@contextmanager
def signed_in(url: str, username: str, **log_in_options) -> Iterator[Any]:
    """A page signed in as ``username`` (see :func:`log_in`, which takes ``log_in_options``)
    in a Chromium of its own, closed at the end."""
    with chromium() as browser:
        yield log_in(browser, url, username, **log_in_options)


def tab_until(page, predicate_js: str, limit: int = 80) -> None:
    """Presses Tab until the focused element satisfies ``predicate_js`` (a JS function of it)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"({predicate_js})(document.activeElement)"):
            return
    raise AssertionError(f"Tab never reached an element where {predicate_js}")


def fill_settled(field, value: str, *, tries: int = 5) -> None:
    """Types ``value`` into ``field`` and checks it is still there a moment later, typing it
    again if not: a field that mounts when its accordion opens can receive its initial value
    after a fast typist's input (seen once in CI under load)."""
    for _ in range(tries):
        field.fill(value)
        field.page.wait_for_timeout(300)
        if field.input_value() == value:
            return
    raise AssertionError(f"the field kept losing the value {value!r}")


def screenshot(page, name: str, *, full_page: bool = True) -> None:
    """Saves what the page shows as ``name`` under :data:`SCREENSHOTS`."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)
