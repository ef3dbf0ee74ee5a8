/* cupti_trace.c — where the GPU time of a CUDA-graph decode step goes, measured
 * inside the graph (the device machine has no Nsight Systems).
 *
 *   LD_PRELOAD=build/libcupti_trace.so LP_TRACE_OUT=trace.txt build/bench_cuda MODEL ...
 *
 * A preloaded library: CUPTI's activity API records every kernel's start and end
 * (kernels inside graphs one by one, programmatic-dependent-launch overlap included).
 * At exit it takes the graph with the most kernel records (batch-1 decode in a
 * bench_cuda run with one depth), cuts its records into launches (one per token),
 * drops the first two (warm-up) and prints:
 *   - per launch: GPU span (first kernel start to last kernel end), busy time (union
 *     of kernel intervals) and the idle time between launches, with the CUDA runtime
 *     calls the host made in it (logits copy, synchronize, graph launch); the rest
 *     of the idle time is host code (the next step's recording, sampling);
 *   - per kernel (base name + first template argument): launches per token, mean
 *     duration, and its share of the span: the time from the previous kernel's end
 *     to its own end (what the step would lose without it, overlap counted once);
 *   - the first LP_TRACE_NODES (default 40) kernels of one launch in order.
 * Built on the device: gcc -shared -fPIC bench/cupti_trace.c -I$CUDA/include -lcupti. */
#define _GNU_SOURCE
#include <cupti.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if CUPTI_API_VERSION >= 130000
typedef CUpti_ActivityKernel10 kernel_rec;
#else
typedef CUpti_ActivityKernel9 kernel_rec;
#endif

typedef struct {
    uint64_t start, end, node;
    uint32_t graph;
    int name; /* index into names */
} rec;

typedef struct {
    uint64_t start, end;
    uint32_t cbid;
} api_rec;

static rec *recs;
static size_t n_recs, cap_recs;
static api_rec *apis;
static size_t n_apis, cap_apis;
static char **names;
static int n_names;

enum { BUF_BYTES = 8 << 20 };

/* "_Z11lpc_gemv1_qI9lpc_q4_kLi1E..." -> "lpc_gemv1_q<lpc_q4_k>" (base name and the
 * first template argument when it is a type name); other names as they are. */
static void short_name(const char *m, char *out, size_t cap) {
    snprintf(out, cap, "%s", m);
    if (strncmp(m, "_Z", 2) != 0 || m[2] < '0' || m[2] > '9') return;
    char *end;
    long n = strtol(m + 2, &end, 10);
    if ((long)strlen(end) < n) return;
    int len = snprintf(out, cap, "%.*s", (int)n, end);
    const char *t = end + n;
    if (*t == 'I' && t[1] >= '1' && t[1] <= '9') {
        long k = strtol(t + 1, &end, 10);
        if ((long)strlen(end) >= k && (size_t)len < cap) snprintf(out + len, cap - len, "<%.*s>", (int)k, end);
    } else if (*t == 'I' && t[1] == 'L') { /* integer template argument: "<Li2E..." */
        snprintf(out + len, cap - len, "<%.12s>", t + 1);
    }
}

static int intern(const char *mangled) {
    char s[160];
    short_name(mangled ? mangled : "?", s, sizeof s);
    for (int i = 0; i < n_names; i++)
        if (strcmp(names[i], s) == 0) return i;
    names = realloc(names, (size_t)(n_names + 1) * sizeof *names);
    names[n_names] = strdup(s);
    return n_names++;
}

static void CUPTIAPI buffer_requested(uint8_t **buf, size_t *size, size_t *max_records) {
    *buf = aligned_alloc(8, BUF_BYTES);
    *size = BUF_BYTES;
    *max_records = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size, size_t valid) {
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *a = NULL;
    while (cuptiActivityGetNextRecord(buf, valid, &a) == CUPTI_SUCCESS) {
        if (a->kind == CUPTI_ACTIVITY_KIND_RUNTIME) {
            const CUpti_ActivityAPI *r = (const CUpti_ActivityAPI *)a;
            if (n_apis == cap_apis) {
                cap_apis = cap_apis ? 2 * cap_apis : 1 << 14;
                apis = realloc(apis, cap_apis * sizeof *apis);
            }
            apis[n_apis++] = (api_rec){r->start, r->end, r->cbid};
            continue;
        }
        if (a->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) continue;
        const kernel_rec *k = (const kernel_rec *)a;
        if (n_recs == cap_recs) {
            cap_recs = cap_recs ? 2 * cap_recs : 1 << 16;
            recs = realloc(recs, cap_recs * sizeof *recs);
        }
        recs[n_recs++] = (rec){k->start, k->end, k->graphNodeId, k->graphId, intern(k->name)};
    }
    free(buf);
}

static int by_start(const void *a, const void *b) {
    const rec *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

typedef struct {
    double dur, share;
    long count;
} name_stat;

static void report(FILE *f) {
    /* the graph launched most often (records / distinct nodes): decode, not a prefill chunk */
    uint32_t best = 0;
    size_t best_n = 0, best_launches = 0;
    for (size_t i = 0; i < n_recs; i++) {
        if (!recs[i].graph || (i > 0 && recs[i].graph == recs[i - 1].graph)) continue;
        size_t n = 0, nodes = 0;
        uint64_t first_node = 0;
        for (size_t j = 0; j < n_recs; j++) {
            if (recs[j].graph != recs[i].graph) continue;
            if (n++ == 0) first_node = recs[j].node;
            nodes += recs[j].node == first_node;
        }
        if (nodes > best_launches) best = recs[i].graph, best_n = n, best_launches = nodes;
    }
    if (!best_n) {
        fprintf(f, "cupti_trace: no graph kernels recorded (%zu kernels)\n", n_recs);
        return;
    }
    rec *g = malloc(best_n * sizeof *g);
    size_t n = 0;
    for (size_t i = 0; i < n_recs; i++)
        if (recs[i].graph == best) g[n++] = recs[i];
    qsort(g, n, sizeof *g, by_start);
    /* nodes per launch: distinct node ids */
    size_t per = 0;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) seen = g[j].node == g[i].node;
        per += !seen;
        if (i > 4096) break;
    }
    const size_t launches = n / per;
    if (launches < 4) {
        fprintf(f, "cupti_trace: graph %u: %zu kernels, %zu per launch: too few launches\n", best, n, per);
        free(g);
        return;
    }
    name_stat *ns = calloc((size_t)n_names, sizeof *ns);
    enum { API_SLOTS = 4096 };
    double *api_time = calloc(API_SLOTS, sizeof *api_time);
    double span = 0, busy = 0, idle = 0;
    size_t used = 0;
    for (size_t l = 2; l < launches; l++) {
        rec *r = g + l * per;
        uint64_t last_end = r[0].start, cover = r[0].start;
        double b = 0;
        for (size_t i = 0; i < per; i++) {
            const uint64_t s = r[i].start, e = r[i].end;
            if (e > cover) b += (double)(e - (s > cover ? s : cover)), cover = e;
            ns[r[i].name].dur += (double)(e - s);
            ns[r[i].name].share += e > last_end ? (double)(e - last_end) : 0.0;
            ns[r[i].name].count++;
            if (e > last_end) last_end = e;
        }
        span += (double)(last_end - r[0].start);
        busy += b;
        if (l + 1 < launches) {
            const uint64_t next = g[(l + 1) * per].start;
            idle += (double)(next - last_end);
            for (size_t k = 0; k < n_apis; k++) { /* runtime calls' time inside the idle window */
                const uint64_t s = apis[k].start > last_end ? apis[k].start : last_end;
                const uint64_t e = apis[k].end < next ? apis[k].end : next;
                if (e > s) api_time[apis[k].cbid % API_SLOTS] += (double)(e - s);
            }
        }
        used++;
    }
    fprintf(f, "cupti_trace: graph %u, %zu kernels per launch, %zu launches measured\n", best, per, used);
    fprintf(f, "per launch: span %.1f us, busy %.1f us (%.1f%%), idle before the next launch %.1f us\n",
            span / used / 1e3, busy / used / 1e3, 100.0 * busy / span, idle / (used - 1) / 1e3);
    double api_total = 0;
    for (int k = 0; k < API_SLOTS; k++) {
        if (api_time[k] <= 0) continue;
        const char *nm = "?";
        cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, (uint32_t)k, &nm);
        fprintf(f, "  in the idle window: %-32s %8.1f us per step\n", nm, api_time[k] / (used - 1) / 1e3);
        api_total += api_time[k];
    }
    fprintf(f, "  in the idle window: host code outside CUDA calls %8.1f us per step\n", (idle - api_total) / (used - 1) / 1e3);
    free(api_time);
    fprintf(f, "\n%-44s %8s %10s %12s %8s\n", "kernel", "n/token", "mean us", "share us/tok", "share%");
    for (int pass = 0; pass < n_names; pass++) { /* largest share first */
        int m = -1;
        for (int i = 0; i < n_names; i++)
            if (ns[i].count > 0 && (m < 0 || ns[i].share > ns[m].share)) m = i;
        if (m < 0) break;
        fprintf(f, "%-44.44s %8.1f %10.2f %12.1f %7.1f%%\n", names[m], (double)ns[m].count / used, ns[m].dur / ns[m].count / 1e3,
                ns[m].share / used / 1e3, 100.0 * ns[m].share / span);
        ns[m].count = 0;
    }
    const char *lim = getenv("LP_TRACE_NODES");
    size_t show = lim ? (size_t)atoi(lim) : 40;
    if (show > per) show = per;
    rec *r = g + (launches - 1) * per;
    fprintf(f, "\nlast launch, first %zu kernels (us from the launch's first start):\n%-44s %9s %9s %9s\n", show, "kernel",
            "start", "dur", "gap");
    for (size_t i = 0; i < show; i++)
        fprintf(f, "%-44.44s %9.2f %9.2f %9.2f\n", names[r[i].name], (r[i].start - r[0].start) / 1e3,
                (r[i].end - r[i].start) / 1e3, i ? ((double)r[i].start - (double)r[i - 1].end) / 1e3 : 0.0);
    free(ns);
    free(g);
}

static void finish(void) {
    cuptiActivityFlushAll(1);
    const char *path = getenv("LP_TRACE_OUT");
    FILE *f = path ? fopen(path, "w") : stderr;
    if (!f) f = stderr;
    report(f);
    if (f != stderr) fclose(f);
}

__attribute__((constructor)) static void start(void) {
    if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME) != CUPTI_SUCCESS) {
        fprintf(stderr, "cupti_trace: CUPTI activity tracing unavailable\n");
        return;
    }
    atexit(finish);
}
