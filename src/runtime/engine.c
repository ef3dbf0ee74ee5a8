/* engine.c — the forward pass, written once against backend.h, plus batch
 * validation and splitting. Follows HF transformers' float32 computation:
 * embed -> per layer [RMSNorm -> q,k,v (+bias) -> per-head q/k RMSNorm -> rope ->
 * causal GQA attention -> o (+bias) -> residual -> RMSNorm -> SwiGLU FFN or MoE ->
 * residual] -> final RMSNorm -> lm_head. */
#include "engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../backend/cpu/cpu_backend.h"
#include "../core/err.h"

enum { LOGIT_ROWS = 64 }; /* lm_head rows per pass: bounds the logits buffer for big vocabularies */

/* Activation buffers of one step, [n_batch][width]. */
typedef struct {
    lp_bbuf *x, *h, *ffn_out, *q, *k, *v, *att, *gate, *up, *router, *out_rows, *logits;
} step_bufs;

struct lp_engine {
    const lp_model *m;
    lp_backend *be;
    lp_engine_params p;
    step_bufs b;
    int32_t *slot0;     /* [n_batch] zeros, for batches without slots */
    int32_t *out_index; /* [n_batch] rows whose logits are wanted */
};

const lp_model *lp_engine_model(const lp_engine *e) { return e->m; }
int lp_engine_n_vocab(const lp_engine *e) { return e->m->hp.n_vocab; }
int lp_engine_n_ctx(const lp_engine *e) { return e->p.n_ctx; }
int lp_engine_n_slots(const lp_engine *e) { return e->p.n_slots; }

/* ---- rope frequencies (HF rope_init_fn equivalents, in float32) ---- */

/* llama3: long wavelengths slowed by `factor`, a smooth blend in between (HF _compute_llama3_parameters). */
static float llama3_scale(const lp_hparams *hp, float inv_freq) {
    const float factor = hp->rope_factor, lo = hp->rope_low_freq_factor, hi = hp->rope_high_freq_factor;
    const float old_ctx = (float)(hp->rope_orig_ctx > 0 ? hp->rope_orig_ctx : 8192);
    const float wavelen = 2.0f * (float)M_PI / inv_freq;
    const float low_freq_wavelen = old_ctx / lo, high_freq_wavelen = old_ctx / hi;
    if (wavelen > low_freq_wavelen) return inv_freq / factor;
    if (wavelen < high_freq_wavelen) return inv_freq;
    const float smooth = (old_ctx / wavelen - lo) / (hi - lo);
    return (1.0f - smooth) * inv_freq / factor + smooth * inv_freq;
}

/* YaRN (HF _compute_yarn_parameters): dimensions that rotate fewer than beta_slow times
 * over the original context are interpolated by `factor`, those rotating more than
 * beta_fast times are kept, with a linear ramp between; cos/sin get scaled by
 * 0.1 ln(factor) + 1. gpt-oss ships "truncate": false (no rounding of the ramp ends);
 * lp_hparams has no field for it yet, so it is taken as that family's setting. */
static float yarn_inv_freq(const lp_hparams *hp, int i, float inv_freq) {
    const double dim = hp->head_dim, base = hp->rope_theta;
    const double orig = hp->rope_orig_ctx > 0 ? hp->rope_orig_ctx : hp->n_ctx_train;
    const bool truncate = hp->yarn_truncate;
    double low = dim * log(orig / (hp->yarn_beta_fast * 2 * M_PI)) / (2 * log(base));
    double high = dim * log(orig / (hp->yarn_beta_slow * 2 * M_PI)) / (2 * log(base));
    if (truncate) low = floor(low), high = ceil(high);
    low = low > 0 ? low : 0;
    high = high < dim - 1 ? high : dim - 1;
    if (low == high) high += 0.001;
    float ramp = ((float)i - (float)low) / (float)(high - low);
    ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
    const float extrapolation = 1.0f - ramp, interpolation = inv_freq / hp->rope_factor;
    return interpolation * (1.0f - extrapolation) + inv_freq * extrapolation;
}

static float rope_attn_factor(const lp_hparams *hp) {
    if (hp->rope_scaling != LP_ROPE_SCALING_YARN || hp->rope_factor <= 1.0f) return 1.0f;
    return (float)(0.1 * log(hp->rope_factor) + 1.0);
}

static float *rope_inv_freq(const lp_model *m) {
    const lp_hparams *hp = &m->hp;
    const int half = hp->head_dim / 2;
    float *inv = lp_xmalloc((size_t)half * sizeof(float));
    const lp_weight *factors = lp_model_weight(m, LP_T_ROPE_FREQS, 0);
    for (int i = 0; i < half; i++) {
        /* HF: 1 / base ** (arange(0, d, 2).float() / d), all float32 */
        inv[i] = 1.0f / powf(hp->rope_theta, (float)(2 * i) / (float)hp->head_dim);
        if (hp->rope_scaling == LP_ROPE_SCALING_LINEAR) inv[i] /= hp->rope_factor;
        if (hp->rope_scaling == LP_ROPE_SCALING_LLAMA3) inv[i] = llama3_scale(hp, inv[i]);
        if (hp->rope_scaling == LP_ROPE_SCALING_YARN) inv[i] = yarn_inv_freq(hp, i, inv[i]);
        if (factors) inv[i] /= ((const float *)factors->data)[i]; /* GGUF rope_freqs: llama.cpp divides */
    }
    return inv;
}

/* ---- creation ---- */

static int prepare_weights(lp_engine *e) {
    const lp_model *m = e->m;
    for (int r = 0; r < LP_N_GLOBAL_ROLES; r++)
        if (m->global[r].present && e->be->ops->prepare_weight(e->be, &m->global[r]) != 0) return -1;
    for (size_t i = 0; i < (size_t)m->hp.n_layer * LP_N_LAYER_ROLES; i++)
        if (m->layers[i].present && e->be->ops->prepare_weight(e->be, &m->layers[i]) != 0) return -1;
    return 0;
}

static void alloc_bufs(lp_engine *e) {
    const lp_hparams *hp = &e->m->hp;
    lp_backend *be = e->be;
    const size_t n = (size_t)e->p.n_batch, E = hp->n_embd, Q = (size_t)hp->n_head * hp->head_dim,
                 KV = (size_t)hp->n_head_kv * hp->head_dim;
    const size_t F = (size_t)(hp->n_ff > hp->n_ff_exp ? hp->n_ff : hp->n_ff_exp);
    const size_t logit_rows = n < LOGIT_ROWS ? n : LOGIT_ROWS;
    step_bufs *b = &e->b;
    b->x = be->ops->alloc(be, n * E);
    b->h = be->ops->alloc(be, n * E);
    b->ffn_out = be->ops->alloc(be, n * E);
    b->q = be->ops->alloc(be, n * Q);
    b->k = be->ops->alloc(be, n * KV);
    b->v = be->ops->alloc(be, n * KV);
    b->att = be->ops->alloc(be, n * Q);
    b->gate = be->ops->alloc(be, n * F);
    b->up = be->ops->alloc(be, n * F);
    b->router = be->ops->alloc(be, n * (size_t)(hp->n_expert > 0 ? hp->n_expert : 1));
    b->out_rows = be->ops->alloc(be, logit_rows * E);
    b->logits = be->ops->alloc(be, logit_rows * (size_t)hp->n_vocab);
}

lp_engine *lp_engine_create_with_backend(const lp_model *m, lp_backend *be, const lp_engine_params *params) {
    lp_engine *e = lp_xcalloc(1, sizeof *e);
    e->m = m;
    e->be = be;
    if (params) e->p = *params;
    const lp_hparams *hp = &m->hp;
    if (e->p.n_ctx <= 0) e->p.n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (e->p.n_slots <= 0) e->p.n_slots = 1;
    if (e->p.n_batch <= 0) e->p.n_batch = 512;
    float *inv_freq = rope_inv_freq(m);
    lp_backend_config cfg = {
        .n_layer = hp->n_layer,
        .n_slots = e->p.n_slots,
        .n_ctx = e->p.n_ctx,
        .n_head_kv = hp->n_head_kv,
        .head_dim = hp->head_dim,
        .rope = m->rope,
        .rope_inv_freq = inv_freq,
        .rope_attn_factor = rope_attn_factor(hp),
        .f32_activations = e->p.f32_activations,
    };
    int rc = be->ops->init(be, &cfg);
    free(inv_freq);
    if (rc != 0 || prepare_weights(e) != 0) {
        lp_engine_free(e);
        return NULL;
    }
    alloc_bufs(e);
    e->slot0 = lp_xcalloc((size_t)e->p.n_batch, sizeof(int32_t));
    e->out_index = lp_xcalloc((size_t)e->p.n_batch, sizeof(int32_t));
    return e;
}

lp_engine *lp_engine_create(const lp_model *m, const lp_engine_params *p) {
    return lp_engine_create_with_backend(m, lp_backend_cpu_create(p ? p->n_threads : 0), p);
}

void lp_engine_free(lp_engine *e) {
    if (!e) return;
    lp_bbuf **bufs = (lp_bbuf **)&e->b;
    for (size_t i = 0; i < sizeof e->b / sizeof(lp_bbuf *); i++)
        if (bufs[i]) e->be->ops->release(e->be, bufs[i]);
    lp_backend_free(e->be);
    free(e->slot0);
    free(e->out_index);
    free(e);
}

/* ---- forward ---- */

static const lp_weight *W(const lp_engine *e, lp_role role, int layer) { return lp_model_weight(e->m, role, layer); }

static void attention_block(lp_engine *e, int l, int n) {
    const lp_hparams *hp = &e->m->hp;
    const lp_backend_ops *op = e->be->ops;
    lp_backend *be = e->be;
    step_bufs *b = &e->b;
    op->rmsnorm(be, b->x, W(e, LP_T_ATTN_NORM, l), n, hp->rms_eps, b->h);
    lp_matmul_args qkv[3] = {{W(e, LP_T_ATTN_Q, l), -1, b->h, b->q},
                             {W(e, LP_T_ATTN_K, l), -1, b->h, b->k},
                             {W(e, LP_T_ATTN_V, l), -1, b->h, b->v}};
    op->matmul(be, 3, qkv, n);
    const lp_weight *bias;
    if ((bias = W(e, LP_T_ATTN_Q_BIAS, l))) op->add_bias(be, b->q, bias, n);
    if ((bias = W(e, LP_T_ATTN_K_BIAS, l))) op->add_bias(be, b->k, bias, n);
    if ((bias = W(e, LP_T_ATTN_V_BIAS, l))) op->add_bias(be, b->v, bias, n);
    const lp_weight *qn = W(e, LP_T_ATTN_Q_NORM, l), *kn = W(e, LP_T_ATTN_K_NORM, l);
    if (qn) op->rmsnorm(be, b->q, qn, n * hp->n_head, hp->rms_eps, b->q);
    if (kn) op->rmsnorm(be, b->k, kn, n * hp->n_head_kv, hp->rms_eps, b->k);
    op->rope(be, b->q, hp->n_head);
    op->rope(be, b->k, hp->n_head_kv);
    lp_attn_params ap = {
        .n_head = hp->n_head,
        .n_head_kv = hp->n_head_kv,
        .head_dim = hp->head_dim,
        .scale = 1.0f / sqrtf((float)hp->head_dim),
        .window = hp->swa_layers[l] ? hp->sliding_window : 0,
        .sinks = W(e, LP_T_ATTN_SINKS, l),
    };
    op->attention(be, l, b->q, b->k, b->v, &ap, b->att);
    lp_matmul_args o = {W(e, LP_T_ATTN_OUT, l), -1, b->att, b->h};
    op->matmul(be, 1, &o, n);
    if ((bias = W(e, LP_T_ATTN_OUT_BIAS, l))) op->add_bias(be, b->h, bias, n);
    op->add(be, b->x, b->h, (size_t)n * hp->n_embd);
}

static void ffn_block(lp_engine *e, int l, int n) {
    const lp_hparams *hp = &e->m->hp;
    const lp_backend_ops *op = e->be->ops;
    lp_backend *be = e->be;
    step_bufs *b = &e->b;
    op->rmsnorm(be, b->x, W(e, LP_T_FFN_NORM, l), n, hp->rms_eps, b->h);
    if (e->m->arch->moe) {
        lp_matmul_args router = {W(e, LP_T_FFN_ROUTER, l), -1, b->h, b->router};
        op->matmul(be, 1, &router, n);
        const lp_weight *rb = W(e, LP_T_FFN_ROUTER_BIAS, l);
        if (rb) op->add_bias(be, b->router, rb, n);
        lp_moe_params mp = {
            .gate = W(e, LP_T_FFN_GATE_EXPS, l),
            .up = W(e, LP_T_FFN_UP_EXPS, l),
            .down = W(e, LP_T_FFN_DOWN_EXPS, l),
            .gate_b = W(e, LP_T_FFN_GATE_EXPS_BIAS, l),
            .up_b = W(e, LP_T_FFN_UP_EXPS_BIAS, l),
            .down_b = W(e, LP_T_FFN_DOWN_EXPS_BIAS, l),
            .n_expert_used = hp->n_expert_used,
            .norm_topk = hp->expert_norm_topk,
            .swiglu_limit = hp->swiglu_limit,
        };
        op->moe(be, &mp, b->h, b->router, n, b->ffn_out);
    } else {
        lp_matmul_args gu[2] = {{W(e, LP_T_FFN_GATE, l), -1, b->h, b->gate}, {W(e, LP_T_FFN_UP, l), -1, b->h, b->up}};
        op->matmul(be, 2, gu, n);
        op->swiglu(be, b->gate, b->up, (size_t)n * hp->n_ff, hp->swiglu_limit);
        lp_matmul_args down = {W(e, LP_T_FFN_DOWN, l), -1, b->gate, b->ffn_out};
        op->matmul(be, 1, &down, n);
    }
    op->add(be, b->x, b->ffn_out, (size_t)n * hp->n_embd);
}

/* Final norm and lm_head for the rows out_index[0..n_out), LOGIT_ROWS at a time. */
static void output_block(lp_engine *e, int n_out, float *logits) {
    const lp_hparams *hp = &e->m->hp;
    const lp_backend_ops *op = e->be->ops;
    for (int start = 0; start < n_out; start += LOGIT_ROWS) {
        int rows = n_out - start < LOGIT_ROWS ? n_out - start : LOGIT_ROWS;
        op->gather_rows(e->be, e->b.x, hp->n_embd, e->out_index + start, rows, e->b.out_rows);
        op->rmsnorm(e->be, e->b.out_rows, W(e, LP_T_OUTPUT_NORM, 0), rows, hp->rms_eps, e->b.out_rows);
        lp_matmul_args head = {W(e, LP_T_OUTPUT, 0), -1, e->b.out_rows, e->b.logits};
        op->matmul(e->be, 1, &head, rows);
        op->read(e->be, e->b.logits, 0, (size_t)rows * hp->n_vocab, logits + (size_t)start * hp->n_vocab);
    }
}

/* One step of at most n_batch tokens; returns the number of logit rows written. */
static int forward_step(lp_engine *e, const lp_batch_meta *meta, const int8_t *want, bool last_only, float *logits) {
    const int n = meta->n;
    e->be->ops->set_batch(e->be, meta);
    e->be->ops->embed(e->be, W(e, LP_T_TOKEN_EMBD, 0), e->b.x);
    for (int l = 0; l < e->m->hp.n_layer; l++) {
        attention_block(e, l, n);
        ffn_block(e, l, n);
    }
    int n_out = 0;
    for (int i = 0; i < n; i++)
        if (want ? want[i] != 0 : last_only && i == n - 1) e->out_index[n_out++] = i;
    if (n_out > 0 && logits) output_block(e, n_out, logits);
    return e->be->ops->sync(e->be) == 0 ? n_out : -1;
}

static int check_batch(const lp_engine *e, const lp_batch *b) {
    if (b->n_tokens <= 0 || !b->tokens || !b->pos) return lp_fail("engine: empty batch");
    for (int i = 0; i < b->n_tokens; i++) {
        if (b->tokens[i] < 0 || b->tokens[i] >= e->m->hp.n_vocab)
            return lp_fail("engine: batch token %d: id %d outside the vocabulary (%d)", i, b->tokens[i], e->m->hp.n_vocab);
        if (b->pos[i] < 0 || b->pos[i] >= e->p.n_ctx)
            return lp_fail("engine: batch token %d: position %d outside the context (%d)", i, b->pos[i], e->p.n_ctx);
        if (b->slot && (b->slot[i] < 0 || b->slot[i] >= e->p.n_slots))
            return lp_fail("engine: batch token %d: slot %d outside 0..%d", i, b->slot[i], e->p.n_slots - 1);
    }
    return 0;
}

int lp_engine_decode(lp_engine *e, const lp_batch *b, float *logits) {
    if (check_batch(e, b) != 0) return -1;
    const int V = e->m->hp.n_vocab;
    size_t rows_done = 0;
    for (int start = 0; start < b->n_tokens; start += e->p.n_batch) {
        const int n = b->n_tokens - start < e->p.n_batch ? b->n_tokens - start : e->p.n_batch;
        lp_batch_meta meta = {
            .n = n,
            .tokens = b->tokens + start,
            .pos = b->pos + start,
            .slot = b->slot ? b->slot + start : e->slot0,
        };
        const bool last_step = start + n == b->n_tokens;
        int got = forward_step(e, &meta, b->logits ? b->logits + start : NULL, last_step,
                               logits ? logits + rows_done * V : NULL);
        if (got < 0) return -1;
        rows_done += (size_t)got;
    }
    return 0;
}

int lp_engine_eval(lp_engine *e, int slot, int pos0, const int32_t *tokens, int n, float *logits, bool all_logits) {
    if (n <= 0) return lp_fail("engine: nothing to evaluate");
    if (pos0 < 0 || pos0 > e->p.n_ctx - n)
        return lp_fail("engine: %d tokens at position %d exceed the context (%d)", n, pos0, e->p.n_ctx);
    int32_t *pos = lp_xmalloc((size_t)n * sizeof(int32_t)), *slots = lp_xmalloc((size_t)n * sizeof(int32_t));
    int8_t *want = all_logits ? lp_xmalloc((size_t)n) : NULL;
    for (int i = 0; i < n; i++) {
        pos[i] = pos0 + i;
        slots[i] = slot;
        if (want) want[i] = 1;
    }
    lp_batch b = {.n_tokens = n, .tokens = tokens, .pos = pos, .slot = slots, .logits = want};
    int rc = lp_engine_decode(e, &b, logits);
    free(pos);
    free(slots);
    free(want);
    return rc;
}

float *lp_engine_logits_alloc(lp_engine *e, size_t rows) {
    const size_t bytes = (rows ? rows : 1) * (size_t)e->m->hp.n_vocab * sizeof(float);
    float *p = e->be->ops->host_alloc ? e->be->ops->host_alloc(e->be, bytes) : NULL;
    return p ? p : lp_xmalloc(bytes);
}

void lp_engine_logits_free(lp_engine *e, float *logits) {
    if (!logits) return;
    if (e->be->ops->host_free)
        e->be->ops->host_free(e->be, logits);
    else
        free(logits);
}

int lp_engine_kv_copy(lp_engine *e, int src_slot, int dst_slot, int n_pos) {
    if (src_slot < 0 || src_slot >= e->p.n_slots || dst_slot < 0 || dst_slot >= e->p.n_slots)
        return lp_fail("engine: kv copy: slot outside 0..%d", e->p.n_slots - 1);
    if (n_pos < 0 || n_pos > e->p.n_ctx) return lp_fail("engine: kv copy: %d positions outside the context", n_pos);
    e->be->ops->kv_copy(e->be, src_slot, dst_slot, n_pos);
    return e->be->ops->sync(e->be);
}
