#!/usr/bin/env bash
# Command 1 of the README: install dependencies, build, and convert the bundled
# model (models/tiny-qwen3) to GGUF, printing what was made.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
./build/llama-pajamas-quant info models/tiny-qwen3
./build/llama-pajamas-quant convert --model models/tiny-qwen3 --output out/tiny-qwen3 \
  --formats gguf --precision f16,q8_0,q4_k_m
echo
echo "manifest: out/tiny-qwen3/manifest.json"
find out/tiny-qwen3 -name '*.gguf' -exec ls -l {} \;
