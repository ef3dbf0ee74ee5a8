/* plan.h — per-tensor target types for a GGUF precision recipe.
 *
 * A plan is data: one row per output tensor with its role, layer, shape and
 * chosen type, and the reason for that choice. The converter executes plans;
 * `convert --dry-run` prints them; tests check them against llama.cpp's rules
 * (FORMATS.md s.7). */
#ifndef LP_PLAN_H
#define LP_PLAN_H

#include <stdint.h>

#include "../arch/arch.h"
#include "../quant/qtype.h"

typedef struct {
    const char *name;   /* "q4_k_m" */
    uint32_t ftype;     /* llama_ftype written to general.file_type */
    lp_type base;       /* type of "everything else" */
    const char *summary;
} lp_recipe;

const lp_recipe *lp_recipe_find(const char *name); /* case-insensitive; NULL if unknown */
int lp_recipe_count(void);
const lp_recipe *lp_recipe_at(int i);

typedef struct {
    char gguf_name[64];
    lp_role role;
    int layer;          /* -1 for global tensors */
    int n_dims;
    int64_t ne[3];      /* GGUF order: ne[0] = row length */
    lp_type type;
    const char *why;    /* short reason: "recipe base", "more bits (use_more_bits)", "norm: f32", ... */
} lp_plan_tensor;

typedef struct {
    const lp_recipe *recipe;
    int n;
    lp_plan_tensor *tensors;
} lp_plan;

/* One row per GGUF tensor, shapes from hparams; `present` says for optional roles
 * (biases, lm_head) whether the checkpoint has them: present(ctx, role, layer). */
typedef int (*lp_role_present_fn)(void *ctx, lp_role role, int layer);
int lp_plan_build(lp_plan *plan, const lp_hparams *hp, const lp_recipe *recipe, lp_role_present_fn present, void *ctx);
void lp_plan_free(lp_plan *plan);
/* Total bytes of tensor data and parameters, for bits-per-weight. */
uint64_t lp_plan_bytes(const lp_plan *plan);
uint64_t lp_plan_params(const lp_plan *plan);

#endif
