/* sched.c — the scheduler thread: admits queued jobs into KV-cache slots (reusing the
 * longest cached prompt prefix), builds one batch per step from every active sequence,
 * samples, streams text into the jobs, and retires finished or cancelled ones. */
#include "sched.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/progress.h"
#include "jsongram.h"

/* A sequence is prefilled in chunks that share a step with the running sequences' next
 * tokens, so a long prompt delays the others by at most one step's worth of work. */

typedef struct {
    srv_job *job;     /* NULL: free */
    int32_t *cached;  /* [n_ctx] tokens whose K/V are in the slot (survive the job for reuse) */
    int n_cached;
    bool generating;  /* prompt evaluated; next_tok waits to be fed */
    int32_t next_tok;
    int chunk;        /* prompt tokens in the current step */
    int n_forced_used;
    lp_sampler *smp;
    lp_detok dt;
    lp_jg jg;
} slot_t;

struct lp_sched {
    lp_textgen *tg;
    lp_engine *e;
    srv_metrics *metrics;
    int n_slots, n_ctx, n_vocab, n_batch, max_queue;
    slot_t *slots;
    srv_job **queue; /* FIFO, q_len entries */
    int q_len;
    atomic_int n_busy;
    bool stopping, cancel_all, quit;
    int rr;          /* where the next step starts looking for prompts to prefill */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* batch scratch */
    int32_t *b_tok, *b_pos, *b_slot;
    int8_t *b_want;
    int *row_slot;
    float *logits;   /* [n_slots][n_vocab] */
    float *masked;   /* [n_vocab] constrained-sampling copy */
    float *biased;   /* [n_vocab] logits plus a request's logit_bias */
};

/* ---- jobs ---- */

srv_job *srv_job_new(void) {
    srv_job *j = lp_xcalloc(1, sizeof *j);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    atomic_init(&j->refs, 1);
    atomic_init(&j->cancel, false);
    return j;
}

void srv_job_ref(srv_job *j) { atomic_fetch_add(&j->refs, 1); }

void srv_job_unref(srv_job *j) {
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    free(j->prompt);
    for (int i = 0; i < j->n_stops; i++) free(j->stops[i]);
    free(j->stops);
    free(j->forced);
    free(j->bias_ids);
    free(j->bias_values);
    srv_buf_free(&j->text);
    free(j->lps);
    free(j->error);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

/* Mark a job finished and wake its reader. */
static void job_done(srv_job *j, srv_finish fin, const char *error) {
    pthread_mutex_lock(&j->mu);
    j->done = true;
    j->finish = fin;
    if (error && !j->error) j->error = lp_xstrdup(error);
    j->t_done = lp_now();
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

/* ---- slots ---- */

static void release(lp_sched *s, slot_t *sl, srv_finish fin, const char *error) {
    srv_job *j = sl->job;
    if (fin == SRV_FIN_STOP || fin == SRV_FIN_LENGTH) {
        const char *text;
        size_t len;
        lp_detok_flush(&sl->dt, &text, &len);
        if (len) {
            pthread_mutex_lock(&j->mu);
            srv_buf_append(&j->text, text, len);
            pthread_mutex_unlock(&j->mu);
        }
    }
    lp_sampler_free(sl->smp);
    sl->smp = NULL;
    lp_detok_free(&sl->dt);
    sl->job = NULL;
    sl->generating = false;
    atomic_fetch_sub(&s->n_busy, 1); /* before the reader wakes: it may check the load */
    job_done(j, fin, error);
    srv_job_unref(j);
}

static int common_prefix(const slot_t *sl, const srv_job *j) {
    int n = 0, limit = j->n_prompt - 1; /* the last prompt token is always evaluated: its logits start generation */
    while (n < sl->n_cached && n < limit && sl->cached[n] == j->prompt[n]) n++;
    return n;
}

/* Under s->mu: move queued jobs into free slots, each to the slot holding the longest
 * prefix of its prompt. */
static void admit(lp_sched *s) {
    while (s->q_len > 0) {
        srv_job *j = s->queue[0];
        int best = -1, best_len = -1;
        for (int i = 0; i < s->n_slots; i++) {
            if (s->slots[i].job) continue;
            int len = common_prefix(&s->slots[i], j);
            if (len > best_len) best = i, best_len = len;
        }
        if (best < 0) return;
        memmove(s->queue, s->queue + 1, sizeof(srv_job *) * (size_t)--s->q_len);
        slot_t *sl = &s->slots[best];
        sl->job = j;
        sl->n_cached = best_len;
        memcpy(sl->cached + best_len, j->prompt + best_len, sizeof(int32_t) * (size_t)(j->n_prompt - best_len));
        sl->generating = false;
        sl->n_forced_used = 0;
        sl->smp = lp_sampler_create(&j->sampling, s->n_vocab);
        for (int i = 0; i < j->n_prompt; i++) lp_sampler_accept(sl->smp, j->prompt[i]);
        lp_detok_init(&sl->dt, s->tg->tok, (const char *const *)j->stops, j->n_stops);
        lp_jg_init(&sl->jg, true);
        pthread_mutex_lock(&j->mu);
        j->n_cached = best_len;
        pthread_mutex_unlock(&j->mu);
        atomic_fetch_add(&s->n_busy, 1);
        srv_metrics_tokens(s->metrics, j->n_prompt, 0);
    }
}

/* Under s->mu: retire cancelled jobs, queued or running. */
static void reap(lp_sched *s) {
    for (int i = 0; i < s->q_len;) {
        srv_job *j = s->queue[i];
        if (atomic_load(&j->cancel) || s->cancel_all) {
            memmove(s->queue + i, s->queue + i + 1, sizeof(srv_job *) * (size_t)(s->q_len - i - 1));
            s->q_len--;
            job_done(j, SRV_FIN_CANCELLED, NULL);
            srv_job_unref(j);
        } else {
            i++;
        }
    }
    for (int i = 0; i < s->n_slots; i++) {
        slot_t *sl = &s->slots[i];
        if (!sl->job) continue;
        if (atomic_load(&sl->job->cancel))
            release(s, sl, SRV_FIN_CANCELLED, NULL);
        else if (s->cancel_all)
            release(s, sl, SRV_FIN_CANCELLED, "the server shut down before the generation finished");
    }
}

/* ---- sampling ---- */

static bool token_fits_json(const lp_sched *s, const slot_t *sl, int32_t tok) {
    if (lp_textgen_is_eog(s->tg, tok)) return lp_jg_complete(&sl->jg);
    if (lp_tokenizer_is_special(s->tg->tok, tok)) return false;
    size_t len = 0;
    const char *bytes = lp_tokenizer_token_bytes(s->tg->tok, tok, &len);
    if (!bytes || len == 0) return false;
    lp_jg trial = sl->jg;
    return lp_jg_feed(&trial, bytes, len);
}

/* Rejection sampling first (the model's favourite is usually valid), then a full mask
 * of the vocabulary when it keeps proposing invalid tokens. -1: nothing valid. */
static int32_t sample_json(lp_sched *s, slot_t *sl, const float *row) {
    memcpy(s->masked, row, sizeof(float) * (size_t)s->n_vocab);
    for (int attempt = 0; attempt < 16; attempt++) {
        int32_t tok = lp_sampler_sample(sl->smp, s->masked);
        if (tok < 0 || tok >= s->n_vocab) return -1;
        if (token_fits_json(s, sl, tok)) return tok;
        s->masked[tok] = -INFINITY;
    }
    bool any = false;
    for (int32_t v = 0; v < s->n_vocab; v++) {
        if (s->masked[v] == -INFINITY) continue;
        if (token_fits_json(s, sl, v)) any = true;
        else s->masked[v] = -INFINITY;
    }
    if (!any) return -1;
    int32_t tok = lp_sampler_sample(sl->smp, s->masked);
    return tok >= 0 && tok < s->n_vocab && token_fits_json(s, sl, tok) ? tok : -1;
}

static int32_t choose_token(lp_sched *s, slot_t *sl, const float *row) {
    const srv_job *j = sl->job;
    if (j->forced) return sl->n_forced_used < j->n_forced ? j->forced[sl->n_forced_used++] : -1;
    if (j->n_bias) {
        memcpy(s->biased, row, sizeof(float) * (size_t)s->n_vocab);
        for (int k = 0; k < j->n_bias; k++)
            s->biased[j->bias_ids[k]] = j->bias_values[k] <= -100 ? -INFINITY : s->biased[j->bias_ids[k]] + j->bias_values[k];
        row = s->biased;
    }
    if (j->json_object) return sample_json(s, sl, row);
    return lp_sampler_sample(sl->smp, row);
}

/* The model's own log-probabilities (before penalties and temperature), like OpenAI's. */
static void token_logprobs(const float *row, int n_vocab, int32_t tok, int n_top, srv_toklp *out) {
    float max = row[0];
    for (int v = 1; v < n_vocab; v++)
        if (row[v] > max) max = row[v];
    double sum = 0;
    for (int v = 0; v < n_vocab; v++) sum += exp((double)(row[v] - max));
    const float lse = max + (float)log(sum);
    out->token = tok;
    out->logprob = row[tok] - lse;
    out->n_top = 0;
    for (int v = 0; v < n_vocab && n_top > 0; v++) {
        if (out->n_top == n_top && row[v] <= out->top[n_top - 1].logprob + lse) continue;
        int k = out->n_top < n_top ? out->n_top++ : n_top - 1;
        while (k > 0 && out->top[k - 1].logprob < row[v] - lse) {
            out->top[k] = out->top[k - 1];
            k--;
        }
        out->top[k] = (srv_alt){v, row[v] - lse};
    }
}

/* Consume the logits of one sequence: pick its next token, stream it, decide whether
 * the sequence goes on. */
static void advance(lp_sched *s, slot_t *sl, const float *row) {
    srv_job *j = sl->job;
    int32_t tok = choose_token(s, sl, row);
    if (tok < 0 || lp_textgen_is_eog(s->tg, tok)) {
        release(s, sl, SRV_FIN_STOP, NULL);
        return;
    }
    srv_toklp lp;
    if (j->logprobs) token_logprobs(row, s->n_vocab, tok, j->top_logprobs, &lp);
    lp_sampler_accept(sl->smp, tok);
    if (j->json_object) {
        size_t len = 0;
        const char *bytes = lp_tokenizer_token_bytes(s->tg->tok, tok, &len);
        lp_jg_feed(&sl->jg, bytes, len);
    }
    const char *text;
    size_t len;
    bool stopped = lp_detok_push(&sl->dt, tok, &text, &len);

    pthread_mutex_lock(&j->mu);
    if (j->n_generated++ == 0) j->t_first_token = lp_now();
    srv_buf_append(&j->text, text ? text : "", len);
    if (j->logprobs) {
        if (j->n_lps == j->cap_lps) {
            j->cap_lps = j->cap_lps ? 2 * j->cap_lps : 64;
            j->lps = lp_xrealloc(j->lps, sizeof(srv_toklp) * (size_t)j->cap_lps);
        }
        j->lps[j->n_lps++] = lp;
    }
    int n_generated = j->n_generated;
    double ttft = j->t_first_token - j->t_submit;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (n_generated == 1) srv_metrics_ttft(s->metrics, ttft);
    if (j->test_delay_ms > 0) {
        struct timespec ts = {j->test_delay_ms / 1000, (long)(j->test_delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }

    if (stopped || (j->json_object && lp_jg_complete(&sl->jg)))
        release(s, sl, SRV_FIN_STOP, NULL);
    else if ((j->max_tokens > 0 && n_generated >= j->max_tokens) || sl->n_cached >= s->n_ctx)
        release(s, sl, SRV_FIN_LENGTH, NULL);
    else if (j->forced && sl->n_forced_used >= j->n_forced)
        release(s, sl, SRV_FIN_STOP, NULL);
    else {
        sl->generating = true;
        sl->next_tok = tok;
    }
}

/* ---- one engine step ---- */

static void add_token(lp_sched *s, int *n, int32_t tok, int pos, int slot, bool want) {
    s->b_tok[*n] = tok;
    s->b_pos[*n] = pos;
    s->b_slot[*n] = slot;
    s->b_want[*n] = want ? 1 : 0;
    (*n)++;
}

static void step(lp_sched *s) {
    int n = 0, n_rows = 0;
    for (int i = 0; i < s->n_slots; i++) {
        slot_t *sl = &s->slots[i];
        sl->chunk = 0;
        if (!sl->job || !sl->generating) continue;
        add_token(s, &n, sl->next_tok, sl->n_cached, i, true);
        s->row_slot[n_rows++] = i;
    }
    int budget = s->n_batch - n;
    for (int k = 0; k < s->n_slots && budget > 0; k++) {
        int i = (s->rr + k) % s->n_slots;
        slot_t *sl = &s->slots[i];
        if (!sl->job || sl->generating) continue;
        int left = sl->job->n_prompt - sl->n_cached;
        sl->chunk = left < budget ? left : budget;
        for (int t = 0; t < sl->chunk; t++) {
            bool last = sl->n_cached + t == sl->job->n_prompt - 1;
            add_token(s, &n, sl->job->prompt[sl->n_cached + t], sl->n_cached + t, i, last);
            if (last) s->row_slot[n_rows++] = i;
        }
        budget -= sl->chunk;
    }
    s->rr = (s->rr + 1) % s->n_slots;
    if (n == 0) return;

    lp_batch b = {.n_tokens = n, .tokens = s->b_tok, .pos = s->b_pos, .slot = s->b_slot, .logits = s->b_want};
    if (lp_engine_decode(s->e, &b, s->logits) != 0) {
        const char *why = lp_errmsg();
        for (int i = 0; i < s->n_slots; i++) {
            slot_t *sl = &s->slots[i];
            if (!sl->job || (!sl->generating && sl->chunk == 0)) continue;
            sl->n_cached = 0; /* what the slot holds is unknown now */
            release(s, sl, SRV_FIN_ERROR, why);
        }
        return;
    }
    int generated = 0;
    for (int i = 0; i < s->n_slots; i++) {
        slot_t *sl = &s->slots[i];
        if (!sl->job) continue;
        if (sl->generating) sl->cached[sl->n_cached++] = sl->next_tok;
        else sl->n_cached += sl->chunk;
    }
    for (int r = 0; r < n_rows; r++) {
        slot_t *sl = &s->slots[s->row_slot[r]];
        if (!sl->job) continue;
        int before = sl->job->n_generated;
        srv_job *j = sl->job;
        srv_job_ref(j);
        advance(s, sl, s->logits + (size_t)r * (size_t)s->n_vocab);
        generated += j->n_generated - before;
        srv_job_unref(j);
    }
    if (generated) srv_metrics_tokens(s->metrics, 0, generated);
}

static void *sched_main(void *arg) {
    lp_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        reap(s);
        if (!s->stopping) admit(s);
        if (atomic_load(&s->n_busy) == 0) {
            if (s->quit) break;
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        step(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- public ---- */

lp_sched *lp_sched_create(lp_textgen *tg, int max_queue, srv_metrics *metrics) {
    lp_sched *s = lp_xcalloc(1, sizeof *s);
    s->tg = tg;
    s->e = tg->engine;
    s->metrics = metrics;
    s->n_slots = lp_engine_n_slots(s->e);
    s->n_ctx = lp_engine_n_ctx(s->e);
    s->n_vocab = lp_engine_n_vocab(s->e);
    s->n_batch = 512;
    s->max_queue = max_queue < 0 ? 0 : max_queue;
    atomic_init(&s->n_busy, 0);
    s->slots = lp_xcalloc((size_t)s->n_slots, sizeof(slot_t));
    for (int i = 0; i < s->n_slots; i++) s->slots[i].cached = lp_xmalloc(sizeof(int32_t) * (size_t)s->n_ctx);
    s->queue = lp_xcalloc((size_t)s->max_queue + (size_t)s->n_slots + 1, sizeof(srv_job *));
    size_t nb = (size_t)s->n_batch + (size_t)s->n_slots;
    s->b_tok = lp_xmalloc(sizeof(int32_t) * nb);
    s->b_pos = lp_xmalloc(sizeof(int32_t) * nb);
    s->b_slot = lp_xmalloc(sizeof(int32_t) * nb);
    s->b_want = lp_xmalloc(nb);
    s->row_slot = lp_xmalloc(sizeof(int) * (size_t)s->n_slots * 2);
    s->logits = lp_engine_logits_alloc(s->e, (size_t)s->n_slots);
    s->masked = lp_xmalloc(sizeof(float) * (size_t)s->n_vocab);
    s->biased = lp_xmalloc(sizeof(float) * (size_t)s->n_vocab);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        lp_fail("server: cannot start the scheduler thread");
        lp_sched_free(s);
        return NULL;
    }
    s->thread_started = true;
    return s;
}

int lp_sched_submit(lp_sched *s, srv_job *j) {
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->stopping)
        rc = -2;
    else if (atomic_load(&s->n_busy) + s->q_len >= s->n_slots + s->max_queue)
        rc = -1;
    else {
        srv_job_ref(j);
        j->t_submit = lp_now();
        s->queue[s->q_len++] = j;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void lp_sched_cancel(lp_sched *s, srv_job *j) {
    atomic_store(&j->cancel, true);
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void lp_sched_load(lp_sched *s, int *queued, int *busy, int *slots) {
    pthread_mutex_lock(&s->mu);
    *queued = s->q_len;
    pthread_mutex_unlock(&s->mu);
    *busy = atomic_load(&s->n_busy);
    *slots = s->n_slots;
}

void lp_sched_shutdown(lp_sched *s, double grace_seconds) {
    if (!s->thread_started) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    while (s->q_len > 0) { /* queued work never started: refuse it now */
        srv_job *j = s->queue[--s->q_len];
        job_done(j, SRV_FIN_CANCELLED, "the server is shutting down");
        srv_job_unref(j);
    }
    pthread_mutex_unlock(&s->mu);
    double t0 = lp_now();
    while (atomic_load(&s->n_busy) > 0 && lp_now() - t0 < grace_seconds) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&s->mu);
    s->cancel_all = true;
    s->quit = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->thread_started = false;
}

void lp_sched_free(lp_sched *s) {
    if (!s) return;
    lp_sched_shutdown(s, 0);
    for (int i = 0; i < s->n_slots; i++) free(s->slots[i].cached);
    free(s->slots);
    free(s->queue);
    free(s->b_tok);
    free(s->b_pos);
    free(s->b_slot);
    free(s->b_want);
    free(s->row_slot);
    lp_engine_logits_free(s->e, s->logits);
    free(s->masked);
    free(s->biased);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
