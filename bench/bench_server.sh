#!/usr/bin/env bash
# Server benchmark (issue 5): aggregate decode tokens/s and time to first token at 1, 2, 4
# and 8 concurrent streaming chat requests, `llama-pajamas-run serve` side by side with
# llama-cpp-python's OpenAI server (pip install 'llama-cpp-python[server]') on the same
# GGUF file. Prints a table, writes bench/results/server.json.
#
#   bench/bench_server.sh [BUILD_DIR] [--model small-qwen3|tiny-qwen3] [--precision q4_k_m]
#                         [--max-tokens N] [--threads N] [--skip-peer]
#
# Loopback only (127.0.0.1); both servers are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"; shift || true
FIX="${LP_FIXTURES_DIR:-$(cd .. && pwd)/shared/fixtures}"
TMP="${LP_BENCH_TMP:-/tmp}/lp-bench-server"
MODEL=small-qwen3; PREC=q4_k_m; MAX_TOKENS=64; THREADS="$(nproc)"; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --precision) PREC="$2"; shift 2 ;;
    --max-tokens) MAX_TOKENS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --skip-peer) EXTRA+=(--skip-peer); shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$TMP" bench/results
"$BUILD/llama-pajamas-quant" convert --model "$FIX/models/$MODEL" --output "$TMP/$MODEL" --precision "$PREC" --quiet
gguf=$(ls "$TMP/$MODEL"/gguf/"$PREC"/*.gguf)
python3 bench/bench_server.py --run-bin "$BUILD/llama-pajamas-run" --gguf "$gguf" --threads "$THREADS" \
  --max-tokens "$MAX_TOKENS" --out bench/results/server.json --logdir "$TMP" "${EXTRA[@]}"
