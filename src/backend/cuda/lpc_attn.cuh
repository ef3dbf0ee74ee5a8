/* lpc_attn.cuh — the attention kernels of decode and prefill: per-head rows (q/k
 * RMSNorm + rope), the KV-cache store, split-K attention over the F16 cache with its
 * merge, and the batch-1 decode attention that does all of it in one launch
 * (lpc_attn1). Written against lpc_port.cuh only, like every kernel header. */
#ifndef LPC_ATTN_CUH
#define LPC_ATTN_CUH

#include <math.h>

#include "lpc_gemv.cuh"
#include "lpc_tc.cuh"
/* ---- per-head rows (q/k norm + rope) and the KV-cache store ---- */

/* KV cache F16, [layer][slot][kv head][pos][head_dim]; this indexes one layer. */
__device__ __forceinline__ size_t lpc_kv_index(int slot, int kvh, int pos, int n_kv, int n_ctx, int hd) {
    return (((size_t)slot * n_kv + kvh) * n_ctx + pos) * hd;
}

__device__ __forceinline__ void lpc_head_put(float *dst, uint16_t *h, int i, float v) {
    if (dst) dst[i] = v;
    if (h) h[i] = lpc_f2h(v);
}

/* One row of hd values (hd <= 256) by one warp: RMSNorm (w != NULL) then rope (cs !=
 * NULL: this token's table rows; neox: pairs (i, i+half)) of src, written to dst (F32;
 * may be src: every lane reads before any lane writes) and/or h (F16 bits: a KV-cache
 * row). b: the warp's hd floats of shared memory. The rope table's and the norm
 * weight's loads go out with the row's: one L2 round trip, where loading them after the
 * norm (the weight after its sum) made two. */
__device__ __forceinline__ void lpc_head_row(const float *src, int hd, const float *w, float eps, const float *cs,
                                             const float *sn, int neox, float *b, float *dst, uint16_t *h) {
    const int lane = threadIdx.x % 32, half = hd / 2;
    float c[4], sv[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int i = lane + 32 * j;
        c[j] = cs && i < half ? cs[i] : 0.0f;
        sv[j] = cs && i < half ? sn[i] : 0.0f;
    }
    float x[8], wv[8]; /* the row and the norm's weight, loaded with the table */
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const int i = lane + 32 * j;
        x[j] = i < hd ? src[i] : 0.0f;
        wv[j] = w && i < hd ? w[i] : 0.0f;
    }
    float scale = 1.0f;
    if (w) {
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++)
            if (lane + 32 * j < hd) ss += x[j] * x[j];
        ss = lpc_warp_sum(ss);
        scale = 1.0f / sqrtf(ss / (float)hd + eps);
    }
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const int i = lane + 32 * j;
        if (i < hd) b[i] = w ? wv[j] * (x[j] * scale) : x[j];
    }
    __syncwarp();
    if (!cs) {
        for (int i = lane; i < hd; i += 32) lpc_head_put(dst, h, i, b[i]);
        return;
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const int i = lane + 32 * j;
        if (i >= half) break;
        const int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
        const float x0 = b[ia], x1 = b[ib];
        lpc_head_put(dst, h, ia, x0 * c[j] - x1 * sv[j]);
        lpc_head_put(dst, h, ib, x1 * c[j] + x0 * sv[j]);
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

/* The attention kernels' head_dim (32, 64, 128 or 256) as a compile-time constant: go(h)
 * with decltype(h)::value the head_dim, for the launchers of both decode kernels. */
template <int HD>
struct lpc_hd_const {
    static constexpr int value = HD;
};
template <class Go>
inline void lpc_attn_hd(int hd, Go go) {
    switch (hd) {
    case 32: go(lpc_hd_const<32>{}); break;
    case 64: go(lpc_hd_const<64>{}); break;
    case 128: go(lpc_hd_const<128>{}); break;
    default: go(lpc_hd_const<256>{}); break;
    }
}

/* Splits that a token attending to len positions uses: nsplit is fixed per graph (sized
 * for the longest context), the live length decides how many carry work, at least
 * min_chunk positions each, so a short context is not spread over 64 splits of a few
 * positions (512 blocks, and a 64-way merge) when 4 do. Blocks of the other splits exit
 * at once. The host asks too (attn1_splits). */
LPC_HD int lpc_attn_live_splits(const lpc_attn_args &p, int len) {
    return p.min_chunk > 0 ? lpc_imax(1, lpc_imin(p.nsplit, (len + p.min_chunk - 1) / p.min_chunk)) : p.nsplit;
}

/* The first position a query at pos attends to (sliding window or 0). */
LPC_HD int lpc_attn_first(const lpc_attn_args &p, int pos) {
    return p.window > 0 && pos - p.window + 1 > 0 ? pos - p.window + 1 : 0;
}

/* Output rows row0 .. row0+nr-1 (row = token * n_head + head) from their first S
 * partials: a warp per row (hd % 32 == 0), with one L2 round trip for a short context:
 * the warp loads its row's split maxima and weights (a lane per split) and the first 8
 * splits' partial vectors (a 16-byte load per lane and split) together, takes the max with
 * shuffles, then every lane sums its 4 elements over the splits in split order, the
 * weights broadcast from the split's lane, sinks first in the denominator: the
 * arithmetic of a per-element merge, so the folded and the separate combine give the
 * same bits. (Staging the maxima in shared memory took two L2 round trips and four block
 * barriers on the fold's critical path.) Partials are read through L2 (__ldcg): in the
 * folded combine, blocks on other SMs wrote them during this launch. */
__device__ __forceinline__ void lpc_attn_merge(const lpc_attn_args &p, int hd, int row0, int nr, int S) {
    static_assert(LPC_ATTN_MAX_SPLIT <= 64, "two splits a lane");
    enum { CH = 8 }; /* splits' vectors in flight a lane */
    const int stride = hd + LPC_ATTN_PART_HEAD, lane = threadIdx.x % 32, warps = (int)blockDim.x / 32;
    for (int r = (int)threadIdx.x / 32; r < nr; r += warps) { /* warp-uniform */
        const float *pr = p.part + ((size_t)row0 + r) * p.nsplit * stride; /* [nsplit][stride] */
        const float sink = p.sinks ? p.sinks[(row0 + r) % p.n_head] : -INFINITY;
        float m[2], l[2];
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int sp = lane + 32 * j;
            m[j] = sp < S ? __ldcg(pr + (size_t)sp * stride) : -INFINITY;
            l[j] = sp < S ? __ldcg(pr + (size_t)sp * stride + 1) : 0.0f;
        }
        float M = 0.0f, L = 0.0f, w[2] = {0.0f, 0.0f};
        auto of_split = [&](const float(&v)[2], int sp) { return __shfl_sync(LPC_FULL_MASK, sp < 32 ? v[0] : v[1], sp % 32); };
        for (int d0 = 0; d0 < hd / 4; d0 += 32) { /* warp-uniform */
            const int d = 4 * (d0 + lane);
            const bool ok = d < hd;
            const float *pv = pr + LPC_ATTN_PART_HEAD + (ok ? d : 0);
            float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            for (int s0 = 0; s0 < S; s0 += CH) {
                float4 v[CH];
#pragma unroll
                for (int j = 0; j < CH; j++)
                    if (s0 + j < S) v[j] = __ldcg((const float4 *)(pv + (size_t)(s0 + j) * stride));
                if (d0 == 0 && s0 == 0) { /* the vectors' loads are out: the weights */
                    M = fmaxf(sink, fmaxf(m[0], m[1]));
                    M = lpc_warp_max(M);
#pragma unroll
                    for (int j = 0; j < 2; j++) w[j] = m[j] == -INFINITY ? 0.0f : expf(m[j] - M); /* empty splits: skipped */
                    L = p.sinks ? expf(sink - M) : 0.0f;
                    for (int sp = 0; sp < S; sp++) {
                        const float ms = of_split(m, sp), ws = of_split(w, sp), ls = of_split(l, sp);
                        if (ms != -INFINITY) L += ws * ls;
                    }
                }
#pragma unroll
                for (int j = 0; j < CH; j++) {
                    const int sp = s0 + j;
                    if (sp >= S) break;
                    const float ms = of_split(m, sp), ws = of_split(w, sp);
                    if (ms == -INFINITY) continue;
                    acc.x += ws * v[j].x, acc.y += ws * v[j].y, acc.z += ws * v[j].z, acc.w += ws * v[j].w;
                }
            }
            acc.x /= L, acc.y /= L, acc.z /= L, acc.w /= L;
            if (ok) *(float4 *)(p.out + ((size_t)row0 + r) * hd + d) = acc;
            if (p.emit) lpc_q8_emit4(acc, ((size_t)row0 + r) * hd + d, ok, p.o);
        }
    }
}

/* After a split block wrote its partials: the last of the S live blocks of (token t, kv
 * head kvh) to get here (lpc_last_block) merges the G heads' outputs, which saves the
 * combine launch (~2 us of graph time per layer). */
__device__ __forceinline__ void lpc_attn_fold(const lpc_attn_args &p, int hd, int t, int kvh, int S) {
    if (lpc_last_block(p.counters + (size_t)t * p.n_kv + kvh, (unsigned)S))
        lpc_attn_merge(p, hd, t * p.n_head + kvh * p.G, p.G, S);
}

/* A warp's running state over its tiles of positions: the online softmax's max and sum
 * per query head, and 8 dims (vd .. vd+7) of the weighted V sum per head for the V rows
 * this lane reads (vr, vr + RPI, ...). */
template <int GM>
struct lpc_attn_acc {
    float m[GM], l[GM], acc[GM][8];
};

/* One tile of up to 32 positions (the first nv valid) for a warp: lane l scores its
 * position (K row at krow, the whole row in flight at once) for all G heads, then the
 * warp adds the tile's values with an online softmax, a row of V per HD/8 lanes
 * (16-byte loads, 32*8/HD rows per step, four steps' loads issued together: fetched one
 * dependent load at a time, V rows made decode attention latency-bound; loading all of a
 * tile's V rows up front was slower at long contexts: the registers cost occupancy).
 * V row j of the tile at vrow + j * vstride (this lane's dims included), read from the
 * cache. */
template <int HD, int GM>
__device__ __forceinline__ void lpc_attn_tile(const float (*qs)[HD], int G, const uint8_t *krow, int nv, const uint8_t *vrow,
                                              size_t vstride, lpc_attn_acc<GM> &st) {
    enum { LPR = HD / 8, RPI = 32 / LPR, NIT = 32 / RPI, UNR = NIT < 4 ? NIT : 4 }; /* lanes per V row, rows per step */
    const int lane = threadIdx.x % 32, vr = lane / LPR;
    const bool valid = lane < nv;
    float s[GM];
#pragma unroll
    for (int g = 0; g < GM; g++) s[g] = 0.0f;
    if (valid) {
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
        const float mn = fmaxf(st.m[g], lpc_warp_max(sv));
        const float alpha = __expf(st.m[g] - mn);
        const float pg = valid ? __expf(sv - mn) : 0.0f;
        st.l[g] = st.l[g] * alpha + pg;
#pragma unroll
        for (int d = 0; d < 8; d++) st.acc[g][d] *= alpha;
        st.m[g] = mn;
        s[g] = pg; /* 0 for positions past the end */
    }
#pragma unroll
    for (int it0 = 0; it0 < NIT; it0 += UNR) {
        uint4 vv[UNR];
#pragma unroll
        for (int u = 0; u < UNR; u++) {
            const int j = (it0 + u) * RPI + vr;
            vv[u] = j < nv ? lpc_load16(vrow + (size_t)j * vstride) : make_uint4(0, 0, 0, 0);
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
                for (int d = 0; d < 8; d++) st.acc[g][d] += pj * vf[d];
            }
        }
    }
}

/* A block's partials of split sp for the G heads of kv head kvh of token t: the heads'
 * maxima and sums over the block's 4 warps (red_m / red_l, [warp][head] with row stride
 * rs) merged, and the weighted V sums acc(head, d), already scaled to the merged max. */
template <class Acc>
__device__ __forceinline__ void lpc_attn_put_part(const lpc_attn_args &p, int hd, int t, int kvh, int sp, const float *red_m,
                                                  const float *red_l, int rs, Acc acc) {
    const int G = p.G, stride = hd + LPC_ATTN_PART_HEAD;
    for (int i = threadIdx.x; i < G * stride; i += blockDim.x) {
        const int g = i / stride, k = i % stride;
        float *dst = p.part + (((size_t)t * p.n_head + kvh * G + g) * p.nsplit + sp) * stride;
        const float M = fmaxf(fmaxf(red_m[g], red_m[rs + g]), fmaxf(red_m[2 * rs + g], red_m[3 * rs + g]));
        if (k == 0) {
            dst[0] = M;
        } else if (k == 1) {
            float L = 0.0f;
            for (int w = 0; w < 4; w++)
                if (red_m[w * rs + g] != -INFINITY) L += red_l[w * rs + g] * __expf(red_m[w * rs + g] - M);
            dst[1] = L;
        } else if (k >= LPC_ATTN_PART_HEAD) {
            dst[k] = M == -INFINITY ? 0.0f : acc(g, k - LPC_ATTN_PART_HEAD);
        }
    }
}

/* After the warps' tiles: merge the four warps (shared max, rescaled sums), write the
 * block's unnormalised partials of split sp, and with p.counters let the last live block
 * of (token t, kv head) merge them (lpc_attn_fold). Every live block calls it. */
template <int HD, int GM>
__device__ __forceinline__ void lpc_attn_finish(const lpc_attn_args &p, lpc_attn_acc<GM> &st, int t, int kvh, int sp, int live) {
    enum { LPR = HD / 8 };
    __shared__ float red_m[4][GM], red_l[4][GM];
    __shared__ float acc_s[GM][HD];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, G = p.G;
    const int vr = lane / LPR, vd = 8 * (lane % LPR);
    /* the RPI rows of a step went to different lanes: sum lanes with the same dims */
#pragma unroll
    for (int g = 0; g < GM; g++)
#pragma unroll
        for (int d = 0; d < 8; d++)
#pragma unroll
            for (int mk = LPR; mk < 32; mk <<= 1) st.acc[g][d] += __shfl_xor_sync(LPC_FULL_MASK, st.acc[g][d], mk);
#pragma unroll
    for (int g = 0; g < GM; g++) {
        const float lw = lpc_warp_sum(st.l[g]);
        if (lane == 0 && g < G) red_m[warp][g] = st.m[g], red_l[warp][g] = lw;
    }
    __syncthreads();
    for (int w = 0; w < 4; w++) {
        if (warp == w && vr == 0) {
#pragma unroll
            for (int g = 0; g < GM; g++) {
                if (g >= G) break;
                const float M = fmaxf(fmaxf(red_m[0][g], red_m[1][g]), fmaxf(red_m[2][g], red_m[3][g]));
                const float f = st.m[g] == -INFINITY ? 0.0f : __expf(st.m[g] - M);
#pragma unroll
                for (int d = 0; d < 8; d++) {
                    const float v = st.acc[g][d] * f;
                    acc_s[g][vd + d] = w == 0 ? v : acc_s[g][vd + d] + v;
                }
            }
        }
        __syncthreads();
    }
    lpc_attn_put_part(p, HD, t, kvh, sp, &red_m[0][0], &red_l[0][0], GM, [&](int g, int d) { return acc_s[g][d]; });
    if (p.counters) lpc_attn_fold(p, HD, t, kvh, live);
}

template <int GM>
__device__ __forceinline__ void lpc_attn_acc_init(lpc_attn_acc<GM> &st) {
#pragma unroll
    for (int g = 0; g < GM; g++) {
        st.m[g] = -INFINITY;
        st.l[g] = 0.0f;
#pragma unroll
        for (int d = 0; d < 8; d++) st.acc[g][d] = 0.0f;
    }
}

/* Positions [beg, end) of split sp for a query at pos (live: the splits in use; false:
 * this split has none). Chunks are whole tiles of 32. */
__device__ __forceinline__ bool lpc_attn_range(const lpc_attn_args &p, int pos, int sp, int &beg, int &end, int &live) {
    const int first = lpc_attn_first(p, pos);
    const int len = pos - first + 1;
    live = lpc_attn_live_splits(p, len);
    if (sp >= live) return false;
    const int chunk = ((len + live - 1) / live + 31) & ~31;
    beg = first + sp * chunk, end = lpc_imin(beg + chunk, pos + 1);
    return true;
}

/* One block per (token, kv head, split): the G query heads sharing the kv head, over
 * split `blockIdx.y` of the positions [first, pos]; each warp takes tiles of 32
 * positions 128 apart (lpc_attn_tile). Writes unnormalised partials; with p.counters
 * the last block of the (token, kv head) also merges them (lpc_attn_fold), else
 * lpc_attn_combine_kernel does. nsplit <= 64. */
template <int HD, int GM>
__global__ void __launch_bounds__(128) lpc_attn_split_kernel(lpc_attn_args p) {
    __shared__ float qs[GM][HD];
    LPC_PDL_ENTRY();
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, vd = 8 * (lane % (HD / 8));
    const int t = blockIdx.x / p.n_kv, kvh = blockIdx.x % p.n_kv, sp = blockIdx.y, G = p.G;
    const int pos = p.pos[t], slot = p.slot[t];
    int beg, end, live;
    if (!lpc_attn_range(p, pos, sp, beg, end, live)) return; /* block-uniform; never counted in */
    for (int i = threadIdx.x; i < G * HD; i += blockDim.x)
        qs[i / HD][i % HD] = p.q[((size_t)t * p.n_head + kvh * G + i / HD) * HD + i % HD] * p.scale;
    __syncthreads();
    const uint16_t *kbase = p.kc + lpc_kv_index(slot, kvh, 0, p.n_kv, p.n_ctx, HD);
    const uint16_t *vbase = p.vc + lpc_kv_index(slot, kvh, 0, p.n_kv, p.n_ctx, HD);
    lpc_attn_acc<GM> st;
    lpc_attn_acc_init(st);
    for (int tile = beg + 32 * warp; tile < end; tile += 128)
        lpc_attn_tile<HD, GM>(qs, G, (const uint8_t *)(kbase + (size_t)(tile + lane) * HD), end - tile,
                              (const uint8_t *)(vbase + (size_t)tile * HD + vd), 2 * HD, st);
    lpc_attn_finish<HD, GM>(p, st, t, kvh, sp, live);
}

/* ---- batch-1 decode attention in one launch (lpc_attn1) ----
 *
 * The decode step's attention for one token, with the per-head ops folded in: each
 * block normalises and ropes its G query heads itself, the block whose tile holds the
 * token's position normalises and ropes k and stores k and v into the cache (and uses
 * them from shared memory), and the positions before it, written by earlier steps and
 * by no kernel of this one, are copied into shared memory (cp.async) before the block
 * waits for the previous grid. So the K/V stream of a short context is in flight while
 * the q/k/v GEMVs still run, and the heads kernel's launch is gone.
 *
 * The products run on tensor cores (mma.sync m16n8k16, f16 operands, f32 sums), the
 * heads as the n dimension (8 or 16 columns): per 32-position tile S^T = K q^T (the K
 * rows straight from shared memory by ldmatrix), the online softmax over each column,
 * P^T transposed into B fragments in registers (movmatrix), O^T += V^T P^T (V by
 * ldmatrix.trans). ~150 instructions per warp and tile where the FMA version (the split
 * kernel's lpc_attn_tile) spent ~1.6k dependent ones: at short contexts attention was
 * latency-bound on them (Nsight Compute: 7.5 cycles per issued instruction, one 4-warp
 * block per SM). Arithmetic: q and P rounded to f16 (the K/V cache is f16 already), the
 * sums in f32; the split kernel's results within ~1e-3 (test_cuda_emu test_attention1).
 * Only for a single token: with several, a token may attend to positions another token
 * of the same launch writes. */
typedef struct {
    lpc_attn_args a;     /* q: the token's q rows as the GEMV wrote them (before qh's op) */
    lpc_head_set qh, kh; /* q's and k's per-head op: x, w (norm), eps, rope; kh.back: the F32 k
                            result (or NULL). No q result: every block reads the q rows it needs
                            while others may still be reading, so q stays as it came */
    const float *v;      /* the token's v rows */
    const float *cs, *sn; /* the token's rope row */
    int neox;
} lpc_attn1_args;

/* Dynamic shared memory of a block: per warp, a tile of 32 K rows and 32 V rows, each row
 * padded by 16 bytes (ldmatrix's 8 rows of a block, and the lanes reading q, then hit
 * different banks), then per warp hd floats of scratch for lpc_head_row, then 16 f16 q
 * rows and the token's own K and V rows, padded the same way (static shared memory is
 * full at head_dim 256 with 16 heads per kv head). After the tiles, the merge of the
 * warps overlays them. */
__host__ __device__ constexpr int lpc_attn1_row_bytes(int hd) { return 2 * hd + 16; }
__host__ __device__ constexpr int lpc_attn1_tiles_bytes(int hd) { return 4 * 2 * 32 * lpc_attn1_row_bytes(hd); }
__host__ __device__ constexpr int lpc_attn1_q_at(int hd) { return lpc_attn1_tiles_bytes(hd) + 4 * hd * (int)sizeof(float); }
inline size_t lpc_attn1_smem(int hd) { return (size_t)lpc_attn1_q_at(hd) + 18 * (size_t)lpc_attn1_row_bytes(hd); }

/* A warp's tile: K and V rows [tile, min(tile + 32, lim)) copied into kt / vt, the rest
 * of the 32 rows zeroed (the mma reads whole tiles: P = 0 times stale bits could be NaN). */
template <int HD>
__device__ __forceinline__ void lpc_attn1_stage(uint8_t *kt, uint8_t *vt, const uint16_t *kbase, const uint16_t *vbase, int tile,
                                                int lim) {
    enum { RB = lpc_attn1_row_bytes(HD), CH = HD / 8 };
    const int lane = threadIdx.x % 32;
    for (int i = lane; i < 32 * CH; i += 32) {
        const int r = i / CH, c = i % CH;
        if (tile + r < lim) {
            lpc_cp_async16(kt + r * RB + 16 * c, (const uint8_t *)(kbase + (size_t)(tile + r) * HD) + 16 * c);
            lpc_cp_async16(vt + r * RB + 16 * c, (const uint8_t *)(vbase + (size_t)(tile + r) * HD) + 16 * c);
        } else {
            *(uint4 *)(kt + r * RB + 16 * c) = make_uint4(0, 0, 0, 0);
            *(uint4 *)(vt + r * RB + 16 * c) = make_uint4(0, 0, 0, 0);
        }
    }
    lpc_cp_async_commit();
}

/* The token's own K row of kv head kvh (through kh's op; the F32 k result too when kh
 * asks) or V row, by one warp: F16 into row (shared memory) and the cache at `at`. */
template <int HD>
__device__ __forceinline__ void lpc_attn1_own_row(const lpc_attn1_args &p, int kvh, bool is_v, uint8_t *row, size_t at, float *hb) {
    const int lane = threadIdx.x % 32;
    const lpc_head_set &k = p.kh;
    if (!is_v)
        lpc_head_row(k.x + (size_t)kvh * HD, HD, k.w, k.eps, k.rope ? p.cs : NULL, p.sn, p.neox, hb,
                     k.back ? k.back + (size_t)kvh * HD : NULL, (uint16_t *)row);
    else
        lpc_head_row(p.v + (size_t)kvh * HD, HD, NULL, 0.0f, NULL, NULL, 0, hb, NULL, (uint16_t *)row);
    __syncwarp();
    uint16_t *cache = (uint16_t *)(is_v ? p.a.vc : p.a.kc) + at;
    for (int c = lane; c < HD / 8; c += 32) lpc_store16(cache + 8 * c, *(const uint4 *)(row + 16 * c));
}

/* A warp's running state over its tiles, in the mma layout with heads as columns (g =
 * lane / 4, t = lane % 4): for n-tile nb of 8 heads and e in {0, 1}, head 8 nb + 2t + e's
 * running max m and sum l (l: this lane's share, positions g and g + 8 of each 16), and
 * O^T[d][head] in o[d / 16][nb][e] (d % 16 = g) and o[d / 16][nb][2 + e] (d % 16 = g + 8). */
template <int HD, int NB>
struct lpc_attn1_acc {
    float m[NB][2], l[NB][2], o[HD / 16][NB][4];
};

/* One tile of 32 positions (the first nv valid) staged at kt / vt, for the heads in q16
 * (f16 rows of HD + 8, zero past G). */
template <int HD, int NB>
__device__ __forceinline__ void lpc_attn1_tile(const uint16_t *q16, const uint8_t *kt, const uint8_t *vt, int nv,
                                               float scale, lpc_attn1_acc<HD, NB> &st) {
    enum { RB = lpc_attn1_row_bytes(HD) };
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    float s[2][NB][4]; /* S^T: m-tile mt = positions 16 mt .. +15 */
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nb = 0; nb < NB; nb++)
#pragma unroll
            for (int i = 0; i < 4; i++) s[mt][nb][i] = 0.0f;
    /* S^T = K q^T; lane l's ldmatrix row: position l % 8 (+8 for blocks 1, 3), dims +8 for blocks 2, 3 */
    const uint8_t *krow = kt + (size_t)((lane & 7) + (lane >> 3 & 1) * 8) * RB + 16 * (lane >> 4);
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        uint32_t b[NB][2];
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
            const uint16_t *qrow = q16 + (8 * nb + g) * (HD + 8) + 16 * kk + 2 * t;
            b[nb][0] = lpc_h2_at(qrow);
            b[nb][1] = lpc_h2_at(qrow + 8);
        }
#pragma unroll
        for (int mt = 0; mt < 2; mt++) {
            uint32_t a[4];
            lpc_ldsm4<false>(a, krow + 16 * mt * RB + 32 * kk);
#pragma unroll
            for (int nb = 0; nb < NB; nb++) lpc_mma_f16(s[mt][nb], a, b[nb]);
        }
    }
    /* the online softmax per head: this lane's 4 positions, then the 8 lanes of its column */
#pragma unroll
    for (int nb = 0; nb < NB; nb++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float mx = -INFINITY;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float &v = s[i / 2][nb][2 * (i % 2) + e];
                v = 16 * (i / 2) + 8 * (i % 2) + g < nv ? v * scale : -INFINITY;
                mx = fmaxf(mx, v);
            }
#pragma unroll
            for (int mk = 4; mk < 32; mk <<= 1) mx = fmaxf(mx, __shfl_xor_sync(LPC_FULL_MASK, mx, mk));
            const float mn = fmaxf(st.m[nb][e], mx), alpha = __expf(st.m[nb][e] - mn);
            float sum = 0.0f;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float &v = s[i / 2][nb][2 * (i % 2) + e];
                v = __expf(v - mn); /* 0 past the end */
                sum += v;
            }
            st.m[nb][e] = mn;
            st.l[nb][e] = st.l[nb][e] * alpha + sum;
#pragma unroll
            for (int md = 0; md < HD / 16; md++) st.o[md][nb][e] *= alpha, st.o[md][nb][2 + e] *= alpha;
        }
    /* P^T as B fragments: the S^T fragment of (mt, nb) rows g / g + 8 transposed */
    uint32_t pb[2][NB][2];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int nb = 0; nb < NB; nb++) {
            pb[mt][nb][0] = lpc_movm_trans(lpc_pack_h2(s[mt][nb][0], s[mt][nb][1]));
            pb[mt][nb][1] = lpc_movm_trans(lpc_pack_h2(s[mt][nb][2], s[mt][nb][3]));
        }
    /* O^T += V^T P^T; lane l's ldmatrix row: position l % 8 (+8 for blocks 2, 3), dims +8 for blocks 1, 3 */
    const uint8_t *vrow = vt + (size_t)((lane & 7) + (lane >> 4) * 8) * RB + 16 * (lane >> 3 & 1);
#pragma unroll
    for (int md = 0; md < HD / 16; md++)
#pragma unroll
        for (int j = 0; j < 2; j++) {
            uint32_t a[4];
            lpc_ldsm4<true>(a, vrow + 16 * j * RB + 32 * md);
#pragma unroll
            for (int nb = 0; nb < NB; nb++) lpc_mma_f16(st.o[md][nb], a, pb[j][nb]);
        }
}

/* After the warps' tiles: each warp's sums rescaled to the block's max per head into
 * scratch (over the tiles: every warp is past them at the barrier), then the block's
 * partials of split sp (lpc_attn_put_part) and the fold. */
template <int HD, int NB>
__device__ __forceinline__ void lpc_attn1_finish(const lpc_attn_args &p, lpc_attn1_acc<HD, NB> &st, int kvh, int sp, int live,
                                                 float *scratch) {
    enum { H = 8 * NB, AS = HD + 4 }; /* scratch rows padded: the 4 t-lanes of a store hit different banks */
    __shared__ float red_m[4][H], red_l[4][H];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int nb = 0; nb < NB; nb++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float l = st.l[nb][e];
#pragma unroll
            for (int mk = 4; mk < 32; mk <<= 1) l += __shfl_xor_sync(LPC_FULL_MASK, l, mk);
            if (g == 0) red_m[warp][8 * nb + 2 * t + e] = st.m[nb][e], red_l[warp][8 * nb + 2 * t + e] = l;
        }
    __syncthreads();
#pragma unroll
    for (int nb = 0; nb < NB; nb++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int h = 8 * nb + 2 * t + e;
            const float M = fmaxf(fmaxf(red_m[0][h], red_m[1][h]), fmaxf(red_m[2][h], red_m[3][h]));
            const float f = st.m[nb][e] == -INFINITY ? 0.0f : __expf(st.m[nb][e] - M);
            float *row = scratch + ((size_t)warp * H + h) * AS;
#pragma unroll
            for (int md = 0; md < HD / 16; md++) row[16 * md + g] = st.o[md][nb][e] * f, row[16 * md + 8 + g] = st.o[md][nb][2 + e] * f;
        }
    __syncthreads();
    lpc_attn_put_part(p, HD, 0, kvh, sp, &red_m[0][0], &red_l[0][0], H, [&](int h, int d) {
        return scratch[(size_t)h * AS + d] + scratch[((size_t)H + h) * AS + d] + scratch[((size_t)2 * H + h) * AS + d] +
               scratch[((size_t)3 * H + h) * AS + d];
    });
    if (p.counters) lpc_attn_fold(p, HD, 0, kvh, live);
}

template <int HD, int NB>
__global__ void __launch_bounds__(128) lpc_attn1_kernel(lpc_attn1_args p) {
    enum { RB = lpc_attn1_row_bytes(HD), QS = HD + 8 };
    LPC_STAMP_BEGIN();
    lpc_launch_dependents();
    const lpc_attn_args &a = p.a;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, kvh = blockIdx.x, sp = blockIdx.y, G = a.G;
    const int pos = a.pos[0], slot = a.slot[0]; /* uploaded before the step's first kernel */
    int beg, end, live;
    if (!lpc_attn_range(a, pos, sp, beg, end, live)) return; /* block-uniform; never counted in */
    const uint16_t *kbase = a.kc + lpc_kv_index(slot, kvh, 0, a.n_kv, a.n_ctx, HD);
    const uint16_t *vbase = a.vc + lpc_kv_index(slot, kvh, 0, a.n_kv, a.n_ctx, HD);
    uint8_t *kt = lpc_dyn_smem() + (size_t)warp * 2 * 32 * RB, *vt = kt + 32 * RB;
    float *hb = (float *)(lpc_dyn_smem() + lpc_attn1_tiles_bytes(HD)) + warp * HD; /* lpc_head_row's scratch */
    uint16_t *q16 = (uint16_t *)(lpc_dyn_smem() + lpc_attn1_q_at(HD)); /* [8 NB][QS]: f16 q rows */
    uint8_t *own = (uint8_t *)(q16 + 16 * QS);                            /* the token's K row, then V row */
    const int tile0 = beg + 32 * warp;
    if (tile0 < end) lpc_attn1_stage<HD>(kt, vt, kbase, vbase, tile0, lpc_imin(end, pos)); /* rows before pos only */
    for (int i = threadIdx.x; i < (8 * NB - G) * QS; i += blockDim.x) q16[G * QS + i] = 0; /* no head: zero */
    LPC_STAMP_MARK(0);
    lpc_grid_wait(); /* q, k, v of this token are the previous kernels' */
    LPC_STAMP_MARK(1);
    /* the rows: G q heads, and in the block whose split holds pos the token's k and v (so
     * the warp whose tile holds pos does not do three rows in a row while the others wait) */
    const size_t at = lpc_kv_index(slot, kvh, pos, a.n_kv, a.n_ctx, HD);
    for (int r = warp; r < G + (pos < end ? 2 : 0); r += 4) {
        const lpc_head_set &q = p.qh;
        if (r < G)
            lpc_head_row(q.x + ((size_t)kvh * G + r) * HD, HD, q.w, q.eps, q.rope ? p.cs : NULL, p.sn, p.neox, hb, NULL, q16 + r * QS);
        else
            lpc_attn1_own_row<HD>(p, kvh, r > G, own + (size_t)(r - G) * RB, at, hb);
        __syncwarp();
    }
    __syncthreads();
    LPC_STAMP_MARK(2);
    lpc_attn1_acc<HD, NB> st;
#pragma unroll
    for (int nb = 0; nb < NB; nb++) {
        st.m[nb][0] = st.m[nb][1] = -INFINITY, st.l[nb][0] = st.l[nb][1] = 0.0f;
#pragma unroll
        for (int md = 0; md < HD / 16; md++)
#pragma unroll
            for (int i = 0; i < 4; i++) st.o[md][nb][i] = 0.0f;
    }
    for (int tile = tile0; tile < end; tile += 128) {
        if (tile != tile0) {
            __syncwarp(); /* every lane is done with the previous tile */
            lpc_attn1_stage<HD>(kt, vt, kbase, vbase, tile, lpc_imin(end, pos));
        }
        lpc_cp_async_wait_all();
        __syncwarp();
        if (pos >= tile && pos < tile + 32) { /* the token's own rows into this warp's tile */
            for (int c = lane; c < HD / 8; c += 32) {
                *(uint4 *)(kt + (pos - tile) * RB + 16 * c) = *(const uint4 *)(own + 16 * c);
                *(uint4 *)(vt + (pos - tile) * RB + 16 * c) = *(const uint4 *)(own + RB + 16 * c);
            }
            __syncwarp();
        }
        lpc_attn1_tile<HD, NB>(q16, kt, vt, end - tile, a.scale, st);
    }
    LPC_STAMP_MARK(3);
    lpc_attn1_finish<HD, NB>(a, st, kvh, sp, live, (float *)lpc_dyn_smem());
    LPC_STAMP_END(LPC_TAG_ATTN1, (uint32_t)(G * a.n_kv), (uint32_t)live);
}

template <int HD, int NB>
inline void lpc_attn1_go(lpc_stream st, const lpc_attn1_args &p, int splits) {
    const size_t smem = lpc_attn1_smem(HD);
    auto kern = lpc_attn1_kernel<HD, NB>;
    static unsigned opted = 0; /* per instantiation: devices done */
    lpc_smem_optin(kern, smem, opted);
    LPC_LAUNCH_PDL_SMEM(kern, dim3((unsigned)p.a.n_kv, (unsigned)splits), dim3(128), smem, st, p);
}

template <int HD>
inline void lpc_attn1_hd(lpc_stream st, const lpc_attn1_args &p, int splits) {
    if (p.a.G <= 8) lpc_attn1_go<HD, 1>(st, p, splits);
    else lpc_attn1_go<HD, 2>(st, p, splits);
}

/* One token's decode attention with its heads (head_dim in {32, 64, 128, 256}, G <= 16,
 * p.a.counters set: the merge is folded; sm_80+: mma.sync), launching blocks for splits
 * 0 .. splits-1 of p.a.nsplit (at least the live ones; the partials keep the nsplit
 * layout). */
inline void lpc_attention1(lpc_stream st, const lpc_attn1_args &p, int hd, int splits) {
    lpc_attn_hd(hd, [&](auto h) { lpc_attn1_hd<decltype(h)::value>(st, p, splits); });
}

/* The unfolded combine (LP_CUDA_FUSE=0): one block of hd threads per output row. */
__global__ void lpc_attn_combine_kernel(lpc_attn_args p, int hd) {
    const int pos = p.pos[blockIdx.x / p.n_head];
    lpc_attn_merge(p, hd, blockIdx.x, 1, lpc_attn_live_splits(p, pos - lpc_attn_first(p, pos) + 1));
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
    lpc_attn_hd(hd, [&](auto h) { lpc_attn_split_hd<decltype(h)::value>(st, p, n); });
    if (!p.counters) LPC_LAUNCH(lpc_attn_combine_kernel, dim3((unsigned)(n * p.n_head)), dim3((unsigned)hd), st, p, hd);
}

#endif
