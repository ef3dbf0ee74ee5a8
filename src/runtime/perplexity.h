/* perplexity.h — held-out scoring of a model (perplexity over chunks) and the
 * comparison of two models' next-token distributions (KL divergence), the two
 * numbers `validate` reports.
 *
 * Perplexity follows the refs convention (fixtures README, refs/<model>.json
 * ppl_ctx*): chunk c is tokens [c*ctx, (c+1)*ctx), evaluated from an empty
 * context; "all positions" scores tokens 1..ctx-1 of the chunk (each from the
 * logits of the token before it), "second half" scores tokens ctx/2..ctx-1
 * (llama.cpp's perplexity convention). Logs and sums are in double. */
#ifndef LP_PERPLEXITY_H
#define LP_PERPLEXITY_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"

typedef struct {
    int n_chunks;
    int ctx;
    double *chunk_nll;        /* [n_chunks] mean NLL of tokens 1..ctx-1 */
    double *chunk_nll_second; /* [n_chunks] mean NLL of tokens ctx/2..ctx-1 */
    double nll_all, nll_second; /* means over all chunks' scored tokens */
    double ppl_all, ppl_second; /* exp of those */
} lp_ppl_result;

/* Score the first max_chunks complete chunks (<= 0: all) in KV slot 0 of e.
 * progress (may be NULL) is called after each chunk. */
typedef void (*lp_ppl_progress_fn)(void *ud, int chunk, int n_chunks, double nll_so_far);
int lp_perplexity(lp_engine *e, const int32_t *tokens, size_t n_tokens, int ctx, int max_chunks,
                  lp_ppl_progress_fn progress, void *ud, lp_ppl_result *out);
void lp_ppl_result_free(lp_ppl_result *r);

/* -log softmax(logits)[target], in double. */
double lp_token_nll(const float *logits, int n_vocab, int32_t target);

/* KL divergence of a test model from a base model, accumulated one position at a time. */
typedef struct lp_kld lp_kld;
typedef struct {
    size_t n;           /* positions */
    double mean_kld;    /* mean over positions of KL(base || test) */
    double p99_kld;     /* 99th percentile */
    double max_kld;
    double top1_agree;  /* fraction of positions where both argmaxes agree */
} lp_kld_stats;

lp_kld *lp_kld_new(void);
void lp_kld_free(lp_kld *k);
void lp_kld_add(lp_kld *k, const float *base_logits, const float *test_logits, int n_vocab);
void lp_kld_get(const lp_kld *k, lp_kld_stats *out);

#endif
