/* inspect.c — GGUF listing and single-tensor dequantization. */
#include "inspect.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "../core/fileio.h"
#include "../formats/gguf.h"

static void print_kv(const lp_gguf *g, int64_t i) {
    const char *key = lp_gguf_kv_key(g, i);
    lp_gguf_vtype t = lp_gguf_kv_type(g, i);
    printf("  %-48s ", key);
    uint32_t u;
    float f;
    bool b;
    int64_t v;
    if (t == LP_GGUF_STRING) {
        const char *s = lp_gguf_get_str(g, key);
        printf("\"%.60s%s\"\n", s, strlen(s) > 60 ? "..." : "");
    } else if (t == LP_GGUF_ARRAY) {
        lp_gguf_vtype et;
        uint64_t n;
        lp_gguf_get_arr(g, key, &et, &n);
        printf("[%" PRIu64 " elements of type %d]\n", n, (int)et);
    } else if (t == LP_GGUF_F32 && lp_gguf_get_f32(g, key, &f) == 0) {
        printf("%g\n", (double)f);
    } else if (t == LP_GGUF_BOOL && lp_gguf_get_bool(g, key, &b) == 0) {
        printf("%s\n", b ? "true" : "false");
    } else if (t == LP_GGUF_U32 && lp_gguf_get_u32(g, key, &u) == 0) {
        printf("%u\n", u);
    } else if (lp_gguf_get_i64(g, key, &v) == 0) {
        printf("%" PRId64 "\n", v);
    } else {
        printf("(type %d)\n", (int)t);
    }
}

int lp_inspect_gguf(const char *path) {
    lp_gguf *g = lp_gguf_open(path);
    if (!g) return -1;
    printf("%s: %" PRId64 " key/values, %" PRId64 " tensors, alignment %u\n", path, lp_gguf_n_kv(g),
           lp_gguf_n_tensors(g), lp_gguf_alignment(g));
    for (int64_t i = 0; i < lp_gguf_n_kv(g); i++) print_kv(g, i);
    for (int64_t i = 0; i < lp_gguf_n_tensors(g); i++) {
        const lp_gguf_tensor *t = lp_gguf_tensor_at(g, i);
        const lp_qtype_traits *tr = lp_qtype(t->type);
        printf("  %-40s %-6s [%" PRId64 ", %" PRId64 ", %" PRId64 "] %" PRIu64 " bytes\n", t->name,
               tr ? tr->name : "?", t->ne[0], t->ne[1], t->ne[2], t->nbytes);
    }
    lp_gguf_close(g);
    return 0;
}

int lp_dequantize_tensor(const char *gguf_path, const char *tensor, const char *out_path) {
    lp_gguf *g = lp_gguf_open(gguf_path);
    if (!g) return -1;
    int rc = -1;
    const lp_gguf_tensor *t = lp_gguf_find_tensor(g, tensor);
    const lp_qtype_traits *tr = t ? lp_qtype(t->type) : NULL;
    if (!t) {
        lp_fail("%s: no tensor named '%s'", gguf_path, tensor);
    } else if (!tr || !tr->to_float) {
        lp_fail("%s: tensor '%s': type %d cannot be dequantized", gguf_path, tensor, (int)t->type);
    } else {
        int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        size_t row_bytes = lp_row_size(t->type, t->ne[0]);
        float *out = lp_xmalloc(sizeof(float) * (size_t)(rows * t->ne[0]));
        for (int64_t r = 0; r < rows; r++)
            tr->to_float((const char *)t->data + (size_t)r * row_bytes, out + r * t->ne[0], t->ne[0]);
        rc = lp_write_file_atomic(out_path, out, sizeof(float) * (size_t)(rows * t->ne[0]));
        free(out);
    }
    lp_gguf_close(g);
    return rc;
}
