/* mlx_types.c — owns the runtime block types for MLX affine weights (mlx_types.h):
 * their traits rows (one per bits x group, generated from one set of kernels that
 * the compiler specialises per pair), the repacking of MLX rows into blocks, and
 * the block kernels: dequantize, quantize (MLX's quantizer from mlx_affine.c, for
 * tests and tools) and the f32-activation dot product (AVX2 when built with it). */
#include "quant/mlx_types.h"

#include <string.h>

#include "quant/mlx_affine.h"
#include "quant/qblocks.h"

#if LP_QUANT_AVX2
#include <immintrin.h>
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))

static const int widths[] = {2, 3, 4, 5, 6, 8};
static const int groups[] = {32, 64, 128};
enum { N_WIDTHS = 6, N_GROUPS = 3 };

size_t lp_mlx_block_bytes(int bits, int group) { return 8 + (size_t)group * (size_t)bits / 8; }

/* ---- block access: f32 scale, f32 bias, then the group's code words ---- */

ALWAYS_INLINE float block_scale(const uint8_t *b) {
    float f;
    memcpy(&f, b, sizeof f);
    return f;
}

ALWAYS_INLINE float block_bias(const uint8_t *b) {
    float f;
    memcpy(&f, b + 4, sizeof f);
    return f;
}

/* Code k of a little-endian bit stream of `bits`-wide codes (k*bits is the stream bit). */
ALWAYS_INLINE uint32_t stream_code(const uint8_t *codes, int k, int bits) {
    int bit = k * bits;
    uint32_t two = codes[bit >> 3];
    if ((bit & 7) + bits > 8) two |= (uint32_t)codes[(bit >> 3) + 1] << 8;
    return (two >> (bit & 7)) & ((1u << bits) - 1);
}

void lp_mlx_pack_blocks(const void *words, const float *scales, const float *biases, int64_t n, int bits,
                        int group, void *dst) {
    const size_t code_bytes = (size_t)group * (size_t)bits / 8;
    uint8_t *out = dst;
    for (int64_t g = 0; g < n / group; g++, out += 8 + code_bytes) {
        memcpy(out, &scales[g], 4);
        memcpy(out + 4, &biases[g], 4);
        memcpy(out + 8, (const uint8_t *)words + (size_t)g * code_bytes, code_bytes);
    }
}

ALWAYS_INLINE void blocks_to_float(const void *src, float *dst, int64_t n, int bits, int group) {
    const size_t bb = lp_mlx_block_bytes(bits, group);
    const uint8_t *b = src;
    for (int64_t g = 0; g < n / group; g++, b += bb, dst += group) {
        const float scale = block_scale(b), bias = block_bias(b);
        for (int k = 0; k < group; k++) dst[k] = scale * (float)stream_code(b + 8, k, bits) + bias;
    }
}

ALWAYS_INLINE void blocks_from_float(const float *src, void *dst, int64_t n, int bits, int group) {
    const size_t bb = lp_mlx_block_bytes(bits, group);
    uint8_t *b = dst;
    for (int64_t g = 0; g < n / group; g++, b += bb, src += group) {
        uint32_t words[32]; /* 128 codes of 8 bits at most */
        float scale, bias;
        lp_mlx_quantize_row(src, group, bits, group, words, &scale, &bias);
        lp_mlx_pack_blocks(words, &scale, &bias, group, bits, group, b);
    }
}

/* ---- dot: sum over groups of scale * sum(q*x) + bias * sum(x) ---- */

#if LP_QUANT_AVX2
static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* n (<= 8) little-endian bytes as an integer, with register-sized loads only (a memcpy
 * of 3/5/6 bytes into a stack word stalls on store forwarding, 10x slower). */
ALWAYS_INLINE uint64_t load_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    int at = 0;
    if (n >= 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        v = w, at = 4;
    }
    if (n - at >= 2) {
        uint16_t h;
        memcpy(&h, p + at, 2);
        v |= (uint64_t)h << 8 * at, at += 2;
    }
    if (n - at >= 1) v |= (uint64_t)p[at] << 8 * at;
    return v;
}

/* Codes j..j+7 of a block (j a multiple of 8) as 8 int32 lanes. 8 codes of b bits take
 * exactly b bytes at byte j*b/8; codes 0-3 sit in the low 32 bits of those bytes and
 * codes 4-7 in the 32 bits from bit 4b, so one variable shift per lane extracts all 8. */
ALWAYS_INLINE __m256i codes8(const uint8_t *codes, int j, int bits) {
    if (bits == 8) return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j)));
    const uint64_t v = load_le(codes + j * bits / 8, bits);
    const __m256i both = _mm256_set_m128i(_mm_set1_epi32((int)(uint32_t)(v >> 4 * bits)), _mm_set1_epi32((int)(uint32_t)v));
    const __m256i shifts = _mm256_setr_epi32(0, bits, 2 * bits, 3 * bits, 0, bits, 2 * bits, 3 * bits);
    return _mm256_and_si256(_mm256_srlv_epi32(both, shifts), _mm256_set1_epi32((1 << bits) - 1));
}

ALWAYS_INLINE float blocks_dot(int64_t n, const void *w, const void *xv, int bits, int group) {
    const size_t bb = lp_mlx_block_bytes(bits, group);
    const uint8_t *b = w;
    const float *x = xv;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t g = 0; g < n / group; g++, b += bb, x += group) {
        __m256 qx = _mm256_setzero_ps(), sx = _mm256_setzero_ps();
        for (int j = 0; j < group; j += 8) {
            const __m256 q = _mm256_cvtepi32_ps(codes8(b + 8, j, bits));
            const __m256 xj = _mm256_loadu_ps(x + j);
            qx = _mm256_fmadd_ps(q, xj, qx);
            sx = _mm256_add_ps(sx, xj);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(block_scale(b)), qx, acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(block_bias(b)), sx, acc);
    }
    return hsum8(acc);
}
#else
ALWAYS_INLINE float blocks_dot(int64_t n, const void *w, const void *xv, int bits, int group) {
    const size_t bb = lp_mlx_block_bytes(bits, group);
    const uint8_t *b = w;
    const float *x = xv;
    float sum = 0;
    for (int64_t g = 0; g < n / group; g++, b += bb, x += group) {
        float qx = 0, sx = 0;
        for (int k = 0; k < group; k++) {
            qx += (float)stream_code(b + 8, k, bits) * x[k];
            sx += x[k];
        }
        sum += block_scale(b) * qx + block_bias(b) * sx;
    }
    return sum;
}
#endif

/* ---- one specialised set of kernels per (bits, group) ---- */

#define MLX_KERNELS(b, g)                                                                                    \
    static void to_float_##b##_##g(const void *s, float *d, int64_t n) { blocks_to_float(s, d, n, b, g); }   \
    static void from_float_##b##_##g(const float *s, void *d, int64_t n) { blocks_from_float(s, d, n, b, g); } \
    static float vec_dot_##b##_##g(int64_t n, const void *w, const void *x) { return blocks_dot(n, w, x, b, g); }
#define MLX_KERNELS_ALL_GROUPS(b) MLX_KERNELS(b, 32) MLX_KERNELS(b, 64) MLX_KERNELS(b, 128)
MLX_KERNELS_ALL_GROUPS(2)
MLX_KERNELS_ALL_GROUPS(3)
MLX_KERNELS_ALL_GROUPS(4)
MLX_KERNELS_ALL_GROUPS(5)
MLX_KERNELS_ALL_GROUPS(6)
MLX_KERNELS_ALL_GROUPS(8)

#define MLX_ROW(b, g)                                                                                          \
    {"mlx_q" #b "_g" #g, g, 8 + (g) * (b) / 8, true, to_float_##b##_##g, from_float_##b##_##g, LP_TYPE_F32, \
     vec_dot_##b##_##g}
#define MLX_ROWS_ALL_GROUPS(b) MLX_ROW(b, 32), MLX_ROW(b, 64), MLX_ROW(b, 128)

/* Indexed like widths[] x groups[] (id - LP_TYPE_MLX_FIRST = width_index * N_GROUPS + group_index). */
static const lp_qtype_traits traits[LP_TYPE_MLX_COUNT] = {
    MLX_ROWS_ALL_GROUPS(2), MLX_ROWS_ALL_GROUPS(3), MLX_ROWS_ALL_GROUPS(4),
    MLX_ROWS_ALL_GROUPS(5), MLX_ROWS_ALL_GROUPS(6), MLX_ROWS_ALL_GROUPS(8),
};
_Static_assert(N_WIDTHS * N_GROUPS == LP_TYPE_MLX_COUNT, "one traits row per (bits, group)");

static int index_of(const int *list, int n, int v) {
    for (int i = 0; i < n; i++)
        if (list[i] == v) return i;
    return -1;
}

lp_type lp_mlx_type(int bits, int group) {
    int wi = index_of(widths, N_WIDTHS, bits), gi = index_of(groups, N_GROUPS, group);
    if (wi < 0 || gi < 0) return (lp_type)-1;
    return (lp_type)(LP_TYPE_MLX_FIRST + wi * N_GROUPS + gi);
}

bool lp_type_is_mlx(lp_type t) { return (int)t >= LP_TYPE_MLX_FIRST && (int)t < LP_TYPE_MLX_FIRST + LP_TYPE_MLX_COUNT; }

const lp_qtype_traits *lp_mlx_qtype(lp_type t) { return lp_type_is_mlx(t) ? &traits[t - LP_TYPE_MLX_FIRST] : NULL; }

int lp_mlx_type_bits(lp_type t) { return lp_type_is_mlx(t) ? widths[(t - LP_TYPE_MLX_FIRST) / N_GROUPS] : 0; }

int lp_mlx_type_group(lp_type t) { return lp_type_is_mlx(t) ? groups[(t - LP_TYPE_MLX_FIRST) % N_GROUPS] : 0; }
