/* sink_mlx.c — MLX output sink: affine-quantizes rows on the pool threads
 * (FORMATS.md 8.1-8.3) and streams them into safetensors shards; writes the
 * index, config.json and the copied tokenizer files on finish.
 *
 * Streaming: a quantized module is declared as P.weight (U32), P.scales, P.biases
 * (model dtype), in that order. Weight rows go to the file as the engine hands
 * them over; the per-group scales and biases of the current tensor are small and
 * collect in a side buffer (each row writes its own slot, so pool threads never
 * share bytes) that is written after the weight. Rows that arrive in GGUF order
 * (llama q/k, permuted by the engine) are collected whole and written back in HF
 * order at the end of the tensor. */
#include "sink_mlx.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/err.h"
#include "../core/fileio.h"
#include "../quant/mlx_affine.h"
#include "../quant/qtype.h"

/* Files mlx_lm.convert leaves beside the weights, copied when the source has them. */
static const char *const copied_files[] = {
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json", "generation_config.json", NULL,
};

typedef struct {
    char *dir, *source_dir;
    const lp_hparams *hp;
    const lp_mlx_plan *plan;
    int n_shards;
    int *shard_of;      /* per tensor */
    int *first_index;   /* per tensor: writer index of its first stored tensor in its shard */
    int open_shard;     /* shard of the open writer; -1 before the first */
    lp_st_writer *w;
    char **committed;   /* shard paths already renamed into place (removed if the sink fails) */
    int n_committed;
    uint8_t *side;      /* scales [rows][groups] then biases [rows][groups], model dtype */
    uint8_t *whole;     /* permuted tensors: stored rows in HF order */
    bool finished;
} mlx_sink;

char *lp_mlx_shard_name(int shard, int n_shards) {
    if (n_shards == 1) return lp_xstrdup("model.safetensors");
    return lp_xasprintf("model-%05d-of-%05d.safetensors", shard + 1, n_shards);
}

int lp_mlx_shard_layout(const lp_mlx_plan *p, uint64_t max_shard_bytes, int *shard_of) {
    int n = 0;
    uint64_t in_shard = 0;
    for (int i = 0; i < p->n; i++) {
        shard_of[i] = -1;
        if (p->tensors[i].kind == LP_MLX_DROP) continue;
        uint64_t bytes = lp_mlx_tensor_bytes(p, i);
        if (n == 0 || in_shard + bytes > max_shard_bytes) n++, in_shard = 0;
        shard_of[i] = n - 1;
        in_shard += bytes;
    }
    return n;
}

/* ---- sizes ---- */

static const lp_mlx_tensor *tensor(const mlx_sink *s, int t) { return &s->plan->tensors[t]; }

static int64_t row_len(const lp_mlx_tensor *t) { return t->shape[t->n_dims - 1]; }

static int64_t n_rows(const lp_mlx_tensor *t) {
    int64_t rows = 1;
    for (int d = 0; d + 1 < t->n_dims; d++) rows *= t->shape[d];
    return rows;
}

/* Bytes of one stored row: U32 codes for a quantized module, floats otherwise. */
static size_t stored_row_bytes(const mlx_sink *s, const lp_mlx_tensor *t) {
    if (t->kind == LP_MLX_QUANT) return (size_t)lp_mlx_row_words(row_len(t), t->bits) * 4;
    if (t->kind == LP_MLX_FLOAT) return (size_t)row_len(t) * lp_st_dtype_size(s->plan->dtype);
    return 0;
}

/* Bytes of the scales (or of the biases) of a quantized tensor. */
static size_t side_half_bytes(const mlx_sink *s, const lp_mlx_tensor *t) {
    if (t->kind != LP_MLX_QUANT) return 0;
    return (size_t)(n_rows(t) * (row_len(t) / t->group)) * lp_st_dtype_size(s->plan->dtype);
}

static size_t ms_row_bytes(void *self, int t) {
    const mlx_sink *s = self;
    const lp_mlx_tensor *mt = tensor(s, t);
    return mt->permuted ? 0 : stored_row_bytes(s, mt);
}

/* ---- row conversion (pool threads) ---- */

static void store_float(lp_st_dtype dtype, float v, uint8_t *dst) {
    if (dtype == LP_ST_BF16) {
        uint16_t h = lp_f32_to_bf16(v);
        memcpy(dst, &h, 2);
    } else if (dtype == LP_ST_F16) {
        uint16_t h = lp_f32_to_f16(v);
        memcpy(dst, &h, 2);
    } else {
        memcpy(dst, &v, 4);
    }
}

/* llama: GGUF row r of a head holds HF row (r%2)*(hd/2) + r/2 of it (FORMATS.md 4.4),
 * which is where the engine read it from. */
static int64_t hf_row_of(int64_t row, int head_dim) {
    int64_t head = row / head_dim, local = row % head_dim;
    return head * head_dim + (local % 2) * (head_dim / 2) + local / 2;
}

static void ms_convert_row(void *self, int t, int64_t row, const float *src, void *dst) {
    mlx_sink *s = self;
    const lp_mlx_tensor *mt = tensor(s, t);
    if (mt->kind == LP_MLX_DROP) return;
    const lp_st_dtype dtype = s->plan->dtype;
    const size_t dsize = lp_st_dtype_size(dtype);
    const int64_t n = row_len(mt);
    if (mt->permuted) {
        row = hf_row_of(row, s->hp->head_dim);
        dst = s->whole + (size_t)row * stored_row_bytes(s, mt);
    }
    uint8_t *out = dst;
    if (mt->kind == LP_MLX_FLOAT) {
        for (int64_t i = 0; i < n; i++) store_float(dtype, src[i], out + (size_t)i * dsize);
        return;
    }
    /* group by group: a group is a whole number of words, so its codes start word-aligned */
    const int64_t groups = n / mt->group;
    const size_t group_bytes = (size_t)mt->group * (size_t)mt->bits / 8, half = side_half_bytes(s, mt);
    uint8_t *scales = s->side + (size_t)(row * groups) * dsize, *biases = scales + half;
    for (int64_t g = 0; g < groups; g++) {
        float scale, bias;
        lp_mlx_quantize_row(src + g * mt->group, mt->group, mt->bits, mt->group, (uint32_t *)(out + g * group_bytes),
                            &scale, &bias);
        store_float(dtype, scale, scales + (size_t)g * dsize);
        store_float(dtype, bias, biases + (size_t)g * dsize);
    }
}

/* ---- shards ---- */

static int declare(lp_st_writer *w, const char *name, lp_st_dtype dtype, const lp_mlx_tensor *t, int64_t last) {
    int64_t shape[3];
    memcpy(shape, t->shape, sizeof shape);
    shape[t->n_dims - 1] = last;
    return lp_st_writer_add(w, name, dtype, t->n_dims, shape);
}

static int declare_tensor(mlx_sink *s, int t) {
    const lp_mlx_tensor *mt = tensor(s, t);
    const lp_st_dtype dtype = s->plan->dtype;
    if (mt->kind == LP_MLX_FLOAT) {
        s->first_index[t] = declare(s->w, mt->name, dtype, mt, row_len(mt));
        return s->first_index[t] < 0 ? -1 : 0;
    }
    char name[200];
    s->first_index[t] = declare(s->w, mt->name, LP_ST_U32, mt, lp_mlx_row_words(row_len(mt), mt->bits));
    snprintf(name, sizeof name, "%s.scales", mt->module);
    int rc = declare(s->w, name, dtype, mt, row_len(mt) / mt->group);
    snprintf(name, sizeof name, "%s.biases", mt->module);
    if (rc >= 0) rc = declare(s->w, name, dtype, mt, row_len(mt) / mt->group);
    return s->first_index[t] < 0 || rc < 0 ? -1 : 0;
}

static int commit_open_shard(mlx_sink *s) {
    if (!s->w) return 0;
    int rc = lp_st_writer_finish(s->w);
    lp_st_writer_free(s->w);
    s->w = NULL;
    if (rc != 0) return -1;
    char *name = lp_mlx_shard_name(s->open_shard, s->n_shards);
    s->committed[s->n_committed++] = lp_path_join(s->dir, name);
    free(name);
    return 0;
}

/* Make the shard holding tensor t the open one (shards are written in order). */
static int open_shard_of(mlx_sink *s, int t) {
    const int shard = s->shard_of[t];
    if (shard == s->open_shard) return 0;
    if (commit_open_shard(s) != 0) return -1;
    s->open_shard = shard;
    s->w = lp_st_writer_new();
    lp_st_writer_set_metadata(s->w, "format", "mlx");
    for (int i = 0; i < s->plan->n; i++)
        if (s->shard_of[i] == shard && declare_tensor(s, i) != 0) return -1;
    char *name = lp_mlx_shard_name(shard, s->n_shards);
    char *path = lp_path_join(s->dir, name);
    int rc = lp_st_writer_begin(s->w, path);
    free(path);
    free(name);
    return rc;
}

static int ms_write_rows(void *self, int t, int64_t row0, int64_t n, const void *rows) {
    mlx_sink *s = self;
    (void)row0;
    const size_t rb = ms_row_bytes(self, t);
    if (rb == 0) return 0;
    if (open_shard_of(s, t) != 0) return -1;
    return lp_st_writer_data(s->w, s->first_index[t], rows, (size_t)n * rb);
}

static int ms_end_tensor(void *self, int t) {
    mlx_sink *s = self;
    const lp_mlx_tensor *mt = tensor(s, t);
    if (mt->kind == LP_MLX_DROP) return 0;
    if (open_shard_of(s, t) != 0) return -1;
    int idx = s->first_index[t];
    if (mt->permuted && lp_st_writer_data(s->w, idx, s->whole, (size_t)n_rows(mt) * stored_row_bytes(s, mt)) != 0)
        return -1;
    if (mt->kind != LP_MLX_QUANT) return 0;
    const size_t half = side_half_bytes(s, mt);
    if (lp_st_writer_data(s->w, idx + 1, s->side, half) != 0) return -1;
    return lp_st_writer_data(s->w, idx + 2, s->side + half, half);
}

/* ---- directory files ---- */

/* Fewest significant digits (1..17) that print every real of j so that it reads back
 * as the same double: config values then keep their source spelling (1e-06, not
 * 9.9999999999999995e-07) and stay exact. */
static int real_digits(const json_t *j) {
    int most = 1;
    if (json_is_real(j)) {
        double v = json_real_value(j);
        char buf[40];
        for (most = 1; most < 17; most++) {
            snprintf(buf, sizeof buf, "%.*g", most, v);
            if (strtod(buf, NULL) == v) break;
        }
    } else if (json_is_object(j)) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v) {
            int d = real_digits(v);
            most = d > most ? d : most;
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) {
            int d = real_digits(v);
            most = d > most ? d : most;
        }
    }
    return most;
}

static int write_json(const char *path, json_t *j) {
    char *text = json_dumps(j, JSON_INDENT(4) | JSON_SORT_KEYS | JSON_REAL_PRECISION(real_digits(j)));
    if (!text) return lp_fail("%s: cannot encode JSON", path);
    int rc = lp_write_file_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

static int write_index(const mlx_sink *s) {
    json_t *map = json_object();
    for (int i = 0; i < s->plan->n; i++) {
        const lp_mlx_tensor *t = tensor(s, i);
        if (t->kind == LP_MLX_DROP) continue;
        char *file = lp_mlx_shard_name(s->shard_of[i], s->n_shards);
        json_object_set_new(map, t->name, json_string(file));
        if (t->kind == LP_MLX_QUANT) {
            char name[200];
            snprintf(name, sizeof name, "%s.scales", t->module);
            json_object_set_new(map, name, json_string(file));
            snprintf(name, sizeof name, "%s.biases", t->module);
            json_object_set_new(map, name, json_string(file));
        }
        free(file);
    }
    json_t *index = json_pack("{s:{s:I, s:I}, s:o}", "metadata", "total_size", (json_int_t)lp_mlx_plan_bytes(s->plan),
                              "total_parameters", (json_int_t)lp_mlx_plan_params(s->plan), "weight_map", map);
    char *path = lp_path_join(s->dir, "model.safetensors.index.json");
    int rc = write_json(path, index);
    free(path);
    json_decref(index);
    return rc;
}

/* transformers >= 5 spellings that some mlx-lm model classes do not read yet (e.g.
 * qwen3_moe's ModelArgs requires num_experts and a top-level rope_theta): the older
 * key is added, with the same value, when the config lacks it. */
static const struct {
    const char *key, *parent, *from;
} config_aliases[] = {
    {"num_experts", NULL, "num_local_experts"},
    {"rope_theta", "rope_parameters", "rope_theta"},
};

static void add_aliases(json_t *cfg) {
    for (size_t i = 0; i < sizeof config_aliases / sizeof *config_aliases; i++) {
        if (json_object_get(cfg, config_aliases[i].key)) continue;
        const json_t *holder = config_aliases[i].parent ? json_object_get(cfg, config_aliases[i].parent) : cfg;
        json_t *v = json_object_get(holder, config_aliases[i].from);
        if (v) json_object_set(cfg, config_aliases[i].key, v);
    }
}

/* The source config plus the quantization sections (mlx-lm save_config: no
 * _name_or_path / vision_config, keys sorted, indent 4). */
static int write_config(const mlx_sink *s) {
    char *src = lp_path_join(s->source_dir, "config.json");
    json_error_t jerr;
    json_t *cfg = json_load_file(src, 0, &jerr);
    int rc = 0;
    if (!json_is_object(cfg)) {
        rc = lp_fail("%s: line %d: %s", src, jerr.line, cfg ? "not a JSON object" : jerr.text);
    } else {
        json_object_del(cfg, "_name_or_path");
        json_object_del(cfg, "vision_config");
        add_aliases(cfg);
        json_t *q = lp_mlx_quant_config(s->plan);
        json_object_set_new(cfg, "quantization_config", json_deep_copy(q));
        json_object_set_new(cfg, "quantization", q);
        char *dst = lp_path_join(s->dir, "config.json");
        rc = write_json(dst, cfg);
        free(dst);
    }
    json_decref(cfg);
    free(src);
    return rc;
}

static int copy_side_files(const mlx_sink *s) {
    for (int i = 0; copied_files[i]; i++) {
        char *src = lp_path_join(s->source_dir, copied_files[i]), *dst = lp_path_join(s->dir, copied_files[i]);
        int rc = lp_path_exists(src) ? lp_copy_file(src, dst) : 0;
        free(src);
        free(dst);
        if (rc != 0) return -1;
    }
    return 0;
}

/* Weight files of an earlier run into the same directory (another shard count) would
 * be picked up by loaders that glob model*.safetensors: remove them. */
static int remove_stale_shards(const mlx_sink *s) {
    DIR *d = opendir(s->dir);
    if (!d) return lp_fail("%s: cannot list the directory", s->dir);
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && rc == 0) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "model", 5) != 0 || len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0)
            continue;
        bool current = false;
        for (int i = 0; i < s->n_shards && !current; i++) {
            char *name = lp_mlx_shard_name(i, s->n_shards);
            current = strcmp(name, e->d_name) == 0;
            free(name);
        }
        char *path = lp_path_join(s->dir, e->d_name);
        if (!current && unlink(path) != 0) rc = lp_fail("%s: cannot remove a stale weight file", path);
        free(path);
    }
    closedir(d);
    return rc;
}

static int ms_finish(void *self) {
    mlx_sink *s = self;
    if (commit_open_shard(s) != 0) return -1;
    if (s->n_committed != s->n_shards)
        return lp_fail("%s: only %d of %d weight files were written", s->dir, s->n_committed, s->n_shards);
    if (write_index(s) != 0 || write_config(s) != 0 || copy_side_files(s) != 0 || remove_stale_shards(s) != 0)
        return -1;
    s->finished = true;
    return 0;
}

static void ms_destroy(void *self) {
    mlx_sink *s = self;
    lp_st_writer_free(s->w); /* aborts an unfinished shard */
    for (int i = 0; i < s->n_committed; i++) {
        if (!s->finished) unlink(s->committed[i]);
        free(s->committed[i]);
    }
    free(s->committed);
    free(s->shard_of);
    free(s->first_index);
    free(s->side);
    free(s->whole);
    free(s->dir);
    free(s->source_dir);
    free(s);
}

/* Side buffer for the largest quantized tensor, whole buffer for the largest permuted one. */
static void alloc_buffers(mlx_sink *s) {
    size_t side = 0, whole = 0;
    for (int i = 0; i < s->plan->n; i++) {
        const lp_mlx_tensor *t = tensor(s, i);
        size_t sb = 2 * side_half_bytes(s, t), wb = t->permuted ? (size_t)n_rows(t) * stored_row_bytes(s, t) : 0;
        if (sb > side) side = sb;
        if (wb > whole) whole = wb;
    }
    s->side = side ? lp_xmalloc(side) : NULL;
    s->whole = whole ? lp_xmalloc(whole) : NULL;
}

int lp_sink_mlx_create(lp_sink *sink, const lp_mlx_sink_args *a) {
    mlx_sink *s = lp_xcalloc(1, sizeof *s);
    s->dir = lp_xstrdup(a->dir);
    s->source_dir = lp_xstrdup(a->source_dir);
    s->hp = a->hp;
    s->plan = a->plan;
    s->open_shard = -1;
    const int n = a->plan->n ? a->plan->n : 1;
    s->shard_of = lp_xcalloc((size_t)n, sizeof *s->shard_of);
    s->first_index = lp_xcalloc((size_t)n, sizeof *s->first_index);
    s->n_shards = lp_mlx_shard_layout(a->plan, a->max_shard_bytes ? a->max_shard_bytes : LP_MLX_MAX_SHARD_BYTES,
                                      s->shard_of);
    s->committed = lp_xcalloc((size_t)(s->n_shards ? s->n_shards : 1), sizeof *s->committed);
    if (s->n_shards == 0) {
        ms_destroy(s);
        return lp_fail("%s: the MLX plan stores no tensor", a->dir);
    }
    alloc_buffers(s);
    *sink = (lp_sink){.self = s, .label = a->plan->recipe->name, .row_bytes = ms_row_bytes,
                      .convert_row = ms_convert_row, .write_rows = ms_write_rows, .end_tensor = ms_end_tensor,
                      .finish = ms_finish, .destroy = ms_destroy};
    return 0;
}
