/* lpc_stamps.cuh — per-block phase timestamps of the decode kernels, for measuring
 * what a step's critical path is made of (a timing tool, off in the product).
 *
 * Built only into the module variant compiled with -DLPC_STAMPS (CMake option
 * LP_CUDA_STAMPS: libllama-pajamas-cuda-stamps.so, picked with LP_CUDA_MODULE). There,
 * thread 0 of every block of an instrumented kernel notes %globaltimer at entry and
 * %clock64 at each LPC_STAMP_MARK(i) (where the kernel's phases end: its grid wait, the
 * staging of its input, ...); at LPC_STAMP_END the block waits for all its warps and
 * appends one record to a ring in device memory. With LP_CUDA_STAMPS=FILE the backend
 * writes the ring to FILE when destroyed (bench/stamps_report.c reads it). Elsewhere every
 * macro is nothing, so the product's kernels are untouched. */
#ifndef LPC_STAMPS_CUH
#define LPC_STAMPS_CUH

#include <stdint.h>

enum { LPC_STAMP_MARKS = 6, LPC_STAMP_RING = 1 << 18 };
enum { LPC_TAG_GEMV1 = 1, LPC_TAG_GLU = 2, LPC_TAG_ATTN1 = 3, LPC_TAG_GEMVN = 4 };

/* One block's record (64 bytes; the file is a u32 count, then the ring). */
typedef struct {
    uint32_t tag, rows, k, smid;      /* kernel, its output rows, its input length, the block's SM */
    uint64_t g_entry, g_exit;         /* %globaltimer (ns) at entry and after the last warp ended */
    uint32_t mark[LPC_STAMP_MARKS];   /* %clock64 cycles from entry to each mark (0: not reached) */
    uint32_t exit_cycles, block;      /* cycles from entry to exit; blockIdx.x + 65536 * blockIdx.y */
} lpc_stamp_rec;

#if defined(LPC_STAMPS) && !defined(LPC_EMU)
static __device__ lpc_stamp_rec lpc_stamp_ring[LPC_STAMP_RING];
static __device__ unsigned lpc_stamp_next;

/* The block's record under way lives in shared memory: the kernel keeps no registers for it. */
__device__ __forceinline__ void lpc_stamp_begin(lpc_stamp_rec &r, long long &c0) {
    if (threadIdx.x) return;
    uint64_t g;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g));
    r.g_entry = g;
    c0 = clock64();
    for (int i = 0; i < LPC_STAMP_MARKS; i++) r.mark[i] = 0;
}
__device__ __forceinline__ void lpc_stamp_mark(lpc_stamp_rec &r, long long c0, int i) {
    if (threadIdx.x == 0) r.mark[i] = (uint32_t)(clock64() - c0);
}
__device__ __forceinline__ void lpc_stamp_end(lpc_stamp_rec &r, long long c0, uint32_t tag, uint32_t rows, uint32_t k) {
    __syncthreads();
    if (threadIdx.x) return;
    r.exit_cycles = (uint32_t)(clock64() - c0);
    uint64_t g;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g));
    r.g_exit = g;
    r.tag = tag, r.rows = rows, r.k = k;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(r.smid));
    r.block = blockIdx.x + 65536u * blockIdx.y;
    lpc_stamp_ring[atomicAdd(&lpc_stamp_next, 1u) % LPC_STAMP_RING] = r;
}
#define LPC_STAMP_BEGIN()                   \
    __shared__ lpc_stamp_rec stamp_rec_;    \
    __shared__ long long stamp_c0_;         \
    lpc_stamp_begin(stamp_rec_, stamp_c0_)
#define LPC_STAMP_MARK(i) lpc_stamp_mark(stamp_rec_, stamp_c0_, (i))
#define LPC_STAMP_END(tag, rows, k) lpc_stamp_end(stamp_rec_, stamp_c0_, (tag), (rows), (k))

#include <stdio.h>
/* Writes the ring (its records in arrival order once it wrapped) to path; 0 or -1. */
static inline int lpc_stamps_dump(const char *path) {
    unsigned next = 0;
    lpc_stamp_rec *ring = (lpc_stamp_rec *)malloc(sizeof(lpc_stamp_rec) * LPC_STAMP_RING);
    if (!ring || cudaMemcpyFromSymbol(&next, lpc_stamp_next, sizeof next) != cudaSuccess ||
        cudaMemcpyFromSymbol(ring, lpc_stamp_ring, sizeof(lpc_stamp_rec) * LPC_STAMP_RING) != cudaSuccess) {
        free(ring);
        return -1;
    }
    const unsigned cap = LPC_STAMP_RING, n = next < cap ? next : cap, first = next < cap ? 0 : next % cap;
    FILE *f = fopen(path, "wb");
    int rc = f ? 0 : -1;
    if (f) {
        fwrite(&n, sizeof n, 1, f);
        fwrite(ring + first, sizeof *ring, cap - first < n ? cap - first : n, f);
        if (first) fwrite(ring, sizeof *ring, first, f);
        if (fclose(f) != 0) rc = -1;
    }
    free(ring);
    return rc;
}
#else
#define LPC_STAMP_BEGIN() ((void)0)
#define LPC_STAMP_MARK(i) ((void)0)
#define LPC_STAMP_END(tag, rows, k) ((void)0)
#endif

#endif
