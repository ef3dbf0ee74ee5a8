/* report.h — the architecture report printed by `llama-pajamas-quant info` and
 * stored in manifest.json: family, attention layout, experts, context, parameter
 * counts, sizes, and the recommended quantization strategy. Counts come from the
 * checkpoint's tensors when one is present (not guessed), else from config.json. */
#ifndef LP_REPORT_H
#define LP_REPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "../arch/arch.h"
#include "../formats/safetensors.h"

typedef struct {
    lp_hparams hp;
    char attention[48];        /* "GQA 32:8 (4 q heads per kv head)" */
    uint64_t params_total;
    uint64_t params_embedding; /* token embeddings + untied lm_head */
    uint64_t params_non_embedding;
    uint64_t params_active;    /* per token: all non-expert + n_expert_used experts */
    uint64_t params_experts;   /* all expert weights */
    uint64_t bf16_bytes;       /* params_total * 2 */
    uint64_t kv_bytes_per_1k;  /* f16 K and V cache for 1024 tokens (SWA layers capped at the window) */
    int ctx_native, ctx_extended;
    bool counted_from_checkpoint;
    char recommended_gguf[32];
    char recommended_mlx[32];
    char recommendation[256];  /* one sentence of why */
} lp_report;

/* ckpt may be NULL (config-only report). */
int lp_report_build(lp_report *r, const lp_hparams *hp, const lp_checkpoint *ckpt);
json_t *lp_report_json(const lp_report *r);
void lp_report_print(const lp_report *r, const char *model_name);

#endif
