/* lpc_profile.cuh — per-op GPU timing for LP_CUDA_PROFILE=1 (host side).
 *
 * With profiling on, a step's ops run eagerly (no graph) with a CUDA event after
 * each op; once the step ends, the time between consecutive events goes to the
 * op's label ("matmul n=1 q4_K 12288x4096", "attention n=1", ...), together with
 * the bytes of weights it streamed, and the table is printed (largest total
 * first, with GB/s) when the backend is destroyed. The host launches far ahead of
 * a decode step's kernels, so the gaps between events are the kernels' own time
 * plus the GPU's ~1 us between dependent kernels, as in a graph. */
#ifndef LPC_PROFILE_CUH
#define LPC_PROFILE_CUH

#include <cuda_runtime.h>

extern "C" {
#include "../../core/err.h"
}

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LPC_PROF_ROWS = 256, LPC_PROF_LABEL = 96 };

typedef struct {
    char label[LPC_PROF_LABEL];
    double ms, bytes;
    long calls;
} lpc_prof_row;

typedef struct {
    bool on;
    cudaEvent_t *ev;       /* one per op of the step + the start */
    int cap_ev;
    lpc_prof_row rows[LPC_PROF_ROWS];
    int n_rows;
    double step_ms;
    long steps;
} lpc_profile;

static inline cudaEvent_t lpc_prof_event(lpc_profile *p, int i) {
    if (i >= p->cap_ev) {
        const int cap = 2 * i + 64;
        p->ev = (cudaEvent_t *)lp_xrealloc(p->ev, (size_t)cap * sizeof *p->ev);
        for (int k = p->cap_ev; k < cap; k++) cudaEventCreate(&p->ev[k]);
        p->cap_ev = cap;
    }
    return p->ev[i];
}

static inline void lpc_prof_add(lpc_profile *p, const char *label, double ms, double bytes) {
    int i = 0;
    while (i < p->n_rows && strcmp(p->rows[i].label, label) != 0) i++;
    if (i == p->n_rows) {
        if (p->n_rows == LPC_PROF_ROWS) i = LPC_PROF_ROWS - 1; /* overflow lands in the last row */
        else snprintf(p->rows[p->n_rows++].label, LPC_PROF_LABEL, "%s", label);
    }
    p->rows[i].ms += ms;
    p->rows[i].bytes += bytes;
    p->rows[i].calls++;
}

static inline int lpc_prof_cmp(const void *a, const void *b) {
    const double x = ((const lpc_prof_row *)a)->ms, y = ((const lpc_prof_row *)b)->ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

static inline void lpc_prof_print(lpc_profile *p) {
    if (!p->on || p->n_rows == 0) return;
    qsort(p->rows, (size_t)p->n_rows, sizeof p->rows[0], lpc_prof_cmp);
    double total = 0.0;
    for (int i = 0; i < p->n_rows; i++) total += p->rows[i].ms;
    fprintf(stderr, "cuda profile: %ld eager steps, %.3f ms of GPU time\n", p->steps, total);
    fprintf(stderr, "%-52s %8s %10s %9s %6s %8s\n", "op", "calls", "total ms", "us/call", "share", "GB/s");
    for (int i = 0; i < p->n_rows; i++) {
        const lpc_prof_row *r = &p->rows[i];
        const double us = 1e3 * r->ms / (double)r->calls;
        fprintf(stderr, "%-52s %8ld %10.3f %9.2f %5.1f%% %8.0f\n", r->label, r->calls, r->ms, us, 100.0 * r->ms / total,
                r->bytes > 0 ? r->bytes / (r->ms * 1e-3) / 1e9 : 0.0);
    }
}

static inline void lpc_prof_free(lpc_profile *p) {
    for (int k = 0; k < p->cap_ev; k++) cudaEventDestroy(p->ev[k]);
    free(p->ev);
    memset(p, 0, sizeof *p);
}

#endif
