#!/usr/bin/env bash
# The prepared device check: CUDA-marked tests, the default run on the device, and a throughput table.
#
#   bash benchmarks/device_check.sh [--device cuda|cpu] [--quick] [--out DIR]
#
# On one GPU it finishes in a few minutes (well under 8). --device cpu runs the same steps on the CPU, so CI can
# test the script itself; --quick shrinks every budget (a tiny default run, AutoAttack on 20 examples) for that.
# Results land in DIR (default $OUT when set, else /tmp/device-check): pytest.txt, default-run/ (its runs.csv),
# default-run.txt, throughput.md/.json, summary.md. Evaluation runs in float32 without TF32 (bench.nn.inference).
set -euo pipefail

device=cuda
quick=0
out="${OUT:-/tmp/device-check}"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "device_check.sh: unknown argument $1 (use --device, --quick, --out)" >&2; exit 2 ;;
  esac
done
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
python="${PYTHON:-python}"
mkdir -p "$out"
summary="$out/summary.md"
echo "# Device check ($device$( [ "$quick" = 1 ] && echo ', quick' ))" > "$summary"
"$python" -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" | tee -a "$summary"

# 1. The CUDA-marked tests (they skip without a device; on the CPU the step checks only that they collect).
echo "## pytest -m cuda" >> "$summary"
set +e
"$python" -m pytest -q -p no:cacheprovider -m cuda tests > "$out/pytest.txt" 2>&1
rc=$?
set -e
tail -n 1 "$out/pytest.txt" | tee -a "$summary"
if [ "$rc" -ne 0 ]; then echo "CUDA tests failed (exit $rc): see $out/pytest.txt" | tee -a "$summary"; exit 1; fi

# 2. The default run on the device (quick: a tiny budget of the same command).
echo "## bench run --method rst --sparsity 0.9 --device $device" >> "$summary"
extra=()
if [ "$quick" = 1 ]; then
  extra=(--arch mlp --width 0.1 --epochs 1 --train-steps 1 --n-train 300 --n-eval 60 --n-eval-aa 20 --batch-size 100)
fi
rm -rf "$out/default-run"
start=$SECONDS
"$python" -m bench run --method rst --sparsity 0.9 --device "$device" --out "$out/default-run" "${extra[@]}" \
  > "$out/default-run.txt" 2> "$out/default-run.err"
cat "$out/default-run.txt" >> "$summary"
echo "wall $((SECONDS - start)) s" | tee -a "$summary"

# 3. The throughput table on the default run's ticket.
echo "## throughput" >> "$summary"
run_dir=$(ls -d "$out"/default-run/runs/*/ | head -n 1)
tp=()
if [ "$quick" = 1 ]; then tp=(--batch-size 100 --n-aa 20 --reps 1 --step-reps 3); fi
"$python" benchmarks/throughput.py --run-dir "$run_dir" --device "$device" --out "$out" "${tp[@]}" >> "$summary"
cat "$summary"
