/* lpc_port.cuh — what the CUDA kernels need from the platform, in one place, so
 * the same kernel source compiles with nvcc (the real backend) and with a host
 * C++ compiler over simt_emu.h (LPC_EMU: CPU tests of the kernels without a GPU).
 * Half/bfloat16 values travel as raw uint16_t; these helpers convert them. */
#ifndef LPC_PORT_CUH
#define LPC_PORT_CUH

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef LPC_EMU
#include "simt_emu.h"
#define LPC_HD inline
#else
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define LPC_HD __host__ __device__ __forceinline__
#define LPC_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
typedef cudaStream_t lpc_stream;
#endif

#define LPC_FULL_MASK 0xffffffffu

LPC_HD int lpc_imin(int a, int b) { return a < b ? a : b; }
LPC_HD int lpc_imax(int a, int b) { return a > b ? a : b; }

/* IEEE half -> float (exact), portable bit manipulation for the host side. */
LPC_HD float lpc_h2f_soft(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                man <<= 1;
                e++;
            } while (!(man & 0x400u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    union { uint32_t u; float f; } cv;
    cv.u = bits;
    return cv.f;
}

/* float -> IEEE half, round to nearest even, overflow to inf (host side). */
LPC_HD uint16_t lpc_f2h_soft(float f) {
    union { float f; uint32_t u; } cv;
    cv.f = f;
    const uint32_t x = cv.u, sign = (x >> 16) & 0x8000u;
    const uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds past 65504 */
    if (absx < 0x38800000u) {                                  /* half subnormal or zero */
        if (absx < 0x33000000u) return (uint16_t)sign;
        const uint32_t e = absx >> 23, man = (absx & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126 - e; /* 14 + (112 - e) + ... */
        uint32_t q = man >> (shift), rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t h = ((absx - 0x38000000u) >> 13), rem = absx & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

#if defined(LPC_EMU)
LPC_HD float lpc_h2f(uint16_t h) { return lpc_h2f_soft(h); }
LPC_HD uint16_t lpc_f2h(float f) { return lpc_f2h_soft(f); }
#else
__device__ __forceinline__ float lpc_h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ uint16_t lpc_f2h(float f) { return __half_as_ushort(__float2half_rn(f)); }
#endif

/* __byte_perm (PRMT): byte i of the result is byte (s >> 4i) & 7 of the pair y:x (x =
 * bytes 0-3). One instruction on the GPU; the portable loop is the emulator's. Only the
 * plain selector mode (bit 3 of each nibble clear) is used. */
LPC_HD uint32_t lpc_prmt(uint32_t x, uint32_t y, uint32_t s) {
#ifdef __CUDA_ARCH__
    return __byte_perm(x, y, s);
#else
    const uint64_t yx = (uint64_t)y << 32 | x;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) r |= (uint32_t)((yx >> (8 * ((s >> (4 * i)) & 7))) & 0xffu) << (8 * i);
    return r;
#endif
}

/* Bits of a uint32 as a float (device intrinsic, memcpy elsewhere). */
LPC_HD float lpc_u2f(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

LPC_HD float lpc_bf2f(uint16_t h) {
    union { uint32_t u; float f; } cv;
    cv.u = (uint32_t)h << 16;
    return cv.f;
}

/* Saturating float -> half for GEMM operands: F16 overflow would turn an outlier
 * activation into inf; clamping keeps the product finite. */
#ifdef LPC_EMU
LPC_HD uint16_t lpc_f2h_sat(float f) {
    f = f > 65504.0f ? 65504.0f : f < -65504.0f ? -65504.0f : f;
    return lpc_f2h(f);
}
#else
__device__ __forceinline__ uint16_t lpc_f2h_sat(float f) { return lpc_f2h(fminf(fmaxf(f, -65504.0f), 65504.0f)); }
#endif

template <class T>
__device__ __forceinline__ T lpc_warp_sum(T v) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(LPC_FULL_MASK, v, m);
    return v;
}

__device__ __forceinline__ float lpc_warp_max(float v) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) {
        float o = __shfl_xor_sync(LPC_FULL_MASK, v, m);
        v = o > v ? o : v;
    }
    return v;
}

/* Grid-wide "last one out" for a group of `n` blocks sharing a zeroed counter: every
 * thread of each block calls it after writing its results; it returns true (the same in
 * every thread of a block) only in the last block of the group to count in, after which
 * that block may read what the others wrote (through L2: __ldcg). Each block publishes
 * its writes (__threadfence) before counting itself in; the last one resets the counter
 * for the next launch (graph replays run the same kernel on the same counters). */
__device__ __forceinline__ bool lpc_last_block(unsigned *counter, unsigned n) {
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(counter, 1u) == n - 1;
        if (last) *counter = 0; /* every block has counted: nobody else touches it */
    }
    __syncthreads();
    if (!last) return false; /* block-uniform */
    __threadfence();
    return true;
}

/* Programmatic dependent launch (sm_90+). A kernel launched with LPC_LAUNCH_PDL may
 * start while the previous kernel in the stream is still running: everything before
 * its lpc_grid_wait() must read only data no earlier kernel writes (weights), and
 * lpc_grid_wait() returns once the previous grid has completed and its writes are
 * visible. lpc_launch_dependents() lets the next (PDL) grid be scheduled as soon as
 * every block of this one has started, so its prologue overlaps this grid's tail;
 * LPC_PDL_ENTRY() is both, first thing in a kernel with nothing to do early. Since
 * every block of a grid is resident before the next grid is scheduled, waiting
 * grids cannot starve earlier ones. Off (plain launches, no-op instructions) before
 * sm_90 and in the emulator. */
#ifdef LPC_EMU
#define lpc_grid_wait() ((void)0)
#define lpc_launch_dependents() ((void)0)
#define LPC_LAUNCH_PDL LPC_LAUNCH
#define LPC_LAUNCH_PDL_SMEM(kernel, grid, block, smem, stream, ...) LPC_LAUNCH(kernel, grid, block, stream, __VA_ARGS__)
#define LPC_PDL_ENTRY() ((void)0)
#else
__device__ __forceinline__ void lpc_grid_wait(void) {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void lpc_launch_dependents(void) {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}
/* Set by the backend at init: the device supports PDL and LP_CUDA_PDL is not 0. */
inline bool &lpc_pdl_enabled(void) {
    static bool on = false;
    return on;
}
template <class... KArgs, class... Args>
inline void lpc_launch_pdl_smem(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, Args... args) {
    if (!lpc_pdl_enabled()) {
        kernel<<<grid, block, smem, st>>>(args...);
        return;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    cudaLaunchKernelEx(&cfg, kernel, args...);
}
#define LPC_LAUNCH_PDL(kernel, grid, block, stream, ...) lpc_launch_pdl_smem(kernel, (grid), (block), 0, (stream), __VA_ARGS__)
/* with `smem` bytes of dynamic shared memory (lpc_dyn_smem; over 48 KB: lpc_smem_optin first) */
#define LPC_LAUNCH_PDL_SMEM(kernel, grid, block, smem, stream, ...) \
    lpc_launch_pdl_smem(kernel, (grid), (block), (smem), (stream), __VA_ARGS__)
#define LPC_PDL_ENTRY()          \
    do {                         \
        lpc_launch_dependents(); \
        lpc_grid_wait();         \
    } while (0)
#endif

/* Blocks of `threads` threads of kernel k that fit on one SM at once (1 if unknown; 1
 * in the emulator, which runs one block at a time). */
#ifdef LPC_EMU
template <class K>
inline int lpc_resident_blocks(K k, int threads) {
    (void)k, (void)threads;
    return 1;
}
#else
template <class K>
inline int lpc_resident_blocks(K k, int threads) {
    int n = 0;
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, threads, 0) == cudaSuccess && n > 0 ? n : 1;
}
#endif

/* Dynamic shared memory (the launch's smem bytes) and asynchronous 16-byte copies from
 * global into it (cp.async, sm_80+): a kernel can start loading data it will need and
 * go on with other work, or wait on the previous grid, while the loads are in flight.
 * lpc_cp_async_wait_all() makes the calling thread's copies visible to itself; other
 * threads see them after a barrier (__syncwarp / __syncthreads). Before sm_80 and in
 * the emulator the copies are plain loads and stores. */
enum { LPC_DYN_SMEM_MAX = 227 * 1024 };
#ifdef LPC_EMU
inline uint8_t *lpc_dyn_smem(void) {
    alignas(16) static uint8_t buf[LPC_DYN_SMEM_MAX]; /* one block runs at a time */
    return buf;
}
inline void lpc_cp_async16(void *dst, const void *src) { memcpy(dst, src, 16); }
inline void lpc_cp_async_commit(void) {}
inline void lpc_cp_async_wait_all(void) {}
template <class K>
inline void lpc_smem_optin(K k, size_t bytes, unsigned &done) {
    (void)k, (void)bytes, (void)done;
}
#else
__device__ __forceinline__ uint8_t *lpc_dyn_smem(void) {
    extern __shared__ __align__(16) uint8_t lpc_dyn[];
    return lpc_dyn;
}
__device__ __forceinline__ void lpc_cp_async16(void *dst, const void *src) {
#if __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(src) : "memory");
#else
    *(uint4 *)dst = *(const uint4 *)src;
#endif
}
__device__ __forceinline__ void lpc_cp_async_commit(void) {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
__device__ __forceinline__ void lpc_cp_async_wait_all(void) {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}
/* Allow kernel k `bytes` of dynamic shared memory (needed above 48 KB) on the current
 * device, once per device: done holds a bit per device already set (the caller's static,
 * one per kernel and size). */
template <class K>
inline void lpc_smem_optin(K k, size_t bytes, unsigned &done) {
    int dev = 0;
    cudaGetDevice(&dev);
    const unsigned bit = 1u << (dev & 31);
    if (done & bit) return;
    if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes) == cudaSuccess) done |= bit;
}
#endif

/* 16-byte read-only load (the weight planes and activations are 16-byte aligned). */
__device__ __forceinline__ uint4 lpc_ld16(const void *p) { return __ldg((const uint4 *)p); }
__device__ __forceinline__ uint2 lpc_ld8(const void *p) { return __ldg((const uint2 *)p); }
__device__ __forceinline__ uint16_t lpc_ld2(const void *p) { return __ldg((const uint16_t *)p); }

#endif
