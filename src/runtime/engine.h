/* engine.h — runs a model: forward steps over batches of tokens from one or
 * several sequences, each sequence in its own KV-cache slot.
 *
 * A step is a list of tokens, each with its sequence's slot and its position
 * there. Prefill is a batch of one sequence's consecutive tokens; a server
 * batches the next token of many sequences into one step. Within a step the
 * tokens of one sequence must appear in increasing position order; a token at
 * position p attends to positions 0..p of its slot (earlier steps or this one).
 * Batches longer than n_batch are split into consecutive steps.
 *
 * The forward pass is written once against backend.h; lp_engine_create() uses
 * the CPU backend. Math is F32 throughout (KV cache F32). */
#ifndef LP_ENGINE_H
#define LP_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "model.h"

typedef struct lp_engine lp_engine;

typedef struct {
    int n_ctx;     /* positions per slot; 0: min(model's training context, 4096) */
    int n_slots;   /* sequences alive at once; 0: 1 */
    int n_batch;   /* most tokens per forward step; 0: 512 */
    int n_threads; /* CPU backend threads; 0: all online CPUs */
    bool f32_activations; /* quantized weights times F32 activations (slower; reference math)
                             instead of llama.cpp's activation quantization */
} lp_engine_params;

typedef struct {
    int n_tokens;
    const int32_t *tokens;
    const int32_t *pos;
    const int32_t *slot;  /* NULL: every token in slot 0 */
    const int8_t *logits; /* per token: 1 = return its logits; NULL: only the last token's */
} lp_batch;

/* p may be NULL (all defaults). The model must outlive the engine. */
lp_engine *lp_engine_create(const lp_model *m, const lp_engine_params *p);
/* Same with a given backend, which the engine owns from now on (freed on failure too). */
lp_engine *lp_engine_create_with_backend(const lp_model *m, lp_backend *be, const lp_engine_params *p);
void lp_engine_free(lp_engine *e);

const lp_model *lp_engine_model(const lp_engine *e);
int lp_engine_n_vocab(const lp_engine *e);
int lp_engine_n_ctx(const lp_engine *e);
int lp_engine_n_slots(const lp_engine *e);

/* A buffer of rows x n_vocab floats for logits that the backend fills fastest (CUDA:
 * pinned host memory, so a step's logits arrive by one DMA); any other buffer works
 * too. Free it with lp_engine_logits_free before the engine. */
float *lp_engine_logits_alloc(lp_engine *e, size_t rows);
void lp_engine_logits_free(lp_engine *e, float *logits);

/* Run a batch. logits receives [n_flagged][n_vocab] floats, flagged tokens in batch
 * order (may be NULL when nothing is flagged). */
int lp_engine_decode(lp_engine *e, const lp_batch *b, float *logits);
/* n consecutive tokens of one sequence at positions pos0.. in slot. logits: the last
 * token's [n_vocab] (all_logits false) or all n rows; may be NULL. */
int lp_engine_eval(lp_engine *e, int slot, int pos0, const int32_t *tokens, int n, float *logits, bool all_logits);
/* Share a prompt prefix: positions [0, n_pos) of slot src become those of slot dst. */
int lp_engine_kv_copy(lp_engine *e, int src_slot, int dst_slot, int n_pos);

#endif
