/* lpc_quant.cuh — the GPU's view of quantized block types (GGUF's, and the runtime's
 * MLX affine blocks, see the MLX section): how each type is split into two planes at
 * upload, and how one thread decodes one "slice" of a block.
 *
 * Planes. A GGUF block mixes quants with scales and is often not 16-byte sized
 * (Q6_K 210 B, Q8_0 34 B), which rules out 16-byte loads. At upload each block
 * is cut into plane A (the quant bytes, a multiple of 16 bytes for GGUF types) and
 * plane B (the rest: d, dmin, scales), each plane contiguous over all blocks of the weight.
 * No byte is re-encoded and nothing is added except padding of Q3_K's 14-byte
 * plane B to 16 (MLX scales may be narrowed to bf16 where that is exact: see there).
 *
 * Slices. A slice is the part of a block one thread handles in one step: one
 * 16-byte load from plane A (two or three for Q6_K/Q8_0) giving RUNS runs of 16
 * consecutive elements as packed signed bytes, with per-run scale and offset:
 *     value[off + i] = scale * byte_i - minv            (i = 0..15)
 * The GEMV multiplies the bytes with int8 activations (__dp4a); dequantization
 * (embedding rows, F16 tiles for cuBLAS) writes the values. One decoder per type,
 * shared by both, checked on the host against the project's to_float. */
#ifndef LPC_QUANT_CUH
#define LPC_QUANT_CUH

#include <string.h>

#include "lpc_port.cuh"

/* How a block splits into planes (host-side repack), one row per type. */
typedef struct {
    int type;        /* kernel type: the lp_type id, or an LPC-only variant (MLX bf16 scales) */
    int src_type;    /* lp_type of the host blocks it is cut from */
    int block;       /* elements per block */
    int raw_bytes;   /* GGUF block size */
    int a_off, a_len; /* plane A: bytes [a_off, a_off + a_len) of the block */
    int b_off, b_len; /* plane B: bytes [b_off, b_off + b_len) */
    int b_stride;    /* plane B bytes per block (>= b_len, padded for aligned loads; b_len / 2 if b_bf16) */
    int b_bf16;      /* plane B keeps only the high (bfloat16) half of each f32 of [b_off, b_off + b_len) */
} lpc_plane_split;

enum { LPC_F32 = 0, LPC_F16 = 1, LPC_Q4_0 = 2, LPC_Q8_0 = 8, LPC_Q2_K = 10, LPC_Q3_K = 11, LPC_Q4_K = 12,
       LPC_Q5_K = 13, LPC_Q6_K = 14, LPC_BF16 = 30 };

/* Byte i (0..11) of three little-endian words, without an indexed local array. */
LPC_HD unsigned lpc_byte3(uint32_t w0, uint32_t w1, uint32_t w2, int i) {
    const uint32_t w = i < 4 ? w0 : i < 8 ? w1 : w2;
    return (w >> (8 * (i & 3))) & 0xffu;
}
LPC_HD unsigned lpc_byte2(uint32_t w0, uint32_t w1, int i) { return ((i < 4 ? w0 : w1) >> (8 * (i & 3))) & 0xffu; }

LPC_HD uint4 lpc_load16(const uint8_t *p) {
#ifdef __CUDA_ARCH__
    return __ldg((const uint4 *)p);
#else
    uint4 v;
    memcpy(&v, p, 16);
    return v;
#endif
}
LPC_HD void lpc_store16(void *p, uint4 v) {
#ifdef __CUDA_ARCH__
    *(uint4 *)p = v;
#else
    memcpy(p, &v, 16);
#endif
}
LPC_HD uint2 lpc_load8(const uint8_t *p) {
#ifdef __CUDA_ARCH__
    return __ldg((const uint2 *)p);
#else
    uint2 v;
    memcpy(&v, p, 8);
    return v;
#endif
}
LPC_HD uint32_t lpc_load4(const uint8_t *p) {
#ifdef __CUDA_ARCH__
    return __ldg((const uint32_t *)p);
#else
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
#endif
}
LPC_HD float lpc_load_h(const uint8_t *p) {
#ifdef __CUDA_ARCH__
    return lpc_h2f(__ldg((const uint16_t *)p));
#else
    uint16_t v;
    memcpy(&v, p, 2);
    return lpc_h2f_soft(v);
#endif
}
LPC_HD float lpc_half_lo(uint32_t w) {
#ifdef __CUDA_ARCH__
    return lpc_h2f((uint16_t)(w & 0xffffu));
#else
    return lpc_h2f_soft((uint16_t)(w & 0xffffu));
#endif
}
LPC_HD float lpc_half_hi(uint32_t w) { return lpc_half_lo(w >> 16); }

template <int R>
struct lpc_slice {
    uint32_t v[R][4]; /* packed signed bytes of run r */
    float scale[R], minv[R];
    int off[R];       /* element offset of run r inside the block */
};

/* Every decoder is two steps: load() issues the slice's global loads into a `raw`
 * register struct, unpack() turns it into runs. Kernels that want the loads in
 * flight early (the batch-1 GEMV issues its first weights before staging the
 * activations) call them apart; decode() is both at once. */
template <class D>
struct lpc_decoder {
    template <int RUNS>
    LPC_HD static void decode(const uint8_t *A, const uint8_t *B, int s, lpc_slice<RUNS> &o) {
        typename D::raw w;
        D::load(A, B, s, w);
        D::unpack(w, s, o);
    }
};

#define LPC_LO4 0x0F0F0F0Fu

/* Q4_K / Q5_K 6-bit scale and min of sub-block j (ggml get_scale_min_k4). */
LPC_HD void lpc_scale_min_k4(uint32_t w0, uint32_t w1, uint32_t w2, int j, int *sc, int *mn) {
    if (j < 4) {
        *sc = (int)(lpc_byte3(w0, w1, w2, j) & 63);
        *mn = (int)(lpc_byte3(w0, w1, w2, j + 4) & 63);
    } else {
        *sc = (int)((lpc_byte3(w0, w1, w2, j + 4) & 0xf) | ((lpc_byte3(w0, w1, w2, j - 4) >> 6) << 4));
        *mn = (int)((lpc_byte3(w0, w1, w2, j + 4) >> 4) | ((lpc_byte3(w0, w1, w2, j) >> 6) << 4));
    }
}

/* Q4_K: slice s = 16 bytes of qs; low nibbles are sub-block 2p, high 2p+1 (p = s/2). */
struct lpc_q4_K : lpc_decoder<lpc_q4_K> {
    enum { TYPE = LPC_Q4_K, BLOCK = 256, SLICES = 8, RUNS = 2, A_BYTES = 128, B_BYTES = 16 };
    struct raw {
        uint4 h, q;
    };
    LPC_HD static void load(const uint8_t *A, const uint8_t *B, int s, raw &w) {
        w.h = lpc_load16(B);
        w.q = lpc_load16(A + 16 * s);
    }
    LPC_HD static void unpack(const raw &w, int s, lpc_slice<2> &o) {
        const uint4 h = w.h, q = w.q;
        const float d = lpc_half_lo(h.x), dmin = lpc_half_hi(h.x);
        const int p = s >> 1, hl = s & 1;
        const uint32_t qw[4] = {q.x, q.y, q.z, q.w};
        #pragma unroll
        for (int r = 0; r < 2; r++) {
            int sc, mn;
            lpc_scale_min_k4(h.y, h.z, h.w, 2 * p + r, &sc, &mn);
            o.scale[r] = d * (float)sc;
            o.minv[r] = dmin * (float)mn;
            o.off[r] = 64 * p + 32 * r + 16 * hl;
        }
        #pragma unroll
        for (int k = 0; k < 4; k++) {
            o.v[0][k] = qw[k] & LPC_LO4;
            o.v[1][k] = (qw[k] >> 4) & LPC_LO4;
        }
    }
};

/* Q5_K: Q4_K plus a fifth bit from qh[l], bit (sub-block index). Plane A = qh | qs. */
struct lpc_q5_K : lpc_decoder<lpc_q5_K> {
    enum { TYPE = LPC_Q5_K, BLOCK = 256, SLICES = 8, RUNS = 2, A_BYTES = 160, B_BYTES = 16 };
    struct raw {
        uint4 h, q, qh;
    };
    LPC_HD static void load(const uint8_t *A, const uint8_t *B, int s, raw &w) {
        w.h = lpc_load16(B);
        w.q = lpc_load16(A + 32 + 16 * s);
        w.qh = lpc_load16(A + 16 * (s & 1));
    }
    LPC_HD static void unpack(const raw &w, int s, lpc_slice<2> &o) {
        const uint4 h = w.h, q = w.q, qh = w.qh;
        const int p = s >> 1, hl = s & 1;
        const float d = lpc_half_lo(h.x), dmin = lpc_half_hi(h.x);
        const uint32_t qw[4] = {q.x, q.y, q.z, q.w}, hw[4] = {qh.x, qh.y, qh.z, qh.w};
        #pragma unroll
        for (int r = 0; r < 2; r++) {
            int sc, mn;
            lpc_scale_min_k4(h.y, h.z, h.w, 2 * p + r, &sc, &mn);
            o.scale[r] = d * (float)sc;
            o.minv[r] = dmin * (float)mn;
            o.off[r] = 64 * p + 32 * r + 16 * hl;
        }
        #pragma unroll
        for (int k = 0; k < 4; k++) {
            o.v[0][k] = (qw[k] & LPC_LO4) | (((hw[k] >> (2 * p)) & 0x01010101u) << 4);
            o.v[1][k] = ((qw[k] >> 4) & LPC_LO4) | (((hw[k] >> (2 * p + 1)) & 0x01010101u) << 4);
        }
    }
};

/* Q6_K: slice (n, lg) = half n of the block, l in [16lg, 16lg+16), all four quarters:
 * 48 bytes (ql low, ql high, qh) for 64 elements; 16-element scales. Plane A =
 * ql | qh | scales (208 B), plane B = d. */
struct lpc_q6_K : lpc_decoder<lpc_q6_K> {
    enum { TYPE = LPC_Q6_K, BLOCK = 256, SLICES = 4, RUNS = 4, A_BYTES = 208, B_BYTES = 2 };
    struct raw {
        uint4 l0, l1, qh;
        uint2 sc;
        float d;
    };
    LPC_HD static void load(const uint8_t *A, const uint8_t *B, int s, raw &w) {
        const int n = s >> 1, lg = s & 1;
        w.l0 = lpc_load16(A + 64 * n + 16 * lg);
        w.l1 = lpc_load16(A + 64 * n + 32 + 16 * lg);
        w.qh = lpc_load16(A + 128 + 32 * n + 16 * lg);
        w.sc = lpc_load8(A + 192 + 8 * n);
        w.d = lpc_load_h(B);
    }
    LPC_HD static void unpack(const raw &w, int s, lpc_slice<4> &o) {
        const int n = s >> 1, lg = s & 1;
        const uint4 l0 = w.l0, l1 = w.l1, qh = w.qh;
        const uint2 sc = w.sc;
        const float d = w.d;
        const uint32_t a[4] = {l0.x, l0.y, l0.z, l0.w}, b[4] = {l1.x, l1.y, l1.z, l1.w},
                       hw[4] = {qh.x, qh.y, qh.z, qh.w};
        #pragma unroll
        for (int r = 0; r < 4; r++) {
            const int scale = (int)(int8_t)lpc_byte2(sc.x, sc.y, lg + 2 * r);
            o.scale[r] = d * (float)scale;
            o.minv[r] = 32.0f * o.scale[r];
            o.off[r] = 128 * n + 32 * r + 16 * lg;
            #pragma unroll
            for (int k = 0; k < 4; k++) {
                const uint32_t src = (r & 1) ? b[k] : a[k];
                const uint32_t nib = (r < 2 ? src : src >> 4) & LPC_LO4;
                o.v[r][k] = nib | (((hw[k] >> (2 * r)) & 0x03030303u) << 4);
            }
        }
    }
};

/* Q3_K: 2 low bits from qs, the third from hmask; value = d * scale * (v - 4). Plane
 * A = hmask | qs (96 B), plane B = scales | d padded to 16. */
struct lpc_q3_K : lpc_decoder<lpc_q3_K> {
    enum { TYPE = LPC_Q3_K, BLOCK = 256, SLICES = 4, RUNS = 4, A_BYTES = 96, B_BYTES = 16 };
    struct raw {
        uint4 q, hm, sb;
    };
    LPC_HD static void load(const uint8_t *A, const uint8_t *B, int s, raw &w) {
        const int n = s >> 1, lg = s & 1;
        w.q = lpc_load16(A + 32 + 32 * n + 16 * lg);
        w.hm = lpc_load16(A + 16 * lg);
        w.sb = lpc_load16(B);
    }
    LPC_HD static void unpack(const raw &w, int s, lpc_slice<4> &o) {
        const int n = s >> 1, lg = s & 1;
        const uint4 q = w.q, hm = w.hm, sb = w.sb;
        const float d = lpc_half_lo(sb.w);
        const uint32_t qw[4] = {q.x, q.y, q.z, q.w}, hw[4] = {hm.x, hm.y, hm.z, hm.w};
        #pragma unroll
        for (int r = 0; r < 4; r++) {
            const int j = 8 * n + 2 * r + lg;
            const unsigned lo4 = j < 8 ? lpc_byte3(sb.x, sb.y, sb.z, j) & 0xf : lpc_byte3(sb.x, sb.y, sb.z, j - 8) >> 4;
            const unsigned hi2 = (lpc_byte3(sb.x, sb.y, sb.z, 8 + j % 4) >> (2 * (j / 4))) & 3;
            o.scale[r] = d * (float)((int)(lo4 | hi2 << 4) - 32);
            o.minv[r] = 4.0f * o.scale[r];
            o.off[r] = 128 * n + 32 * r + 16 * lg;
            #pragma unroll
            for (int k = 0; k < 4; k++)
                o.v[r][k] = ((qw[k] >> (2 * r)) & 0x03030303u) | (((hw[k] >> (4 * n + r)) & 0x01010101u) << 2);
        }
    }
};

/* Q2_K: 2-bit codes, 4-bit scale and min per 16 elements. Plane A = scales | qs (80 B),
 * plane B = d, dmin. */
struct lpc_q2_K : lpc_decoder<lpc_q2_K> {
    enum { TYPE = LPC_Q2_K, BLOCK = 256, SLICES = 4, RUNS = 4, A_BYTES = 80, B_BYTES = 4 };
    struct raw {
        uint4 q;
        uint2 sc;
        uint32_t dd;
    };
    LPC_HD static void load(const uint8_t *A, const uint8_t *B, int s, raw &w) {
        const int n = s >> 1, lg = s & 1;
        w.q = lpc_load16(A + 16 + 32 * n + 16 * lg);
        w.sc = lpc_load8(A + 8 * n);
        w.dd = lpc_load4(B);
    }
    LPC_HD static void unpack(const raw &w, int s, lpc_slice<4> &o) {
        const int n = s >> 1, lg = s & 1;
        const uint4 q = w.q;
        const uint2 sc = w.sc;
        const uint32_t dd = w.dd;
        const float d = lpc_half_lo(dd), dmin = lpc_half_hi(dd);
        const uint32_t qw[4] = {q.x, q.y, q.z, q.w};
        #pragma unroll
        for (int r = 0; r < 4; r++) {
            const unsigned b = lpc_byte2(sc.x, sc.y, 2 * r + lg);
            o.scale[r] = d * (float)(b & 0xf);
            o.minv[r] = dmin * (float)(b >> 4);
            o.off[r] = 128 * n + 32 * r + 16 * lg;
            #pragma unroll
            for (int k = 0; k < 4; k++) o.v[r][k] = (qw[k] >> (2 * r)) & 0x03030303u;
        }
    }
};

/* Q8_0: one slice = the whole 32-element block. Plane A = qs, plane B = d. */
struct lpc_q8_0 : lpc_decoder<lpc_q8_0> {
    enum { TYPE = LPC_Q8_0, BLOCK = 32, SLICES = 1, RUNS = 2, A_BYTES = 32, B_BYTES = 2 };
    struct raw {
        uint4 q0, q1;
        float d;
    };
    LPC_HD static void load(const uint8_t *A, const uint8_t *B, int s, raw &w) {
        (void)s;
        w.q0 = lpc_load16(A);
        w.q1 = lpc_load16(A + 16);
        w.d = lpc_load_h(B);
    }
    LPC_HD static void unpack(const raw &w, int s, lpc_slice<2> &o) {
        (void)s;
        const uint4 q0 = w.q0, q1 = w.q1;
        const float d = w.d;
        const uint32_t a[4] = {q0.x, q0.y, q0.z, q0.w}, b[4] = {q1.x, q1.y, q1.z, q1.w};
        #pragma unroll
        for (int r = 0; r < 2; r++) {
            o.scale[r] = d;
            o.minv[r] = 0.0f;
            o.off[r] = 16 * r;
        }
        #pragma unroll
        for (int k = 0; k < 4; k++) {
            o.v[0][k] = a[k];
            o.v[1][k] = b[k];
        }
    }
};

/* Q4_0: element j in the low nibble of qs[j], j+16 in the high; value = d * (q - 8). */
struct lpc_q4_0 : lpc_decoder<lpc_q4_0> {
    enum { TYPE = LPC_Q4_0, BLOCK = 32, SLICES = 1, RUNS = 2, A_BYTES = 16, B_BYTES = 2 };
    struct raw {
        uint4 q;
        float d;
    };
    LPC_HD static void load(const uint8_t *A, const uint8_t *B, int s, raw &w) {
        (void)s;
        w.q = lpc_load16(A);
        w.d = lpc_load_h(B);
    }
    LPC_HD static void unpack(const raw &w, int s, lpc_slice<2> &o) {
        (void)s;
        const uint4 q = w.q;
        const float d = w.d;
        const uint32_t qw[4] = {q.x, q.y, q.z, q.w};
        #pragma unroll
        for (int r = 0; r < 2; r++) {
            o.scale[r] = d;
            o.minv[r] = 8.0f * d;
            o.off[r] = 16 * r;
        }
        #pragma unroll
        for (int k = 0; k < 4; k++) {
            o.v[0][k] = qw[k] & LPC_LO4;
            o.v[1][k] = (qw[k] >> 4) & LPC_LO4;
        }
    }
};

/* ---- MLX affine (mlx_types.h): w = scale * q + bias per group of GROUP elements ----
 *
 * The runtime block is f32 scale | f32 bias | GROUP*BITS/8 code bytes (MLX's row bit
 * stream unchanged: element i of the group at stream bit i*BITS). Plane A = the code
 * bytes, plane B = scale | bias, so value = scale * q - minv with minv = -bias.
 *
 * Slice = 32 elements = BITS code words, whatever the width: 32 codes of BITS bits
 * end exactly on a word boundary, every group is a whole number of slices, and no
 * plane needs padding (3-bit g32 = 12 code bytes would waste a third of plane A if
 * padded to 16). The price is the load width: slice s starts at byte 4*BITS*s, so
 * 4 and 8 bits take 16-byte loads, 2 and 6 bits 8-byte loads and 3 and 5 bits 4-byte
 * loads (lanes still read consecutive bytes, so a warp's loads stay coalesced; only
 * the L1 sees more requests on the 3/5-bit widths, which are not the fast path).
 *
 * 8 bits: codes 0..255 do not fit dp4a's signed bytes. The decoder flips the top bit
 * (byte = q - 128) and folds the offset into minv = -(bias + 128 * scale): exact in
 * the GEMV's integer sums, and in dequantization whenever bias + 128*scale is exact
 * in f32 (always for the bf16/f16 scales and biases of MLX files, up to 2^12 apart
 * in magnitude); otherwise it is within one rounding of scale * q + bias. */
enum { LPC_MLX_FIRST = 64 }; /* LP_TYPE_MLX_FIRST (checked against mlx_types.c by test_cuda_emu) */
enum { LPC_MLX_BF16_FIRST = 128 }; /* kernel-only ids of the bf16-scale variants, past every lp_type */

/* lp_mlx_type(bits, group): widths 2,3,4,5,6,8 x groups 32,64,128, group fastest. */
constexpr int lpc_mlx_type_id(int bits, int group) {
    return LPC_MLX_FIRST + (bits == 8 ? 5 : bits - 2) * 3 + (group == 32 ? 0 : group == 64 ? 1 : 2);
}

/* N consecutive words from p (4*N-byte aligned), with the widest loads that alignment allows. */
template <int N>
LPC_HD void lpc_load_words(const uint8_t *p, uint32_t (&w)[N]) {
    if constexpr (N % 4 == 0) {
#pragma unroll
        for (int i = 0; i < N; i += 4) {
            const uint4 q = lpc_load16(p + 4 * i);
            w[i] = q.x, w[i + 1] = q.y, w[i + 2] = q.z, w[i + 3] = q.w;
        }
    } else if constexpr (N % 2 == 0) {
#pragma unroll
        for (int i = 0; i < N; i += 2) {
            const uint2 q = lpc_load8(p + 4 * i);
            w[i] = q.x, w[i + 1] = q.y;
        }
    } else {
#pragma unroll
        for (int i = 0; i < N; i++) w[i] = lpc_load4(p + 4 * i);
    }
}

/* 32 BITS-wide codes (a slice's BITS words) -> 32 bytes in element order, 4 per word.
 * Generic: every shift is a compile-time constant after unrolling; codes that straddle
 * two words take bits from both. Specialised below for 4 and 8 bits. */
template <int BITS>
LPC_HD void lpc_mlx_unpack(const uint32_t (&w)[BITS], uint32_t (&v)[8]) {
#pragma unroll
    for (int j = 0; j < 8; j++) {
        uint32_t out = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int bit = (4 * j + i) * BITS, wi = bit / 32, sh = bit % 32;
            uint32_t code = w[wi] >> sh;
            if (sh + BITS > 32) code |= w[wi + 1] << (32 - sh);
            out |= (code & ((1u << BITS) - 1)) << (8 * i);
        }
        v[j] = out;
    }
}

/* 4 bits, the fast path: word j holds elements 8j..8j+7, element 8j+i in nibble i. The
 * even nibbles (lo) and odd nibbles (hi) are masked into bytes, then two byte permutes
 * interleave them back into element order: [lo0 hi0 lo1 hi1] and [lo2 hi2 lo3 hi3]. */
template <>
LPC_HD void lpc_mlx_unpack<4>(const uint32_t (&w)[4], uint32_t (&v)[8]) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const uint32_t lo = w[j] & LPC_LO4, hi = (w[j] >> 4) & LPC_LO4;
        v[2 * j] = lpc_prmt(lo, hi, 0x5140);
        v[2 * j + 1] = lpc_prmt(lo, hi, 0x7362);
    }
}

/* 8 bits: bytes are already in element order; q - 128 as a signed byte (see above). */
template <>
LPC_HD void lpc_mlx_unpack<8>(const uint32_t (&w)[8], uint32_t (&v)[8]) {
#pragma unroll
    for (int j = 0; j < 8; j++) v[j] = w[j] ^ 0x80808080u;
}

/* BF16 = 0: plane B = f32 scale | f32 bias (8 bytes). BF16 = 1, the compact variant for
 * weights whose scales and biases are all bfloat16 values (MLX files of bf16 models,
 * what our pipeline and mlx-lm write for Qwen3): plane B = their bf16 halves (4 bytes),
 * 10% fewer bytes per weight at 4 bits, group 64 (4.5 instead of 5 bits: Q4_K's), the
 * same values. Weights with f16 or f32 scales use the plain layout. */
template <int BITS, int GROUP, int BF16 = 0>
struct lpc_mlx : lpc_decoder<lpc_mlx<BITS, GROUP, BF16>> {
    enum { TYPE = BF16 ? lpc_mlx_type_id(BITS, GROUP) - LPC_MLX_FIRST + LPC_MLX_BF16_FIRST : lpc_mlx_type_id(BITS, GROUP),
           BLOCK = GROUP, SLICES = GROUP / 32, RUNS = 2, A_BYTES = GROUP * BITS / 8, B_BYTES = BF16 ? 4 : 8 };
    struct raw {
        uint32_t w[BITS];
        uint32_t sb0, sb1; /* scale | bias: two bf16 halves of sb0, or two f32 */
    };
    LPC_HD static void load(const uint8_t *A, const uint8_t *B, int s, raw &r) {
        lpc_load_words<BITS>(A + 4 * BITS * s, r.w);
        if constexpr (BF16) {
            r.sb0 = lpc_load4(B), r.sb1 = 0;
        } else {
            const uint2 sb = lpc_load8(B);
            r.sb0 = sb.x, r.sb1 = sb.y;
        }
    }
    LPC_HD static void unpack(const raw &r, int s, lpc_slice<2> &o) {
        uint32_t v[8];
        lpc_mlx_unpack<BITS>(r.w, v);
        const float scale = BF16 ? lpc_u2f(r.sb0 << 16) : lpc_u2f(r.sb0), bias = BF16 ? lpc_u2f(r.sb0 & 0xffff0000u) : lpc_u2f(r.sb1);
        const float minv = BITS == 8 ? -(bias + 128.0f * scale) : -bias;
#pragma unroll
        for (int q = 0; q < 2; q++) {
            o.scale[q] = scale;
            o.minv[q] = minv;
            o.off[q] = 32 * s + 16 * q;
#pragma unroll
            for (int k = 0; k < 4; k++) o.v[q][k] = v[4 * q + k];
        }
    }
};

/* Plane split of an MLX type, from its decoder: codes after the 8-byte f32 scale | bias. */
template <int BITS, int GROUP, int BF16>
constexpr lpc_plane_split lpc_mlx_split() {
    typedef lpc_mlx<BITS, GROUP, BF16> T;
    return lpc_plane_split{T::TYPE, lpc_mlx_type_id(BITS, GROUP), GROUP, 8 + T::A_BYTES, 8, T::A_BYTES, 0, 8, T::B_BYTES, BF16};
}

/* Every MLX (bits, group) pair, once: X(bits, group); and those with a bf16-scale variant:
 * 4 bits, the width that must be fast. Each entry is one more set of kernels (~1.6 s of
 * nvcc, ~130 KB of SASS), so 8 bits (6% fewer bytes with bf16 scales at group 64) is
 * left out for now; adding a pair here is all it takes. */
#define LPC_MLX_PAIRS(X)                                                                                              \
    X(2, 32) X(2, 64) X(2, 128) X(3, 32) X(3, 64) X(3, 128) X(4, 32) X(4, 64) X(4, 128) X(5, 32) X(5, 64) X(5, 128) \
    X(6, 32) X(6, 64) X(6, 128) X(8, 32) X(8, 64) X(8, 128)
#define LPC_MLX_BF16_PAIRS(X) X(4, 32) X(4, 64) X(4, 128)

/* Plane splits for the host repack, indexed by search: GGUF types by hand, MLX from their decoders. */
#define LPC_MLX_SPLIT_ROW(b, g) lpc_mlx_split<b, g, 0>(),
#define LPC_MLX_BF16_SPLIT_ROW(b, g) lpc_mlx_split<b, g, 1>(),
static const lpc_plane_split lpc_plane_splits[] = {
    {LPC_Q4_K, LPC_Q4_K, 256, 144, 16, 128, 0, 16, 16, 0},
    {LPC_Q5_K, LPC_Q5_K, 256, 176, 16, 160, 0, 16, 16, 0},
    {LPC_Q6_K, LPC_Q6_K, 256, 210, 0, 208, 208, 2, 2, 0},
    {LPC_Q3_K, LPC_Q3_K, 256, 110, 0, 96, 96, 14, 16, 0},
    {LPC_Q2_K, LPC_Q2_K, 256, 84, 0, 80, 80, 4, 4, 0},
    {LPC_Q8_0, LPC_Q8_0, 32, 34, 2, 32, 0, 2, 2, 0},
    {LPC_Q4_0, LPC_Q4_0, 32, 18, 2, 16, 0, 2, 2, 0},
    LPC_MLX_PAIRS(LPC_MLX_SPLIT_ROW)
    LPC_MLX_BF16_PAIRS(LPC_MLX_BF16_SPLIT_ROW)
};
#undef LPC_MLX_SPLIT_ROW
#undef LPC_MLX_BF16_SPLIT_ROW

/* The split of kernel type `type`; NULL if it has none. */
static inline const lpc_plane_split *lpc_find_split(int type) {
    for (size_t i = 0; i < sizeof lpc_plane_splits / sizeof lpc_plane_splits[0]; i++)
        if (lpc_plane_splits[i].type == type) return &lpc_plane_splits[i];
    return NULL;
}

/* Do the n_blocks host blocks at src suit split sp: for a b_bf16 split, every f32 of
 * their plane B must be a bfloat16 value (low half zero), so that narrowing is exact. */
static inline bool lpc_split_fits(const lpc_plane_split *sp, const uint8_t *src, size_t n_blocks) {
    for (size_t i = 0; sp->b_bf16 && i < n_blocks; i++)
        for (int k = 0; k < sp->b_len; k += 4) {
            const uint8_t *f = src + i * (size_t)sp->raw_bytes + sp->b_off + k;
            if (f[0] | f[1]) return false;
        }
    return true;
}

/* The split for host type src_type: with bf16, its bf16-scale variant when one exists
 * (the caller checks lpc_split_fits), else the plain one; NULL if none. */
static inline const lpc_plane_split *lpc_split_for(int src_type, bool bf16) {
    const lpc_plane_split *plain = NULL;
    for (const lpc_plane_split &sp : lpc_plane_splits) {
        if (sp.src_type != src_type) continue;
        if (sp.b_bf16 == (int)bf16) return &sp;
        if (!sp.b_bf16) plain = &sp;
    }
    return plain;
}

/* Host: split n_blocks blocks into plane A (a_len bytes each) and plane B (b_stride
 * bytes each, zero padded; with b_bf16 the high halves of plane B's f32s, little-endian). */
static inline void lpc_repack(const lpc_plane_split *sp, const uint8_t *src, size_t n_blocks, uint8_t *a, uint8_t *b) {
    for (size_t i = 0; i < n_blocks; i++) {
        const uint8_t *blk = src + i * (size_t)sp->raw_bytes;
        uint8_t *bb = b + i * (size_t)sp->b_stride;
        memcpy(a + i * (size_t)sp->a_len, blk + sp->a_off, (size_t)sp->a_len);
        if (sp->b_bf16) {
            for (int k = 0; k < sp->b_len / 4; k++) memcpy(bb + 2 * k, blk + sp->b_off + 4 * k + 2, 2);
            continue;
        }
        memcpy(bb, blk + sp->b_off, (size_t)sp->b_len);
        if (sp->b_stride > sp->b_len) memset(bb + sp->b_len, 0, (size_t)(sp->b_stride - sp->b_len));
    }
}

/* The quantized types with a slice decoder; dispatch runs F::template run<T>() for the
 * one whose TYPE matches (false if none). Adding a type = adding it to this list. */
template <class... Ts>
struct lpc_type_list {
    template <class F>
    static bool dispatch(int type, F &f) {
        return ((type == Ts::TYPE ? (f.template run<Ts>(), true) : false) || ...);
    }
};
#define LPC_MLX_LIST_ITEM(b, g) , lpc_mlx<b, g>
#define LPC_MLX_BF16_LIST_ITEM(b, g) , lpc_mlx<b, g, 1>
typedef lpc_type_list<lpc_q4_K, lpc_q5_K, lpc_q6_K, lpc_q3_K, lpc_q2_K, lpc_q8_0, lpc_q4_0 LPC_MLX_PAIRS(LPC_MLX_LIST_ITEM)
                          LPC_MLX_BF16_PAIRS(LPC_MLX_BF16_LIST_ITEM)>
    lpc_quant_types;
#undef LPC_MLX_LIST_ITEM
#undef LPC_MLX_BF16_LIST_ITEM

template <class F>
inline bool lpc_dispatch_quant(int type, F &&f) {
    return lpc_quant_types::dispatch(type, f);
}

#endif
