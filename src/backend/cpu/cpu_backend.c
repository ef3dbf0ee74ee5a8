/* cpu_backend.c — the CPU backend's vtable, buffers, batch state and the cheap
 * row-wise ops (embedding, RMSNorm, bias, residual add, SwiGLU, row gathers).
 * Matmul, attention and MoE live in their own files. Row-wise ops run on the
 * calling thread: they are a rounding error next to matmul, and every pool
 * dispatch costs a wake-up. */
#include "cpu_backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/err.h"
#include "cpu_internal.h"

void *cpu_scratch_get(cpu_scratch *s, size_t bytes) {
    if (bytes > s->cap) {
        free(s->p);
        s->cap = bytes + bytes / 4 + 64;
        s->p = lp_xmalloc(s->cap);
    }
    return s->p;
}

static void cpu_destroy(lp_backend *be) {
    lp_cpu *c = (lp_cpu *)be;
    lp_pool_free(c->pool);
    free(c->rope_inv_freq);
    free(c->k_cache);
    free(c->v_cache);
    free(c->tokens);
    free(c->pos);
    free(c->slot);
    free(c->rope_cos);
    free(c->rope_sin);
    for (int i = 0; i < c->n_threads; i++) free(c->thread_scratch[i].p);
    free(c->thread_scratch);
    for (int i = 0; i < CPU_N_XQ; i++) free(c->xq[i].p);
    free(c->moe_buf.p);
    free(c);
}

static int cpu_init(lp_backend *be, const lp_backend_config *cfg) {
    lp_cpu *c = (lp_cpu *)be;
    if (cfg->n_layer <= 0 || cfg->n_slots <= 0 || cfg->n_ctx <= 0 || cfg->n_head_kv <= 0 || cfg->head_dim <= 0 ||
        cfg->head_dim % 2)
        return lp_fail("cpu backend: invalid KV cache geometry");
    c->cfg = *cfg;
    c->rope_inv_freq = lp_xmalloc((size_t)cfg->head_dim / 2 * sizeof(float));
    memcpy(c->rope_inv_freq, cfg->rope_inv_freq, (size_t)cfg->head_dim / 2 * sizeof(float));
    c->cfg.rope_inv_freq = c->rope_inv_freq;
    return cpu_attention_init(c);
}

static int cpu_prepare_weight(lp_backend *be, const lp_weight *w) {
    (void)be;
    const lp_qtype_traits *tr = lp_qtype(w->type);
    if (!tr || !tr->to_float) return lp_fail("cpu backend: weight type %d has no kernels", (int)w->type);
    if (tr->quantized) {
        const lp_qtype_traits *vt = lp_qtype(tr->vec_dot_type);
        if (!tr->vec_dot || !vt || (tr->vec_dot_type != LP_TYPE_F32 && !vt->from_float))
            return lp_fail("cpu backend: type %s has no vec_dot kernel", tr->name);
    }
    return 0;
}

static lp_bbuf *cpu_alloc(lp_backend *be, size_t n_floats) {
    (void)be;
    lp_bbuf *b = lp_xmalloc(sizeof *b);
    b->n = n_floats;
    b->data = lp_xcalloc(n_floats ? n_floats : 1, sizeof(float));
    return b;
}

static void cpu_release(lp_backend *be, lp_bbuf *b) {
    (void)be;
    if (!b) return;
    free(b->data);
    free(b);
}

static void cpu_set_batch(lp_backend *be, const lp_batch_meta *b) {
    lp_cpu *c = (lp_cpu *)be;
    if (b->n > c->cap_batch) {
        c->cap_batch = b->n;
        size_t half = (size_t)c->cfg.head_dim / 2;
        c->tokens = lp_xrealloc(c->tokens, (size_t)b->n * sizeof(int32_t));
        c->pos = lp_xrealloc(c->pos, (size_t)b->n * sizeof(int32_t));
        c->slot = lp_xrealloc(c->slot, (size_t)b->n * sizeof(int32_t));
        c->rope_cos = lp_xrealloc(c->rope_cos, (size_t)b->n * half * sizeof(float));
        c->rope_sin = lp_xrealloc(c->rope_sin, (size_t)b->n * half * sizeof(float));
    }
    c->n_batch = b->n;
    memcpy(c->tokens, b->tokens, (size_t)b->n * sizeof(int32_t));
    memcpy(c->pos, b->pos, (size_t)b->n * sizeof(int32_t));
    memcpy(c->slot, b->slot, (size_t)b->n * sizeof(int32_t));
    cpu_rope_tables(c);
}

static void cpu_embed(lp_backend *be, const lp_weight *emb, lp_bbuf *out) {
    lp_cpu *c = (lp_cpu *)be;
    lp_to_float_fn to_float = lp_qtype(emb->type)->to_float;
    const int64_t D = emb->ne[0];
    for (int t = 0; t < c->n_batch; t++)
        to_float((const uint8_t *)emb->data + (size_t)c->tokens[t] * emb->row_bytes, out->data + (size_t)t * D, D);
}

static void cpu_rmsnorm(lp_backend *be, const lp_bbuf *x, const lp_weight *w, int rows, float eps, lp_bbuf *out) {
    (void)be;
    const int D = (int)w->ne[0];
    const float *wv = w->data;
    for (int r = 0; r < rows; r++) {
        const float *xr = x->data + (size_t)r * D;
        float *o = out->data + (size_t)r * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        const float scale = 1.0f / sqrtf((float)(ss / D) + eps);
        for (int i = 0; i < D; i++) o[i] = wv[i] * (xr[i] * scale);
    }
}

static void cpu_matmul(lp_backend *be, int count, const lp_matmul_args *args, int n) {
    lp_cpu *c = (lp_cpu *)be;
    for (int start = 0; start < count; start += CPU_N_XQ) {
        cpu_mm mms[CPU_N_XQ];
        int m = count - start < CPU_N_XQ ? count - start : CPU_N_XQ;
        for (int i = 0; i < m; i++) {
            const lp_matmul_args *a = &args[start + i];
            mms[i] = cpu_mm_for(a->w, a->expert, a->x->data, n, a->y->data);
            /* q, k and v usually share both input and vec_dot_type: convert once */
            int j = 0;
            for (; j < i; j++)
                if (mms[j].x == mms[i].x && mms[j].xq &&
                    lp_qtype(mms[j].type)->vec_dot_type == lp_qtype(mms[i].type)->vec_dot_type)
                    break;
            if (j < i && lp_qtype(mms[i].type)->quantized) {
                mms[i].xq = mms[j].xq;
                mms[i].xq_stride = mms[j].xq_stride;
            } else {
                cpu_mm_prepare_x(c, &mms[i], i);
            }
        }
        cpu_matmul_run(c, mms, m);
    }
}

static void cpu_add_bias(lp_backend *be, lp_bbuf *x, const lp_weight *b, int rows) {
    (void)be;
    const int D = (int)b->ne[0];
    const float *bv = b->data;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < D; i++) x->data[(size_t)r * D + i] += bv[i];
}

static void cpu_add(lp_backend *be, lp_bbuf *x, const lp_bbuf *y, size_t count) {
    (void)be;
    for (size_t i = 0; i < count; i++) x->data[i] += y->data[i];
}

void cpu_swiglu_rows(float *gate, const float *up, size_t count, float limit) {
    if (limit > 0.0f) {
        const float alpha = 1.702f; /* gpt-oss */
        for (size_t i = 0; i < count; i++) {
            float g = gate[i] < limit ? gate[i] : limit;
            float u = up[i] < -limit ? -limit : up[i] > limit ? limit : up[i];
            gate[i] = g / (1.0f + expf(-alpha * g)) * (u + 1.0f);
        }
        return;
    }
    for (size_t i = 0; i < count; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static void cpu_swiglu(lp_backend *be, lp_bbuf *gate, const lp_bbuf *up, size_t count, float limit) {
    (void)be;
    cpu_swiglu_rows(gate->data, up->data, count, limit);
}

static void cpu_gather_rows(lp_backend *be, const lp_bbuf *src, int dim, const int32_t *rows, int n_rows, lp_bbuf *dst) {
    (void)be;
    for (int i = 0; i < n_rows; i++)
        memmove(dst->data + (size_t)i * dim, src->data + (size_t)rows[i] * dim, (size_t)dim * sizeof(float));
}

static int cpu_sync(lp_backend *be) {
    (void)be;
    return 0;
}

static void cpu_read(lp_backend *be, const lp_bbuf *src, size_t offset, size_t count, float *dst) {
    (void)be;
    memcpy(dst, src->data + offset, count * sizeof(float));
}

static const lp_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .init = cpu_init,
    .prepare_weight = cpu_prepare_weight,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .set_batch = cpu_set_batch,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .add_bias = cpu_add_bias,
    .add = cpu_add,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .swiglu = cpu_swiglu,
    .moe = cpu_moe,
    .gather_rows = cpu_gather_rows,
    .kv_copy = cpu_kv_copy,
    .sync = cpu_sync,
    .read = cpu_read,
};

lp_backend *lp_backend_cpu_create(int n_threads) {
    lp_cpu *c = lp_xcalloc(1, sizeof *c);
    c->base.ops = &cpu_ops;
    c->pool = lp_pool_create(n_threads);
    c->n_threads = lp_pool_threads(c->pool);
    c->thread_scratch = lp_xcalloc((size_t)c->n_threads, sizeof(cpu_scratch));
    return &c->base;
}
