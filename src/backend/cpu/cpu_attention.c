/* cpu_attention.c — the CPU KV cache (F32, [layer][slot][pos][n_head_kv*head_dim]),
 * rotary embeddings and causal GQA attention, threaded over (token, KV head). */
#include "core/simd.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/err.h"
#include "cpu_internal.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LP_CPU_AVX2 1
#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define LP_CPU_NEON 1
#endif

int cpu_attention_init(lp_cpu *c) {
    const lp_backend_config *cfg = &c->cfg;
    c->kv_row = (size_t)cfg->n_head_kv * cfg->head_dim;
    size_t n = (size_t)cfg->n_layer * cfg->n_slots * cfg->n_ctx * c->kv_row;
    c->k_cache = calloc(n, sizeof(float));
    c->v_cache = calloc(n, sizeof(float));
    if (!c->k_cache || !c->v_cache)
        return lp_fail("cpu backend: KV cache of %.1f MiB does not fit in memory", 2.0 * n * sizeof(float) / 1048576.0);
    return 0;
}

static float *kv_at(const lp_cpu *c, float *cache, int layer, int slot, int pos) {
    return cache + (((size_t)layer * c->cfg.n_slots + slot) * c->cfg.n_ctx + pos) * c->kv_row;
}

/* cos/sin of every (token, pair) of the batch; computed once per step, used by all layers. */
void cpu_rope_tables(lp_cpu *c) {
    const int half = c->cfg.head_dim / 2;
    const float mscale = c->cfg.rope_attn_factor;
    for (int t = 0; t < c->n_batch; t++)
        for (int i = 0; i < half; i++) {
            /* HF: freqs = position (f32) * inv_freq (f32), then cos/sin in f32 */
            float angle = (float)c->pos[t] * c->rope_inv_freq[i];
            c->rope_cos[(size_t)t * half + i] = (float)cos((double)angle) * mscale;
            c->rope_sin[(size_t)t * half + i] = (float)sin((double)angle) * mscale;
        }
}

void cpu_rope(lp_backend *be, lp_bbuf *x, int n_head) {
    lp_cpu *c = (lp_cpu *)be;
    const int hd = c->cfg.head_dim, half = hd / 2;
    /* NEOX rotates (i, i + d/2); NORM rotates adjacent pairs (2i, 2i + 1). */
    const int stride = c->cfg.rope == LP_ROPE_NEOX ? 1 : 2, partner = c->cfg.rope == LP_ROPE_NEOX ? half : 1;
    for (int t = 0; t < c->n_batch; t++) {
        const float *cs = c->rope_cos + (size_t)t * half, *sn = c->rope_sin + (size_t)t * half;
        for (int h = 0; h < n_head; h++) {
            float *v = x->data + ((size_t)t * n_head + h) * hd;
            for (int i = 0; i < half; i++) {
                float *a = v + i * stride, *b = a + partner;
                const float x0 = *a, x1 = *b;
                *a = x0 * cs[i] - x1 * sn[i];
                *b = x1 * cs[i] + x0 * sn[i];
            }
        }
    }
}

typedef struct {
    lp_cpu *c;
    int layer;
    const float *q;
    float *out;
    const lp_attn_params *p;
} attn_job;

#ifdef LP_CPU_AVX2
#endif

/* score[i] = q · key i, keys `stride` floats apart; four keys per pass share the q loads. */
static void qk_scores(const float *q, const float *k, size_t stride, int n, int hd, float scale, float *score) {
    int i = 0;
#ifdef LP_CPU_AVX2
    if (hd % 8 == 0)
        for (; i + 4 <= n; i += 4) {
            const float *k0 = k + (size_t)i * stride;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int d = 0; d < hd; d += 8) {
                const __m256 qv = _mm256_loadu_ps(q + d);
                a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
                a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + stride + d), a1);
                a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 2 * stride + d), a2);
                a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 3 * stride + d), a3);
            }
            score[i] = lp_hsum256(a0) * scale, score[i + 1] = lp_hsum256(a1) * scale;
            score[i + 2] = lp_hsum256(a2) * scale, score[i + 3] = lp_hsum256(a3) * scale;
        }
#elif defined(LP_CPU_NEON)
    if (hd % 4 == 0)
        for (; i + 4 <= n; i += 4) {
            const float *k0 = k + (size_t)i * stride;
            float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
            for (int d = 0; d < hd; d += 4) {
                const float32x4_t qv = vld1q_f32(q + d);
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) acc[j] = vfmaq_f32(acc[j], qv, vld1q_f32(k0 + j * stride + d));
            }
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) score[i + j] = vaddvq_f32(acc[j]) * scale;
        }
#endif
    for (; i < n; i++) score[i] = cpu_dot_f32(q, k + (size_t)i * stride, hd) * scale;
}

#ifdef LP_CPU_NEON
/* out[0..W) = sum_i w[i] * v_i[0..W), W (<= 32, a multiple of 4) held in W/4 registers;
 * W is a constant in each call, so the unrolled loops keep the array in registers (at
 * W = 64 the 16 accumulators and 16 loads would not fit the 32 registers). */
static inline __attribute__((always_inline)) void weighted_pass_neon(const float *w, const float *v, size_t stride,
                                                                     int n, float *out, const int W) {
    float32x4_t o[8];
#pragma GCC unroll 8
    for (int j = 0; j < W / 4; j++) o[j] = vdupq_n_f32(0);
    for (int i = 0; i < n; i++) {
        const float *vi = v + (size_t)i * stride;
#pragma GCC unroll 8
        for (int j = 0; j < W / 4; j++) o[j] = vfmaq_n_f32(o[j], vld1q_f32(vi + 4 * j), w[i]);
    }
#pragma GCC unroll 8
    for (int j = 0; j < W / 4; j++) vst1q_f32(out + 4 * j, o[j]);
}
#endif

/* out = sum_i w[i] * value i, 64 (or 32; NEON: 32 or 16) output dims held in registers per pass over the values. */
static void weighted_values(const float *w, const float *v, size_t stride, int n, int hd, float *out) {
    int d = 0;
#ifdef LP_CPU_AVX2
    for (; d + 64 <= hd; d += 64) {
        /* named accumulators: an array would live on the stack */
        __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0, o4 = o0, o5 = o0, o6 = o0, o7 = o0;
        for (int i = 0; i < n; i++) {
            const __m256 wi = _mm256_set1_ps(w[i]);
            const float *vi = v + (size_t)i * stride + d;
            o0 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi), o0);
            o1 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi + 8), o1);
            o2 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi + 16), o2);
            o3 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi + 24), o3);
            o4 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi + 32), o4);
            o5 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi + 40), o5);
            o6 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi + 48), o6);
            o7 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi + 56), o7);
        }
        _mm256_storeu_ps(out + d, o0), _mm256_storeu_ps(out + d + 8, o1);
        _mm256_storeu_ps(out + d + 16, o2), _mm256_storeu_ps(out + d + 24, o3);
        _mm256_storeu_ps(out + d + 32, o4), _mm256_storeu_ps(out + d + 40, o5);
        _mm256_storeu_ps(out + d + 48, o6), _mm256_storeu_ps(out + d + 56, o7);
    }
    for (; d + 32 <= hd; d += 32) {
        __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
        for (int i = 0; i < n; i++) {
            const __m256 wi = _mm256_set1_ps(w[i]);
            const float *vi = v + (size_t)i * stride + d;
            o0 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi), o0);
            o1 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi + 8), o1);
            o2 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi + 16), o2);
            o3 = _mm256_fmadd_ps(wi, _mm256_loadu_ps(vi + 24), o3);
        }
        _mm256_storeu_ps(out + d, o0), _mm256_storeu_ps(out + d + 8, o1);
        _mm256_storeu_ps(out + d + 16, o2), _mm256_storeu_ps(out + d + 24, o3);
    }
#elif defined(LP_CPU_NEON)
    for (; d + 32 <= hd; d += 32) weighted_pass_neon(w, v + d, stride, n, out + d, 32);
    for (; d + 16 <= hd; d += 16) weighted_pass_neon(w, v + d, stride, n, out + d, 16);
#endif
    for (; d < hd; d++) {
        float acc = 0.0f;
        for (int i = 0; i < n; i++) acc += w[i] * v[(size_t)i * stride + d];
        out[d] = acc;
    }
}

/* One token and one KV head: the query heads of its group (GQA) over the slot's keys. */
static void attn_task(void *ctx, int task, int thread) {
    attn_job *j = ctx;
    lp_cpu *c = j->c;
    const lp_attn_params *p = j->p;
    const int group = p->n_head / p->n_head_kv, hd = p->head_dim;
    const int t = task / p->n_head_kv, kvh = task % p->n_head_kv, pos = c->pos[t], slot = c->slot[t];
    const int first = p->window > 0 && pos - p->window + 1 > 0 ? pos - p->window + 1 : 0, n = pos - first + 1;
    const float *kbase = kv_at(c, c->k_cache, j->layer, slot, first) + (size_t)kvh * hd;
    const float *vbase = kv_at(c, c->v_cache, j->layer, slot, first) + (size_t)kvh * hd;
    float *score = cpu_scratch_get(&c->thread_scratch[thread], (size_t)n * sizeof(float));
    for (int g = 0; g < group; g++) {
        const int h = kvh * group + g;
        const float *q = j->q + ((size_t)t * p->n_head + h) * hd;
        qk_scores(q, kbase, c->kv_row, n, hd, p->scale, score);
        /* softmax; a sink is one more logit in the denominator (gpt-oss) */
        const float sink = p->sinks ? ((const float *)p->sinks->data)[h] : -INFINITY;
        float max = sink;
        for (int i = 0; i < n; i++) max = score[i] > max ? score[i] : max;
        for (int i = 0; i < n; i++) score[i] = expf(score[i] - max);
        double sum = p->sinks ? exp((double)sink - max) : 0.0;
        for (int i = 0; i < n; i++) sum += score[i];
        const float inv = (float)(1.0 / sum);
        for (int i = 0; i < n; i++) score[i] *= inv;
        weighted_values(score, vbase, c->kv_row, n, hd, j->out + ((size_t)t * p->n_head + h) * hd);
    }
}

void cpu_attention(lp_backend *be, int layer, const lp_bbuf *q, const lp_bbuf *k, const lp_bbuf *v,
                   const lp_attn_params *p, lp_bbuf *out) {
    lp_cpu *c = (lp_cpu *)be;
    /* All of the step's keys and values first: a prefill token attends to earlier tokens of the same batch. */
    for (int t = 0; t < c->n_batch; t++) {
        memcpy(kv_at(c, c->k_cache, layer, c->slot[t], c->pos[t]), k->data + (size_t)t * c->kv_row, c->kv_row * sizeof(float));
        memcpy(kv_at(c, c->v_cache, layer, c->slot[t], c->pos[t]), v->data + (size_t)t * c->kv_row, c->kv_row * sizeof(float));
    }
    attn_job job = {.c = c, .layer = layer, .q = q->data, .out = out->data, .p = p};
    lp_pool_run(c->pool, c->n_batch * p->n_head_kv, attn_task, &job);
}

void cpu_kv_copy(lp_backend *be, int src_slot, int dst_slot, int n_pos) {
    lp_cpu *c = (lp_cpu *)be;
    if (src_slot == dst_slot || n_pos <= 0) return;
    for (int l = 0; l < c->cfg.n_layer; l++) {
        memcpy(kv_at(c, c->k_cache, l, dst_slot, 0), kv_at(c, c->k_cache, l, src_slot, 0), (size_t)n_pos * c->kv_row * sizeof(float));
        memcpy(kv_at(c, c->v_cache, l, dst_slot, 0), kv_at(c, c->v_cache, l, src_slot, 0), (size_t)n_pos * c->kv_row * sizeof(float));
    }
}
