/* sink_gguf.c — GGUF output sink: declares every planned tensor up front (so the
 * header can be written first), then quantizes and streams rows in order. */
#include "sink_gguf.h"

#include <stdlib.h>

#include "../core/err.h"

typedef struct {
    lp_gguf_writer *w;
    const lp_plan *plan;
} gguf_sink;

static size_t gs_row_bytes(void *self, int t) {
    const gguf_sink *g = self;
    const lp_plan_tensor *pt = &g->plan->tensors[t];
    return lp_row_size(pt->type, pt->ne[0]);
}

static void gs_convert_row(void *self, int t, int64_t row, const float *src, void *dst) {
    const gguf_sink *g = self;
    const lp_plan_tensor *pt = &g->plan->tensors[t];
    (void)row;
    lp_qtype(pt->type)->from_float(src, dst, pt->ne[0]);
}

static lp_type gs_tensor_type(void *self, int t) {
    const gguf_sink *g = self;
    return g->plan->tensors[t].type;
}

static int gs_write_rows(void *self, int t, int64_t row0, int64_t n, const void *rows) {
    gguf_sink *g = self;
    (void)row0;
    return lp_gguf_writer_tensor_data(g->w, t, rows, (size_t)n * gs_row_bytes(self, t));
}

static int gs_finish(void *self) {
    gguf_sink *g = self;
    return lp_gguf_writer_finish(g->w);
}

static void gs_destroy(void *self) {
    gguf_sink *g = self;
    lp_gguf_writer_free(g->w);
    free(g);
}

int lp_sink_gguf_create(lp_sink *sink, const char *path, const lp_hparams *hp, const lp_plan *plan,
                        const lp_gguf_meta_args *meta) {
    gguf_sink *g = lp_xcalloc(1, sizeof *g);
    g->plan = plan;
    g->w = lp_gguf_writer_new();
    int rc = lp_gguf_meta_write(g->w, hp, meta);
    for (int i = 0; i < plan->n && rc == 0; i++) {
        const lp_plan_tensor *t = &plan->tensors[i];
        const lp_qtype_traits *tr = lp_qtype(t->type);
        if (!tr || !tr->from_float) {
            rc = lp_fail("%s: tensor '%s': type %d cannot be produced", path, t->gguf_name, (int)t->type);
            break;
        }
        if (lp_gguf_writer_add_tensor(g->w, t->gguf_name, t->type, t->n_dims, t->ne) < 0) rc = -1;
    }
    if (rc == 0) rc = lp_gguf_writer_begin(g->w, path);
    if (rc != 0) {
        gs_destroy(g);
        return -1;
    }
    *sink = (lp_sink){.self = g, .label = plan->recipe->name, .row_bytes = gs_row_bytes,
                      .convert_row = gs_convert_row, .write_rows = gs_write_rows, .finish = gs_finish,
                      .destroy = gs_destroy, .tensor_type = gs_tensor_type};
    return 0;
}
