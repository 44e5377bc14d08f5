"""The Gradio app: one screen per module, put together here.

    rationale-audit serve --host 127.0.0.1 --port 7860

| tab | who | module |
|---|---|---|
| Annotate | every rater | :mod:`app.screens.annotate` |
| Adjudicate | adjudicators, admins | :mod:`app.screens.adjudicate` |
| Admin | admins | :mod:`app.screens.admin` |
| Runs | admins, researchers | :mod:`app.screens.runs` |

Each role lands on its own work (:data:`LANDING`): annotators on Annotate, adjudicators
on Adjudicate, admins on Admin, researchers on Runs.

Login checks the database (argon2 hashes). Every handler takes the user from
``gr.Request.username`` and re-checks ownership and role on the server
(:func:`app.auth.user_of`): an assignment id sent by a browser is only a request,
never a permission. Sign-in is throttled and sessions end when idle, when their
account is disabled or its password reset (:mod:`app.login_guard`).
"""

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import gradio as gr
from sqlalchemy import select
from sqlmodel import Session

from annotation_db.models import Assignment, Campaign
from app.auth import RESEARCH_ROLES, REVIEW_ROLES, auth_checker, bound, user_of
from app.login_guard import LoginGuard, LoginThrottle, forwarded_from, install
from app.login_guard_config import LoginPolicy
from app.screens.adjudicate import adjudicate_tab
from app.screens.admin import admin_tab
from app.screens.annotate import ANNOTATE_JS, annotate_tab
from app.screens.runs import runs_tab
from app.views import CSS, KEYBOARD_JS, load_guidelines

# The tab each role opens on (the ids of the screens' tabs).
LANDING = {"annotator": "annotate", "adjudicator": "adjudicate", "admin": "admin",
           "researcher": "runs"}


class SignedIn(NamedTuple):
    """What the app shows a user on load: their campaigns, the tabs their role opens and
    the one it lands on."""

    campaigns: Any
    who: str
    adjudicate_tab: Any
    admin_tab: Any
    runs_tab: Any
    tabs: Any


def list_my_campaigns(engine, request: gr.Request) -> SignedIn:
    with Session(engine) as s:
        user = user_of(s, request)
        if user.role in ("annotator", "researcher"):
            names = list(s.execute(select(Campaign.name).join(
                Assignment, Assignment.campaign_id == Campaign.id)
                .where(Assignment.user_id == user.id).distinct()).scalars())
        else:
            names = list(s.execute(select(Campaign.name).order_by(Campaign.id)).scalars())
        role = user.role
    names = sorted(names)
    return SignedIn(gr.update(choices=names, value=names[0] if names else None),
                    f"Signed in as **{request.username}** ({role})",
                    gr.update(visible=role in REVIEW_ROLES), gr.update(visible=role == "admin"),
                    gr.update(visible=role in RESEARCH_ROLES),
                    gr.Tabs(selected=LANDING.get(role, "annotate")))


def build_app(engine, workdir: str | None = None) -> gr.Blocks:
    """Every screen in one Blocks; the tabs a role may not use stay hidden."""
    guidelines = load_guidelines()
    with gr.Blocks(title="Rationale Audit") as demo:
        with gr.Row():
            with gr.Column(scale=3):
                who_md = gr.Markdown()
                gr.Button("Sign out", link="logout", size="sm", variant="secondary",
                          scale=0)  # Gradio's /logout: ends every session of the account
            campaign_dd = gr.Dropdown(label="Campaign", choices=[], elem_id="campaign_dd",
                                      allow_custom_value=True)  # checked on the server
        started = gr.State(None)
        with gr.Tabs(elem_id="screens") as screens:
            annotate_tab(engine, guidelines, campaign_dd, started)
            tabs = SignedIn(campaign_dd, who_md, adjudicate_tab(engine, campaign_dd, guidelines),
                            admin_tab(engine, campaign_dd), runs_tab(engine, workdir), screens)
        demo.load(bound(list_my_campaigns, engine), None, list(tabs),
                  api_name="list_my_campaigns")
    demo.queue(default_concurrency_limit=16)
    return demo


def launch(engine, *, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
           jobs_dir: str = "jobs", workdir: str | None = None,
           policy: LoginPolicy | None = None, root_path: str | None = None,
           clock: Callable[[], float] = time.monotonic):
    """Serve the app and its background job runner (training jobs from the Runs screen).

    ``policy`` sets the sign-in throttle and the session lifetime; ``root_path`` is
    the path a reverse proxy serves the app under (say ``/audit``); ``clock`` times the
    throttle's windows and the sessions (default ``time.monotonic``; tests advance
    their own)."""
    from starlette.middleware import Middleware

    from app.ray_jobs import runner_for

    # the local runner, or Ray jobs when RATIONALE_AUDIT_RAY_ADDRESS is set
    runner = runner_for(engine, jobs_dir, workdir)
    runner.start()  # first recovers jobs a previous app left "running"
    demo = build_app(engine, str(runner.workdir))
    demo.job_runner = runner
    guard = LoginGuard(engine, policy, clock)
    with forwarded_from(guard.policy.trusted_proxy):
        demo.launch(server_name=host, server_port=port, auth=auth_checker(engine),
                    auth_message="Rationale Audit — sign in with your account",
                    prevent_thread_lock=True, css=CSS, head=KEYBOARD_JS + ANNOTATE_JS,
                    quiet=not block,
                    footer_links=[], root_path=root_path,
                    app_kwargs={"middleware": [Middleware(LoginThrottle, guard=guard)]})
    install(demo, guard)
    demo.login_guard = guard
    if block:
        demo.block_thread()
    return demo
