#!/usr/bin/env bash
# Issue 20's published results, results/published/: the three committed sweeps, the extra evaluations,
# then every table, figure and the leaderboard from its runs.csv. Resumable: finished runs, attacks and
# FMN distances are skipped. MNIST is read from $BENCH_DATA_ROOT (or ../shared/datasets).
#   bash scripts/published.sh            # everything
#   bash scripts/published.sh derive     # only the tables, figures, leaderboard and paper-vs-here table
#   bash scripts/published.sh gpu        # on a GPU machine: the grid's remaining runs, $JOBS (4) at a time on
#                                        # the device (device auto = cuda; each row records its device), then derive
# tests/test_published.py rebuilds every `bench table` below from the committed runs.csv, byte for byte.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=results/published
if [ -z "${BENCH_DATA_ROOT:-}" ] && [ -d ../shared/datasets ]; then
  export BENCH_DATA_ROOT="$(cd ../shared/datasets && pwd)"
fi

if [ "${1:-all}" = gpu ]; then
  # Several jobs share the GPU; the spec's device (auto) resolves to cuda, the protocol (n_eval_aa 200) is unchanged.
  for sweep in published-methods published-grid published-r2s; do
    bench sweep "configs/sweeps/$sweep.yaml" --out "$OUT" --jobs "${JOBS:-4}" --no-progress
  done
fi

if [ "${1:-all}" = all ]; then
  # The sweeps: one torch thread per run (2 runs at a time on a 2-core machine: two of these scripts' sweeps).
  for sweep in published-core published-mnist published-methods published-random published-grid published-r2s; do
    OMP_NUM_THREADS=1 bench sweep "configs/sweeps/$sweep.yaml" --out "$OUT" --no-progress
  done
  # R2S's reference: its own sparsity-0.9 candidates (RST, retrained here) on R2S's examples, in their own folder.
  OMP_NUM_THREADS=1 bench sweep configs/sweeps/published-r2s-reference.yaml --out "$OUT/r2s-reference" --no-progress
  # The sparsity-0.9 runs of issue 20's sweeps (not the grid's): more rows on AutoAttack's 500 and FMN curves.
  for id in $(tail -q -n +2 "$OUT"/sweeps/published-{core,mnist,methods,random}.csv | cut -d, -f1); do
    run="$OUT/runs/$id"
    [ -f "$run/meta.json" ] || continue
    # PGD-20, CW-20 and PGD-50 rows on AutoAttack's 500 examples too (from the caches): gaps on the same examples.
    bench eval "$run" --n-eval 500 --attacks pgd20,cw20,pgd50,autoattack
    # The FMN security curve (200 steps, 16 eps from 0 to 2 eps), checked against the fixed-eps worst case.
    bench security "$run"
  done
fi

# Tables: per dataset, each attack by sparsity and method (Fashion-MNIST at width 0.5: the grid's width axis has
# its own tables below), with intervals and ‡ = not different from dense AT.
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout sparsity --attack pgd20 --interval --reference dense-at --output "$OUT/fashion-mnist_pgd20.md"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout sparsity --attack cw20 --interval --reference dense-at --output "$OUT/fashion-mnist_cw20.md"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout sparsity --attack pgd50 --interval --reference dense-at --output "$OUT/fashion-mnist_pgd50.md"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout sparsity --attack worst_case --interval --reference dense-at --output "$OUT/fashion-mnist_worst_case.md"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout sparsity --attack worst_case --interval --reference dense-at --format latex --label tab:fmnist-worst-case --output "$OUT/fashion-mnist_worst_case.tex"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout sparsity --attack worst_case --format csv --output "$OUT/fashion-mnist_worst_case.csv"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout method --attack worst_case --output "$OUT/fashion-mnist_methods.md"
bench table "$OUT/runs.csv" --where dataset=mnist --layout sparsity --attack pgd20 --interval --reference dense-at --output "$OUT/mnist_pgd20.md"
bench table "$OUT/runs.csv" --where dataset=mnist --layout sparsity --attack worst_case --interval --reference dense-at --output "$OUT/mnist_worst_case.md"
bench table "$OUT/runs.csv" --where dataset=mnist --layout sparsity --attack worst_case --interval --reference dense-at --format latex --label tab:mnist-worst-case --output "$OUT/mnist_worst_case.tex"
bench table "$OUT/runs.csv" --where dataset=mnist --layout method --attack worst_case --output "$OUT/mnist_methods.md"

# Issue 29's grid: families down, sparsities across (width 0.5), and RST-0.9 against dense AT by width;
# ‡ = not different from dense AT (of the same width).
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout sparsity --transpose --attack pgd20 --interval --reference dense-at --output "$OUT/fashion-mnist_sparsity_pgd20.md"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout sparsity --transpose --attack pgd20 --interval --reference dense-at --format latex --label tab:fmnist-sparsity-pgd20 --output "$OUT/fashion-mnist_sparsity_pgd20.tex"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout sparsity --transpose --attack pgd20 --format csv --output "$OUT/fashion-mnist_sparsity_pgd20.csv"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout sparsity --transpose --attack worst_case --interval --reference dense-at --output "$OUT/fashion-mnist_sparsity_worst_case.md"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout sparsity --transpose --attack worst_case --interval --reference dense-at --format latex --label tab:fmnist-sparsity-worst-case --output "$OUT/fashion-mnist_sparsity_worst_case.tex"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --layout sparsity --transpose --attack worst_case --format csv --output "$OUT/fashion-mnist_sparsity_worst_case.csv"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where method=rst,dense-at --where target_sparsity=0,0.9 --layout width --columns method --transpose --attack pgd20 --interval --reference dense-at --output "$OUT/fashion-mnist_width_pgd20.md"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where method=rst,dense-at --where target_sparsity=0,0.9 --layout width --columns method --transpose --attack pgd20 --interval --reference dense-at --format latex --label tab:fmnist-width-pgd20 --output "$OUT/fashion-mnist_width_pgd20.tex"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where method=rst,dense-at --where target_sparsity=0,0.9 --layout width --columns method --transpose --attack pgd20 --format csv --output "$OUT/fashion-mnist_width_pgd20.csv"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where method=rst,dense-at --where target_sparsity=0,0.9 --layout width --columns method --transpose --attack worst_case --interval --reference dense-at --output "$OUT/fashion-mnist_width_worst_case.md"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where method=rst,dense-at --where target_sparsity=0,0.9 --layout width --columns method --transpose --attack worst_case --interval --reference dense-at --format latex --label tab:fmnist-width-worst-case --output "$OUT/fashion-mnist_width_worst_case.tex"
bench table "$OUT/runs.csv" --where dataset=fashion-mnist --where method=rst,dense-at --where target_sparsity=0,0.9 --layout width --columns method --transpose --attack worst_case --format csv --output "$OUT/fashion-mnist_width_worst_case.csv"
# The grid's figures: robust accuracy against sparsity and against width, PGD-20 and worst case side by side.
bench plot "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --kind sparsity --attacks pgd20,worst_case --out-dir "$OUT/plots/fashion-mnist"
bench plot "$OUT/runs.csv" --where dataset=fashion-mnist --where method=rst,dense-at --where target_sparsity=0,0.9 --kind width --attacks pgd20,worst_case --out-dir "$OUT/plots/fashion-mnist"
# The grid's findings (peak sparsity per family, the width where RST meets dense AT, masking), from the rows.
python scripts/grid_findings.py

# Figures: security curves (both datasets), clean vs worst-case robust.
bench plot "$OUT/runs.csv" --kind security --out-dir "$OUT/plots"
bench plot "$OUT/runs.csv" --where dataset=fashion-mnist --where width=0.5 --kind scatter --attack worst_case --out-dir "$OUT/plots/fashion-mnist"
bench plot "$OUT/runs.csv" --where dataset=mnist --kind scatter --attack worst_case --out-dir "$OUT/plots/mnist"

# The leaderboard (CSV, HTML, one RobustBench-style JSON per ticket) and the paper-vs-here table.
bench leaderboard "$OUT/runs.csv" --out "$OUT/leaderboard"
python scripts/paper_vs_here.py
