#!/usr/bin/env bash
# Builds lowbit and runs every test (ctest). With LOWBIT_SANITIZE=1 it builds with clang,
# AddressSanitizer + UndefinedBehaviorSanitizer into build-asan/ instead, skips the tests labelled
# slow, and then runs each fuzz target briefly (scripts/fuzz.sh --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
if [ "${LOWBIT_SANITIZE:-0}" = 1 ]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  ctest --test-dir "${LOWBIT_BUILD_DIR:-build-asan}" --output-on-failure -j2 -LE slow
  bash scripts/fuzz.sh --smoke
else
  ctest --test-dir "${LOWBIT_BUILD_DIR:-build}" --output-on-failure -j2
fi
