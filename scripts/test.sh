#!/usr/bin/env bash
# Command 2 of the README: all tests. Unit tests (cmocka, under ASan+UBSan), then
# the interop suite (pytest: gguf, llama-cpp-python, ...) against a release build.
# Fixtures are read from ../shared/fixtures (override with LP_FIXTURES_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
FIX="${LP_FIXTURES_DIR:-$(cd .. && pwd)/shared/fixtures}"
JOBS="$(nproc)"
scripts/install-deps.sh --test

echo "== unit tests (ASan + UBSan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLP_SANITIZE=ON -DLP_FIXTURES_DIR="$FIX" >/dev/null
cmake --build build-asan -j"$JOBS"
ASAN_OPTIONS=detect_leaks=1 ctest --test-dir build-asan --output-on-failure -j"$JOBS"
scripts/test-neon.sh  # NEON kernels vs scalar, cross-built for aarch64 and run under qemu-user (skips without them)

echo "== release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLP_FIXTURES_DIR="$FIX" >/dev/null
cmake --build build -j"$JOBS"

echo "== interop tests (pytest)"
python3 -m pip install -q -r tests/interop/requirements.txt
LP_BUILD_DIR="$PWD/build" LP_FIXTURES_DIR="$FIX" python3 -m pytest -q tests/interop
