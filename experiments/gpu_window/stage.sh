#!/usr/bin/env bash
# Device calls 1 and 2 of the gpu window (experiments/gpu_window/prepare.sh): keep the
# carried half of the model's wheel in .stage/, an ignored folder a warm machine keeps
# between calls (a call may send at most 64 MiB, the wheel alone is more).
#   experiments/gpu_window/stage.sh a     (carry: [".device/a"])
#   experiments/gpu_window/stage.sh b     (carry: [".device/b"])
set -euo pipefail
cd "$(dirname "$0")/../.."
part=${1:?which half: a or b}
mkdir -p .stage
if [ "$part" = b ] && [ ! -f .stage/model-wheel.a ]; then
  echo "no .stage/model-wheel.a: the machine of call 1 is gone; start again with stage.sh a" >&2
  exit 1
fi
cp ".device/$part/model-wheel.part" ".stage/model-wheel.$part"
ls -l .stage
# the image's versions the carried wheels rely on (datasets: pyarrow >= 24 and fsspec <=
# 2026.9.0; transformers: regex >= 2025.10.22; trl: pandas >= 2.1.1), seen two calls early
[ "$part" = a ] && python3 -m pip list 2>/dev/null | grep -iE '^(pyarrow|fsspec|regex|pandas|huggingface.hub|tokenizers|accelerate|torch|typer) '
exit 0
