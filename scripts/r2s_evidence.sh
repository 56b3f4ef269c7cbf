#!/usr/bin/env bash
# The R2S evidence of docs/r2s.md: a single RST at sparsity 0.9 and the Random RST Switch over the
# 8 default candidates (same base spec: default conv net, width 0.5, 8 epochs, embedded Fashion-MNIST,
# seed 0), each evaluated on the first 500 test images (AutoAttack-family attacks on the first 200).
# Rows go to $OUT/runs.csv (resumable: rerunning skips finished work); the R2S run's transfer
# matrices are in $OUT/runs/<run_id>/transfer*.md.  Usage: bash scripts/r2s_evidence.sh [OUT]
set -euo pipefail
OUT="${1:-results/r2s-work}"
COMMON=(--n-eval 500 --n-eval-aa 200 --device cpu --out "$OUT")
# The single RST (also the switch's 0.9 candidate, reused by the R2S run).
bench run --method rst --sparsity 0.9 --eval-attacks pgd20,cw20,autoattack "${COMMON[@]}"
# R2S: non-adaptive (early-stopped and full-step points on one candidate) and adaptive attacks.
bench run --method r2s --sparsity 0.9 \
  --eval-attacks r2s-nonadaptive,r2s-nonadaptive-full,pgd20,eot-pgd,ensemble-pgd,autoattack-rand "${COMMON[@]}"
