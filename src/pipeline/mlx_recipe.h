/* mlx_recipe.h — MLX quantization recipes and the per-module plan they give.
 *
 * A recipe is data: bits for the body, the embedding and lm_head, the "sensitive"
 * modules (v_proj / down_proj on llama.cpp's use_more_bits layers, mlx-lm's
 * mixed_X_Y recipes, FORMATS.md 8.6) and whether the model's own mlx-lm predicate
 * applies (Qwen3-MoE router at 8 bits, group 64). An MLX plan lists, parallel to
 * the converter's tensor list (lp_plan), what each tensor becomes in the MLX
 * directory: dropped (tied lm_head), kept as a float in the model dtype (norms,
 * biases, matrices whose rows are not a whole number of groups), or affine
 * quantized with (bits, group). The config.json "quantization" section is derived
 * from the plan.
 *
 * Recipes and their output directories (DIR/mlx/<dir>/):
 *   4bit -> 4bit-pure, 4bit-mixed -> 4bit-mixed, 6bit -> 6bit-pure, 8bit -> 8bit-pure,
 *   3bit -> 3bit-pure, 2bit -> 2bit-pure, mixed_2_6 -> 2_6bit-mixed,
 *   mixed_3_4 -> 3_4bit-mixed, mixed_3_6 -> 3_6bit-mixed, mixed_4_6 -> 4_6bit-mixed.
 * Overrides append to the directory name: -g32 / -g128 (group size), -emb<b>, -out<b>. */
#ifndef LP_MLX_RECIPE_H
#define LP_MLX_RECIPE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "../arch/arch.h"
#include "../formats/safetensors.h"
#include "plan.h"

typedef struct {
    const char *name;     /* "4bit-mixed": what --precision takes and manifest.json lists */
    const char *dir;      /* "4bit-mixed": output directory under DIR/mlx/ */
    const char *summary;
    int bits;             /* every quantized module not named below */
    int embed_bits;       /* model.embed_tokens (untied) */
    int output_bits;      /* lm_head, and the embedding when it is tied to the head */
    int sensitive_bits;   /* v_proj / down_proj on use_more_bits layers; 0 = like the body */
    bool model_predicate; /* the architecture's own mlx-lm predicate applies (mixed_X_Y replace it) */
} lp_mlx_recipe;

const lp_mlx_recipe *lp_mlx_recipe_find(const char *name); /* case-insensitive; NULL if unknown */
int lp_mlx_recipe_count(void);
const lp_mlx_recipe *lp_mlx_recipe_at(int i);

typedef struct {
    int group_size;     /* 0 = 64 */
    int embedding_bits; /* 0 = recipe */
    int output_bits;    /* 0 = recipe */
} lp_mlx_overrides;

typedef enum { LP_MLX_DROP, LP_MLX_FLOAT, LP_MLX_QUANT } lp_mlx_kind;

typedef struct {
    char name[160];     /* stored name: "model.norm.weight"; for QUANT the module's "P.weight" */
    char module[160];   /* QUANT: module path P ("model.layers.3.mlp.down_proj") */
    lp_mlx_kind kind;
    int bits, group;    /* QUANT */
    bool config_entry;  /* QUANT with settings other than the global ones: a per-layer entry */
    bool entry_mode;    /* the entry carries "mode" (model predicates' dicts do not) */
    bool permuted;      /* rows arrive GGUF-permuted (llama q/k) and must be put back in HF order */
    int n_dims;
    int64_t shape[3];   /* row-major (HF) order; last = row length */
    const char *why;
} lp_mlx_tensor;

typedef struct {
    const lp_mlx_recipe *recipe;
    int group;          /* global group size */
    int bits;           /* global bits */
    lp_st_dtype dtype;  /* model float dtype: scales, biases and float tensors */
    char dir[64];       /* "4bit-mixed", "4bit-pure-g32" */
    int n;              /* == the tensor list's n */
    lp_mlx_tensor *tensors;
} lp_mlx_plan;

/* Roles that are nn.Linear / nn.Embedding / SwitchLinear modules in mlx-lm (quantizable matrices). */
bool lp_mlx_role_is_linear(lp_role role);

/* The MLX tensor name of a role's tensor: the HF name, except HF per-expert tensors,
 * which MLX stacks as "model.layers.N.mlp.switch_mlp.<proj>.weight". */
int lp_mlx_tensor_name(const lp_tensor_map *m, int layer, char *buf, size_t n);

/* dtype: the config's "bfloat16" / "float16" / "float32". */
int lp_mlx_plan_build(lp_mlx_plan *p, const lp_hparams *hp, const lp_plan *tensors, const lp_mlx_recipe *r,
                      const lp_mlx_overrides *o);
void lp_mlx_plan_free(lp_mlx_plan *p);

/* Bytes of the stored tensors (weight + scales + biases or float data). */
uint64_t lp_mlx_tensor_bytes(const lp_mlx_plan *p, int i);
uint64_t lp_mlx_plan_bytes(const lp_mlx_plan *p);
/* Parameters of the stored model (tied head not counted), as mlx-lm's total_parameters. */
uint64_t lp_mlx_plan_params(const lp_mlx_plan *p);
/* Bits per weight as mlx-lm reports it: all stored bytes * 8 / parameters. */
double lp_mlx_plan_bpw(const lp_mlx_plan *p);

/* config.json "quantization": {"group_size", "bits", "mode": "affine", per-layer entries}. */
json_t *lp_mlx_quant_config(const lp_mlx_plan *p);
/* {"4bit-g64": n, "6bit-g64": n, "bf16": n}: modules per setting, for metadata/manifest. */
json_t *lp_mlx_plan_histogram(const lp_mlx_plan *p);

#endif
