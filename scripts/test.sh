#!/usr/bin/env bash
# Builds lowbit and runs every test (ctest). With LOWBIT_SANITIZE=1 it builds into build-asan/ with
# AddressSanitizer + UndefinedBehaviorSanitizer instead and skips the tests labelled slow.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${LOWBIT_SANITIZE:-0}" = 1 ]; then
  export LOWBIT_BUILD_DIR=${LOWBIT_BUILD_DIR:-build-asan} LOWBIT_BUILD_TYPE=RelWithDebInfo
  bash scripts/build.sh -DLOWBIT_SANITIZE=ON
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  ctest --test-dir "$LOWBIT_BUILD_DIR" --output-on-failure -j2 -LE slow
else
  bash scripts/build.sh
  ctest --test-dir "${LOWBIT_BUILD_DIR:-build}" --output-on-failure -j2
fi
