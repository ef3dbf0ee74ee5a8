/* qdot_avx2.c — owns the AVX2/FMA/F16C dot-product kernels (weights x activations)
 * for every weight type: F32, F16, BF16 (x F32), Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL,
 * MXFP4 (x Q8_0; Q4_1/Q5_x matter as llama-quantize's fallbacks for rows that are not a
 * multiple of 256, e.g. gpt-oss's 2880) and Q2_K..Q6_K (x Q8_K).
 *
 * Decode is memory bound, so each kernel reads every weight byte once, expands codes
 * to bytes in registers and multiplies with vpmaddubsw (unsigned codes x signed
 * activations -> pairwise i16), then vpmaddwd against the sub-block scale. Constant
 * offsets of the K-quants (-4 for Q3_K, -32 for Q6_K) and the mins are folded in through
 * the activation's bsums instead of per element. Results equal the scalar kernels up to
 * float summation order (tests/unit/test_qtype.c checks). Also here: batched x4 kernels
 * for prefill (one weight row, 4 tokens, bit-identical to the single-row kernels) and the
 * SIMD Q8_0 activation quantizer. */
#include "core/simd.h"
#include "quant/qblocks.h"

#if LP_QUANT_AVX2

#include <immintrin.h>
#include <string.h>


static inline float f16(uint16_t h) { return _cvtsh_ss(h); }

/* 8 x i32 partial sums of u[i]*s[i], u unsigned bytes, s signed. vpmaddubsw saturates
 * pairs at +-32767: fine for codes <= 63 (K-quants), and for |a| <= 128 against our
 * activations (quantizers keep them in [-127, 127]). */
static inline __m256i dot_u8_i8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* Same for two signed byte vectors: move a's sign onto b so vpmaddubsw sees |a|. */
static inline __m256i dot_i8_i8(__m256i a, __m256i b) {
    return dot_u8_i8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
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
    float sum = lp_hsum256(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))); \
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
    return lp_hsum256(acc);

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

/* Affine 4/5-bit types (Q4_1, Q5_1): unsigned codes, plus m*dx*sum(qx), all in one
 * vector accumulator. */
#define AFFINE32_DOT(type, codes)                                                         \
    const type *wb = w;                                                                   \
    const lp_block_q8_0 *xb = x;                                                          \
    __m256 acc = _mm256_setzero_ps();                                                     \
    const __m256i ones8 = _mm256_set1_epi8(1);                                            \
    for (int64_t i = 0; i < n / LP_QK; i++) {                                             \
        __m256i u = codes;                                                                \
        __m256i xq = _mm256_loadu_si256((const __m256i *)xb[i].qs);                       \
        float dx = f16(xb[i].d);                                                          \
        __m256 qdot = _mm256_cvtepi32_ps(dot_u8_i8(u, xq));                               \
        __m256 xsum = _mm256_cvtepi32_ps(dot_u8_i8(ones8, xq));                           \
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(wb[i].d) * dx), qdot, acc);              \
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(wb[i].m) * dx), xsum, acc);              \
    }                                                                                     \
    return lp_hsum256(acc);

/* Bit e of a little-endian u32 -> 0x10 in byte e (the fifth bit of Q5 codes). */
static inline __m256i fifth_bits(const uint8_t qh[4]) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i spread = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), spread); /* byte e = qh[e/8] */
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

float lp_vec_dot_q4_1_avx2(int64_t n, const void *w, const void *x) {
    AFFINE32_DOT(lp_block_q4_1, expand_nibbles(wb[i].qs))
}

float lp_vec_dot_q5_1_avx2(int64_t n, const void *w, const void *x) {
    AFFINE32_DOT(lp_block_q5_1, _mm256_or_si256(expand_nibbles(wb[i].qs), fifth_bits(wb[i].qh)))
}

float lp_vec_dot_q5_0_avx2(int64_t n, const void *w, const void *x) {
    BLOCK32_DOT(lp_block_q5_0,
                _mm256_sub_epi8(_mm256_or_si256(expand_nibbles(wb[i].qs), fifth_bits(wb[i].qh)), _mm256_set1_epi8(16)),
                f16(wb[i].d))
}

/* ---- K-quants x Q8_K ---- */

/* Types with 16 sub-blocks of 16 (Q2_K, Q3_K, Q6_K) keep their scales as 16 x i16 in
 * one register (lane 0: sub-blocks 0..7, lane 1: 8..15). A 32-element chunk k covers
 * sub-blocks 2k and 2k+1, i.e. needs scale 2k in the low lane and 2k+1 in the high one:
 * broadcast the right 8-scale half to both lanes, then one vpshufb per chunk. */
typedef struct {
    __m256i half[2]; /* scales 0..7 / 8..15 in both lanes */
} scales16;

static inline scales16 scales16_make(__m256i sc) {
    scales16 r = {{_mm256_permute2x128_si256(sc, sc, 0x00), _mm256_permute2x128_si256(sc, sc, 0x11)}};
    return r;
}

static inline __m256i scales16_pair(const scales16 *s, int k) {
    /* shuffle control for k % 4 = m: words 2m (low lane) and 2m+1 (high lane) */
    static const uint8_t ctrl[4][32] __attribute__((aligned(32))) = {
        {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3},
        {4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7, 6, 7},
        {8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 8, 9, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11, 10, 11},
        {12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 12, 13, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15, 14, 15},
    };
    return _mm256_shuffle_epi8(s->half[k / 4], _mm256_load_si256((const __m256i *)ctrl[k % 4]));
}

/* 32 unsigned codes x 32 activations, weighted by a per-lane i16 scale vector. */
static inline __m256i chunk_dot_v(__m256i u, const int8_t *x, __m256i sc) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)x)), sc);
}

/* sum_k c[k] * bsums[k] for 16 i16 weights in a register. */
static inline int bsum_dot16(__m256i c, const int16_t bsums[16]) {
    __m256i p = _mm256_madd_epi16(c, _mm256_loadu_si256((const __m256i *)bsums));
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

/* Subtract a per-block integer offset from lane 0 of an i32 accumulator. */
static inline __m256i sub_lane0(__m256i v, int offset) {
    return _mm256_sub_epi32(v, _mm256_castsi128_si256(_mm_cvtsi32_si128(offset)));
}

float lp_vec_dot_q2_K_avx2(int64_t n, const void *w, const void *x) {
    const lp_block_q2_K *wb = w;
    const lp_block_q8_K *xb = x;
    __m256 acc = _mm256_setzero_ps();
    float acc_min = 0;
    const __m128i low4 = _mm_set1_epi8(0x0f);
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        __m128i packed = _mm_loadu_si128((const __m128i *)wb[i].scales); /* scale | min << 4 */
        __m256i sc = _mm256_cvtepu8_epi16(_mm_and_si128(packed, low4));
        __m256i mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), low4));
        scales16 s16 = scales16_make(sc);
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i qs = _mm256_loadu_si256((const __m256i *)(wb[i].qs + 32 * h));
            for (int s = 0; s < 4; s++) {
                int k = 4 * h + s; /* chunk k = elements 32k..32k+31 */
                isum = _mm256_add_epi32(isum, chunk_dot_v(two_bit_plane(qs, s), xb[i].qs + 32 * k, scales16_pair(&s16, k)));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(xb[i].d * f16(wb[i].d)), _mm256_cvtepi32_ps(isum), acc);
        acc_min += xb[i].d * f16(wb[i].dmin) * (float)bsum_dot16(mn, xb[i].bsums);
    }
    return lp_hsum256(acc) - acc_min;
}

/* Q3_K's 16 6-bit scales (docs/FORMATS.md s.6.5) four at a time with 32-bit masks:
 * low nibbles from bytes 0..7 (scales 8..15 in their high nibbles), top two bits from
 * bytes 8..11 at bit 2*(j/4). Result: 16 x i8, bias 32 removed. */
static inline __m128i q3_scales(const uint8_t s[12]) {
    uint32_t a[3], out[4];
    memcpy(a, s, 12);
    const uint32_t low4 = 0x0f0f0f0f, low2 = 0x03030303;
    out[0] = (a[0] & low4) | (a[2] & low2) << 4;
    out[1] = (a[1] & low4) | ((a[2] >> 2) & low2) << 4;
    out[2] = ((a[0] >> 4) & low4) | ((a[2] >> 4) & low2) << 4;
    out[3] = ((a[1] >> 4) & low4) | ((a[2] >> 6) & low2) << 4;
    return _mm_sub_epi8(_mm_loadu_si128((const __m128i *)out), _mm_set1_epi8(32));
}

float lp_vec_dot_q3_K_avx2(int64_t n, const void *w, const void *x) {
    const lp_block_q3_K *wb = w;
    const lp_block_q8_K *xb = x;
    __m256 acc = _mm256_setzero_ps();
    const __m256i one = _mm256_set1_epi8(1);
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        __m256i sc = _mm256_cvtepi8_epi16(q3_scales(wb[i].scales));
        scales16 s16 = scales16_make(sc);
        /* codes u = low2 + 4*h in [0,7]; q = u - 4, the -4 goes through bsums */
        __m256i hm = _mm256_loadu_si256((const __m256i *)wb[i].hmask);
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i qs = _mm256_loadu_si256((const __m256i *)(wb[i].qs + 32 * h));
            for (int s = 0; s < 4; s++) {
                int k = 4 * h + s; /* chunk k uses hmask bit k */
                __m256i u = _mm256_or_si256(two_bit_plane(qs, s), _mm256_slli_epi16(_mm256_and_si256(hm, one), 2));
                hm = _mm256_srli_epi16(hm, 1);
                isum = _mm256_add_epi32(isum, chunk_dot_v(u, xb[i].qs + 32 * k, scales16_pair(&s16, k)));
            }
        }
        isum = sub_lane0(isum, 4 * bsum_dot16(sc, xb[i].bsums));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(xb[i].d * f16(wb[i].d)), _mm256_cvtepi32_ps(isum), acc);
    }
    return lp_hsum256(acc);
}

/* Q4_K/Q5_K 6-bit scales and mins, four at a time with 32-bit masks (the packing of
 * docs/FORMATS.md s.6.6): sc[0..3] and m[0..3] are the low 6 bits of bytes 0..3 and
 * 4..7; sc[4..7] / m[4..7] take their low nibble from bytes 8..11 and their top two
 * bits from bits 6..7 of bytes 0..3 / 4..7. */
static inline void k4_scales(const uint8_t s[12], uint8_t sc[8], uint8_t mn[8]) {
    uint32_t a[3], out[4];
    memcpy(a, s, 12);
    const uint32_t low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, low2 = 0x03030303;
    out[0] = a[0] & low6;
    out[1] = (a[2] & low4) | ((a[0] >> 6) & low2) << 4;
    out[2] = a[1] & low6;
    out[3] = ((a[2] >> 4) & low4) | ((a[1] >> 6) & low2) << 4;
    memcpy(sc, out, 8);
    memcpy(mn, out + 2, 8);
}

/* sum_j mn[j] * (bsums[2j] + bsums[2j+1]): the min term of a 32-element sub-block. */
static inline int k4_min_dot(const uint8_t mn[8], const int16_t bsums[16]) {
    __m128i b0 = _mm_loadu_si128((const __m128i *)bsums), b1 = _mm_loadu_si128((const __m128i *)(bsums + 8));
    __m128i pairs = _mm_hadd_epi16(b0, b1); /* |pair| <= 2*16*127: no overflow */
    __m128i m = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)mn));
    __m128i p = _mm_madd_epi16(pairs, m);
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0x4e));
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0xb1));
    return _mm_cvtsi128_si32(p);
}

/* Row t of a batch of activation rows `stride` bytes apart. */
#define X4_ROW(x, t, stride, type) ((const type *)((const uint8_t *)(x) + (size_t)(t) * (stride)))
#define LP_ALWAYS_INLINE inline __attribute__((always_inline))

/* Q4_K (five false) and Q5_K against T (1 or 4) activation rows xs bytes apart: the
 * nibbles (and Q5_K's fifth bits) are split once per block and serve every row, each
 * row's arithmetic in the same order, so vec_dot and the x4 kernel agree bit for bit.
 * Inlined with a constant T, the single-row case is its own specialised loop. */
static LP_ALWAYS_INLINE void dot_k45_rows(int64_t n, const void *w, size_t block_bytes, const void *x, size_t xs, bool five,
                                          int T, float *out) {
    const lp_block_q8_K *xb[4];
    for (int t = 0; t < T; t++) xb[t] = X4_ROW(x, t, xs, lp_block_q8_K);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    float acc_min[4] = {0, 0, 0, 0};
    const __m256i low4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    const uint8_t *p = w;
    for (int64_t i = 0; i < n / LP_QK_K; i++, p += block_bytes) {
        /* Q4_K and Q5_K start alike: d, dmin, scales[12]; Q5_K then has qh[32] */
        const lp_block_q4_K *b4 = (const lp_block_q4_K *)p;
        const uint8_t *qh = five ? p + 16 : NULL;
        const uint8_t *qs = five ? p + 48 : p + 16;
        uint8_t sc[8], mn[8];
        k4_scales(b4->scales, sc, mn);
        __m256i hbits = five ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
        __m256i isum[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                           _mm256_setzero_si256()};
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, low4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
            if (five) { /* element 64c+l takes qh bit 2c, element 64c+32+l bit 2c+1 */
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(hbits, one), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 1), one), 4));
                hbits = _mm256_srli_epi16(hbits, 2);
            }
            const __m256i slo = _mm256_set1_epi16(sc[2 * c]), shi = _mm256_set1_epi16(sc[2 * c + 1]);
            for (int t = 0; t < T; t++) {
                isum[t] = _mm256_add_epi32(isum[t], chunk_dot_v(lo, xb[t][i].qs + 64 * c, slo));
                isum[t] = _mm256_add_epi32(isum[t], chunk_dot_v(hi, xb[t][i].qs + 64 * c + 32, shi));
            }
        }
        const float dw = f16(b4->d), dmin = f16(b4->dmin);
        for (int t = 0; t < T; t++) {
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(xb[t][i].d * dw), _mm256_cvtepi32_ps(isum[t]), acc[t]);
            acc_min[t] += xb[t][i].d * dmin * (float)k4_min_dot(mn, xb[t][i].bsums);
        }
    }
    for (int t = 0; t < T; t++) out[t] = lp_hsum256(acc[t]) - acc_min[t];
}

/* Q6_K against T (1 or 4) activation rows, as dot_k45_rows. */
static LP_ALWAYS_INLINE void q6_K_rows(int64_t n, const void *w, const void *x, size_t xs, int T, float *out) {
    const lp_block_q6_K *wb = w;
    const lp_block_q8_K *xb[4];
    for (int t = 0; t < T; t++) xb[t] = X4_ROW(x, t, xs, lp_block_q8_K);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const __m256i low4 = _mm256_set1_epi8(0x0f), low2 = _mm256_set1_epi8(3);
    for (int64_t i = 0; i < n / LP_QK_K; i++) {
        __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)wb[i].scales));
        scales16 s16 = scales16_make(sc);
        __m256i isum[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                           _mm256_setzero_si256()};
        for (int h = 0; h < 2; h++) {
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(wb[i].ql + 64 * h));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(wb[i].ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(wb[i].qh + 32 * h));
            /* low nibbles of the four 32-element chunks of this half */
            __m256i lo4[4] = {_mm256_and_si256(ql0, low4), _mm256_and_si256(ql1, low4),
                              _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                              _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4)};
            for (int s = 0; s < 4; s++) {
                __m256i u = _mm256_or_si256(lo4[s], _mm256_slli_epi16(_mm256_and_si256(qh, low2), 4));
                qh = _mm256_srli_epi16(qh, 2);
                int k = 4 * h + s;
                __m256i scp = scales16_pair(&s16, k);
                for (int t = 0; t < T; t++)
                    isum[t] = _mm256_add_epi32(isum[t], chunk_dot_v(u, xb[t][i].qs + 32 * k, scp));
            }
        }
        const float dw = f16(wb[i].d);
        for (int t = 0; t < T; t++) {
            __m256i s = sub_lane0(isum[t], 32 * bsum_dot16(sc, xb[t][i].bsums)); /* codes are stored +32 */
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(xb[t][i].d * dw), _mm256_cvtepi32_ps(s), acc[t]);
        }
    }
    for (int t = 0; t < T; t++) out[t] = lp_hsum256(acc[t]);
}

float lp_vec_dot_q4_K_avx2(int64_t n, const void *w, const void *x) {
    float r;
    dot_k45_rows(n, w, sizeof(lp_block_q4_K), x, 0, false, 1, &r);
    return r;
}

float lp_vec_dot_q5_K_avx2(int64_t n, const void *w, const void *x) {
    float r;
    dot_k45_rows(n, w, sizeof(lp_block_q5_K), x, 0, true, 1, &r);
    return r;
}

float lp_vec_dot_q6_K_avx2(int64_t n, const void *w, const void *x) {
    float r;
    q6_K_rows(n, w, x, 0, 1, &r);
    return r;
}

/* ---- batched (x4) kernels for prefill ----
 * Each repeats its single-row kernel's arithmetic per token, in the same order, so the
 * results are bit-identical; only the weight loads and unpacking are shared (the
 * K-quant ones are the single-row bodies above with T = 4). */

static void vec_dot_q8_0_x4(int64_t n, const void *w, const void *x, size_t xs, float out[4]) {
    const lp_block_q8_0 *wb = w;
    const lp_block_q8_0 *xb[4] = {X4_ROW(x, 0, xs, lp_block_q8_0), X4_ROW(x, 1, xs, lp_block_q8_0),
                                  X4_ROW(x, 2, xs, lp_block_q8_0), X4_ROW(x, 3, xs, lp_block_q8_0)};
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < n / LP_QK; i++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)wb[i].qs);
        __m256i aq = _mm256_sign_epi8(q, q); /* dot_i8_i8's |w|, shared by the 4 tokens */
        float dw = f16(wb[i].d);
        for (int t = 0; t < 4; t++) {
            __m256i xq = _mm256_loadu_si256((const __m256i *)xb[t][i].qs);
            __m256 d = _mm256_set1_ps(dw * f16(xb[t][i].d));
            acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_u8_i8(aq, _mm256_sign_epi8(xq, q))), acc[t]);
        }
    }
    for (int t = 0; t < 4; t++) out[t] = lp_hsum256(acc[t]);
}

static void vec_dot_q4_K_x4(int64_t n, const void *w, const void *x, size_t xs, float out[4]) {
    dot_k45_rows(n, w, sizeof(lp_block_q4_K), x, xs, false, 4, out);
}

static void vec_dot_q5_K_x4(int64_t n, const void *w, const void *x, size_t xs, float out[4]) {
    dot_k45_rows(n, w, sizeof(lp_block_q5_K), x, xs, true, 4, out);
}

static void vec_dot_q6_K_x4(int64_t n, const void *w, const void *x, size_t xs, float out[4]) {
    q6_K_rows(n, w, x, xs, 4, out);
}

/* ---- activation quantizer ---- */

/* lp_from_float_act_q8_0 on 8 lanes: llama.cpp's quantize_row_q8_0 for x86 instruction
 * for instruction (id = 127/amax, round half to even, saturating packs), so the blocks
 * are byte-identical to both. It runs on every token's activations for Q8_0-family
 * weights, where a scalar loop showed up at ~9% of prefill. */
static void from_float_q8_0(const float *x, void *vy, int64_t n) {
    lp_block_q8_0 *y = vy;
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int64_t i = 0; i < n / LP_QK; i++, x += LP_QK) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(x + 8 * j);
            m = _mm256_max_ps(m, _mm256_and_ps(v[j], abs_mask));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        y[i].d = lp_f32_to_f16(amax / 127.f);
        const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.f / amax : 0.0f);
        __m256i q[4];
        for (int j = 0; j < 4; j++) {
            const __m256 r = _mm256_round_ps(_mm256_mul_ps(v[j], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            q[j] = _mm256_cvtps_epi32(r);
        }
        /* i32 -> i8 with signed saturation, then undo the lane interleave of the packs */
        __m256i w16 = _mm256_packs_epi32(q[0], q[1]), w16b = _mm256_packs_epi32(q[2], q[3]);
        __m256i b8 = _mm256_packs_epi16(w16, w16b);
        b8 = _mm256_permutevar8x32_epi32(b8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[i].qs, b8);
    }
}

#endif

/* The fastest activation quantizer for vec_dot_type t (same bytes as lp_from_float_act). */
lp_from_float_fn lp_from_float_fast(lp_type t) {
#if LP_QUANT_AVX2
    if (t == LP_TYPE_Q8_0) return from_float_q8_0;
#elif LP_QUANT_NEON
    return lp_from_float_fast_neon(t);
#endif
    return lp_from_float_act(t);
}

/* Which types have a batched kernel: data, not a switch at the call site. */
lp_vec_dot_x4_fn lp_vec_dot_x4(lp_type t) {
#if LP_QUANT_AVX2
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
#elif LP_QUANT_NEON
    return lp_vec_dot_x4_neon(t);
#endif
    (void)t;
    return NULL;
}
