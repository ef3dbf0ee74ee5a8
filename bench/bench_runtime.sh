#!/usr/bin/env bash
# CPU runtime benchmark (issue 3): prefill and decode tokens/s of `llama-pajamas-run
# benchmark` next to llama.cpp (llama-cpp-python) on the same GGUF files, as ratios.
# Prints a table and writes bench/results/runtime.json.
#
#   bench/bench_runtime.sh [BUILD_DIR] [MODEL_DIR ...]
# Default models: small-qwen3 from the fixtures, converted to f16, q8_0, q4_k_m.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"; shift || true
FIX="${LP_FIXTURES_DIR:-$(cd .. && pwd)/shared/fixtures}"
TMP="${LP_BENCH_TMP:-/tmp}/lp-bench-runtime"
THREADS="${LP_BENCH_THREADS:-$(nproc)}"
DEPTH="${LP_BENCH_DEPTH:-256}"
NGEN="${LP_BENCH_NGEN:-32}"
MODELS=("$@"); [ ${#MODELS[@]} -gt 0 ] || MODELS=("$FIX/models/small-qwen3")
mkdir -p "$TMP" bench/results
json="["
printf "%-18s %-7s %14s %14s %14s %14s %8s %8s\n" model type "prefill ours" "prefill llama" "decode ours" "decode llama" "pp x" "tg x"
for dir in "${MODELS[@]}"; do
  name=$(basename "$dir")
  "$BUILD/llama-pajamas-quant" convert --model "$dir" --output "$TMP/$name" --precision f16,q8_0,q4_k_m --quiet
  for prec in f16 q8_0 q4_k_m; do
    gguf=$(ls "$TMP/$name"/gguf/$prec/*.gguf)
    "$BUILD/llama-pajamas-run" benchmark --model "$gguf" --context-lengths "$DEPTH" --n-gen "$NGEN" \
      --threads "$THREADS" --backend cpu --json "$TMP/ours.json" >/dev/null
    ours=$(python3 -c "import json;r=json.load(open('$TMP/ours.json'))['results'][0];print(r['prefill_tok_s'],r['decode_tok_s'])")
    peer=$(python3 bench/peer_llama_bench.py "$gguf" "$DEPTH" "$NGEN" "$THREADS" | python3 -c "import json,sys;r=json.load(sys.stdin);print(r['prefill_tok_s'],r['decode_tok_s'])")
    read -r opp otg <<<"$ours"; read -r ppp ptg <<<"$peer"
    rpp=$(awk -v a="$opp" -v b="$ppp" 'BEGIN{printf "%.2f", a/b}'); rtg=$(awk -v a="$otg" -v b="$ptg" 'BEGIN{printf "%.2f", a/b}')
    printf "%-18s %-7s %14.1f %14.1f %14.1f %14.1f %8s %8s\n" "$name" "$prec" "$opp" "$ppp" "$otg" "$ptg" "$rpp" "$rtg"
    json="$json{\"model\":\"$name\",\"type\":\"$prec\",\"threads\":$THREADS,\"depth\":$DEPTH,\"n_gen\":$NGEN,"
    json="$json\"ours\":{\"prefill_tok_s\":$opp,\"decode_tok_s\":$otg},\"llama_cpp\":{\"prefill_tok_s\":$ppp,\"decode_tok_s\":$ptg},"
    json="$json\"ratio_prefill\":$rpp,\"ratio_decode\":$rtg},"
  done
done
echo "${json%,}]" | python3 -m json.tool > bench/results/runtime.json
echo "wrote bench/results/runtime.json"
