/* lpc_mma.cuh — the batched matmul on int8 tensor cores: y[c][row] (+)= W[row] . x[c]
 * for quantized weights (any decoder of lpc_quant.cuh) times the int8 activation shadow
 * (lpc_q8), for batches wider than the GEMV's (LP_CUDA_MMA_MAX_N, 9..64 columns by
 * default; any count works, in tiles of 64 columns). It owns the per-type traits that
 * choose the fast paths, the kernel and its launcher (the mma.sync wrappers: lpc_tc.cuh).
 *
 * Arithmetic: the GEMV's, run by run. A 16-element run of weight row r (packed bytes w,
 * per-run scale and minv from T::unpack) times 16 activation codes q of column c (d of
 * their 32-group, xs = d * sum q) adds scale*d*sum(w*q) - minv*xs. mma.sync gives the
 * integer sums for a 16 x 8 (rows x columns) tile at once; the float scaling is done per
 * output. Two savings, chosen per type by lpc_mma_kind (the default is always right):
 *   - PAIRED: both runs of every 32-aligned group share scale and minv (Q4_K/Q5_K
 *     sub-blocks, Q8_0/Q4_0 blocks, MLX groups): one k32 mma and one scaling per 32
 *     elements instead of two (the activation's d is per 32 anyway);
 *   - ZERO: minv == ZERO * scale for every run (Q6_K 32, Q3_K 4, Q4_0 8, Q8_0 0): ZERO is
 *     subtracted from the bytes when staged, and the minv term disappears.
 * The scaling is the cost that matters (3-4 FP32 instructions per output per scaling
 * step, more issue slots than the mma itself), so its int->float conversion avoids I2F
 * (16 per clock per SM on sm_80/90, an eighth of the FFMA rate): each mma starts from
 * the bits of 1.5 * 2^23, so the int32 result read as a float is 1.5 * 2^23 + sum
 * exactly (|sum| <= 32 * 128 * 127 < 2^22), and one FADD leaves the sum.
 *
 * Tiles: a block of 8 warps owns 128 rows x 64 columns; each warp 16 rows x 64 columns
 * (8 mma n-tiles; n-tiles past the batch are skipped, so 9..64 columns cost what they
 * use). Per k-step of 128 elements the block decodes its 128 x 128 weights (T::load /
 * T::unpack, as the GEMV) into shared memory as int8 plus (scale, minv) per row and
 * 16 or 32 elements, and copies 64 x 128 activation codes plus (d, xs); the next step's
 * global loads are issued before the current step's mma, so they are in flight during it.
 * Shared memory 34-40 KB, 2 blocks per SM. Row tiles fewer than 2 per SM (the 4096-row
 * matrices of an 8B model: 32 tiles on 132 SMs) are split along K: each of S blocks
 * writes its partial tile, and the last to finish (atomic counter per tile, as the
 * attention merge) adds them in split order (deterministic) and stores y.
 *
 * Needs sm_80 (mma.sync with s8 at m16n8k16/k32): the backend does not choose this path
 * below; the PTX for older targets traps. */
#ifndef LPC_MMA_CUH
#define LPC_MMA_CUH

#include "lpc_gemv.cuh"
#include "lpc_tc.cuh"

/* ---- per-type traits (see the top): the default is right for every decoder ---- */

template <class T>
struct lpc_mma_kind {
    enum { ZERO = -1, PAIRED = 0 };
};
template <> struct lpc_mma_kind<lpc_q4_K> { enum { ZERO = -1, PAIRED = 1 }; };
template <> struct lpc_mma_kind<lpc_q5_K> { enum { ZERO = -1, PAIRED = 1 }; };
template <> struct lpc_mma_kind<lpc_q6_K> { enum { ZERO = 32, PAIRED = 0 }; };
template <> struct lpc_mma_kind<lpc_q3_K> { enum { ZERO = 4, PAIRED = 0 }; };
template <> struct lpc_mma_kind<lpc_q8_0> { enum { ZERO = 0, PAIRED = 1 }; };
template <> struct lpc_mma_kind<lpc_q4_0> { enum { ZERO = 8, PAIRED = 1 }; };
template <int BITS, int GROUP, int BF16>
struct lpc_mma_kind<lpc_mlx<BITS, GROUP, BF16>> {
    enum { ZERO = -1, PAIRED = 1 };
};

/* Bytes b - Z for bytes b < 128 (unsigned), Z <= 128: with each byte's top bit set first
 * no subtraction borrows across bytes, and flipping it back gives b - Z as a signed byte. */
LPC_HD uint32_t lpc_sub_bytes(uint32_t w, int z) { return ((w | 0x80808080u) - (uint32_t)z * 0x01010101u) ^ 0x80808080u; }

/* ---- the kernel ---- */

enum {
    LPC_MMA_BM = 128,     /* rows per block: 8 warps x 16 */
    LPC_MMA_BN = 64,      /* columns per block: 8 n-tiles of 8 */
    LPC_MMA_KT = 128,     /* elements per k-step (every block size divides it or is a multiple) */
    LPC_MMA_WARPS = 8,
    LPC_MMA_THREADS = LPC_MMA_WARPS * 32,
    LPC_MMA_NT = LPC_MMA_BN / 8,
    LPC_MMA_PAD = 16,     /* bytes after each 128-byte smem row: row stride 36 words, so the 8 rows x 4
                             words of a fragment load fall in 32 different banks */
    LPC_MMA_MAX_SPLIT = 16,
    LPC_MMA_MIN_STEPS = 4 /* k-steps per split at least */
};
static const float LPC_MMA_MAGIC = 12582912.0f; /* 1.5 * 2^23: its bits + an int32 sum |s| < 2^22 = the float magic + s */
static const int LPC_MMA_MAGIC_BITS = 0x4B400000;

/* Split-K: partials [tile][split][n-tile][thread] of float4, counters [tile] zero between
 * launches (the last block of a tile resets its counter). splits == 1: neither is used. */
typedef struct {
    float *part;
    unsigned *counters;
    int splits;
} lpc_mma_split;

/* Shapes derived from the decoder: SS = elements per scaling step (32 when PAIRED), SPK =
 * slices per row per k-step, SPT / XPT / DPT = weight slices / 16-byte activation chunks /
 * activation (d, xs) entries per thread per k-step. */
template <class T>
struct lpc_mma_shape {
    enum {
        SS = lpc_mma_kind<T>::PAIRED ? 32 : 16,
        NJ = LPC_MMA_KT / SS,
        SPK = LPC_MMA_KT / (16 * T::RUNS),
        SPT = LPC_MMA_BM * SPK / LPC_MMA_THREADS,
        XPT = LPC_MMA_BN * (LPC_MMA_KT / 16) / LPC_MMA_THREADS,
        DPT = (LPC_MMA_BN * NJ + LPC_MMA_THREADS - 1) / LPC_MMA_THREADS
    };
    static_assert(LPC_MMA_BM * SPK % LPC_MMA_THREADS == 0, "whole slices per thread");
    static_assert(T::BLOCK % LPC_MMA_KT == 0 || LPC_MMA_KT % T::BLOCK == 0, "k-steps of whole blocks or block parts");
};

/* The block's shared tiles for one k-step. */
template <int NJ>
struct lpc_mma_smem {
    uint4 w[LPC_MMA_BM][(LPC_MMA_KT + LPC_MMA_PAD) / 16];  /* weight bytes (minus ZERO), row-major */
    float2 wsc[LPC_MMA_BM][NJ];                            /* (scale, minv) per row and scaling step */
    uint4 x[LPC_MMA_BN][(LPC_MMA_KT + LPC_MMA_PAD) / 16];  /* activation codes, one row per column */
    float4 xds[NJ][LPC_MMA_BN / 2];                        /* (d, xs) of columns 2i, 2i + 1 per step */
};

/* What one thread stages: its weight slices (fixed rows, SPT of them) and activation chunks. */
template <class T>
struct lpc_mma_stage {
    typedef lpc_mma_shape<T> S;
    const uint8_t *a[S::SPT], *b[S::SPT]; /* row starts in plane A / B */
    typename T::raw w[S::SPT];
    uint4 xq[S::XPT];
    float2 xds[S::DPT];
};

/* Thread tid's rows (rows past the end repeat the last one; never stored). */
template <class T>
__device__ __forceinline__ void lpc_mma_rows(const lpc_gemv_args &p, int tid, lpc_mma_stage<T> &st) {
    typedef lpc_mma_shape<T> S;
    const int total = p.row0[p.nprob];
#pragma unroll
    for (int i = 0; i < S::SPT; i++) {
        const int row = (tid + LPC_MMA_THREADS * i) / S::SPK;
        lpc_row_pick r;
        lpc_pick_row(p, lpc_imin((int)blockIdx.x * LPC_MMA_BM + row, total - 1), r);
        st.a[i] = r.a + (size_t)r.row * p.bpr * T::A_BYTES;
        st.b[i] = r.b + (size_t)r.row * p.bpr * T::B_BYTES;
    }
}

/* Global loads of k-step ks's weights: consecutive threads take consecutive slices of a row. */
template <class T>
__device__ __forceinline__ void lpc_mma_load_w(const lpc_gemv_args &p, int tid, int ks, lpc_mma_stage<T> &st) {
    typedef lpc_mma_shape<T> S;
#pragma unroll
    for (int i = 0; i < S::SPT; i++) {
        const int gs = ks * S::SPK + (tid + LPC_MMA_THREADS * i) % S::SPK, blk = gs / T::SLICES;
        if (blk < p.bpr) T::load(st.a[i] + (size_t)blk * T::A_BYTES, st.b[i] + (size_t)blk * T::B_BYTES, gs % T::SLICES, st.w[i]);
    }
}

/* Decode the loaded slices into the shared tile: 16 bytes per run at its element offset in
 * the k-step, and (scale, minv) per scaling step (for PAIRED types by the run that starts
 * the 32-group; its partner's are the same). */
template <class T>
__device__ __forceinline__ void lpc_mma_store_w(const lpc_gemv_args &p, int tid, int ks, const lpc_mma_stage<T> &st,
                                                lpc_mma_smem<lpc_mma_shape<T>::NJ> &sm) {
    typedef lpc_mma_shape<T> S;
    enum { Z = lpc_mma_kind<T>::ZERO };
#pragma unroll
    for (int i = 0; i < S::SPT; i++) {
        const int sid = tid + LPC_MMA_THREADS * i, row = sid / S::SPK, gs = ks * S::SPK + sid % S::SPK, blk = gs / T::SLICES;
        if (blk >= p.bpr) continue;
        lpc_slice<T::RUNS> sl;
        T::unpack(st.w[i], gs % T::SLICES, sl);
#pragma unroll
        for (int r = 0; r < T::RUNS; r++) {
            const int e = blk * T::BLOCK + sl.off[r] - ks * LPC_MMA_KT; /* in [0, KT): the slice windows */
            uint4 v = make_uint4(sl.v[r][0], sl.v[r][1], sl.v[r][2], sl.v[r][3]);
            if (Z > 0) v = make_uint4(lpc_sub_bytes(v.x, Z), lpc_sub_bytes(v.y, Z), lpc_sub_bytes(v.z, Z), lpc_sub_bytes(v.w, Z));
            sm.w[row][e / 16] = v;
            if (e % S::SS == 0) sm.wsc[row][e / S::SS] = float2{sl.scale[r], sl.minv[r]};
        }
    }
}

/* Column tid's chunk of the activations (columns past the batch repeat the last one). */
__device__ __forceinline__ size_t lpc_mma_xcol(const lpc_gemv_args &p, int col) {
    return (size_t)lpc_imin((int)blockIdx.y * LPC_MMA_BN + col, p.ncols - 1) * p.K;
}

template <class T>
__device__ __forceinline__ void lpc_mma_load_x(const lpc_gemv_args &p, int tid, int ks, lpc_mma_stage<T> &st) {
    typedef lpc_mma_shape<T> S;
    enum { CPC = LPC_MMA_KT / 16 }; /* chunks per column */
    const int k0 = ks * LPC_MMA_KT;
#pragma unroll
    for (int i = 0; i < S::XPT; i++) {
        const int cid = tid + LPC_MMA_THREADS * i, k = k0 + 16 * (cid % CPC);
        if (k < p.K) st.xq[i] = lpc_load16((const uint8_t *)(p.xq.q + lpc_mma_xcol(p, cid / CPC) + k));
    }
#pragma unroll
    for (int i = 0; i < S::DPT; i++) {
        const int eid = tid + LPC_MMA_THREADS * i, k = k0 + S::SS * (eid % S::NJ);
        if (eid >= LPC_MMA_BN * S::NJ || k >= p.K) continue;
        const size_t e = lpc_mma_xcol(p, eid / S::NJ) + k;
        float xs = 0.0f; /* ZERO types have no minv term */
        if (lpc_mma_kind<T>::ZERO < 0) xs = __ldg(p.xq.s + e / 16) + (S::SS == 32 ? __ldg(p.xq.s + e / 16 + 1) : 0.0f);
        st.xds[i] = float2{__ldg(p.xq.d + e / 32), xs};
    }
}

template <class T>
__device__ __forceinline__ void lpc_mma_store_x(const lpc_gemv_args &p, int tid, int ks, const lpc_mma_stage<T> &st,
                                                lpc_mma_smem<lpc_mma_shape<T>::NJ> &sm) {
    typedef lpc_mma_shape<T> S;
    enum { CPC = LPC_MMA_KT / 16 };
#pragma unroll
    for (int i = 0; i < S::XPT; i++) {
        const int cid = tid + LPC_MMA_THREADS * i;
        if (ks * LPC_MMA_KT + 16 * (cid % CPC) < p.K) sm.x[cid / CPC][cid % CPC] = st.xq[i];
    }
#pragma unroll
    for (int i = 0; i < S::DPT; i++) {
        const int eid = tid + LPC_MMA_THREADS * i;
        if (eid < LPC_MMA_BN * S::NJ) ((float2 *)sm.xds[eid % S::NJ])[eid / S::NJ] = st.xds[i];
    }
}

__device__ __forceinline__ uint32_t lpc_mma_lds(const uint4 *row, int byte) { return ((const uint32_t *)row)[byte / 4]; }

/* One k-step of a warp's 16 rows x (8 * ntiles) columns: per scaling step, the A
 * fragment once, then per n-tile the B fragment, one mma from the magic start, and the
 * scaling of its four outputs (rows g, g + 8; columns 2t, 2t + 1 of the n-tile). */
template <class T>
__device__ __forceinline__ void lpc_mma_step(const lpc_mma_smem<lpc_mma_shape<T>::NJ> &sm, int kmax, int ntiles, int warp,
                                             int lane, float (&acc)[LPC_MMA_NT][4]) {
    typedef lpc_mma_shape<T> S;
    enum { H = S::SS / 16 };
    const int g = lane / 4, t = lane % 4, r0 = 16 * warp + g;
#pragma unroll
    for (int j = 0; j < S::NJ; j++) {
        if (j * S::SS >= kmax) break; /* the K tail (block-uniform) */
        uint32_t a[2 * H];
#pragma unroll
        for (int h = 0; h < H; h++) {
            a[2 * h] = lpc_mma_lds(sm.w[r0], j * S::SS + 16 * h + 4 * t);
            a[2 * h + 1] = lpc_mma_lds(sm.w[r0 + 8], j * S::SS + 16 * h + 4 * t);
        }
        const float2 w0 = sm.wsc[r0][j], w1 = sm.wsc[r0 + 8][j];
#pragma unroll
        for (int nt = 0; nt < LPC_MMA_NT; nt++) {
            if (nt >= ntiles) break; /* warp-uniform */
            uint32_t b[H];
#pragma unroll
            for (int h = 0; h < H; h++) b[h] = lpc_mma_lds(sm.x[8 * nt + g], j * S::SS + 16 * h + 4 * t);
            int c[4] = {LPC_MMA_MAGIC_BITS, LPC_MMA_MAGIC_BITS, LPC_MMA_MAGIC_BITS, LPC_MMA_MAGIC_BITS};
            lpc_mma_s8(c, a, b);
            const float4 x = sm.xds[j][4 * nt + t]; /* d, xs of column 2t; d, xs of 2t + 1 */
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float2 w = i < 2 ? w0 : w1;
                const float xd = i % 2 ? x.z : x.x, xs = i % 2 ? x.w : x.y;
                acc[nt][i] = fmaf(__int_as_float(c[i]) - LPC_MMA_MAGIC, w.x * xd, acc[nt][i]);
                if (lpc_mma_kind<T>::ZERO < 0) acc[nt][i] = fmaf(-w.y, xs, acc[nt][i]);
            }
        }
    }
}

/* y for the thread's outputs; with splits, only by the last block of the tile, which sums
 * the partials in split order (any block may be last: the sum must not depend on it). */
__device__ __forceinline__ void lpc_mma_store(const lpc_gemv_args &p, const lpc_mma_split &sp, int ntiles, int tid,
                                              float (&acc)[LPC_MMA_NT][4]) {
    if (sp.splits > 1) {
        const size_t tile = (size_t)blockIdx.y * gridDim.x + blockIdx.x;
        float4 *part = (float4 *)sp.part + tile * sp.splits * LPC_MMA_NT * LPC_MMA_THREADS;
#pragma unroll
        for (int nt = 0; nt < LPC_MMA_NT; nt++)
            if (nt < ntiles)
                part[((size_t)blockIdx.z * LPC_MMA_NT + nt) * LPC_MMA_THREADS + tid] =
                    float4{acc[nt][0], acc[nt][1], acc[nt][2], acc[nt][3]};
        if (!lpc_last_block(sp.counters + tile, (unsigned)sp.splits)) return;
#pragma unroll
        for (int nt = 0; nt < LPC_MMA_NT; nt++) {
            if (nt >= ntiles) break;
            float4 s = __ldcg(part + nt * LPC_MMA_THREADS + tid);
            for (int k = 1; k < sp.splits; k++) {
                const float4 v = __ldcg(part + ((size_t)k * LPC_MMA_NT + nt) * LPC_MMA_THREADS + tid);
                s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
            }
            acc[nt][0] = s.x, acc[nt][1] = s.y, acc[nt][2] = s.z, acc[nt][3] = s.w;
        }
    }
    const int lane = tid % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        lpc_row_pick r;
        if (!lpc_pick_row(p, (int)blockIdx.x * LPC_MMA_BM + 16 * (tid / 32) + g + 8 * half, r)) continue;
#pragma unroll
        for (int nt = 0; nt < LPC_MMA_NT; nt++)
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int col = (int)blockIdx.y * LPC_MMA_BN + 8 * nt + 2 * t + i;
                if (nt >= ntiles || col >= p.ncols) continue;
                float *dst = r.y + (size_t)col * r.M + r.row;
                *dst = r.acc ? *dst + acc[nt][2 * half + i] : acc[nt][2 * half + i];
            }
    }
}

template <class T>
__device__ __forceinline__ void lpc_mma_body(const lpc_gemv_args &p, const lpc_mma_split &sp) {
    typedef lpc_mma_shape<T> S;
    __shared__ lpc_mma_smem<S::NJ> sm;
    lpc_launch_dependents();
    const int tid = threadIdx.x, steps = (p.K + LPC_MMA_KT - 1) / LPC_MMA_KT;
    const int ks0 = (int)blockIdx.z * steps / sp.splits, ks1 = ((int)blockIdx.z + 1) * steps / sp.splits;
    const int ntiles = lpc_imin(LPC_MMA_NT, (p.ncols - (int)blockIdx.y * LPC_MMA_BN + 7) / 8);
    lpc_mma_stage<T> st;
    lpc_mma_rows<T>(p, tid, st);
    if (ks0 < ks1) lpc_mma_load_w<T>(p, tid, ks0, st);
    lpc_grid_wait(); /* launched PDL: the weights above are in flight; x is the previous kernel's */
    if (ks0 < ks1) lpc_mma_load_x<T>(p, tid, ks0, st);
    float acc[LPC_MMA_NT][4];
#pragma unroll
    for (int nt = 0; nt < LPC_MMA_NT; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    for (int ks = ks0; ks < ks1; ks++) {
        __syncthreads(); /* the previous step's mma are done with the tiles */
        lpc_mma_store_w<T>(p, tid, ks, st, sm);
        lpc_mma_store_x<T>(p, tid, ks, st, sm);
        __syncthreads();
        if (ks + 1 < ks1) {
            lpc_mma_load_w<T>(p, tid, ks + 1, st);
            lpc_mma_load_x<T>(p, tid, ks + 1, st);
        }
        lpc_mma_step<T>(sm, lpc_imin(LPC_MMA_KT, p.K - ks * LPC_MMA_KT), ntiles, tid / 32, tid % 32, acc);
    }
    lpc_mma_store(p, sp, ntiles, tid, acc);
}

/* grid (row tiles, column tiles, splits), LPC_MMA_THREADS threads. The body is compiled
 * for sm_80+ only (the backend never launches it below): the compute_75 PTX of the
 * build would be 28 kernels of dead code. */
template <class T>
__global__ void __launch_bounds__(LPC_MMA_THREADS, 2) lpc_mma_q(lpc_gemv_args p, lpc_mma_split sp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    __trap();
#else
    lpc_mma_body<T>(p, sp);
#endif
}

/* ---- launch ---- */

inline int lpc_mma_tiles(int rows, int ncols) {
    return (rows + LPC_MMA_BM - 1) / LPC_MMA_BM * ((ncols + LPC_MMA_BN - 1) / LPC_MMA_BN);
}

/* Splits along K so that about two blocks per SM run (the residency the kernel is built
 * for), each over at least LPC_MMA_MIN_STEPS k-steps. */
inline int lpc_mma_splits(int rows, int ncols, int K, int n_sm) {
    const int tiles = lpc_mma_tiles(rows, ncols), steps = (K + LPC_MMA_KT - 1) / LPC_MMA_KT;
    int s = (2 * n_sm + tiles - 1) / tiles;
    s = lpc_imin(s, lpc_imin(steps / LPC_MMA_MIN_STEPS, LPC_MMA_MAX_SPLIT));
    return s < 1 ? 1 : s;
}

/* Floats of split-K partials for `tiles` tiles in `splits` (0 without splits). */
inline size_t lpc_mma_part_floats(int tiles, int splits) {
    return splits > 1 ? (size_t)tiles * splits * LPC_MMA_NT * LPC_MMA_THREADS * 4 : 0;
}

struct lpc_mma_launch {
    lpc_stream st;
    lpc_gemv_args p;
    lpc_mma_split sp;
    template <class T>
    void run() {
        const dim3 grid((unsigned)((p.row0[p.nprob] + LPC_MMA_BM - 1) / LPC_MMA_BM),
                        (unsigned)((p.ncols + LPC_MMA_BN - 1) / LPC_MMA_BN), (unsigned)sp.splits);
        auto kern = lpc_mma_q<T>;
        LPC_LAUNCH_PDL(kern, grid, dim3(LPC_MMA_THREADS), st, p, sp);
    }
};

/* y (+)= W . x for the quantized weight type `type` (problems as for lpc_gemv, p.xq the
 * shadow of p.ncols columns; no expert mode). sp.splits > 1 needs sp.part
 * (lpc_mma_part_floats of lpc_mma_tiles(total rows, ncols)) and that many zeroed counters.
 * False for a type without a decoder, expert mode, or what only the batch-1 GEMV does
 * (an RMSNorm made while staging: lpc_gemv_xnorm). */
inline bool lpc_mma(lpc_stream st, int type, const lpc_gemv_args &p, const lpc_mma_split &sp) {
    if (p.sel || p.K % 32 || p.ncols < 1 || sp.splits < 1 || p.xn.x) return false;
    lpc_mma_launch l = {st, p, sp};
    return lpc_dispatch_quant(type, l);
}

#endif
