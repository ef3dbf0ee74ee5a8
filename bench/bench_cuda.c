/* bench_cuda.c — decode and prefill speed of the CUDA backend on one model (a GGUF
 * file or an MLX directory).
 *
 *   bench_cuda MODEL [--label NAME] [--depths 512,4096,16384,32768] [--gen 128]
 *              [--prefill 512,4096] [--streams 8,32] [--copy-gib 4] [--json OUT.json]
 *
 * Measures, on device 0:
 *   - device-to-device copy bandwidth (cudaMemcpy of two --copy-gib buffers,
 *     bytes read + written), the ceiling for the bandwidth shares below;
 *   - prefill tokens/s of --prefill prompts (batches of 512, a fresh slot);
 *   - batch-1 decode tokens/s at each KV depth: the cache of slot 0 is filled to
 *     the depth, then --gen single-token steps are timed (wall clock, each step
 *     ends with the logits on the host, as a real generator needs them);
 *   - batched decode: --streams sequences (a 128-token prompt each) advanced one
 *     token per step together, total tokens/s;
 *   - VRAM (weights, KV cache, buffers, whole device) and achieved weight
 *     bandwidth = device weight bytes x decode tokens/s, as a share of the copy
 *     bandwidth (the device copy, not the host model: MLX scales take 4 bytes per
 *     group there when they are bf16 values, 8 in the host blocks).
 * Prints a table; --json writes the numbers. Token ids are fixed pseudo-random
 * (speed does not depend on them). Without a CUDA device it says so and exits 1. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cuda/cuda_backend.h"
#include "core/err.h"
#include "runtime/engine.h"
#include "runtime/model.h"

enum { MAX_LIST = 8, PREFILL_BATCH = 512 };

typedef struct {
    int v[MAX_LIST];
    int n;
} int_list;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int parse_list(const char *s, int_list *out) {
    out->n = 0;
    while (*s && out->n < MAX_LIST) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0) return -1;
        out->v[out->n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
    }
    return *s ? -1 : 0;
}

static int32_t token_at(int i, int V) { return (int32_t)((2654435761u * (unsigned)(i + 17)) % (unsigned)(V - 1000) + 500); }

/* Tokens [pos0, pos0+n) of a sequence into slot; returns seconds. */
static double prefill(lp_engine *e, int slot, int pos0, int n, float *logits) {
    const int V = lp_engine_n_vocab(e);
    int32_t *tok = malloc((size_t)n * sizeof *tok);
    for (int i = 0; i < n; i++) tok[i] = token_at(pos0 + i, V);
    const double t0 = now_s();
    int rc = lp_engine_eval(e, slot, pos0, tok, n, logits, false);
    const double dt = now_s() - t0;
    free(tok);
    if (rc != 0) {
        fprintf(stderr, "bench_cuda: prefill: %s\n", lp_errmsg());
        exit(1);
    }
    return dt;
}

/* n single-token steps of slot at pos0..; returns seconds. */
static double decode(lp_engine *e, int slot, int pos0, int n, float *logits) {
    const int V = lp_engine_n_vocab(e);
    const double t0 = now_s();
    for (int i = 0; i < n; i++) {
        int32_t tok = token_at(pos0 + i, V);
        if (lp_engine_eval(e, slot, pos0 + i, &tok, 1, logits, false) != 0) {
            fprintf(stderr, "bench_cuda: decode: %s\n", lp_errmsg());
            exit(1);
        }
    }
    return now_s() - t0;
}

/* streams sequences, prompt of 128 each, then steps batched decode steps; returns total tok/s. */
static double batched(const lp_model *m, int streams, int steps) {
    lp_backend *be = lp_backend_cuda_create(0);
    lp_engine_params p = {.n_ctx = 128 + steps + 16, .n_slots = streams, .n_batch = PREFILL_BATCH};
    lp_engine *e = be ? lp_engine_create_with_backend(m, be, &p) : NULL;
    if (!e) {
        fprintf(stderr, "bench_cuda: batched engine: %s\n", lp_errmsg());
        exit(1);
    }
    const int V = lp_engine_n_vocab(e);
    float *logits = lp_engine_logits_alloc(e, (size_t)streams);
    for (int s = 0; s < streams; s++) prefill(e, s, 0, 128, logits);
    int32_t *tok = malloc((size_t)streams * sizeof *tok), *pos = malloc((size_t)streams * sizeof *pos),
            *slot = malloc((size_t)streams * sizeof *slot);
    int8_t *want = malloc((size_t)streams);
    double t0 = 0;
    const int warm = 4;
    for (int i = 0; i < warm + steps; i++) {
        if (i == warm) t0 = now_s();
        for (int s = 0; s < streams; s++) tok[s] = token_at(i * streams + s, V), pos[s] = 128 + i, slot[s] = s, want[s] = 1;
        lp_batch b = {.n_tokens = streams, .tokens = tok, .pos = pos, .slot = slot, .logits = want};
        if (lp_engine_decode(e, &b, logits) != 0) {
            fprintf(stderr, "bench_cuda: batched decode: %s\n", lp_errmsg());
            exit(1);
        }
    }
    const double tps = (double)streams * steps / (now_s() - t0);
    free(tok), free(pos), free(slot), free(want);
    lp_engine_logits_free(e, logits);
    lp_engine_free(e);
    return tps;
}

int main(int argc, char **argv) {
    const char *path = NULL, *label = NULL, *json_path = NULL;
    int_list depths = {{512, 4096, 16384, 32768}, 4}, pre = {{512, 4096}, 2}, streams = {{8, 32}, 2};
    int gen = 128;
    double copy_gib = 4.0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--label") && v) label = v, i++;
        else if (!strcmp(a, "--json") && v) json_path = v, i++;
        else if (!strcmp(a, "--depths") && v) bad = parse_list(v, &depths), i++;
        else if (!strcmp(a, "--prefill") && v) bad = parse_list(v, &pre), i++;
        else if (!strcmp(a, "--streams") && v) bad = parse_list(v, &streams), i++;
        else if (!strcmp(a, "--gen") && v) gen = atoi(v), i++;
        else if (!strcmp(a, "--copy-gib") && v) copy_gib = atof(v), i++;
        else if (a[0] != '-' && !path) path = a;
        else bad = 1;
        if (bad || gen <= 0) {
            fprintf(stderr, "usage: bench_cuda MODEL [--label NAME] [--depths 512,4096,...] [--gen 128] "
                            "[--prefill 512,4096] [--streams 8,32] [--copy-gib 4] [--json OUT.json]\n");
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "bench_cuda: missing MODEL (GGUF file or MLX directory)\n");
        return 2;
    }
    if (lp_cuda_device_count() <= 0) {
        fprintf(stderr, "bench_cuda: no CUDA device found (or built without CUDA)\n");
        return 1;
    }
    const double copy_gbs = lp_cuda_copy_bandwidth(0, (size_t)(copy_gib * 1073741824.0));
    lp_model *m = lp_model_load(path);
    if (!m) {
        fprintf(stderr, "bench_cuda: %s\n", lp_errmsg());
        return 1;
    }
    int max_depth = 0, max_pre = 0;
    for (int i = 0; i < depths.n; i++) max_depth = depths.v[i] > max_depth ? depths.v[i] : max_depth;
    for (int i = 0; i < pre.n; i++) max_pre = pre.v[i] > max_pre ? pre.v[i] : max_pre;
    const int n_ctx = (max_depth > max_pre ? max_depth : max_pre) + gen + 64;
    lp_backend *be = lp_backend_cuda_create(0);
    lp_engine_params ep = {.n_ctx = n_ctx, .n_slots = 2, .n_batch = PREFILL_BATCH};
    const double t_load = now_s();
    lp_engine *e = be ? lp_engine_create_with_backend(m, be, &ep) : NULL;
    if (!e) {
        fprintf(stderr, "bench_cuda: %s\n", lp_errmsg());
        return 1;
    }
    const double upload_s = now_s() - t_load;
    lp_cuda_mem mem;
    lp_backend_cuda_mem(be, &mem);
    const double weight_gb = (double)lp_model_weight_bytes(m) / 1e9, stream_gb = mem.weights / 1e9;
    float *logits = lp_engine_logits_alloc(e, 1);
    char device[256];
    snprintf(device, sizeof device, "%s", lp_backend_cuda_device_name(be));
    printf("bench_cuda: %s on %s, weights %.2f GB (device copy %.2f GB), uploaded in %.1f s, copy bandwidth %.0f GB/s\n", path, device,
           weight_gb, mem.weights / 1e9, upload_s, copy_gbs);

    /* prefill in slot 1 (fresh each time: positions from 0) */
    double pre_tps[MAX_LIST];
    /* warm-up: a full batch, so first-use costs (lazily loaded kernels, cuBLAS heuristics,
     * scratch growth: ~70 ms on the H100) fall outside pp512; 64 rows took the MMA path
     * and left those to the first timed prefill */
    prefill(e, 1, 0, PREFILL_BATCH, logits);
    for (int i = 0; i < pre.n; i++) pre_tps[i] = pre.v[i] / prefill(e, 1, 0, pre.v[i], logits);

    /* decode at increasing depths of slot 0 */
    double dec_tps[MAX_LIST];
    int filled = 0;
    for (int i = 0; i < depths.n; i++) {
        if (depths.v[i] > filled) {
            prefill(e, 0, filled, depths.v[i] - filled, logits);
            filled = depths.v[i];
        }
        decode(e, 0, filled, 8, logits); /* warm-up: graph capture */
        filled += 8;
        dec_tps[i] = gen / decode(e, 0, filled, gen, logits);
        filled += gen;
    }
    lp_backend_cuda_mem(be, &mem);
    lp_engine_logits_free(e, logits);
    lp_engine_free(e);

    double bat_tps[MAX_LIST];
    for (int i = 0; i < streams.n; i++) bat_tps[i] = batched(m, streams.v[i], 64);

    /* ---- report ---- */
    printf("\n| %-22s | %12s | %18s |\n|---|---|---|\n", label ? label : "run", "tokens/s", "weight BW (share)");
    for (int i = 0; i < pre.n; i++) printf("| prefill pp%-11d | %12.0f | %18s |\n", pre.v[i], pre_tps[i], "");
    for (int i = 0; i < depths.n; i++) {
        const double bw = stream_gb * dec_tps[i];
        printf("| decode @%-14d | %12.1f | %8.0f GB/s (%2.0f%%) |\n", depths.v[i], dec_tps[i], bw, 100.0 * bw / copy_gbs);
    }
    for (int i = 0; i < streams.n; i++) printf("| batched decode x%-5d | %12.0f | %18s |\n", streams.v[i], bat_tps[i], "");
    printf("\nVRAM: weights %.2f GB, KV cache %.2f GB (n_ctx %d x 2 slots, F16), buffers %.2f GB, device used %.2f / %.2f GB\n",
           mem.weights / 1e9, mem.kv_cache / 1e9, n_ctx, mem.scratch / 1e9, mem.device_used / 1e9, mem.device_total / 1e9);

    if (json_path) {
        json_t *j = json_object(), *d = json_object(), *p = json_object(), *b = json_object();
        json_object_set_new(j, "model", json_string(path));
        json_object_set_new(j, "label", json_string(label ? label : ""));
        json_object_set_new(j, "device", json_string(device));
        json_object_set_new(j, "weights_gb", json_real(weight_gb));
        json_object_set_new(j, "copy_bandwidth_gbs", json_real(copy_gbs));
        json_object_set_new(j, "upload_s", json_real(upload_s));
        for (int i = 0; i < pre.n; i++) {
            char k[32];
            snprintf(k, sizeof k, "pp%d", pre.v[i]);
            json_object_set_new(p, k, json_real(pre_tps[i]));
        }
        for (int i = 0; i < depths.n; i++) {
            char k[32];
            snprintf(k, sizeof k, "ctx%d", depths.v[i]);
            json_t *row = json_object();
            json_object_set_new(row, "tokens_per_s", json_real(dec_tps[i]));
            json_object_set_new(row, "weight_bandwidth_share", json_real(stream_gb * dec_tps[i] / copy_gbs));
            json_object_set_new(d, k, row);
        }
        for (int i = 0; i < streams.n; i++) {
            char k[32];
            snprintf(k, sizeof k, "streams%d", streams.v[i]);
            json_object_set_new(b, k, json_real(bat_tps[i]));
        }
        json_object_set_new(j, "prefill_tokens_per_s", p);
        json_object_set_new(j, "decode_batch1", d);
        json_object_set_new(j, "batched_decode_tokens_per_s", b);
        json_t *vm = json_object();
        json_object_set_new(vm, "weights_gb", json_real(mem.weights / 1e9));
        json_object_set_new(vm, "kv_cache_gb", json_real(mem.kv_cache / 1e9));
        json_object_set_new(vm, "buffers_gb", json_real(mem.scratch / 1e9));
        json_object_set_new(vm, "device_used_gb", json_real(mem.device_used / 1e9));
        json_object_set_new(j, "vram", vm);
        json_object_set_new(j, "n_ctx", json_integer(n_ctx));
        if (json_dump_file(j, json_path, JSON_INDENT(2)) != 0) fprintf(stderr, "bench_cuda: cannot write %s\n", json_path);
        json_decref(j);
    }
    lp_model_free(m);
    return 0;
}
