/* mlx_affine.c — owns MLX affine group quantization: the f32 quantizer of MLX's CPU
 * reference (docs/FORMATS.md s.8.1), the little-endian bit-stream packing of 2/3/4/5/6/8
 * bit codes into uint32 words (s.8.2), dequantization and the row dot product (AVX2
 * for 4 and 8 bits, where codes never straddle a word).
 *
 * Parameters are a precondition (lp_mlx_params_valid, n a multiple of group). With
 * invalid ones quantize writes nothing (output sizes are unknowable then), dequantize
 * fills y with NaN and dot returns NaN, so the mistake cannot go unnoticed. */
#include "core/simd.h"
#include "quant/mlx_affine.h"

#include "quant/qblocks.h"

#include <math.h>
#include <string.h>

#if LP_QUANT_AVX2
#include <immintrin.h>
#endif

bool lp_mlx_params_valid(int bits, int group) {
    bool bits_ok = bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
    bool group_ok = group == 32 || group == 64 || group == 128;
    return bits_ok && group_ok;
}

int64_t lp_mlx_row_words(int64_t n, int bits) {
    if (n <= 0 || bits <= 0) return 0;
    return (n * bits + 31) / 32;
}

static bool row_ok(int64_t n, int bits, int group) {
    return lp_mlx_params_valid(bits, group) && n > 0 && n % group == 0;
}

/* ---- bit stream: element k at stream bits [k*bits, (k+1)*bits), bit t of the stream
 * is bit t%32 of word t/32 ---- */

static inline void put_code(uint32_t *w, int64_t k, int bits, uint32_t code) {
    int64_t t = k * bits;
    int off = (int)(t & 31);
    w[t >> 5] |= code << off;
    if (off + bits > 32) w[(t >> 5) + 1] |= code >> (32 - off);
}

static inline uint32_t get_code(const uint32_t *w, int64_t k, int bits) {
    int64_t t = k * bits;
    int off = (int)(t & 31);
    uint64_t two = w[t >> 5];
    if (off + bits > 32) two |= (uint64_t)w[(t >> 5) + 1] << 32;
    return (uint32_t)(two >> off) & ((1u << bits) - 1);
}

/* ---- quantize ---- */

/* MLX CPU reference for one group, all in f32. The scale is signed so that the
 * larger-magnitude extreme ("edge") is hit exactly by an integer code q0, which makes
 * bias = edge and keeps zero exactly representable (w = 0 -> code -q0). */
static void quantize_group(const float *x, int group, int bits, float *scale_out, float *bias_out, uint32_t *codes) {
    const float n_bins = (float)((1 << bits) - 1);
    const float eps = 1e-7f;
    float w_min = INFINITY, w_max = -INFINITY;
    for (int j = 0; j < group; j++) { /* std::max / std::min semantics */
        w_max = w_max < x[j] ? x[j] : w_max;
        w_min = x[j] < w_min ? x[j] : w_min;
    }
    bool mask = fabsf(w_min) > fabsf(w_max);
    float scale = fmaxf((w_max - w_min) / n_bins, eps);
    scale = mask ? scale : -scale;
    float edge = mask ? w_min : w_max;
    float q0 = rintf(edge / scale);
    float bias = 0;
    if (q0 != 0) {
        scale = edge / q0;
        bias = edge;
    }
    for (int j = 0; j < group; j++) {
        float q = rintf((x[j] - bias) / scale);
        q = q < 0.0f ? 0.0f : q;
        q = n_bins < q ? n_bins : q;
        codes[j] = (uint32_t)q;
    }
    *scale_out = scale;
    *bias_out = bias;
}

void lp_mlx_quantize_row(const float *x, int64_t n, int bits, int group, uint32_t *w, float *scales, float *biases) {
    if (!row_ok(n, bits, group)) return;
    memset(w, 0, (size_t)lp_mlx_row_words(n, bits) * sizeof *w);
    uint32_t codes[128];
    for (int64_t g = 0; g < n / group; g++) {
        quantize_group(x + g * group, group, bits, &scales[g], &biases[g], codes);
        for (int j = 0; j < group; j++) put_code(w, g * group + j, bits, codes[j]);
    }
}

/* ---- dequantize ---- */

void lp_mlx_dequantize_row(const uint32_t *w, const float *scales, const float *biases, int64_t n, int bits, int group,
                           float *y) {
    if (!row_ok(n, bits, group)) {
        for (int64_t i = 0; i < n; i++) y[i] = NAN;
        return;
    }
    for (int64_t k = 0; k < n; k++) {
        int64_t g = k / group;
        y[k] = scales[g] * (float)get_code(w, k, bits) + biases[g];
    }
}

/* ---- dot ---- */

/* sum_g scale_g * sum(q*x) + bias_g * sum(x): the bias needs no per-element multiply. */
float lp_mlx_dot_row_scalar(const uint32_t *w, const float *scales, const float *biases, int64_t n, int bits, int group,
                            const float *x) {
    if (!row_ok(n, bits, group)) return NAN;
    float sum = 0;
    for (int64_t g = 0; g < n / group; g++) {
        float qx = 0, sx = 0;
        for (int64_t k = g * group; k < (g + 1) * group; k++) {
            qx += (float)get_code(w, k, bits) * x[k];
            sx += x[k];
        }
        sum += scales[g] * qx + biases[g] * sx;
    }
    return sum;
}

#if LP_QUANT_AVX2

/* 8 codes -> 8 floats. 4-bit: one word, code k at bits 4k. 8-bit: two words = 8 bytes. */
static inline __m256 codes8_4bit(const uint32_t *w) {
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    __m256i v = _mm256_srlv_epi32(_mm256_set1_epi32((int)w[0]), shifts);
    return _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(0xf)));
}

static inline __m256 codes8_8bit(const uint32_t *w) {
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)w)));
}

static float dot_row_avx2(const uint32_t *w, const float *scales, const float *biases, int64_t n, int bits, int group,
                          const float *x) {
    const int words_per_8 = bits / 4; /* 8 codes take 1 word at 4 bits, 2 at 8 bits */
    __m256 acc = _mm256_setzero_ps();
    for (int64_t g = 0; g < n / group; g++) {
        __m256 qx = _mm256_setzero_ps(), sx = _mm256_setzero_ps();
        for (int j = 0; j < group; j += 8, w += words_per_8, x += 8) {
            __m256 q = bits == 4 ? codes8_4bit(w) : codes8_8bit(w);
            __m256 xv = _mm256_loadu_ps(x);
            qx = _mm256_fmadd_ps(q, xv, qx);
            sx = _mm256_add_ps(sx, xv);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(scales[g]), qx, acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(biases[g]), sx, acc);
    }
    return lp_hsum256(acc);
}
#endif

float lp_mlx_dot_row(const uint32_t *w, const float *scales, const float *biases, int64_t n, int bits, int group,
                     const float *x) {
#if LP_QUANT_AVX2
    if ((bits == 4 || bits == 8) && row_ok(n, bits, group)) return dot_row_avx2(w, scales, biases, n, bits, group, x);
#endif
    return lp_mlx_dot_row_scalar(w, scales, biases, n, bits, group, x);
}
