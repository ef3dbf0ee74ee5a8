#!/usr/bin/env bash
# Conversion benchmark (issue 2): throughput (MB/s of source read) and peak RSS of
# `llama-pajamas-quant convert`, next to llama.cpp's quantizer (llama-cpp-python)
# quantizing the same model from an F16 GGUF. Prints a table, writes
# bench/results/convert.json.
#
#   bench/bench_convert.sh [BUILD_DIR] [--synthetic CONFIG.json [--layers N]]
#
# Models: small-qwen3 (fixture), and optionally a synthetic checkpoint with the real
# shapes of CONFIG (bench/synth_checkpoint) written under $LP_BENCH_TMP (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"; shift || true
FIX="${LP_FIXTURES_DIR:-$(cd .. && pwd)/shared/fixtures}"
TMP="${LP_BENCH_TMP:-/tmp}/lp-bench-convert"
THREADS="$(nproc)"
SYN_CONFIG=""; SYN_LAYERS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --synthetic) SYN_CONFIG="$2"; shift 2 ;;
    --layers) SYN_LAYERS="--layers $2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
rm -rf "$TMP"; mkdir -p "$TMP" bench/results
models=("small-qwen3:$FIX/models/small-qwen3")
if [ -n "$SYN_CONFIG" ]; then
  name="synthetic-$(basename "$SYN_CONFIG" .config.json)"
  "$BUILD/synth_checkpoint" "$SYN_CONFIG" "$FIX/qwen3-tokenizer" "$TMP/$name" $SYN_LAYERS >/dev/null
  cp "$FIX/models/tiny-qwen3/chat_template.jinja" "$TMP/$name/" 2>/dev/null || true
  models+=("$name:$TMP/$name")
fi

# measure LABEL CMD...: sets SECONDS_TAKEN and RSS_MB
measure() {
  local log="$TMP/time.log"
  /usr/bin/time -f "%e %M" -o "$log" "$@" >/dev/null 2>"$TMP/stderr.log" || { cat "$TMP/stderr.log" >&2; return 1; }
  read -r SECONDS_TAKEN RSS_KB < "$log"
  RSS_MB=$((RSS_KB / 1024))
}

json="["
printf "%-28s %-8s %-22s %9s %10s %10s\n" model precision tool seconds "MB/s" "peak RSS"
for entry in "${models[@]}"; do
  name="${entry%%:*}"; dir="${entry#*:}"
  src_mb=$(du -bc "$dir"/*.safetensors | tail -1 | awk '{print $1/1e6}')
  # f16 GGUF once: the peer's input
  measure "$BUILD/llama-pajamas-quant" convert --model "$dir" --output "$TMP/$name" --precision f16 --quiet --threads "$THREADS"
  f16=$(ls "$TMP/$name"/gguf/f16/*.gguf)
  for prec in q8_0 q4_k_m; do
    case $prec in q8_0) ftype=7 ;; q4_k_m) ftype=15 ;; esac
    measure "$BUILD/llama-pajamas-quant" convert --model "$dir" --output "$TMP/$name" --precision "$prec" --quiet --threads "$THREADS"
    ours_s=$SECONDS_TAKEN; ours_rss=$RSS_MB
    measure python3 bench/peer_quantize.py "$f16" "$TMP/$name/peer-$prec.gguf" "$ftype" "$THREADS"
    peer_s=$SECONDS_TAKEN; peer_rss=$RSS_MB
    ours_rate=$(awk -v m="$src_mb" -v s="$ours_s" 'BEGIN{printf "%.1f", m/(s>0?s:0.01)}')
    peer_rate=$(awk -v m="$src_mb" -v s="$peer_s" 'BEGIN{printf "%.1f", m/(s>0?s:0.01)}')
    printf "%-28s %-8s %-22s %9s %10s %8s MB\n" "$name" "$prec" "llama-pajamas (HF)" "$ours_s" "$ours_rate" "$ours_rss"
    printf "%-28s %-8s %-22s %9s %10s %8s MB\n" "$name" "$prec" "llama.cpp (F16 GGUF)" "$peer_s" "$peer_rate" "$peer_rss"
    json="$json{\"model\":\"$name\",\"precision\":\"$prec\",\"source_mb\":$src_mb,\"threads\":$THREADS,"
    json="$json\"ours\":{\"seconds\":$ours_s,\"mb_per_s\":$ours_rate,\"peak_rss_mb\":$ours_rss},"
    json="$json\"llama_cpp_quantize\":{\"seconds\":$peer_s,\"mb_per_s\":$peer_rate,\"peak_rss_mb\":$peer_rss}},"
  done
done
json="${json%,}]"
echo "$json" | python3 -m json.tool > bench/results/convert.json
echo "wrote bench/results/convert.json"
