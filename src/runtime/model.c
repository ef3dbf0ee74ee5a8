/* model.c — loads a model's hparams and weights by role, from GGUF or from an
 * HF safetensors checkpoint, and checks every weight's shape and type against
 * the hparams before the forward pass may trust it. */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../arch/hparams_gguf.h"
#include "../core/err.h"
#include "../core/fileio.h"
#include "../formats/gguf.h"
#include "../formats/safetensors.h"
#include "model_internal.h"
#include "model_mlx.h"

void *lp_model_own(lp_model *m, void *p) {
    if (m->n_owned == m->cap_owned) {
        m->cap_owned = m->cap_owned ? 2 * m->cap_owned : 64;
        m->owned = lp_xrealloc(m->owned, (size_t)m->cap_owned * sizeof *m->owned);
    }
    m->owned[m->n_owned++] = p;
    return p;
}

lp_weight *lp_model_slot(lp_model *m, lp_role role, int layer) {
    if (!lp_role_per_layer(role)) return &m->global[role];
    return &m->layers[(size_t)layer * LP_N_LAYER_ROLES + (role - LP_T_FIRST_LAYER_ROLE)];
}

const lp_weight *lp_model_weight(const lp_model *m, lp_role role, int layer) {
    if (role < 0 || role >= LP_T_COUNT) return NULL;
    if (lp_role_per_layer(role) && (layer < 0 || layer >= m->hp.n_layer)) return NULL;
    const lp_weight *w = lp_model_slot((lp_model *)m, role, layer);
    return w->present ? w : NULL;
}

const lp_gguf *lp_model_gguf(const lp_model *m) { return m->gguf; }

/* Matrices go to matmul kernels (or row lookup); every other role is a vector-like
 * parameter that the model keeps as F32. */
static bool role_is_matrix(lp_role r) {
    switch (r) {
    case LP_T_TOKEN_EMBD: case LP_T_OUTPUT: case LP_T_ATTN_Q: case LP_T_ATTN_K: case LP_T_ATTN_V:
    case LP_T_ATTN_OUT: case LP_T_FFN_GATE: case LP_T_FFN_UP: case LP_T_FFN_DOWN: case LP_T_FFN_ROUTER:
    case LP_T_FFN_GATE_EXPS: case LP_T_FFN_UP_EXPS: case LP_T_FFN_DOWN_EXPS:
        return true;
    default:
        return false;
    }
}

/* The shape (ne order) a role must have for these hparams; returns n_dims. */
static int role_shape(const lp_hparams *hp, lp_role r, int64_t ne[3]) {
    const int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_dim, KV = (int64_t)hp->n_head_kv * hp->head_dim;
    const int64_t X = hp->n_expert, F = hp->n_ff, FX = hp->n_ff_exp;
    ne[0] = ne[1] = ne[2] = 1;
#define SHAPE(n, a, b, c) (ne[0] = (a), ne[1] = (b), ne[2] = (c), (n))
    switch (r) {
    case LP_T_TOKEN_EMBD: case LP_T_OUTPUT: return SHAPE(2, E, hp->n_vocab, 1);
    case LP_T_ROPE_FREQS: return SHAPE(1, hp->head_dim / 2, 1, 1);
    case LP_T_OUTPUT_NORM: case LP_T_ATTN_NORM: case LP_T_FFN_NORM: case LP_T_ATTN_OUT_BIAS: return SHAPE(1, E, 1, 1);
    case LP_T_ATTN_Q: return SHAPE(2, E, Q, 1);
    case LP_T_ATTN_K: case LP_T_ATTN_V: return SHAPE(2, E, KV, 1);
    case LP_T_ATTN_OUT: return SHAPE(2, Q, E, 1);
    case LP_T_ATTN_Q_BIAS: return SHAPE(1, Q, 1, 1);
    case LP_T_ATTN_K_BIAS: case LP_T_ATTN_V_BIAS: return SHAPE(1, KV, 1, 1);
    case LP_T_ATTN_Q_NORM: case LP_T_ATTN_K_NORM: return SHAPE(1, hp->head_dim, 1, 1);
    case LP_T_ATTN_SINKS: return SHAPE(1, hp->n_head, 1, 1);
    case LP_T_FFN_GATE: case LP_T_FFN_UP: return SHAPE(2, E, F, 1);
    case LP_T_FFN_DOWN: return SHAPE(2, F, E, 1);
    case LP_T_FFN_ROUTER: return SHAPE(2, E, X, 1);
    case LP_T_FFN_ROUTER_BIAS: return SHAPE(1, X, 1, 1);
    case LP_T_FFN_GATE_EXPS: case LP_T_FFN_UP_EXPS: return SHAPE(3, E, FX, X);
    case LP_T_FFN_DOWN_EXPS: return SHAPE(3, FX, E, X);
    case LP_T_FFN_GATE_EXPS_BIAS: case LP_T_FFN_UP_EXPS_BIAS: return SHAPE(2, FX, X, 1);
    case LP_T_FFN_DOWN_EXPS_BIAS: return SHAPE(2, E, X, 1);
    default: return 0;
    }
#undef SHAPE
}

/* Check shape and type; compute row sizes; turn vector-like roles into owned F32. */
static int finish_weight(lp_model *m, lp_weight *w, lp_role role, const char *name) {
    int64_t want[3];
    int want_dims = role_shape(&m->hp, role, want);
    if (want_dims == 0) return lp_fail("%s: tensor '%s': role not used by the runtime", m->path, name);
    for (int d = 0; d < 3; d++)
        if (w->ne[d] != want[d])
            return lp_fail("%s: tensor '%s': shape [%lld, %lld, %lld] where the hparams need [%lld, %lld, %lld]", m->path,
                           name, (long long)w->ne[0], (long long)w->ne[1], (long long)w->ne[2], (long long)want[0],
                           (long long)want[1], (long long)want[2]);
    const lp_qtype_traits *tr = lp_qtype(w->type);
    if (!tr || !tr->to_float) return lp_fail("%s: tensor '%s': type %d is not supported by the runtime", m->path, name, (int)w->type);
    if (w->ne[0] % tr->block_size != 0)
        return lp_fail("%s: tensor '%s': row of %lld is not a multiple of the %s block (%d)", m->path, name,
                       (long long)w->ne[0], tr->name, tr->block_size);
    if (role_is_matrix(role) && role != LP_T_TOKEN_EMBD && tr->quantized && !tr->vec_dot)
        return lp_fail("%s: tensor '%s': type %s has no matmul kernel", m->path, name, tr->name);
    w->n_dims = want_dims;
    w->row_bytes = lp_row_size(w->type, w->ne[0]);
    w->expert_bytes = w->row_bytes * (size_t)w->ne[1];
    w->present = true;
    if (role_is_matrix(role) || (w->type == LP_TYPE_F32 && !w->expert_data)) return 0;
    /* Vector-like: one owned F32 copy (gathering per-expert pieces if needed). */
    int64_t per_expert = w->ne[0] * w->ne[1];
    float *f = lp_model_own(m, lp_xmalloc((size_t)(per_expert * w->ne[2]) * sizeof(float)));
    for (int64_t e = 0; e < w->ne[2]; e++) tr->to_float(lp_weight_expert(w, (int)e), f + e * per_expert, per_expert);
    w->type = LP_TYPE_F32;
    w->data = f;
    w->expert_data = NULL;
    w->row_bytes = (size_t)w->ne[0] * sizeof(float);
    w->expert_bytes = w->row_bytes * (size_t)w->ne[1];
    return 0;
}

static lp_model *model_new(const char *path, lp_model_source_kind source) {
    lp_model *m = lp_xcalloc(1, sizeof *m);
    m->path = lp_xstrdup(path);
    m->source = source;
    return m;
}

static int check_hparams(lp_model *m) {
    const lp_hparams *hp = &m->hp;
    m->arch = hp->arch;
    if (hp->head_dim <= 0 || hp->head_dim % 2) return lp_fail("%s: head size %d must be positive and even", m->path, hp->head_dim);
    if (hp->n_vocab <= 0) return lp_fail("%s: vocabulary size must be positive", m->path);
    if (hp->arch->moe ? hp->n_ff_exp <= 0 : hp->n_ff <= 0)
        return lp_fail("%s: feed-forward width missing (n_ff %d, n_ff_exp %d)", m->path, hp->n_ff, hp->n_ff_exp);
    m->layers = lp_xcalloc((size_t)hp->n_layer * LP_N_LAYER_ROLES, sizeof(lp_weight));
    return 0;
}

/* After all roles: tie lm_head, and require what the forward pass cannot do without. */
static int finish_model(lp_model *m) {
    lp_weight *out = lp_model_slot(m, LP_T_OUTPUT, 0);
    if (!out->present) *out = *lp_model_slot(m, LP_T_TOKEN_EMBD, 0);
    static const lp_role needed_global[] = {LP_T_TOKEN_EMBD, LP_T_OUTPUT_NORM};
    for (size_t i = 0; i < sizeof needed_global / sizeof *needed_global; i++)
        if (!lp_model_slot(m, needed_global[i], 0)->present) return lp_fail("%s: required weight (role %d) missing", m->path, needed_global[i]);
    for (const lp_tensor_map *t = m->arch->tensors; t->role != LP_T_COUNT; t++) {
        if (!t->required || !lp_role_per_layer(t->role)) continue;
        for (int l = 0; l < m->hp.n_layer; l++)
            if (!lp_model_slot(m, t->role, l)->present) {
                char name[160];
                lp_tensor_name_gguf(t, l, name, sizeof name);
                return lp_fail("%s: tensor '%s': missing", m->path, name);
            }
    }
    return 0;
}

/* ---------------- GGUF ---------------- */

/* rope_freqs is GGUF-only (llama3 rope factors): not every family's map lists it. */
static const lp_tensor_map rope_freqs_row = {LP_T_ROPE_FREQS, "rope_freqs.weight", NULL, LP_SRC_PLAIN, false};

static int load_gguf_role(lp_model *m, const lp_tensor_map *t, int layer) {
    char name[160];
    lp_tensor_name_gguf(t, layer, name, sizeof name);
    const lp_gguf_tensor *gt = lp_gguf_find_tensor(m->gguf, name);
    if (!gt) return 0; /* missing required tensors are reported by finish_model */
    if (gt->n_dims > 3) return lp_fail("%s: tensor '%s': %d dimensions", m->path, name, gt->n_dims);
    lp_weight *w = lp_model_slot(m, t->role, layer);
    w->type = gt->type;
    for (int d = 0; d < 3; d++) w->ne[d] = gt->ne[d];
    w->data = gt->data;
    return finish_weight(m, w, t->role, name);
}

lp_model *lp_model_load_gguf(const char *path) {
    lp_model *m = model_new(path, LP_MODEL_FROM_GGUF);
    m->gguf = lp_gguf_open(path);
    if (!m->gguf || lp_hparams_from_gguf(m->gguf, &m->hp) != 0 || check_hparams(m) != 0) goto fail;
    m->rope = m->arch->rope;
    for (const lp_tensor_map *t = m->arch->tensors; t->role != LP_T_COUNT; t++) {
        int n = lp_role_per_layer(t->role) ? m->hp.n_layer : 1;
        for (int l = 0; l < n; l++)
            if (load_gguf_role(m, t, l) != 0) goto fail;
    }
    if (!lp_arch_tensor(m->arch, LP_T_ROPE_FREQS) && load_gguf_role(m, &rope_freqs_row, 0) != 0) goto fail;
    if (finish_model(m) != 0) goto fail;
    return m;
fail:
    lp_model_free(m);
    return NULL;
}

/* ---------------- HF safetensors ---------------- */

static int st_type(const lp_st_tensor *t, lp_type *out) {
    static const struct {
        lp_st_dtype st;
        lp_type type;
    } map[] = {{LP_ST_F32, LP_TYPE_F32}, {LP_ST_F16, LP_TYPE_F16}, {LP_ST_BF16, LP_TYPE_BF16}};
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (map[i].st == t->dtype) return *out = map[i].type, 0;
    return lp_fail("tensor '%s': dtype %s is not supported (F32, F16, BF16 only)", t->name, lp_st_dtype_name(t->dtype));
}

/* HF shapes are row-major [out, in]; ne is the reverse. */
static int hf_tensor_into(lp_model *m, const char *name, lp_weight *w, int expert) {
    const lp_st_tensor *t = lp_checkpoint_find(m->ckpt, name);
    if (!t) return 1; /* absent */
    lp_type type = LP_TYPE_F32;
    if (st_type(t, &type) != 0) return lp_fail_prefix("%s", m->path);
    if (t->n_dims < 1 || t->n_dims > 2) return lp_fail("%s: tensor '%s': %d dimensions (1 or 2 expected)", m->path, name, t->n_dims);
    int64_t ne0 = t->shape[t->n_dims - 1], ne1 = t->n_dims == 2 ? t->shape[0] : 1;
    if (expert > 0 && (type != w->type || ne0 != w->ne[0] || ne1 != w->ne[1]))
        return lp_fail("%s: tensor '%s': dtype or shape differs from expert 0", m->path, name);
    w->type = type;
    w->ne[0] = ne0;
    w->ne[1] = ne1;
    if (expert < 0)
        w->data = t->data;
    else
        w->expert_data[expert] = t->data;
    return 0;
}

/* gpt-oss gate_up_proj_bias [E, 2F]: gate = even columns, up = odd; an owned F32 [E][F]. */
static int hf_split_bias(lp_model *m, const char *name, bool odd, lp_weight *w) {
    const lp_st_tensor *t = lp_checkpoint_find(m->ckpt, name);
    if (!t) return 1;
    if (t->n_dims != 2 || t->shape[1] % 2)
        return lp_fail("%s: tensor '%s': expected [experts, 2 * ffn] (interleaved gate/up)", m->path, name);
    const int64_t E = t->shape[0], F = t->shape[1] / 2;
    float *all = lp_xmalloc((size_t)(E * 2 * F) * sizeof(float));
    float *f = lp_model_own(m, lp_xmalloc((size_t)(E * F) * sizeof(float)));
    int rc = lp_st_to_f32(t, 0, E * 2 * F, all);
    for (int64_t i = 0; rc == 0 && i < E * F; i++) f[i] = all[2 * i + odd];
    free(all);
    if (rc != 0) return lp_fail_prefix("%s", m->path);
    w->type = LP_TYPE_F32;
    w->ne[0] = F, w->ne[1] = E, w->ne[2] = 1;
    w->data = f;
    return 0;
}

/* gpt-oss MXFP4 experts: "<name>_blocks" uint8 [E, rows, in/32, 16] (element 2k in the low
 * nibble of byte k) and "<name>_scales" uint8 [E, rows, in/32] (E8M0). Repacked into an
 * owned copy of ggml block_mxfp4 rows (scale byte, then qs[j] = elem j | elem j+16 << 4);
 * for the interleaved gate_up tensor, gate takes the even rows and up the odd ones. */
static int hf_mxfp4(lp_model *m, const char *name, lp_src_kind src, lp_weight *w) {
    char bname[220], sname[220];
    snprintf(bname, sizeof bname, "%s_blocks", name);
    snprintf(sname, sizeof sname, "%s_scales", name);
    const lp_st_tensor *bt = lp_checkpoint_find(m->ckpt, bname), *st = lp_checkpoint_find(m->ckpt, sname);
    if (!bt || !st) return 1;
    if (bt->dtype != LP_ST_U8 || st->dtype != LP_ST_U8 || bt->n_dims != 4 || st->n_dims != 3 || bt->shape[3] != 16 ||
        st->shape[0] != bt->shape[0] || st->shape[1] != bt->shape[1] || st->shape[2] != bt->shape[2])
        return lp_fail("%s: tensor '%s': expected U8 blocks [E, rows, in/32, 16] with scales [E, rows, in/32]", m->path, bname);
    const bool split = src != LP_SRC_MXFP4;
    if (split && bt->shape[1] % 2) return lp_fail("%s: tensor '%s': odd row count for interleaved gate/up", m->path, bname);
    const int64_t E = bt->shape[0], rows_in = bt->shape[1], nb = bt->shape[2];
    const int64_t rows = split ? rows_in / 2 : rows_in, first = src == LP_SRC_MXFP4_UP;
    const size_t row_bytes = (size_t)nb * 17;
    uint8_t *out = lp_model_own(m, lp_xmalloc((size_t)(E * rows) * row_bytes));
    const uint8_t *blocks = bt->data, *scales = st->data;
    for (int64_t e = 0; e < E; e++)
        for (int64_t r = 0; r < rows; r++) {
            const int64_t src_row = e * rows_in + (split ? 2 * r + first : r);
            uint8_t *o = out + (size_t)(e * rows + r) * row_bytes;
            for (int64_t b = 0; b < nb; b++, o += 17) {
                const uint8_t *q = blocks + ((size_t)src_row * nb + b) * 16;
                uint8_t elem[32];
                for (int k = 0; k < 16; k++) elem[2 * k] = q[k] & 15, elem[2 * k + 1] = q[k] >> 4;
                o[0] = scales[(size_t)src_row * nb + b];
                for (int j = 0; j < 16; j++) o[1 + j] = (uint8_t)(elem[j] | elem[j + 16] << 4);
            }
        }
    w->type = LP_TYPE_MXFP4;
    w->ne[0] = nb * 32, w->ne[1] = rows, w->ne[2] = E;
    w->data = out;
    return 0;
}

static int load_hf_role(lp_model *m, const lp_tensor_map *t, int layer) {
    char name[200];
    lp_weight *w = lp_model_slot(m, t->role, layer);
    w->ne[2] = 1;
    int rc;
    if (t->src == LP_SRC_PLAIN) {
        lp_tensor_name_hf(t, layer, 0, name, sizeof name);
        rc = hf_tensor_into(m, name, w, -1);
    } else if (t->src == LP_SRC_EXPERT_STACK) {
        w->expert_data = lp_model_own(m, lp_xcalloc((size_t)m->hp.n_expert, sizeof(void *)));
        w->ne[2] = m->hp.n_expert;
        rc = 0;
        for (int e = 0; e < m->hp.n_expert && rc == 0; e++) {
            lp_tensor_name_hf(t, layer, e, name, sizeof name);
            rc = hf_tensor_into(m, name, w, e);
            if (rc == 1 && e > 0) rc = lp_fail("%s: tensor '%s': missing (other experts present)", m->path, name);
        }
        if (rc == 1) w->expert_data = NULL;
    } else if (t->src == LP_SRC_BIAS_EVEN || t->src == LP_SRC_BIAS_ODD) {
        lp_tensor_name_hf(t, layer, 0, name, sizeof name);
        rc = hf_split_bias(m, name, t->src == LP_SRC_BIAS_ODD, w);
    } else {
        lp_tensor_name_hf(t, layer, 0, name, sizeof name);
        rc = hf_mxfp4(m, name, t->src, w);
    }
    if (rc < 0) return -1;
    if (rc == 1) {
        memset(w, 0, sizeof *w); /* optional role this checkpoint does not have */
        return 0;
    }
    return finish_weight(m, w, t->role, name);
}

lp_model *lp_model_load_hf(const char *dir) {
    lp_model *m = model_new(dir, LP_MODEL_FROM_HF);
    char *cfg = lp_path_join(dir, "config.json");
    int rc = lp_hparams_from_config_file(cfg, &m->hp);
    free(cfg);
    if (rc != 0 || check_hparams(m) != 0) goto fail;
    /* HF keeps llama q/k un-permuted: NEOX rotation on those rows is the same model. */
    m->rope = LP_ROPE_NEOX;
    m->ckpt = lp_checkpoint_open(dir);
    if (!m->ckpt) goto fail;
    for (const lp_tensor_map *t = m->arch->tensors; t->role != LP_T_COUNT; t++) {
        int n = lp_role_per_layer(t->role) ? m->hp.n_layer : 1;
        for (int l = 0; l < n; l++)
            if (load_hf_role(m, t, l) != 0) goto fail;
    }
    if (finish_model(m) != 0) goto fail;
    return m;
fail:
    lp_model_free(m);
    return NULL;
}

lp_model *lp_model_load(const char *path) {
    if (lp_is_dir(path)) return lp_model_dir_is_mlx(path) ? lp_model_load_mlx(path) : lp_model_load_hf(path);
    return lp_model_load_gguf(path);
}

uint64_t lp_model_weight_bytes(const lp_model *m) {
    uint64_t total = 0;
    for (int r = 0; r < LP_N_GLOBAL_ROLES; r++)
        if (m->global[r].present && !(r == LP_T_OUTPUT && m->hp.tied_embeddings))
            total += m->global[r].expert_bytes * (uint64_t)m->global[r].ne[2];
    for (size_t i = 0; i < (size_t)m->hp.n_layer * LP_N_LAYER_ROLES; i++)
        if (m->layers[i].present) total += m->layers[i].expert_bytes * (uint64_t)m->layers[i].ne[2];
    return total;
}

void lp_model_free(lp_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    if (m->gguf) lp_gguf_close(m->gguf);
    if (m->ckpt) lp_checkpoint_close(m->ckpt);
    free(m->path);
    free(m);
}
