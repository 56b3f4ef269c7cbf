#!/usr/bin/env bash
# Issue 29's published grid from a git worktree at the fixed commit its rows come from, one job at a time with
# one torch thread, resumable across sessions; then its rows brought into this checkout.
#   bash scripts/grid_worktree.sh start [DIR]   # worktree at $GRID_COMMIT in DIR (default ../grid), seeded with
#                                               # this checkout's rows where it has none newer; sweeps in the background
#   bash scripts/grid_worktree.sh status [DIR]  # the job, and each sweep's done / pending counts
#   bash scripts/grid_worktree.sh sync [DIR]    # rows and status into results/published (scripts/sync_sweep.py),
#                                               # then every table, figure and finding (published.sh derive)
set -euo pipefail
cd "$(dirname "$0")/.."
GRID_COMMIT=${GRID_COMMIT:-3182344}
DIR=${2:-../grid}
OUT=results/published
SWEEPS="published-grid published-r2s"
if [ -z "${BENCH_DATA_ROOT:-}" ] && [ -d ../shared/datasets ]; then
  export BENCH_DATA_ROOT="$(cd ../shared/datasets && pwd)"
fi

case "${1:-}" in
start)
  # The worktree: created at the fixed commit once, never moved.
  if [ ! -d "$DIR" ]; then
    git worktree add --detach "$DIR" "$GRID_COMMIT"
  fi
  if [ "$(git -C "$DIR" rev-parse --short=7 HEAD)" != "${GRID_COMMIT:0:7}" ]; then
    echo "grid_worktree: $DIR is not at $GRID_COMMIT; remove it or set GRID_COMMIT" >&2
    exit 2
  fi
  if pgrep -f "bench sweep configs/sweeps/published-" >/dev/null; then
    echo "grid_worktree: a published sweep is already running" >&2
    exit 2
  fi
  # Seed: this checkout's rows and status, unless the worktree's runs.csv already holds rows this one lacks.
  mkdir -p "$DIR/$OUT/sweeps"
  if [ ! -f "$DIR/$OUT/runs.csv" ] || ! grep -qvxFf "$OUT/runs.csv" "$DIR/$OUT/runs.csv"; then
    cp "$OUT/runs.csv" "$DIR/$OUT/runs.csv"
    cp "$OUT"/sweeps/*.csv "$DIR/$OUT/sweeps/"
  fi
  # The sweeps, one after the other, in the background; the log beside the worktree.
  log="$(cd "$DIR/.." && pwd)/grid-sweep.log"
  nohup bash -c "cd '$DIR' && export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 BENCH_DATA_ROOT='${BENCH_DATA_ROOT:-}' &&
    for s in $SWEEPS; do python -m bench sweep configs/sweeps/\$s.yaml --out $OUT --no-progress; done" >> "$log" 2>&1 &
  echo "started in $DIR (log $log)"
  ;;
status)
  pgrep -af "bench sweep configs/sweeps/published-" || echo "no sweep running"
  for s in $SWEEPS; do
    f="$DIR/$OUT/sweeps/$s.csv"
    [ -f "$f" ] && echo "$s: $(tail -n +2 "$f" | cut -d, -f2 | sort | uniq -c | tr '\n' ' ')"
  done
  ;;
sync)
  python scripts/sync_sweep.py "$DIR/$OUT" "$OUT"
  bash scripts/published.sh derive
  ;;
*)
  echo "usage: bash scripts/grid_worktree.sh start|status|sync [DIR]" >&2
  exit 2
  ;;
esac
