/* perplexity.c — chunked perplexity over a token stream and the KL-divergence
 * accumulator comparing two models position by position. */
#include "perplexity.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"

double lp_token_nll(const float *logits, int n_vocab, int32_t target) {
    float max = logits[0];
    for (int i = 1; i < n_vocab; i++)
        if (logits[i] > max) max = logits[i];
    double sum = 0.0;
    for (int i = 0; i < n_vocab; i++) sum += exp((double)logits[i] - max);
    return log(sum) + max - logits[target];
}

/* Logit rows evaluated per engine call: bounded so a 150k vocabulary stays ~64 MiB. */
static int piece_rows(int ctx, int n_vocab) {
    int rows = (int)((64u << 20) / ((size_t)n_vocab * sizeof(float)));
    if (rows < 16) rows = 16;
    return rows < ctx ? rows : ctx;
}

/* Mean NLLs of one chunk (all positions, second half). */
static int score_chunk(lp_engine *e, const int32_t *chunk, int ctx, float *logits, int piece, double *all, double *second) {
    const int V = lp_engine_n_vocab(e);
    double sum_all = 0.0, sum_second = 0.0;
    for (int start = 0; start < ctx; start += piece) {
        const int n = ctx - start < piece ? ctx - start : piece;
        if (lp_engine_eval(e, 0, start, chunk + start, n, logits, true) != 0) return -1;
        for (int i = 0; i < n; i++) {
            const int pos = start + i; /* logits at pos predict token pos + 1 */
            if (pos + 1 >= ctx) break;
            const double nll = lp_token_nll(logits + (size_t)i * V, V, chunk[pos + 1]);
            sum_all += nll;
            if (pos + 1 >= ctx / 2) sum_second += nll;
        }
    }
    *all = sum_all / (ctx - 1);
    *second = sum_second / (ctx - ctx / 2);
    return 0;
}

int lp_perplexity(lp_engine *e, const int32_t *tokens, size_t n_tokens, int ctx, int max_chunks,
                  lp_ppl_progress_fn progress, void *ud, lp_ppl_result *out) {
    memset(out, 0, sizeof *out);
    if (ctx < 4 || ctx > lp_engine_n_ctx(e))
        return lp_fail("perplexity: chunk size %d outside 4..%d (the engine's context)", ctx, lp_engine_n_ctx(e));
    int n_chunks = (int)(n_tokens / (size_t)ctx);
    if (max_chunks > 0 && max_chunks < n_chunks) n_chunks = max_chunks;
    if (n_chunks == 0) return lp_fail("perplexity: %zu tokens make no chunk of %d", n_tokens, ctx);
    const int V = lp_engine_n_vocab(e), piece = piece_rows(ctx, V);
    float *logits = lp_xmalloc((size_t)piece * V * sizeof(float));
    out->n_chunks = n_chunks;
    out->ctx = ctx;
    out->chunk_nll = lp_xcalloc((size_t)n_chunks, sizeof(double));
    out->chunk_nll_second = lp_xcalloc((size_t)n_chunks, sizeof(double));
    int rc = 0;
    for (int c = 0; c < n_chunks && rc == 0; c++) {
        rc = score_chunk(e, tokens + (size_t)c * ctx, ctx, logits, piece, &out->chunk_nll[c], &out->chunk_nll_second[c]);
        if (rc == 0) {
            out->nll_all += out->chunk_nll[c];
            out->nll_second += out->chunk_nll_second[c];
            if (progress) progress(ud, c, n_chunks, out->nll_all / (c + 1));
        }
    }
    free(logits);
    if (rc != 0) {
        lp_ppl_result_free(out);
        return -1;
    }
    /* every chunk scores the same number of tokens, so the mean of means is the mean */
    out->nll_all /= n_chunks;
    out->nll_second /= n_chunks;
    out->ppl_all = exp(out->nll_all);
    out->ppl_second = exp(out->nll_second);
    return 0;
}

void lp_ppl_result_free(lp_ppl_result *r) {
    free(r->chunk_nll);
    free(r->chunk_nll_second);
    memset(r, 0, sizeof *r);
}

/* ---- KL divergence ---- */

struct lp_kld {
    double *values;
    size_t n, cap;
    size_t agree;
    double *logp_base, *logp_test; /* scratch [n_vocab] */
    int scratch_vocab;
};

lp_kld *lp_kld_new(void) { return lp_xcalloc(1, sizeof(lp_kld)); }

void lp_kld_free(lp_kld *k) {
    if (!k) return;
    free(k->values);
    free(k->logp_base);
    free(k->logp_test);
    free(k);
}

/* log softmax in double; returns the argmax. */
static int log_softmax(const float *logits, int n, double *out) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += exp((double)logits[i] - logits[best]);
    const double lse = log(sum) + logits[best];
    for (int i = 0; i < n; i++) out[i] = (double)logits[i] - lse;
    return best;
}

void lp_kld_add(lp_kld *k, const float *base_logits, const float *test_logits, int n_vocab) {
    if (k->scratch_vocab < n_vocab) {
        k->logp_base = lp_xrealloc(k->logp_base, (size_t)n_vocab * sizeof(double));
        k->logp_test = lp_xrealloc(k->logp_test, (size_t)n_vocab * sizeof(double));
        k->scratch_vocab = n_vocab;
    }
    const int top_base = log_softmax(base_logits, n_vocab, k->logp_base);
    const int top_test = log_softmax(test_logits, n_vocab, k->logp_test);
    double kld = 0.0;
    for (int i = 0; i < n_vocab; i++) kld += exp(k->logp_base[i]) * (k->logp_base[i] - k->logp_test[i]);
    if (k->n == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 1024;
        k->values = lp_xrealloc(k->values, k->cap * sizeof(double));
    }
    k->values[k->n++] = kld > 0.0 ? kld : 0.0; /* rounding can dip below zero */
    k->agree += top_base == top_test;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void lp_kld_get(const lp_kld *k, lp_kld_stats *out) {
    memset(out, 0, sizeof *out);
    out->n = k->n;
    if (k->n == 0) return;
    double *sorted = lp_xmalloc(k->n * sizeof(double)), sum = 0.0;
    memcpy(sorted, k->values, k->n * sizeof(double));
    qsort(sorted, k->n, sizeof(double), cmp_double);
    for (size_t i = 0; i < k->n; i++) sum += sorted[i];
    out->mean_kld = sum / (double)k->n;
    out->p99_kld = sorted[(size_t)(0.99 * (double)(k->n - 1) + 0.5)];
    out->max_kld = sorted[k->n - 1];
    out->top1_agree = (double)k->agree / (double)k->n;
    free(sorted);
}
