"""The test tiers: `make test` runs everything; `make test-fast` (``pytest --fast``) runs
everything but vLLM engines, trained or loaded models, browsers, servers and slow tests.

How a test lands in a tier:

- **Markers by rule** (:func:`mark_by_rule`): a test that uses the shared vLLM engine is
  ``vllm``; one that uses the tiny trainable model is ``trains``; every test in a
  ``test_browser*`` module is ``browser``. Other heavy tests carry their marker by hand
  (``server``, ``model``, ``slow``, ``vllm``), usually for a whole module (``pytestmark``).
- **A guard** (:func:`guard`): under ``--fast`` the entry points of the heavy work — vLLM's
  engine, a model's weights loaded by transformers, a training loop, the Gradio app's server,
  a browser, a server or the CLI started as a process — fail the test that reaches them with
  the marker it needs. So a new heavy test cannot slip into the fast tier: it fails there
  until it is marked.
"""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

HEAVY = {
    "vllm": "starts a vLLM engine",
    "model": "loads a model's weights with transformers",
    "trains": "trains a model",
    "server": "starts the app's server, a model server or the CLI as a process",
    "browser": "drives a browser",
    "slow": "takes more than a few seconds",
}
FIXTURE_MARKERS = {"vllm_engine": "vllm", "current_vllm_engine": "vllm", "_shared_vllm": "vllm",
                   "tiny_model": "trains"}
PROCESS_WORDS = ("app.cli", "rationale-audit", "vllm.entrypoints", "ray")


def mark_by_rule(item: pytest.Item) -> None:
    for fixture in getattr(item, "fixturenames", ()):
        if fixture in FIXTURE_MARKERS:
            item.add_marker(FIXTURE_MARKERS[fixture])
    if item.module is not None and item.module.__name__.rsplit(".", 1)[-1].startswith(
            "test_browser"):
        item.add_marker("browser")


def is_heavy(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) for name in HEAVY)


def _refuse(marker: str):
    def refuse(*args, **kwargs):
        pytest.fail(f"this test {HEAVY[marker]} but is in the fast tier: mark it (or its "
                    f"module) @pytest.mark.{marker}", pytrace=False)
    return refuse


@contextmanager
def guard() -> Iterator[None]:
    """Refuse the heavy entry points for the duration (the whole fast session)."""
    import playwright.sync_api
    import transformers
    from transformers import Trainer

    import app.ui
    import generation.engine

    patches = [(generation.engine, "load_vllm", _refuse("vllm")),
               (Trainer, "train", _refuse("trains")),
               (transformers.PreTrainedModel, "from_pretrained", classmethod(
                   lambda cls, *a, **k: _refuse("model")())),
               (app.ui, "launch", _refuse("server")),
               (playwright.sync_api, "sync_playwright", _refuse("browser"))]
    original_popen = subprocess.Popen.__init__

    def popen(self, args, *rest, **kwargs):
        words = " ".join(map(str, args)) if isinstance(args, list | tuple) else str(args)
        if any(word in words for word in PROCESS_WORDS):
            _refuse("server")()
        original_popen(self, args, *rest, **kwargs)

    patches.append((subprocess.Popen, "__init__", popen))
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)
