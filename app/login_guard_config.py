"""The sign-in policy: failed sign-ins allowed, their delays, session lifetimes and the
trusted reverse proxies (pydantic and the standard library).

Kept apart from :mod:`app.login_guard` (the ASGI guard that enforces it) so that the
`rationale-audit serve` options load without the guard and its database code."""

import ipaddress

from pydantic import Field, field_validator

from annotation_db.command_config import CommandConfig


class LoginPolicy(CommandConfig):
    """How many failed sign-ins are allowed, how slowly they are answered, how long an
    idle session lasts (the options of ``rationale-audit serve``)."""

    max_failures: int = Field(default=5, ge=1, description="failed sign-ins allowed for "
                              "one account from one address in the window; more are "
                              "refused (429)")
    max_failures_per_address: int = Field(default=20, ge=1, description="failed or refused "
                                          "sign-ins allowed per client address (several "
                                          "people may share one)")
    max_failures_per_account: int = Field(default=10, ge=1, description="failed sign-ins "
                                          "for one account from all addresses after which "
                                          "the account is held for every address that "
                                          "failed on it (others still sign in)")
    window_seconds: int = Field(default=900, ge=1, description="the window failures are "
                                "counted in (moving), in seconds")
    first_delay_seconds: float = Field(default=0.5, ge=0, description="the answer to the "
                                       "first failure waits this long; each further doubles")
    max_delay_seconds: float = Field(default=8.0, ge=0, description="the longest wait")
    idle_minutes: float = Field(default=480, gt=0, description="a session with no request "
                                "for this long ends (default 8 hours)")
    max_session_hours: float = Field(default=12, gt=0, description="a session ends this long "
                                     "after sign-in, busy or not (an open Runs tab polls)")
    trusted_proxy: str = Field(default="", description="comma-separated addresses or "
                               "networks of reverse proxies whose X-Forwarded-For names the "
                               "client (default none: the connecting address is the client)")

    @field_validator("trusted_proxy")
    @classmethod
    def _proxies(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"trusted proxy {part!r} is not an IP address or "
                                 "network") from None
        return ",".join(p.strip() for p in value.split(",") if p.strip())


__all__ = ["LoginPolicy"]
