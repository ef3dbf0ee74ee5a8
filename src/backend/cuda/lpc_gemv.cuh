/* lpc_gemv.cuh — the decode matmuls: the int8 activation shadow and the GEMV
 * kernels that multiply device weights with it, plus their launchers.
 *
 * Decode is memory-bound: the kernels stream each weight byte once with 16-byte
 * loads (a warp per group of output rows, lanes over consecutive slices of a row)
 * and multiply quantized weights with int8 activations (__dp4a), so the ALU work
 * per weight byte stays far below what the bandwidth allows. Activations are
 * quantized once per producer (RMSNorm, SwiGLU, attention write an int8 "shadow"
 * of their output next to the F32 values).
 *
 * The quantized kernels: lpc_gemv1_q for one activation column (batch-1 decode, the
 * case the bandwidth target is about); lpc_gemv1_grp, the same with a block per 32-row
 * group of the result and what follows per group in its epilogue (the SwiGLU of gate
 * and up, the shadow of the RMSNorm after o and down); lpc_gemv_q for up to 8 columns
 * (batched decode). */
#ifndef LPC_GEMV_CUH
#define LPC_GEMV_CUH

#include "lpc_quant.cuh"
#include "lpc_stamps.cuh"

/* ---- int8 activation shadow: q[i], d[i/32] (scale), s[i/16] (d * sum of 16 codes) ---- */

typedef struct {
    int8_t *q;
    float *d, *s;
} lpc_q8;

/* (d, 1/d) of a 32-group with largest magnitude amax: llama.cpp's x86 Q8_0 activation
 * arithmetic (the CPU backend's too): codes round(v * 127/amax) ties-to-even, scale
 * amax/127 stored as F16. Equal codes and scales make Q8_0 matmuls agree with the CPU
 * up to summation order. */
__device__ __forceinline__ float2 lpc_q8_scale(float amax) {
    return float2{lpc_h2f(lpc_f2h(amax / 127.0f)), amax > 0.0f ? 127.0f / amax : 0.0f};
}

/* Called by all 32 lanes of a warp for 32 consecutive elements i0 + lane (i0 % 32 == 0). */
__device__ __forceinline__ void lpc_q8_emit(float v, size_t i0, int lane, lpc_q8 o) {
    const float2 sc = lpc_q8_scale(lpc_warp_max(fabsf(v)));
    const float d = sc.x, id = sc.y;
    const int q = (int)rintf(v * id);
    int sum = q;
#pragma unroll
    for (int m = 8; m > 0; m >>= 1) sum += __shfl_xor_sync(LPC_FULL_MASK, sum, m); /* within each 16-lane half */
    o.q[i0 + lane] = (int8_t)q;
    if (lane == 0) o.d[i0 / 32] = d;
    if ((lane & 15) == 0) o.s[(i0 + lane) / 16] = d * (float)sum;
}

/* The int8 shadow (lpc_q8_emit's codes, scales and sums, bit for bit) of 4 consecutive
 * elements per lane, elements e0 .. e0+3 (e0 % 4 == 0): 8 lanes per 32-element group.
 * Every lane of the warp calls it; lanes with !store (whole 8-lane groups) write nothing. */
typedef struct {
    uint32_t codes; /* the lane's 4 codes, little-endian */
    float d, s;     /* the group's scale; d * the sum of the 16-element run's codes */
} lpc_q8x4;

__device__ __forceinline__ lpc_q8x4 lpc_q8_code4(float4 v) {
    float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
    for (int m = 1; m < 8; m <<= 1) amax = fmaxf(amax, __shfl_xor_sync(LPC_FULL_MASK, amax, m));
    const float2 sc = lpc_q8_scale(amax);
    const float d = sc.x, id = sc.y;
    const int q0 = (int)rintf(v.x * id), q1 = (int)rintf(v.y * id), q2 = (int)rintf(v.z * id), q3 = (int)rintf(v.w * id);
    int sum = q0 + q1 + q2 + q3;
#pragma unroll
    for (int m = 1; m < 4; m <<= 1) sum += __shfl_xor_sync(LPC_FULL_MASK, sum, m); /* the 16-element run */
    lpc_q8x4 r;
    r.codes = (uint32_t)(q0 & 0xff) | (uint32_t)(q1 & 0xff) << 8 | (uint32_t)(q2 & 0xff) << 16 | (uint32_t)q3 << 24;
    r.d = d, r.s = d * (float)sum;
    return r;
}

__device__ __forceinline__ void lpc_q8_emit4(float4 v, size_t e0, bool store, lpc_q8 o) {
    const lpc_q8x4 c = lpc_q8_code4(v);
    if (!store) return;
    *(uint32_t *)(o.q + e0) = c.codes;
    if (e0 % 32 == 0) o.d[e0 / 32] = c.d;
    if (e0 % 16 == 0) o.s[e0 / 16] = c.s;
}

/* count must be a multiple of 32; one warp per 32 elements. */
__global__ void __launch_bounds__(256) lpc_quantize_kernel(const float *x, size_t count, lpc_q8 o) {
    LPC_PDL_ENTRY();
    const size_t i0 = ((size_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * 32;
    if (i0 >= count) return;
    lpc_q8_emit(x[i0 + threadIdx.x % 32], i0, threadIdx.x % 32, o);
}

inline void lpc_quantize(lpc_stream st, const float *x, size_t count, lpc_q8 o) {
    const size_t warps = count / 32;
    LPC_LAUNCH_PDL(lpc_quantize_kernel, dim3((unsigned)((warps + 7) / 8)), dim3(256), st, x, count, o);
}

/* ---- GEMV: y[c][row] (+)= W[row] . x[c] for up to LPC_MAX_PROB weights sharing x ---- */

enum { LPC_MAX_PROB = 4, LPC_GEMV_WARPS = 4, LPC_GEMV_MAX_NC = 8, LPC_GEMV_ROWS = 2 /* per warp, quantized */ };

/* The RMSNorm before a batch-1 GEMV, whose 1/rms the GEMV applies to its dot products,
 * so the norm needs no launch and no grid-wide wait of its own (~8 us of a ~100 us
 * decode layer when it had them). Its int8 shadow of w * x (1/rms left out) and sums of
 * squares come one of two ways:
 * - ss: written by the GEMV before, which produced x (o, down: lpc_gemv_ynorm); the
 *   GEMV stages them like any shadow. The faster one (H100, q4_k_m, Qwen3-8B shapes,
 *   batch-1 decode at 512: 359-365 tok/s vs 350-356 staged from x);
 * - x: made by every block while it stages (lpc_gemv1_stage_norm) from the norm's input
 *   and weight, where no such GEMV precedes the norm (the first layer's): each block
 *   reads 16 KB of F32 x, the same L2 lines, and codes it (1.4-1.8 us more staging than
 *   the 6 KB shadow, per-block timestamps). */
typedef struct {
    const float *x;  /* [K] the norm's input; NULL: off (xq is the input's shadow) */
    const float *w;  /* [K] the norm's weight */
    const float *ss; /* or, x NULL: [K/32] the sums of squares of the norm's input by group,
                        xq the shadow of w * x (both written by the producer: lpc_gemv_ynorm) */
    float eps;
} lpc_gemv_xnorm;

/* The RMSNorm after a batch-1 GEMV whose blocks own whole 32-row groups of y (o and down
 * accumulating into the residual: lpc_grp_norm), made in its epilogue for readers with
 * xn.ss: per group the shadow of w * y and the sum of squares of y. 1/rms needs every
 * group, so the readers apply it: each block of theirs stages the usual 6 KB of shadow
 * and 0.5 KB of sums, where staging the norm from y (lpc_gemv_xnorm.x) reads 32 KB and
 * codes it. */
typedef struct {
    const float *w; /* [M] the norm's weight; NULL: off */
    lpc_q8 o;       /* the shadow of w * y */
    float *ss;      /* [M/32] */
} lpc_gemv_ynorm;

/* A gate/up GEMV pair that also does the SwiGLU after it (lpc_gemv1_grp, lpc_grp_glu):
 * problems 0 and 1 are gate and up with equal M; their results never reach memory, only
 * silu(gate) * up. */
typedef struct {
    int on;
    float limit; /* lpc_swiglu_value's */
    float *out;  /* [M] F32 result, or NULL when every reader takes the shadow */
    lpc_q8 o;    /* its int8 shadow */
} lpc_glu;

/* SwiGLU of one element; gpt-oss clamps (limit > 0) and uses alpha 1.702, up + 1. */
__device__ __forceinline__ float lpc_swiglu_value(float g, float u, float limit) {
    if (limit > 0.0f) {
        g = fminf(g, limit);
        u = fminf(fmaxf(u, -limit), limit);
        return g / (1.0f + expf(-1.702f * g)) * (u + 1.0f);
    }
    return g / (1.0f + expf(-g)) * u;
}

typedef struct {
    int nprob;
    const uint8_t *a[LPC_MAX_PROB]; /* plane A (quantized) or the rows (float types) */
    const uint8_t *b[LPC_MAX_PROB]; /* plane B (quantized) */
    float *y[LPC_MAX_PROB];         /* [ncols][M] */
    int M[LPC_MAX_PROB];
    int row0[LPC_MAX_PROB + 1];     /* prefix sums of M: rows of the concatenated problems */
    int accumulate[LPC_MAX_PROB];   /* y += result (fused residual add) */
    int K, bpr;                     /* row length; blocks per row (quantized) */
    size_t row_bytes;               /* bytes per row (float types) */
    int ncols;                      /* active activation columns (<= NC of the kernel) */
    const float *x;                 /* [ncols][K] F32 (float types) */
    lpc_q8 xq;                      /* [ncols][K] int8 shadow (quantized types) */
    /* expert mode (MoE): blockIdx.y = routed pair; weight += sel[pair] * stride,
     * x column = pair / x_div, y row = pair; ncols = 1 */
    const int *sel;
    int x_div;
    size_t expert_a, expert_b; /* bytes between experts in plane A / B */
    /* batch-1 kernel only: */
    lpc_gemv_xnorm xn; /* the input is RMSNorm(xn.x) * xn.w, made while staging or from xn.ss */
    lpc_gemv_ynorm yn; /* lpc_grp_norm: the RMSNorm of y after it (one problem) */
    lpc_glu glu;       /* batch-1 kernel over (gate, up): SwiGLU fused (lpc_gemv_glu) */
    int per_sm, n_sm;  /* batch-1 kernel: when per_sm > 0, at most n_sm x min(per_sm, blocks of the
                          kernel resident per SM) blocks along x, each walking row groups
                          gridDim.x apart: one wave (n_sm: the SM count); else one block per
                          row group */
} lpc_gemv_args;

/* Which problem a warp's global row belongs to, without indexing the parameter arrays
 * at run time (that would copy them to local memory). */
struct lpc_row_pick {
    const uint8_t *a, *b;
    float *y;
    int row, M, acc;
};

__device__ __forceinline__ bool lpc_pick_row(const lpc_gemv_args &p, int grow, lpc_row_pick &r) {
    if (grow >= p.row0[p.nprob]) return false;
    r.a = p.a[0], r.b = p.b[0], r.y = p.y[0], r.M = p.M[0], r.acc = p.accumulate[0], r.row = grow;
#pragma unroll
    for (int i = 1; i < LPC_MAX_PROB; i++)
        if (i < p.nprob && grow >= p.row0[i])
            r.a = p.a[i], r.b = p.b[i], r.y = p.y[i], r.M = p.M[i], r.acc = p.accumulate[i], r.row = grow - p.row0[i];
    if (p.sel) {
        const int pair = blockIdx.y, e = p.sel[pair];
        r.a += (size_t)e * p.expert_a;
        r.b += (size_t)e * p.expert_b;
        r.y += (size_t)pair * r.M;
    }
    return true;
}

template <int NC>
__device__ __forceinline__ void lpc_gemv_store(const lpc_gemv_args &p, const lpc_row_pick &r, float (&acc)[NC], int lane) {
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = lpc_warp_sum(acc[c]);
    if (lane != 0) return;
#pragma unroll
    for (int c = 0; c < NC; c++) {
        if (c >= p.ncols) break;
        float *dst = r.y + (size_t)c * r.M + r.row;
        *dst = r.acc ? *dst + acc[c] : acc[c];
    }
}

/* Run q of a slice times 16 int8 activations xw (scale xd, xs = xd * their sum). */
template <int RUNS>
__device__ __forceinline__ float lpc_run_dot(const lpc_slice<RUNS> &sl, int q, uint4 xw, float xd, float xs) {
    int sumi = __dp4a((int)sl.v[q][0], (int)xw.x, 0);
    sumi = __dp4a((int)sl.v[q][1], (int)xw.y, sumi);
    sumi = __dp4a((int)sl.v[q][2], (int)xw.z, sumi);
    sumi = __dp4a((int)sl.v[q][3], (int)xw.w, sumi);
    return sl.scale[q] * xd * (float)sumi - sl.minv[q] * xs;
}

/* A warp's R rows from row group start grow (past the end: false). Rows past the end
 * of the problems repeat row 0's loads and are not stored. */
template <class T, int R>
__device__ __forceinline__ bool lpc_gemv_pick(const lpc_gemv_args &p, int grow, lpc_row_pick (&r)[R], int &n_rows,
                                               const uint8_t *(&A)[R], const uint8_t *(&B)[R]) {
    if (!lpc_pick_row(p, grow, r[0])) return false;
    n_rows = 1;
#pragma unroll
    for (int i = 1; i < R; i++) {
        if (lpc_pick_row(p, grow + i, r[i])) n_rows++;
        else r[i] = r[0];
    }
#pragma unroll
    for (int i = 0; i < R; i++) {
        A[i] = r[i].a + (size_t)r[i].row * p.bpr * T::A_BYTES;
        B[i] = r[i].b + (size_t)r[i].row * p.bpr * T::B_BYTES;
    }
    return true;
}

/* Quantized weights: each warp takes LPC_GEMV_ROWS consecutive rows, so every
 * activation load (int8 codes, scales) serves that many weight rows: with one row
 * per warp the GEMVs issued about as many activation loads as weight loads and sat
 * at 25-45% of DRAM bandwidth, stalled on the L1 (ncu). */
template <class T, int NC>
__global__ void __launch_bounds__(128) lpc_gemv_q(lpc_gemv_args p) {
    LPC_PDL_ENTRY();
    enum { R = LPC_GEMV_ROWS };
    const int lane = threadIdx.x % 32;
    const int grow = (blockIdx.x * LPC_GEMV_WARPS + threadIdx.x / 32) * R;
    lpc_row_pick r[R];
    int n_rows;
    const uint8_t *A[R], *B[R];
    if (!lpc_gemv_pick<T, R>(p, grow, r, n_rows, A, B)) return;
    const size_t xoff = p.sel ? (size_t)(blockIdx.y / p.x_div) * p.K : 0;
    float acc[R][NC];
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int c = 0; c < NC; c++) acc[i][c] = 0.0f;
    const int S = p.bpr * T::SLICES;
#pragma unroll 2
    for (int s = lane; s < S; s += 32) {
        const int blk = s / T::SLICES, si = s % T::SLICES;
        lpc_slice<T::RUNS> sl[R];
#pragma unroll
        for (int i = 0; i < R; i++) T::decode(A[i] + (size_t)blk * T::A_BYTES, B[i] + (size_t)blk * T::B_BYTES, si, sl[i]);
#pragma unroll
        for (int q = 0; q < T::RUNS; q++) {
            const size_t e0 = xoff + (size_t)blk * T::BLOCK + sl[0].off[q]; /* same offsets in every row */
#pragma unroll
            for (int c = 0; c < NC; c++) {
                if (c >= p.ncols) break;
                const size_t e = e0 + (size_t)c * p.K;
                const uint4 xw = lpc_load16((const uint8_t *)(p.xq.q + e));
                const float xd = __ldg(p.xq.d + e / 32), xs = __ldg(p.xq.s + e / 16);
#pragma unroll
                for (int i = 0; i < R; i++) acc[i][c] += lpc_run_dot(sl[i], q, xw, xd, xs);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < R; i++)
        if (i < n_rows) lpc_gemv_store<NC>(p, r[i], acc[i], lane); /* warp-uniform */
}

/* Float weights: WT 0 = F32, 1 = F16, 2 = BF16; 16 bytes of a row per lane per step. */
template <int WT>
__device__ __forceinline__ void lpc_widen16(uint4 w, float (&f)[8]) {
    const uint32_t u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        if (WT == 0) {
            f[k] = __uint_as_float(u[k]);
        } else if (WT == 1) {
            f[2 * k] = lpc_h2f((uint16_t)(u[k] & 0xffffu));
            f[2 * k + 1] = lpc_h2f((uint16_t)(u[k] >> 16));
        } else {
            f[2 * k] = __uint_as_float(u[k] << 16);
            f[2 * k + 1] = __uint_as_float(u[k] & 0xffff0000u);
        }
    }
}

template <int WT, int NC>
__global__ void __launch_bounds__(128) lpc_gemv_f(lpc_gemv_args p) {
    LPC_PDL_ENTRY();
    enum { EPC = WT == 0 ? 4 : 8 }; /* elements per 16-byte chunk */
    const int lane = threadIdx.x % 32;
    lpc_row_pick r;
    if (!lpc_pick_row(p, blockIdx.x * LPC_GEMV_WARPS + threadIdx.x / 32, r)) return;
    const uint8_t *row = r.a + (size_t)r.row * p.row_bytes;
    const float *x = p.x + (p.sel ? (size_t)(blockIdx.y / p.x_div) * p.K : 0);
    float acc[NC];
#pragma unroll
    for (int c = 0; c < NC; c++) acc[c] = 0.0f;
    const int chunks = p.K / EPC;
#pragma unroll 2
    for (int ch = lane; ch < chunks; ch += 32) {
        float w[8];
        lpc_widen16<WT>(lpc_load16(row + (size_t)ch * 16), w);
#pragma unroll
        for (int c = 0; c < NC; c++) {
            if (c >= p.ncols) break;
            const float *xc = x + (size_t)c * p.K + (size_t)ch * EPC;
#pragma unroll
            for (int k = 0; k < EPC; k += 4) {
                const uint4 xv = lpc_load16((const uint8_t *)(xc + k));
                acc[c] += w[k] * __uint_as_float(xv.x) + w[k + 1] * __uint_as_float(xv.y) +
                          w[k + 2] * __uint_as_float(xv.z) + w[k + 3] * __uint_as_float(xv.w);
            }
        }
    }
    lpc_gemv_store<NC>(p, r, acc, lane);
}

/* ---- batch-1 GEMV: activations in shared memory, weight loads issued first ----
 *
 * Each warp owns R rows; each lane loads U slices of every row before using any
 * (R*U 16-byte weight loads in flight per lane), and the first batch is issued
 * before the block stages the activation column into shared memory, so the
 * staging's L2 round trip hides under the DRAM latency of the weights. The
 * activation of a 16-element run is then one 16-byte shared load of codes plus one
 * 8-byte load of (d, d*sum): the inner loop issues global loads for weights only
 * (the multi-column kernel issues as many activation loads as weight loads). */

enum { LPC_X1_MAX_K = 16384 };

/* Columns and row length the batch-1 kernel takes (every quantized type has it). */
inline bool lpc_gemv1_fits(int K, int ncols) { return ncols == 1 && K % 32 == 0 && K <= LPC_X1_MAX_K; }

template <class T, int R, int U>
__device__ __forceinline__ void lpc_gemv1_load(const uint8_t *const (&A)[R], const uint8_t *const (&B)[R], int s0, int S,
                                               typename T::raw (&w)[U][R]) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int s = s0 + 32 * u;
        if (s >= S) break;
        const int blk = s / T::SLICES;
#pragma unroll
        for (int i = 0; i < R; i++) T::load(A[i] + (size_t)blk * T::A_BYTES, B[i] + (size_t)blk * T::B_BYTES, s % T::SLICES, w[u][i]);
    }
}

/* 1/rms of the RMSNorm staged with the activation (lpc_gemv1_stage_norm) from its
 * per-group sums of squares, summed in a fixed order so every warp gets the same bits.
 * Summed at the end, not before the block's barrier (a reduction there is a barrier's
 * round trip more on every block's critical path). */
__device__ __forceinline__ float lpc_x_rms(const lpc_gemv_args &p, const float *xss, int lane) {
    float ss = 0.0f;
    for (int g = lane; g < p.K / 32; g += 32) ss += xss[g];
    ss = lpc_warp_sum(ss);
    return 1.0f / sqrtf(ss / (float)p.K + p.xn.eps);
}

/* The input is an RMSNorm's output whose 1/rms the kernel applies (lpc_gemv_xnorm). */
__device__ __forceinline__ bool lpc_xn_on(const lpc_gemv_args &p) { return p.xn.x || p.xn.ss; }

/* The dot products of a warp's R rows with x (per lane, before the warp sum), first
 * slices already in w; w is free again when it returns. */
template <class T, int R, int U>
__device__ __forceinline__ void lpc_gemv1_dots(const uint8_t *const (&A)[R], const uint8_t *const (&B)[R], int S,
                                               typename T::raw (&w)[U][R], const uint4 *xc, const float2 *xds,
                                               float (&acc)[R][1]) {
    const int lane = threadIdx.x % 32;
#pragma unroll
    for (int i = 0; i < R; i++) acc[i][0] = 0.0f;
    for (int s0 = 0; s0 < S; s0 += 32 * U) {
        if (s0) lpc_gemv1_load<T, R, U>(A, B, s0 + lane, S, w);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int s = s0 + 32 * u + lane;
            if (s >= S) break;
            const int blk = s / T::SLICES, si = s % T::SLICES;
            lpc_slice<T::RUNS> sl[R];
#pragma unroll
            for (int i = 0; i < R; i++) T::unpack(w[u][i], si, sl[i]);
#pragma unroll
            for (int q = 0; q < T::RUNS; q++) {
                const int e16 = (blk * T::BLOCK + sl[0].off[q]) / 16; /* same offsets in every row */
                const uint4 xw = xc[e16];
                const float2 ds = xds[e16];
#pragma unroll
                for (int i = 0; i < R; i++) acc[i][0] += lpc_run_dot(sl[i], q, xw, ds.x, ds.y);
            }
        }
    }
}

/* Sum, scale (by a staged RMSNorm's 1/rms) and store a warp's R rows. */
template <int R>
__device__ __forceinline__ void lpc_gemv1_store(const lpc_gemv_args &p, const lpc_row_pick (&r)[R], int n_rows,
                                                float (&acc)[R][1], const float *xss) {
    const int lane = threadIdx.x % 32;
    const float x_scale = lpc_xn_on(p) ? lpc_x_rms(p, xss, lane) : 1.0f;
#pragma unroll
    for (int i = 0; i < R; i++) {
        acc[i][0] *= x_scale;
        if (i < n_rows) lpc_gemv_store<1>(p, r[i], acc[i], lane); /* warp-uniform */
    }
}

/* The shadow of RMSNorm's w * x (p.xn) made in shared memory, 1/rms left out: per
 * 32-element group lpc_q8_emit4's codes and (d, d * sum) of w * x, bit for bit, and
 * the group's sum of squares of x. A warp takes 128 elements (4 groups of 8 lanes) a
 * pass; the loads of P passes go out together, one L2 round trip for the lot. */
template <int W>
__device__ __forceinline__ void lpc_gemv1_stage_norm(const lpc_gemv_args &p, uint4 *xc, float2 *xds, float *xss) {
    enum { P = 2, STEP = W * 128 }; /* 4: spills in Q4_K's and Q8_0's shapes */
    const int lane = threadIdx.x % 32;
    for (int base = threadIdx.x / 32 * 128 + 4 * lane; base < p.K + 4 * lane; base += P * STEP) { /* warp-uniform */
        float4 x[P], w[P];
#pragma unroll
        for (int i = 0; i < P; i++) {
            const int e0 = base + i * STEP;
            const bool ok = e0 < p.K; /* K % 32 == 0: whole 8-lane groups */
            x[i] = ok ? __ldcg((const float4 *)(p.xn.x + e0)) : float4{0, 0, 0, 0}; /* the previous kernel's */
            w[i] = ok ? __ldg((const float4 *)(p.xn.w + e0)) : float4{0, 0, 0, 0};
        }
#pragma unroll
        for (int i = 0; i < P; i++) {
            const int e0 = base + i * STEP;
            float ss = x[i].x * x[i].x + x[i].y * x[i].y + x[i].z * x[i].z + x[i].w * x[i].w;
#pragma unroll
            for (int m = 1; m < 8; m <<= 1) ss += __shfl_xor_sync(LPC_FULL_MASK, ss, m);
            const lpc_q8x4 c = lpc_q8_code4(float4{x[i].x * w[i].x, x[i].y * w[i].y, x[i].z * w[i].z, x[i].w * w[i].w});
            if (e0 >= p.K) continue;
            ((uint32_t *)xc)[e0 / 4] = c.codes;
            if (e0 % 16 == 0) xds[e0 / 16] = float2{c.d, c.s};
            if (e0 % 32 == 0) xss[e0 / 32] = ss;
        }
    }
    __syncthreads();
}

/* The block's copy of the activation column (from element xoff) in shared memory:
 * codes and per-run (d, d * sum), and a norm's sums of squares (p.xn.ss); with p.xn.x
 * made from the norm's input instead. */
template <int W>
__device__ __forceinline__ void lpc_gemv1_stage(const lpc_gemv_args &p, size_t xoff, uint4 *xc, float2 *xds, float *xss) {
    if (p.xn.x) return lpc_gemv1_stage_norm<W>(p, xc, xds, xss);
    enum { P = 2, STEP = W * 32 }; /* entries a thread loads before it stores: one round trip
                                      for 2 x 16 x STEP elements (4096 at 8 warps) */
    for (int i0 = threadIdx.x; i0 < p.K / 16; i0 += P * STEP) {
        uint4 c[P];
        float2 ds[P];
        float ss[P];
#pragma unroll
        for (int j = 0; j < P; j++) {
            const int i = i0 + j * STEP;
            if (i >= p.K / 16) break;
            c[j] = lpc_load16((const uint8_t *)(p.xq.q + xoff) + 16 * (size_t)i);
            ds[j] = float2{__ldg(p.xq.d + xoff / 32 + i / 2), __ldg(p.xq.s + xoff / 16 + i)};
            ss[j] = p.xn.ss && i % 2 == 0 ? __ldg(p.xn.ss + i / 2) : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < P; j++) {
            const int i = i0 + j * STEP;
            if (i >= p.K / 16) break;
            xc[i] = c[j], xds[i] = ds[j];
            if (p.xn.ss && i % 2 == 0) xss[i / 2] = ss[j];
        }
    }
    __syncthreads();
}

/* The batch-1 kernels' static shared memory: the staged activation column. */
#define LPC_GEMV1_SMEM                                                                                              \
    __shared__ uint4 xc[LPC_X1_MAX_K / 16];   /* int8 codes, 16 per entry */                                        \
    __shared__ float2 xds[LPC_X1_MAX_K / 16]; /* per 16-element run: (d of its 32-group, d * sum of its codes) */   \
    __shared__ float xss[LPC_X1_MAX_K / 32]   /* a staged RMSNorm's sums of squares (xn) */

/* Blocks of W warps per SM the batch-1 kernels are compiled for (the register cap): 3
 * for one-row 8-warp shapes, 2 for two rows; wider blocks (the group kernels' 16 warps
 * over a 32-row group) run one per SM. */
constexpr int lpc_gemv1_min_blocks(int R, int W) { return W > 8 ? 1 : R == 1 ? 3 : 2; }

/* Blocks walk row groups gridDim.x apart: one each when the grid covers the rows; the
 * backend caps the grid at one resident wave (per_sm), so a block stages x once for all
 * its groups and no block waits for a slot, and a warp issues its next rows' loads
 * before it sums and stores the current ones. Measured (H100, batch-1 decode at 512,
 * tok/s): q4_k_m 290-291 one wave vs 276-279 uncapped (285-287 before the row loop),
 * q8_0 253-254 vs 247, MLX 4-bit 321-334 vs 317; a wave of 2 blocks per SM (room for the
 * next kernel's blocks) 257-262. The minimum of 3 blocks per SM for one-row shapes holds
 * them at 80 registers (no spills): the loop alone took Q4_K to 103 and 2 blocks per SM,
 * 250 tok/s. */
template <class T, int R, int U, int W>
__global__ void __launch_bounds__(W * 32, lpc_gemv1_min_blocks(R, W)) lpc_gemv1_q(lpc_gemv_args p) {
    LPC_GEMV1_SMEM;
    LPC_STAMP_BEGIN();
    lpc_launch_dependents();
    /* Expert mode reads the routing kernel's expert ids to find its rows: no weight
     * prefetch across the wait there (ids read early could be stale). */
    if (p.sel) lpc_grid_wait();
    const int lane = threadIdx.x % 32, stride = (int)gridDim.x * W * R;
    int grow = (blockIdx.x * W + threadIdx.x / 32) * R;
    lpc_row_pick r[R];
    int n_rows = 0;
    const uint8_t *A[R] = {}, *B[R] = {};
    const int S = p.bpr * T::SLICES;
    typename T::raw w[U][R];
    bool active = lpc_gemv_pick<T, R>(p, grow, r, n_rows, A, B); /* warps without rows still help stage */
    if (active) lpc_gemv1_load<T, R, U>(A, B, lane, S, w);
    LPC_STAMP_MARK(0);
    if (!p.sel) lpc_grid_wait(); /* launched PDL: the weights above are in flight; x is the previous kernel's */
    LPC_STAMP_MARK(1);
    lpc_gemv1_stage<W>(p, p.sel ? (size_t)(blockIdx.y / p.x_div) * p.K : 0, xc, xds, xss);
    LPC_STAMP_MARK(2);
    for (int round = 0; active; round++) {
        float acc[R][1];
        lpc_gemv1_dots<T, R, U>(A, B, S, w, xc, xds, acc);
        if (round == 0) LPC_STAMP_MARK(3);
        lpc_row_pick cur[R];
#pragma unroll
        for (int i = 0; i < R; i++) cur[i] = r[i];
        const int cur_rows = n_rows;
        grow += stride;
        active = lpc_gemv_pick<T, R>(p, grow, r, n_rows, A, B);
        if (active) lpc_gemv1_load<T, R, U>(A, B, lane, S, w);
        lpc_gemv1_store<R>(p, cur, cur_rows, acc, xss);
        if (round == 0) LPC_STAMP_MARK(4);
    }
    LPC_STAMP_END(LPC_TAG_GEMV1, (uint32_t)p.row0[p.nprob], (uint32_t)p.K);
}

/* What a group kernel (lpc_gemv1_grp) does with a 32-row group's sums, in warp 0 (lane:
 * the row in the group). NP: the problems whose rows a group takes. */
struct lpc_grp_glu { /* gate (0) and up (1), then the SwiGLU */
    enum { NP = 2, TAG = LPC_TAG_GLU };
    static __device__ __forceinline__ void finish(const lpc_gemv_args &p, const float (&sums)[NP][32], int grp, int lane) {
        const float v = lpc_swiglu_value(sums[0][lane], sums[1][lane], p.glu.limit);
        const size_t e0 = (size_t)grp * 32;
        if (p.glu.out) p.glu.out[e0 + lane] = v;
        lpc_q8_emit(v, e0, lane, p.glu.o);
    }
};

struct lpc_grp_norm { /* y (+)= the result, then the shadow of the RMSNorm after it (p.yn) */
    enum { NP = 1, TAG = LPC_TAG_GEMVN };
    static __device__ __forceinline__ void finish(const lpc_gemv_args &p, const float (&sums)[NP][32], int grp, int lane) {
        const size_t e0 = (size_t)grp * 32;
        float *y = p.y[0] + e0 + lane;
        const float v = (p.accumulate[0] ? *y : 0.0f) + sums[0][lane];
        *y = v;
        const float ss = lpc_warp_sum(v * v);
        lpc_q8_emit(__ldg(p.yn.w + e0 + lane) * v, e0, lane, p.yn.o);
        if (lane == 0) p.yn.ss[grp] = ss;
    }
};

/* A GEMV whose blocks own whole 32-element groups of the result, so that what follows it
 * per group runs in the same launch (E: the SwiGLU of gate and up, one grid boundary less
 * per layer; the RMSNorm's shadow after o and down, nothing left for its readers but the
 * usual staging). Each of a block's W warps takes 32/W rows of each of E::NP problems of
 * a group (R at a time, the next rows' loads issued before the current ones are summed,
 * as in lpc_gemv1_q) and leaves the sums in shared memory; after the block's barrier warp
 * 0 finishes the group. Same arithmetic as lpc_gemv1_q and the kernel it replaces, same
 * bits. Blocks walk groups gridDim.x apart; the sums are double-buffered by group, so one
 * barrier per group suffices. */
template <class T, class E, int R, int U, int W>
__global__ void __launch_bounds__(W * 32, lpc_gemv1_min_blocks(R, W)) lpc_gemv1_grp(lpc_gemv_args p) {
    enum { HALF = 32 / W, STEPS = E::NP * HALF / R }; /* rows per problem, row steps per group and warp */
    static_assert(32 % W == 0 && HALF % R == 0, "a warp's rows of a group come in whole steps");
    LPC_GEMV1_SMEM;
    __shared__ float sums[2][E::NP][32]; /* [group parity][problem][row in group] */
    LPC_STAMP_BEGIN();
    lpc_launch_dependents();
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, groups = p.M[0] / 32, S = p.bpr * T::SLICES;
    /* row step t of group g: rows of problem t*R / HALF, from g*32 + warp*HALF + t*R % HALF */
    auto first_row = [&](int g, int t) { return (t * R / HALF) * p.M[0] + g * 32 + warp * HALF + t * R % HALF; };
    int grp = blockIdx.x, step = 0, parity = 0;
    lpc_row_pick r[R];
    int n_rows = 0;
    const uint8_t *A[R] = {}, *B[R] = {};
    typename T::raw w[U][R];
    bool active = grp < groups && lpc_gemv_pick<T, R>(p, first_row(grp, 0), r, n_rows, A, B); /* block-uniform */
    if (active) lpc_gemv1_load<T, R, U>(A, B, lane, S, w);
    LPC_STAMP_MARK(0);
    lpc_grid_wait();
    LPC_STAMP_MARK(1);
    lpc_gemv1_stage<W>(p, 0, xc, xds, xss);
    LPC_STAMP_MARK(2);
    const float x_scale = lpc_xn_on(p) ? lpc_x_rms(p, xss, lane) : 1.0f;
    for (int round = 0; active; round++) {
        float acc[R][1];
        lpc_gemv1_dots<T, R, U>(A, B, S, w, xc, xds, acc);
        if (round == 0) LPC_STAMP_MARK(3);
        const int cur_grp = grp, cur_step = step;
        if (++step == STEPS) step = 0, grp += gridDim.x;
        active = grp < groups && lpc_gemv_pick<T, R>(p, first_row(grp, step), r, n_rows, A, B);
        if (active) lpc_gemv1_load<T, R, U>(A, B, lane, S, w);
#pragma unroll
        for (int i = 0; i < R; i++) {
            const float v = lpc_warp_sum(acc[i][0] * x_scale); /* lpc_gemv1_store's order */
            const int t = cur_step * R + i;
            if (lane == 0) sums[parity][t / HALF][warp * HALF + t % HALF] = v;
        }
        if (cur_step < STEPS - 1) continue;
        __syncthreads();
        if (round == STEPS - 1) LPC_STAMP_MARK(4);
        if (warp == 0) E::finish(p, sums[parity], cur_grp, lane);
        parity ^= 1;
    }
    LPC_STAMP_END(E::TAG, (uint32_t)p.M[0], (uint32_t)p.K);
}

/* Blocks of kernel Kern (threads each) in one resident wave under p's cap (per_sm per SM
 * at most), or 0 when the grid is uncapped. Occupancy is asked once per kernel. */
template <auto Kern>
inline int lpc_gemv1_wave(const lpc_gemv_args &p, int threads) {
    if (p.per_sm <= 0 || p.n_sm <= 0) return 0;
    static int resident = 0;
    if (!resident) resident = lpc_resident_blocks(Kern, threads);
    return p.n_sm * lpc_imin(p.per_sm, resident);
}

/* The batch-1 kernel's shape: R rows per warp, U slices per lane in flight, W warps. */
template <class T, int R, int U, int W>
inline void lpc_gemv1_launch(lpc_stream st, const lpc_gemv_args &p, int n_pairs) {
    const int per_block = W * R, slots = lpc_gemv1_wave<lpc_gemv1_q<T, R, U, W>>(p, W * 32);
    int blocks = (p.row0[p.nprob] + per_block - 1) / per_block;
    if (slots) blocks = lpc_imin(blocks, slots);
    auto kern = lpc_gemv1_q<T, R, U, W>;
    const dim3 grid((unsigned)blocks, (unsigned)(n_pairs > 0 ? n_pairs : 1));
    LPC_LAUNCH_PDL(kern, grid, dim3(W * 32), st, p);
}

/* A group kernel's launch: the fused gate/up/SwiGLU when its groups fit one wave of
 * resident blocks or leave at most an eighth of the slots of several idle (a block
 * walking two groups where others walk one costs more than the SwiGLU launch saves:
 * Qwen2.5-7B has 592 groups on 396 slots, Qwen3-8B 384; false: not launched, run the
 * GEMV and the SwiGLU kernel); the norm's epilogue always (must: nothing else makes it). */
template <class T, class E, int R, int U, int W>
inline bool lpc_gemv1_grp_launch(lpc_stream st, const lpc_gemv_args &p, bool must) {
    const int groups = p.M[0] / 32, slots = lpc_gemv1_wave<lpc_gemv1_grp<T, E, R, U, W>>(p, W * 32);
    int blocks = groups;
    if (slots) {
        const int waves = (groups + slots - 1) / slots;
        if (!must && waves > 1 && (size_t)waves * slots * 8 > (size_t)groups * 9) return false;
        blocks = lpc_imin(groups, slots);
    }
    auto kern = lpc_gemv1_grp<T, E, R, U, W>;
    LPC_LAUNCH_PDL(kern, dim3((unsigned)blocks), dim3(W * 32), st, p);
    return true;
}

/* Every quantized decoder (lpc_decoder: load + unpack) has the batch-1 kernels. */
template <class T>
struct lpc_gemv1 {
    static bool fits(const lpc_gemv_args &p) { return lpc_gemv1_fits(p.K, p.ncols); }
    /* Shapes measured on the H100 with PDL (bench/cuda_gemv_bench.cu, Qwen3-8B
     * matrices, TB/s): 4-/5-bit types over 4096 columns want one row per warp and
     * 4 slices in flight (gate/up 2.37 vs 2.09 at two rows), over 12288 columns two
     * rows (down 2.13 vs 1.79); Q6_K two rows, 2 slices (4 spill; lm_head 3.0, the
     * copy bandwidth); Q8_0 4 slices except on the tall gate/up (2.93 vs 2.68 on q/o).
     * f.template go<R, U, W>() runs the chosen shape. */
    template <class F>
    static bool shaped(const lpc_gemv_args &p, F &&f) {
        if constexpr (T::A_BYTES * 8 == 4 * T::BLOCK || T::A_BYTES * 8 == 5 * T::BLOCK) { /* Q4_K, Q5_K, MLX 4-bit, Q4_0 */
            if (p.K <= 4096) return f.template go<1, 4, 8>();
        } else if constexpr ((int)T::TYPE == LPC_Q8_0) {
            if (p.row0[p.nprob] <= 8192) return f.template go<2, 4, 8>();
        }
        return f.template go<2, 2, 8>();
    }
    struct plain {
        lpc_stream st;
        const lpc_gemv_args &p;
        int n_pairs;
        template <int R, int U, int W>
        bool go() {
            lpc_gemv1_launch<T, R, U, W>(st, p, n_pairs);
            return true;
        }
    };
    struct glu {
        lpc_stream st;
        const lpc_gemv_args &p;
        template <int R, int U, int W>
        bool go() { return lpc_gemv1_grp_launch<T, lpc_grp_glu, R, U, W>(st, p, false); }
    };
    /* A 32-row group a block, and Qwen3-8B's o and down have 128 groups for 132 SMs, so
     * 16 warps of two rows (registers are no limit at one block per SM). Measured (H100,
     * q4_k_m, batch-1 decode tok/s at 512 / 4k, two runs each): this shape 365.7, 358.9 /
     * 330.1, 328.2; 2 slices in flight 363.6, 359.5 / 329.8, 326.6; one row a step 340.2,
     * 335.9 / 307.5, 303.1; 8 warps of two rows 320.1, 318.3 / 293.6, 289.7. */
    struct norm {
        lpc_stream st;
        const lpc_gemv_args &p;
        template <int R, int U, int W>
        bool go() {
            constexpr int UN = T::A_BYTES * 8 == 5 * T::BLOCK ? 2 : U; /* Q5_K spills at 2 rows x 4 */
            return lpc_gemv1_grp_launch<T, lpc_grp_norm, 2, UN, 16>(st, p, true);
        }
    };
    static void launch(lpc_stream st, const lpc_gemv_args &p, int n_pairs) { shaped(p, plain{st, p, n_pairs}); }
    static bool launch_glu(lpc_stream st, const lpc_gemv_args &p) { return shaped(p, glu{st, p}); }
    static bool launch_norm(lpc_stream st, const lpc_gemv_args &p) { return shaped(p, norm{st, p}); }
};

/* Launch for one weight type: columns in chunks of 8, the kernel's NC the next power of two. */
struct lpc_gemv_launch {
    lpc_stream st;
    lpc_gemv_args p;
    int n_pairs; /* expert mode: routed pairs (grid.y) */
    template <class K1, class K2, class K4, class K8>
    void go(int rows_per_warp, K1 k1, K2 k2, K4 k4, K8 k8) {
        const int per_block = LPC_GEMV_WARPS * rows_per_warp;
        const dim3 grid((unsigned)((p.row0[p.nprob] + per_block - 1) / per_block), (unsigned)(n_pairs > 0 ? n_pairs : 1));
        const int n = p.ncols;
        lpc_gemv_args q = p;
        for (int c0 = 0; c0 < n; c0 += LPC_GEMV_MAX_NC) {
            q.ncols = lpc_imin(LPC_GEMV_MAX_NC, n - c0);
            q.x = p.x ? p.x + (size_t)c0 * p.K : NULL;
            if (p.xq.q) {
                q.xq.q = p.xq.q + (size_t)c0 * p.K;
                q.xq.d = p.xq.d + (size_t)c0 * p.K / 32;
                q.xq.s = p.xq.s + (size_t)c0 * p.K / 16;
            }
            for (int i = 0; i < p.nprob; i++) q.y[i] = p.y[i] + (size_t)c0 * p.M[i];
            if (q.ncols == 1)
                LPC_LAUNCH_PDL(k1, grid, dim3(128), st, q);
            else if (q.ncols == 2)
                LPC_LAUNCH_PDL(k2, grid, dim3(128), st, q);
            else if (q.ncols <= 4)
                LPC_LAUNCH_PDL(k4, grid, dim3(128), st, q);
            else
                LPC_LAUNCH_PDL(k8, grid, dim3(128), st, q);
        }
    }
    bool grp_ran = false;
    template <class T>
    void run() {
        if (p.glu.on || p.yn.w) {
            grp_ran = p.glu.on ? lpc_gemv1<T>::launch_glu(st, p) : lpc_gemv1<T>::launch_norm(st, p);
            return;
        }
        if (lpc_gemv1<T>::fits(p)) return lpc_gemv1<T>::launch(st, p, n_pairs);
        go(LPC_GEMV_ROWS, lpc_gemv_q<T, 1>, lpc_gemv_q<T, 2>, lpc_gemv_q<T, 4>, lpc_gemv_q<T, 8>);
    }
};

/* type: LPC_* id of the device weight. Returns false for a type without a kernel. */
inline bool lpc_gemv(lpc_stream st, int type, const lpc_gemv_args &p, int n_pairs) {
    /* only the batch-1 kernels do an RMSNorm before or after them; the one after (one
     * problem, whole 32-row groups) must run, nothing else would make it */
    const bool batch1 = lpc_gemv1_fits(p.K, p.ncols) && !p.sel && lpc_find_split(type);
    if (((p.xn.x || p.xn.ss || p.yn.w) && !batch1) || (p.yn.w && (p.nprob != 1 || p.M[0] % 32)) || p.glu.on) return false;
    lpc_gemv_launch l = {st, p, n_pairs};
    if (p.yn.w) return lpc_dispatch_quant(type, l) && l.grp_ran;
    switch (type) {
    case LPC_F32: l.go(1, lpc_gemv_f<0, 1>, lpc_gemv_f<0, 2>, lpc_gemv_f<0, 4>, lpc_gemv_f<0, 8>); return true;
    case LPC_F16: l.go(1, lpc_gemv_f<1, 1>, lpc_gemv_f<1, 2>, lpc_gemv_f<1, 4>, lpc_gemv_f<1, 8>); return true;
    case LPC_BF16: l.go(1, lpc_gemv_f<2, 1>, lpc_gemv_f<2, 2>, lpc_gemv_f<2, 4>, lpc_gemv_f<2, 8>); return true;
    default: return lpc_dispatch_quant(type, l);
    }
}

/* Gate (problem 0) and up (1) of equal M (a multiple of 32) over a batch-1 shadow, then
 * silu(gate) * up into p.glu: false when it did not launch (another shape, or groups
 * that would leave waves half empty); then run lpc_gemv and the SwiGLU kernel. */
inline bool lpc_gemv_glu(lpc_stream st, int type, const lpc_gemv_args &p) {
    if (!p.glu.on || p.yn.w || p.nprob != 2 || p.M[0] != p.M[1] || p.M[0] % 32 || p.sel || !lpc_gemv1_fits(p.K, p.ncols) ||
        !lpc_find_split(type))
        return false;
    lpc_gemv_launch l = {st, p, 0};
    return lpc_dispatch_quant(type, l) && l.grp_ran;
}

#endif
