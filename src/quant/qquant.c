/* qquant.c — owns the reference quantizers of the 32-element block types: Q4_0, Q4_1,
 * Q5_0, Q5_1, Q8_0 (ggml's quantize_row_*_ref), MXFP4 (quantize_row_mxfp4_ref) and
 * IQ4_NL (what llama-quantize runs without an imatrix: quantize_iq4_nl -> 
 * quantize_row_iq4_nl_impl with ntry = 7 and weights x^2; NOT quantize_row_iq4_nl_ref,
 * which uses ntry = -1 and gives different files); and the Q8_0 activation quantizer,
 * which follows llama.cpp's x86 CPU backend instead of the reference (see below).
 *
 * Everything is float32 with ggml's exact operation order; the build's
 * -ffp-contract=off keeps the compiler from fusing multiply-adds, so the bytes equal
 * llama.cpp's. Rows must be a whole number of blocks (n % 32 == 0). */
#include "quant/qblocks.h"

#include <float.h>
#include <math.h>
#include <string.h>

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define GROUP_MAX_EPS 1e-15f

/* The value of largest magnitude (first one on ties), and that magnitude. */
static inline float signed_absmax(const float *x, int n, float *amax_out) {
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    *amax_out = amax;
    return max;
}

static inline void min_max(const float *x, int n, float *mn, float *mx) {
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

/* Element j into the low nibble, j+16 into the high nibble. */
static inline void pack_nibbles(const uint8_t L[32], uint8_t qs[16]) {
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((L[j] & 0xf) | (L[j + 16] & 0xf) << 4);
}

/* Bit 4 of each 5-bit code into a little-endian u32. */
static inline void pack_fifth_bits(const uint8_t L[32], uint8_t qh[4]) {
    uint32_t h = 0;
    for (int j = 0; j < 32; j++) h |= (uint32_t)((L[j] >> 4) & 1) << j;
    for (int k = 0; k < 4; k++) qh[k] = (uint8_t)(h >> (8 * k));
}

/* Codes of one symmetric block (Q4_0, Q5_0): d = max / -2^(bits-1) with max the signed
 * value of largest magnitude; codes offset by 2^(bits-1), the (int8_t) cast truncating
 * after +0.5 exactly as ggml does. Returns d. */
static float symmetric_codes(const float *x, int bits, uint8_t L[LP_QK]) {
    float amax;
    const float half = (float)(1 << (bits - 1));
    const float max = signed_absmax(x, LP_QK, &amax);
    const float d = max / -half;
    const float id = d ? 1.0f / d : 0.0f;
    const int top = (1 << bits) - 1;
    for (int j = 0; j < LP_QK; j++) L[j] = (uint8_t)MIN(top, (int8_t)(x[j] * id + (half + 0.5f)));
    return d;
}

/* Codes of one block with a minimum (Q4_1, Q5_1): d = (max - min) / (2^bits - 1). The clamp
 * is ggml's for Q4_1; for Q5_1 (x-min)*id + 0.5 <= 31.5 makes it a no-op, as in ggml. */
static void affine_codes(const float *x, int bits, uint8_t L[LP_QK], float *d_out, float *min_out) {
    float min, max;
    min_max(x, LP_QK, &min, &max);
    const int top = (1 << bits) - 1;
    const float d = (max - min) / top;
    const float id = d ? 1.0f / d : 0.0f;
    for (int j = 0; j < LP_QK; j++) L[j] = (uint8_t)MIN(top, (int8_t)((x[j] - min) * id + 0.5f));
    *d_out = d;
    *min_out = min;
}

void lp_from_float_q4_0(const float *x, void *vy, int64_t n) {
    lp_block_q4_0 *y = vy;
    for (int64_t i = 0; i < n / LP_QK; i++, x += LP_QK) {
        uint8_t L[LP_QK];
        y[i].d = lp_f32_to_f16(symmetric_codes(x, 4, L));
        pack_nibbles(L, y[i].qs);
    }
}

void lp_from_float_q5_0(const float *x, void *vy, int64_t n) {
    lp_block_q5_0 *y = vy;
    for (int64_t i = 0; i < n / LP_QK; i++, x += LP_QK) {
        uint8_t L[LP_QK];
        y[i].d = lp_f32_to_f16(symmetric_codes(x, 5, L));
        pack_nibbles(L, y[i].qs);
        pack_fifth_bits(L, y[i].qh);
    }
}

void lp_from_float_q4_1(const float *x, void *vy, int64_t n) {
    lp_block_q4_1 *y = vy;
    for (int64_t i = 0; i < n / LP_QK; i++, x += LP_QK) {
        uint8_t L[LP_QK];
        float d, min;
        affine_codes(x, 4, L, &d, &min);
        y[i].d = lp_f32_to_f16(d);
        y[i].m = lp_f32_to_f16(min);
        pack_nibbles(L, y[i].qs);
    }
}

void lp_from_float_q5_1(const float *x, void *vy, int64_t n) {
    lp_block_q5_1 *y = vy;
    for (int64_t i = 0; i < n / LP_QK; i++, x += LP_QK) {
        uint8_t L[LP_QK];
        float d, min;
        affine_codes(x, 5, L, &d, &min);
        y[i].d = lp_f32_to_f16(d);
        y[i].m = lp_f32_to_f16(min);
        pack_nibbles(L, y[i].qs);
        pack_fifth_bits(L, y[i].qh);
    }
}

void lp_from_float_q8_0(const float *x, void *vy, int64_t n) {
    lp_block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / LP_QK; i++, x += LP_QK) {
        float amax = 0;
        for (int j = 0; j < LP_QK; j++) amax = MAX(amax, fabsf(x[j]));
        const float d = amax / ((1 << 7) - 1);
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = lp_f32_to_f16(d);
        for (int j = 0; j < LP_QK; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

/* ---- Q8_0 activations ----
 * What llama.cpp's CPU backend runs on activation rows for Q8_0/Q4_0/IQ4_NL/MXFP4
 * weights is not quantize_row_q8_0_ref above but, on x86 (AVX/AVX2 builds, e.g. the
 * llama-cpp-python wheel), quantize_row_q8_0 of ggml-cpu/arch/x86/quants.c and, for
 * repacked weights, ggml_quantize_mat_q8_0_4x8 of arch/x86/repack.cpp (same arithmetic):
 *   d = amax / 127.f stored as f16 (RNE), id = amax != 0 ? 127.f / amax : 0 (not 1/d),
 *   q = _mm256_cvtps_epi32(_mm256_round_ps(x * id, _MM_ROUND_NEAREST)), packed to int8
 *   with signed saturation;
 * i.e. ties round to even where roundf rounds away, and 127/amax can differ from 1/d by
 * an ulp. Either flips a code now and then; on tiny-qwen3 q8_0 those flips alone moved
 * first-token logits by up to 0.17 against llama.cpp, so we copy these bits. */

/* cvtps2dq + packs on one value: round half to even, saturate to int8; NaN, +-inf and
 * |v| >= 2^31 convert to INT_MIN, hence -128. Finite rows give |v| <= 127 (plus an ulp);
 * the rest happens only in blocks holding inf/NaN or with amax < 127/FLT_MAX (127/amax
 * overflows; their f16 scale is 0 anyway), copied for identical bytes, not for the dots. */
static inline int8_t act_code(float v) {
    if (fabsf(v) <= 4194303.f) return (int8_t)MAX(-128, MIN(127, lp_nearest_int(v)));
    return v > 0 && v < 2147483648.f ? 127 : -128;
}

void lp_from_float_act_q8_0(const float *x, void *vy, int64_t n) {
    lp_block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / LP_QK; i++, x += LP_QK) {
        float amax = 0;
        for (int j = 0; j < LP_QK; j++) amax = MAX(amax, fabsf(x[j]));
        y[i].d = lp_f32_to_f16(amax / 127.f);
        const float id = amax != 0.0f ? 127.f / amax : 0.0f;
        for (int j = 0; j < LP_QK; j++) y[i].qs[j] = act_code(x[j] * id);
    }
}

/* ---- MXFP4 ---- */

static inline int best_index_mxfp4(float x, float d) {
    int best = 0;
    float best_err = fabsf(lp_kvalues_mxfp4[0] * d - x);
    for (int k = 1; k < 16; k++) {
        float err = fabsf(lp_kvalues_mxfp4[k] * d - x);
        if (err < best_err) {
            best = k;
            best_err = err;
        }
    }
    return best;
}

void lp_from_float_mxfp4(const float *x, void *vy, int64_t n) {
    lp_block_mxfp4 *y = vy;
    for (int64_t i = 0; i < n / LP_QK; i++, x += LP_QK) {
        float amax = 0;
        for (int j = 0; j < LP_QK; j++)
            if (amax < fabsf(x[j])) amax = fabsf(x[j]);
        /* Shared exponent so that amax lands in E2M1's top binade (values up to 6). The
         * detour through int keeps the narrowing defined for any input. */
        const uint8_t e = amax > 0.0f ? (uint8_t)(int)(floorf(log2f(amax)) - 2 + 127) : 0;
        const float d = lp_e8m0_half_to_f32(e);
        uint8_t L[32];
        for (int j = 0; j < LP_QK; j++) L[j] = (uint8_t)best_index_mxfp4(x[j], d);
        y[i].e = e;
        pack_nibbles(L, y[i].qs);
    }
}

/* ---- IQ4_NL ---- */

/* Index of the code-book value nearest to x (values ascending); ties go up. */
static inline int best_index_iq4nl(float x) {
    const int8_t *val = lp_kvalues_iq4nl;
    if (x <= val[0]) return 0;
    if (x >= val[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (x < val[mid]) hi = mid;
        else lo = mid;
    }
    return x - val[hi - 1] < val[hi] - x ? hi - 1 : hi;
}

/* Weighted least-squares scale for the codes chosen at inverse scale id:
 * sumqx = sum w*q*x, sumq2 = sum w*q*q. */
static inline void iq4nl_sums(const float *x, const float *w, float id, float *sumqx, float *sumq2, uint8_t *L) {
    float sqx = 0, sq2 = 0;
    for (int j = 0; j < LP_QK; j++) {
        int l = best_index_iq4nl(id * x[j]);
        if (L) L[j] = (uint8_t)l;
        float q = lp_kvalues_iq4nl[l];
        sqx += w[j] * q * x[j];
        sq2 += w[j] * q * q;
    }
    *sumqx = sqx;
    *sumq2 = sq2;
}

#define IQ4NL_NTRY 7

static void quantize_block_iq4_nl(const float *x, lp_block_iq4_nl *y) {
    float w[LP_QK];
    uint8_t L[LP_QK];
    for (int j = 0; j < LP_QK; j++) w[j] = x[j] * x[j];
    float amax;
    const float max = signed_absmax(x, LP_QK, &amax);
    float scale = 0;
    if (amax >= GROUP_MAX_EPS) {
        float sumqx, sumq2;
        iq4nl_sums(x, w, 1 / (-max / lp_kvalues_iq4nl[0]), &sumqx, &sumq2, NULL);
        float d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
        float best = d * sumqx;
        /* try 15 inverse scales around the one that maps max onto the code-book end */
        for (int itry = -IQ4NL_NTRY; itry <= IQ4NL_NTRY; ++itry) {
            iq4nl_sums(x, w, (itry + lp_kvalues_iq4nl[0]) / max, &sumqx, &sumq2, NULL);
            if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        scale = d;
    }
    y->d = lp_f32_to_f16(scale);
    /* final codes from the f32 scale (not its f16 rounding), as ggml does */
    const float id = scale ? 1 / scale : 0;
    for (int j = 0; j < LP_QK; j++) L[j] = (uint8_t)best_index_iq4nl(id * x[j]);
    pack_nibbles(L, y->qs);
}

void lp_from_float_iq4_nl(const float *x, void *vy, int64_t n) {
    lp_block_iq4_nl *y = vy;
    for (int64_t i = 0; i < n / LP_QK; i++) quantize_block_iq4_nl(x + LP_QK * i, &y[i]);
}
