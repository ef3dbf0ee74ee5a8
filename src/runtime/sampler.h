/* sampler.h — next-token selection from logits, and stop-string scanning.
 *
 * Pipeline (HF transformers' order): repetition / presence / frequency
 * penalties over the last penalty_last_n accepted tokens -> temperature
 * (<= 0 means greedy: argmax of the penalised logits) -> top-k -> top-p ->
 * min-p -> draw from the renormalised distribution. The RNG is the sampler's
 * own xoshiro256** seeded through splitmix64, so a seed reproduces a run on
 * every platform. */
#ifndef LP_SAMPLER_H
#define LP_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float temperature;       /* <= 0: greedy */
    int top_k;               /* <= 0: off */
    float top_p;             /* >= 1: off */
    float min_p;             /* <= 0: off; keeps p >= min_p * p_max */
    float repeat_penalty;    /* 1: off; positive logits divided, negative multiplied (CTRL / HF) */
    float presence_penalty;  /* 0: off; subtracted once from every token seen (OpenAI) */
    float frequency_penalty; /* 0: off; subtracted once per occurrence (OpenAI) */
    int penalty_last_n;      /* window of accepted tokens the penalties look at; 0: none */
    uint64_t seed;
} lp_sampler_params;

typedef struct lp_sampler lp_sampler;

/* temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, no penalties, last_n 64, seed 0. */
lp_sampler_params lp_sampler_default_params(void);
lp_sampler *lp_sampler_create(const lp_sampler_params *p, int n_vocab);
void lp_sampler_free(lp_sampler *s);
/* Record a token (prompt or generated) for the penalties. */
void lp_sampler_accept(lp_sampler *s, int32_t token);
/* Forget the history and restart the RNG from the seed. */
void lp_sampler_reset(lp_sampler *s);
/* Choose the next token from logits[n_vocab] (not modified; the token is not accepted). */
int32_t lp_sampler_sample(lp_sampler *s, const float *logits);

/* Index of the largest logit (lowest index on ties). */
int32_t lp_argmax(const float *logits, int n);

/* Stop strings while streaming. Scans text[0, len) for the earliest occurrence of any
 * stop string: returns its index (and *safe_len = where it starts: emit only that much),
 * or -1 with *safe_len = len minus the longest tail that is a proper prefix of some stop
 * string (hold those bytes back until more text arrives). */
int lp_stop_scan(const char *text, size_t len, const char *const *stops, int n_stops, size_t *safe_len);

#endif
