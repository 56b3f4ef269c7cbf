#!/usr/bin/env bash
# Install everything the test suite needs (pip; apt-get when root), then run it.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: full Fashion-MNIST and a headless browser for the leaderboard page.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  pkgs="dataset-fashion-mnist chromium chromium-driver"
  apt-get install -y -q $pkgs >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $pkgs >/dev/null; }
fi

# Python packages: torch from this machine's disk, then the project with its test extras.
python -m pip install -q torch==2.14.1 torchvision==0.29.1
# (constraints/build.txt: adv-lib's visdom dependency is an sdist that builds only with setuptools<81.)
PIP_CONSTRAINT="$PWD/constraints/build.txt" python -m pip install -q -e '.[test,robustbench,ray,security]'

# Full MNIST lives beside the checkout (../shared/datasets/mnist) on project machines.
if [ -z "${BENCH_DATA_ROOT:-}" ] && [ -d ../shared/datasets ]; then
  export BENCH_DATA_ROOT="$(cd ../shared/datasets && pwd)"
fi

python -m pytest -q "$@"
