/* qblocks.h — internal to src/quant: ggml block layouts, their code tables, and the
 * per-type kernels that the traits table in qtype.c points at.
 *
 * The structs are byte-for-byte ggml's (docs/FORMATS.md s.6; sizes checked by
 * static asserts below), so a row of blocks can be read straight out of a mapped
 * GGUF file. The CPU backend may include this header for the struct layouts; the
 * unit tests include it to call the scalar and SIMD vec_dot variants side by side.
 * Little-endian hosts only (like ggml). */
#ifndef LP_QBLOCKS_H
#define LP_QBLOCKS_H

#include "quant/qtype.h"

#include <stdint.h>
#include <string.h>

#define LP_QK 32   /* elements per block of the 32-element ("legacy") types */
#define LP_QK_K 256 /* elements per K-quant super-block */

typedef struct { uint16_t d; uint8_t qs[16]; } lp_block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } lp_block_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } lp_block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } lp_block_q5_1;
typedef struct { uint16_t d; int8_t qs[32]; } lp_block_q8_0;
typedef struct { uint16_t d; uint8_t qs[16]; } lp_block_iq4_nl;
typedef struct { uint8_t e; uint8_t qs[16]; } lp_block_mxfp4;
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } lp_block_q2_K;
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } lp_block_q3_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } lp_block_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } lp_block_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } lp_block_q6_K;
/* Activation-side block for K-quant dot products; bsums[j] = sum of qs[16j..16j+15]. */
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } lp_block_q8_K;

_Static_assert(sizeof(lp_block_q4_0) == 18, "q4_0 layout");
_Static_assert(sizeof(lp_block_q4_1) == 20, "q4_1 layout");
_Static_assert(sizeof(lp_block_q5_0) == 22, "q5_0 layout");
_Static_assert(sizeof(lp_block_q5_1) == 24, "q5_1 layout");
_Static_assert(sizeof(lp_block_q8_0) == 34, "q8_0 layout");
_Static_assert(sizeof(lp_block_iq4_nl) == 18, "iq4_nl layout");
_Static_assert(sizeof(lp_block_mxfp4) == 17, "mxfp4 layout");
_Static_assert(sizeof(lp_block_q2_K) == 84, "q2_K layout");
_Static_assert(sizeof(lp_block_q3_K) == 110, "q3_K layout");
_Static_assert(sizeof(lp_block_q4_K) == 144, "q4_K layout");
_Static_assert(sizeof(lp_block_q5_K) == 176, "q5_K layout");
_Static_assert(sizeof(lp_block_q6_K) == 210, "q6_K layout");
_Static_assert(sizeof(lp_block_q8_K) == 292, "q8_K layout");

/* Non-linear 4-bit code books (ggml-common.h). MXFP4's is E2M1 doubled, paired with
 * a scale of 2^(e-128) instead of 2^(e-127). */
extern const int8_t lp_kvalues_iq4nl[16];
extern const int8_t lp_kvalues_mxfp4[16];

/* f16 -> f32 (exact; NaNs made quiet as ggml's arithmetic does), inline for the
 * kernels; lp_f16_to_f32 is the same function out of line. */
static inline float lp_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) { /* zero or subnormal: man * 2^-24 is exact in f32 */
        float mag = (float)man * 0x1p-24f;
        return sign ? -mag : mag;
    }
    if (exp == 31) bits = sign | 0x7f800000u | man << 13 | (man ? 0x00400000u : 0); /* inf / NaN */
    else bits = sign | (exp + 112) << 23 | man << 13;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* MXFP4 E8M0 scale byte -> 2^(e-128) (ggml's GGML_E8M0_TO_FP32_HALF, exact for every e). */
static inline float lp_e8m0_half_to_f32(uint8_t e) {
    uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Decoded forms shared by dequantization and the scalar dot products, so each layout
 * is unpacked in exactly one place (qdecode.c).
 * 32-element block: value_i = q[i] * d, plus m for the affine types (Q4_1, Q5_1; the
 * flag keeps the symmetric types from adding +0, which would flip ggml's -0.0 results). */
typedef struct {
    int8_t q[LP_QK];
    float d, m;
    bool affine;
} lp_dec32;
/* K-quant super-block: value_e = (d * scale[j]) * q[e] - dmin * min[j], with sub-block
 * j = e / sub (sub = 16 or 32); min[] and dmin are 0 for the symmetric types. */
typedef struct {
    int8_t q[LP_QK_K];
    int16_t scale[16], min[16];
    float d, dmin;
    int sub;
} lp_dec256;

typedef void (*lp_dec32_fn)(const void *block, lp_dec32 *out);
typedef void (*lp_dec256_fn)(const void *block, lp_dec256 *out);

/* ---- kernels (one per type; names lp_<what>_<type>) ---- */
#define LP_QUANT_TYPES(X) X(q4_0) X(q4_1) X(q5_0) X(q5_1) X(q8_0) X(iq4_nl) X(mxfp4) \
    X(q2_K) X(q3_K) X(q4_K) X(q5_K) X(q6_K)

#define LP_DECLARE_KERNELS(t)                                          \
    void lp_to_float_##t(const void *src, float *dst, int64_t n);     \
    float lp_vec_dot_##t##_scalar(int64_t n, const void *w, const void *x);
LP_QUANT_TYPES(LP_DECLARE_KERNELS)
#undef LP_DECLARE_KERNELS

/* Reference quantizers (quantize_row_*_ref of ggml-quants.c, bit exact; IQ4_NL follows
 * llama-quantize's quantize_iq4_nl without imatrix, see qquant.c). */
void lp_from_float_q4_0(const float *x, void *y, int64_t n);
void lp_from_float_q4_1(const float *x, void *y, int64_t n);
void lp_from_float_q5_0(const float *x, void *y, int64_t n);
void lp_from_float_q5_1(const float *x, void *y, int64_t n);
void lp_from_float_q8_0(const float *x, void *y, int64_t n);
void lp_from_float_iq4_nl(const float *x, void *y, int64_t n);
void lp_from_float_mxfp4(const float *x, void *y, int64_t n);
void lp_from_float_q2_K(const float *x, void *y, int64_t n);
void lp_from_float_q3_K(const float *x, void *y, int64_t n);
void lp_from_float_q4_K(const float *x, void *y, int64_t n);
void lp_from_float_q5_K(const float *x, void *y, int64_t n);
void lp_from_float_q6_K(const float *x, void *y, int64_t n);
void lp_from_float_q8_K(const float *x, void *y, int64_t n);
void lp_to_float_q8_K(const void *src, float *dst, int64_t n);

/* Plain float types. */
void lp_to_float_f32(const void *src, float *dst, int64_t n);
void lp_to_float_f16(const void *src, float *dst, int64_t n);
void lp_to_float_bf16(const void *src, float *dst, int64_t n);
void lp_from_float_f32(const float *x, void *y, int64_t n);
void lp_from_float_f16(const float *x, void *y, int64_t n);
void lp_from_float_bf16(const float *x, void *y, int64_t n);
float lp_vec_dot_f32_scalar(int64_t n, const void *w, const void *x);
float lp_vec_dot_f16_scalar(int64_t n, const void *w, const void *x);
float lp_vec_dot_bf16_scalar(int64_t n, const void *w, const void *x);

/* Block decoders (qdecode.c). */
#define LP_DECLARE_DEC32(t) void lp_decode_##t(const void *block, lp_dec32 *out);
#define LP_DECLARE_DEC256(t) void lp_decode_##t(const void *block, lp_dec256 *out);
LP_DECLARE_DEC32(q4_0) LP_DECLARE_DEC32(q4_1) LP_DECLARE_DEC32(q5_0) LP_DECLARE_DEC32(q5_1)
LP_DECLARE_DEC32(q8_0) LP_DECLARE_DEC32(iq4_nl) LP_DECLARE_DEC32(mxfp4)
LP_DECLARE_DEC256(q2_K) LP_DECLARE_DEC256(q3_K) LP_DECLARE_DEC256(q4_K) LP_DECLARE_DEC256(q5_K)
LP_DECLARE_DEC256(q6_K)
#undef LP_DECLARE_DEC32
#undef LP_DECLARE_DEC256

/* SIMD paths: compiled when the build targets AVX2+FMA+F16C (-march=native on x86-64). */
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LP_QUANT_AVX2 1
float lp_vec_dot_f32_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_f16_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_bf16_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_q8_0_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_q4_0_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_q4_1_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_q5_0_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_q5_1_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_iq4_nl_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_mxfp4_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_q2_K_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_q3_K_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_q4_K_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_q5_K_avx2(int64_t n, const void *w, const void *x);
float lp_vec_dot_q6_K_avx2(int64_t n, const void *w, const void *x);
#else
#define LP_QUANT_AVX2 0
#endif

/* NEON paths (qdot_neon.c): AArch64, with SDOT where the target has dotprod. */
#if defined(__ARM_NEON) && defined(__aarch64__)
#define LP_QUANT_NEON 1
#define LP_DECLARE_NEON(t) float lp_vec_dot_##t##_neon(int64_t n, const void *w, const void *x);
LP_QUANT_TYPES(LP_DECLARE_NEON) LP_DECLARE_NEON(f32) LP_DECLARE_NEON(f16) LP_DECLARE_NEON(bf16)
#undef LP_DECLARE_NEON
#else
#define LP_QUANT_NEON 0
#endif

/* Batched dot for prefill: one weight row against 4 activation rows x, x + x_stride,
 * ... (bytes, in the vec_dot_type). out[t] is bit-identical to vec_dot(n, w, x_t): each
 * weight block is loaded and unpacked once and reused for the 4 tokens. */
typedef void (*lp_vec_dot_x4_fn)(int64_t n, const void *w, const void *x, size_t x_stride, float out[4]);
/* The x4 kernel of a type, or NULL if it has none (the caller loops over vec_dot). */
lp_vec_dot_x4_fn lp_vec_dot_x4(lp_type t);
/* The activation quantizer for vec_dot_type t: a SIMD one where there is one, else
 * lp_from_float_act(t); both write the same bytes. */
lp_from_float_fn lp_from_float_fast(lp_type t);
#if LP_QUANT_NEON
/* The NEON x4 kernel / activation quantizer of a type (qdot_neon.c), as above. */
lp_vec_dot_x4_fn lp_vec_dot_x4_neon(lp_type t);
lp_from_float_fn lp_from_float_fast_neon(lp_type t);
#endif

/* The portable scalar vec_dot of a type (the traits hold the fastest one); NULL if none.
 * Tests compare the two. */
lp_vec_dot_fn lp_vec_dot_scalar(lp_type t);

/* MLX affine row dot without SIMD (mlx_affine.c), for tests against lp_mlx_dot_row. */
float lp_mlx_dot_row_scalar(const uint32_t *w, const float *scales, const float *biases, int64_t n, int bits, int group,
                            const float *x);

/* nearest_int of ggml-quants.c: round half to even via the 1.5*2^23 trick, valid for
 * |f| <= 4194303. Larger inputs (Q2_K reaches them) give the same deterministic garbage
 * as llama.cpp's release builds, where ggml's range assert is compiled out. */
static inline int lp_nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

#endif
