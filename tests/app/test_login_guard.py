"""Sign-in throttling, session lifetime and the audit of both, through the running app."""

import time

import httpx
import pytest
from sqlmodel import Session

from annotation_db import audit, migrate, users
from annotation_db.session import make_engine
from app.login_guard_config import LoginPolicy
from tests.helpers import PASSWORD, add_users, client, serving

pytestmark = pytest.mark.server  # the app's server (or the CLI) as a process or thread

WINDOW = 4  # seconds (the `guarded` app's clock is advanced past it, never waited on)
POLICY = LoginPolicy(max_failures=5, window_seconds=WINDOW, first_delay_seconds=0.01,
                     max_delay_seconds=0.05, idle_minutes=0.05)  # 3 s idle sessions


class FakeClock:
    """A clock (seconds) that stands still until a test advances it: windows and idle
    times pass at once, and never while a test is still counting on them."""

    def __init__(self, start: float = 1_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def clock():
    return FakeClock()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, clock):
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('guard') / 'g.sqlite'}")
    migrate.upgrade(engine)
    add_users(engine, ann="annotator", bob="annotator", cat="annotator", dan="annotator",
              root="admin")
    with serving(engine, policy=POLICY, clock=clock) as url:
        yield engine, url
    engine.dispose()


def login(url: str, username: str, password: str, address: str = "") -> httpx.Response:
    return httpx.post(url + "login", data={"username": username, "password": password},
                      timeout=30)


def events(engine, action: str, actor: str | None = None) -> list:
    with Session(engine) as s:
        return [e for e in audit.list_events(s, action=action, limit=1000)
                if actor is None or e.actor == actor]


def test_six_wrong_passwords_throttle_the_account_until_the_window_ends(guarded, clock):
    engine, url = guarded
    codes = [login(url, "ann", "wrong password!").status_code for _ in range(6)]
    assert codes == [400] * 5 + [429]
    refused = login(url, "ann", PASSWORD)  # the right password is refused too, for now
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.json()["detail"]
    assert login(url, "bob", PASSWORD).status_code == 200  # another account is unaffected
    clock.advance(WINDOW - 0.5)
    assert login(url, "ann", PASSWORD).status_code == 429  # not yet: the window is open
    clock.advance(1)
    assert login(url, "ann", PASSWORD).status_code == 200
    assert len(events(engine, "login_failed", "ann")) == 5
    assert len(events(engine, "login_throttled", "ann")) == 1  # once per key and window
    assert len(events(engine, "login", "ann")) == 1 and events(engine, "login", "bob")


def test_the_browser_form_parallel_guesses_and_doubled_fields_are_all_counted(guarded,
                                                                             clock):
    """Gradio's login page posts multipart; a burst of parallel guesses is counted one
    by one; a second username field cannot steer the count to another name."""
    from concurrent.futures import ThreadPoolExecutor

    engine, url = guarded
    clock.advance(WINDOW + 0.5)  # a fresh window for the loopback address
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
    clock.advance(WINDOW + 0.5)


def test_an_unknown_username_is_throttled_the_same_way(guarded, clock):
    _, url = guarded
    clock.advance(WINDOW + 0.5)  # a fresh window for the loopback address
    codes = [login(url, "nobody-here", "wrong password!").status_code for _ in range(6)]
    assert codes == [400] * 5 + [429]
    clock.advance(WINDOW + 0.5)


def _guard(tmp_path, clock=None, **policy):
    from app.login_guard import LoginGuard

    engine = make_engine(f"sqlite:///{tmp_path / 'g.sqlite'}")
    migrate.upgrade(engine)
    with Session(engine) as s:
        users.create_user(s, username="ann", password=PASSWORD, role="annotator")
    return engine, LoginGuard(engine, LoginPolicy(**{"first_delay_seconds": 0, **policy}),
                              clock or FakeClock())


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


def test_past_the_account_wide_limit_only_the_addresses_that_failed_are_held(tmp_path):
    clock = FakeClock()
    _, guard = _guard(tmp_path, clock, max_failures_per_account=12, window_seconds=2,
                      max_delay_seconds=8)
    for i in range(12):
        guard.failed("ann", f"7.7.7.{i % 3}")  # 4 each: under the per-address-pair limit
    assert guard.refusal("ann", "7.7.7.1")[0] == "account"  # the guessers' addresses
    assert guard.refusal("ann", "10.1.1.1") is None  # the clinician's: still checked
    assert guard.failed("ann", "8.8.8.8") == 8  # a new guesser: one slow guess, then held
    assert guard.refusal("ann", "8.8.8.8")[0] == "account"
    clock.advance(1.9)
    assert guard.refusal("ann", "7.7.7.1")[0] == "account"  # the window is still open
    clock.advance(0.3)
    assert guard.refusal("ann", "7.7.7.1") is None


def test_a_refusal_says_how_long_until_the_window_ends(tmp_path):
    clock = FakeClock()
    _, guard = _guard(tmp_path, clock, window_seconds=900)
    for _ in range(5):
        guard.failed("ann", "10.0.0.1")
    assert "Try again in about 15 minutes" in guard.refusal("ann", "10.0.0.1")[1]
    clock.advance(600)
    assert "Try again in about 5 minutes" in guard.refusal("ann", "10.0.0.1")[1]
    clock.advance(290)
    assert "Try again in about 1 minute," in guard.refusal("ann", "10.0.0.1")[1]


def test_a_session_ends_when_idle_and_when_its_lifetime_is_over(tmp_path):
    from app.login_guard import SessionStore

    clock = FakeClock()
    _, guard = _guard(tmp_path, clock, idle_minutes=10, max_session_hours=1)
    store = SessionStore(guard)
    store["token"] = "ann"
    clock.advance(10 * 60 - 1)
    assert store.get("token") == "ann"  # not idle long enough
    clock.advance(10 * 60 + 1)
    assert store.get("token") is None  # idle past ten minutes
    store["token"] = "ann"
    for _ in range(6):  # in use every nine minutes ...
        clock.advance(9 * 60)
        assert store.get("token") == "ann"
    clock.advance(9 * 60)  # ... but 63 minutes after sign-in
    assert store.get("token") is None
    reasons = [e.detail["reason"] for e in events(guard.engine, "session_expired", "ann")]
    assert reasons == ["lifetime", "idle"]  # newest first


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


def test_an_idle_session_ends_and_sign_out_is_recorded(guarded, clock):
    engine, url = guarded
    bob = client(url, "bob")
    bob.predict(api_name="/list_my_campaigns")
    clock.advance(POLICY.idle_minutes * 60 - 1)
    bob.predict(api_name="/list_my_campaigns")  # not idle long enough: still signed in
    clock.advance(POLICY.idle_minutes * 60 + 1)
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


def _forwarded(url: str, username: str, password: str, address: str) -> httpx.Response:
    return httpx.post(url + "login", data={"username": username, "password": password},
                      headers={"X-Forwarded-For": address}, timeout=60)


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory):
    """The app behind a reverse proxy on loopback: X-Forwarded-For names the client."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('proxy') / 'p.sqlite'}")
    migrate.upgrade(engine)
    add_users(engine, eve="annotator", fay="annotator")
    policy = POLICY.model_copy(update={"window_seconds": 600, "trusted_proxy": "127.0.0.1"})
    with serving(engine, policy=policy) as url:
        yield engine, url
    engine.dispose()


def test_sixty_parallel_guesses_from_many_addresses_do_not_lock_the_clinician_out(
        behind_proxy):
    from concurrent.futures import ThreadPoolExecutor

    engine, url = behind_proxy
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda i: _forwarded(url, "eve", "wrong password!",
                                                   f"203.0.113.{i}").status_code, range(60)))
    assert codes.count(400) == 60  # each new address is heard once...
    again = [_forwarded(url, "eve", "wrong password!", f"203.0.113.{i}").status_code
             for i in range(5)]
    assert again == [429] * 5  # ...and then held: the account is over its limit
    assert _forwarded(url, "eve", PASSWORD, "198.51.100.7").status_code == 200
    five_each = [_forwarded(url, "fay", "wrong password!", f"192.0.2.{i}").status_code
                 for i in range(11) for _ in range(5)]
    assert five_each.count(400) == POLICY.max_failures_per_account + 11 - 2
    assert _forwarded(url, "fay", PASSWORD, "198.51.100.8").status_code == 200
    addresses = {e.address for e in events(engine, "login_failed", "eve")}
    assert len(addresses) == 60 and "127.0.0.1" not in addresses


def test_the_audit_trail_cannot_be_flooded_or_named_by_a_guesser(behind_proxy):
    engine, url = behind_proxy
    before = len(events(engine, "login_throttled"))
    codes = [_forwarded(url, "mallory-was-here", "wrong password!", "233.252.0.1").status_code
             for _ in range(40)]
    assert codes == [400] * 5 + [429] * 35
    throttled = events(engine, "login_throttled")[:len(events(engine, "login_throttled"))
                                                  - before]
    # once per throttled key and window (the pair, then the address), not per attempt
    assert sorted(e.detail["throttled"] for e in throttled) == ["address", "pair"]
    failed = [e for e in events(engine, "login_failed") if e.address == "233.252.0.1"]
    assert len(failed) == 5 and {e.actor for e in failed} == {None}
    assert all(e.detail["unknown_account"] for e in failed + throttled)


def test_forwarded_addresses_are_believed_only_from_a_trusted_proxy(tmp_path):
    """With no --trusted-proxy any local process could otherwise name its own address,
    lift the per-address limit and forge the audit trail."""
    engine = make_engine(f"sqlite:///{tmp_path / 'f.sqlite'}")
    migrate.upgrade(engine)
    add_users(engine, dan="annotator")
    with serving(engine, policy=POLICY.model_copy(update={"window_seconds": 600})) as url:
        codes = [_forwarded(url, "dan", "wrong password!", f"10.9.9.{i}").status_code
                 for i in range(6)]
    assert codes == [400] * 5 + [429]  # all counted against the real address
    assert {e.address for e in events(engine, "login_failed", "dan")} == {"127.0.0.1"}


def test_a_trusted_proxy_must_be_an_address_or_network():
    assert LoginPolicy(trusted_proxy=" 127.0.0.1, 10.0.0.0/8 ").trusted_proxy == (
        "127.0.0.1,10.0.0.0/8")
    with pytest.raises(ValueError, match="trusted proxy 'proxy.local' is not an IP"):
        LoginPolicy(trusted_proxy="proxy.local")


def test_password_checks_never_hold_up_signed_in_users(tmp_path, monkeypatch):
    """A password check (argon2, slow by design) runs off the server's event loop: while
    one is stuck, a signed-in annotator's requests are still answered."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from app import auth

    engine = make_engine(f"sqlite:///{tmp_path / 'h.sqlite'}")
    migrate.upgrade(engine)
    add_users(engine, gil="annotator")
    entered, release = threading.Event(), threading.Event()
    real = auth.authenticate

    def stuck(session, username, password):
        if username == "guesser":
            entered.set()
            release.wait(30)
            return None
        return real(session, username, password)

    monkeypatch.setattr(auth, "authenticate", stuck)
    with serving(engine, policy=POLICY) as url, httpx.Client(base_url=url) as browser, \
            ThreadPoolExecutor(1) as pool:
        assert browser.post("login", data={"username": "gil", "password": PASSWORD}
                            ).status_code == 200
        guess = pool.submit(login, url, "guesser", "wrong password!")
        assert entered.wait(10)
        try:
            started = time.monotonic()
            assert browser.get("config", timeout=5).status_code == 200
            assert time.monotonic() - started < 2
        finally:
            release.set()
        assert guess.result().status_code == 400
