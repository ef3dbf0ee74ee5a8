/* qdecode.c — owns the block layouts on the read side: one decoder per block type
 * (bytes -> integer codes + scales, the single place each layout is unpacked), the
 * dequantizers built on them, the portable scalar dot products, and the plain float
 * types' conversions and dots.
 *
 * Dequantization reproduces ggml's dequantize_row_* float operation order, so our
 * to_float output is bit-identical to llama.cpp's. The scalar dots sum integer code
 * products per sub-block, then scale in float (like ggml's kernels; not bit-identical
 * to them, and need not be). */
#include "quant/qblocks.h"

#include <stdbool.h>
#include <string.h>

const int8_t lp_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
const int8_t lp_kvalues_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* ---- 32-element block decoders ---- */

/* Nibble rule of every 4-bit type: element j in the low nibble of qs[j], j+16 in the high. */
static inline void split_nibbles(const uint8_t qs[16], uint8_t nib[32]) {
    for (int j = 0; j < 16; j++) {
        nib[j] = qs[j] & 0xf;
        nib[j + 16] = qs[j] >> 4;
    }
}

static inline uint32_t read_u32le(const uint8_t b[4]) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

void lp_decode_q4_0(const void *block, lp_dec32 *out) {
    const lp_block_q4_0 *b = block;
    uint8_t nib[32];
    split_nibbles(b->qs, nib);
    for (int j = 0; j < 32; j++) out->q[j] = (int8_t)(nib[j] - 8);
    out->d = lp_half_to_float(b->d);
    out->m = 0;
    out->affine = false;
}

void lp_decode_q4_1(const void *block, lp_dec32 *out) {
    const lp_block_q4_1 *b = block;
    uint8_t nib[32];
    split_nibbles(b->qs, nib);
    for (int j = 0; j < 32; j++) out->q[j] = (int8_t)nib[j];
    out->d = lp_half_to_float(b->d);
    out->m = lp_half_to_float(b->m);
    out->affine = true;
}

/* 5-bit codes: nibble plus bit j of the little-endian u32 qh as bit 4. */
static inline void five_bit_codes(const uint8_t qs[16], const uint8_t qh[4], int offset, int8_t q[32]) {
    uint8_t nib[32];
    uint32_t h = read_u32le(qh);
    split_nibbles(qs, nib);
    for (int j = 0; j < 32; j++) q[j] = (int8_t)((nib[j] | ((h >> j) & 1) << 4) - offset);
}

void lp_decode_q5_0(const void *block, lp_dec32 *out) {
    const lp_block_q5_0 *b = block;
    five_bit_codes(b->qs, b->qh, 16, out->q);
    out->d = lp_half_to_float(b->d);
    out->m = 0;
    out->affine = false;
}

void lp_decode_q5_1(const void *block, lp_dec32 *out) {
    const lp_block_q5_1 *b = block;
    five_bit_codes(b->qs, b->qh, 0, out->q);
    out->d = lp_half_to_float(b->d);
    out->m = lp_half_to_float(b->m);
    out->affine = true;
}

void lp_decode_q8_0(const void *block, lp_dec32 *out) {
    const lp_block_q8_0 *b = block;
    memcpy(out->q, b->qs, 32);
    out->d = lp_half_to_float(b->d);
    out->m = 0;
    out->affine = false;
}

static inline void lookup_nibbles(const uint8_t qs[16], const int8_t table[16], int8_t q[32]) {
    uint8_t nib[32];
    split_nibbles(qs, nib);
    for (int j = 0; j < 32; j++) q[j] = table[nib[j]];
}

void lp_decode_iq4_nl(const void *block, lp_dec32 *out) {
    const lp_block_iq4_nl *b = block;
    lookup_nibbles(b->qs, lp_kvalues_iq4nl, out->q);
    out->d = lp_half_to_float(b->d);
    out->m = 0;
    out->affine = false;
}

void lp_decode_mxfp4(const void *block, lp_dec32 *out) {
    const lp_block_mxfp4 *b = block;
    lookup_nibbles(b->qs, lp_kvalues_mxfp4, out->q);
    out->d = lp_e8m0_half_to_f32(b->e);
    out->m = 0;
    out->affine = false;
}

/* ---- K-quant super-block decoders ---- */

/* Q2_K / Q3_K low bits: element 128n + 32s + l is bits 2s..2s+1 of qs[32n + l]. */
static inline int two_bit_code(const uint8_t *qs, int e) {
    int n = e / 128, s = (e % 128) / 32, l = e % 32;
    return (qs[32 * n + l] >> (2 * s)) & 3;
}

/* Q4_K / Q5_K low nibbles: 64-element chunk c, first 32 in low nibbles of qs[32c..]. */
static inline int k_nibble(const uint8_t *qs, int e) {
    int c = e / 64, r = e % 64;
    return r < 32 ? qs[32 * c + r] & 0xf : qs[32 * c + r - 32] >> 4;
}

/* 6-bit scale/min pairs of Q4_K and Q5_K (ggml's get_scale_min_k4). */
static inline void scale_min_k4(int j, const uint8_t s[12], int16_t *sc, int16_t *mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

void lp_decode_q2_K(const void *block, lp_dec256 *out) {
    const lp_block_q2_K *b = block;
    for (int e = 0; e < 256; e++) out->q[e] = (int8_t)two_bit_code(b->qs, e);
    for (int j = 0; j < 16; j++) {
        out->scale[j] = b->scales[j] & 0xf;
        out->min[j] = b->scales[j] >> 4;
    }
    out->d = lp_half_to_float(b->d);
    out->dmin = lp_half_to_float(b->dmin);
    out->sub = 16;
}

void lp_decode_q3_K(const void *block, lp_dec256 *out) {
    const lp_block_q3_K *b = block;
    for (int e = 0; e < 256; e++) {
        int h = (b->hmask[e % 32] >> (e / 32)) & 1;
        out->q[e] = (int8_t)(two_bit_code(b->qs, e) + 4 * h - 4);
    }
    for (int j = 0; j < 16; j++) {
        int lo4 = j < 8 ? b->scales[j] & 0xf : b->scales[j - 8] >> 4;
        int hi2 = (b->scales[8 + j % 4] >> (2 * (j / 4))) & 3;
        out->scale[j] = (int16_t)((lo4 | hi2 << 4) - 32);
        out->min[j] = 0;
    }
    out->d = lp_half_to_float(b->d);
    out->dmin = 0;
    out->sub = 16;
}

void lp_decode_q4_K(const void *block, lp_dec256 *out) {
    const lp_block_q4_K *b = block;
    for (int e = 0; e < 256; e++) out->q[e] = (int8_t)k_nibble(b->qs, e);
    memset(out->scale, 0, sizeof out->scale);
    memset(out->min, 0, sizeof out->min);
    for (int j = 0; j < 8; j++) scale_min_k4(j, b->scales, &out->scale[j], &out->min[j]);
    out->d = lp_half_to_float(b->d);
    out->dmin = lp_half_to_float(b->dmin);
    out->sub = 32;
}

void lp_decode_q5_K(const void *block, lp_dec256 *out) {
    const lp_block_q5_K *b = block;
    for (int e = 0; e < 256; e++) {
        int h = (b->qh[e % 32] >> (e / 32)) & 1;
        out->q[e] = (int8_t)(k_nibble(b->qs, e) + 16 * h);
    }
    memset(out->scale, 0, sizeof out->scale);
    memset(out->min, 0, sizeof out->min);
    for (int j = 0; j < 8; j++) scale_min_k4(j, b->scales, &out->scale[j], &out->min[j]);
    out->d = lp_half_to_float(b->d);
    out->dmin = lp_half_to_float(b->dmin);
    out->sub = 32;
}

void lp_decode_q6_K(const void *block, lp_dec256 *out) {
    const lp_block_q6_K *b = block;
    for (int e = 0; e < 256; e++) {
        int n = e / 128, s = (e % 128) / 32, l = e % 32;
        int lo = b->ql[64 * n + 32 * (s & 1) + l];
        int lo4 = s < 2 ? lo & 0xf : lo >> 4;
        int hi2 = (b->qh[32 * n + l] >> (2 * s)) & 3;
        out->q[e] = (int8_t)((lo4 | hi2 << 4) - 32);
    }
    for (int j = 0; j < 16; j++) {
        out->scale[j] = b->scales[j];
        out->min[j] = 0;
    }
    out->d = lp_half_to_float(b->d);
    out->dmin = 0;
    out->sub = 16;
}

/* ---- generic dequantize / scalar dot over the decoded forms ---- */

static inline void dequant32(lp_dec32_fn dec, size_t block_bytes, const void *src, float *y, int64_t n) {
    const uint8_t *p = src;
    lp_dec32 b;
    for (int64_t i = 0; i < n / LP_QK; i++, p += block_bytes, y += LP_QK) {
        dec(p, &b);
        for (int j = 0; j < LP_QK; j++) y[j] = b.affine ? b.q[j] * b.d + b.m : b.q[j] * b.d;
    }
}

/* Against Q8_0 activations: sum_blocks dw*dx*sum(qw*qx) (+ m*dx*sum(qx) if affine). */
static inline float dot32(lp_dec32_fn dec, size_t block_bytes, int64_t n, const void *w, const void *x) {
    const uint8_t *p = w;
    const lp_block_q8_0 *xb = x;
    lp_dec32 b;
    float sum = 0;
    for (int64_t i = 0; i < n / LP_QK; i++, p += block_bytes) {
        dec(p, &b);
        int isum = 0, xsum = 0;
        for (int j = 0; j < LP_QK; j++) {
            isum += b.q[j] * xb[i].qs[j];
            xsum += xb[i].qs[j];
        }
        float dx = lp_half_to_float(xb[i].d);
        sum += b.d * dx * (float)isum;
        if (b.affine) sum += b.m * dx * (float)xsum;
    }
    return sum;
}

static inline void dequant256(lp_dec256_fn dec, size_t block_bytes, const void *src, float *y, int64_t n) {
    const uint8_t *p = src;
    lp_dec256 b;
    for (int64_t i = 0; i < n / LP_QK_K; i++, p += block_bytes, y += LP_QK_K) {
        dec(p, &b);
        for (int e = 0; e < LP_QK_K; e++) {
            int j = e / b.sub;
            y[e] = b.d * b.scale[j] * b.q[e] - b.dmin * b.min[j];
        }
    }
}

/* Against Q8_K activations; the min term uses the activation's 16-element bsums. */
static inline float dot256(lp_dec256_fn dec, size_t block_bytes, int64_t n, const void *w, const void *x) {
    const uint8_t *p = w;
    const lp_block_q8_K *xb = x;
    lp_dec256 b;
    float sum = 0;
    for (int64_t i = 0; i < n / LP_QK_K; i++, p += block_bytes) {
        dec(p, &b);
        int acc_scale = 0, acc_min = 0;
        for (int j = 0; j < LP_QK_K / b.sub; j++) {
            int isum = 0;
            for (int e = j * b.sub; e < (j + 1) * b.sub; e++) isum += b.q[e] * xb[i].qs[e];
            acc_scale += b.scale[j] * isum;
        }
        for (int k = 0; k < 16; k++) acc_min += b.min[k * 16 / b.sub] * xb[i].bsums[k];
        sum += xb[i].d * (b.d * (float)acc_scale - b.dmin * (float)acc_min);
    }
    return sum;
}

#define BLOCK_KERNELS(t, kind)                                                          \
    void lp_to_float_##t(const void *src, float *dst, int64_t n) {                     \
        dequant##kind(lp_decode_##t, sizeof(lp_block_##t), src, dst, n);               \
    }                                                                                   \
    float lp_vec_dot_##t##_scalar(int64_t n, const void *w, const void *x) {           \
        return dot##kind(lp_decode_##t, sizeof(lp_block_##t), n, w, x);                \
    }

BLOCK_KERNELS(q4_0, 32)
BLOCK_KERNELS(q4_1, 32)
BLOCK_KERNELS(q5_0, 32)
BLOCK_KERNELS(q5_1, 32)
BLOCK_KERNELS(q8_0, 32)
BLOCK_KERNELS(iq4_nl, 32)
BLOCK_KERNELS(mxfp4, 32)
BLOCK_KERNELS(q2_K, 256)
BLOCK_KERNELS(q3_K, 256)
BLOCK_KERNELS(q4_K, 256)
BLOCK_KERNELS(q5_K, 256)
BLOCK_KERNELS(q6_K, 256)

void lp_to_float_q8_K(const void *src, float *dst, int64_t n) {
    const lp_block_q8_K *b = src;
    for (int64_t i = 0; i < n / LP_QK_K; i++)
        for (int j = 0; j < LP_QK_K; j++) *dst++ = b[i].d * b[i].qs[j];
}

/* ---- plain float types ---- */

void lp_to_float_f32(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(float)); }
void lp_from_float_f32(const float *x, void *y, int64_t n) { memcpy(y, x, (size_t)n * sizeof(float)); }

void lp_to_float_f16(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = lp_half_to_float(h[i]);
}

void lp_from_float_f16(const float *x, void *y, int64_t n) {
    uint16_t *h = y;
    for (int64_t i = 0; i < n; i++) h[i] = lp_f32_to_f16(x[i]);
}

void lp_to_float_bf16(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    for (int64_t i = 0; i < n; i++) dst[i] = lp_bf16_to_f32(h[i]);
}

void lp_from_float_bf16(const float *x, void *y, int64_t n) {
    uint16_t *h = y;
    for (int64_t i = 0; i < n; i++) h[i] = lp_f32_to_bf16(x[i]);
}

/* The scalar float dots accumulate in double: they are the accuracy reference. */
float lp_vec_dot_f32_scalar(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)a[i] * b[i];
    return (float)sum;
}

float lp_vec_dot_f16_scalar(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)lp_half_to_float(a[i]) * b[i];
    return (float)sum;
}

float lp_vec_dot_bf16_scalar(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)lp_bf16_to_f32(a[i]) * b[i];
    return (float)sum;
}
