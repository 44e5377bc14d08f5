"""Versioned prompt templates (files in generation/prompts/) and the chats built from them.

A template's id is ``name@version``; its SHA-256 over the file's canonical content is
recorded with every rationale (through the PromptTemplate row), so changing a
template's text without bumping its version is detected rather than silently mixed.

    label-conditioned-free@1      the teacher knows the outcome and explains it (the study's data)
    label-conditioned-stepwise@1  the same, as a list of steps with their evidence
    label-blind-free@1            the teacher predicts, then explains
    label-blind-stepwise@1
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from annotation_db.errors import UserError
from annotation_db.render import render_compact

PROMPTS = Path(__file__).with_name("prompts")
MODES = ("label-conditioned", "label-blind")
FORMATS = ("free", "stepwise")


class PromptError(UserError):
    """A missing or malformed prompt template; the message is one line."""


@dataclass(frozen=True)
class TeacherPrompt:
    """A teacher prompt read from its file (its database row is ``models.PromptTemplate``)."""

    name: str
    version: str
    mode: str
    format: str
    system: str
    user: str
    content_hash: str

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def body(self) -> str:
        return json.dumps({"system": self.system, "user": self.user}, sort_keys=True)

    def messages(self, record: dict, *, history_budget: int | None = None,
                 history: str | None = None) -> list[dict]:
        """The chat for one patient: system, then the user turn with its compact history
        (``history``: that rendering, when the caller has already made it)."""
        if history is None:
            from generation.models import history_counter

            history = render_compact(record, history_budget, history_counter()).text
        fields = {"history": history}
        if self.mode == "label-conditioned":
            yes = bool(record["label"])
            fields["label_text"] = ("diagnosed with ADRD within five years after the index date"
                                    if yes else
                                    "not diagnosed with ADRD within five years after the index "
                                    "date")
            fields["label_word"] = "yes" if yes else "no"
        return [{"role": "system", "content": self.system.strip()},
                {"role": "user", "content": self.user.format(**fields).strip()}]


def load_template(spec: str) -> TeacherPrompt:
    """Load ``name@version`` (or a path to a template file)."""
    path = Path(spec)
    if not path.is_file():
        name, _, version = spec.partition("@")
        path = PROMPTS / f"{name}.v{version or '1'}.yaml"
    if not path.is_file():
        known = sorted(p.name.replace(".yaml", "").replace(".v", "@") for p in
                       PROMPTS.glob("*.yaml"))
        raise PromptError(f"unknown prompt template {spec!r}; known: {', '.join(known)}")
    raw = path.read_bytes()
    data = yaml.safe_load(raw)
    missing = {"name", "version", "mode", "format", "system", "user"} - set(data or {})
    if missing:
        raise PromptError(f"prompt template {path} lacks {', '.join(sorted(missing))}")
    if data["mode"] not in MODES or data["format"] not in FORMATS:
        raise PromptError(f"prompt template {path}: mode must be one of {MODES} and format one "
                          f"of {FORMATS}")
    canonical = json.dumps({k: data[k] for k in sorted(data)}, sort_keys=True).encode()
    return TeacherPrompt(
        name=data["name"], version=str(data["version"]), mode=data["mode"],
        format=data["format"], system=data["system"], user=data["user"],
        content_hash=hashlib.sha256(canonical).hexdigest(),
    )


def template_for(mode: str, format: str, version: str = "1") -> TeacherPrompt:
    return load_template(f"{mode}-{format}@{version}")
