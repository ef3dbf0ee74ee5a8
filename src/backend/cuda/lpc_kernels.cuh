/* lpc_kernels.cuh — every CUDA kernel of the backend and its launcher.
 *
 * Written against lpc_port.cuh only, so the same source runs on the GPU (nvcc)
 * and on the CPU emulator (simt_emu.h) in the tests. Launchers take a stream and
 * launch asynchronously; the caller checks cudaGetLastError. The decode GEMVs
 * and the int8 activation shadow they read live in lpc_gemv.cuh, the int8 tensor-core
 * matmul for wider batches in lpc_mma.cuh. */
#ifndef LPC_KERNELS_CUH
#define LPC_KERNELS_CUH

#include <math.h>

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

/* ---- per-head rows (q/k norm + rope) and the KV-cache store ---- */

/* KV cache F16, [layer][slot][kv head][pos][head_dim]; this indexes one layer. */
__device__ __forceinline__ size_t lpc_kv_index(int slot, int kvh, int pos, int n_kv, int n_ctx, int hd) {
    return (((size_t)slot * n_kv + kvh) * n_ctx + pos) * hd;
}

__device__ __forceinline__ void lpc_head_put(float *dst, uint16_t *h, int i, float v) {
    if (dst) dst[i] = v;
    if (h) h[i] = lpc_f2h(v);
}

/* One row of hd values by one warp: RMSNorm (w != NULL) then rope (cs != NULL: this
 * token's table rows; neox: pairs (i, i+half)) of src, written to dst (F32; may be
 * src: every lane reads before any lane writes) and/or h (F16 bits: a KV-cache row).
 * b: the warp's hd floats of shared memory. */
__device__ __forceinline__ void lpc_head_row(const float *src, int hd, const float *w, float eps, const float *cs,
                                             const float *sn, int neox, float *b, float *dst, uint16_t *h) {
    const int lane = threadIdx.x % 32;
    float scale = 1.0f;
    if (w) {
        float ss = 0.0f;
        for (int i = lane; i < hd; i += 32) ss += src[i] * src[i];
        ss = lpc_warp_sum(ss);
        scale = 1.0f / sqrtf(ss / (float)hd + eps);
    }
    for (int i = lane; i < hd; i += 32) b[i] = w ? w[i] * (src[i] * scale) : src[i];
    __syncwarp();
    if (!cs) {
        for (int i = lane; i < hd; i += 32) lpc_head_put(dst, h, i, b[i]);
        return;
    }
    const int half = hd / 2;
    for (int i = lane; i < half; i += 32) {
        const int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
        const float c = cs[i], s = sn[i], x0 = b[ia], x1 = b[ib];
        lpc_head_put(dst, h, ia, x0 * c - x1 * s);
        lpc_head_put(dst, h, ib, x1 * c + x0 * s);
    }
}

/* Rows [0, rows) of x, head_dim each; row r belongs to token r / n_head. */
typedef struct {
    const float *x;
    float *back;     /* F32 result (may be x: in place), or NULL */
    uint16_t *cache; /* the layer's F16 K or V cache (n_head = the kv heads), or NULL */
    int rows, n_head;
    const float *w;  /* per-head RMSNorm weight [hd], or NULL */
    float eps;
    int rope;        /* rotate by the token's row of the cos/sin tables */
} lpc_head_set;

enum { LPC_HEAD_SETS = 3 /* q, k, v */ };

typedef struct {
    lpc_head_set set[LPC_HEAD_SETS]; /* rows of set i follow those of set i-1 in the grid */
    const float *cs, *sn;            /* [token][hd/2] */
    const int *pos, *slot;           /* [token]: where cache rows go */
    int hd, neox, n_kv, n_ctx;
} lpc_heads_args;

/* One warp per row over the concatenated sets. One kernel serves the per-head q/k norm
 * and rope in place, the KV-cache store, and (decode) all of them at once: q normalised
 * and roped in place, k normalised and roped straight into the cache, v into the cache,
 * where three launches cost ~2 us each of graph time per layer. */
__global__ void __launch_bounds__(128) lpc_heads_kernel(lpc_heads_args p) {
    __shared__ float buf[4][256];
    LPC_PDL_ENTRY();
    int r = blockIdx.x * 4 + threadIdx.x / 32;
    lpc_head_set s = p.set[0];
#pragma unroll
    for (int i = 1; i < LPC_HEAD_SETS; i++)
        if (r >= s.rows) r -= s.rows, s = p.set[i]; /* constant indices: the sets stay in registers */
    if (r >= s.rows) return;
    const int t = r / s.n_head, half = p.hd / 2;
    uint16_t *h = s.cache ? s.cache + lpc_kv_index(p.slot[t], r % s.n_head, p.pos[t], p.n_kv, p.n_ctx, p.hd) : NULL;
    const float *cs = s.rope ? p.cs + (size_t)t * half : NULL, *sn = s.rope ? p.sn + (size_t)t * half : NULL;
    lpc_head_row(s.x + (size_t)r * p.hd, p.hd, s.w, s.eps, cs, sn, p.neox, buf[threadIdx.x / 32],
                 s.back ? s.back + (size_t)r * p.hd : NULL, h);
}

inline void lpc_heads(lpc_stream st, const lpc_heads_args &p) {
    int rows = 0;
    for (int i = 0; i < LPC_HEAD_SETS; i++) rows += p.set[i].rows;
    if (rows) LPC_LAUNCH_PDL(lpc_heads_kernel, dim3((unsigned)((rows + 3) / 4)), dim3(128), st, p);
}

/* Per-head RMSNorm (w may be NULL: none) and/or rope (cs may be NULL: none) in place over
 * rows of head_dim; row = token * n_head + head. */
inline void lpc_norm_rope(lpc_stream st, float *x, int rows, int n_head, int hd, const float *w, float eps, const float *cs,
                          const float *sn, int neox) {
    lpc_heads_args p = {};
    lpc_head_set &s = p.set[0];
    s.x = x, s.back = x, s.rows = rows, s.n_head = n_head, s.w = w, s.eps = eps, s.rope = cs != NULL;
    p.cs = cs, p.sn = sn, p.hd = hd, p.neox = neox;
    lpc_heads(st, p);
}

/* k, v [n][n_kv * hd] F32 into the cache at (slot[t], pos[t]), nothing else (the
 * backend's exec_heads adds q's and k's folded ops to the same launch). */
inline void lpc_kv_store(lpc_stream st, int n, const float *k, const float *v, uint16_t *kc, uint16_t *vc, const int *pos,
                         const int *slot, int n_kv, int n_ctx, int hd) {
    lpc_heads_args p = {};
    const float *src[2] = {k, v};
    uint16_t *dst[2] = {kc, vc};
    for (int i = 0; i < 2; i++) {
        lpc_head_set &s = p.set[1 + i];
        s.x = src[i], s.cache = dst[i], s.rows = n * n_kv, s.n_head = n_kv;
    }
    p.pos = pos, p.slot = slot, p.hd = hd, p.n_kv = n_kv, p.n_ctx = n_ctx;
    lpc_heads(st, p);
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

/* SwiGLU of one element; gpt-oss clamps (limit > 0) and uses alpha 1.702, up + 1. */
__device__ __forceinline__ float lpc_swiglu_value(float g, float u, float limit) {
    if (limit > 0.0f) {
        g = fminf(g, limit);
        u = fminf(fmaxf(u, -limit), limit);
        return g / (1.0f + expf(-1.702f * g)) * (u + 1.0f);
    }
    return g / (1.0f + expf(-g)) * u;
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

/* ---- attention. KV cache F16, [layer][slot][kv head][pos][head_dim] ---- */

typedef struct {
    const float *q;              /* [n][n_head][hd] */
    const uint16_t *kc, *vc;     /* this layer's cache */
    const int *pos, *slot;       /* [n] */
    float *part;                 /* [n * n_head][nsplit][hd + 4]: m, l, 2 pad, acc (16-byte aligned) */
    int n_ctx, n_head, n_kv, G, nsplit, window;
    int min_chunk;               /* positions per split at least (0: always nsplit splits) */
    float scale;
    const float *sinks;          /* [n_head] or NULL */
    float *out;                  /* [n][n_head][hd] */
    int emit;                    /* also the int8 shadow o of out */
    lpc_q8 o;
    unsigned *counters;          /* [n * n_kv], zero between launches: the split kernel's last
                                    block per (token, kv head) merges; NULL: a combine launch */
} lpc_attn_args;

enum {
    LPC_ATTN_MAX_SPLIT = 64,
    LPC_ATTN_MIN_CHUNK = 128, /* positions per split at least, in decode */
    LPC_ATTN_PART_HEAD = 4,   /* floats before a partial's acc */
};

/* Splits that a token attending to len positions uses: nsplit is fixed per graph (sized
 * for the longest context), the live length decides how many carry work, at least
 * min_chunk positions each, so a short context is not spread over 64 splits of a few
 * positions (512 blocks, and a 64-way merge) when 4 do. Blocks of the other splits exit
 * at once. */
__device__ __forceinline__ int lpc_attn_live_splits(const lpc_attn_args &p, int len) {
    return p.min_chunk > 0 ? lpc_imax(1, lpc_imin(p.nsplit, (len + p.min_chunk - 1) / p.min_chunk)) : p.nsplit;
}

/* The first position a query at pos attends to (sliding window or 0). */
__device__ __forceinline__ int lpc_attn_first(const lpc_attn_args &p, int pos) {
    return p.window > 0 && pos - p.window + 1 > 0 ? pos - p.window + 1 : 0;
}

/* Output rows row0 .. row0+nr-1 (nr <= GM; row = token * n_head + head) from their first
 * S partials, by the whole block (hd % 32 == 0). Each row's split maxima and weights are
 * staged in shared memory once, then every element sums over the splits in split order
 * with sinks first in the denominator: the arithmetic of a per-element merge, so the
 * folded and the separate combine give the same bits. A thread takes 4 consecutive
 * elements (one 16-byte load per split: the 64-split merge of Qwen3's 4 heads x 128 was
 * 256 dependent-ish 4-byte loads per thread). Partials are read through L2 (__ldcg): in
 * the folded combine, blocks on other SMs wrote them during this launch. */
template <int GM>
__device__ __forceinline__ void lpc_attn_merge(const lpc_attn_args &p, int hd, int row0, int nr, int S) {
    __shared__ float ms[GM][LPC_ATTN_MAX_SPLIT], ls[GM][LPC_ATTN_MAX_SPLIT], ws[GM][LPC_ATTN_MAX_SPLIT], Mr[GM], Lr[GM];
    const int stride = hd + LPC_ATTN_PART_HEAD, lane = threadIdx.x % 32;
    const float *part = p.part + (size_t)row0 * p.nsplit * stride; /* [nr][nsplit][stride] */
    for (int i = threadIdx.x; i < nr * S; i += blockDim.x) {
        const float *ps = part + ((size_t)(i / S) * p.nsplit + i % S) * stride;
        ms[i / S][i % S] = __ldcg(ps);
        ls[i / S][i % S] = __ldcg(ps + 1);
    }
    __syncthreads();
    if ((int)threadIdx.x < nr) {
        const int r = threadIdx.x;
        float M = p.sinks ? p.sinks[(row0 + r) % p.n_head] : -INFINITY;
        for (int s = 0; s < S; s++) M = fmaxf(M, ms[r][s]);
        Mr[r] = M;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nr * S; i += blockDim.x) {
        const int r = i / S, s = i % S;
        ws[r][s] = ms[r][s] == -INFINITY ? 0.0f : expf(ms[r][s] - Mr[r]); /* empty splits are skipped below */
    }
    __syncthreads();
    if ((int)threadIdx.x < nr) {
        const int r = threadIdx.x;
        float L = p.sinks ? expf(p.sinks[(row0 + r) % p.n_head] - Mr[r]) : 0.0f;
        for (int s = 0; s < S; s++)
            if (ms[r][s] != -INFINITY) L += ws[r][s] * ls[r][s];
        Lr[r] = L;
    }
    __syncthreads();
    const int per_row = hd / 4, n4 = nr * per_row;
    for (int base = (int)threadIdx.x - lane; base < n4; base += blockDim.x) { /* warp-uniform: the shadow's shuffles */
        const int i = base + lane;
        const bool ok = i < n4;
        const int r = ok ? i / per_row : 0, d = 4 * (i % per_row);
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (ok) {
            const float *pr = part + (size_t)r * p.nsplit * stride + LPC_ATTN_PART_HEAD + d;
#pragma unroll 4
            for (int s = 0; s < S; s++) {
                if (ms[r][s] == -INFINITY) continue;
                const float4 v = __ldcg((const float4 *)(pr + (size_t)s * stride));
                const float w = ws[r][s];
                acc.x += w * v.x, acc.y += w * v.y, acc.z += w * v.z, acc.w += w * v.w;
            }
            acc.x /= Lr[r], acc.y /= Lr[r], acc.z /= Lr[r], acc.w /= Lr[r];
            *(float4 *)(p.out + ((size_t)row0 + r) * hd + d) = acc;
        }
        if (p.emit) lpc_q8_emit4(acc, ((size_t)row0 + r) * hd + d, ok, p.o);
    }
}

/* After a split block wrote its partials: the last of the S live blocks of (token t, kv
 * head kvh) to get here (lpc_last_block) merges the G heads' outputs, which saves the
 * combine launch (~2 us of graph time per layer). */
template <int GM>
__device__ __forceinline__ void lpc_attn_fold(const lpc_attn_args &p, int hd, int t, int kvh, int S) {
    if (lpc_last_block(p.counters + (size_t)t * p.n_kv + kvh, (unsigned)S))
        lpc_attn_merge<GM>(p, hd, t * p.n_head + kvh * p.G, p.G, S);
}

/* One block per (token, kv head, split): the G query heads sharing the kv head, over
 * split `blockIdx.y` of the positions [first, pos]. Each warp takes tiles of 32
 * positions: lane l scores position tile+l for all G heads (its whole K row in
 * flight at once), then the warp adds the tile's values with an online softmax,
 * a row of V per HD/8 lanes (16-byte loads, 32*8/HD rows per step, four steps'
 * loads issued together: fetched one dependent load at a time, V rows made decode
 * attention latency-bound. Loading all of a tile's V rows up front was slower at
 * long contexts: the registers cost occupancy).
 * Writes unnormalised partials; with p.counters the last block of the (token, kv head)
 * also merges them (lpc_attn_fold), else lpc_attn_combine_kernel does. nsplit <= 64. */
template <int HD, int GM>
__global__ void __launch_bounds__(128) lpc_attn_split_kernel(lpc_attn_args p) {
    enum { LPR = HD / 8, RPI = 32 / LPR, NIT = 32 / RPI, UNR = NIT < 4 ? NIT : 4 }; /* lanes per V row, rows per step */
    __shared__ float qs[GM][HD];
    __shared__ float red_m[4][GM], red_l[4][GM];
    __shared__ float acc_s[GM][HD];
    LPC_PDL_ENTRY();
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int vr = lane / LPR, vd = 8 * (lane % LPR); /* this lane's V row in a step, first dim */
    const int t = blockIdx.x / p.n_kv, kvh = blockIdx.x % p.n_kv, sp = blockIdx.y, G = p.G;
    const int pos = p.pos[t], slot = p.slot[t];
    const int first = lpc_attn_first(p, pos);
    const int len = pos - first + 1, live = lpc_attn_live_splits(p, len);
    if (sp >= live) return; /* block-uniform; never counted in (the merge waits for `live`) */
    const int chunk = ((len + live - 1) / live + 31) & ~31;
    const int beg = first + sp * chunk, end = lpc_imin(beg + chunk, pos + 1);
    for (int i = threadIdx.x; i < G * HD; i += blockDim.x)
        qs[i / HD][i % HD] = p.q[((size_t)t * p.n_head + kvh * G + i / HD) * HD + i % HD] * p.scale;
    __syncthreads();
    const uint16_t *kbase = p.kc + lpc_kv_index(slot, kvh, 0, p.n_kv, p.n_ctx, HD);
    const uint16_t *vbase = p.vc + lpc_kv_index(slot, kvh, 0, p.n_kv, p.n_ctx, HD);
    float m[GM], l[GM], acc[GM][8];
#pragma unroll
    for (int g = 0; g < GM; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int d = 0; d < 8; d++) acc[g][d] = 0.0f;
    }
    for (int tile = beg + 32 * warp; tile < end; tile += 128) {
        const int pi = tile + lane, nv = end - tile;
        const bool valid = pi < end;
        float s[GM];
#pragma unroll
        for (int g = 0; g < GM; g++) s[g] = 0.0f;
        if (valid) {
            const uint8_t *krow = (const uint8_t *)(kbase + (size_t)pi * HD);
            enum { KB = HD / 8 < 8 ? HD / 8 : 8 }; /* 16-byte loads in flight together */
#pragma unroll
            for (int c0 = 0; c0 < HD / 8; c0 += KB) {
                uint4 kv[KB];
#pragma unroll
                for (int c = 0; c < KB; c++) kv[c] = lpc_load16(krow + 16 * (c0 + c));
#pragma unroll
                for (int c = 0; c < KB; c++) {
                    float kf[8];
                    lpc_widen16<1>(kv[c], kf);
#pragma unroll
                    for (int g = 0; g < GM; g++) {
                        if (g >= G) break;
#pragma unroll
                        for (int k = 0; k < 8; k++) s[g] += qs[g][8 * (c0 + c) + k] * kf[k];
                    }
                }
            }
        }
#pragma unroll
        for (int g = 0; g < GM; g++) {
            if (g >= G) break;
            const float sv = valid ? s[g] : -INFINITY;
            const float mn = fmaxf(m[g], lpc_warp_max(sv));
            const float alpha = __expf(m[g] - mn);
            const float pg = valid ? __expf(sv - mn) : 0.0f;
            l[g] = l[g] * alpha + pg;
#pragma unroll
            for (int d = 0; d < 8; d++) acc[g][d] *= alpha;
            m[g] = mn;
            s[g] = pg; /* 0 for positions past the end */
        }
#pragma unroll
        for (int it0 = 0; it0 < NIT; it0 += UNR) {
            uint4 vv[UNR];
#pragma unroll
            for (int u = 0; u < UNR; u++) {
                const int j = (it0 + u) * RPI + vr;
                vv[u] = j < nv ? lpc_load16((const uint8_t *)(vbase + (size_t)(tile + j) * HD + vd)) : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int u = 0; u < UNR; u++) {
                float vf[8];
                lpc_widen16<1>(vv[u], vf);
#pragma unroll
                for (int g = 0; g < GM; g++) {
                    if (g >= G) break;
                    const float pj = __shfl_sync(LPC_FULL_MASK, s[g], (it0 + u) * RPI + vr);
#pragma unroll
                    for (int d = 0; d < 8; d++) acc[g][d] += pj * vf[d];
                }
            }
        }
    }
    /* the RPI rows of a step went to different lanes: sum lanes with the same dims */
#pragma unroll
    for (int g = 0; g < GM; g++)
#pragma unroll
        for (int d = 0; d < 8; d++)
#pragma unroll
            for (int mk = LPR; mk < 32; mk <<= 1) acc[g][d] += __shfl_xor_sync(LPC_FULL_MASK, acc[g][d], mk);
    /* merge the four warps: shared max, rescaled sums */
#pragma unroll
    for (int g = 0; g < GM; g++) {
        const float lw = lpc_warp_sum(l[g]);
        if (lane == 0 && g < G) red_m[warp][g] = m[g], red_l[warp][g] = lw;
    }
    __syncthreads();
    for (int w = 0; w < 4; w++) {
        if (warp == w && vr == 0) {
#pragma unroll
            for (int g = 0; g < GM; g++) {
                if (g >= G) break;
                const float M = fmaxf(fmaxf(red_m[0][g], red_m[1][g]), fmaxf(red_m[2][g], red_m[3][g]));
                const float f = m[g] == -INFINITY ? 0.0f : __expf(m[g] - M);
#pragma unroll
                for (int d = 0; d < 8; d++) {
                    const float v = acc[g][d] * f;
                    acc_s[g][vd + d] = w == 0 ? v : acc_s[g][vd + d] + v;
                }
            }
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < G * (HD + LPC_ATTN_PART_HEAD); i += blockDim.x) {
        const int g = i / (HD + LPC_ATTN_PART_HEAD), k = i % (HD + LPC_ATTN_PART_HEAD);
        float *dst = p.part + (((size_t)t * p.n_head + kvh * G + g) * p.nsplit + sp) * (HD + LPC_ATTN_PART_HEAD);
        const float M = fmaxf(fmaxf(red_m[0][g], red_m[1][g]), fmaxf(red_m[2][g], red_m[3][g]));
        if (k == 0) {
            dst[0] = M;
        } else if (k == 1) {
            float L = 0.0f;
            for (int w = 0; w < 4; w++)
                if (red_m[w][g] != -INFINITY) L += red_l[w][g] * __expf(red_m[w][g] - M);
            dst[1] = L;
        } else if (k >= LPC_ATTN_PART_HEAD) {
            dst[k] = M == -INFINITY ? 0.0f : acc_s[g][k - LPC_ATTN_PART_HEAD];
        }
    }
    if (p.counters) lpc_attn_fold<GM>(p, HD, t, kvh, live); /* every live block gets here */
}

/* The unfolded combine (LP_CUDA_FUSE=0): one block of hd threads per output row. */
__global__ void lpc_attn_combine_kernel(lpc_attn_args p, int hd) {
    const int pos = p.pos[blockIdx.x / p.n_head];
    lpc_attn_merge<1>(p, hd, blockIdx.x, 1, lpc_attn_live_splits(p, pos - lpc_attn_first(p, pos) + 1));
}

template <int HD>
inline void lpc_attn_split_hd(lpc_stream st, const lpc_attn_args &p, int n) {
    const dim3 grid((unsigned)(n * p.n_kv), (unsigned)p.nsplit);
    auto g4 = lpc_attn_split_kernel<HD, 4>, g8 = lpc_attn_split_kernel<HD, 8>, g16 = lpc_attn_split_kernel<HD, 16>;
    if (p.G <= 4)
        LPC_LAUNCH_PDL(g4, grid, dim3(128), st, p);
    else if (p.G <= 8)
        LPC_LAUNCH_PDL(g8, grid, dim3(128), st, p);
    else
        LPC_LAUNCH_PDL(g16, grid, dim3(128), st, p);
}

/* head_dim in {32, 64, 128, 256} and G <= 16 (checked by the caller). */
inline void lpc_attention(lpc_stream st, const lpc_attn_args &p, int n, int hd) {
    switch (hd) {
    case 32: lpc_attn_split_hd<32>(st, p, n); break;
    case 64: lpc_attn_split_hd<64>(st, p, n); break;
    case 128: lpc_attn_split_hd<128>(st, p, n); break;
    default: lpc_attn_split_hd<256>(st, p, n); break;
    }
    if (!p.counters) LPC_LAUNCH(lpc_attn_combine_kernel, dim3((unsigned)(n * p.n_head)), dim3((unsigned)hd), st, p, hd);
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
