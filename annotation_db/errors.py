"""The one base class of the errors a person can fix.

Every domain error whose message tells the user what to change (a bad model spec, an
unknown campaign, a policy that does not parse, a budget below the floor, …) derives from
:class:`UserError`. The CLI prints one as a single ``Error: …`` line and exits 1
(``app.common.user_errors``); the app shows it as a message on the screen
(``app.auth.bound``). Anything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """An error whose one-line message says what the user can change."""
