/* mlx_recipe.c — owns the MLX recipe table and the MLX plan: for each tensor of the
 * converter's list, its MLX name (HF name; MoE experts stacked as switch_mlp like
 * mlx-lm's sanitize), whether it is dropped, kept in the model dtype or quantized,
 * and with which bits/group (FORMATS.md 8.4-8.6); plus the config "quantization"
 * section, sizes, parameters and bits per weight derived from the plan. */
#include "mlx_recipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../core/err.h"
#include "../quant/mlx_affine.h"

#define DEFAULT_GROUP 64

static const lp_mlx_recipe recipes[] = {
    {"4bit", "4bit-pure", "4-bit affine, group 64, every linear layer and the embedding", 4, 4, 4, 0, true},
    {"4bit-mixed", "4bit-mixed", "4-bit body, 6-bit embeddings and lm_head", 4, 6, 6, 0, true},
    {"6bit", "6bit-pure", "6-bit affine everywhere", 6, 6, 6, 0, true},
    {"8bit", "8bit-pure", "8-bit affine everywhere, near lossless", 8, 8, 8, 0, true},
    {"3bit", "3bit-pure", "3-bit affine everywhere (large quality loss)", 3, 3, 3, 0, true},
    {"2bit", "2bit-pure", "2-bit affine everywhere (very large quality loss)", 2, 2, 2, 0, true},
    {"mixed_2_6", "2_6bit-mixed", "mlx-lm mixed_2_6: 2-bit, 6-bit lm_head and use_more_bits v_proj/down_proj", 2, 2,
     6, 6, false},
    {"mixed_3_4", "3_4bit-mixed", "mlx-lm mixed_3_4: 3-bit, 4-bit lm_head and use_more_bits v_proj/down_proj", 3, 3,
     4, 4, false},
    {"mixed_3_6", "3_6bit-mixed", "mlx-lm mixed_3_6: 3-bit, 6-bit lm_head and use_more_bits v_proj/down_proj", 3, 3,
     6, 6, false},
    {"mixed_4_6", "4_6bit-mixed", "mlx-lm mixed_4_6: 4-bit, 6-bit lm_head and use_more_bits v_proj/down_proj", 4, 4,
     6, 6, false},
};
enum { N_RECIPES = sizeof recipes / sizeof recipes[0] };

int lp_mlx_recipe_count(void) { return N_RECIPES; }
const lp_mlx_recipe *lp_mlx_recipe_at(int i) { return i >= 0 && i < N_RECIPES ? &recipes[i] : NULL; }

const lp_mlx_recipe *lp_mlx_recipe_find(const char *name) {
    for (int i = 0; i < N_RECIPES; i++)
        if (strcasecmp(recipes[i].name, name) == 0) return &recipes[i];
    return NULL;
}

/* mlx-lm's per-model quant_predicate (mlx_lm/models/<model>.py): routers at 8 bits. */
static const struct {
    const char *model_type;
    lp_role role;
    int bits, group;
} model_predicates[] = {
    {"qwen3_moe", LP_T_FFN_ROUTER, 8, 64},
    {"gpt_oss", LP_T_FFN_ROUTER, 8, 64},
};

/* Modules that are nn.Linear / nn.Embedding / SwitchLinear in mlx-lm: the ones it quantizes. */
bool lp_mlx_role_is_linear(lp_role r) {
    switch (r) {
    case LP_T_TOKEN_EMBD: case LP_T_OUTPUT: case LP_T_ATTN_Q: case LP_T_ATTN_K: case LP_T_ATTN_V: case LP_T_ATTN_OUT:
    case LP_T_FFN_GATE: case LP_T_FFN_UP: case LP_T_FFN_DOWN: case LP_T_FFN_ROUTER: case LP_T_FFN_GATE_EXPS:
    case LP_T_FFN_UP_EXPS: case LP_T_FFN_DOWN_EXPS:
        return true;
    default: return false;
    }
}

static bool role_is_sensitive(lp_role r) { return r == LP_T_ATTN_V || r == LP_T_FFN_DOWN || r == LP_T_FFN_DOWN_EXPS; }

int lp_mlx_tensor_name(const lp_tensor_map *m, int layer, char *buf, size_t n) {
    if (m->src == LP_SRC_PLAIN) {
        lp_tensor_name_hf(m, layer, 0, buf, n);
        return 0;
    }
    if (m->src != LP_SRC_EXPERT_STACK) return lp_fail("tensor '%s': no MLX layout for this source kind", m->hf);
    /* "model.layers.N.mlp.experts.%d.gate_proj.weight" -> "model.layers.N.mlp.switch_mlp.gate_proj.weight" */
    char hf[200];
    lp_tensor_name_hf(m, layer, 0, hf, sizeof hf);
    char *e = strstr(hf, ".experts.0.");
    if (!e) return lp_fail("tensor '%s': expert name without '.experts.<e>.'", hf);
    *e = 0;
    snprintf(buf, n, "%s.switch_mlp.%s", hf, e + strlen(".experts.0."));
    return 0;
}

static int dtype_of(const char *config_dtype, lp_st_dtype *out) {
    static const struct {
        const char *name;
        lp_st_dtype dtype;
    } map[] = {{"bfloat16", LP_ST_BF16}, {"float16", LP_ST_F16}, {"float32", LP_ST_F32}};
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (strcmp(map[i].name, config_dtype) == 0) return *out = map[i].dtype, 0;
    return lp_fail("config.json: field 'dtype': '%s' is not a float type MLX stores (bfloat16, float16, float32)",
                   config_dtype);
}

typedef struct {
    int group, bits, embed_bits, output_bits;
} settings;

static void quantize_as(lp_mlx_tensor *mt, int bits, int group, const char *why) {
    mt->kind = LP_MLX_QUANT;
    mt->bits = bits;
    mt->group = group;
    mt->why = why;
}

/* What tensor t becomes (FORMATS.md 8.4, 8.6). */
static void decide(lp_mlx_tensor *mt, const lp_plan_tensor *t, const lp_hparams *hp, const lp_mlx_recipe *r,
                   const settings *s) {
    if (t->role == LP_T_OUTPUT && hp->tied_embeddings) {
        mt->kind = LP_MLX_DROP;
        mt->why = "tied to the embedding: dropped (mlx-lm sanitize)";
        return;
    }
    mt->kind = LP_MLX_FLOAT;
    mt->why = "norm/bias: model dtype";
    if (!lp_mlx_role_is_linear(t->role) || t->n_dims < 2) return;
    mt->entry_mode = true;
    if (t->role == LP_T_TOKEN_EMBD)
        quantize_as(mt, s->embed_bits, s->group, hp->tied_embeddings ? "embedding (also the tied head)" : "embedding");
    else if (t->role == LP_T_OUTPUT)
        quantize_as(mt, s->output_bits, s->group, "lm_head");
    else if (r->sensitive_bits && role_is_sensitive(t->role) && lp_use_more_bits(t->layer, hp->n_layer))
        quantize_as(mt, r->sensitive_bits, s->group, "more bits (use_more_bits layer)");
    else
        quantize_as(mt, s->bits, s->group, "recipe body");
    for (size_t i = 0; r->model_predicate && i < sizeof model_predicates / sizeof *model_predicates; i++)
        if (strcmp(model_predicates[i].model_type, hp->arch->model_type) == 0 && model_predicates[i].role == t->role) {
            quantize_as(mt, model_predicates[i].bits, model_predicates[i].group, "router: mlx-lm model predicate");
            mt->entry_mode = false;
        }
    /* mlx-lm skips modules whose rows are not whole groups (checked with the global size) */
    if (t->ne[0] % s->group != 0 || t->ne[0] % mt->group != 0) {
        mt->kind = LP_MLX_FLOAT;
        mt->why = "row not a multiple of the group size: model dtype";
        return;
    }
    mt->config_entry = mt->bits != s->bits || mt->group != s->group || !mt->entry_mode;
}

static int check_overrides(const lp_mlx_overrides *o) {
    if (o->group_size && !lp_mlx_params_valid(4, o->group_size))
        return lp_fail("--group-size: %d is not supported by MLX (32, 64, 128)", o->group_size);
    if (o->embedding_bits && !lp_mlx_params_valid(o->embedding_bits, DEFAULT_GROUP))
        return lp_fail("--embedding-bits: %d is not supported by MLX (2, 3, 4, 5, 6, 8)", o->embedding_bits);
    if (o->output_bits && !lp_mlx_params_valid(o->output_bits, DEFAULT_GROUP))
        return lp_fail("--output-bits: %d is not supported by MLX (2, 3, 4, 5, 6, 8)", o->output_bits);
    return 0;
}

static settings settings_of(const lp_mlx_recipe *r, const lp_mlx_overrides *o, bool tied) {
    settings s = {.group = o->group_size ? o->group_size : DEFAULT_GROUP, .bits = r->bits};
    s.embed_bits = o->embedding_bits ? o->embedding_bits : r->embed_bits;
    s.output_bits = o->output_bits ? o->output_bits : r->output_bits;
    /* A tied embedding is the head too: an explicit --output-bits reaches it unless
     * --embedding-bits says otherwise. */
    if (tied && o->output_bits && !o->embedding_bits) s.embed_bits = o->output_bits;
    return s;
}

static void dir_name(char *buf, size_t n, const lp_mlx_recipe *r, const lp_mlx_overrides *o, int group) {
    int len = snprintf(buf, n, "%s", r->dir);
    if (group != DEFAULT_GROUP) len += snprintf(buf + len, n - (size_t)len, "-g%d", group);
    if (o->embedding_bits) len += snprintf(buf + len, n - (size_t)len, "-emb%d", o->embedding_bits);
    if (o->output_bits) snprintf(buf + len, n - (size_t)len, "-out%d", o->output_bits);
}

int lp_mlx_plan_build(lp_mlx_plan *p, const lp_hparams *hp, const lp_plan *tensors, const lp_mlx_recipe *r,
                      const lp_mlx_overrides *o) {
    memset(p, 0, sizeof *p);
    lp_mlx_overrides none = {0};
    if (!o) o = &none;
    if (check_overrides(o) != 0 || dtype_of(hp->dtype, &p->dtype) != 0) return -1;
    settings s = settings_of(r, o, hp->tied_embeddings);
    p->recipe = r;
    p->group = s.group;
    p->bits = s.bits;
    dir_name(p->dir, sizeof p->dir, r, o, s.group);
    p->n = tensors->n;
    p->tensors = lp_xcalloc((size_t)(p->n ? p->n : 1), sizeof *p->tensors);
    for (int i = 0; i < p->n; i++) {
        const lp_plan_tensor *t = &tensors->tensors[i];
        lp_mlx_tensor *mt = &p->tensors[i];
        const lp_tensor_map *m = lp_arch_tensor(hp->arch, t->role);
        if (!m || lp_mlx_tensor_name(m, t->layer, mt->name, sizeof mt->name) != 0) {
            if (!m) lp_fail("tensor '%s': role unknown to the architecture", t->gguf_name);
            lp_mlx_plan_free(p);
            return -1;
        }
        mt->n_dims = t->n_dims;
        for (int d = 0; d < t->n_dims; d++) mt->shape[d] = t->ne[t->n_dims - 1 - d];
        mt->permuted = hp->arch->permute_qk && (t->role == LP_T_ATTN_Q || t->role == LP_T_ATTN_K);
        decide(mt, t, hp, r, &s);
        if (mt->kind == LP_MLX_QUANT) {
            size_t len = strlen(mt->name);
            if (len < 7 || strcmp(mt->name + len - 7, ".weight") != 0) {
                lp_fail("tensor '%s': a quantized module's tensor must end in '.weight'", mt->name);
                lp_mlx_plan_free(p);
                return -1;
            }
            snprintf(mt->module, sizeof mt->module, "%.*s", (int)(len - 7), mt->name);
        }
    }
    return 0;
}

void lp_mlx_plan_free(lp_mlx_plan *p) {
    free(p->tensors);
    memset(p, 0, sizeof *p);
}

static uint64_t elements(const lp_mlx_tensor *t) {
    uint64_t n = 1;
    for (int d = 0; d < t->n_dims; d++) n *= (uint64_t)t->shape[d];
    return n;
}

uint64_t lp_mlx_tensor_bytes(const lp_mlx_plan *p, int i) {
    const lp_mlx_tensor *t = &p->tensors[i];
    const uint64_t dsize = lp_st_dtype_size(p->dtype);
    switch (t->kind) {
    case LP_MLX_DROP: return 0;
    case LP_MLX_FLOAT: return elements(t) * dsize;
    case LP_MLX_QUANT: {
        const int64_t row = t->shape[t->n_dims - 1];
        const uint64_t rows = elements(t) / (uint64_t)row;
        return rows * ((uint64_t)lp_mlx_row_words(row, t->bits) * 4 + 2 * (uint64_t)(row / t->group) * dsize);
    }
    }
    return 0;
}

uint64_t lp_mlx_plan_bytes(const lp_mlx_plan *p) {
    uint64_t total = 0;
    for (int i = 0; i < p->n; i++) total += lp_mlx_tensor_bytes(p, i);
    return total;
}

uint64_t lp_mlx_plan_params(const lp_mlx_plan *p) {
    uint64_t total = 0;
    for (int i = 0; i < p->n; i++)
        if (p->tensors[i].kind != LP_MLX_DROP) total += elements(&p->tensors[i]);
    return total;
}

double lp_mlx_plan_bpw(const lp_mlx_plan *p) {
    uint64_t params = lp_mlx_plan_params(p);
    return params ? 8.0 * (double)lp_mlx_plan_bytes(p) / (double)params : 0.0;
}

json_t *lp_mlx_quant_config(const lp_mlx_plan *p) {
    json_t *q = json_pack("{s:i, s:i, s:s}", "group_size", p->group, "bits", p->bits, "mode", "affine");
    for (int i = 0; i < p->n; i++) {
        const lp_mlx_tensor *t = &p->tensors[i];
        if (t->kind != LP_MLX_QUANT || !t->config_entry) continue;
        json_t *e = json_pack("{s:i, s:i}", "group_size", t->group, "bits", t->bits);
        if (t->entry_mode) json_object_set_new(e, "mode", json_string("affine"));
        json_object_set_new(q, t->module, e);
    }
    return q;
}

json_t *lp_mlx_plan_histogram(const lp_mlx_plan *p) {
    json_t *h = json_object();
    for (int i = 0; i < p->n; i++) {
        const lp_mlx_tensor *t = &p->tensors[i];
        if (t->kind == LP_MLX_DROP) continue;
        char key[32];
        if (t->kind == LP_MLX_QUANT)
            snprintf(key, sizeof key, "%dbit-g%d", t->bits, t->group);
        else
            snprintf(key, sizeof key, "%s", p->dtype == LP_ST_BF16 ? "bf16" : p->dtype == LP_ST_F16 ? "f16" : "f32");
        json_t *v = json_object_get(h, key);
        json_object_set_new(h, key, json_integer(v ? json_integer_value(v) + 1 : 1));
    }
    return h;
}
