"""Sign-in that resists guessing, and sessions that end (OWASP ASVS V2.2, V3.3).

Gradio's built-in ``auth=`` checks a password and hands out a cookie; it has no
throttle and no session lifetime. Two pieces add them without replacing it:

- :class:`LoginThrottle`, an ASGI middleware in front of Gradio's ``POST /login``.
  Failures are counted in a moving window (the `limits` library) per account from
  one address, per address, and per account from everywhere. Each failure is
  answered after a growing delay; past :attr:`LoginPolicy.max_failures` for an
  account from one address (or :attr:`LoginPolicy.max_failures_per_address`, or
  :attr:`LoginPolicy.max_failures_per_account` from all addresses together) the next
  attempts are refused with HTTP 429 and a message saying when to retry. A success
  clears the account's counts.

  No limit locks a clinician out (OWASP's Authentication Cheat Sheet, "account
  lockout": an attacker must not be able to deny a user her account). The limits
  that refuse are per address: an attacker guessing from one address locks only
  that address out. The account-wide limit holds the account *only for the addresses
  that failed on it* in the window: past it, each address that has failed on the
  account is refused, and each failure is answered after the longest delay. An
  address with no failure on the account (the clinician's) is still checked, and her
  correct password signs her in. A guesser spread over many addresses so gets the
  account-wide number of guesses and then one more per address that has not yet
  failed on the account, each address at most once per window.
  Refused attempts count against their address. Unknown usernames are counted and
  delayed exactly like real ones; the audit trail names only existing accounts (a
  mistyped password in the username field is not stored), and records a refusal once
  per throttled account or address and window, so guessing cannot flood it. An admin
  clears an account at once with ``rationale-audit users unlock NAME`` (another
  process: the unlock is an audit event this middleware reads), together with the
  counts of the addresses it failed from. Gradio's login page shows its own "Incorrect
  Credentials" for a 400 and nothing at all for other answers, so the middleware adds
  :data:`LOGIN_PAGE_SCRIPT` to that page: it shows a refusal's message (the time to
  wait) where the page shows its errors.
- :class:`SessionStore`, which replaces Gradio's token table: a session ends after
  :attr:`LoginPolicy.idle_minutes` without a request, and at once when its account is
  disabled or its password reset. Signing out (``/logout``) ends every session of
  the account, as Gradio does.

Every sign-in, failure, refusal, sign-out and expiry is an audit event.
"""

import asyncio
import time
import weakref
from collections.abc import Callable
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import UTC, datetime

from sqlmodel import Session

from annotation_db import audit, users
from app.login_guard_config import LoginPolicy

MAX_LOGIN_BODY = 16 * 1024  # bytes: a username and a password, with room to spare

# Added to Gradio's login page (before </head>): when a sign-in is answered with
# anything but 200 or 400 (Gradio's page handles those two), show the answer's "detail"
# as an alert below the page's heading, in place of an earlier "Incorrect Credentials".
LOGIN_PAGE_SCRIPT = b"""<script>
(() => {
  const send = window.fetch.bind(window);
  function show(text) {
    let box = document.getElementById("login_refusal");
    document.querySelectorAll("p.creds").forEach((p) => { p.style.display = text ? "none" : ""; });
    if (!text) { if (box) box.remove(); return; }
    if (!box) {
      box = document.createElement("p");
      box.id = "login_refusal";
      box.setAttribute("role", "alert");
      box.style.cssText = "color:#b42318;font-weight:600;margin:0.5em 0";
      const heading = document.querySelector("h2");
      if (heading) heading.after(box); else document.body.prepend(box);
    }
    box.textContent = text;
  }
  window.fetch = async (input, init) => {
    const response = await send(input, init);
    const url = new URL(typeof input === "string" ? input : input.url, location.href);
    const method = ((init && init.method) || (input && input.method) || "GET").toUpperCase();
    if (method === "POST" && /\/login\/?$/.test(url.pathname)) {
      let text = "";
      if (response.status !== 200 && response.status !== 400) {
        try { text = (await response.clone().json()).detail; } catch (e) { text = ""; }
        if (typeof text !== "string" || !text)
          text = "Sign-in failed (HTTP " + response.status + "); try again in a few minutes.";
      }
      show(text);
    }
    return response;
  };
})();
</script>"""


class LoginGuard:
    """The failure counters and the audit of sign-ins, shared by the middleware and the
    session store.

    ``clock`` (seconds) times every window, delay bookkeeping and session: the failure
    counts, the refusals noted, where names failed from, and idle and lifetime limits.
    ``time.monotonic`` in service; a test passes a clock it advances by hand."""

    def __init__(self, engine, policy: LoginPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic):
        # `limits` is imported here, not by the CLI's start-up (serve's options need only
        # LoginPolicy).
        from limits import RateLimitItemPerSecond
        from limits.strategies import MovingWindowRateLimiter

        from app.clocked_window import ClockedMemoryStorage

        self.engine = engine
        self.policy = policy or LoginPolicy()
        self.clock = clock
        self.limiter = MovingWindowRateLimiter(ClockedMemoryStorage(clock))
        window = self.policy.window_seconds
        self.items = {"pair": RateLimitItemPerSecond(self.policy.max_failures, window),
                      "address": RateLimitItemPerSecond(self.policy.max_failures_per_address,
                                                        window),
                      "account": RateLimitItemPerSecond(self.policy.max_failures_per_account,
                                                        window)}
        self.unlocks_seen: dict[str, datetime] = {}
        # when each throttled (kind, key) was last written to the audit trail
        self.refusals_noted: dict[tuple, float] = {}
        # where each name has failed from, and when (pruned to the window)
        self.addresses: dict[str, dict[str, float]] = {}
        self.cookie_names: tuple[str, ...] = ()  # set by install(), with the store
        self.store: SessionStore | None = None
        # one lock per account and per address in use; gone once nobody holds or awaits it
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    @asynccontextmanager
    async def attempt(self, username: str, address: str):
        """One sign-in attempt at a time per account and per address, so that parallel
        guesses each see the failures before them (a fixed order: no deadlock)."""
        async with AsyncExitStack() as stack:
            for key in sorted({f"address:{address}", f"account:{username}"}):
                lock = self._locks.get(key)
                if lock is None:
                    lock = self._locks[key] = asyncio.Lock()
                await stack.enter_async_context(lock)
            yield

    def failures(self, kind: str, *key: str) -> int:
        item = self.items[kind]
        return item.amount - self.limiter.get_window_stats(item, kind, *key).remaining

    def held(self, username: str) -> bool:
        """Whether the account is past its account-wide limit (held for the addresses
        that failed on it)."""
        return not self.limiter.test(self.items["account"], "account", username)

    def refusal(self, username: str, address: str) -> tuple[str, str] | None:
        """``(what is throttled, message)`` when this attempt is refused without
        checking the password, else None. A refused attempt counts against its address,
        so a guesser who keeps going stays refused. The account-wide limit refuses only
        addresses that have failed on the account in the window."""
        self._apply_unlock(username)
        failed_here = self.failures("pair", username, address) > 0
        for kind, key, what in (("address", (address,), "this address"),
                                ("pair", (username, address), "this account from here"),
                                ("account", (username,), "this account from here")):
            item = self.items[kind]
            if kind == "account" and not failed_here:
                continue
            if not self.limiter.test(item, kind, *key):
                self.limiter.hit(self.items["address"], "address", address)
                reset = self.limiter.get_window_stats(item, kind, *key).reset_time
                minutes = max(1, round((reset - self.clock()) / 60))
                return kind, (f"Too many failed sign-ins for {what}. Try again in about "
                                f"{minutes} minute{'s' if minutes != 1 else ''}, or ask an "
                                "admin to unlock the account.")
        return None

    def failed(self, username: str, address: str) -> float:
        """Count a failure; the seconds to wait before answering it."""
        self._remember(username, address)
        for kind, key in (("pair", (username, address)), ("address", (address,)),
                          ("account", (username,))):
            self.limiter.hit(self.items[kind], kind, *key)
        if self.held(username):
            return self.policy.max_delay_seconds
        n = self.failures("pair", username, address)
        return min(self.policy.first_delay_seconds * 2 ** (n - 1), self.policy.max_delay_seconds)

    def note_refusal(self, kind: str, username: str, address: str) -> bool:
        """Whether this refusal is the first of its (kind, key) in the window, and so
        goes to the audit trail (later ones would only let a guesser fill it)."""
        key = (kind, address) if kind == "address" else (kind, username, address)
        now, window = self.clock(), self.policy.window_seconds
        if now - self.refusals_noted.get(key, -window - 1) <= window:
            return False
        self.refusals_noted[key] = now
        if len(self.refusals_noted) > 10_000:
            self.refusals_noted = {k: t for k, t in self.refusals_noted.items()
                                   if now - t <= window}
        return True

    def _remember(self, username: str, address: str) -> None:
        now, window = self.clock(), self.policy.window_seconds
        seen = self.addresses.setdefault(username, {})
        seen[address] = now
        for old in [a for a, t in seen.items() if now - t > window]:
            del seen[old]
        if len(self.addresses) > 10_000:  # many names tried: forget the expired ones
            for name in [n for n, d in self.addresses.items()
                         if all(now - t > window for t in d.values())]:
                del self.addresses[name]

    def succeeded(self, username: str, address: str) -> None:
        self.limiter.clear(self.items["pair"], "pair", username, address)
        self.limiter.clear(self.items["account"], "account", username)

    def _apply_unlock(self, username: str) -> None:
        with Session(self.engine) as s:
            unlocked = audit.last_unlock(s, username)
        if unlocked is not None and unlocked != self.unlocks_seen.get(username):
            self.unlocks_seen[username] = unlocked
            self.limiter.clear(self.items["account"], "account", username)
            for address in self.addresses.pop(username, {}):  # where it failed from
                self.limiter.clear(self.items["pair"], "pair", username, address)
                self.limiter.clear(self.items["address"], "address", address)

    def audit(self, action: str, username: str | None, address: str | None, **detail) -> None:
        with Session(self.engine) as s:
            audit.record(s, action, actor=username, address=address, **detail)

    def audit_attempt(self, action: str, username: str, address: str, **detail) -> None:
        """An attempt's event, naming the account only when it exists: what was typed
        as a username may be a password or a name of the guesser's choosing."""
        with Session(self.engine) as s:
            known = bool(username) and users.get_user(s, username) is not None
            if not known:
                detail["unknown_account"] = True
            audit.record(s, action, actor=username if known else None, address=address,
                         **detail)


class LoginThrottle:
    """ASGI middleware: throttles ``POST /login`` and audits ``/logout``."""

    def __init__(self, app, guard: LoginGuard):
        self.app = app
        self.guard = guard

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "").rstrip("/")
        if scope["method"] == "POST" and path.endswith("/login"):
            return await self._login(scope, receive, send)
        if scope["method"] == "GET" and path.endswith("/logout"):
            username = _session_user(self.guard, scope)
            if username:
                await asyncio.to_thread(self.guard.audit, "logout", username, _address(scope))
        if scope["method"] == "GET":
            return await self.app(scope, receive, _login_page_script(send))
        return await self.app(scope, receive, send)

    async def _login(self, scope, receive, send):
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_LOGIN_BODY:
                return await _json(scope, receive, send, 413,
                                   {"detail": "sign-in request too large"})
            more = message.get("more_body", False)
        body = b"".join(chunks)
        # Read the form as Gradio does (url-encoded or multipart, as its login page sends).
        from starlette.requests import Request

        form = await Request(scope, _replay(body, receive)).form()
        names = form.getlist("username")
        await form.close()
        if len(names) > 1:
            return await _json(scope, receive, send, 400, {"detail": "give one username"})
        username = str(names[0]).strip() if names else ""
        address = _address(scope)
        guard, sent, delay = self.guard, [], 0.0

        async def hold(message):
            sent.append(message)

        async with guard.attempt(username, address):
            refusal = await asyncio.to_thread(guard.refusal, username, address)
            if refusal:
                what, message = refusal
                if guard.note_refusal(what, username, address):
                    await asyncio.to_thread(guard.audit_attempt, "login_throttled", username,
                                            address, throttled=what)
                return await _json(scope, receive, send, 429, {"detail": message})
            await self.app(scope, _replay(body, receive), hold)
            status = next((m["status"] for m in sent if m["type"] == "http.response.start"),
                          500)
            if status == 200:
                guard.succeeded(username, address)
                await asyncio.to_thread(guard.audit, "login", username, address)
            elif status == 400:
                delay = guard.failed(username, address)
                await asyncio.to_thread(guard.audit_attempt, "login_failed", username, address)
        await asyncio.sleep(delay)  # outside the locks: the next attempt is counted already
        for message in sent:
            await send(message)


def _login_page_script(send):
    """An ASGI ``send`` that adds :data:`LOGIN_PAGE_SCRIPT` to Gradio's login page (an
    HTML page whose config says ``auth_required``); every other answer passes as it is."""
    start, chunks = None, []

    async def wrapped(message):
        nonlocal start
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers") or [])
            if (not headers.get(b"content-type", b"").startswith(b"text/html")
                    or b"content-encoding" in headers):
                return await send(message)
            start = message
            return None
        if start is None or message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return None
        body = b"".join(chunks)
        if b"auth_required" in body and b"</head>" in body:
            body = body.replace(b"</head>", LOGIN_PAGE_SCRIPT + b"</head>", 1)
        headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
        await send({**start, "headers": [*headers,
                                         (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return wrapped


def _replay(body: bytes, receive):
    """An ASGI ``receive`` that gives ``body`` once, then waits on the real one."""
    given = False

    async def replay():
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class SessionStore(dict):
    """Gradio's token → username table, with sign-in times, idle expiry and the
    account checks (disabled, password reset) on every request.

    Idle time and lifetime are read from the guard's clock; the sign-in's date and time
    is kept as well, for the account checks (a password reset is dated)."""

    def __init__(self, guard: LoginGuard):
        super().__init__()
        self.guard = guard
        # token → [signed in (datetime), signed in (clock s), last seen (clock s)]
        self.times: dict[str, list] = {}

    def __setitem__(self, token, username) -> None:
        super().__setitem__(token, username)
        now = self.guard.clock()
        self.times[token] = [datetime.now(UTC), now, now]

    def __delitem__(self, token) -> None:
        dict.pop(self, token, None)
        self.times.pop(token, None)

    def get(self, token, default=None):
        username = super().get(token)
        times = self.times.get(token)
        if username is None or times is None:
            return default
        signed_in, started, seen = times
        policy = self.guard.policy
        now = self.guard.clock()
        reason = None
        if now - seen > policy.idle_minutes * 60:
            reason = "idle"
        elif now - started > policy.max_session_hours * 3600:
            reason = "lifetime"
        else:
            with Session(self.guard.engine) as s:
                if not users.session_valid(s, username, signed_in):
                    reason = "account disabled or password reset"
        if reason:
            del self[token]
            self.guard.audit("session_expired", username, None, reason=reason)
            return default
        times[2] = self.guard.clock()
        return username


def install(demo, guard: LoginGuard) -> None:
    """Put the session store in a launched app (Gradio makes its table at launch)."""
    server = demo.server_app
    guard.cookie_names = (f"access-token-{server.cookie_id}",
                          f"access-token-unsecure-{server.cookie_id}")
    store = SessionStore(guard)
    for token, username in server.tokens.items():
        store[token] = username
    server.tokens = store
    guard.store = store


def _session_user(guard: LoginGuard, scope) -> str | None:
    """Whose session cookie a request carries (without touching its idle time)."""
    from starlette.requests import HTTPConnection

    if guard.store is None:
        return None
    cookies = HTTPConnection(scope).cookies
    tokens = (cookies.get(name) for name in guard.cookie_names)
    return next((dict.get(guard.store, t) for t in tokens if t and dict.get(guard.store, t)),
                None)


def _address(scope) -> str:
    """The client's address. uvicorn (Gradio's server) has already taken it from
    X-Forwarded-For when the connection came from a trusted proxy (:func:`forwarded_from`),
    and only then."""
    client = scope.get("client")
    return client[0][:64] if client else "unknown"


async def _json(scope, receive, send, status: int, payload: dict) -> None:
    from starlette.responses import JSONResponse

    await JSONResponse(payload, status_code=status)(scope, receive, send)


@contextmanager
def forwarded_from(trusted_proxy: str):
    """While an app is launched: uvicorn takes the client's address from
    X-Forwarded-For only on connections from ``trusted_proxy`` (comma-separated
    addresses or networks; empty: from none). uvicorn reads this setting from
    ``FORWARDED_ALLOW_IPS`` when Gradio builds its server, and would otherwise trust
    every process on this machine (127.0.0.1) to name any address."""
    import os

    before = os.environ.get("FORWARDED_ALLOW_IPS")
    os.environ["FORWARDED_ALLOW_IPS"] = trusted_proxy  # "" matches no peer
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("FORWARDED_ALLOW_IPS", None)
        else:
            os.environ["FORWARDED_ALLOW_IPS"] = before
