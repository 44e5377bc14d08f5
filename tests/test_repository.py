"""What the repository tracks: nothing a fresh checkout would trip over."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tracked() -> list[tuple[str, str]]:
    """(mode, path) of every tracked file."""
    try:
        out = subprocess.run(["git", "ls-files", "-s", "-z"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [(entry.split()[0], entry.split("\t", 1)[1]) for entry in out.split("\0") if entry]


def test_no_tracked_link_points_outside_the_repository():
    """A link to a path outside the checkout (say, a worktree's .venv pointing at the main
    checkout's) replaces whatever is at that path wherever the commit is checked out."""
    links = [path for mode, path in _tracked() if mode == "120000"]
    outside = []
    for path in links:
        if not (ROOT / path).is_symlink():  # deleted or replaced in this working tree
            continue
        target = os.readlink(ROOT / path)
        resolved = (ROOT / path).parent / target
        if os.path.isabs(target) or not resolved.resolve().is_relative_to(ROOT):
            outside.append(f"{path} -> {target}")
    assert outside == []


def test_no_environment_or_run_output_is_tracked():
    tracked = [path for _, path in _tracked()]
    assert [p for p in tracked if p.split("/")[0] in (".venv", "runs", "exports", "reports")] \
        == []


def test_the_gpu_windows_scripts_parse_and_carry_what_this_environment_has():
    """experiments/gpu_window: each script is valid bash, and every package carry.txt
    names is installed here (prepare.sh downloads the wheel of the version found here)."""
    import importlib.metadata

    folder = ROOT / "experiments" / "gpu_window"
    scripts = sorted(folder.glob("*.sh"))
    assert [s.name for s in scripts] == ["prepare.sh", "run.sh", "stage.sh"]
    for script in scripts:
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script.name
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
    names = [line.strip() for line in (folder / "carry.txt").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    missing = []
    for name in names:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    assert len(names) >= 15 and missing == []
