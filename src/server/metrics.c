/* metrics.c — request counts by endpoint and status, token counters, a decode
 * throughput gauge over a sliding window, and their Prometheus text form. */
#include "metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/progress.h"

#define WINDOW_SECONDS 10

typedef struct {
    char endpoint[48];
    int status;
    int64_t count;
} request_count;

struct srv_metrics {
    pthread_mutex_t mu;
    request_count *reqs;
    int n_reqs, cap_reqs;
    int64_t prompt_tokens, generated_tokens;
    double ttft_sum;
    int64_t ttft_count;
    /* generated tokens per whole second, for the last WINDOW_SECONDS seconds */
    int64_t bucket[WINDOW_SECONDS];
    int64_t bucket_second[WINDOW_SECONDS];
    double t_start;
};

srv_metrics *srv_metrics_create(void) {
    srv_metrics *m = lp_xcalloc(1, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    m->t_start = lp_now();
    return m;
}

void srv_metrics_free(srv_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m->reqs);
    free(m);
}

void srv_metrics_request(srv_metrics *m, const char *endpoint, int status) {
    pthread_mutex_lock(&m->mu);
    request_count *r = NULL;
    for (int i = 0; i < m->n_reqs && !r; i++)
        if (m->reqs[i].status == status && strcmp(m->reqs[i].endpoint, endpoint) == 0) r = &m->reqs[i];
    if (!r) {
        if (m->n_reqs == m->cap_reqs) {
            m->cap_reqs = m->cap_reqs ? 2 * m->cap_reqs : 16;
            m->reqs = lp_xrealloc(m->reqs, sizeof *m->reqs * (size_t)m->cap_reqs);
        }
        r = &m->reqs[m->n_reqs++];
        memset(r, 0, sizeof *r);
        strncpy(r->endpoint, endpoint, sizeof r->endpoint - 1);
        r->status = status;
    }
    r->count++;
    pthread_mutex_unlock(&m->mu);
}

static int64_t now_second(const srv_metrics *m) { return (int64_t)(lp_now() - m->t_start); }

void srv_metrics_tokens(srv_metrics *m, int64_t prompt, int64_t generated) {
    pthread_mutex_lock(&m->mu);
    m->prompt_tokens += prompt;
    m->generated_tokens += generated;
    int64_t sec = now_second(m);
    int b = (int)(sec % WINDOW_SECONDS);
    if (m->bucket_second[b] != sec) {
        m->bucket_second[b] = sec;
        m->bucket[b] = 0;
    }
    m->bucket[b] += generated;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_ttft(srv_metrics *m, double seconds) {
    pthread_mutex_lock(&m->mu);
    m->ttft_sum += seconds;
    m->ttft_count++;
    pthread_mutex_unlock(&m->mu);
}

/* Tokens per second over the completed seconds of the window (the current second is
 * still filling up). */
static double throughput(const srv_metrics *m) {
    int64_t sec = now_second(m), total = 0;
    int64_t span = sec < WINDOW_SECONDS - 1 ? sec : WINDOW_SECONDS - 1;
    if (span <= 0) return 0;
    for (int b = 0; b < WINDOW_SECONDS; b++)
        if (m->bucket_second[b] < sec && m->bucket_second[b] >= sec - span) total += m->bucket[b];
    return (double)total / (double)span;
}

void srv_metrics_render(srv_metrics *m, srv_buf *out, int queue_depth, int slots_busy, int slots_total) {
    pthread_mutex_lock(&m->mu);
    srv_buf_puts(out, "# HELP lp_requests_total HTTP requests answered, by endpoint and status.\n"
                      "# TYPE lp_requests_total counter\n");
    for (int i = 0; i < m->n_reqs; i++)
        srv_buf_printf(out, "lp_requests_total{endpoint=\"%s\",status=\"%d\"} %lld\n", m->reqs[i].endpoint,
                       m->reqs[i].status, (long long)m->reqs[i].count);
    srv_buf_printf(out,
                   "# HELP lp_prompt_tokens_total Prompt tokens of admitted requests.\n"
                   "# TYPE lp_prompt_tokens_total counter\n"
                   "lp_prompt_tokens_total %lld\n"
                   "# HELP lp_generated_tokens_total Tokens generated.\n"
                   "# TYPE lp_generated_tokens_total counter\n"
                   "lp_generated_tokens_total %lld\n"
                   "# HELP lp_tokens_per_second Generated tokens per second over the last %d s.\n"
                   "# TYPE lp_tokens_per_second gauge\n"
                   "lp_tokens_per_second %.2f\n"
                   "# HELP lp_time_to_first_token_seconds Time from admission to the first token.\n"
                   "# TYPE lp_time_to_first_token_seconds summary\n"
                   "lp_time_to_first_token_seconds_sum %.6f\n"
                   "lp_time_to_first_token_seconds_count %lld\n",
                   (long long)m->prompt_tokens, (long long)m->generated_tokens, WINDOW_SECONDS, throughput(m),
                   m->ttft_sum, (long long)m->ttft_count);
    pthread_mutex_unlock(&m->mu);
    srv_buf_printf(out,
                   "# HELP lp_queue_depth Requests waiting for a slot.\n"
                   "# TYPE lp_queue_depth gauge\n"
                   "lp_queue_depth %d\n"
                   "# HELP lp_slots_busy Slots generating or evaluating a prompt.\n"
                   "# TYPE lp_slots_busy gauge\n"
                   "lp_slots_busy %d\n"
                   "# HELP lp_slots_total Slots (--parallel).\n"
                   "# TYPE lp_slots_total gauge\n"
                   "lp_slots_total %d\n",
                   queue_depth, slots_busy, slots_total);
}
