#!/usr/bin/env bash
# Quick start 2: set up, build, and run the whole test suite with ctest; then, once more, the
# suite under AddressSanitizer + UndefinedBehaviorSanitizer in build-asan/ (skip with CPSIM_NO_ASAN=1).
# GPU tests report "skipped" on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# A per-test timeout turns a hang into a named failure instead of a CI run that never ends.
ctest --test-dir build --output-on-failure --timeout 600 -j "$(nproc)"
if [ "${CPSIM_NO_ASAN:-0}" != "1" ]; then
  # Sanitizers apply to the C++ code; CUDA code is compiled in the main build above.
  BUILD_DIR=build-asan BUILD_TYPE=Debug scripts/setup.sh -DCPSIM_SANITIZE=ON -DCPSIM_WITH_CUDA=OFF
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build-asan --output-on-failure --timeout 900 -j "$(nproc)"
fi
