"""Sign-in throttling, session lifetime and the audit of both, through the running app."""

import time

import httpx
import pytest
from sqlmodel import Session

from annotation_db import audit, migrate, users
from annotation_db.session import make_engine
from app.login_guard import LoginPolicy
from tests.helpers import PASSWORD, add_users, client, serving

WINDOW = 4  # seconds: short, so that the test can wait it out
POLICY = LoginPolicy(max_failures=5, window_seconds=WINDOW, first_delay_seconds=0.01,
                     max_delay_seconds=0.05, idle_minutes=0.05)  # 3 s idle sessions


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('guard') / 'g.sqlite'}")
    migrate.upgrade(engine)
    add_users(engine, ann="annotator", bob="annotator", cat="annotator", dan="annotator",
              root="admin")
    with serving(engine, policy=POLICY) as url:
        yield engine, url
    engine.dispose()


def login(url: str, username: str, password: str, address: str = "") -> httpx.Response:
    return httpx.post(url + "login", data={"username": username, "password": password},
                      timeout=30)


def events(engine, action: str, actor: str | None = None) -> list:
    with Session(engine) as s:
        return [e for e in audit.list_events(s, action=action, limit=1000)
                if actor is None or e.actor == actor]


def test_six_wrong_passwords_throttle_the_account_until_the_window_ends(guarded):
    engine, url = guarded
    codes = [login(url, "ann", "wrong password!").status_code for _ in range(6)]
    assert codes == [400] * 5 + [429]
    refused = login(url, "ann", PASSWORD)  # the right password is refused too, for now
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.json()["detail"]
    assert login(url, "bob", PASSWORD).status_code == 200  # another account is unaffected
    time.sleep(WINDOW + 0.5)
    assert login(url, "ann", PASSWORD).status_code == 200
    assert len(events(engine, "login_failed", "ann")) == 5
    assert len(events(engine, "login_throttled", "ann")) == 2
    assert len(events(engine, "login", "ann")) == 1 and events(engine, "login", "bob")


def test_the_browser_form_parallel_guesses_and_doubled_fields_are_all_counted(guarded):
    """Gradio's login page posts multipart; a burst of parallel guesses is counted one
    by one; a second username field cannot steer the count to another name."""
    from concurrent.futures import ThreadPoolExecutor

    engine, url = guarded
    time.sleep(WINDOW)  # a fresh window for the loopback address
    multipart = httpx.post(url + "login", files={"username": (None, "cat"),
                                                 "password": (None, "wrong password!")})
    assert multipart.status_code == 400
    assert events(engine, "login_failed")[0].actor == "cat"  # newest first
    doubled = httpx.post(url + "login", content=b"username=decoy&username=cat&password=x",
                         headers={"content-type": "application/x-www-form-urlencoded"})
    assert doubled.status_code == 400 and doubled.json()["detail"] == "give one username"
    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(lambda _: login(url, "cat", "wrong password!").status_code,
                                range(8)))
    assert codes == [400] * 4 + [429] * 4  # 1 + 4 failures, then refused
    time.sleep(WINDOW + 0.5)


def test_an_unknown_username_is_throttled_the_same_way(guarded):
    _, url = guarded
    time.sleep(WINDOW)  # a fresh window for the loopback address
    codes = [login(url, "nobody-here", "wrong password!").status_code for _ in range(6)]
    assert codes == [400] * 5 + [429]
    time.sleep(WINDOW + 0.5)


def _guard(tmp_path, **policy):
    from app.login_guard import LoginGuard

    engine = make_engine(f"sqlite:///{tmp_path / 'g.sqlite'}")
    migrate.upgrade(engine)
    with Session(engine) as s:
        users.create_user(s, username="ann", password=PASSWORD, role="annotator")
    return engine, LoginGuard(engine, LoginPolicy(**{"first_delay_seconds": 0, **policy}))


def test_failures_are_answered_ever_more_slowly(tmp_path):
    _, guard = _guard(tmp_path, first_delay_seconds=0.5, max_delay_seconds=3)
    assert [guard.failed("ann", "10.0.0.1") for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert guard.refusal("ann", "10.0.0.1")[0] == "pair"
    assert guard.refusal("cat", "10.0.0.1") is None  # 5 of the address's 20
    for _ in range(15):
        guard.failed("cat", "10.0.0.1")
    assert guard.refusal("dan", "10.0.0.1")[0] == "address"


def test_an_attacker_at_one_address_cannot_lock_a_clinician_out(tmp_path):
    _, guard = _guard(tmp_path)
    for _ in range(5):
        guard.failed("ann", "6.6.6.6")
    assert [guard.refusal("ann", "6.6.6.6")[0] for _ in range(15)] == ["pair"] * 15
    assert guard.refusal("ann", "6.6.6.6")[0] == "address"  # now the address is refused
    assert guard.refusal("ann", "10.1.1.1") is None  # the clinician, from her own address


def test_guesses_from_many_addresses_meet_the_account_wide_limit_until_its_window_ends(
        tmp_path):
    _, guard = _guard(tmp_path, max_failures_per_account=12, window_seconds=2)
    for i in range(12):
        guard.failed("ann", f"7.7.7.{i % 3}")  # 4 each: under the per-address-pair limit
    assert guard.refusal("ann", "10.1.1.1")[0] == "account"
    time.sleep(2.2)
    assert guard.refusal("ann", "10.1.1.1") is None


def test_an_admin_unlock_clears_the_throttle_from_another_process(tmp_path):
    engine, guard = _guard(tmp_path, max_failures_per_account=8)
    for i in range(8):
        guard.failed("ann", f"10.0.0.{i % 2}")
    assert guard.refusal("ann", "10.0.0.1")[0] in ("pair", "account")
    for _ in range(20):
        guard.refusal("ann", "10.0.0.1")  # she keeps trying: her address fills up too
    assert guard.refusal("ann", "10.0.0.1")[0] == "address"
    with Session(engine) as s:  # what `rationale-audit users unlock ann` does
        users.unlock(s, "ann")
    assert guard.refusal("ann", "10.0.0.1") is None
    assert guard.refusal("ann", "10.0.0.0") is None


def test_disabling_or_resetting_a_password_ends_open_sessions(guarded):
    engine, url = guarded
    cat, dan = client(url, "cat"), client(url, "dan")
    assert "cat" in str(cat.predict(api_name="/list_my_campaigns"))
    with Session(engine) as s:
        users.set_active(s, "cat", False, actor="root")
        users.reset_password(s, "dan", "a new password 123", actor="root")
    for gone in (cat, dan):
        with pytest.raises(Exception, match="401 Unauthorized"):  # refused at the door
            gone.predict(api_name="/list_my_campaigns")
    reasons = [e.detail["reason"] for e in events(engine, "session_expired")]
    assert reasons.count("account disabled or password reset") == 2
    assert [e.actor for e in events(engine, "user_disabled")] == ["root"]
    assert [e.target for e in events(engine, "password_reset")] == ["dan"]


def test_an_idle_session_ends_and_sign_out_is_recorded(guarded):
    engine, url = guarded
    bob = client(url, "bob")
    bob.predict(api_name="/list_my_campaigns")
    time.sleep(POLICY.idle_minutes * 60 + 1)
    with pytest.raises(Exception, match="401 Unauthorized"):
        bob.predict(api_name="/list_my_campaigns")
    assert "idle" in [e.detail["reason"] for e in events(engine, "session_expired", "bob")]
    with httpx.Client(base_url=url) as browser:
        assert browser.post("login", data={"username": "bob", "password": PASSWORD}
                            ).status_code == 200
        browser.get("logout")
    assert events(engine, "logout", "bob")


def test_admins_read_the_trail_in_the_app_and_annotators_cannot(guarded):
    _, url = guarded
    rows = client(url, "root").predict(api_name="/audit_events")["data"]
    assert any(r[1] == "login" and r[2] == "root" for r in rows)
    with pytest.raises(Exception, match="Your role does not allow this"):
        client(url, "bob").predict(api_name="/audit_events")


def test_audit_events_hold_no_secrets(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 's.sqlite'}")
    migrate.upgrade(engine)
    with Session(engine) as s:
        with pytest.raises(audit.AuditError, match="no secrets"):
            audit.record(s, "login", actor="ann", password="hunter2")
        with pytest.raises(audit.AuditError, match="unknown audit action"):
            audit.record(s, "rename_everything")
