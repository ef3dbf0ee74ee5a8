/* convert.c — the streaming conversion engine: source rows -> f32 -> sinks.
 * Owns reading every HF source layout of arch.h (plain, per-expert, gpt-oss MXFP4
 * blocks with interleaved gate/up, interleaved biases) into exact f32 rows, and the
 * pass-through of MXFP4 blocks to sinks that keep them as MXFP4. */
#include "convert.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "../core/progress.h"

#define CHUNK_ELEMS (8ll << 20) /* f32 elements converted per pool run (32 MiB) */

/* How a source kind lays out its tensor(s) in the checkpoint (arch.h lp_src_kind). */
typedef struct {
    bool per_expert;  /* one HF tensor per expert (second %d in the name) */
    bool mxfp4;       /* "<name>_blocks" + "<name>_scales" instead of one float tensor */
    int split;        /* 2: HF interleaves gate/up along its output axis; 1: not split */
    int pick;         /* which of the interleaved pair this role takes (0 gate, 1 up) */
    bool bias;        /* [experts, split * n] bias whose columns are interleaved */
} src_layout;

static const src_layout layouts[] = {
    [LP_SRC_PLAIN] = {false, false, 1, 0, false},     [LP_SRC_EXPERT_STACK] = {true, false, 1, 0, false},
    [LP_SRC_MXFP4_GATE] = {false, true, 2, 0, false}, [LP_SRC_MXFP4_UP] = {false, true, 2, 1, false},
    [LP_SRC_MXFP4] = {false, true, 1, 0, false},      [LP_SRC_BIAS_EVEN] = {false, false, 2, 0, true},
    [LP_SRC_BIAS_ODD] = {false, false, 2, 1, true},
};

int lp_convert_role_present(void *source_ref, lp_role role, int layer) {
    const lp_source_ref *ref = source_ref;
    const lp_tensor_map *m = lp_arch_tensor(ref->hp->arch, role);
    if (!m) return 0;
    char name[256];
    lp_tensor_name_hf(m, layer, 0, name, sizeof name);
    if (layouts[m->src].mxfp4) strncat(name, "_blocks", sizeof name - strlen(name) - 1);
    return lp_checkpoint_find(ref->ckpt, name) != NULL;
}

/* The HF tensors behind one output tensor (per expert for expert stacks). */
typedef struct {
    const lp_st_tensor *data;   /* float tensor, or MXFP4 blocks */
    const lp_st_tensor *scales; /* MXFP4 only */
} source_pair;

/* Where row r of an output tensor comes from. */
typedef struct {
    source_pair src;
    int64_t src_row; /* row of src (MXFP4: of the [experts * rows] block matrix) */
} row_source;

typedef struct {
    lp_convert_job *job;
    const lp_plan_tensor *t;
    const lp_tensor_map *map;
    const src_layout *layout;
    int tensor_index;
    int64_t row0, n_rows, rows_per_task;
    float *f32;          /* n_rows * ne[0] */
    void **sink_bufs;    /* per sink: n_rows * row_bytes */
    bool *sink_raw;      /* per sink: takes this tensor's MXFP4 source blocks as they are */
    int failed;          /* set by a task that hit bad data */
    char error[256];
} chunk_ctx;

/* llama: GGUF row 2*i + t of a head is HF row t*(hd/2) + i (FORMATS.md 4.4). */
static int64_t permuted_row(int64_t row, int head_dim) {
    int64_t head = row / head_dim, local = row % head_dim;
    return head * head_dim + (local % 2) * (head_dim / 2) + local / 2;
}

static const lp_st_tensor *find_named(const lp_convert_job *job, const lp_tensor_map *m, int layer, int expert,
                                      const char *suffix, char *name, size_t n) {
    lp_tensor_name_hf(m, layer, expert, name, n);
    strncat(name, suffix, n - strlen(name) - 1);
    return lp_checkpoint_find(job->ckpt, name);
}

static source_pair find_source(const lp_convert_job *job, const lp_tensor_map *m, int layer, int expert) {
    char name[256];
    source_pair p = {NULL, NULL};
    if (layouts[m->src].mxfp4) {
        p.data = find_named(job, m, layer, expert, "_blocks", name, sizeof name);
        p.scales = find_named(job, m, layer, expert, "_scales", name, sizeof name);
    } else {
        p.data = find_named(job, m, layer, expert, "", name, sizeof name);
    }
    return p;
}

static void locate_row(const chunk_ctx *c, int64_t row, row_source *rs) {
    const lp_plan_tensor *t = c->t;
    const src_layout *lay = c->layout;
    int64_t rows_per_matrix = t->ne[1];
    int expert = (int)(row / rows_per_matrix);
    int64_t r = row % rows_per_matrix;
    rs->src = find_source(c->job, c->map, t->layer, lay->per_expert ? expert : 0);
    if (lay->bias) {
        rs->src_row = row; /* GGUF row e = HF row e; the split is along the row */
    } else if (lay->mxfp4) {
        rs->src_row = (int64_t)expert * rows_per_matrix * lay->split + r * lay->split + lay->pick;
    } else {
        bool permute = c->job->hp->arch->permute_qk && (t->role == LP_T_ATTN_Q || t->role == LP_T_ATTN_K);
        int64_t within = permute ? permuted_row(r, c->job->hp->head_dim) : r;
        rs->src_row = lay->per_expert ? within : (int64_t)expert * rows_per_matrix + within;
    }
}

/* E2M1 (FP4) code -> value; code 8 is -0. */
static const float e2m1_values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                      -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

/* One MXFP4 row, exactly: every E2M1 value times 2^(s-127) is a float (subnormal at worst). */
static void mxfp4_row_to_f32(const uint8_t *blocks, const uint8_t *scales, int64_t n_blocks, float *dst) {
    for (int64_t b = 0; b < n_blocks; b++, blocks += 16, dst += 32) {
        const float scale = ldexpf(1.0f, (int)scales[b] - 127);
        for (int k = 0; k < 16; k++) {
            dst[2 * k] = e2m1_values[blocks[k] & 15] * scale;
            dst[2 * k + 1] = e2m1_values[blocks[k] >> 4] * scale;
        }
    }
}

/* One MXFP4 row as ggml block_mxfp4 (FORMATS.md 4.6): scale byte, then qs[j] holding
 * element j (low nibble) and element j+16 (high); HF packs elements 2k, 2k+1 in byte k. */
static void mxfp4_row_to_ggml(const uint8_t *blocks, const uint8_t *scales, int64_t n_blocks, uint8_t *dst) {
    for (int64_t b = 0; b < n_blocks; b++, blocks += 16, dst += 17) {
        uint8_t elem[32];
        for (int k = 0; k < 16; k++) elem[2 * k] = blocks[k] & 15, elem[2 * k + 1] = blocks[k] >> 4;
        dst[0] = scales[b];
        for (int j = 0; j < 16; j++) dst[1 + j] = (uint8_t)(elem[j] | elem[j + 16] << 4);
    }
}

static int read_row_f32(const chunk_ctx *c, const row_source *rs, float *dst) {
    const src_layout *lay = c->layout;
    int64_t ne0 = c->t->ne[0];
    if (lay->mxfp4) {
        int64_t nb = ne0 / 32;
        mxfp4_row_to_f32((const uint8_t *)rs->src.data->data + rs->src_row * nb * 16,
                         (const uint8_t *)rs->src.scales->data + rs->src_row * nb, nb, dst);
        return 0;
    }
    if (lay->split > 1) { /* interleaved bias columns: biases are small, read element by element */
        int64_t first = rs->src_row * ne0 * lay->split + lay->pick;
        for (int64_t j = 0; j < ne0; j++)
            if (lp_st_to_f32(rs->src.data, first + j * lay->split, 1, dst + j) != 0) return -1;
        return 0;
    }
    return lp_st_to_f32(rs->src.data, rs->src_row * ne0, ne0, dst);
}

static void convert_task(void *ctx, int task, int thread) {
    (void)thread;
    chunk_ctx *c = ctx;
    int64_t first = (int64_t)task * c->rows_per_task, last = first + c->rows_per_task;
    if (last > c->n_rows) last = c->n_rows;
    int64_t ne0 = c->t->ne[0];
    for (int64_t i = first; i < last; i++) {
        row_source rs;
        float *dst = c->f32 + i * ne0;
        locate_row(c, c->row0 + i, &rs);
        if (read_row_f32(c, &rs, dst) != 0) {
            c->failed = 1;
            snprintf(c->error, sizeof c->error, "%s", lp_errmsg());
            return;
        }
        for (int s = 0; s < c->job->n_sinks; s++) {
            lp_sink *sk = &c->job->sinks[s];
            size_t rb = sk->row_bytes(sk->self, c->tensor_index);
            void *out = (char *)c->sink_bufs[s] + (size_t)i * rb;
            if (c->sink_raw[s])
                mxfp4_row_to_ggml((const uint8_t *)rs.src.data->data + rs.src_row * (ne0 / 32) * 16,
                                  (const uint8_t *)rs.src.scales->data + rs.src_row * (ne0 / 32), ne0 / 32, out);
            else
                sk->convert_row(sk->self, c->tensor_index, c->row0 + i, dst, out);
        }
    }
}

static int shape_error(const char *name, const char *gguf_name, const char *expected) {
    return lp_fail("checkpoint: tensor '%s': shape does not match config.json (expected %s for '%s')", name, expected,
                   gguf_name);
}

/* gpt-oss MXFP4: U8 blocks [E, rows, in/32, 16] and scales [E, rows, in/32]. */
static int check_mxfp4(const lp_convert_job *job, const lp_plan_tensor *t, const lp_tensor_map *m,
                       const source_pair *p) {
    char name[256], expected[128];
    int64_t rows = t->ne[1] * layouts[m->src].split, nb = t->ne[0] / 32;
    snprintf(expected, sizeof expected, "U8 [%lld, %lld, %lld, 16]", (long long)t->ne[2], (long long)rows,
             (long long)nb);
    find_named(job, m, t->layer, 0, "_blocks", name, sizeof name);
    const lp_st_tensor *b = p->data, *s = p->scales;
    if (t->ne[0] % 32 != 0) return shape_error(name, t->gguf_name, "rows of whole 32-element blocks");
    if (b->dtype != LP_ST_U8 || b->n_dims != 4 || b->shape[0] != t->ne[2] || b->shape[1] != rows ||
        b->shape[2] != nb || b->shape[3] != 16)
        return shape_error(name, t->gguf_name, expected);
    find_named(job, m, t->layer, 0, "_scales", name, sizeof name);
    snprintf(expected, sizeof expected, "U8 [%lld, %lld, %lld]", (long long)t->ne[2], (long long)rows, (long long)nb);
    if (s->dtype != LP_ST_U8 || s->n_dims != 3 || s->shape[0] != t->ne[2] || s->shape[1] != rows || s->shape[2] != nb)
        return shape_error(name, t->gguf_name, expected);
    return 0;
}

/* A float source: plain (any shape with the right element count and row length) or
 * an interleaved bias [E, 2 * n]. */
static int check_float(const lp_convert_job *job, const lp_plan_tensor *t, const lp_tensor_map *m, int expert,
                       const lp_st_tensor *src) {
    char name[256], expected[128];
    lp_tensor_name_hf(m, t->layer, expert, name, sizeof name);
    const src_layout *lay = &layouts[m->src];
    if (lay->bias) {
        snprintf(expected, sizeof expected, "[%lld, %lld]", (long long)t->ne[1], (long long)(t->ne[0] * lay->split));
        if (src->n_dims != 2 || src->shape[0] != t->ne[1] || src->shape[1] != t->ne[0] * lay->split)
            return shape_error(name, t->gguf_name, expected);
        return 0;
    }
    int64_t want = t->ne[0] * t->ne[1] * (lay->per_expert ? 1 : t->ne[2]);
    int64_t last_dim = src->n_dims > 0 ? src->shape[src->n_dims - 1] : 1;
    snprintf(expected, sizeof expected, "%lld x %lld", (long long)t->ne[1], (long long)t->ne[0]);
    if (src->n_elements != want || last_dim != t->ne[0]) return shape_error(name, t->gguf_name, expected);
    return 0;
}

/* Every source tensor of an output tensor must exist with the expected shape. */
static int check_sources(const lp_convert_job *job, const lp_plan_tensor *t, const lp_tensor_map *m,
                         uint64_t *bytes) {
    if ((size_t)m->src >= sizeof layouts / sizeof layouts[0])
        return lp_fail("tensor '%s': unknown source layout %d", t->gguf_name, (int)m->src);
    const src_layout *lay = &layouts[m->src];
    int n_mats = lay->per_expert ? (int)t->ne[2] : 1;
    for (int e = 0; e < n_mats; e++) {
        source_pair p = find_source(job, m, t->layer, e);
        char name[256];
        if (!p.data || (lay->mxfp4 && !p.scales)) {
            find_named(job, m, t->layer, e, !lay->mxfp4 ? "" : !p.data ? "_blocks" : "_scales", name, sizeof name);
            return lp_fail("checkpoint: tensor '%s' missing (needed for '%s')", name, t->gguf_name);
        }
        if ((lay->mxfp4 ? check_mxfp4(job, t, m, &p) : check_float(job, t, m, e, p.data)) != 0) return -1;
        /* gate and up read the same interleaved tensor: count half of it for each */
        *bytes += (p.data->nbytes + (p.scales ? p.scales->nbytes : 0)) / (uint64_t)lay->split;
    }
    return 0;
}

/* Sinks that store a tensor in the MXFP4 it already has take the source blocks. */
static void choose_raw_sinks(chunk_ctx *c) {
    for (int s = 0; s < c->job->n_sinks; s++) {
        const lp_sink *sk = &c->job->sinks[s];
        c->sink_raw[s] = c->layout->mxfp4 && sk->tensor_type &&
                         sk->tensor_type(sk->self, c->tensor_index) == LP_TYPE_MXFP4;
    }
}

/* Drop the source pages read so far: RSS stays at about one chunk, not one tensor
 * (a 150k-token embedding is 1.2 GB of bf16 on its own). */
static void release_sources(lp_convert_job *job, const lp_plan_tensor *t, const lp_tensor_map *m, const chunk_ctx *c) {
    int n_mats = c->layout->per_expert ? (int)t->ne[2] : 1;
    for (int e = 0; e < n_mats; e++) {
        source_pair p = find_source(job, m, t->layer, e);
        lp_checkpoint_release(job->ckpt, p.data);
        if (p.scales) lp_checkpoint_release(job->ckpt, p.scales);
    }
}

static int convert_tensor(lp_convert_job *job, int ti, chunk_ctx *c) {
    const lp_plan_tensor *t = &job->tensors->tensors[ti];
    const lp_tensor_map *m = lp_arch_tensor(job->hp->arch, t->role);
    uint64_t src_bytes = 0;
    if (check_sources(job, t, m, &src_bytes) != 0) return -1;
    int64_t total_rows = t->ne[1] * t->ne[2];
    int64_t chunk_rows = CHUNK_ELEMS / t->ne[0];
    if (chunk_rows < 1) chunk_rows = 1;
    c->t = t;
    c->map = m;
    c->layout = &layouts[m->src];
    c->tensor_index = ti;
    choose_raw_sinks(c);
    for (int64_t row0 = 0; row0 < total_rows; row0 += chunk_rows) {
        c->row0 = row0;
        c->n_rows = total_rows - row0 < chunk_rows ? total_rows - row0 : chunk_rows;
        int n_tasks = lp_pool_threads(job->pool) * 4;
        c->rows_per_task = (c->n_rows + n_tasks - 1) / n_tasks;
        n_tasks = (int)((c->n_rows + c->rows_per_task - 1) / c->rows_per_task);
        lp_pool_run(job->pool, n_tasks, convert_task, c);
        if (c->failed) return lp_fail("%s", c->error);
        for (int s = 0; s < job->n_sinks; s++)
            if (job->sinks[s].write_rows(job->sinks[s].self, ti, row0, c->n_rows, c->sink_bufs[s]) != 0) return -1;
        release_sources(job, t, m, c);
    }
    for (int s = 0; s < job->n_sinks; s++)
        if (job->sinks[s].end_tensor && job->sinks[s].end_tensor(job->sinks[s].self, ti) != 0) return -1;
    job->source_bytes_read += src_bytes;
    return 0;
}

int lp_convert_run(lp_convert_job *job) {
    double t0 = lp_now();
    chunk_ctx c;
    memset(&c, 0, sizeof c);
    c.job = job;
    c.sink_bufs = lp_xcalloc((size_t)job->n_sinks, sizeof(void *));
    c.sink_raw = lp_xcalloc((size_t)job->n_sinks, sizeof(bool));
    int64_t max_row = 1;
    for (int i = 0; i < job->tensors->n; i++)
        if (job->tensors->tensors[i].ne[0] > max_row) max_row = job->tensors->tensors[i].ne[0];
    int64_t max_chunk = CHUNK_ELEMS > max_row ? CHUNK_ELEMS : max_row;
    c.f32 = lp_xmalloc((size_t)max_chunk * sizeof(float));
    /* sink buffers sized for the largest chunk any tensor will use */
    for (int s = 0; s < job->n_sinks; s++) {
        size_t need = 0;
        for (int i = 0; i < job->tensors->n; i++) {
            const lp_plan_tensor *t = &job->tensors->tensors[i];
            int64_t rows = max_chunk / t->ne[0];
            if (rows > t->ne[1] * t->ne[2]) rows = t->ne[1] * t->ne[2];
            size_t b = (size_t)rows * job->sinks[s].row_bytes(job->sinks[s].self, i);
            if (b > need) need = b;
        }
        c.sink_bufs[s] = lp_xmalloc(need);
    }
    lp_progress prog;
    lp_progress_start(&prog, job->tensors->n, lp_checkpoint_total_bytes(job->ckpt), job->quiet);
    int rc = 0;
    for (int i = 0; i < job->tensors->n && rc == 0; i++) {
        lp_progress_update(&prog, i + 1, job->tensors->tensors[i].gguf_name, job->source_bytes_read);
        rc = convert_tensor(job, i, &c);
    }
    lp_progress_finish(&prog);
    for (int s = 0; s < job->n_sinks && rc == 0; s++) rc = job->sinks[s].finish(job->sinks[s].self);
    for (int s = 0; s < job->n_sinks; s++) free(c.sink_bufs[s]);
    free(c.sink_bufs);
    free(c.sink_raw);
    free(c.f32);
    job->seconds = lp_now() - t0;
    return rc;
}
