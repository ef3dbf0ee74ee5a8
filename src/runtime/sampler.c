/* sampler.c — penalties, temperature, top-k / top-p / min-p truncation, a
 * seeded xoshiro256** draw, and the streaming stop-string scanner. */
#include "sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"

typedef struct {
    int32_t id;
    float logit;
    float p;
} candidate;

struct lp_sampler {
    lp_sampler_params p;
    int n_vocab;
    uint64_t rng[4];
    int32_t *history; /* ring of the last penalty_last_n accepted tokens */
    int n_history, head;
    int *counts;      /* [n_vocab] scratch: occurrences in the window */
    float *work;      /* [n_vocab] penalised logits */
    candidate *cand;  /* [n_vocab] */
};

/* ---- RNG: xoshiro256** (Blackman & Vigna), seeded with splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4]) {
    const uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static double uniform01(uint64_t s[4]) { return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53; }

/* ---- lifecycle ---- */

lp_sampler_params lp_sampler_default_params(void) {
    return (lp_sampler_params){.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                               .repeat_penalty = 1.0f, .penalty_last_n = 64, .seed = 0};
}

void lp_sampler_reset(lp_sampler *s) {
    uint64_t x = s->p.seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    s->n_history = s->head = 0;
}

lp_sampler *lp_sampler_create(const lp_sampler_params *p, int n_vocab) {
    if (n_vocab <= 0) {
        lp_fail("sampler: vocabulary size %d", n_vocab);
        return NULL;
    }
    lp_sampler *s = lp_xcalloc(1, sizeof *s);
    s->p = p ? *p : lp_sampler_default_params();
    if (s->p.penalty_last_n < 0) s->p.penalty_last_n = 0;
    s->n_vocab = n_vocab;
    s->history = lp_xmalloc((size_t)(s->p.penalty_last_n > 0 ? s->p.penalty_last_n : 1) * sizeof(int32_t));
    s->counts = lp_xcalloc((size_t)n_vocab, sizeof(int));
    s->work = lp_xmalloc((size_t)n_vocab * sizeof(float));
    s->cand = lp_xmalloc((size_t)n_vocab * sizeof(candidate));
    lp_sampler_reset(s);
    return s;
}

void lp_sampler_free(lp_sampler *s) {
    if (!s) return;
    free(s->history);
    free(s->counts);
    free(s->work);
    free(s->cand);
    free(s);
}

void lp_sampler_accept(lp_sampler *s, int32_t token) {
    if (s->p.penalty_last_n <= 0 || token < 0 || token >= s->n_vocab) return;
    s->history[s->head] = token;
    s->head = (s->head + 1) % s->p.penalty_last_n;
    if (s->n_history < s->p.penalty_last_n) s->n_history++;
}

int32_t lp_argmax(const float *logits, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/* ---- the pipeline ---- */

static void apply_penalties(lp_sampler *s) {
    const lp_sampler_params *p = &s->p;
    if (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f) return;
    for (int i = 0; i < s->n_history; i++) s->counts[s->history[i]]++;
    for (int i = 0; i < s->n_history; i++) {
        const int32_t t = s->history[i];
        const int c = s->counts[t];
        if (c == 0) continue; /* already done (repeated in the window) */
        float *l = &s->work[t];
        if (p->repeat_penalty != 1.0f) *l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
        *l -= p->presence_penalty + (float)c * p->frequency_penalty;
        s->counts[t] = 0;
    }
}

static int by_logit_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Move the k best candidates (by_logit_desc order) to the front, sorted: a
 * size-k heap keeps the worst of the best at its root, O(n log k). */
static void heap_sift(candidate *h, int k, int i) {
    for (;;) {
        int worst = i, l = 2 * i + 1, r = l + 1;
        if (l < k && by_logit_desc(&h[l], &h[worst]) > 0) worst = l;
        if (r < k && by_logit_desc(&h[r], &h[worst]) > 0) worst = r;
        if (worst == i) return;
        candidate t = h[i];
        h[i] = h[worst];
        h[worst] = t;
        i = worst;
    }
}

static void keep_top(candidate *c, int n, int k) {
    if (k < n) {
        for (int i = k / 2 - 1; i >= 0; i--) heap_sift(c, k, i);
        for (int i = k; i < n; i++)
            if (by_logit_desc(&c[i], &c[0]) < 0) {
                c[0] = c[i];
                heap_sift(c, k, 0);
            }
    }
    qsort(c, (size_t)k, sizeof *c, by_logit_desc);
}

int32_t lp_sampler_sample(lp_sampler *s, const float *logits) {
    const lp_sampler_params *p = &s->p;
    memcpy(s->work, logits, (size_t)s->n_vocab * sizeof(float));
    apply_penalties(s);
    if (p->temperature <= 0.0f) return lp_argmax(s->work, s->n_vocab);

    candidate *c = s->cand;
    int n = s->n_vocab;
    for (int i = 0; i < n; i++) c[i] = (candidate){i, s->work[i] / p->temperature, 0.0f};
    /* Only top-k and top-p need an order; without them the full vocabulary is not sorted. */
    const bool use_top_k = p->top_k > 0 && p->top_k < n, use_top_p = p->top_p < 1.0f;
    if (use_top_k || use_top_p) {
        n = use_top_k ? p->top_k : n;
        keep_top(c, s->n_vocab, n);
    }
    int best = 0;
    for (int i = 1; i < n; i++)
        if (c[i].logit > c[best].logit) best = i;
    const float max_logit = c[best].logit;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += (c[i].p = expf(c[i].logit - max_logit));
    for (int i = 0; i < n; i++) c[i].p = (float)(c[i].p / sum);
    if (use_top_p) { /* smallest prefix with mass >= top_p (c is sorted here) */
        double cum = 0.0;
        int keep = 0;
        while (keep < n && (keep == 0 || cum < p->top_p)) cum += c[keep++].p;
        n = keep;
    }
    if (p->min_p > 0.0f) { /* keep p >= min_p * p_max, in place and in order */
        const float floor_p = p->min_p * c[best].p;
        int keep = 0;
        for (int i = 0; i < n; i++)
            if (c[i].p >= floor_p) c[keep++] = c[i];
        n = keep;
    }
    sum = 0.0;
    for (int i = 0; i < n; i++) sum += c[i].p;
    double r = uniform01(s->rng) * sum;
    for (int i = 0; i < n; i++) {
        r -= c[i].p;
        if (r < 0.0) return c[i].id;
    }
    return c[n - 1].id; /* rounding left r >= 0 */
}

/* ---- stop strings ---- */

int lp_stop_scan(const char *text, size_t len, const char *const *stops, int n_stops, size_t *safe_len) {
    int found = -1;
    size_t found_at = len;
    for (int i = 0; i < n_stops; i++) {
        const size_t sl = strlen(stops[i]);
        if (sl == 0 || sl > len) continue;
        for (size_t at = 0; at + sl <= len && at < found_at; at++)
            if (memcmp(text + at, stops[i], sl) == 0) {
                found = i, found_at = at;
                break;
            }
    }
    if (found >= 0) {
        *safe_len = found_at;
        return found;
    }
    size_t hold = 0; /* longest tail of text that begins some stop string */
    for (int i = 0; i < n_stops; i++) {
        const size_t sl = strlen(stops[i]);
        for (size_t t = sl > 0 ? sl - 1 : 0; t > hold; t--)
            if (t <= len && memcmp(text + len - t, stops[i], t) == 0) {
                hold = t;
                break;
            }
    }
    *safe_len = len - hold;
    return -1;
}
