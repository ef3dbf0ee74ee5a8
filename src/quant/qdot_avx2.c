/* qdot_avx2.c — owns the AVX2/FMA/F16C dot-product kernels (weights x activations)
 * for the hot types of the CPU runtime: F32, F16, BF16 (x F32), Q8_0, Q4_0, IQ4_NL,
 * MXFP4 (x Q8_0) and Q2_K..Q6_K (x Q8_K).
 *
 * Decode is memory bound, so each kernel reads every weight byte once, expands codes
 * to bytes in registers and multiplies with vpmaddubsw (unsigned codes x signed
 * activations -> pairwise i16), then vpmaddwd against the sub-block scale. Constant
 * offsets of the K-quants (-4 for Q3_K, -32 for Q6_K) and the mins are folded in through
 * the activation's bsums instead of per element. Results equal the scalar kernels up to
 * float summation order (tests/unit/test_qtype.c checks). */
#include "quant/qblocks.h"

#if LP_QUANT_AVX2

#include <immintrin.h>

static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float f16(uint16_t h) { return _cvtsh_ss(h); }

/* 8 x i32 partial sums of u[i]*s[i] (u unsigned bytes <= 127 after expansion, s signed). */
static inline __m256i dot_u8_i8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* Same for two signed byte vectors: move a's sign onto b so vpmaddubsw sees |a|. */
static inline __m256i dot_i8_i8(__m256i a, __m256i b) {
    return dot_u8_i8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}

/* 32 unsigned codes x 32 activations; the first 16 elements weighted by sc_lo, the
 * last 16 by sc_hi (equal for 32-element sub-blocks). 8 x i32. */
static inline __m256i chunk_dot(__m256i u, const int8_t *x, int16_t sc_lo, int16_t sc_hi) {
    __m256i p = _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)x));
    __m256i sc = _mm256_set_m128i(_mm_set1_epi16(sc_hi), _mm_set1_epi16(sc_lo));
    return _mm256_madd_epi16(p, sc);
}

/* 16 packed bytes -> 32 nibbles in element order (low nibbles first, then high). */
static inline __m256i expand_nibbles(const uint8_t *qs) {
    __m128i b = _mm_loadu_si128((const __m128i *)qs);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

/* ---- float weights x f32 activations ---- */

/* Four independent accumulators hide the FMA latency; the scalar tail handles n % 32. */
#define FLOAT_DOT_BODY(load8, scalar_w)                                              \
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), \
                     _mm256_setzero_ps()};                                           \
    int64_t i = 0;                                                                   \
    for (; i + 32 <= n; i += 32)                                                     \
        for (int k = 0; k < 4; k++)                                                  \
            acc[k] = _mm256_fmadd_ps(load8(i + 8 * k), _mm256_loadu_ps(b + i + 8 * k), acc[k]); \
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))); \
    for (; i < n; i++) sum += scalar_w(i) * b[i];                                    \
    return sum;

float lp_vec_dot_f32_avx2(int64_t n, const void *w, const void *x) {
    const float *a = w, *b = x;
#define LOAD_F32(j) _mm256_loadu_ps(a + (j))
#define W_F32(j) a[j]
    FLOAT_DOT_BODY(LOAD_F32, W_F32)
}

float lp_vec_dot_f16_avx2(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
#define LOAD_F16(j) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + (j))))
#define W_F16(j) f16(a[j])
    FLOAT_DOT_BODY(LOAD_F16, W_F16)
}

float lp_vec_dot_bf16_avx2(int64_t n, const void *w, const void *x) {
    const uint16_t *a = w;
    const float *b = x;
#define LOAD_BF16(j) \
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(a + (j)))), 16))
#define W_BF16(j) lp_bf16_to_f32(a[j])
    FLOAT_DOT_BODY(LOAD_BF16, W_BF16)
}

/* ---- 32-element blocks x Q8_0 ---- */

/* Each type supplies its signed codes for block i as a 256-bit vector and its scale. */
#define BLOCK32_DOT(type, codes, scale)                                                  \
    const type *wb = w;                                                                  \
    const lp_block_q8_0 *xb = x;                                                         \
    __m256 acc = _mm256_setzero_ps();                                                    \
    for (int64_t i = 0; i < n / LP_QK; i++) {                                            \
        __m256i q = codes;                                                               \
        __m256i xq = _mm256_loadu_si256((const __m256i *)xb[i].qs);                      \
        __m256 d = _mm256_set1_ps((scale) * f16(xb[i].d));                               \
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8_i8(q, xq)), acc);             \
    }                                                                                    \
    return hsum_ps(acc);

float lp_vec_dot_q8_0_avx2(int64_t n, const void *w, const void *x) {
    BLOCK32_DOT(lp_block_q8_0, _mm256_loadu_si256((const __m256i *)wb[i].qs), f16(wb[i].d))
}

float lp_vec_dot_q4_0_avx2(int64_t n, const void *w, const void *x) {
    BLOCK32_DOT(lp_block_q4_0, _mm256_sub_epi8(expand_nibbles(wb[i].qs), _mm256_set1_epi8(8)), f16(wb[i].d))
}

/* Non-linear 4-bit types: nibble -> code-book byte with one vpshufb. */
static inline __m256i lookup16(const uint8_t *qs, const int8_t table[16]) {
    __m256i lut = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)table));
    return _mm256_shuffle_epi8(lut, expand_nibbles(qs));
}

float lp_vec_dot_iq4_nl_avx2(int64_t n, const void *w, const void *x) {
    BLOCK32_DOT(lp_block_iq4_nl, lookup16(wb[i].qs, lp_kvalues_iq4nl), f16(wb[i].d))
}

float lp_vec_dot_mxfp4_avx2(int64_t n, const void *w, const void *x) {
    BLOCK32_DOT(lp_block_mxfp4, lookup16(wb[i].qs, lp_kvalues_mxfp4), lp_e8m0_half_to_f32(wb[i].e))
}

/* ---- K-quants x Q8_K ---- */

/* bsums-weighted sum with per-16 integer weights: sum_k c[k] * bsums[k]. */
static inline int bsum_dot16(const int16_t c[16], const int16_t bsums[16]) {
    __m256i p = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)c), _mm256_loadu_si256((const __m256i *)bsums));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* Q2_K and Q3_K share the 2-bit plane: for each 128-half n and shift s the codes of
 * elements 128n+32s..+31 are (qs[32n..32n+31] >> 2s) & 3. */
static inline __m256i two_bit_plane(__m256i qs_half, int s) {
    return _mm256_and_si256(_mm256_srl_epi16(qs_half, _mm_cvtsi32_si128(2 * s)), _mm256_set1_epi8(3));
}

float lp_vec_dot_q2_K_avx2(int64_t n, const void *w, const void *x) {
    const lp_block_q2_K *wb = w;
    const lp_block_q8_K *xb = x;
    __m256 acc = _mm256_setzero_ps();
    float acc_min = 0;
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        int16_t sc[16], mn[16];
        for (int j = 0; j < 16; j++) {
            sc[j] = wb[i].scales[j] & 0xf;
            mn[j] = wb[i].scales[j] >> 4;
        }
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i qs = _mm256_loadu_si256((const __m256i *)(wb[i].qs + 32 * h));
            for (int s = 0; s < 4; s++) {
                int j = 8 * h + 2 * s;
                isum = _mm256_add_epi32(isum, chunk_dot(two_bit_plane(qs, s), xb[i].qs + 32 * j / 2, sc[j], sc[j + 1]));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(xb[i].d * f16(wb[i].d)), _mm256_cvtepi32_ps(isum), acc);
        acc_min += xb[i].d * f16(wb[i].dmin) * (float)bsum_dot16(mn, xb[i].bsums);
    }
    return hsum_ps(acc) - acc_min;
}

float lp_vec_dot_q3_K_avx2(int64_t n, const void *w, const void *x) {
    const lp_block_q3_K *wb = w;
    const lp_block_q8_K *xb = x;
    __m256 acc = _mm256_setzero_ps();
    const __m256i one = _mm256_set1_epi8(1);
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        const uint8_t *s = wb[i].scales;
        int16_t sc[16];
        for (int j = 0; j < 16; j++) {
            int lo4 = j < 8 ? s[j] & 0xf : s[j - 8] >> 4;
            int hi2 = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
            sc[j] = (int16_t)((lo4 | hi2 << 4) - 32);
        }
        /* codes u = low2 + 4*h in [0,7]; q = u - 4, the -4 goes through bsums */
        __m256i hm = _mm256_loadu_si256((const __m256i *)wb[i].hmask);
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i qs = _mm256_loadu_si256((const __m256i *)(wb[i].qs + 32 * h));
            for (int k = 0; k < 4; k++) {
                int j = 8 * h + 2 * k; /* element block 32*(4h+k) uses hmask bit 4h+k */
                __m256i hbit = _mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(4 * h + k)), one);
                __m256i u = _mm256_or_si256(two_bit_plane(qs, k), _mm256_slli_epi16(hbit, 2));
                isum = _mm256_add_epi32(isum, chunk_dot(u, xb[i].qs + 16 * j, sc[j], sc[j + 1]));
            }
        }
        int offset = 4 * bsum_dot16(sc, xb[i].bsums);
        __m256 d = _mm256_set1_ps(xb[i].d * f16(wb[i].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(isum, _mm256_setr_epi32(offset, 0, 0, 0, 0, 0, 0, 0))), acc);
    }
    return hsum_ps(acc);
}

/* Q4_K/Q5_K 6-bit scales and mins; min[j] is repeated for both 16-halves of the
 * 32-element sub-block so it pairs with the activation's 16-element bsums. */
static inline void k4_scales(const uint8_t s[12], int16_t sc[8], int16_t mn16[16]) {
    for (int j = 0; j < 8; j++) {
        int m;
        if (j < 4) {
            sc[j] = s[j] & 63;
            m = s[j + 4] & 63;
        } else {
            sc[j] = (int16_t)((s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4));
            m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
        mn16[2 * j] = mn16[2 * j + 1] = (int16_t)m;
    }
}

/* Shared by Q4_K (qh == NULL) and Q5_K. */
static inline float dot_k45(int64_t n, const void *w, size_t block_bytes, const lp_block_q8_K *xb, bool five) {
    __m256 acc = _mm256_setzero_ps();
    float acc_min = 0;
    const __m256i low4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    const uint8_t *p = w;
    for (int64_t i = 0; i < n / LP_QK_K; i++, p += block_bytes) {
        /* Q4_K and Q5_K start alike: d, dmin, scales[12]; Q5_K then has qh[32] */
        const lp_block_q4_K *b4 = (const lp_block_q4_K *)p;
        const uint8_t *qh = five ? p + 16 : NULL;
        const uint8_t *qs = five ? p + 48 : p + 16;
        int16_t sc[8], mn16[16];
        k4_scales(b4->scales, sc, mn16);
        __m256i hbits = five ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
        __m256i isum = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, low4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
            if (five) { /* element 64c+l takes qh bit 2c, element 64c+32+l bit 2c+1 */
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hbits, one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 1), one), 4));
                hbits = _mm256_srli_epi16(hbits, 2);
            }
            isum = _mm256_add_epi32(isum, chunk_dot(lo, xb[i].qs + 64 * c, sc[2 * c], sc[2 * c]));
            isum = _mm256_add_epi32(isum, chunk_dot(hi, xb[i].qs + 64 * c + 32, sc[2 * c + 1], sc[2 * c + 1]));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(xb[i].d * f16(b4->d)), _mm256_cvtepi32_ps(isum), acc);
        acc_min += xb[i].d * f16(b4->dmin) * (float)bsum_dot16(mn16, xb[i].bsums);
    }
    return hsum_ps(acc) - acc_min;
}

float lp_vec_dot_q4_K_avx2(int64_t n, const void *w, const void *x) {
    return dot_k45(n, w, sizeof(lp_block_q4_K), x, false);
}

float lp_vec_dot_q5_K_avx2(int64_t n, const void *w, const void *x) {
    return dot_k45(n, w, sizeof(lp_block_q5_K), x, true);
}

float lp_vec_dot_q6_K_avx2(int64_t n, const void *w, const void *x) {
    const lp_block_q6_K *wb = w;
    const lp_block_q8_K *xb = x;
    __m256 acc = _mm256_setzero_ps();
    const __m256i low4 = _mm256_set1_epi8(0x0f), low2 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        int16_t sc[16];
        for (int j = 0; j < 16; j++) sc[j] = wb[i].scales[j];
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(wb[i].ql + 64 * h));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(wb[i].ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(wb[i].qh + 32 * h));
            /* unsigned 6-bit codes of the four 32-element chunks of this half */
            __m256i lo4[4] = {_mm256_and_si256(ql0, low4), _mm256_and_si256(ql1, low4),
                              _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                              _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4)};
            for (int k = 0; k < 4; k++) {
                __m256i hi2 = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), low2);
                __m256i u = _mm256_or_si256(lo4[k], _mm256_slli_epi16(hi2, 4));
                int j = 8 * h + 2 * k;
                isum = _mm256_add_epi32(isum, chunk_dot(u, xb[i].qs + 16 * j, sc[j], sc[j + 1]));
            }
        }
        int offset = 32 * bsum_dot16(sc, xb[i].bsums); /* codes are stored +32 */
        __m256 d = _mm256_set1_ps(xb[i].d * f16(wb[i].d));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(isum, _mm256_setr_epi32(offset, 0, 0, 0, 0, 0, 0, 0))), acc);
    }
    return hsum_ps(acc);
}

#else
/* ISO C forbids an empty translation unit. */
typedef int lp_qdot_avx2_unused;
#endif
