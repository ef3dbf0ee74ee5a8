#!/usr/bin/env bash
# cuda_device.sh — the CUDA backend's checks and benchmark on a lent GPU machine,
# in stages that fit the device tool's 10-minute commands.
#
# Here (dev box, once):   bench/cuda_device.sh prepare
#   fills out/cuda-carry (~15 MB) with the Qwen3-8B config, the Qwen3 tokenizer, the
#   small-qwen3 reference logits and the Debian packages (jansson, cmocka, pcre2,
#   utf8proc: dev + runtime) the device may lack, and out/small with a Q6_K GGUF of
#   small-qwen3 (27 MB). The tiny-qwen3 GGUFs are made on the device; the two carries
#   and the tree stay under the 64 MiB the device tool sends.
# On the device (carry: ["out/cuda-carry", "out/small"]):
#   bash bench/cuda_device.sh build test     # ~4 min: build, kernel + backend tests
#   bash bench/cuda_device.sh synth bench    # ~8 min: Qwen3-8B-shaped q4_k_m/q8_0, benchmark
#   bash bench/cuda_device.sh fast profile   # ~3 min: models written directly (no bf16, no
#                                            # K-quant search), per-op GPU time table
#   bash bench/cuda_device.sh gemv           # ~2 min: the decode GEMV variants alone
#   bash bench/cuda_device.sh chain          # ~2 min: a q4_k_m step's matmuls chained vs alone
#   bash bench/cuda_device.sh fast mma       # ~6 min: the int8 MMA kernel alone (8-64 columns), then
#                                            # q4_k_m batched decode x16/x32/x64 with it and without
#   bash bench/cuda_device.sh fast nsys      # kernel durations and gaps of graph decode
#   bash bench/cuda_device.sh fast trace     # the same through CUPTI (bench/cupti_trace.c): per
#                                            # kernel share of a decode step, idle between steps
#   bash bench/cuda_device.sh fast stamps    # per-block phase timestamps of a decode step: what
#                                            # each launch spends after the previous one ended
#   bash bench/cuda_device.sh fast ab        # batch-1 decode with an env knob at several values
#                                            # (LP_AB_VAR, LP_AB_VALUES, LP_AB_DEPTHS, LP_AB_PRECISIONS)
#   bash bench/cuda_device.sh fast abmod     # batch-1 decode, module from the tree vs one with the
#                                            # old files of LP_AB_OLD swapped in (a kernel change)
# Precisions: LP_BENCH_PRECISIONS (default "q4_k_m q8_0 mlx-4bit"): GGUF recipes, and
# mlx-<MLX recipe> for an MLX directory (mlx-4bit: 4 bits, group 64, bf16 scales: mlx-lm's
# default), always written directly by synth_checkpoint --mlx (also after `synth`).
# (each stage rebuilds first when the machine went cold and lost build/)
# Stages: build, test, synth (bf16 checkpoint + conversion), bench; results and logs
# land in $OUT (cuda.json, test_cuda.log, bench-*.log).
#
# Build: CMake when every pkg-config module of CMakeLists.txt exists; otherwise a
# standalone gcc/nvcc build of what the tests and the benchmark need, against the
# carried packages unpacked under /tmp/lp-sysroot (curl, microhttpd and libedit
# users — hub downloads, server, chat CLI — are left out; the functions they define
# become stubs that abort, harmless as nothing here calls them).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=out/cuda-carry
OUTDIR="${OUT:-out/cuda-results}"
JOBS="$(nproc)"
SYN=/tmp/lp-q8b
PRECISIONS="${LP_BENCH_PRECISIONS:-q4_k_m q8_0 mlx-4bit}"
mkdir -p "$OUTDIR"

# The model file (GGUF) or directory (MLX) of a precision under $SYN-out.
model_path() {
  case "$1" in
    mlx-*) echo "$SYN-out/mlx/${1#mlx-}" ;;
    *) ls "$SYN-out"/gguf/"$1"/*.gguf | head -1 ;;
  esac
}

# One precision written directly by synth_checkpoint (--gguf RECIPE / --mlx RECIPE).
synth_one() {
  local p="$1"
  case "$p" in
    mlx-*)
      /usr/bin/time -f "synth --mlx ${p#mlx-} %e s" build/synth_checkpoint "$CARRY/Qwen3-8B.config.json" \
        "$CARRY/tokenizer" "$(model_path "$p")" --mlx "${p#mlx-}" ;;
    *)
      mkdir -p "$SYN-out/gguf/$p"
      /usr/bin/time -f "synth --gguf $p %e s" build/synth_checkpoint "$CARRY/Qwen3-8B.config.json" "$CARRY/tokenizer" \
        "$SYN-out/gguf/$p/lp-q8b-$p.gguf" --gguf "$p" ;;
  esac
}

prepare() {
  local fix="${LP_FIXTURES_DIR:-$(cd .. && pwd)/shared/fixtures}"
  rm -rf "$CARRY"; mkdir -p "$CARRY/tokenizer" "$CARRY/debs"
  cp "$fix/configs/Qwen3-8B.config.json" "$CARRY/"
  cp "$fix"/qwen3-tokenizer/* "$CARRY/tokenizer/"
  mkdir -p "$CARRY/refs" && cp "$fix"/refs/small-qwen3.json "$fix"/refs/small-qwen3.logits64.f32 "$CARRY/refs/"
  # small-qwen3 (63 MB of bf16) travels as a Q6_K GGUF (27 MB; carry out/small too)
  rm -rf out/small && build/llama-pajamas-quant convert --model "$fix/models/small-qwen3" --output out/small \
    --precision q6_k >/dev/null
  (cd "$CARRY/debs" && apt-get download libjansson-dev libjansson4 libcmocka-dev libcmocka0 libpcre2-dev libpcre2-8-0 \
     libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2)
  du -sh "$CARRY"
}

have_all_modules() {
  [ -z "${LP_FORCE_STANDALONE:-}" ] || return 1
  command -v pkg-config >/dev/null && pkg-config --exists jansson libpcre2-8 libutf8proc libcurl libmicrohttpd libedit cmocka
}

# The CUDA module at $1, compiled with the flags that follow (as cmake/cuda.cmake links it:
# only it links cudart + cuBLAS, it exports one symbol and has no undefined ones).
cuda_module() {
  local out="$1"; shift
  mkdir -p build && echo '{ global: lp_cuda_module_entry; local: *; };' > build/llama-pajamas-cuda.map
  nvcc -std=c++17 -O3 -gencode arch=compute_90,code=sm_90 "$@" -Xcompiler -Wno-unknown-pragmas \
    -shared -Xcompiler -fPIC -cudart shared -Xlinker --version-script="$PWD/build/llama-pajamas-cuda.map" \
    -Xlinker -z,defs src/backend/cuda/cuda_backend.cu -o "$out" -L/usr/local/cuda/lib64 -lcublas
}
# The module with per-block phase timestamps (src/backend/cuda/lpc_stamps.cuh) and its
# report tool; `stamps_module` alone can run beside `build` (both are minutes of nvcc).
stamps_module() {
  local root=/tmp/lp-sysroot d # the standalone build's headers (jansson) when the machine lacks them
  [ -d "$root/usr/include" ] || for d in "$CARRY"/debs/*.deb; do dpkg -x "$d" "$root"; done
  cuda_module build/libllama-pajamas-cuda-stamps.so -DLPC_STAMPS=1 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Isrc \
    -I"$root/usr/include" -I"$root/usr/include/x86_64-linux-gnu"
  gcc -std=c11 -O2 -Wall -Wextra bench/stamps_report.c -o build/stamps_report
}
# Batch-1 decode under the stamps module: the last step's launches, phase by phase
# (LP_STAMPS_DEPTHS, default 512 4096; precisions LP_AB_PRECISIONS, default q4_k_m).
stamps_run() {
  [ -x build/bench_cuda ] || build
  # rebuilt when older than the product module (a warm machine keeps build/ across calls)
  [ build/libllama-pajamas-cuda-stamps.so -nt build/libllama-pajamas-cuda.so ] || stamps_module
  export LD_LIBRARY_PATH="/tmp/lp-sysroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  local p f d
  for p in ${LP_AB_PRECISIONS:-q4_k_m}; do
    f="$(model_path "$p")"
    for d in ${LP_STAMPS_DEPTHS:-512 4096}; do
      LP_CUDA_MODULE="$PWD/build/libllama-pajamas-cuda-stamps.so" LP_CUDA_STAMPS="$OUTDIR/stamps-$p-$d.bin" \
        build/bench_cuda "$f" --depths "$d" --gen 16 --prefill "" --streams "" --copy-gib 1 2>&1 | grep -E "decode" || true
      build/stamps_report "$OUTDIR/stamps-$p-$d.bin" --launches > "$OUTDIR/stamps-$p-$d.txt"
      sed -n 1,3p "$OUTDIR/stamps-$p-$d.txt"; grep "(x" "$OUTDIR/stamps-$p-$d.txt"
    done
  done
}
build_standalone() {
  local root=/tmp/lp-sysroot obj=build/obj
  rm -rf "$obj"; mkdir -p "$root" "$obj"
  for d in "$CARRY"/debs/*.deb; do dpkg -x "$d" "$root"; done
  local lib="$root/usr/lib/x86_64-linux-gnu"
  export LD_LIBRARY_PATH="$lib:${LD_LIBRARY_PATH:-}"
  local inc=(-I"$root/usr/include" -I"$root/usr/include/x86_64-linux-gnu")
  local defs=(-D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -DLP_CUDA_MODULE_BUILT=1 -Isrc "${inc[@]}"
    -DLP_FIXTURES_DIR="\"$PWD/out/cuda-carry\"" -DLP_SOURCE_DIR="\"$PWD\"" -DLP_BINARY_DIR="\"$PWD/build\"")
  local cflags=(-std=c11 -O2 -Wall -Wextra -Wno-unused-parameter -ffp-contract=off -mavx2 -mfma -mf16c "${defs[@]}")
  find src -name '*.c' ! -path 'src/cli/*' ! -path 'src/server/*' ! -name hub.c > build/core.list
  # one gcc per file, JOBS at a time
  local pids=() f
  while read -r f; do
    gcc "${cflags[@]}" -c "$f" -o "$obj/$(echo "$f" | tr / _).o" &
    pids+=($!)
    if [ "${#pids[@]}" -ge "$JOBS" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  done < build/core.list
  wait
  # The CUDA backend is a module the binaries dlopen() (src/backend/cuda/cuda_loader.c), as in
  # cmake/cuda.cmake: only it links cudart + cuBLAS, it exports one symbol and has no undefined
  # ones (lpcore's functions reach it through its entry), so the binaries need no -rdynamic.
  cuda_module build/libllama-pajamas-cuda.so "${defs[@]}"
  rm -f build/libsa.a && ar rcs build/libsa.a "$obj"/*.o
  local libs=(-Lbuild -lsa -L"$lib" -ljansson -lpcre2-8 -lutf8proc -lm -lpthread -ldl)
  # what the left-out files define (hub downloads, ...) becomes a stub that aborts
  gcc "${cflags[@]}" -DLP_DATA_DIR="\"$PWD/data\"" src/cli/quant_main.c src/cli/common.c bench/synth_checkpoint.c \
    bench/bench_cuda.c tests/unit/test_cuda.c -o /dev/null "${libs[@]}" -lcmocka 2>&1 |
    grep -o "undefined reference to \`[^']*'" | sed "s/.*\`//; s/'$//" | sort -u |
    awk '{printf "#include <stdio.h>\n#include <stdlib.h>\nvoid %s(void) { fputs(\"%s: not in this build\\n\", stderr); abort(); }\n", $1, $1}' \
    > build/stubs.c || true
  gcc -c build/stubs.c -o "$obj/stubs.o" && ar rcs build/libsa.a "$obj/stubs.o"
  gcc "${cflags[@]}" -DLP_DATA_DIR="\"$PWD/data\"" src/cli/quant_main.c src/cli/common.c -o build/llama-pajamas-quant \
    "${libs[@]}"
  for b in synth_checkpoint bench_cuda; do gcc "${cflags[@]}" "bench/$b.c" -o "build/$b" "${libs[@]}"; done
  gcc "${cflags[@]}" tests/unit/test_cuda.c -o build/test_cuda "${libs[@]}" -lcmocka
  g++ -std=c++17 -O1 -Wno-unknown-pragmas "${defs[@]}" -Isrc/backend/cuda src/backend/cuda/emu_test.cpp \
    -o build/test_cuda_emu "${libs[@]}" -lcmocka
}

build() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  if have_all_modules; then
    cmake -S . -B build -DLP_NATIVE=OFF >/dev/null && cmake --build build -j"$JOBS" 2>&1 | tail -3
  else
    echo "pkg-config modules missing: standalone build against $CARRY/debs"
    build_standalone 2>&1 | tail -20
  fi
}

run_tests() {
  [ -x build/bench_cuda ] || build # a cold machine lost the previous call's build
  export LD_LIBRARY_PATH="/tmp/lp-sysroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  build/test_cuda_emu 2>&1 | tail -3
  [ -d out/tiny/gguf ] || build/llama-pajamas-quant convert --model models/tiny-qwen3 --output out/tiny \
    --precision f32,q8_0,q4_k_m,q6_k >/dev/null
  local small
  small="$(ls out/small/gguf/*/*.gguf 2>/dev/null | head -1)"
  [ -n "$small" ] && export LP_CUDA_TEST_SMALL_GGUF="$PWD/$small"
  LP_CUDA_TEST_GGUF_DIR="$PWD/out/tiny" build/test_cuda 2>&1 | tee "$OUTDIR/test_cuda.log" | grep -vE '^\[ (RUN|  *OK) ' | tail -60
}

synth() {
  [ -x build/bench_cuda ] || build # a cold machine lost the previous call's build
  export LD_LIBRARY_PATH="/tmp/lp-sysroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  rm -rf "$SYN" "$SYN-out"
  /usr/bin/time -f "synth %e s" build/synth_checkpoint "$CARRY/Qwen3-8B.config.json" "$CARRY/tokenizer" "$SYN" >/dev/null
  /usr/bin/time -f "convert %e s, %M KB" build/llama-pajamas-quant convert --model "$SYN" --output "$SYN-out" \
    --precision q4_k_m,q8_0 >/dev/null
  rm -rf "$SYN" # 16 GB of bf16 no longer needed
  local p
  for p in $PRECISIONS; do case "$p" in mlx-*) synth_one "$p" ;; esac; done
  ls -la "$SYN-out"/gguf/*/ "$SYN-out"/mlx/*/ 2>/dev/null || true
}

# The same GGUFs (types, shapes, metadata) and MLX directories written directly by
# synth_checkpoint --gguf / --mlx: random rows quantized once (MLX: per row) and cycled.
synth_fast() {
  [ -x build/bench_cuda ] || build
  export LD_LIBRARY_PATH="/tmp/lp-sysroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  local p
  for p in $PRECISIONS; do synth_one "$p"; done
}

# Per-op GPU time of prefill, batch-1 decode and 8-stream decode (LP_CUDA_PROFILE=1).
profile() {
  [ -x build/bench_cuda ] || build
  export LD_LIBRARY_PATH="/tmp/lp-sysroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  local p f
  for p in ${LP_PROFILE_PRECISIONS:-q4_k_m}; do
    f="$(model_path "$p")"
    LP_CUDA_PROFILE=1 build/bench_cuda "$f" --label "profile $p" --depths 512 --gen 32 --prefill 512 --streams 8 \
      --copy-gib 1 2>&1 | tee "$OUTDIR/profile-$p.log"
  done
}

# Nsight Compute on a few decode GEMV launches (eager): bandwidth, stalls, occupancy.
ncu_gemv() {
  [ -x build/bench_cuda ] || build
  export LD_LIBRARY_PATH="/tmp/lp-sysroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  local f
  f="$(model_path "${LP_NCU_PRECISION:-q4_k_m}")"
  LP_CUDA_GRAPHS=0 timeout 300 ncu -k "regex:${LP_NCU_KERNELS:-lpc_gemv_q}" --launch-skip "${LP_NCU_SKIP:-400}" \
    --launch-count "${LP_NCU_COUNT:-6}" --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    --section LaunchStats --section Occupancy build/bench_cuda "$f" --depths 512 --gen 4 --prefill 512 --streams 8 \
    --copy-gib 1 >"$OUTDIR/ncu.txt" 2>&1 || true
  grep -E "lpc_|DRAM Throughput|Memory Throughput|Duration|Registers|Achieved Occupancy|Stall|Block Size|Grid Size" \
    "$OUTDIR/ncu.txt" | head -120
}

# Nsight Systems over batch-1 decode with graphs (kernels inside graphs traced one by
# one): per-kernel totals and the GPU trace (start, duration) for gap analysis.
nsys_decode() {
  [ -x build/bench_cuda ] || build
  export LD_LIBRARY_PATH="/tmp/lp-sysroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  local f nsys
  nsys="$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems/*/bin/nsys 2>/dev/null | head -1)"
  [ -n "$nsys" ] || { echo "nsys not found"; return 0; }
  f="$(model_path "${LP_NSYS_PRECISION:-q4_k_m}")"
  "$nsys" profile -o /tmp/lp-nsys --force-overwrite true --cuda-graph-trace=node -t cuda build/bench_cuda "$f" \
    --depths "${LP_NSYS_DEPTH:-512}" --gen 48 --prefill "" --streams "" --copy-gib 1 2>&1 | tail -8
  "$nsys" stats -q -r cuda_gpu_kern_sum --format csv /tmp/lp-nsys.nsys-rep >"$OUTDIR/nsys-kern.csv" 2>/dev/null || true
  "$nsys" stats -q -r cuda_gpu_trace --format csv /tmp/lp-nsys.nsys-rep | gzip >"$OUTDIR/nsys-trace.csv.gz" || true
  head -30 "$OUTDIR/nsys-kern.csv" | cut -c1-220
}

# Batch-1 decode inside the graph, kernel by kernel (bench/cupti_trace.c preloaded):
# LP_TRACE_PRECISIONS (default q4_k_m) at LP_TRACE_DEPTHS (default 512 16384), one run each.
trace_decode() {
  [ -x build/bench_cuda ] || build
  export LD_LIBRARY_PATH="/tmp/lp-sysroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  local cuda inc lib p d f
  cuda="$(dirname "$(dirname "$(command -v nvcc)")")"
  inc="$(dirname "$(find "$cuda/" -name cupti.h | head -1)")"
  lib="$(dirname "$(find "$cuda/" -name 'libcupti.so' | head -1)")"
  gcc -std=c11 -O2 -Wall -shared -fPIC bench/cupti_trace.c -I"$inc" -I"$cuda/include" -L"$lib" -Wl,-rpath,"$lib" -lcupti \
    -o build/libcupti_trace.so
  for p in ${LP_TRACE_PRECISIONS:-q4_k_m}; do
    f="$(model_path "$p")"
    for d in ${LP_TRACE_DEPTHS:-512 16384}; do
      LD_PRELOAD="$PWD/build/libcupti_trace.so" LP_TRACE_OUT="$OUTDIR/trace-$p-$d.txt" build/bench_cuda "$f" \
        --depths "$d" --gen 64 --prefill "" --streams "" --copy-gib 1 2>&1 | grep -E "decode|copy" || true
      head -${LP_TRACE_LINES:-90} "$OUTDIR/trace-$p-$d.txt"
    done
  done
}

gemv_bench_build() {
  mkdir -p build
  [ -x build/cuda_gemv_bench ] || nvcc -std=c++17 -O3 -arch=sm_90 -Isrc bench/cuda_gemv_bench.cu -o build/cuda_gemv_bench
}

# The decode GEMV variants alone (bench/cuda_gemv_bench.cu): GB/s per shape and type.
gemv_bench() {
  gemv_bench_build
  build/cuda_gemv_bench x1 | tee "$OUTDIR/gemv.log"
}

# The matmuls of a whole q4_k_m decode step as one chain against their sum alone
# (cuda_gemv_bench chain): what the boundaries between different kernels cost.
chain_bench() {
  gemv_bench_build
  build/cuda_gemv_bench chain | tee "$OUTDIR/chain.log"
}

# The int8 MMA kernel: alone against the GEMV at 8-64 columns (cuda_gemv_bench mma), then
# batched decode of LP_MMA_PRECISIONS (default q4_k_m; needs `fast` or `synth` first) at
# 16/32/64 streams with it (LP_CUDA_MMA_MAX_N=64) and with the path it replaces (0: F16
# tiles + cuBLAS above LP_CUDA_GEMV_MAX_N).
mma_bench() {
  gemv_bench_build
  build/cuda_gemv_bench mma | tee "$OUTDIR/mma.log"
  [ -x build/bench_cuda ] || build
  export LD_LIBRARY_PATH="/tmp/lp-sysroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  local p f v
  for p in ${LP_MMA_PRECISIONS:-q4_k_m}; do
    f="$(model_path "$p")"
    for v in 64 0; do
      LP_CUDA_MMA_MAX_N=$v build/bench_cuda "$f" --label "$p LP_CUDA_MMA_MAX_N=$v" --depths "" --prefill "" \
        --streams 16,32,64 --copy-gib 1 2>&1 | tee "$OUTDIR/mma-streams-$p-$v.log"
    done
  done
}

# A/B of one environment knob on batch-1 decode: LP_AB_VAR (e.g. LP_CUDA_ATTN_CHUNK)
# set to each of LP_AB_VALUES in turn (repeat a value to see the run-to-run noise) for
# LP_AB_PRECISIONS (default q4_k_m; needs `fast` or `synth` first) at LP_AB_DEPTHS.
ab_bench() {
  [ -x build/bench_cuda ] || build
  export LD_LIBRARY_PATH="/tmp/lp-sysroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  local var="${LP_AB_VAR:?set LP_AB_VAR to the knob to vary}" p f v
  for p in ${LP_AB_PRECISIONS:-q4_k_m}; do
    f="$(model_path "$p")"
    for v in ${LP_AB_VALUES:?set LP_AB_VALUES}; do
      env "$var=$v" build/bench_cuda "$f" --label "$p $var=$v" --depths "${LP_AB_DEPTHS:-512,4096}" --gen 64 --prefill "" \
        --streams "" --copy-gib 1 2>&1 | grep -E "decode" | sed "s|^|$p $var=$v: |" | tee -a "$OUTDIR/ab.log"
    done
  done
}

# A/B of a kernel change within one machine session: the module built from the tree
# (new) and from the tree with the files of directory LP_AB_OLD swapped into
# src/backend/cuda (old: e.g. `git show HEAD~1:src/backend/cuda/lpc_attn.cuh >
# out/ab/lpc_attn.cuh`, carrying out/ab), both compiled alike, then batch-1 decode with
# each picked by LP_CUDA_MODULE, alternately (LP_AB_RUNS pairs, default 3).
ab_modules() {
  [ -x build/bench_cuda ] || build
  local old="${LP_AB_OLD:?set LP_AB_OLD to a directory of old src/backend/cuda files}" root=/tmp/lp-sysroot d p f i m
  [ -d "$root/usr/include" ] || for d in "$CARRY"/debs/*.deb; do dpkg -x "$d" "$root"; done
  rm -rf /tmp/ab-old /tmp/ab-new.so /tmp/ab-old.so && mkdir -p /tmp/ab-old && cp -r src /tmp/ab-old/ && cp "$old"/* /tmp/ab-old/src/backend/cuda/
  local flags=(-D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Isrc -I"$root/usr/include" -I"$root/usr/include/x86_64-linux-gnu")
  cuda_module /tmp/ab-new.so "${flags[@]}" &
  (cd /tmp/ab-old && cuda_module /tmp/ab-old.so "${flags[@]}") &
  wait
  [ -f /tmp/ab-new.so ] && [ -f /tmp/ab-old.so ] || { echo "ab_modules: a module failed to build" >&2; return 1; }
  export LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  for p in ${LP_AB_PRECISIONS:-q4_k_m}; do
    f="$(model_path "$p")"
    for i in $(seq "${LP_AB_RUNS:-3}"); do
      for m in old new; do
        LP_CUDA_MODULE=/tmp/ab-$m.so build/bench_cuda "$f" --depths "${LP_AB_DEPTHS:-512,4096}" --gen 64 --prefill "" \
          --streams "" --copy-gib 1 2>&1 | grep -E "decode" | sed "s|^|$p $m: |" | tee -a "$OUTDIR/ab.log"
      done
    done
  done
}

bench() {
  [ -x build/bench_cuda ] || build # a cold machine lost the previous call's build
  export LD_LIBRARY_PATH="/tmp/lp-sysroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  local p f
  # LP_BENCH_PRECISIONS / LP_BENCH_ARGS (extra bench_cuda options) narrow a quick run
  for p in $PRECISIONS; do
    f="$(model_path "$p")"
    # shellcheck disable=SC2086
    build/bench_cuda "$f" --label "Qwen3-8B shapes $p" --json "$OUTDIR/cuda-$p.json" ${LP_BENCH_ARGS:-} 2>&1 |
      tee "$OUTDIR/bench-$p.log"
  done
  python3 - "$OUTDIR" <<'EOF'
import json, sys, glob, os
d = sys.argv[1]
runs = {os.path.basename(f)[5:-5]: json.load(open(f)) for f in sorted(glob.glob(os.path.join(d, 'cuda-*.json')))}
json.dump({'backend': 'cuda', 'runs': runs}, open(os.path.join(d, 'cuda.json'), 'w'), indent=2)
EOF
}

[ $# -gt 0 ] || { sed -n 2,28p "$0"; exit 2; }
for stage in "$@"; do
  case "$stage" in
    prepare) prepare; exit 0 ;;
    build) build ;;
    test) run_tests ;;
    synth) synth ;;
    fast) synth_fast ;;
    profile) profile ;;
    ncu) ncu_gemv ;;
    nsys) nsys_decode ;;
    trace) trace_decode ;;
    stamps_module) stamps_module ;;
    stamps) stamps_run ;;
    gemv) gemv_bench ;;
    chain) chain_bench ;;
    mma) mma_bench ;;
    ab) ab_bench ;;
    abmod) ab_modules ;;
    bench) bench ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
