/* convert.c — the streaming conversion engine: source rows -> f32 -> sinks. */
#include "convert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "../core/progress.h"

#define CHUNK_ELEMS (8ll << 20) /* f32 elements converted per pool run (32 MiB) */

int lp_convert_role_present(void *source_ref, lp_role role, int layer) {
    const lp_source_ref *ref = source_ref;
    const lp_tensor_map *m = lp_arch_tensor(ref->hp->arch, role);
    if (!m) return 0;
    char name[256];
    lp_tensor_name_hf(m, layer, 0, name, sizeof name);
    return lp_checkpoint_find(ref->ckpt, name) != NULL;
}

/* Where row r of an output tensor comes from. */
typedef struct {
    const lp_st_tensor *src;
    int64_t src_row;
} row_source;

typedef struct {
    lp_convert_job *job;
    const lp_plan_tensor *t;
    const lp_tensor_map *map;
    int tensor_index;
    int64_t row0, n_rows, rows_per_task;
    float *f32;          /* n_rows * ne[0] */
    void **sink_bufs;    /* per sink: n_rows * row_bytes */
    int failed;          /* set by a task that hit bad data */
    char error[256];
} chunk_ctx;

/* llama: GGUF row 2*i + t of a head is HF row t*(hd/2) + i (FORMATS.md 4.4). */
static int64_t permuted_row(int64_t row, int head_dim) {
    int64_t head = row / head_dim, local = row % head_dim;
    return head * head_dim + (local % 2) * (head_dim / 2) + local / 2;
}

static const lp_st_tensor *find_source(const lp_convert_job *job, const lp_tensor_map *m, int layer, int expert) {
    char name[256];
    lp_tensor_name_hf(m, layer, expert, name, sizeof name);
    return lp_checkpoint_find(job->ckpt, name);
}

static int locate_row(const chunk_ctx *c, int64_t row, row_source *rs) {
    const lp_plan_tensor *t = c->t;
    int64_t rows_per_matrix = t->ne[1];
    int expert = (int)(row / rows_per_matrix);
    int64_t r = row % rows_per_matrix;
    rs->src = find_source(c->job, c->map, t->layer, expert);
    if (!rs->src) return -1;
    bool permute = c->job->hp->arch->permute_qk && (t->role == LP_T_ATTN_Q || t->role == LP_T_ATTN_K);
    rs->src_row = permute ? permuted_row(r, c->job->hp->head_dim) : r;
    return 0;
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
        if (locate_row(c, c->row0 + i, &rs) != 0 || lp_st_to_f32(rs.src, rs.src_row * ne0, ne0, dst) != 0) {
            c->failed = 1;
            snprintf(c->error, sizeof c->error, "%s", lp_errmsg());
            return;
        }
        for (int s = 0; s < c->job->n_sinks; s++) {
            lp_sink *sk = &c->job->sinks[s];
            size_t rb = sk->row_bytes(sk->self, c->tensor_index);
            sk->convert_row(sk->self, c->tensor_index, c->row0 + i, dst, (char *)c->sink_bufs[s] + (size_t)i * rb);
        }
    }
}

/* Every source tensor of an output tensor must exist with the expected shape. */
static int check_sources(const lp_convert_job *job, const lp_plan_tensor *t, const lp_tensor_map *m,
                         uint64_t *bytes) {
    int n_mats = m->src == LP_SRC_EXPERT_STACK ? (int)t->ne[2] : 1;
    if (m->src != LP_SRC_PLAIN && m->src != LP_SRC_EXPERT_STACK)
        return lp_fail("tensor '%s': source layout of %s checkpoints is not supported by the converter yet", t->gguf_name,
                       job->hp->arch->hf_class);
    for (int e = 0; e < n_mats; e++) {
        const lp_st_tensor *src = find_source(job, m, t->layer, e);
        char name[256];
        lp_tensor_name_hf(m, t->layer, e, name, sizeof name);
        if (!src) return lp_fail("checkpoint: tensor '%s' missing (needed for '%s')", name, t->gguf_name);
        int64_t want = t->ne[0] * t->ne[1] * (m->src == LP_SRC_EXPERT_STACK ? 1 : t->ne[2]);
        int64_t last_dim = src->n_dims > 0 ? src->shape[src->n_dims - 1] : 1;
        if (src->n_elements != want || last_dim != t->ne[0])
            return lp_fail("checkpoint: tensor '%s': shape does not match config.json (expected %lld x %lld)", name,
                           (long long)t->ne[1], (long long)t->ne[0]);
        *bytes += src->nbytes;
    }
    return 0;
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
    c->tensor_index = ti;
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
    }
    for (int s = 0; s < job->n_sinks; s++)
        if (job->sinks[s].end_tensor && job->sinks[s].end_tensor(job->sinks[s].self, ti) != 0) return -1;
    int n_mats = m->src == LP_SRC_EXPERT_STACK ? (int)t->ne[2] : 1;
    for (int e = 0; e < n_mats; e++) lp_checkpoint_release(job->ckpt, find_source(job, m, t->layer, e));
    job->source_bytes_read += src_bytes;
    return 0;
}

int lp_convert_run(lp_convert_job *job) {
    double t0 = lp_now();
    chunk_ctx c;
    memset(&c, 0, sizeof c);
    c.job = job;
    c.sink_bufs = lp_xcalloc((size_t)job->n_sinks, sizeof(void *));
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
    free(c.f32);
    job->seconds = lp_now() - t0;
    return rc;
}
