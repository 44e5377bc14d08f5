#!/usr/bin/env bash
# Issue 37's long CPU runs, one after another, at the lowest priority:
#   nohup experiments/queue.sh >/dev/null 2>&1 &
# Each `experiment reproduce` resumes from its database, its run folders' checkpoints and
# its archive, so the queue can be stopped at any time (kill the process group, or TERM
# the running command) and started again; a finished stage costs seconds to re-check.
# Logs: runs/logs/queue-<stage>-<UTC>.log (the command's own log names the library log).
set -u
cd "$(dirname "$0")/.."
mkdir -p runs/logs
cli=${RATIONALE_AUDIT_CLI:-.venv/bin/rationale-audit}

stage() {
  local name=$1; shift
  local log="runs/logs/queue-$name-$(date -u +%Y%m%dT%H%M%SZ).log"
  echo "$(date -u +%FT%TZ) $name: $*" >>runs/logs/queue.log
  nice -n 19 "$cli" experiment reproduce "$@" >"$log" 2>&1
  local status=$?
  if [ "$status" -ne 0 ]; then
    echo "$(date -u +%FT%TZ) $name stopped (exit $status); see $log" >>runs/logs/queue.log
    exit "$status"
  fi
  echo "$(date -u +%FT%TZ) $name finished" >>runs/logs/queue.log
}

# the study's question first, then the teacher that does not decide at one token, then the
# pre-registered mechanism grid (it reads the cpu scale's dataset version, so it shares
# that database)
stage cpu --scale cpu --db runs/reproduce-cpu.sqlite
stage cpu-balanced --scale cpu-balanced --db runs/reproduce-cpu-balanced.sqlite
stage mechanism-v2 --config experiments/mechanism-v2.yaml --scale cpu \
  --db runs/reproduce-cpu.sqlite
