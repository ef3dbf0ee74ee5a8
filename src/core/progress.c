/* progress.c — TTY-only progress line. */
#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double lp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void lp_progress_start(lp_progress *p, int n_items, uint64_t bytes_total, bool quiet) {
    p->enabled = !quiet && isatty(STDERR_FILENO);
    p->t_start = lp_now();
    p->bytes_total = bytes_total;
    p->n_items = n_items;
}

void lp_progress_update(lp_progress *p, int item, const char *label, uint64_t bytes_done) {
    if (!p->enabled) return;
    double dt = lp_now() - p->t_start;
    double rate = dt > 0 ? (double)bytes_done / dt : 0;
    double eta = rate > 0 && p->bytes_total > bytes_done ? (double)(p->bytes_total - bytes_done) / rate : 0;
    fprintf(stderr, "\r\033[K[%d/%d] %-40.40s %7.1f MB/s  ETA %d:%02d", item, p->n_items, label, rate / 1e6,
            (int)eta / 60, (int)eta % 60);
    fflush(stderr);
}

void lp_progress_finish(lp_progress *p) {
    if (!p->enabled) return;
    fprintf(stderr, "\r\033[K");
    fflush(stderr);
}
