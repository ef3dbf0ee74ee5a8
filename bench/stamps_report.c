/* stamps_report.c — what a decode step's critical path is made of, from the per-block
 * phase timestamps of the stamps module (src/backend/cuda/lpc_stamps.cuh).
 *
 *   LP_CUDA_MODULE=build/libllama-pajamas-cuda-stamps.so LP_CUDA_STAMPS=/tmp/st.bin \
 *       build/bench_cuda MODEL --depths 512 --gen 16 --prefill "" --streams ""
 *   build/stamps_report /tmp/st.bin [--launches]
 *
 * Takes the last decode step in the file (steps are told apart by gaps of over 20 us
 * with no block running), cuts it into launches (in order of entry, a launch's blocks
 * all enter before the next launch's: PDL schedules a grid once every block of the
 * previous one started) and, per launch, measures against the previous launch's last
 * block exit ("prev end"): when its first and its median block left the grid wait,
 * the median staging and first-dots phases, when its blocks exited (deciles) and when
 * its last block exited. The table
 * averages those over launches of the same kernel and shape (a layer's q+k+v, attention,
 * o, gate/up, down); --launches prints every launch of the step. For attention the
 * columns stage / dots1 / store1 are its q/k/v rows, its tiles, and the finish (merge,
 * partials, fold) to the exit. Cycles become ns at the
 * clock rate the records themselves show (cycles over globaltimer between entry and exit). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/backend/cuda/lpc_stamps.cuh"

typedef struct {
    uint32_t tag, rows, k;
    int first, count;   /* records [first, first + count) of the step */
    double entry0;      /* first block's entry (ns from the step's start) */
    double wait_first;  /* first block out of the grid wait, from prev end */
    double wait_med;    /* median block out of the wait, from prev end */
    double stage_med;   /* median mark 1 -> 2 (input staged) */
    double dots_med;    /* median mark 2 -> 3 (first dots) */
    double store_med;   /* median mark 3 -> 4 (first store) */
    double exit_p10, exit_p50, exit_p90; /* block exits, from prev end: deciles */
    double exit_last;   /* last block's exit, from prev end */
} launch;

static double cyc_per_ns;

static int by_entry(const void *a, const void *b) {
    const lpc_stamp_rec *x = (const lpc_stamp_rec *)a, *y = (const lpc_stamp_rec *)b;
    return x->g_entry < y->g_entry ? -1 : x->g_entry > y->g_entry;
}

static int by_value(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Absolute time (ns) of record r's mark i (its entry plus the cycles to the mark). */
static double mark_at(const lpc_stamp_rec *r, int i) { return (double)r->g_entry + r->mark[i] / cyc_per_ns; }

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, by_value);
    return n ? v[n / 2] : 0.0;
}

static const char *kind_name(uint32_t tag) {
    return tag == LPC_TAG_GEMV1   ? "gemv"
           : tag == LPC_TAG_GLU   ? "gate/up+glu"
           : tag == LPC_TAG_ATTN1 ? "attention"
           : tag == LPC_TAG_GEMVN ? "gemv+norm"
                                  : "?";
}

/* Fills l's phase figures from its records; prev_end: the previous launch's last exit. */
static void measure(launch *l, const lpc_stamp_rec *r, double prev_end, double t0, double *tmp) {
    double first_wait = 1e300, last_exit = 0;
    for (int i = 0; i < l->count; i++) {
        const lpc_stamp_rec *b = &r[l->first + i];
        const double w = mark_at(b, 1);
        if (w < first_wait) first_wait = w;
        if ((double)b->g_exit > last_exit) last_exit = (double)b->g_exit;
        tmp[i] = (double)b->g_exit;
    }
    qsort(tmp, (size_t)l->count, sizeof *tmp, by_value);
    l->exit_p10 = tmp[l->count / 10] - prev_end;
    l->exit_p50 = tmp[l->count / 2] - prev_end;
    l->exit_p90 = tmp[l->count * 9 / 10] - prev_end;
    for (int i = 0; i < l->count; i++) tmp[i] = mark_at(&r[l->first + i], 1);
    l->entry0 = (double)r[l->first].g_entry - t0;
    l->wait_first = first_wait - prev_end;
    l->wait_med = median(tmp, l->count) - prev_end;
    l->exit_last = last_exit - prev_end;
    for (int ph = 0; ph < 3; ph++) {
        int n = 0;
        for (int i = 0; i < l->count; i++) {
            const lpc_stamp_rec *b = &r[l->first + i];
            /* the last phase runs to mark 4, or to the exit where a kernel has no mark 4 (attention) */
            const uint32_t to = ph == 2 && !b->mark[4] ? b->exit_cycles : b->mark[ph + 2];
            if (to && b->mark[ph + 1]) tmp[n++] = (to - (double)b->mark[ph + 1]) / cyc_per_ns;
        }
        const double m = median(tmp, n);
        if (ph == 0) l->stage_med = m;
        else if (ph == 1) l->dots_med = m;
        else l->store_med = m;
    }
}

static void print_row(const char *label, int n, const launch *l) {
    printf("%-34s %4d %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %8.2f\n", label, n, l->wait_first / 1e3,
           l->wait_med / 1e3, l->stage_med / 1e3, l->dots_med / 1e3, l->store_med / 1e3, l->exit_p10 / 1e3,
           l->exit_p50 / 1e3, l->exit_p90 / 1e3, l->exit_last / 1e3);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: stamps_report FILE [--launches]\n");
        return 2;
    }
    const int every = argc > 2 && strcmp(argv[2], "--launches") == 0;
    FILE *f = fopen(argv[1], "rb");
    uint32_t n = 0;
    if (!f || fread(&n, sizeof n, 1, f) != 1 || n == 0 || n > LPC_STAMP_RING) {
        fprintf(stderr, "stamps_report: %s: not a stamps file (or no records)\n", argv[1]);
        return 1;
    }
    lpc_stamp_rec *r = (lpc_stamp_rec *)malloc(sizeof *r * n);
    launch *ls = (launch *)calloc(n, sizeof *ls);
    double *tmp = (double *)malloc(sizeof *tmp * n);
    if (!r || !ls || !tmp || fread(r, sizeof *r, n, f) != n) {
        fprintf(stderr, "stamps_report: %s: truncated\n", argv[1]);
        return 1;
    }
    fclose(f);
    qsort(r, n, sizeof *r, by_entry);
    double cyc = 0, ns = 0;
    for (uint32_t i = 0; i < n; i++) cyc += r[i].exit_cycles, ns += (double)(r[i].g_exit - r[i].g_entry);
    cyc_per_ns = ns > 0 ? cyc / ns : 1.0;
    /* the last step: back from the end to the last gap of over 20 us with nothing running */
    uint32_t beg = 0;
    uint64_t running_until = r[0].g_exit;
    for (uint32_t i = 1; i < n; i++) {
        if (r[i].g_entry > running_until + 20000) beg = i;
        if (r[i].g_exit > running_until) running_until = r[i].g_exit;
    }
    int nl = 0;
    for (uint32_t i = beg; i < n; i++) {
        launch *cur = nl ? &ls[nl - 1] : NULL;
        if (!cur || r[i].tag != cur->tag || r[i].rows != cur->rows || r[i].k != cur->k)
            cur = &ls[nl++], cur->tag = r[i].tag, cur->rows = r[i].rows, cur->k = r[i].k, cur->first = (int)i;
        cur->count++;
    }
    const double t0 = (double)r[beg].g_entry;
    double prev_end = t0, step_end = t0;
    for (int i = 0; i < nl; i++) {
        measure(&ls[i], r, prev_end, t0, tmp);
        prev_end += ls[i].exit_last;
        if (prev_end > step_end) step_end = prev_end;
    }
    printf("last step: %d launches, %u blocks, %.1f us from first entry to last exit; SM clock %.2f GHz\n", nl, n - beg,
           (step_end - t0) / 1e3, cyc_per_ns);
    printf("times in us; 'after prev' = from the previous launch's last block exit\n");
    printf("%-34s %4s %7s %7s %7s %7s %7s %7s %7s %7s %8s\n", "launch (kernel rows x k)", "n", "wait1st", "waitmed", "stage",
           "dots1", "store1", "exit10", "exit50", "exit90", "lastexit");
    char label[64];
    if (every)
        for (int i = 0; i < nl; i++) {
            snprintf(label, sizeof label, "%3d %s %ux%u", i, kind_name(ls[i].tag), ls[i].rows, ls[i].k);
            print_row(label, ls[i].count, &ls[i]);
        }
    /* averages over launches of one kernel and shape */
    for (int i = 0; i < nl; i++) {
        if (ls[i].count < 0) continue; /* already summed into an earlier row */
        launch sum = ls[i];
        int m = 1;
        for (int j = i + 1; j < nl; j++) {
            if (ls[j].tag != ls[i].tag || ls[j].rows != ls[i].rows || ls[j].k != ls[i].k) continue;
            sum.wait_first += ls[j].wait_first, sum.wait_med += ls[j].wait_med, sum.stage_med += ls[j].stage_med;
            sum.dots_med += ls[j].dots_med, sum.store_med += ls[j].store_med, sum.exit_last += ls[j].exit_last;
            sum.exit_p10 += ls[j].exit_p10, sum.exit_p50 += ls[j].exit_p50, sum.exit_p90 += ls[j].exit_p90;
            ls[j].count = -1, m++;
        }
        sum.wait_first /= m, sum.wait_med /= m, sum.stage_med /= m, sum.dots_med /= m, sum.store_med /= m, sum.exit_last /= m;
        sum.exit_p10 /= m, sum.exit_p50 /= m, sum.exit_p90 /= m;
        snprintf(label, sizeof label, "%s %ux%u (x%d)", kind_name(sum.tag), sum.rows, sum.k, m);
        print_row(label, sum.count, &sum);
    }
    free(r), free(ls), free(tmp);
    return 0;
}
