/* plan.c — llama.cpp's K-quant mixes as data (FORMATS.md s.7): which type each
 * tensor gets under q4_k_m, q6_k, ... including the "more bits" layers for
 * attn_v / ffn_down, the Q6_K output head, MXFP4_MOE's MXFP4 experts, and the
 * fallbacks for rows that are not a multiple of the block size. */
#include "plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../core/err.h"

/* How a recipe treats attn_v and ffn_down (the tensors llama.cpp singles out). */
typedef enum {
    SENS_BASE,          /* same as the base type */
    SENS_MORE_BITS_Q6,  /* Q6_K on use_more_bits layers, else base */
    SENS_FIRST_Q5,      /* Q5_K on the first layers (n/16 for ffn_down, 2 for attn_v), else Q4_K */
    SENS_Q2K,           /* Q2_K mix: attn_v Q4_K if GQA >= 4 else Q3_K; ffn_down Q3_K */
} sensitivity;

typedef struct {
    lp_recipe pub;
    lp_type embd, output, attn_out;
    sensitivity attn_v, ffn_down;
    bool mxfp4_experts; /* MXFP4_MOE: stacked experts (ne[2] > 1) in MXFP4, the rest as above */
} recipe_row;

static const recipe_row recipes[] = {
    {{"f32", 0, LP_TYPE_F32, "32-bit float, lossless"}, LP_TYPE_F32, LP_TYPE_F32, LP_TYPE_F32, SENS_BASE, SENS_BASE,
     false},
    {{"f16", 1, LP_TYPE_F16, "16-bit float"}, LP_TYPE_F16, LP_TYPE_F16, LP_TYPE_F16, SENS_BASE, SENS_BASE, false},
    {{"bf16", 32, LP_TYPE_BF16, "bfloat16, lossless for bf16 checkpoints"}, LP_TYPE_BF16, LP_TYPE_BF16, LP_TYPE_BF16,
     SENS_BASE, SENS_BASE, false},
    {{"q8_0", 7, LP_TYPE_Q8_0, "8.5 bpw, near lossless"}, LP_TYPE_Q8_0, LP_TYPE_Q8_0, LP_TYPE_Q8_0, SENS_BASE,
     SENS_BASE, false},
    {{"q6_k", 18, LP_TYPE_Q6_K, "6.56 bpw everywhere"}, LP_TYPE_Q6_K, LP_TYPE_Q6_K, LP_TYPE_Q6_K, SENS_BASE,
     SENS_BASE, false},
    {{"q5_k_m", 17, LP_TYPE_Q5_K, "Q5_K, Q6_K for half of attn_v/ffn_down and the output"}, LP_TYPE_Q5_K, LP_TYPE_Q6_K,
     LP_TYPE_Q5_K, SENS_MORE_BITS_Q6, SENS_MORE_BITS_Q6, false},
    {{"q4_k_m", 15, LP_TYPE_Q4_K, "Q4_K, Q6_K for half of attn_v/ffn_down and the output"}, LP_TYPE_Q4_K, LP_TYPE_Q6_K,
     LP_TYPE_Q4_K, SENS_MORE_BITS_Q6, SENS_MORE_BITS_Q6, false},
    {{"q3_k_m", 12, LP_TYPE_Q3_K, "Q3_K, Q4_K/Q5_K for attention output, attn_v, ffn_down"}, LP_TYPE_Q3_K,
     LP_TYPE_Q6_K, LP_TYPE_Q4_K, SENS_FIRST_Q5, SENS_FIRST_Q5, false},
    {{"q2_k", 10, LP_TYPE_Q2_K, "Q2_K, Q3_K/Q4_K for the sensitive tensors (large quality loss)"}, LP_TYPE_Q2_K,
     LP_TYPE_Q6_K, LP_TYPE_Q3_K, SENS_Q2K, SENS_Q2K, false},
    {{"mxfp4_moe", 38, LP_TYPE_Q8_0, "MXFP4 experts (gpt-oss's own blocks kept as they are), Q8_0 elsewhere"},
     LP_TYPE_Q8_0, LP_TYPE_Q8_0, LP_TYPE_Q8_0, SENS_BASE, SENS_BASE, true},
};
enum { N_RECIPES = sizeof recipes / sizeof recipes[0] };

int lp_recipe_count(void) { return N_RECIPES; }
const lp_recipe *lp_recipe_at(int i) { return i >= 0 && i < N_RECIPES ? &recipes[i].pub : NULL; }

const lp_recipe *lp_recipe_find(const char *name) {
    for (int i = 0; i < N_RECIPES; i++)
        if (strcasecmp(recipes[i].pub.name, name) == 0) return &recipes[i].pub;
    return NULL;
}

static const recipe_row *row_of(const lp_recipe *r) { return (const recipe_row *)r; }

static lp_type sensitive_type(const recipe_row *r, sensitivity s, bool is_attn_v, int layer, const lp_hparams *hp) {
    int n = hp->n_layer;
    switch (s) {
    case SENS_BASE: return r->pub.base;
    case SENS_MORE_BITS_Q6: return lp_use_more_bits(layer, n) ? LP_TYPE_Q6_K : r->pub.base;
    case SENS_FIRST_Q5:
        if (is_attn_v) return layer < 2 ? LP_TYPE_Q5_K : LP_TYPE_Q4_K;
        return layer < n / 16 ? LP_TYPE_Q5_K : LP_TYPE_Q4_K;
    case SENS_Q2K:
        if (is_attn_v) return hp->n_head / hp->n_head_kv >= 4 ? LP_TYPE_Q4_K : LP_TYPE_Q3_K;
        return LP_TYPE_Q3_K;
    }
    return r->pub.base;
}

/* Roles that stay F32 whatever the recipe: norms, biases, sinks, routers (llama.cpp keeps them). */
static bool role_stays_f32(lp_role role) {
    switch (role) {
    case LP_T_OUTPUT_NORM: case LP_T_ATTN_NORM: case LP_T_FFN_NORM: case LP_T_ATTN_Q_NORM: case LP_T_ATTN_K_NORM:
    case LP_T_ATTN_Q_BIAS: case LP_T_ATTN_K_BIAS: case LP_T_ATTN_V_BIAS: case LP_T_ATTN_OUT_BIAS:
    case LP_T_ATTN_SINKS: case LP_T_FFN_ROUTER: case LP_T_FFN_ROUTER_BIAS: case LP_T_FFN_GATE_EXPS_BIAS:
    case LP_T_FFN_UP_EXPS_BIAS: case LP_T_FFN_DOWN_EXPS_BIAS: case LP_T_ROPE_FREQS:
        return true;
    default: return false;
    }
}

/* llama.cpp's fallback when a row is not a whole number of 256-element blocks. */
static lp_type fallback_type(lp_type t, int64_t row) {
    const lp_qtype_traits *tr = lp_qtype(t);
    if (!tr || row % tr->block_size == 0) return t;
    lp_type alt;
    switch (t) {
    case LP_TYPE_Q2_K: case LP_TYPE_Q3_K: alt = LP_TYPE_IQ4_NL; break;
    case LP_TYPE_Q4_K: alt = LP_TYPE_Q5_0; break;
    case LP_TYPE_Q5_K: alt = LP_TYPE_Q5_1; break;
    case LP_TYPE_Q6_K: alt = LP_TYPE_Q8_0; break;
    default: alt = LP_TYPE_F16; break;
    }
    const lp_qtype_traits *ta = lp_qtype(alt);
    if (!ta || !ta->from_float || row % ta->block_size != 0) alt = LP_TYPE_F16;
    return alt;
}

static lp_type choose(const recipe_row *r, const lp_hparams *hp, lp_role role, int layer, const int64_t ne[3],
                      const char **why) {
    if (role_stays_f32(role)) {
        *why = "norm/bias/router: f32";
        return LP_TYPE_F32;
    }
    if (r->mxfp4_experts && ne[2] > 1) {
        *why = "stacked experts: mxfp4";
        return LP_TYPE_MXFP4;
    }
    bool tied_head = hp->tied_embeddings && role == LP_T_TOKEN_EMBD;
    switch (role) {
    case LP_T_OUTPUT: *why = "output head"; return r->output;
    case LP_T_TOKEN_EMBD:
        *why = tied_head ? "embeddings tied to the output head" : "token embeddings";
        return tied_head ? r->output : r->embd;
    case LP_T_ATTN_V:
        if (hp->n_expert == 8 && r->pub.base != LP_TYPE_F32 && lp_qtype(r->pub.base)->quantized) {
            *why = "8-expert model: attn_v q8_0";
            return LP_TYPE_Q8_0;
        }
        *why = "attn_v (sensitive)";
        return sensitive_type(r, r->attn_v, true, layer, hp);
    case LP_T_FFN_DOWN: case LP_T_FFN_DOWN_EXPS:
        *why = "ffn_down (sensitive)";
        return sensitive_type(r, r->ffn_down, false, layer, hp);
    case LP_T_ATTN_OUT: *why = "attention output"; return r->attn_out;
    default: *why = "recipe base"; return r->pub.base;
    }
}

/* GGUF shape of a role (ne[0] = row length). */
static int role_shape(const lp_hparams *hp, lp_role role, int64_t ne[3]) {
    int64_t E = hp->n_embd, q = (int64_t)hp->n_head * hp->head_dim, kv = (int64_t)hp->n_head_kv * hp->head_dim;
    int64_t ff = hp->n_ff, ffe = hp->n_ff_exp, X = hp->n_expert, V = hp->n_vocab;
    ne[1] = ne[2] = 1;
    switch (role) {
    case LP_T_TOKEN_EMBD: case LP_T_OUTPUT: ne[0] = E; ne[1] = V; return 2;
    case LP_T_OUTPUT_NORM: case LP_T_ATTN_NORM: case LP_T_FFN_NORM: case LP_T_ATTN_OUT_BIAS: ne[0] = E; return 1;
    case LP_T_ROPE_FREQS: ne[0] = hp->head_dim / 2; return 1;
    case LP_T_ATTN_Q: ne[0] = E; ne[1] = q; return 2;
    case LP_T_ATTN_K: case LP_T_ATTN_V: ne[0] = E; ne[1] = kv; return 2;
    case LP_T_ATTN_OUT: ne[0] = q; ne[1] = E; return 2;
    case LP_T_ATTN_Q_BIAS: ne[0] = q; return 1;
    case LP_T_ATTN_K_BIAS: case LP_T_ATTN_V_BIAS: ne[0] = kv; return 1;
    case LP_T_ATTN_Q_NORM: case LP_T_ATTN_K_NORM: ne[0] = hp->head_dim; return 1;
    case LP_T_ATTN_SINKS: ne[0] = hp->n_head; return 1;
    case LP_T_FFN_GATE: case LP_T_FFN_UP: ne[0] = E; ne[1] = ff; return 2;
    case LP_T_FFN_DOWN: ne[0] = ff; ne[1] = E; return 2;
    case LP_T_FFN_ROUTER: ne[0] = E; ne[1] = X; return 2;
    case LP_T_FFN_ROUTER_BIAS: ne[0] = X; return 1;
    case LP_T_FFN_GATE_EXPS: case LP_T_FFN_UP_EXPS: ne[0] = E; ne[1] = ffe; ne[2] = X; return 3;
    case LP_T_FFN_DOWN_EXPS: ne[0] = ffe; ne[1] = E; ne[2] = X; return 3;
    case LP_T_FFN_GATE_EXPS_BIAS: case LP_T_FFN_UP_EXPS_BIAS: ne[0] = ffe; ne[1] = X; return 2;
    case LP_T_FFN_DOWN_EXPS_BIAS: ne[0] = E; ne[1] = X; return 2;
    default: return 0;
    }
}

static int add_row(lp_plan *plan, int *cap, const lp_hparams *hp, const recipe_row *r, const lp_tensor_map *m,
                   int layer) {
    if (plan->n == *cap) plan->tensors = lp_xrealloc(plan->tensors, sizeof *plan->tensors * (size_t)(*cap *= 2));
    lp_plan_tensor *t = &plan->tensors[plan->n++];
    memset(t, 0, sizeof *t);
    lp_tensor_name_gguf(m, layer, t->gguf_name, sizeof t->gguf_name);
    t->role = m->role;
    t->layer = layer;
    t->n_dims = role_shape(hp, m->role, t->ne);
    if (t->n_dims == 0) return lp_fail("plan: no shape rule for tensor '%s'", t->gguf_name);
    lp_type want = choose(r, hp, m->role, layer < 0 ? 0 : layer, t->ne, &t->why);
    t->type = t->n_dims == 1 ? LP_TYPE_F32 : fallback_type(want, t->ne[0]);
    if (t->type != want && t->n_dims > 1) t->why = "row not a multiple of the block size: fallback";
    return 0;
}

int lp_plan_build(lp_plan *plan, const lp_hparams *hp, const lp_recipe *recipe, lp_role_present_fn present,
                  void *ctx) {
    memset(plan, 0, sizeof *plan);
    plan->recipe = recipe;
    int cap = 64;
    plan->tensors = lp_xmalloc(sizeof *plan->tensors * (size_t)cap);
    const recipe_row *r = row_of(recipe);
    for (const lp_tensor_map *m = hp->arch->tensors; m->role != LP_T_COUNT; m++) {
        if (lp_role_per_layer(m->role)) continue;
        if (!m->required && !present(ctx, m->role, -1)) continue;
        if (add_row(plan, &cap, hp, r, m, -1) != 0) goto fail;
    }
    for (int l = 0; l < hp->n_layer; l++) {
        for (const lp_tensor_map *m = hp->arch->tensors; m->role != LP_T_COUNT; m++) {
            if (!lp_role_per_layer(m->role)) continue;
            if (!m->required && !present(ctx, m->role, l)) continue;
            if (add_row(plan, &cap, hp, r, m, l) != 0) goto fail;
        }
    }
    return 0;
fail:
    lp_plan_free(plan);
    return -1;
}

void lp_plan_free(lp_plan *plan) {
    free(plan->tensors);
    memset(plan, 0, sizeof *plan);
}

static int64_t n_elements(const lp_plan_tensor *t) { return t->ne[0] * t->ne[1] * t->ne[2]; }

uint64_t lp_plan_bytes(const lp_plan *plan) {
    uint64_t total = 0;
    for (int i = 0; i < plan->n; i++) {
        const lp_plan_tensor *t = &plan->tensors[i];
        total += lp_row_size(t->type, t->ne[0]) * (uint64_t)(t->ne[1] * t->ne[2]);
    }
    return total;
}

uint64_t lp_plan_params(const lp_plan *plan) {
    uint64_t total = 0;
    for (int i = 0; i < plan->n; i++) total += (uint64_t)n_elements(&plan->tensors[i]);
    return total;
}
