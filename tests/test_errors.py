"""One base class for the errors a person can fix, turned into one line by the CLI and a
message by the app."""

import ast
from pathlib import Path

import gradio as gr
import pytest

from annotation_db.campaigns import CampaignError
from annotation_db.errors import UserError
from app.auth import bound

ROOT = Path(__file__).resolve().parents[1]
# raised and caught inside the code, never shown to a person as they are
INTERNAL = {"SlotsBusy", "NotYours", "ClusterUnreachable"}


def _error_classes():
    for package in ("annotation_db", "generation", "training", "app"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.name.endswith(
                        ("Error", "Rejected", "Refused", "Unavailable")):
                    yield path.relative_to(ROOT).as_posix(), node


def test_every_domain_error_derives_from_the_one_user_error():
    names = {node.name for _, node in _error_classes()}
    for path, node in _error_classes():
        if node.name in INTERNAL or node.name == "UserError":
            continue
        bases = {b.id if isinstance(b, ast.Name) else b.attr for b in node.bases}
        assert "UserError" in bases or bases & names, f"{path}: {node.name} derives from " \
            f"{sorted(bases)}, not UserError"


def test_the_app_shows_a_user_error_as_its_message():
    def handler(engine, name):
        raise CampaignError(f"no campaign named {name!r}")

    with pytest.raises(gr.Error, match="no campaign named 'pilot'"):
        bound(handler, object())("pilot")
    assert issubclass(CampaignError, UserError) and issubclass(CampaignError, ValueError)
