#!/usr/bin/env bash
# test-neon.sh — owns the AArch64 NEON test: cross-compiles src/quant, src/core and the
# CPU backend with tests/neon/neon_check.c for aarch64, once with dotprod (SDOT) and once
# for plain ARMv8-A, and runs both under qemu-user; neon_check compares every NEON kernel
# with the scalar reference. No arm64 libraries are needed (tests/neon/include stands in
# for jansson.h). Skips, exiting 0, when the cross compiler or qemu-aarch64 is missing
# (scripts/install-deps.sh --test installs gcc-aarch64-linux-gnu and qemu-user).
set -euo pipefail
cd "$(dirname "$0")/.."
CC="${LP_AARCH64_CC:-aarch64-linux-gnu-gcc}"
QEMU="${LP_QEMU_AARCH64:-qemu-aarch64}"
SYSROOT="${LP_AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}"
OUT=build-neon-arm

for tool in "$CC" "$QEMU"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "test-neon: SKIPPED — $tool not found (apt-get install gcc-aarch64-linux-gnu qemu-user)"
    exit 0
  fi
done

# The project's flags (CMakeLists.txt) that matter here: -ffp-contract=off keeps the float
# arithmetic as written, which the bit-exact checks rely on; -Werror keeps NEON code clean.
CFLAGS=(-std=c11 -O2 -Wall -Wextra -Wno-unused-parameter -Werror -ffp-contract=off
  -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Isrc -Itests/neon/include)
SOURCES=(src/quant/*.c src/core/err.c src/core/pool.c src/backend/cpu/*.c tests/neon/neon_check.c)

# build NAME MARCH: one binary per target, objects compiled in parallel.
build() {
  local dir="$OUT/$1" objs=() pids=() pid
  mkdir -p "$dir"
  for src in "${SOURCES[@]}"; do
    local obj="$dir/$(echo "${src%.c}" | tr / _).o"
    objs+=("$obj")
    "$CC" "${CFLAGS[@]}" -march="$2" -c "$src" -o "$obj" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || { echo "test-neon: FAILED to compile for $2"; exit 1; }
  done
  "$CC" -o "$dir/neon_check" "${objs[@]}" -lpthread -lm
}

# The variant must contain exactly the dot-product instructions its target allows.
check_sdot() {
  local n
  n=$(aarch64-linux-gnu-objdump -d "$OUT/$1/neon_check" | grep -c $'\tsdot\t' || true)
  if [ "$2" = yes ] && [ "$n" -eq 0 ]; then echo "test-neon: $1 build has no SDOT"; exit 1; fi
  if [ "$2" = no ] && [ "$n" -ne 0 ]; then echo "test-neon: $1 build uses SDOT"; exit 1; fi
}

start=$SECONDS
echo "== NEON kernels (aarch64 under qemu-user)"
build dotprod armv8.2-a+dotprod
build plain armv8-a
if command -v aarch64-linux-gnu-objdump >/dev/null 2>&1; then
  check_sdot dotprod yes
  check_sdot plain no
fi
# both variants at once (one core each), then their reports in order
declare -A run
for v in dotprod plain; do
  "$QEMU" -L "$SYSROOT" "$OUT/$v/neon_check" > "$OUT/$v.log" 2>&1 &
  run[$v]=$!
done
status=0
for v in dotprod plain; do
  wait "${run[$v]}" || status=1
  cat "$OUT/$v.log"
done
echo "test-neon: $( [ $status -eq 0 ] && echo passed || echo FAILED ) in $((SECONDS - start)) s"
exit $status
