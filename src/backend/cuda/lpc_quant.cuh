/* lpc_quant.cuh — the GPU's view of GGUF block types: how each type is split
 * into two planes at upload, and how one thread decodes one "slice" of a block.
 *
 * Planes. A GGUF block mixes quants with scales and is often not 16-byte sized
 * (Q6_K 210 B, Q8_0 34 B), which rules out 16-byte loads. At upload each block
 * is cut into plane A (the quant bytes, a multiple of 16 bytes) and plane B (the
 * rest: d, dmin, scales), each plane contiguous over all blocks of the weight.
 * No byte is re-encoded and nothing is added except padding of Q3_K's 14-byte
 * plane B to 16.
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
    int type;        /* lp_type id */
    int block;       /* elements per block */
    int raw_bytes;   /* GGUF block size */
    int a_off, a_len; /* plane A: bytes [a_off, a_off + a_len) of the block */
    int b_off, b_len; /* plane B: bytes [b_off, b_off + b_len) */
    int b_stride;    /* plane B bytes per block (>= b_len, padded for aligned loads) */
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

/* Plane splits for the host repack, indexed by search (8 rows). */
static const lpc_plane_split lpc_plane_splits[] = {
    {LPC_Q4_K, 256, 144, 16, 128, 0, 16, 16},
    {LPC_Q5_K, 256, 176, 16, 160, 0, 16, 16},
    {LPC_Q6_K, 256, 210, 0, 208, 208, 2, 2},
    {LPC_Q3_K, 256, 110, 0, 96, 96, 14, 16},
    {LPC_Q2_K, 256, 84, 0, 80, 80, 4, 4},
    {LPC_Q8_0, 32, 34, 2, 32, 0, 2, 2},
    {LPC_Q4_0, 32, 18, 2, 16, 0, 2, 2},
};

static inline const lpc_plane_split *lpc_find_split(int type) {
    for (size_t i = 0; i < sizeof lpc_plane_splits / sizeof lpc_plane_splits[0]; i++)
        if (lpc_plane_splits[i].type == type) return &lpc_plane_splits[i];
    return NULL;
}

/* Host: split n_blocks GGUF blocks into plane A (a_len bytes each) and plane B
 * (b_stride bytes each, zero padded). */
static inline void lpc_repack(const lpc_plane_split *sp, const uint8_t *src, size_t n_blocks, uint8_t *a, uint8_t *b) {
    for (size_t i = 0; i < n_blocks; i++) {
        const uint8_t *blk = src + i * (size_t)sp->raw_bytes;
        memcpy(a + i * (size_t)sp->a_len, blk + sp->a_off, (size_t)sp->a_len);
        memcpy(b + i * (size_t)sp->b_stride, blk + sp->b_off, (size_t)sp->b_len);
        if (sp->b_stride > sp->b_len) memset(b + i * (size_t)sp->b_stride + sp->b_len, 0, (size_t)(sp->b_stride - sp->b_len));
    }
}

/* Calls F::template run<T>() with the slice decoder of a quantized type; false if none. */
template <class F>
inline bool lpc_dispatch_quant(int type, F &&f) {
    switch (type) {
    case LPC_Q4_K: f.template run<lpc_q4_K>(); return true;
    case LPC_Q5_K: f.template run<lpc_q5_K>(); return true;
    case LPC_Q6_K: f.template run<lpc_q6_K>(); return true;
    case LPC_Q3_K: f.template run<lpc_q3_K>(); return true;
    case LPC_Q2_K: f.template run<lpc_q2_K>(); return true;
    case LPC_Q8_0: f.template run<lpc_q8_0>(); return true;
    case LPC_Q4_0: f.template run<lpc_q4_0>(); return true;
    default: return false;
    }
}

#endif
