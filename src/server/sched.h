/* sched.h — continuous batching: one scheduler thread owns the engine and runs every
 * active sequence together, one batched engine step per iteration.
 *
 * HTTP threads build a job (prompt tokens + sampling settings), submit it, and read its
 * output from the job itself: the scheduler appends text and per-token log-probabilities
 * under the job's mutex and signals its condition variable. Each step carries the next
 * token of every generating sequence plus prompt chunks of newly admitted ones, within
 * the engine's batch size; sequences join and leave between steps. A job is reference
 * counted: the submitter holds one reference, the scheduler another while it works. */
#ifndef LP_SCHED_H
#define LP_SCHED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "gen/textgen.h"
#include "metrics.h"

#define SRV_MAX_TOP_LOGPROBS 20

typedef enum { SRV_FIN_NONE, SRV_FIN_STOP, SRV_FIN_LENGTH, SRV_FIN_CANCELLED, SRV_FIN_ERROR } srv_finish;

typedef struct {
    int32_t id;
    float logprob;
} srv_alt;

/* One generated token's log-probability and its most likely alternatives. */
typedef struct {
    int32_t token;
    float logprob;
    int n_top;
    srv_alt top[SRV_MAX_TOP_LOGPROBS];
} srv_toklp;

typedef struct srv_job {
    /* ---- request: set before submit, read-only afterwards ---- */
    int32_t *prompt;
    int n_prompt;
    lp_sampler_params sampling;
    int max_tokens;           /* <= 0: until the context is full */
    char **stops;             /* owned */
    int n_stops;
    bool logprobs;
    int top_logprobs;         /* 0..SRV_MAX_TOP_LOGPROBS */
    bool json_object;         /* constrain the output to one JSON object */
    int32_t *bias_ids;        /* logit_bias: added to these tokens' logits before sampling */
    float *bias_values;
    int n_bias;
    int32_t *forced;          /* test hook: emit exactly these tokens, then end */
    int n_forced;
    int test_delay_ms;        /* test hook: pause the engine this long after each streamed token
                                 (a reply that outlasts a browser's click on a slow machine) */

    /* ---- output: guarded by mu ---- */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_buf text;             /* everything generated so far (stop strings removed) */
    srv_toklp *lps;           /* per generated token when logprobs is set */
    int n_lps, cap_lps;
    int n_generated;
    int n_cached;             /* prompt tokens whose K/V were reused from an earlier request */
    bool done;
    srv_finish finish;
    char *error;              /* SRV_FIN_ERROR: why */
    double t_submit, t_first_token, t_done;

    atomic_bool cancel;       /* the client went away: stop as soon as possible */
    atomic_int refs;
} srv_job;

srv_job *srv_job_new(void);
void srv_job_ref(srv_job *j);
void srv_job_unref(srv_job *j);

typedef struct lp_sched lp_sched;

/* Starts the scheduler thread. tg must outlive it. */
lp_sched *lp_sched_create(lp_textgen *tg, int max_queue, srv_metrics *metrics);
/* Queue a job (the scheduler takes its own reference). -1: the queue is full; -2: the
 * server is shutting down. */
int lp_sched_submit(lp_sched *s, srv_job *j);
/* Ask the scheduler to drop a job (client gone); safe at any time. */
void lp_sched_cancel(lp_sched *s, srv_job *j);
void lp_sched_load(lp_sched *s, int *queued, int *busy, int *slots);
/* Stop admitting; let running jobs finish for up to grace_seconds, cancel the rest, join. */
void lp_sched_shutdown(lp_sched *s, double grace_seconds);
void lp_sched_free(lp_sched *s);

#endif
