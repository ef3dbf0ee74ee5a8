/* cpu_attention.c — the CPU KV cache (F32, [layer][slot][pos][n_head_kv*head_dim]),
 * rotary embeddings and causal GQA attention, threaded over (token, head). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/err.h"
#include "cpu_internal.h"

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

static void attn_task(void *ctx, int task, int thread) {
    attn_job *j = ctx;
    lp_cpu *c = j->c;
    const lp_attn_params *p = j->p;
    const int t = task / p->n_head, h = task % p->n_head, hd = p->head_dim;
    const int kvh = h / (p->n_head / p->n_head_kv), pos = c->pos[t], slot = c->slot[t];
    const int first = p->window > 0 && pos - p->window + 1 > 0 ? pos - p->window + 1 : 0;
    const float *q = j->q + ((size_t)t * p->n_head + h) * hd;
    const float *kbase = kv_at(c, c->k_cache, j->layer, slot, 0) + (size_t)kvh * hd;
    const float *vbase = kv_at(c, c->v_cache, j->layer, slot, 0) + (size_t)kvh * hd;
    const int n = pos - first + 1;
    float *score = cpu_scratch_get(&c->thread_scratch[thread], (size_t)n * sizeof(float));
    float max = p->sinks ? ((const float *)p->sinks->data)[h] : -INFINITY;
    for (int i = 0; i < n; i++) {
        score[i] = cpu_dot_f32(q, kbase + (size_t)(first + i) * c->kv_row, hd) * p->scale;
        if (score[i] > max) max = score[i];
    }
    double sum = p->sinks ? exp((double)((const float *)p->sinks->data)[h] - max) : 0.0;
    for (int i = 0; i < n; i++) {
        score[i] = expf(score[i] - max);
        sum += score[i];
    }
    const float inv = (float)(1.0 / sum);
    float *out = j->out + ((size_t)t * p->n_head + h) * hd;
    memset(out, 0, (size_t)hd * sizeof(float));
    for (int i = 0; i < n; i++) cpu_axpy_f32(score[i] * inv, vbase + (size_t)(first + i) * c->kv_row, out, hd);
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
    lp_pool_run(c->pool, c->n_batch * p->n_head, attn_task, &job);
}

void cpu_kv_copy(lp_backend *be, int src_slot, int dst_slot, int n_pos) {
    lp_cpu *c = (lp_cpu *)be;
    if (src_slot == dst_slot || n_pos <= 0) return;
    for (int l = 0; l < c->cfg.n_layer; l++) {
        memcpy(kv_at(c, c->k_cache, l, dst_slot, 0), kv_at(c, c->k_cache, l, src_slot, 0), (size_t)n_pos * c->kv_row * sizeof(float));
        memcpy(kv_at(c, c->v_cache, l, dst_slot, 0), kv_at(c, c->v_cache, l, src_slot, 0), (size_t)n_pos * c->kv_row * sizeof(float));
    }
}
