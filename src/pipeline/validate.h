/* validate.h — `llama-pajamas-quant validate`: how much each artifact of a
 * conversion lost against the original weights. Perplexity on held-out text (the
 * baseline from the original HF checkpoint), mean / p99 KL divergence and top-1
 * agreement of each artifact's next-token distribution against the baseline's,
 * side-by-side greedy generations, and pass/fail per precision thresholds. */
#ifndef LP_VALIDATE_H
#define LP_VALIDATE_H

#include <stdbool.h>

typedef struct {
    const char *original;  /* HF model dir */
    const char *quantized; /* convert output dir (manifest.json) */
    const char *text_path; /* held-out text */
    bool want_ppl, want_kld, want_generation;
    int ctx;               /* tokens per chunk (default 512) */
    int max_chunks;        /* 0: all chunks of the text */
    int n_threads;
    const char *backend;
    bool quiet;
} lp_validate_opts;

/* Returns 0 when every artifact passed, 1 when some failed its threshold, -1 on error. */
int lp_validate(const lp_validate_opts *o);
/* The perplexity-increase threshold (percent) for a precision name, or a negative
 * number when the precision has none. */
double lp_validate_threshold(const char *precision);

#endif
