#!/usr/bin/env bash
# Configures and builds lowbit into build/ (or $LOWBIT_BUILD_DIR). Extra args go to cmake.
# LOWBIT_SANITIZE=1: clang with AddressSanitizer + UndefinedBehaviorSanitizer and the libFuzzer
# targets, into build-asan/ (RelWithDebInfo). Otherwise g++ Release.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if [ "${LOWBIT_SANITIZE:-0}" = 1 ]; then
  dir=${LOWBIT_BUILD_DIR:-build-asan}
  # -O1 with line tables only: half the compile time of -O2 -g, and sanitizer reports still have lines.
  set -- -DCMAKE_CXX_COMPILER=clang++-14 -DLOWBIT_SANITIZE=ON -DLOWBIT_FUZZ=ON \
         "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" "$@"
  type=${LOWBIT_BUILD_TYPE:-RelWithDebInfo}
else
  dir=${LOWBIT_BUILD_DIR:-build}
  type=${LOWBIT_BUILD_TYPE:-Release}
fi
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE="$type" "$@" >/dev/null
cmake --build "$dir" -j2
