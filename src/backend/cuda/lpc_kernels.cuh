/* lpc_kernels.cuh — every CUDA kernel of the backend and its launcher.
 *
 * Written against lpc_port.cuh only, so the same source runs on the GPU (nvcc)
 * and on the CPU emulator (simt_emu.h) in the tests. Launchers take a stream and
 * launch asynchronously; the caller checks cudaGetLastError. The decode GEMVs
 * and the int8 activation shadow they read live in lpc_gemv.cuh, the int8 tensor-core
 * matmul for wider batches in lpc_mma.cuh, per-head ops and attention in lpc_attn.cuh. */
#ifndef LPC_KERNELS_CUH
#define LPC_KERNELS_CUH

#include <math.h>

#include "lpc_attn.cuh"
#include "lpc_gemv.cuh"
#include "lpc_mma.cuh"

/* ---- dequantization of whole rows (embedding lookup; F16 tiles for cuBLAS) ---- */

__device__ __forceinline__ void lpc_put(float *dst, size_t i, float v) { dst[i] = v; }
__device__ __forceinline__ void lpc_put(uint16_t *dst, size_t i, float v) { dst[i] = lpc_f2h_sat(v); }

/* 16 values to dst (16-element aligned) with 16-byte stores: element-wise 2-byte
 * stores made the F16 tiles for cuBLAS the slowest part of prefill. */
__device__ __forceinline__ void lpc_put16(float *dst, const float (&v)[16]) {
#pragma unroll
    for (int k = 0; k < 4; k++)
        lpc_store16(dst + 4 * k, make_uint4(__float_as_uint(v[4 * k]), __float_as_uint(v[4 * k + 1]), __float_as_uint(v[4 * k + 2]),
                                            __float_as_uint(v[4 * k + 3])));
}
__device__ __forceinline__ void lpc_put16(uint16_t *dst, const float (&v)[16]) {
    uint32_t h[8];
#pragma unroll
    for (int k = 0; k < 8; k++) h[k] = (uint32_t)lpc_f2h_sat(v[2 * k]) | (uint32_t)lpc_f2h_sat(v[2 * k + 1]) << 16;
    lpc_store16(dst, make_uint4(h[0], h[1], h[2], h[3]));
    lpc_store16(dst + 8, make_uint4(h[4], h[5], h[6], h[7]));
}

/* Row of dst block b: source row = ids ? ids[b] : row0 + b. */
template <class T, class OUT>
__global__ void __launch_bounds__(128) lpc_dequant_q(const uint8_t *A, const uint8_t *B, int bpr, int K, const int *ids,
                                                     int row0, OUT *dst) {
    const int row = ids ? ids[blockIdx.x] : row0 + (int)blockIdx.x;
    const uint8_t *a = A + (size_t)row * bpr * T::A_BYTES, *b = B + (size_t)row * bpr * T::B_BYTES;
    OUT *out = dst + (size_t)blockIdx.x * K;
    for (int s = threadIdx.x; s < bpr * T::SLICES; s += blockDim.x) {
        const int blk = s / T::SLICES;
        lpc_slice<T::RUNS> sl;
        T::decode(a + (size_t)blk * T::A_BYTES, b + (size_t)blk * T::B_BYTES, s % T::SLICES, sl);
#pragma unroll
        for (int q = 0; q < T::RUNS; q++) {
            float v[16];
#pragma unroll
            for (int i = 0; i < 16; i++) {
                const int byte = (int)(int8_t)((sl.v[q][i / 4] >> (8 * (i % 4))) & 0xffu);
                v[i] = sl.scale[q] * (float)byte - sl.minv[q];
            }
            lpc_put16(out + (size_t)blk * T::BLOCK + sl.off[q], v);
        }
    }
}

template <int WT, class OUT>
__global__ void __launch_bounds__(128) lpc_dequant_f(const uint8_t *rows, size_t row_bytes, int K, const int *ids, int row0,
                                                     OUT *dst) {
    enum { EPC = WT == 0 ? 4 : 8 };
    const int row = ids ? ids[blockIdx.x] : row0 + (int)blockIdx.x;
    const uint8_t *src = rows + (size_t)row * row_bytes;
    OUT *out = dst + (size_t)blockIdx.x * K;
    for (int ch = threadIdx.x; ch < K / EPC; ch += blockDim.x) {
        float w[8];
        lpc_widen16<WT>(lpc_load16(src + (size_t)ch * 16), w);
#pragma unroll
        for (int k = 0; k < EPC; k++) lpc_put(out, (size_t)ch * EPC + k, w[k]);
    }
}

template <class OUT>
struct lpc_dequant_launch {
    lpc_stream st;
    const uint8_t *a, *b;
    size_t row_bytes;
    int bpr, K, n_rows, row0;
    const int *ids;
    OUT *dst;
    template <class T>
    void run() {
        auto kern = lpc_dequant_q<T, OUT>;
        LPC_LAUNCH(kern, dim3((unsigned)n_rows), dim3(128), st, a, b, bpr, K, ids, row0, dst);
    }
};

/* n_rows rows (ids[i] or row0 + i) of a device weight into dst[n_rows][K] (float or F16 bits). */
template <class OUT>
inline bool lpc_dequant_rows(lpc_stream st, int type, const uint8_t *a, const uint8_t *b, size_t row_bytes, int bpr, int K,
                             const int *ids, int row0, int n_rows, OUT *dst) {
    if (n_rows <= 0) return true;
    const dim3 grid((unsigned)n_rows);
    auto f32 = lpc_dequant_f<0, OUT>, f16 = lpc_dequant_f<1, OUT>, bf16 = lpc_dequant_f<2, OUT>;
    switch (type) {
    case LPC_F32: LPC_LAUNCH(f32, grid, dim3(128), st, a, row_bytes, K, ids, row0, dst); return true;
    case LPC_F16: LPC_LAUNCH(f16, grid, dim3(128), st, a, row_bytes, K, ids, row0, dst); return true;
    case LPC_BF16: LPC_LAUNCH(bf16, grid, dim3(128), st, a, row_bytes, K, ids, row0, dst); return true;
    default: {
        lpc_dequant_launch<OUT> l = {st, a, b, row_bytes, bpr, K, n_rows, row0, ids, dst};
        return lpc_dispatch_quant(type, l);
    }
    }
}

/* ---- row-wise ops ---- */

__device__ __forceinline__ float lpc_block_sum(float v, float *red) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    v = lpc_warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = 0.0f;
    for (int w = 0; w < n_warps; w++) t += red[w];
    __syncthreads();
    return t;
}

/* out[r] = x[r] * 1/sqrt(mean(x^2) + eps) * w; q8 shadow of out when emit (D % 32 == 0).
 * One block per row; each thread keeps its EPT elements (i = tid + k * blockDim) in
 * registers, so the row is read once with every load in flight together: a loop
 * of dependent load -> reduce -> store rounds made this latency-bound (19 us for
 * one 4096 row on the H100). A warp's elements for a given k are 32 consecutive
 * values, as lpc_q8_emit needs. */
template <int EPT>
__global__ void __launch_bounds__(1024) lpc_rmsnorm_kernel(const float *x, const float *w, int D, float eps, float *out,
                                                           int emit, lpc_q8 o) {
    __shared__ float red[32];
    LPC_PDL_ENTRY();
    const float *xr = x + (size_t)blockIdx.x * D;
    float v[EPT], ss = 0.0f;
#pragma unroll
    for (int k = 0; k < EPT; k++) {
        const int i = threadIdx.x + k * blockDim.x;
        v[k] = i < D ? xr[i] : 0.0f;
        ss += v[k] * v[k];
    }
    ss = lpc_block_sum(ss, red);
    const float scale = 1.0f / sqrtf(ss / (float)D + eps);
    float *orow = out + (size_t)blockIdx.x * D;
#pragma unroll
    for (int k = 0; k < EPT; k++) {
        const int i0 = k * blockDim.x, i = threadIdx.x + i0;
        if (i0 >= D) break; /* uniform: whole warps (D % 32 == 0 when emitting) leave together */
        const float y = i < D ? w[i] * (v[k] * scale) : 0.0f;
        if (i < D) orow[i] = y;
        if (emit && i < D) lpc_q8_emit(y, (size_t)blockIdx.x * D + (i & ~31), threadIdx.x % 32, o); /* warp-uniform */
    }
}

/* Rows of up to 32768 elements. */
inline bool lpc_rmsnorm(lpc_stream st, const float *x, const float *w, int rows, int D, float eps, float *out, int emit, lpc_q8 o) {
    if (D > 32 * 1024) return false;
    const int ept = D <= 8 * 1024 ? 8 : 32;
    const int threads = lpc_imax(32, lpc_imin(1024, ((D + ept - 1) / ept + 31) / 32 * 32));
    if (ept == 8)
        LPC_LAUNCH_PDL(lpc_rmsnorm_kernel<8>, dim3((unsigned)rows), dim3((unsigned)threads), st, x, w, D, eps, out, emit, o);
    else
        LPC_LAUNCH_PDL(lpc_rmsnorm_kernel<32>, dim3((unsigned)rows), dim3((unsigned)threads), st, x, w, D, eps, out, emit, o);
    return true;
}

/* cos/sin of every (token, pair) at the batch positions: angle in f32, cos/sin in double (as the CPU). */
__global__ void lpc_rope_table_kernel(const int *pos, const float *inv_freq, int half, float mscale, float *cs, float *sn) {
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float angle = (float)pos[blockIdx.x] * inv_freq[i];
        cs[(size_t)blockIdx.x * half + i] = (float)cos((double)angle) * mscale;
        sn[(size_t)blockIdx.x * half + i] = (float)sin((double)angle) * mscale;
    }
}

inline void lpc_rope_table(lpc_stream st, int n, const int *pos, const float *inv_freq, int half, float mscale, float *cs, float *sn) {
    LPC_LAUNCH(lpc_rope_table_kernel, dim3((unsigned)n), dim3(64), st, pos, inv_freq, half, mscale, cs, sn);
}

__global__ void lpc_add_kernel(float *x, const float *y, size_t count) {
    LPC_PDL_ENTRY();
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) x[i] += y[i];
}

/* x[r][i] += b[i] (sel == NULL) or b[sel[r]][i] (per-expert bias of routed pair r). */
__global__ void lpc_add_bias_kernel(float *x, const float *b, int D, size_t count, const int *sel) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    const size_t r = i / D;
    x[i] += b[(sel ? (size_t)sel[r] * D : 0) + i % D];
}

inline void lpc_add(lpc_stream st, float *x, const float *y, size_t count) {
    if (count) LPC_LAUNCH_PDL(lpc_add_kernel, dim3((unsigned)((count + 255) / 256)), dim3(256), st, x, y, count);
}
inline void lpc_add_bias(lpc_stream st, float *x, const float *b, int D, size_t count, const int *sel) {
    if (count) LPC_LAUNCH(lpc_add_bias_kernel, dim3((unsigned)((count + 255) / 256)), dim3(256), st, x, b, D, count, sel);
}

/* gate = silu(gate) * up, or the gpt-oss clamped form when limit > 0; emit needs count % 32 == 0. */
__global__ void lpc_swiglu_kernel(float *gate, const float *up, size_t count, float limit, int emit, lpc_q8 o) {
    LPC_PDL_ENTRY();
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return; /* count % 32 == 0 when emitting: whole warps leave together */
    const float v = lpc_swiglu_value(gate[i], up[i], limit);
    gate[i] = v;
    if (emit) lpc_q8_emit(v, i & ~(size_t)31, threadIdx.x % 32, o);
}

inline void lpc_swiglu(lpc_stream st, float *gate, const float *up, size_t count, float limit, int emit, lpc_q8 o) {
    if (count) LPC_LAUNCH_PDL(lpc_swiglu_kernel, dim3((unsigned)((count + 255) / 256)), dim3(256), st, gate, up, count, limit, emit, o);
}

enum { LPC_GATHER_MAX = 64 };
typedef struct {
    int rows[LPC_GATHER_MAX];
} lpc_gather_rows_t;

/* dst[i] = src[rows[i]]; rows travel in the parameters (graph-safe). Overlapping src/dst:
 * the engine gathers into a separate buffer. */
__global__ void lpc_gather_kernel(const float *src, int dim, lpc_gather_rows_t rows, float *dst) {
    const float *s = src + (size_t)rows.rows[blockIdx.x] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[(size_t)blockIdx.x * dim + i] = s[i];
}

inline void lpc_gather(lpc_stream st, const float *src, int dim, const lpc_gather_rows_t &rows, int n, float *dst) {
    LPC_LAUNCH(lpc_gather_kernel, dim3((unsigned)n), dim3(128), st, src, dim, rows, dst);
}

/* ---- MoE routing: top-k per token (ties: lower expert), weights as the CPU's route_row ---- */

__global__ void lpc_topk_kernel(const float *logits, int E, int k, int norm_topk, int *sel, float *wt) {
    const int t = blockIdx.x, lane = threadIdx.x;
    const float *lg = logits + (size_t)t * E;
    unsigned taken = 0; /* bit j: expert lane + 32 j taken (E <= 256) */
    float maxv = 0.0f;
    for (int i = 0; i < k; i++) {
        float bv = -INFINITY;
        int be = E;
        for (int j = 0; lane + 32 * j < E; j++) {
            const int e = lane + 32 * j;
            if (!(taken >> j & 1u) && (be == E || lg[e] > bv)) bv = lg[e], be = e;
        }
#pragma unroll
        for (int m = 16; m > 0; m >>= 1) {
            const float ov = __shfl_xor_sync(LPC_FULL_MASK, bv, m);
            const int oe = __shfl_xor_sync(LPC_FULL_MASK, be, m);
            if (oe < E && (be == E || ov > bv || (ov == bv && oe < be))) bv = ov, be = oe;
        }
        if (be % 32 == lane) taken |= 1u << (be / 32);
        if (lane == 0) sel[(size_t)t * k + i] = be;
        if (i == 0) maxv = bv;
    }
    float denom = 0.0f;
    if (norm_topk) {
        for (int i = 0; i < k; i++) denom += expf(lg[sel[(size_t)t * k + i]] - maxv);
    } else {
        for (int e = lane; e < E; e += 32) denom += expf(lg[e] - maxv);
        denom = lpc_warp_sum(denom);
    }
    if (lane == 0)
        for (int i = 0; i < k; i++) wt[(size_t)t * k + i] = expf(lg[sel[(size_t)t * k + i]] - maxv) / denom;
}

/* out[t] = sum of wt * d[pair] over the token's pairs, in ascending expert order (as the CPU). */
__global__ void lpc_moe_combine_kernel(const float *dres, const int *sel, const float *wt, int k, int D, float *out) {
    const int t = blockIdx.x;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float acc = 0.0f;
        int prev = -1;
        for (int done = 0; done < k; done++) {
            int best = -1;
            for (int j = 0; j < k; j++) {
                const int e = sel[(size_t)t * k + j];
                if (e > prev && (best < 0 || e < sel[(size_t)t * k + best])) best = j;
            }
            prev = sel[(size_t)t * k + best];
            acc += wt[(size_t)t * k + best] * dres[((size_t)t * k + best) * D + i];
        }
        out[(size_t)t * D + i] = acc;
    }
}

inline void lpc_topk(lpc_stream st, int n, const float *logits, int E, int k, int norm_topk, int *sel, float *wt) {
    LPC_LAUNCH(lpc_topk_kernel, dim3((unsigned)n), dim3(32), st, logits, E, k, norm_topk, sel, wt);
}
inline void lpc_moe_combine(lpc_stream st, int n, const float *dres, const int *sel, const float *wt, int k, int D, float *out) {
    LPC_LAUNCH(lpc_moe_combine_kernel, dim3((unsigned)n), dim3(128), st, dres, sel, wt, k, D, out);
}

/* x (F32) -> F16 bits, saturating (GEMM operands). */
__global__ void lpc_to_f16_kernel(const float *x, size_t count, uint16_t *y) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) y[i] = lpc_f2h_sat(x[i]);
}
inline void lpc_to_f16(lpc_stream st, const float *x, size_t count, uint16_t *y) {
    if (count) LPC_LAUNCH(lpc_to_f16_kernel, dim3((unsigned)((count + 255) / 256)), dim3(256), st, x, count, y);
}

#endif
