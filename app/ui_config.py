"""The settings of `rationale-audit serve` (pydantic and the standard library): where
:func:`app.ui.launch` listens, and the sign-in policy it enforces."""

from pydantic import Field

from app.login_guard_config import LoginPolicy


class ServeConfig(LoginPolicy):
    """`rationale-audit serve`: the address, the port, the proxy path and the sign-in
    policy (the policy's fields are :class:`LoginPolicy`'s)."""

    COMMAND = "rationale-audit serve"

    host: str = Field("127.0.0.1", description="Address to listen on (behind a reverse "
                      "proxy, keep 127.0.0.1; see docs/annotation.md).")
    port: int = Field(7860, description="Port.")
    root_path: str | None = Field(None, description="The path a reverse proxy serves the "
                                  "app under, e.g. /audit.")

    def login_policy(self) -> LoginPolicy:
        """The sign-in policy alone, as the login guard takes it."""
        return LoginPolicy.model_validate(self.model_dump(include=set(LoginPolicy.model_fields)))


__all__ = ["ServeConfig"]
