/* model.h — a loaded model: hyper-parameters plus every weight, by role.
 *
 * Two sources fill the same struct:
 *   - lp_model_load_gguf(path): names from the architecture's tensor map, hparams
 *     from the GGUF {arch}.* keys; the GGUF mmap stays open and the weights point
 *     into it (any type with a traits row: F32/F16/BF16/K-quants/...).
 *   - lp_model_load_hf(dir): straight from an HF safetensors checkpoint (F32/F16/
 *     BF16 used in place through the shard mmaps). HF per-expert tensors are NOT
 *     copied into one stack: the weight keeps one pointer per expert
 *     (lp_weight.expert_data), so a 60 GB MoE checkpoint costs no heap.
 *     llama from HF keeps its un-permuted q/k rows, so the model's rope is NEOX
 *     (rotating (i, i+d/2) on HF rows equals NORM rope on GGUF-permuted rows).
 *     gpt-oss MXFP4 experts are the one copy: repacked once into ggml's
 *     block_mxfp4 rows (gate/up de-interleaved), as the GGUF converter does.
 *
 * Vector weights (norms, biases, sinks, rope factors) are always materialised as
 * F32 copies owned by the model, so backends only meet matrices in other types.
 * The runtime reads weights only through lp_model_weight(). */
#ifndef LP_MODEL_H
#define LP_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../arch/arch.h"
#include "../quant/qtype.h"

typedef struct lp_gguf lp_gguf;
typedef struct lp_checkpoint lp_checkpoint;

/* One weight. ne[0] = row length (input features), ne[1] = rows (outputs),
 * ne[2] = experts (1 for non-expert weights). Row r of expert e starts at
 * lp_weight_expert(w, e) + r * row_bytes. */
typedef struct lp_weight {
    bool present;
    lp_type type;
    int n_dims;
    int64_t ne[3];
    size_t row_bytes;
    size_t expert_bytes;      /* ne[1] * row_bytes */
    const void *data;         /* all experts contiguous; NULL when expert_data is used */
    const void **expert_data; /* one pointer per expert (HF checkpoints), owned by the model */
} lp_weight;

static inline const void *lp_weight_expert(const lp_weight *w, int e) {
    return w->expert_data ? w->expert_data[e] : (const uint8_t *)w->data + (size_t)e * w->expert_bytes;
}

enum { LP_N_GLOBAL_ROLES = LP_T_FIRST_LAYER_ROLE, LP_N_LAYER_ROLES = LP_T_COUNT - LP_T_FIRST_LAYER_ROLE };

typedef enum { LP_MODEL_FROM_GGUF, LP_MODEL_FROM_HF } lp_model_source_kind;

typedef struct lp_model {
    lp_hparams hp;
    const lp_arch *arch;
    lp_rope_kind rope;          /* the rotation these weights need (see header comment) */
    lp_model_source_kind source;
    char *path;
    lp_weight global[LP_N_GLOBAL_ROLES];
    lp_weight *layers;          /* [n_layer][LP_N_LAYER_ROLES] */
    lp_gguf *gguf;              /* open while the model lives (GGUF source) */
    lp_checkpoint *ckpt;        /* open while the model lives (HF source) */
    void **owned;               /* F32 copies and expert pointer arrays */
    int n_owned, cap_owned;
} lp_model;

lp_model *lp_model_load_gguf(const char *path);
lp_model *lp_model_load_hf(const char *dir);
/* A directory (HF checkpoint) or a .gguf file. */
lp_model *lp_model_load(const char *path);
void lp_model_free(lp_model *m);

/* The weight of a role (layer ignored for global roles); NULL if the model has none. */
const lp_weight *lp_model_weight(const lp_model *m, lp_role role, int layer);
/* The open GGUF (tokenizer and template readers use it); NULL for HF models. */
const lp_gguf *lp_model_gguf(const lp_model *m);
/* Total bytes of all weights (for reporting). */
uint64_t lp_model_weight_bytes(const lp_model *m);

#endif
