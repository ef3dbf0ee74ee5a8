/* qtype.c — owns the type traits table (one row per ggml type we support), type-name
 * lookup, row sizes, and the scalar f16/bf16 conversions.
 *
 * The kernels themselves live in qdecode.c (dequantize + scalar dot), qquant.c and
 * qquant_k.c (reference quantizers), qdot_avx2.c and qdot_neon.c (SIMD dots); this file wires
 * them into rows, choosing the SIMD dot when the build has it. lp_qtype() also answers
 * for the runtime's MLX block types (mlx_types.c), so every consumer has one lookup. */
#include "quant/qtype.h"

#include "quant/mlx_types.h"
#include "quant/qblocks.h"

#include <string.h>
#include <strings.h>

/* The fastest vec_dot compiled in for a type that has a SIMD variant. */
#if LP_QUANT_AVX2
#define FAST_DOT(t) lp_vec_dot_##t##_avx2
#elif LP_QUANT_NEON
#define FAST_DOT(t) lp_vec_dot_##t##_neon
#else
#define FAST_DOT(t) lp_vec_dot_##t##_scalar
#endif

#define FLOAT_ROW(id, nm, bytes, t) \
    [id] = {nm, 1, bytes, false, lp_to_float_##t, lp_from_float_##t, LP_TYPE_F32, FAST_DOT(t)}
#define BLOCK_ROW(id, nm, bs, bytes, t, act, dot) \
    [id] = {nm, bs, bytes, true, lp_to_float_##t, lp_from_float_##t, act, dot}

static const lp_qtype_traits traits[LP_TYPE_COUNT] = {
    FLOAT_ROW(LP_TYPE_F32, "f32", 4, f32),
    FLOAT_ROW(LP_TYPE_F16, "f16", 2, f16),
    FLOAT_ROW(LP_TYPE_BF16, "bf16", 2, bf16),
    BLOCK_ROW(LP_TYPE_Q4_0, "q4_0", 32, 18, q4_0, LP_TYPE_Q8_0, FAST_DOT(q4_0)),
    BLOCK_ROW(LP_TYPE_Q4_1, "q4_1", 32, 20, q4_1, LP_TYPE_Q8_0, FAST_DOT(q4_1)),
    BLOCK_ROW(LP_TYPE_Q5_0, "q5_0", 32, 22, q5_0, LP_TYPE_Q8_0, FAST_DOT(q5_0)),
    BLOCK_ROW(LP_TYPE_Q5_1, "q5_1", 32, 24, q5_1, LP_TYPE_Q8_0, FAST_DOT(q5_1)),
    BLOCK_ROW(LP_TYPE_Q8_0, "q8_0", 32, 34, q8_0, LP_TYPE_Q8_0, FAST_DOT(q8_0)),
    BLOCK_ROW(LP_TYPE_IQ4_NL, "iq4_nl", 32, 18, iq4_nl, LP_TYPE_Q8_0, FAST_DOT(iq4_nl)),
    BLOCK_ROW(LP_TYPE_MXFP4, "mxfp4", 32, 17, mxfp4, LP_TYPE_Q8_0, FAST_DOT(mxfp4)),
    BLOCK_ROW(LP_TYPE_Q2_K, "q2_K", 256, 84, q2_K, LP_TYPE_Q8_K, FAST_DOT(q2_K)),
    BLOCK_ROW(LP_TYPE_Q3_K, "q3_K", 256, 110, q3_K, LP_TYPE_Q8_K, FAST_DOT(q3_K)),
    BLOCK_ROW(LP_TYPE_Q4_K, "q4_K", 256, 144, q4_K, LP_TYPE_Q8_K, FAST_DOT(q4_K)),
    BLOCK_ROW(LP_TYPE_Q5_K, "q5_K", 256, 176, q5_K, LP_TYPE_Q8_K, FAST_DOT(q5_K)),
    BLOCK_ROW(LP_TYPE_Q6_K, "q6_K", 256, 210, q6_K, LP_TYPE_Q8_K, FAST_DOT(q6_K)),
    /* Activation-only: produced by from_float, never a matmul weight. */
    BLOCK_ROW(LP_TYPE_Q8_K, "q8_K", 256, 292, q8_K, LP_TYPE_Q8_K, NULL),
};

/* Scalar dots, indexed like traits[], for tests and for checking the SIMD paths. */
static const lp_vec_dot_fn scalar_dots[LP_TYPE_COUNT] = {
    [LP_TYPE_F32] = lp_vec_dot_f32_scalar,     [LP_TYPE_F16] = lp_vec_dot_f16_scalar,
    [LP_TYPE_BF16] = lp_vec_dot_bf16_scalar,   [LP_TYPE_Q4_0] = lp_vec_dot_q4_0_scalar,
    [LP_TYPE_Q4_1] = lp_vec_dot_q4_1_scalar,   [LP_TYPE_Q5_0] = lp_vec_dot_q5_0_scalar,
    [LP_TYPE_Q5_1] = lp_vec_dot_q5_1_scalar,   [LP_TYPE_Q8_0] = lp_vec_dot_q8_0_scalar,
    [LP_TYPE_IQ4_NL] = lp_vec_dot_iq4_nl_scalar, [LP_TYPE_MXFP4] = lp_vec_dot_mxfp4_scalar,
    [LP_TYPE_Q2_K] = lp_vec_dot_q2_K_scalar,   [LP_TYPE_Q3_K] = lp_vec_dot_q3_K_scalar,
    [LP_TYPE_Q4_K] = lp_vec_dot_q4_K_scalar,   [LP_TYPE_Q5_K] = lp_vec_dot_q5_K_scalar,
    [LP_TYPE_Q6_K] = lp_vec_dot_q6_K_scalar,
};

const lp_qtype_traits *lp_qtype(lp_type t) {
    /* runtime-only MLX block types (ids >= LP_TYPE_MLX_FIRST) have their own table */
    if (lp_type_is_mlx(t)) return lp_mlx_qtype(t);
    if ((int)t < 0 || t >= LP_TYPE_COUNT || !traits[t].name) return NULL;
    return &traits[t];
}

lp_vec_dot_fn lp_vec_dot_scalar(lp_type t) {
    if ((int)t < 0 || t >= LP_TYPE_COUNT) return NULL;
    return scalar_dots[t];
}

/* Only Q8_0 has an activation quantizer of its own; Q8_K's from_float is already what
 * llama.cpp's CPU backend runs (quantize_row_q8_K is quantize_row_q8_K_ref on x86 and
 * ARM), and F32 activations are not converted. */
lp_from_float_fn lp_from_float_act(lp_type t) {
    if (t == LP_TYPE_Q8_0) return lp_from_float_act_q8_0;
    const lp_qtype_traits *tr = lp_qtype(t);
    return tr ? tr->from_float : NULL;
}

size_t lp_row_size(lp_type t, int64_t n) {
    const lp_qtype_traits *tr = lp_qtype(t);
    if (!tr || n < 0) return 0;
    return tr->block_bytes * (size_t)(n / tr->block_size);
}

int lp_type_from_name(const char *name) {
    if (!name) return -1;
    for (int t = 0; t < LP_TYPE_COUNT; t++)
        if (traits[t].name && strcasecmp(traits[t].name, name) == 0) return t;
    return -1;
}

/* ---- scalar float conversions ---- */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float lp_f16_to_f32(uint16_t h) { return lp_half_to_float(h); }

/* Shift right by s (1..31) rounding to nearest, ties to even. */
static inline uint32_t shift_rne(uint32_t v, int s) {
    uint32_t q = v >> s, rem = v & ((1u << s) - 1), half = 1u << (s - 1);
    return q + (rem > half || (rem == half && (q & 1)));
}

uint16_t lp_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffff;
    if (a > 0x7f800000) return sign | 0x7e00;       /* NaN -> quiet NaN, as ggml */
    if (a >= 0x477ff000) return sign | 0x7c00;      /* >= 65520 rounds to inf */
    if (a < 0x38800000) {                           /* below 2^-14: f16 subnormal */
        if (a <= 0x33000000) return sign;           /* <= 2^-25: rounds to zero */
        uint32_t e = a >> 23, man = (a & 0x7fffff) | 0x800000;
        return sign | (uint16_t)shift_rne(man, (int)(126 - e)); /* may carry to 0x400 */
    }
    /* normal: rebias exponent, round the 13 dropped mantissa bits (carry may bump exp) */
    uint32_t h = (a >> 13) - ((127 - 15) << 10);
    uint32_t rem = a & 0x1fff;
    h += rem > 0x1000 || (rem == 0x1000 && (h & 1));
    return sign | (uint16_t)h;
}

float lp_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t lp_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 64); /* quiet NaN */
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
