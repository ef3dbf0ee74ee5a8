/* safetensors.c — safetensors shard parsing/validation, HF sharded checkpoints, f32 conversion, writer.
 *
 * Validation follows the reference Rust reader (huggingface/safetensors
 * tensor.rs): header size limit, JSON object, known dtype, byte span equal to
 * shape x element size, spans covering the data buffer contiguously from 0 to
 * the end of the file. Unlike it we accept any JSON whitespace after the object
 * (writers pad with spaces). A checkpoint is the union of its shards; tensors
 * are kept sorted by name so lookups are binary searches. */
#include "safetensors.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "../core/fileio.h"
#include "../quant/qtype.h"
#include "tensor_stream.h"

#define ST_MAX_HEADER 100000000ull /* MAX_HEADER_SIZE of the Rust reader */
#define ST_METADATA_KEY "__metadata__"
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

typedef void (*st_to_f32_fn)(const uint8_t *src, float *dst, int64_t n);

static void f32_to_f32(const uint8_t *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * 4); }

static void f16_to_f32(const uint8_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = lp_f16_to_f32(h);
    }
}

static void bf16_to_f32(const uint8_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = lp_bf16_to_f32(h);
    }
}

static void f64_to_f32(const uint8_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double d;
        memcpy(&d, src + 8 * i, 8);
        dst[i] = (float)d;
    }
}

/* dtypes as data: name in the header, bytes per element, f32 conversion for float types. */
static const struct {
    const char *name;
    size_t size;
    st_to_f32_fn to_f32;
} dtype_info[LP_ST_DTYPE_COUNT] = {
    [LP_ST_BOOL] = {"BOOL", 1, NULL},         [LP_ST_U8] = {"U8", 1, NULL},
    [LP_ST_I8] = {"I8", 1, NULL},             [LP_ST_I16] = {"I16", 2, NULL},
    [LP_ST_U16] = {"U16", 2, NULL},           [LP_ST_F16] = {"F16", 2, f16_to_f32},
    [LP_ST_BF16] = {"BF16", 2, bf16_to_f32},  [LP_ST_I32] = {"I32", 4, NULL},
    [LP_ST_U32] = {"U32", 4, NULL},           [LP_ST_F32] = {"F32", 4, f32_to_f32},
    [LP_ST_F64] = {"F64", 8, f64_to_f32},     [LP_ST_I64] = {"I64", 8, NULL},
    [LP_ST_U64] = {"U64", 8, NULL},           [LP_ST_F8_E4M3] = {"F8_E4M3", 1, NULL},
    [LP_ST_F8_E5M2] = {"F8_E5M2", 1, NULL},   [LP_ST_F8_E8M0] = {"F8_E8M0", 1, NULL},
};

const char *lp_st_dtype_name(lp_st_dtype d) { return (unsigned)d < LP_ST_DTYPE_COUNT ? dtype_info[d].name : "?"; }
size_t lp_st_dtype_size(lp_st_dtype d) { return (unsigned)d < LP_ST_DTYPE_COUNT ? dtype_info[d].size : 0; }

int lp_st_dtype_from_name(const char *s) {
    for (int d = 0; d < LP_ST_DTYPE_COUNT; d++)
        if (s && strcmp(dtype_info[d].name, s) == 0) return d;
    return -1;
}

/* Elements and bytes of a shape; -1 on overflow. */
static int shape_size(lp_st_dtype dtype, int n_dims, const int64_t *shape, int64_t *n_elements, uint64_t *nbytes) {
    int64_t n = 1;
    for (int d = 0; d < n_dims; d++) {
        if (shape[d] < 0) return -1;
        if (shape[d] != 0 && n > INT64_MAX / shape[d]) return -1;
        n *= shape[d];
    }
    if ((uint64_t)n > UINT64_MAX / dtype_info[dtype].size) return -1;
    *n_elements = n;
    *nbytes = (uint64_t)n * dtype_info[dtype].size;
    return 0;
}

/* ---------------- reader ---------------- */

typedef struct {
    lp_mmap map;
    json_t *metadata; /* the "__metadata__" object, or NULL */
} st_shard;

struct lp_checkpoint {
    int n_shards;
    st_shard *shards;
    lp_st_tensor *tensors;
    int64_t n_tensors, cap_tensors;
};

/* A tensor entry of one header, before it is known to fit the data buffer. */
typedef struct {
    lp_st_tensor t;
    uint64_t begin, end;
} st_entry;

static int json_nonneg_int(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_entry(const char *path, const char *name, const json_t *info, st_entry *e) {
    if (!json_is_object(info)) return lp_fail("%s: tensor '%s': entry is not a JSON object", path, name);
    const json_t *dtype = json_object_get(info, "dtype");
    const json_t *shape = json_object_get(info, "shape");
    const json_t *offsets = json_object_get(info, "data_offsets");
    if (!json_is_string(dtype)) return lp_fail("%s: tensor '%s': missing dtype", path, name);
    int d = lp_st_dtype_from_name(json_string_value(dtype));
    if (d < 0) return lp_fail("%s: tensor '%s': unknown dtype '%s'", path, name, json_string_value(dtype));
    e->t.dtype = (lp_st_dtype)d;
    if (!json_is_array(shape)) return lp_fail("%s: tensor '%s': missing shape", path, name);
    if (json_array_size(shape) > LP_ST_MAX_DIMS)
        return lp_fail("%s: tensor '%s': %zu dimensions (at most %d supported)", path, name, json_array_size(shape),
                       LP_ST_MAX_DIMS);
    e->t.n_dims = (int)json_array_size(shape);
    for (int i = 0; i < e->t.n_dims; i++) {
        uint64_t dim;
        if (json_nonneg_int(json_array_get(shape, (size_t)i), &dim) != 0)
            return lp_fail("%s: tensor '%s': shape[%d] is not a non-negative integer", path, name, i);
        e->t.shape[i] = (int64_t)dim;
    }
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        json_nonneg_int(json_array_get(offsets, 0), &e->begin) != 0 ||
        json_nonneg_int(json_array_get(offsets, 1), &e->end) != 0)
        return lp_fail("%s: tensor '%s': data_offsets must be two non-negative integers", path, name);
    if (e->end < e->begin)
        return lp_fail("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] end before begin", path, name, e->begin,
                       e->end);
    if (shape_size(e->t.dtype, e->t.n_dims, e->t.shape, &e->t.n_elements, &e->t.nbytes) != 0)
        return lp_fail("%s: tensor '%s': shape size overflows", path, name);
    if (e->t.nbytes != e->end - e->begin)
        return lp_fail("%s: tensor '%s': data_offsets span %" PRIu64 " bytes but %s shape needs %" PRIu64, path, name,
                       e->end - e->begin, dtype_info[d].name, e->t.nbytes);
    e->t.name = lp_xstrdup(name);
    return 0;
}

static int cmp_entry_offsets(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->t.name, y->t.name);
}

/* Every byte of the data buffer belongs to exactly one tensor (Rust reader's rule). */
static int check_coverage(const char *path, st_entry *e, size_t n, uint64_t data_size) {
    for (size_t i = 0; i < n; i++)
        if (e[i].end > data_size)
            return lp_fail("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] past end of file (data buffer is %" PRIu64
                           " bytes)", path, e[i].t.name, e[i].begin, e[i].end, data_size);
    qsort(e, n, sizeof *e, cmp_entry_offsets);
    uint64_t expected = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i].begin > expected)
            return lp_fail("%s: tensor '%s': hole in data buffer (bytes %" PRIu64 "..%" PRIu64 " belong to no tensor)", path,
                           e[i].t.name, expected, e[i].begin);
        if (e[i].begin < expected)
            return lp_fail("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] overlap the previous tensor", path,
                           e[i].t.name, e[i].begin, e[i].end);
        expected = e[i].end;
    }
    if (expected != data_size)
        return lp_fail("%s: %" PRIu64 " trailing bytes after the last tensor", path, data_size - expected);
    return 0;
}

static void checkpoint_append(lp_checkpoint *c, const lp_st_tensor *t) {
    if (c->n_tensors == c->cap_tensors) {
        c->cap_tensors = c->cap_tensors ? c->cap_tensors * 2 : 256;
        c->tensors = lp_xrealloc(c->tensors, (size_t)c->cap_tensors * sizeof *c->tensors);
    }
    c->tensors[c->n_tensors++] = *t;
}

/* Parse entries of a header object into e (n_out set even on failure, for cleanup). */
static int parse_entries(st_shard *s, json_t *header, st_entry *e, size_t *n_out) {
    const char *name;
    json_t *info;
    *n_out = 0;
    json_object_foreach(header, name, info) {
        if (strcmp(name, ST_METADATA_KEY) == 0) {
            /* Spec: string -> string map. Tolerated if odd; only string values are exposed. */
            if (json_is_object(info)) s->metadata = json_incref(info);
            continue;
        }
        memset(&e[*n_out], 0, sizeof e[*n_out]);
        if (parse_entry(s->map.path, name, info, &e[*n_out]) != 0) return -1;
        (*n_out)++;
    }
    return 0;
}

static json_t *load_header(const lp_mmap *m, uint64_t *header_len) {
    const char *path = m->path;
    if (m->size < 8)
        return lp_fail("%s: %" PRIu64 " bytes is too small for a safetensors file", path, m->size), NULL;
    uint64_t n;
    memcpy(&n, m->data, 8);
    if (n > ST_MAX_HEADER)
        return lp_fail("%s: header length %" PRIu64 " exceeds the %llu-byte limit", path, n, ST_MAX_HEADER), NULL;
    if (n > m->size - 8)
        return lp_fail("%s: header length %" PRIu64 " past end of file (file has %" PRIu64 " bytes)", path, n, m->size),
               NULL;
    if (n == 0 || m->data[8] != '{') return lp_fail("%s: header is not a JSON object", path), NULL;
    json_error_t err;
    json_t *header = json_loadb((const char *)m->data + 8, (size_t)n, JSON_REJECT_DUPLICATES, &err);
    if (!header) return lp_fail("%s: invalid header JSON: %s (at byte %d)", path, err.text, err.position), NULL;
    if (!json_is_object(header)) {
        json_decref(header);
        return lp_fail("%s: header is not a JSON object", path), NULL;
    }
    *header_len = n;
    return header;
}

/* Map one shard file, validate it, and append its tensors to the checkpoint. */
static int open_shard(lp_checkpoint *c, const char *path) {
    st_shard *s = &c->shards[c->n_shards];
    memset(s, 0, sizeof *s);
    if (lp_mmap_open(&s->map, path) != 0) return -1;
    c->n_shards++; /* from here on close() owns the map */
    uint64_t header_len;
    json_t *header = load_header(&s->map, &header_len);
    if (!header) return -1;
    size_t n = 0;
    st_entry *e = lp_xcalloc(json_object_size(header) + 1, sizeof *e);
    uint64_t data_size = s->map.size - 8 - header_len;
    int rc = parse_entries(s, header, e, &n);
    if (rc == 0) rc = check_coverage(s->map.path, e, n, data_size);
    const uint8_t *data = s->map.data + 8 + header_len;
    for (size_t i = 0; i < n; i++) {
        if (rc == 0) {
            e[i].t.data = data + e[i].begin;
            e[i].t.shard = c->n_shards - 1;
            checkpoint_append(c, &e[i].t);
        } else {
            free((char *)e[i].t.name);
        }
    }
    free(e);
    json_decref(header);
    return rc;
}

static int cmp_tensor_names(const void *a, const void *b) {
    return strcmp(((const lp_st_tensor *)a)->name, ((const lp_st_tensor *)b)->name);
}

static int sort_and_check_unique(lp_checkpoint *c) {
    qsort(c->tensors, (size_t)c->n_tensors, sizeof *c->tensors, cmp_tensor_names);
    for (int64_t i = 1; i < c->n_tensors; i++) {
        const lp_st_tensor *a = &c->tensors[i - 1], *b = &c->tensors[i];
        if (strcmp(a->name, b->name) == 0)
            return lp_fail("tensor '%s' appears in both %s and %s", a->name, c->shards[a->shard].map.path,
                           c->shards[b->shard].map.path);
    }
    return 0;
}

static int cmp_cstr(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Shard names come from a downloaded file: keep them inside the model directory. */
static bool shard_name_ok(const char *s) {
    if (!*s || s[0] == '/') return false;
    for (const char *p = s; (p = strstr(p, "..")) != NULL; p += 2)
        if ((p == s || p[-1] == '/') && (p[2] == 0 || p[2] == '/')) return false;
    return true;
}

/* Sorted unique shard file names from weight_map (as llama.cpp's converter does). */
static const char **index_shard_names(const char *index_path, json_t *weight_map, size_t *n_out) {
    const char **names = lp_xcalloc(json_object_size(weight_map) + 1, sizeof *names);
    size_t n = 0;
    const char *tensor;
    json_t *file;
    json_object_foreach(weight_map, tensor, file) {
        if (!json_is_string(file) || !shard_name_ok(json_string_value(file))) {
            lp_fail("%s: weight_map: tensor '%s': shard must be a relative file name inside the model directory",
                    index_path, tensor);
            free(names);
            return NULL;
        }
        names[n++] = json_string_value(file);
    }
    qsort(names, n, sizeof *names, cmp_cstr);
    size_t unique = 0;
    for (size_t i = 0; i < n; i++)
        if (unique == 0 || strcmp(names[unique - 1], names[i]) != 0) names[unique++] = names[i];
    *n_out = unique;
    return names;
}

/* Every tensor the index promises must be in the shard it names. */
static int check_weight_map(const lp_checkpoint *c, const char *index_path, json_t *weight_map) {
    const char *name;
    json_t *file;
    json_object_foreach(weight_map, name, file) {
        const lp_st_tensor *t = lp_checkpoint_find(c, name);
        const char *want = json_string_value(file);
        if (!t)
            return lp_fail("%s: tensor '%s': listed in weight_map (shard %s) but not found in it", index_path, name, want);
        const char *have = lp_path_basename(c->shards[t->shard].map.path);
        if (strcmp(lp_path_basename(want), have) != 0)
            return lp_fail("%s: tensor '%s': weight_map names shard %s but it is in %s", index_path, name, want, have);
    }
    return 0;
}

static char *parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return lp_xstrdup(".");
    if (slash == path) return lp_xstrdup("/");
    char *dir = lp_xstrdup(path);
    dir[slash - path] = 0;
    return dir;
}

static int open_sharded(lp_checkpoint *c, const char *index_path) {
    json_error_t err;
    json_t *index = json_load_file(index_path, JSON_REJECT_DUPLICATES, &err);
    if (!index) return lp_fail("%s: invalid JSON: %s (line %d)", index_path, err.text, err.line);
    json_t *weight_map = json_object_get(index, "weight_map");
    int rc = 0;
    if (!json_is_object(weight_map) || json_object_size(weight_map) == 0)
        rc = lp_fail("%s: missing or empty weight_map object", index_path);
    size_t n_names = 0;
    const char **names = rc == 0 ? index_shard_names(index_path, weight_map, &n_names) : NULL;
    if (rc == 0 && !names) rc = -1;
    char *dir = parent_dir(index_path);
    if (rc == 0) c->shards = lp_xcalloc(n_names, sizeof *c->shards);
    for (size_t i = 0; rc == 0 && i < n_names; i++) {
        char *shard_path = lp_path_join(dir, names[i]);
        if (!lp_path_exists(shard_path))
            rc = lp_fail("%s: shard %s named in weight_map does not exist", index_path, names[i]);
        else
            rc = open_shard(c, shard_path);
        free(shard_path);
    }
    if (rc == 0) rc = sort_and_check_unique(c);
    if (rc == 0) rc = check_weight_map(c, index_path, weight_map);
    free(dir);
    free(names);
    json_decref(index);
    return rc;
}

static int open_single(lp_checkpoint *c, const char *path) {
    c->shards = lp_xcalloc(1, sizeof *c->shards);
    if (open_shard(c, path) != 0) return -1;
    return sort_and_check_unique(c);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int open_path(lp_checkpoint *c, const char *path) {
    if (!lp_is_dir(path)) {
        if (!lp_path_exists(path)) return lp_fail("%s: no such file or directory", path);
        return ends_with(path, ".json") ? open_sharded(c, path) : open_single(c, path);
    }
    char *index = lp_path_join(path, ST_INDEX_NAME);
    char *single = lp_path_join(path, ST_SINGLE_NAME);
    int rc;
    if (lp_path_exists(index))
        rc = open_sharded(c, index);
    else if (lp_path_exists(single))
        rc = open_single(c, single);
    else
        rc = lp_fail("%s: no %s or %s in this directory", path, ST_SINGLE_NAME, ST_INDEX_NAME);
    free(index);
    free(single);
    return rc;
}

lp_checkpoint *lp_checkpoint_open(const char *path) {
    lp_checkpoint *c = lp_xcalloc(1, sizeof *c);
    if (open_path(c, path) != 0) {
        lp_checkpoint_close(c);
        return NULL;
    }
    return c;
}

void lp_checkpoint_close(lp_checkpoint *c) {
    if (!c) return;
    for (int64_t i = 0; i < c->n_tensors; i++) free((char *)c->tensors[i].name);
    for (int i = 0; i < c->n_shards; i++) {
        json_decref(c->shards[i].metadata);
        lp_mmap_close(&c->shards[i].map);
    }
    free(c->tensors);
    free(c->shards);
    free(c);
}

int64_t lp_checkpoint_n_tensors(const lp_checkpoint *c) { return c->n_tensors; }

const lp_st_tensor *lp_checkpoint_tensor_at(const lp_checkpoint *c, int64_t i) {
    return i >= 0 && i < c->n_tensors ? &c->tensors[i] : NULL;
}

const lp_st_tensor *lp_checkpoint_find(const lp_checkpoint *c, const char *name) {
    if (!name) return NULL;
    lp_st_tensor key = {.name = name};
    return bsearch(&key, c->tensors, (size_t)c->n_tensors, sizeof *c->tensors, cmp_tensor_names);
}

int lp_checkpoint_n_shards(const lp_checkpoint *c) { return c->n_shards; }

const char *lp_checkpoint_shard_path(const lp_checkpoint *c, int shard) {
    return shard >= 0 && shard < c->n_shards ? c->shards[shard].map.path : NULL;
}

uint64_t lp_checkpoint_total_bytes(const lp_checkpoint *c) {
    uint64_t total = 0;
    for (int64_t i = 0; i < c->n_tensors; i++) total += c->tensors[i].nbytes;
    return total;
}

const char *lp_checkpoint_metadata(const lp_checkpoint *c, int shard, const char *key) {
    if (shard < 0 || shard >= c->n_shards || !c->shards[shard].metadata) return NULL;
    return json_string_value(json_object_get(c->shards[shard].metadata, key));
}

void lp_checkpoint_release(const lp_checkpoint *c, const lp_st_tensor *t) {
    const lp_mmap *m = &c->shards[t->shard].map;
    lp_mmap_release(m, (uint64_t)((const uint8_t *)t->data - m->data), t->nbytes);
}

int lp_st_to_f32(const lp_st_tensor *t, int64_t start, int64_t n, float *dst) {
    st_to_f32_fn convert = dtype_info[t->dtype].to_f32;
    if (!convert) return lp_fail("tensor '%s': dtype %s is not a float type", t->name, dtype_info[t->dtype].name);
    if (start < 0 || n < 0 || start > t->n_elements || n > t->n_elements - start)
        return lp_fail("tensor '%s': elements [%" PRId64 ", +%" PRId64 ") out of range (%" PRId64 " elements)", t->name,
                       start, n, t->n_elements);
    convert((const uint8_t *)t->data + (size_t)start * dtype_info[t->dtype].size, dst, n);
    return 0;
}

/* ---------------- writer ---------------- */

typedef struct {
    lp_st_dtype dtype;
    int n_dims;
    int64_t shape[LP_ST_MAX_DIMS];
} st_wtensor;

struct lp_st_writer {
    json_t *metadata; /* insertion-ordered string map */
    st_wtensor *tensors;
    char **names;
    uint64_t *nbytes;
    int n_tensors, cap_tensors;
    bool begun;
    lp_tensor_stream stream;
};

lp_st_writer *lp_st_writer_new(void) {
    lp_st_writer *w = lp_xcalloc(1, sizeof *w);
    w->metadata = json_object();
    return w;
}

void lp_st_writer_free(lp_st_writer *w) {
    if (!w) return;
    lp_tensor_stream_abort(&w->stream);
    json_decref(w->metadata);
    for (int i = 0; i < w->n_tensors; i++) free(w->names[i]);
    free(w->names);
    free(w->tensors);
    free(w->nbytes);
    free(w);
}

/* The header is JSON: names and metadata must be valid UTF-8 (jansson refuses anything else). */
static bool utf8_ok(const char *s) {
    json_t *probe = json_string(s);
    json_decref(probe);
    return probe != NULL;
}

void lp_st_writer_set_metadata(lp_st_writer *w, const char *key, const char *value) {
    /* After begin the header is already out; invalid text would make begin fail anyway, so
     * both are dropped here (the setter cannot report errors). */
    if (w->begun || !key || !value || !utf8_ok(key) || !utf8_ok(value)) return;
    json_object_set_new(w->metadata, key, json_string(value));
}

int lp_st_writer_add(lp_st_writer *w, const char *name, lp_st_dtype dtype, int n_dims, const int64_t *shape) {
    if (w->begun) return lp_fail("safetensors writer: tensor '%s': added after the header was written", name);
    if (!name || !*name || strcmp(name, ST_METADATA_KEY) == 0)
        return lp_fail("safetensors writer: invalid tensor name '%s'", name ? name : "");
    if ((unsigned)dtype >= LP_ST_DTYPE_COUNT) return lp_fail("safetensors writer: tensor '%s': bad dtype %d", name, dtype);
    if (n_dims < 0 || n_dims > LP_ST_MAX_DIMS)
        return lp_fail("safetensors writer: tensor '%s': %d dimensions (0..%d allowed)", name, n_dims, LP_ST_MAX_DIMS);
    if (!utf8_ok(name)) return lp_fail("safetensors writer: tensor name is not valid UTF-8");
    for (int i = 0; i < w->n_tensors; i++)
        if (strcmp(w->names[i], name) == 0) return lp_fail("safetensors writer: tensor '%s': duplicate name", name);
    st_wtensor t = {.dtype = dtype, .n_dims = n_dims};
    if (n_dims) memcpy(t.shape, shape, (size_t)n_dims * sizeof *shape);
    int64_t n_elements;
    uint64_t nbytes;
    if (shape_size(dtype, n_dims, t.shape, &n_elements, &nbytes) != 0)
        return lp_fail("safetensors writer: tensor '%s': negative or overflowing shape", name);
    if (w->n_tensors == w->cap_tensors) {
        w->cap_tensors = w->cap_tensors ? w->cap_tensors * 2 : 64;
        w->tensors = lp_xrealloc(w->tensors, (size_t)w->cap_tensors * sizeof *w->tensors);
        w->names = lp_xrealloc(w->names, (size_t)w->cap_tensors * sizeof *w->names);
        w->nbytes = lp_xrealloc(w->nbytes, (size_t)w->cap_tensors * sizeof *w->nbytes);
    }
    w->tensors[w->n_tensors] = t;
    w->names[w->n_tensors] = lp_xstrdup(name);
    w->nbytes[w->n_tensors] = nbytes;
    return w->n_tensors++;
}

/* Compact JSON like serde_json: "__metadata__" first, then tensors in declaration (= data) order. */
static char *build_header_json(const lp_st_writer *w) {
    json_t *header = json_object();
    if (json_object_size(w->metadata) > 0) json_object_set(header, ST_METADATA_KEY, w->metadata);
    uint64_t offset = 0;
    for (int i = 0; i < w->n_tensors; i++) {
        const st_wtensor *t = &w->tensors[i];
        json_t *shape = json_array();
        for (int d = 0; d < t->n_dims; d++) json_array_append_new(shape, json_integer(t->shape[d]));
        json_t *info = json_object();
        json_object_set_new(info, "dtype", json_string(dtype_info[t->dtype].name));
        json_object_set_new(info, "shape", shape);
        json_object_set_new(info, "data_offsets", json_pack("[II]", (json_int_t)offset, (json_int_t)(offset + w->nbytes[i])));
        if (json_object_set_new(header, w->names[i], info) != 0) {
            json_decref(header);
            return NULL;
        }
        offset += w->nbytes[i];
    }
    char *text = json_dumps(header, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(header);
    return text;
}

int lp_st_writer_begin(lp_st_writer *w, const char *path) {
    if (w->begun) return lp_fail("%s: safetensors writer: begin called twice", path);
    char *json = build_header_json(w);
    if (!json) return lp_fail("%s: cannot encode the safetensors header", path);
    /* Pad with spaces so the data buffer starts 8-byte aligned, as the Rust writer does. */
    uint64_t len = strlen(json);
    uint64_t padded = (len + 7) / 8 * 8;
    lp_outfile out;
    if (lp_outfile_open(&out, path) != 0) {
        free(json);
        return -1;
    }
    int rc = lp_outfile_write(&out, &padded, 8);
    if (rc == 0) rc = lp_outfile_write(&out, json, (size_t)len);
    if (rc == 0) rc = lp_outfile_write(&out, "       ", (size_t)(padded - len));
    free(json);
    if (rc != 0) {
        lp_outfile_abort(&out);
        return -1;
    }
    w->begun = true;
    lp_tensor_stream_init(&w->stream, &out, w->n_tensors, w->nbytes, (const char *const *)w->names, 1);
    return 0;
}

int lp_st_writer_data(lp_st_writer *w, int idx, const void *data, size_t n) {
    return lp_tensor_stream_write(&w->stream, idx, data, n);
}

int lp_st_writer_finish(lp_st_writer *w) { return lp_tensor_stream_finish(&w->stream); }
