#!/usr/bin/env bash
# Issue 37's long CPU runs, one after another, at the lowest priority:
#   setsid nohup experiments/queue.sh >/dev/null 2>&1 &
# (setsid: its own process group, so `kill -- -PGID` stops the queue and the running
# command together). Each `experiment reproduce` resumes from its database, its run
# folders' checkpoints and its archive, so the queue can be stopped at any time and
# started again; a finished stage costs seconds to re-check. A stage that fails stops
# the queue (the stages after it wait for a person to look). Only one queue runs at a
# time (a lock in runs/logs/). Logs: runs/logs/queue.log (stages started, finished,
# stopped) and runs/logs/queue-<stage>-<UTC>.log (each command's own log names the
# library log).
set -u
cd "$(dirname "$0")/.." || exit 1
mkdir -p runs/logs
exec 9>runs/logs/queue.lock
if ! flock -n 9; then
  echo "a queue is already running (runs/logs/queue.lock)" >&2
  exit 1
fi
cli=${RATIONALE_AUDIT_CLI:-.venv/bin/rationale-audit}

stage() {
  local name=$1; shift
  local log
  log="runs/logs/queue-$name-$(date -u +%Y%m%dT%H%M%SZ).log"
  echo "$(date -u +%FT%TZ) $name: $*" >>runs/logs/queue.log
  nice -n 19 "$cli" experiment reproduce "$@" >"$log" 2>&1
  local status=$?
  if [ "$status" -ne 0 ]; then
    echo "$(date -u +%FT%TZ) $name stopped (exit $status); see $log" >>runs/logs/queue.log
    exit "$status"
  fi
  echo "$(date -u +%FT%TZ) $name finished" >>runs/logs/queue.log
}

# the study's question first; then the pre-registered mechanism grid (about a third of
# the balanced scale's cost; it reads the cpu scale's dataset version, so it shares that
# database); then the teacher that does not decide at one token (its own database); then
# the two teachers compared
stage cpu --scale cpu --db runs/reproduce-cpu.sqlite
stage mechanism-v2 --config experiments/mechanism-v2.yaml --scale cpu \
  --db runs/reproduce-cpu.sqlite
stage cpu-balanced --scale cpu-balanced --db runs/reproduce-cpu-balanced.sqlite

# the two teachers, seeds as the unit: seconds, from the two reports' files
log="runs/logs/queue-compare-$(date -u +%Y%m%dT%H%M%SZ).log"
if "$cli" experiment compare reports/reproduce-cpu reports/reproduce-cpu-balanced \
    --out reports/compare-teachers-cpu >"$log" 2>&1; then
  echo "$(date -u +%FT%TZ) compare finished: reports/compare-teachers-cpu" >>runs/logs/queue.log
else
  echo "$(date -u +%FT%TZ) compare stopped; see $log" >>runs/logs/queue.log
fi
