/* cpu_matmul.c — the CPU matmul: y[n][M] = x[n][K] · W^T for any weight type.
 *
 * Work is cut into tiles of ROW_TILE weight rows x TOK_TILE tokens and spread
 * over the pool; each tile reads its weight rows once for all its tokens (decode
 * at batch 1 is memory-bound, prefill reuses every row TOK_TILE times).
 *  - float weights (F32/F16/BF16): the tile's rows are converted to F32 once and
 *    multiplied with the F32 activations — the same arithmetic as HF in float32.
 *  - quantized weights: ggml's scheme; the activations are converted once to the
 *    type's vec_dot_type and the traits' vec_dot multiplies row by row, so results
 *    match llama.cpp's CPU backend. Prefill goes 4 tokens at a time through the
 *    type's batched kernel where it has one (lp_vec_dot_x4: same bits as vec_dot). With cfg.f32_activations they take the float
 *    path instead (exact for lossless sources such as gpt-oss's MXFP4 experts). */
#include "core/simd.h"
#include <string.h>

#include "cpu_internal.h"
#include "quant/qblocks.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LP_CPU_AVX2 1
#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define LP_CPU_NEON 1
#endif

enum { ROW_TILE = 16, TOK_TILE = 32 };

#ifdef LP_CPU_AVX2
#endif

float cpu_dot_f32(const float *a, const float *b, int n) {
    int i = 0;
    float sum = 0.0f;
#ifdef LP_CPU_AVX2
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    sum = lp_hsum256(_mm256_add_ps(acc0, acc1));
#elif defined(LP_CPU_NEON)
    float32x4_t acc0 = vdupq_n_f32(0), acc1 = acc0;
    for (; i + 8 <= n; i += 8) {
        acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), vld1q_f32(b + i));
        acc1 = vfmaq_f32(acc1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    }
    for (; i + 4 <= n; i += 4) acc0 = vfmaq_f32(acc0, vld1q_f32(a + i), vld1q_f32(b + i));
    sum = vaddvq_f32(vaddq_f32(acc0, acc1));
#endif
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

void cpu_axpy_f32(float a, const float *x, float *y, int n) {
    int i = 0;
#ifdef LP_CPU_AVX2
    __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#elif defined(LP_CPU_NEON)
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
#endif
    for (; i < n; i++) y[i] += a * x[i];
}

/* Four weight rows times NX (1 or 2) activation rows: out[r][t]. The weights are
 * F32 (stride ld floats) or, for the batch-1 path, BF16/F16 widened in registers.
 * Every row's sum is formed the same way (8 lanes along k, lanes summed, scalar
 * tail) whatever NX and the weight layout, so a token's logits do not depend on
 * what else was in its batch. */
#ifdef LP_CPU_AVX2
static inline __m256 load8(const void *w, lp_type type, size_t off) {
    if (type == LP_TYPE_BF16)
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + off))), 16));
#ifdef __F16C__
    if (type == LP_TYPE_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + off)));
#endif
    return _mm256_loadu_ps((const float *)w + off);
}
#elif defined(LP_CPU_NEON)
static inline float32x4_t load4(const void *w, lp_type type, size_t off) {
    const uint16_t *h = (const uint16_t *)w + off;
    if (type == LP_TYPE_BF16) return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(h), 16));
    if (type == LP_TYPE_F16) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
    return vld1q_f32((const float *)w + off);
}
#endif

/* Decode prefetch distance: two 4-row groups ahead (K = 512..1536 measured +25% over
 * a fixed 2 KiB), capped so that with long rows the lines still arrive in L1/L2 in time
 * to be used. */
static inline size_t prefetch_bytes(size_t ld) {
    const size_t ahead = 8 * ld * sizeof(uint16_t);
    return ahead < 32768 ? ahead : 32768;
}

static inline float load1(const void *w, lp_type type, size_t off) {
    if (type == LP_TYPE_BF16) return lp_bf16_to_f32(((const uint16_t *)w)[off]);
    if (type == LP_TYPE_F16) return lp_f16_to_f32(((const uint16_t *)w)[off]);
    return ((const float *)w)[off];
}

static inline __attribute__((always_inline)) void kernel_4xn(int K, const void *w, size_t ld, lp_type type,
                                                               const float *const x[3], int NX, float out[4][3]) {
    int k = 0;
#ifdef LP_CPU_AVX2
    /* named accumulators: an indexed array would be kept on the stack. At NX = 3 the
     * 12 accumulators, 3 activation vectors and one weight vector fill the 16 ymm
     * registers: each weight row is loaded and used for all tokens before the next. */
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    __m256 c0 = a0, c1 = a0, c2 = a0, c3 = a0;
#define LP_ROW_FMA(r, acc_a, acc_b, acc_c)                          \
    do {                                                            \
        const __m256 wv = load8(w, type, (r) * ld + k);             \
        acc_a = _mm256_fmadd_ps(wv, xa, acc_a);                     \
        if (NX >= 2) acc_b = _mm256_fmadd_ps(wv, xb, acc_b);        \
        if (NX >= 3) acc_c = _mm256_fmadd_ps(wv, xc, acc_c);        \
    } while (0)
    for (; k + 8 <= K; k += 8) {
        /* batch-1 decode streams weights from DRAM: fetch well ahead */
        if (NX == 1 && type != LP_TYPE_F32 && (k & 31) == 0)
            for (int r = 0; r < 4; r++)
                _mm_prefetch((const char *)((const uint16_t *)w + r * ld + k) + prefetch_bytes(ld), _MM_HINT_T0);
        const __m256 xa = _mm256_loadu_ps(x[0] + k);
        const __m256 xb = NX >= 2 ? _mm256_loadu_ps(x[1] + k) : xa;
        const __m256 xc = NX >= 3 ? _mm256_loadu_ps(x[2] + k) : xa;
        LP_ROW_FMA(0, a0, b0, c0);
        LP_ROW_FMA(1, a1, b1, c1);
        LP_ROW_FMA(2, a2, b2, c2);
        LP_ROW_FMA(3, a3, b3, c3);
    }
#undef LP_ROW_FMA
    out[0][0] = lp_hsum256(a0), out[1][0] = lp_hsum256(a1), out[2][0] = lp_hsum256(a2), out[3][0] = lp_hsum256(a3);
    out[0][1] = lp_hsum256(b0), out[1][1] = lp_hsum256(b1), out[2][1] = lp_hsum256(b2), out[3][1] = lp_hsum256(b3);
    out[0][2] = lp_hsum256(c0), out[1][2] = lp_hsum256(c1), out[2][2] = lp_hsum256(c2), out[3][2] = lp_hsum256(c3);
#elif defined(LP_CPU_NEON)
    /* 4 lanes along k: the 12 accumulators of NX = 3 leave half of the 32 registers for
     * the loads; constant trip counts, unrolled, keep the arrays in registers. */
    float32x4_t acc[4][3];
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) acc[i / 3][i % 3] = vdupq_n_f32(0);
    for (; k + 4 <= K; k += 4) {
        /* as on x86 (the distance was measured there, not on ARM) */
        if (NX == 1 && type != LP_TYPE_F32 && (k & 31) == 0)
            for (int r = 0; r < 4; r++)
                __builtin_prefetch((const char *)((const uint16_t *)w + r * ld + k) + prefetch_bytes(ld));
        float32x4_t xv[3];
#pragma GCC unroll 3
        for (int j = 0; j < NX; j++) xv[j] = vld1q_f32(x[j] + k);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const float32x4_t wv = load4(w, type, r * ld + k);
#pragma GCC unroll 3
            for (int j = 0; j < NX; j++) acc[r][j] = vfmaq_f32(acc[r][j], wv, xv[j]);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) out[i / 3][i % 3] = vaddvq_f32(acc[i / 3][i % 3]);
#else
    for (int r = 0; r < 4; r++) out[r][0] = out[r][1] = out[r][2] = 0.0f;
#endif
    for (; k < K; k++)
        for (int r = 0; r < 4; r++) {
            const float wv = load1(w, type, r * ld + k);
            for (int j = 0; j < NX; j++) out[r][j] += wv * x[j][k];
        }
}

/* Prefill: four F32 rows times NX tokens, NX a constant in each instance. */
static void kernel_f32_4x3(int K, const float *w, const float *const x[3], float out[4][3]) {
    kernel_4xn(K, w, (size_t)K, LP_TYPE_F32, x, 3, out);
}
static void kernel_f32_4x2(int K, const float *w, const float *const x[3], float out[4][3]) {
    kernel_4xn(K, w, (size_t)K, LP_TYPE_F32, x, 2, out);
}
static void kernel_f32_4x1(int K, const float *w, const float *const x[3], float out[4][3]) {
    kernel_4xn(K, w, (size_t)K, LP_TYPE_F32, x, 1, out);
}
/* Batch-1 decode: no conversion pass, the rows stream straight from memory. */
static void kernel_bf16_4x1(int K, const void *w, size_t ld, const float *const x[3], float out[4][3]) {
    kernel_4xn(K, w, ld, LP_TYPE_BF16, x, 1, out);
}
static void kernel_f16_4x1(int K, const void *w, size_t ld, const float *const x[3], float out[4][3]) {
    kernel_4xn(K, w, ld, LP_TYPE_F16, x, 1, out);
}

typedef struct {
    lp_cpu *c;
    cpu_mm *mms;
    int count;
    int first_task[65]; /* first task of each problem; [count] = total */
} mm_job;

static int tiles(int n, int tile) { return (n + tile - 1) / tile; }

/* BF16/F16 rows widened with AVX2/F16C or NEON: the traits' portable to_float is a
 * per-element call, which would dominate batch-1 decode of a BF16 model. */
static lp_to_float_fn fast_to_float(lp_type type);

/* Rows [r0, r1) as F32 with stride K: in place for F32, else converted into scratch. */
static const float *rows_as_f32(lp_cpu *c, const cpu_mm *mm, int r0, int r1, int thread) {
    const uint8_t *base = (const uint8_t *)mm->w + (size_t)r0 * mm->row_bytes;
    if (mm->type == LP_TYPE_F32) return (const float *)base;
    float *buf = cpu_scratch_get(&c->thread_scratch[thread], (size_t)(r1 - r0) * mm->K * sizeof(float));
    lp_to_float_fn to_float = fast_to_float(mm->type);
    for (int r = 0; r < r1 - r0; r++) to_float(base + (size_t)r * mm->row_bytes, buf + (size_t)r * mm->K, mm->K);
    return buf;
}

#ifdef LP_CPU_AVX2
static void bf16_to_f32_avx2(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    for (; i < n; i++) dst[i] = lp_bf16_to_f32(h[i]);
}
#endif

#ifdef LP_CPU_NEON
/* Widened 4 at a time by load4: the same values as the traits' to_float. */
static void widen_neon(const void *src, float *dst, int64_t n, lp_type type) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, load4(src, type, (size_t)i));
    for (; i < n; i++) dst[i] = load1(src, type, (size_t)i);
}
static void bf16_to_f32_neon(const void *src, float *dst, int64_t n) { widen_neon(src, dst, n, LP_TYPE_BF16); }
static void f16_to_f32_neon(const void *src, float *dst, int64_t n) { widen_neon(src, dst, n, LP_TYPE_F16); }
#endif

#if defined(LP_CPU_AVX2) && defined(__F16C__)
static void f16_to_f32_f16c(const void *src, float *dst, int64_t n) {
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
    for (; i < n; i++) dst[i] = lp_f16_to_f32(h[i]);
}
#endif

static lp_to_float_fn fast_to_float(lp_type type) {
#ifdef LP_CPU_AVX2
    if (type == LP_TYPE_BF16) return bf16_to_f32_avx2;
#endif
#if defined(LP_CPU_AVX2) && defined(__F16C__)
    if (type == LP_TYPE_F16) return f16_to_f32_f16c;
#endif
#ifdef LP_CPU_NEON
    if (type == LP_TYPE_BF16) return bf16_to_f32_neon;
    if (type == LP_TYPE_F16) return f16_to_f32_neon;
#endif
    return lp_qtype(type)->to_float;
}

static void store4(const cpu_mm *mm, int t, int r, float out[4][3], int col) {
    for (int i = 0; i < 4; i++) mm->y[(size_t)t * mm->M + r + i] = out[i][col];
}

/* One token (decode): BF16/F16/F32 rows go straight into the kernel, in groups of 4.
 * Returns the first row it did not do (the tail goes through float_tile). */
static int direct_rows(const cpu_mm *mm, int r0, int r1, int t) {
    const float *x = mm->x + (size_t)t * mm->K;
    const size_t ld = mm->row_bytes / (mm->type == LP_TYPE_F32 ? 4 : 2);
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        const uint8_t *w = (const uint8_t *)mm->w + (size_t)r * mm->row_bytes;
        float out[4][3];
        const float *const xs[3] = {x, x, x};
        if (mm->type == LP_TYPE_BF16)
            kernel_bf16_4x1(mm->K, w, ld, xs, out);
        else if (mm->type == LP_TYPE_F16)
            kernel_f16_4x1(mm->K, w, ld, xs, out);
        else
            kernel_f32_4x1(mm->K, (const float *)w, xs, out);
        store4(mm, t, r, out, 0);
    }
    return r;
}

static bool has_direct_kernel(lp_type t) {
#if defined(LP_CPU_AVX2) && !defined(__F16C__)
    if (t == LP_TYPE_F16) return false;
#endif
    return t == LP_TYPE_F32 || t == LP_TYPE_BF16 || t == LP_TYPE_F16;
}

/* Row groups outer, tokens inner: a group of 4 converted rows stays in L1 while
 * the tile's activation rows stream past it. */
static void float_tile(lp_cpu *c, const cpu_mm *mm, int r0, int r1, int t0, int t1, int thread) {
    const int K = mm->K;
    if (t1 - t0 == 1 && has_direct_kernel(mm->type)) r0 = direct_rows(mm, r0, r1, t0);
    if (r0 == r1) return;
    const float *w = rows_as_f32(c, mm, r0, r1, thread);
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        const float *wr = w + (size_t)(r - r0) * K;
        for (int t = t0; t < t1;) {
            const int nx = t1 - t < 3 ? t1 - t : 3;
            const float *const xs[3] = {mm->x + (size_t)t * K, mm->x + (size_t)(t + (nx > 1)) * K,
                                        mm->x + (size_t)(t + 2 * (nx > 2)) * K};
            float out[4][3];
            if (nx == 3)
                kernel_f32_4x3(K, wr, xs, out);
            else if (nx == 2)
                kernel_f32_4x2(K, wr, xs, out);
            else
                kernel_f32_4x1(K, wr, xs, out);
            for (int j = 0; j < nx; j++) store4(mm, t + j, r, out, j);
            t += nx;
        }
    }
    for (; r < r1; r++)
        for (int t = t0; t < t1; t++)
            mm->y[(size_t)t * mm->M + r] = cpu_dot_f32(w + (size_t)(r - r0) * K, mm->x + (size_t)t * K, K);
}

/* Prefill: tokens in groups of 4 through the type's batched kernel, which unpacks
 * each weight block once for all 4 (same results as vec_dot, bit for bit). */
static void quant_tile(const cpu_mm *mm, int r0, int r1, int t0, int t1) {
    lp_vec_dot_fn vec_dot = lp_qtype(mm->type)->vec_dot;
    lp_vec_dot_x4_fn vec_dot_x4 = lp_vec_dot_x4(mm->type);
    const uint8_t *xq = mm->xq;
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = (const uint8_t *)mm->w + (size_t)r * mm->row_bytes;
        int t = t0;
        if (vec_dot_x4)
            for (; t + 4 <= t1; t += 4) {
                float out[4];
                vec_dot_x4(mm->K, wr, xq + (size_t)t * mm->xq_stride, mm->xq_stride, out);
                for (int i = 0; i < 4; i++) mm->y[(size_t)(t + i) * mm->M + r] = out[i];
            }
        for (; t < t1; t++) mm->y[(size_t)t * mm->M + r] = vec_dot(mm->K, wr, xq + (size_t)t * mm->xq_stride);
    }
}

static void mm_task(void *ctx, int task, int thread) {
    mm_job *job = ctx;
    int p = 0;
    while (task >= job->first_task[p + 1]) p++;
    const cpu_mm *mm = &job->mms[p];
    const int local = task - job->first_task[p], tok_tiles = tiles(mm->n, TOK_TILE);
    const int r0 = (local / tok_tiles) * ROW_TILE, t0 = (local % tok_tiles) * TOK_TILE;
    const int r1 = r0 + ROW_TILE < mm->M ? r0 + ROW_TILE : mm->M, t1 = t0 + TOK_TILE < mm->n ? t0 + TOK_TILE : mm->n;
    if (mm->xq)
        quant_tile(mm, r0, r1, t0, t1);
    else
        float_tile(job->c, mm, r0, r1, t0, t1, thread);
}

void cpu_matmul_run(lp_cpu *c, cpu_mm *mms, int count) {
    /* Problems are batched 64 at a time (MoE layers may pass one per active expert). */
    for (int start = 0; start < count; start += 64) {
        mm_job job = {.c = c, .mms = mms + start, .count = count - start < 64 ? count - start : 64};
        job.first_task[0] = 0;
        for (int i = 0; i < job.count; i++) {
            const cpu_mm *mm = &job.mms[i];
            int n_tasks = mm->n > 0 && mm->M > 0 ? tiles(mm->M, ROW_TILE) * tiles(mm->n, TOK_TILE) : 0;
            job.first_task[i + 1] = job.first_task[i] + n_tasks;
        }
        lp_pool_run(c->pool, job.first_task[job.count], mm_task, &job);
    }
}

cpu_mm cpu_mm_for(const lp_weight *w, int expert, const float *x, int n, float *y) {
    cpu_mm mm = {
        .w = lp_weight_expert(w, expert < 0 ? 0 : expert),
        .type = w->type,
        .row_bytes = w->row_bytes,
        .K = (int)w->ne[0],
        .M = (int)w->ne[1],
        .n = n,
        .x = x,
        .y = y,
    };
    return mm;
}

typedef struct {
    const float *x;
    uint8_t *dst;
    size_t stride;
    int K;
    lp_from_float_fn from_float;
} convert_job;

static void convert_task(void *ctx, int t, int thread) {
    (void)thread;
    convert_job *j = ctx;
    j->from_float(j->x + (size_t)t * j->K, j->dst + (size_t)t * j->stride, j->K);
}

void cpu_mm_prepare_x(lp_cpu *c, cpu_mm *mm, int buf) {
    const lp_qtype_traits *tr = lp_qtype(mm->type);
    mm->xq = NULL;
    if (!tr->quantized || c->cfg.f32_activations) return;
    if (tr->vec_dot_type == LP_TYPE_F32) {
        mm->xq = mm->x;
        mm->xq_stride = (size_t)mm->K * sizeof(float);
        return;
    }
    convert_job job = {.x = mm->x, .stride = lp_row_size(tr->vec_dot_type, mm->K), .K = mm->K, .from_float = lp_from_float_fast(tr->vec_dot_type)};
    job.dst = cpu_scratch_get(&c->xq[buf], job.stride * (size_t)mm->n);
    if (mm->n >= 8)
        lp_pool_run(c->pool, mm->n, convert_task, &job);
    else
        for (int t = 0; t < mm->n; t++) convert_task(&job, t, 0);
    mm->xq = job.dst;
    mm->xq_stride = job.stride;
}
