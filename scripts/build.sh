#!/usr/bin/env bash
# Configures and builds lowbit (Release) into build/ (or $LOWBIT_BUILD_DIR). Extra args go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
dir=${LOWBIT_BUILD_DIR:-build}
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=${LOWBIT_BUILD_TYPE:-Release} "$@" >/dev/null
cmake --build "$dir" -j2
