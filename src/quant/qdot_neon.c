/* qdot_neon.c — owns the AArch64 NEON kernels of src/quant, the counterpart of
 * qdot_avx2.c: the dot products (weights x activations) of F32, F16, BF16 (x F32), the
 * 32-element types Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, MXFP4 (x Q8_0) and Q2_K..Q6_K
 * (x Q8_K); the batched x4 kernels for prefill; the SIMD Q8_0 activation quantizer
 * (lp_from_float_act's arithmetic).
 *
 * Codes are expanded to signed bytes in registers (offsets such as Q4_0's -8 or Q6_K's
 * -32 applied there: every code still fits in an i8) and multiplied with the activations
 * 16 at a time, by SDOT where the target has the dotprod extension and by widening
 * multiplies otherwise; both give the same exact i32 sums. Sub-block scales multiply the
 * i32 partial sums, the K-quant mins go through the activation's bsums, and only then
 * does float arithmetic start, so results equal the scalar kernels up to float summation
 * order (tests/neon/neon_check.c, run under qemu by scripts/test-neon.sh, checks that).
 *
 * Each quantized kernel is written once for T activation rows, T = 1 (vec_dot) or 4 (the
 * x4 kernels), a compile-time constant: every row goes through the same operations in the
 * same order, so x4 results are bit-identical to vec_dot by construction. */
#include "quant/qblocks.h"

#if LP_QUANT_NEON

#include <arm_neon.h>
#include <string.h>

/* Kernels specialised by constant arguments (type, row count): forced inline so the
 * switches on the type and the loops over rows fold away. */
#define KERNEL static inline __attribute__((always_inline))

/* f16 -> f32 by the hardware conversion: exact, the same value as lp_half_to_float. */
static inline float f16(uint16_t h) {
    __fp16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
}

/* acc + partial sums of a[i]*b[i] over 16 signed bytes, spread over the 4 lanes. */
static inline int32x4_t dot_s8(int32x4_t acc, int8x16_t a, int8x16_t b) {
#ifdef __ARM_FEATURE_DOTPROD
    return vdotq_s32(acc, a, b);
#else
    /* an i8 x i8 product fits an i16 (|p| <= 16384); pairs are only added once in i32 */
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
#endif
}

/* 32 signed bytes in element order: lo = elements 0..15, hi = 16..31. */
typedef struct {
    int8x16_t lo, hi;
} i8x32;

static inline i8x32 load_i8x32(const int8_t *p) { return (i8x32){vld1q_s8(p), vld1q_s8(p + 16)}; }

static inline i8x32 from_u8(uint8x16_t lo, uint8x16_t hi) {
    return (i8x32){vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi)};
}

static inline i8x32 minus(i8x32 c, int8_t k) {
    return (i8x32){vsubq_s8(c.lo, vdupq_n_s8(k)), vsubq_s8(c.hi, vdupq_n_s8(k))};
}

/* v with 0x10 (bit 4: the fifth bit of Q5 codes) set in the lanes where h & bit != 0. */
static inline uint8x16_t or_bit4(uint8x16_t v, uint8x16_t h, uint8x16_t bit) {
    return vorrq_u8(v, vandq_u8(vtstq_u8(h, bit), vdupq_n_u8(0x10)));
}

/* ---- float weights x f32 activations ---- */

typedef enum { W_F32, W_F16, W_BF16 } float_kind;

KERNEL float32x4_t load4(const void *w, int64_t i, float_kind k) {
    const uint16_t *h = (const uint16_t *)w + i;
    if (k == W_F16) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
    if (k == W_BF16) return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(h), 16)); /* bf16 = top half of f32 */
    return vld1q_f32((const float *)w + i);
}

KERNEL float load1(const void *w, int64_t i, float_kind k) {
    if (k == W_F16) return f16(((const uint16_t *)w)[i]);
    if (k == W_BF16) return lp_bf16_to_f32(((const uint16_t *)w)[i]);
    return ((const float *)w)[i];
}

/* Four accumulators hide the FMA latency; the scalar tail handles n % 16. */
KERNEL float float_dot(int64_t n, const void *w, const float *x, float_kind k) {
    float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++) acc[j] = vfmaq_f32(acc[j], load4(w, i + 4 * j, k), vld1q_f32(x + i + 4 * j));
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
    for (; i < n; i++) sum += load1(w, i, k) * x[i];
    return sum;
}

float lp_vec_dot_f32_neon(int64_t n, const void *w, const void *x) { return float_dot(n, w, x, W_F32); }
float lp_vec_dot_f16_neon(int64_t n, const void *w, const void *x) { return float_dot(n, w, x, W_F16); }
float lp_vec_dot_bf16_neon(int64_t n, const void *w, const void *x) { return float_dot(n, w, x, W_BF16); }

/* Activation row k of a batch: x + k * stride bytes. */
static inline const void *act_row(const void *x, size_t stride, int k) { return (const uint8_t *)x + (size_t)k * stride; }

/* ---- 32-element blocks x Q8_0 ---- */

/* Nibble rule of every 4-bit type: element j in the low nibble of qs[j], j+16 in the high. */
static inline i8x32 nibbles(const uint8_t qs[16]) {
    const uint8x16_t b = vld1q_u8(qs);
    return from_u8(vandq_u8(b, vdupq_n_u8(0x0f)), vshrq_n_u8(b, 4));
}

/* Q5 codes: nibble plus bit j of the little-endian u32 qh as bit 4; lane l of each half
 * tests bit l % 8 of a copy of the qh byte it needs. */
static inline i8x32 five_bit_codes(const uint8_t qs[16], const uint8_t qh[4]) {
    static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint8x16_t b = vld1q_u8(qs), bits = vld1q_u8(bit);
    const uint8x16_t h_lo = vcombine_u8(vdup_n_u8(qh[0]), vdup_n_u8(qh[1])); /* elements 0..15 */
    const uint8x16_t h_hi = vcombine_u8(vdup_n_u8(qh[2]), vdup_n_u8(qh[3])); /* 16..31 */
    return from_u8(or_bit4(vandq_u8(b, vdupq_n_u8(0x0f)), h_lo, bits), or_bit4(vshrq_n_u8(b, 4), h_hi, bits));
}

/* Non-linear 4-bit types: nibble -> code-book byte, one TBL per 16. */
static inline i8x32 lookup16(const uint8_t qs[16], const int8_t table[16]) {
    const int8x16_t lut = vld1q_s8(table);
    const i8x32 idx = nibbles(qs);
    return (i8x32){vqtbl1q_s8(lut, vreinterpretq_u8_s8(idx.lo)), vqtbl1q_s8(lut, vreinterpretq_u8_s8(idx.hi))};
}

/* One block decoded: value_j = q[j] * d (+ m for the affine types). */
typedef struct {
    i8x32 q;
    float d, m;
} block32;

static inline bool is_affine(lp_type t) { return t == LP_TYPE_Q4_1 || t == LP_TYPE_Q5_1; }

KERNEL block32 load_block32(lp_type t, const void *p) {
    switch (t) {
    case LP_TYPE_Q8_0: {
        const lp_block_q8_0 *b = p;
        return (block32){load_i8x32(b->qs), f16(b->d), 0};
    }
    case LP_TYPE_Q4_0: {
        const lp_block_q4_0 *b = p;
        return (block32){minus(nibbles(b->qs), 8), f16(b->d), 0};
    }
    case LP_TYPE_Q4_1: {
        const lp_block_q4_1 *b = p;
        return (block32){nibbles(b->qs), f16(b->d), f16(b->m)};
    }
    case LP_TYPE_Q5_0: {
        const lp_block_q5_0 *b = p;
        return (block32){minus(five_bit_codes(b->qs, b->qh), 16), f16(b->d), 0};
    }
    case LP_TYPE_Q5_1: {
        const lp_block_q5_1 *b = p;
        return (block32){five_bit_codes(b->qs, b->qh), f16(b->d), f16(b->m)};
    }
    case LP_TYPE_IQ4_NL: {
        const lp_block_iq4_nl *b = p;
        return (block32){lookup16(b->qs, lp_kvalues_iq4nl), f16(b->d), 0};
    }
    default: { /* LP_TYPE_MXFP4 */
        const lp_block_mxfp4 *b = p;
        return (block32){lookup16(b->qs, lp_kvalues_mxfp4), lp_e8m0_half_to_f32(b->e), 0};
    }
    }
}

/* One weight row of type t against T Q8_0 rows: per block d*dx*sum(q*qx), plus
 * m*dx*sum(qx) for the affine types. */
KERNEL void dot32_rows(lp_type t, size_t block_bytes, int64_t n, const void *w, const void *x, size_t xs, int T,
                       float *out) {
    float32x4_t acc[4];
    float msum[4];
    #pragma GCC unroll 4
    for (int k = 0; k < T; k++) acc[k] = vdupq_n_f32(0), msum[k] = 0;
    const uint8_t *p = w;
    for (int64_t i = 0; i < n / LP_QK; i++, p += block_bytes) {
        const block32 b = load_block32(t, p);
        #pragma GCC unroll 4
        for (int k = 0; k < T; k++) {
            const lp_block_q8_0 *xb = (const lp_block_q8_0 *)act_row(x, xs, k) + i;
            const i8x32 xq = load_i8x32(xb->qs);
            const float dx = f16(xb->d);
            const int32x4_t isum = dot_s8(dot_s8(vdupq_n_s32(0), b.q.lo, xq.lo), b.q.hi, xq.hi);
            acc[k] = vfmaq_n_f32(acc[k], vcvtq_f32_s32(isum), b.d * dx);
            if (is_affine(t)) msum[k] += b.m * dx * (float)(vaddlvq_s8(xq.lo) + vaddlvq_s8(xq.hi));
        }
    }
    #pragma GCC unroll 4
    for (int k = 0; k < T; k++) out[k] = is_affine(t) ? vaddvq_f32(acc[k]) + msum[k] : vaddvq_f32(acc[k]);
}

/* The single-row vec_dot of a type: its rows body with one row. */
#define ROWS_DOT(t, id, rows)                                                \
    float lp_vec_dot_##t##_neon(int64_t n, const void *w, const void *x) {  \
        float r;                                                             \
        rows(id, sizeof(lp_block_##t), n, w, x, 0, 1, &r);                   \
        return r;                                                            \
    }
ROWS_DOT(q8_0, LP_TYPE_Q8_0, dot32_rows)
ROWS_DOT(q4_0, LP_TYPE_Q4_0, dot32_rows)
ROWS_DOT(q4_1, LP_TYPE_Q4_1, dot32_rows)
ROWS_DOT(q5_0, LP_TYPE_Q5_0, dot32_rows)
ROWS_DOT(q5_1, LP_TYPE_Q5_1, dot32_rows)
ROWS_DOT(iq4_nl, LP_TYPE_IQ4_NL, dot32_rows)
ROWS_DOT(mxfp4, LP_TYPE_MXFP4, dot32_rows)

/* ---- K-quants x Q8_K ----
 * Every K-quant super-block is unpacked into one form: 256 signed codes as 8 chunks of
 * 32, a scale per 16-element sub-block (Q4_K/Q5_K's 32-element scales repeated), and
 * for the types with mins a min per 16 elements, to meet the activation's bsums. The
 * unpack loops are unrolled so that, once inlined, a single-row kernel keeps the block in
 * registers. */
typedef struct {
    i8x32 q[8];
    int16_t scale[16];
    int16x8_t min[2]; /* mins of 16-element groups 0..7 and 8..15 */
    float d, dmin;
} kblock;

static inline bool has_mins(lp_type t) { return t == LP_TYPE_Q2_K || t == LP_TYPE_Q4_K || t == LP_TYPE_Q5_K; }

/* Q2_K: element 128h + 32s + l is bits 2s..2s+1 of qs[32h + l]; scales[j] = scale | min << 4. */
KERNEL void unpack_q2_K(const lp_block_q2_K *b, kblock *kb) {
    #pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        uint8x16_t lo = vld1q_u8(b->qs + 32 * h), hi = vld1q_u8(b->qs + 32 * h + 16);
        #pragma GCC unroll 4
        for (int s = 0; s < 4; s++, lo = vshrq_n_u8(lo, 2), hi = vshrq_n_u8(hi, 2))
            kb->q[4 * h + s] = from_u8(vandq_u8(lo, vdupq_n_u8(3)), vandq_u8(hi, vdupq_n_u8(3)));
    }
    for (int j = 0; j < 16; j++) kb->scale[j] = b->scales[j] & 0xf;
    const uint8x16_t mins = vshrq_n_u8(vld1q_u8(b->scales), 4);
    kb->min[0] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(mins)));
    kb->min[1] = vreinterpretq_s16_u16(vmovl_high_u8(mins));
    kb->d = f16(b->d), kb->dmin = f16(b->dmin);
}

/* Q3_K's 16 6-bit scales (docs/FORMATS.md s.6.5) four at a time with 32-bit masks: low
 * nibbles from bytes 0..7 (scales 8..15 in their high nibbles), top two bits from bytes
 * 8..11 at bit 2*(j/4); bias 32 removed. */
static inline void q3_scales(const uint8_t s[12], int16_t out[16]) {
    uint32_t a[3], w[4];
    memcpy(a, s, 12);
    const uint32_t low4 = 0x0f0f0f0f, low2 = 0x03030303;
    w[0] = (a[0] & low4) | (a[2] & low2) << 4;
    w[1] = (a[1] & low4) | ((a[2] >> 2) & low2) << 4;
    w[2] = ((a[0] >> 4) & low4) | ((a[2] >> 4) & low2) << 4;
    w[3] = ((a[1] >> 4) & low4) | ((a[2] >> 6) & low2) << 4;
    uint8_t u[16];
    memcpy(u, w, 16);
    for (int j = 0; j < 16; j++) out[j] = (int16_t)(u[j] - 32);
}

/* Q3_K: the Q2_K bit planes plus hmask bit k of hmask[l] for chunk k as bit 2; minus 4. */
KERNEL void unpack_q3_K(const lp_block_q3_K *b, kblock *kb) {
    uint8x16_t hm_lo = vld1q_u8(b->hmask), hm_hi = vld1q_u8(b->hmask + 16);
    const uint8x16_t one = vdupq_n_u8(1), three = vdupq_n_u8(3);
    #pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        uint8x16_t lo = vld1q_u8(b->qs + 32 * h), hi = vld1q_u8(b->qs + 32 * h + 16);
        #pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            const uint8x16_t ulo = vorrq_u8(vandq_u8(lo, three), vshlq_n_u8(vandq_u8(hm_lo, one), 2));
            const uint8x16_t uhi = vorrq_u8(vandq_u8(hi, three), vshlq_n_u8(vandq_u8(hm_hi, one), 2));
            kb->q[4 * h + s] = minus(from_u8(ulo, uhi), 4);
            lo = vshrq_n_u8(lo, 2), hi = vshrq_n_u8(hi, 2);
            hm_lo = vshrq_n_u8(hm_lo, 1), hm_hi = vshrq_n_u8(hm_hi, 1);
        }
    }
    q3_scales(b->scales, kb->scale);
    kb->d = f16(b->d), kb->dmin = 0;
}

/* Q4_K/Q5_K 6-bit scales and mins, four at a time with 32-bit masks (docs/FORMATS.md
 * s.6.6): sc[0..3] / m[0..3] are the low 6 bits of bytes 0..3 / 4..7; sc[4..7] / m[4..7]
 * take their low nibble from bytes 8..11 and their top two bits from bits 6..7 of bytes
 * 0..3 / 4..7. */
static inline void k4_scales(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8]) {
    uint32_t a[3], w[4];
    memcpy(a, s, 12);
    const uint32_t low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, low2 = 0x03030303;
    w[0] = a[0] & low6;
    w[1] = (a[2] & low4) | ((a[0] >> 6) & low2) << 4;
    w[2] = a[1] & low6;
    w[3] = ((a[2] >> 4) & low4) | ((a[1] >> 6) & low2) << 4;
    memcpy(sc, w, 8);
    memcpy(mn, w + 2, 8);
}

/* Q4_K and Q5_K (qh != NULL): 64-element chunk c has its first 32 elements in the low
 * nibbles of qs[32c..32c+31], the next 32 in the high ones; Q5_K adds qh[l] bit 2c
 * (first half) and bit 2c+1 (second) as bit 4. */
KERNEL void unpack_k45(const lp_block_q4_K *head, const uint8_t *qh, const uint8_t *qs, kblock *kb) {
    const uint8x16_t h_lo = qh ? vld1q_u8(qh) : vdupq_n_u8(0), h_hi = qh ? vld1q_u8(qh + 16) : vdupq_n_u8(0);
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    #pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        const uint8x16_t q_lo = vld1q_u8(qs + 32 * c), q_hi = vld1q_u8(qs + 32 * c + 16);
        uint8x16_t a_lo = vandq_u8(q_lo, low4), a_hi = vandq_u8(q_hi, low4);
        uint8x16_t b_lo = vshrq_n_u8(q_lo, 4), b_hi = vshrq_n_u8(q_hi, 4);
        if (qh) {
            const uint8x16_t bit_a = vdupq_n_u8((uint8_t)(1 << 2 * c)), bit_b = vdupq_n_u8((uint8_t)(2 << 2 * c));
            a_lo = or_bit4(a_lo, h_lo, bit_a), a_hi = or_bit4(a_hi, h_hi, bit_a);
            b_lo = or_bit4(b_lo, h_lo, bit_b), b_hi = or_bit4(b_hi, h_hi, bit_b);
        }
        kb->q[2 * c] = from_u8(a_lo, a_hi);
        kb->q[2 * c + 1] = from_u8(b_lo, b_hi);
    }
    uint8_t sc[8], mn[8];
    k4_scales(head->scales, sc, mn);
    for (int j = 0; j < 16; j++) kb->scale[j] = sc[j / 2];
    const uint8x8_t m = vld1_u8(mn); /* m0..m7 -> m0 m0 m1 m1 ... per 16-element group */
    kb->min[0] = vreinterpretq_s16_u16(vmovl_u8(vzip1_u8(m, m)));
    kb->min[1] = vreinterpretq_s16_u16(vmovl_u8(vzip2_u8(m, m)));
    kb->d = f16(head->d), kb->dmin = f16(head->dmin);
}

/* Q6_K: element 128h + 32s + l has its low nibble in ql[64h + 32(s&1) + l] (low half for
 * s < 2, high for s >= 2) and bits 2s..2s+1 of qh[32h + l] on top; minus 32. */
KERNEL void unpack_q6_K(const lp_block_q6_K *b, kblock *kb) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f), three = vdupq_n_u8(3);
    #pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h;
        uint8x16_t h_lo = vld1q_u8(b->qh + 32 * h), h_hi = vld1q_u8(b->qh + 32 * h + 16);
        #pragma GCC unroll 4
        for (int s = 0; s < 4; s++) {
            const uint8x16_t l_lo = vld1q_u8(ql + 32 * (s & 1)), l_hi = vld1q_u8(ql + 32 * (s & 1) + 16);
            const uint8x16_t n_lo = s < 2 ? vandq_u8(l_lo, low4) : vshrq_n_u8(l_lo, 4);
            const uint8x16_t n_hi = s < 2 ? vandq_u8(l_hi, low4) : vshrq_n_u8(l_hi, 4);
            const uint8x16_t u_lo = vorrq_u8(n_lo, vshlq_n_u8(vandq_u8(h_lo, three), 4));
            const uint8x16_t u_hi = vorrq_u8(n_hi, vshlq_n_u8(vandq_u8(h_hi, three), 4));
            kb->q[4 * h + s] = minus(from_u8(u_lo, u_hi), 32);
            h_lo = vshrq_n_u8(h_lo, 2), h_hi = vshrq_n_u8(h_hi, 2);
        }
    }
    for (int j = 0; j < 16; j++) kb->scale[j] = b->scales[j];
    kb->d = f16(b->d), kb->dmin = 0;
}

KERNEL void unpack_k(lp_type t, const uint8_t *p, kblock *kb) {
    switch (t) {
    case LP_TYPE_Q2_K: unpack_q2_K((const lp_block_q2_K *)p, kb); break;
    case LP_TYPE_Q3_K: unpack_q3_K((const lp_block_q3_K *)p, kb); break;
    case LP_TYPE_Q4_K: unpack_k45((const lp_block_q4_K *)p, NULL, p + 16, kb); break; /* d, dmin, scales[12], qs */
    case LP_TYPE_Q5_K: unpack_k45((const lp_block_q4_K *)p, p + 16, p + 48, kb); break; /* ... qh[32], qs */
    default: unpack_q6_K((const lp_block_q6_K *)p, kb); break; /* LP_TYPE_Q6_K */
    }
}

/* sum_j min[j] * bsums[j] over the 16 groups. */
static inline int32_t min_dot(const int16x8_t min[2], const int16_t bsums[16]) {
    const int16x8_t b0 = vld1q_s16(bsums), b1 = vld1q_s16(bsums + 8);
    int32x4_t s = vmull_s16(vget_low_s16(min[0]), vget_low_s16(b0));
    s = vmlal_high_s16(s, min[0], b0);
    s = vmlal_s16(s, vget_low_s16(min[1]), vget_low_s16(b1));
    return vaddvq_s32(vmlal_high_s16(s, min[1], b1));
}

/* One weight row of K-quant type t against T Q8_K rows: per block
 * xd * (d * sum_j scale_j * sum(q*qx over group j) - dmin * sum_j min_j * bsum_j). */
KERNEL void dot256_rows(lp_type t, size_t block_bytes, int64_t n, const void *w, const void *x, size_t xs, int T,
                        float *out) {
    float32x4_t acc[4];
    float acc_min[4];
    #pragma GCC unroll 4
    for (int k = 0; k < T; k++) acc[k] = vdupq_n_f32(0), acc_min[k] = 0;
    const uint8_t *p = w;
    for (int64_t i = 0; i < n / LP_QK_K; i++, p += block_bytes) {
        kblock kb;
        unpack_k(t, p, &kb);
        #pragma GCC unroll 4
        for (int k = 0; k < T; k++) {
            const lp_block_q8_K *xb = (const lp_block_q8_K *)act_row(x, xs, k) + i;
            int32x4_t isum = vdupq_n_s32(0);
            #pragma GCC unroll 8
            for (int c = 0; c < 8; c++) { /* per group |sum| <= 16*64*128, x |scale| <= 128: < 2^31 */
                const i8x32 xq = load_i8x32(xb->qs + 32 * c);
                isum = vmlaq_n_s32(isum, dot_s8(vdupq_n_s32(0), kb.q[c].lo, xq.lo), kb.scale[2 * c]);
                isum = vmlaq_n_s32(isum, dot_s8(vdupq_n_s32(0), kb.q[c].hi, xq.hi), kb.scale[2 * c + 1]);
            }
            acc[k] = vfmaq_n_f32(acc[k], vcvtq_f32_s32(isum), xb->d * kb.d);
            if (has_mins(t)) acc_min[k] += xb->d * kb.dmin * (float)min_dot(kb.min, xb->bsums);
        }
    }
    #pragma GCC unroll 4
    for (int k = 0; k < T; k++) out[k] = has_mins(t) ? vaddvq_f32(acc[k]) - acc_min[k] : vaddvq_f32(acc[k]);
}

ROWS_DOT(q2_K, LP_TYPE_Q2_K, dot256_rows)
ROWS_DOT(q3_K, LP_TYPE_Q3_K, dot256_rows)
ROWS_DOT(q4_K, LP_TYPE_Q4_K, dot256_rows)
ROWS_DOT(q5_K, LP_TYPE_Q5_K, dot256_rows)
ROWS_DOT(q6_K, LP_TYPE_Q6_K, dot256_rows)

/* ---- batched (x4) kernels for prefill: the same bodies with T = 4 ---- */

static void vec_dot_q8_0_x4(int64_t n, const void *w, const void *x, size_t xs, float out[4]) {
    dot32_rows(LP_TYPE_Q8_0, sizeof(lp_block_q8_0), n, w, x, xs, 4, out);
}

#define KQUANT_X4(t, id)                                                                            \
    static void vec_dot_##t##_x4(int64_t n, const void *w, const void *x, size_t xs, float out[4]) { \
        dot256_rows(id, sizeof(lp_block_##t), n, w, x, xs, 4, out);                                  \
    }
KQUANT_X4(q4_K, LP_TYPE_Q4_K)
KQUANT_X4(q5_K, LP_TYPE_Q5_K)
KQUANT_X4(q6_K, LP_TYPE_Q6_K)

/* ---- activation quantizer ---- */

/* One lane group of x86's cvtps2dq as lp_from_float_act_q8_0 models it: round half to
 * even (FCVTNS), but NaN and |v| >= 2^31 become INT_MIN (FCVTNS would give 0 or
 * saturate). Only blocks whose 127/amax overflows (subnormal amax) get there. */
static inline int32x4_t act_codes4(float32x4_t v) {
    const uint32x4_t in_range = vcaltq_f32(v, vdupq_n_f32(2147483648.0f)); /* |v| < 2^31; false for NaN */
    return vbslq_s32(in_range, vcvtnq_s32_f32(v), vdupq_n_s32(INT32_MIN));
}

/* lp_from_float_act_q8_0 (llama.cpp's x86 quantize_row_q8_0) with the same arithmetic,
 * so the blocks are byte-identical: d = f16(amax / 127), id = 127 / amax, codes rounded
 * half to even and narrowed with signed saturation. Finite inputs (the scalar MAX and
 * the SIMD max order NaNs differently). */
static void from_float_q8_0(const float *x, void *vy, int64_t n) {
    lp_block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / LP_QK; i++, x += LP_QK) {
        float32x4_t v[8], m = vdupq_n_f32(0);
        #pragma GCC unroll 8
        for (int j = 0; j < 8; j++) {
            v[j] = vld1q_f32(x + 4 * j);
            m = vmaxq_f32(m, vabsq_f32(v[j]));
        }
        const float amax = vmaxvq_f32(m);
        y[i].d = lp_f32_to_f16(amax / 127.f);
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        int16x8_t h[4];
        #pragma GCC unroll 4
        for (int j = 0; j < 4; j++)
            h[j] = vcombine_s16(vqmovn_s32(act_codes4(vmulq_n_f32(v[2 * j], id))),
                                vqmovn_s32(act_codes4(vmulq_n_f32(v[2 * j + 1], id))));
        vst1q_s8(y[i].qs, vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1])));
        vst1q_s8(y[i].qs + 16, vcombine_s8(vqmovn_s16(h[2]), vqmovn_s16(h[3])));
    }
}

/* ---- what the NEON build offers beyond the traits' vec_dot ---- */

/* Same bytes as lp_from_float_act (qtype.h), which it falls back to. */
lp_from_float_fn lp_from_float_fast_neon(lp_type t) {
    if (t == LP_TYPE_Q8_0) return from_float_q8_0;
    return lp_from_float_act(t);
}

/* The same types as qdot_avx2.c's table. */
lp_vec_dot_x4_fn lp_vec_dot_x4_neon(lp_type t) {
    static const struct {
        lp_type type;
        lp_vec_dot_x4_fn fn;
    } x4_kernels[] = {
        {LP_TYPE_Q8_0, vec_dot_q8_0_x4},
        {LP_TYPE_Q4_K, vec_dot_q4_K_x4},
        {LP_TYPE_Q5_K, vec_dot_q5_K_x4},
        {LP_TYPE_Q6_K, vec_dot_q6_K_x4},
    };
    for (size_t i = 0; i < sizeof x4_kernels / sizeof x4_kernels[0]; i++)
        if (x4_kernels[i].type == t) return x4_kernels[i].fn;
    return NULL;
}

#endif
