/* gguf.c — GGUF v2/v3 reader (mmap + full validation) and streaming, deterministic writer.
 *
 * The reader walks the file once with a bounds-checked cursor; every count is
 * checked against the bytes left in the file before anything is allocated from
 * it, so a hostile header can neither crash nor balloon memory. Keys and tensor
 * names are looked up through a small open-addressing hash index, which also
 * detects duplicates in linear time. */
#include "gguf.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../core/err.h"
#include "../core/fileio.h"
#include "tensor_stream.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "GGUF values are read and written in host byte order");
_Static_assert(sizeof(bool) == 1, "GGUF BOOL arrays are packed C bool arrays");

#define GGUF_MAGIC "GGUF"
#define GGUF_VERSION 3
#define GGUF_KEY_ALIGNMENT "general.alignment"
#define GGUF_N_VTYPES 13

/* Value types as data: payload size of scalars, integer-ness for the lenient integer getters. */
static const struct {
    const char *name;
    uint8_t size; /* bytes of a scalar; 0 for STRING and ARRAY */
    bool is_int;
    bool is_signed;
} vtype_info[GGUF_N_VTYPES] = {
    [LP_GGUF_U8] = {"UINT8", 1, true, false},    [LP_GGUF_I8] = {"INT8", 1, true, true},
    [LP_GGUF_U16] = {"UINT16", 2, true, false},  [LP_GGUF_I16] = {"INT16", 2, true, true},
    [LP_GGUF_U32] = {"UINT32", 4, true, false},  [LP_GGUF_I32] = {"INT32", 4, true, true},
    [LP_GGUF_F32] = {"FLOAT32", 4, false, false}, [LP_GGUF_BOOL] = {"BOOL", 1, false, false},
    [LP_GGUF_STRING] = {"STRING", 0, false, false}, [LP_GGUF_ARRAY] = {"ARRAY", 0, false, false},
    [LP_GGUF_U64] = {"UINT64", 8, true, false},  [LP_GGUF_I64] = {"INT64", 8, true, true},
    [LP_GGUF_F64] = {"FLOAT64", 8, false, false},
};

static bool vtype_known(uint32_t t) { return t < GGUF_N_VTYPES; }
static bool vtype_scalar(uint32_t t) { return vtype_known(t) && vtype_info[t].size > 0; }

const char *lp_gguf_vtype_name(lp_gguf_vtype t) { return vtype_known((uint32_t)t) ? vtype_info[t].name : "?"; }

static uint64_t pad_to(uint64_t x, uint64_t align) { return (x + align - 1) / align * align; }
static bool is_pow2(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

/* Bytes of a tensor from its type traits and shape; -1 with *why set if the shape does not fit the type. */
static int tensor_nbytes(lp_type type, const int64_t ne[LP_GGUF_MAX_DIMS], uint64_t *out, const char **why) {
    /* ids >= LP_TYPE_COUNT are our in-memory MLX block types, never valid in a file */
    const lp_qtype_traits *tr = (unsigned)type < LP_TYPE_COUNT ? lp_qtype(type) : NULL;
    if (!tr || tr->block_size <= 0) return *why = "unknown or unsupported type", -1;
    for (int d = 0; d < LP_GGUF_MAX_DIMS; d++)
        if (ne[d] < 0) return *why = "negative dimension", -1;
    if (ne[0] % tr->block_size != 0) return *why = "ne[0] is not a multiple of the type's block size", -1;
    uint64_t total = (uint64_t)(ne[0] / tr->block_size);
    if (total != 0 && tr->block_bytes > UINT64_MAX / total) return *why = "size overflows", -1;
    total *= tr->block_bytes;
    for (int d = 1; d < LP_GGUF_MAX_DIMS; d++) {
        if (ne[d] != 0 && total > (uint64_t)INT64_MAX / (uint64_t)ne[d]) return *why = "size overflows", -1;
        total *= (uint64_t)ne[d];
    }
    *out = total;
    return 0;
}

/* ---------------- name index (open addressing, FNV-1a) ---------------- */

typedef const char *(*name_at_fn)(const void *owner, int64_t i);

typedef struct {
    int64_t *slots; /* entry index + 1; 0 = empty */
    uint64_t mask;
} name_index;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

static void index_init(name_index *ix, int64_t n_entries) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n_entries * 2) cap *= 2;
    ix->slots = lp_xcalloc(cap, sizeof *ix->slots);
    ix->mask = cap - 1;
}

static void index_free(name_index *ix) {
    free(ix->slots);
    ix->slots = NULL;
}

/* Insert entry i; returns the index of an existing entry with the same name, else -1. */
static int64_t index_add(name_index *ix, const void *owner, name_at_fn name_at, int64_t i) {
    const char *name = name_at(owner, i);
    for (uint64_t h = fnv1a(name) & ix->mask;; h = (h + 1) & ix->mask) {
        if (ix->slots[h] == 0) {
            ix->slots[h] = i + 1;
            return -1;
        }
        if (strcmp(name_at(owner, ix->slots[h] - 1), name) == 0) return ix->slots[h] - 1;
    }
}

static int64_t index_find(const name_index *ix, const void *owner, name_at_fn name_at, const char *name) {
    if (!ix->slots || !name) return -1;
    for (uint64_t h = fnv1a(name) & ix->mask; ix->slots[h] != 0; h = (h + 1) & ix->mask)
        if (strcmp(name_at(owner, ix->slots[h] - 1), name) == 0) return ix->slots[h] - 1;
    return -1;
}

/* ---------------- reader ---------------- */

typedef struct {
    char *key;
    lp_gguf_vtype type;
    lp_gguf_vtype elem_type;  /* arrays only */
    uint64_t n;               /* arrays: element count; strings: byte length */
    const uint8_t *raw;       /* value bytes as stored after the type tag (for verbatim copies) */
    uint64_t raw_len;
    const uint8_t *payload;   /* scalar bytes, string bytes, or first array element */
    char *str;                /* NUL-terminated copy of a STRING value */
    uint64_t *str_offsets;    /* STRING arrays: element i's length prefix, relative to payload */
} gguf_kv;

struct lp_gguf {
    lp_mmap map;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    int64_t n_kv;
    gguf_kv *kvs;
    name_index kv_index;
    int64_t n_tensors;
    lp_gguf_tensor *tensors;
    name_index tensor_index;
};

static const char *kv_key_at(const void *g, int64_t i) { return ((const lp_gguf *)g)->kvs[i].key; }
static const char *tensor_name_at(const void *g, int64_t i) { return ((const lp_gguf *)g)->tensors[i].name; }

/* Bounds-checked forward reader over the mapped file. */
typedef struct {
    const uint8_t *data;
    uint64_t size;
    uint64_t pos;
    const char *path;
    const char *what; /* context for messages: "kv 3 'general.name'" */
} cursor;

static uint64_t left(const cursor *c) { return c->size - c->pos; }

static int take(cursor *c, uint64_t n, const char *field, const uint8_t **out) {
    if (n > left(c))
        return lp_fail("%s: %s: %s past end of file (need %" PRIu64 " bytes at offset %" PRIu64 ", file has %" PRIu64 ")",
                       c->path, c->what, field, n, c->pos, c->size);
    *out = c->data + c->pos;
    c->pos += n;
    return 0;
}

static int read_u32(cursor *c, const char *field, uint32_t *v) {
    const uint8_t *p = NULL;
    if (take(c, 4, field, &p) != 0) return -1;
    memcpy(v, p, 4);
    return 0;
}

static int read_u64(cursor *c, const char *field, uint64_t *v) {
    const uint8_t *p = NULL;
    if (take(c, 8, field, &p) != 0) return -1;
    memcpy(v, p, 8);
    return 0;
}

/* A gguf_string: u64 length + bytes, length checked against the file. */
static int read_str(cursor *c, const char *field, const uint8_t **bytes, uint64_t *len) {
    if (read_u64(c, field, len) != 0) return -1;
    if (*len > left(c))
        return lp_fail("%s: %s: %s length %" PRIu64 " past end of file (offset %" PRIu64 ", file has %" PRIu64 ")",
                       c->path, c->what, field, *len, c->pos, c->size);
    return take(c, *len, field, bytes);
}

static char *copy_str(const uint8_t *bytes, uint64_t len) {
    char *s = lp_xmalloc((size_t)len + 1);
    memcpy(s, bytes, (size_t)len);
    s[len] = 0;
    return s;
}

/* Keys and tensor names are looked up as C strings: an embedded NUL would make two
 * different names compare equal. */
static char *read_name(cursor *c, const char *field, uint64_t max_len) {
    const uint8_t *bytes = NULL;
    uint64_t len = 0;
    if (read_str(c, field, &bytes, &len) != 0) return NULL;
    if (len == 0) return lp_fail("%s: %s: empty %s", c->path, c->what, field), NULL;
    if (len > max_len)
        return lp_fail("%s: %s: %s is %" PRIu64 " bytes (at most %" PRIu64 " allowed)", c->path, c->what, field, len,
                       max_len), NULL;
    if (memchr(bytes, 0, (size_t)len)) return lp_fail("%s: %s: %s contains a NUL byte", c->path, c->what, field), NULL;
    return copy_str(bytes, len);
}

static int read_array(cursor *c, gguf_kv *kv) {
    uint32_t elem;
    if (read_u32(c, "array element type", &elem) != 0 || read_u64(c, "array length", &kv->n) != 0) return -1;
    if (elem == LP_GGUF_ARRAY) return lp_fail("%s: %s: nested arrays are not supported", c->path, c->what);
    if (!vtype_known(elem)) return lp_fail("%s: %s: unknown array element type %" PRIu32, c->path, c->what, elem);
    kv->elem_type = (lp_gguf_vtype)elem;
    kv->payload = c->data + c->pos;
    if (elem != LP_GGUF_STRING) {
        uint64_t size = vtype_info[elem].size;
        if (kv->n > left(c) / size)
            return lp_fail("%s: %s: array of %" PRIu64 " %s past end of file", c->path, c->what, kv->n,
                           vtype_info[elem].name);
        c->pos += kv->n * size;
        return 0;
    }
    /* Every string takes at least its 8-byte length, so this bound makes the allocation safe. */
    if (kv->n > left(c) / 8)
        return lp_fail("%s: %s: array of %" PRIu64 " strings past end of file", c->path, c->what, kv->n);
    kv->str_offsets = lp_xmalloc((size_t)(kv->n ? kv->n : 1) * sizeof *kv->str_offsets);
    for (uint64_t i = 0; i < kv->n; i++) {
        const uint8_t *bytes = NULL;
        uint64_t len = 0;
        kv->str_offsets[i] = (uint64_t)(c->data + c->pos - kv->payload);
        if (read_str(c, "array string", &bytes, &len) != 0) return -1;
    }
    return 0;
}

static int read_value(cursor *c, gguf_kv *kv) {
    uint32_t type;
    if (read_u32(c, "value type", &type) != 0) return -1;
    if (!vtype_known(type)) return lp_fail("%s: %s: unknown value type %" PRIu32, c->path, c->what, type);
    kv->type = (lp_gguf_vtype)type;
    kv->raw = c->data + c->pos;
    int rc;
    if (type == LP_GGUF_ARRAY) {
        rc = read_array(c, kv);
    } else if (type == LP_GGUF_STRING) {
        rc = read_str(c, "string value", &kv->payload, &kv->n);
        if (rc == 0) kv->str = copy_str(kv->payload, kv->n);
    } else {
        rc = take(c, vtype_info[type].size, "value", &kv->payload);
    }
    kv->raw_len = (uint64_t)(c->data + c->pos - kv->raw);
    return rc;
}

static int read_kvs(lp_gguf *g, cursor *c) {
    char what[160];
    index_init(&g->kv_index, g->n_kv);
    g->kvs = lp_xcalloc((size_t)(g->n_kv ? g->n_kv : 1), sizeof *g->kvs);
    for (int64_t i = 0; i < g->n_kv; i++) {
        snprintf(what, sizeof what, "kv %" PRId64, i);
        c->what = what;
        gguf_kv *kv = &g->kvs[i];
        if (!(kv->key = read_name(c, "key", UINT64_MAX))) return -1;
        snprintf(what, sizeof what, "kv %" PRId64 " '%.100s'", i, kv->key);
        if (index_add(&g->kv_index, g, kv_key_at, i) >= 0)
            return lp_fail("%s: key '%s': duplicate key", c->path, kv->key);
        if (read_value(c, kv) != 0) return -1;
    }
    return 0;
}

static int read_alignment(lp_gguf *g) {
    g->alignment = LP_GGUF_DEFAULT_ALIGNMENT;
    int64_t i = lp_gguf_find_kv(g, GGUF_KEY_ALIGNMENT);
    if (i < 0) return 0;
    const gguf_kv *kv = &g->kvs[i];
    if (kv->type != LP_GGUF_U32)
        return lp_fail("%s: key '%s': has type %s, expected UINT32", g->map.path, kv->key, vtype_info[kv->type].name);
    uint32_t a;
    memcpy(&a, kv->payload, 4);
    if (!is_pow2(a)) return lp_fail("%s: key '%s': %" PRIu32 " is not a power of two", g->map.path, kv->key, a);
    g->alignment = a;
    return 0;
}

static int read_tensor_info(lp_gguf *g, cursor *c, int64_t i) {
    char what[160];
    lp_gguf_tensor *t = &g->tensors[i];
    snprintf(what, sizeof what, "tensor %" PRId64, i);
    c->what = what;
    if (!(t->name = read_name(c, "name", LP_GGUF_MAX_NAME))) return -1;
    snprintf(what, sizeof what, "tensor '%s'", t->name);
    if (index_add(&g->tensor_index, g, tensor_name_at, i) >= 0)
        return lp_fail("%s: tensor '%s': duplicate tensor name", c->path, t->name);
    uint32_t n_dims, type;
    if (read_u32(c, "n_dims", &n_dims) != 0) return -1;
    if (n_dims < 1 || n_dims > LP_GGUF_MAX_DIMS)
        return lp_fail("%s: tensor '%s': n_dims %" PRIu32 " (must be 1..%d)", c->path, t->name, n_dims, LP_GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    for (int d = 0; d < LP_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if (d < t->n_dims && read_u64(c, "ne", &ne) != 0) return -1;
        if (ne > (uint64_t)INT64_MAX) return lp_fail("%s: tensor '%s': negative ne[%d]", c->path, t->name, d);
        t->ne[d] = (int64_t)ne;
    }
    if (read_u32(c, "type", &type) != 0 || read_u64(c, "offset", &t->offset) != 0) return -1;
    t->type = (lp_type)type;
    const char *why;
    if (type >= LP_TYPE_COUNT || tensor_nbytes(t->type, t->ne, &t->nbytes, &why) != 0)
        return lp_fail("%s: tensor '%s': type %" PRIu32 " with shape [%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                       "]: %s", c->path, t->name, type, t->ne[0], t->ne[1], t->ne[2], t->ne[3],
                       type >= LP_TYPE_COUNT ? "unknown or unsupported type" : why);
    return 0;
}

/* Offsets are checked once the data section start (which depends on alignment) is known. */
static int check_tensor_placement(lp_gguf *g) {
    for (int64_t i = 0; i < g->n_tensors; i++) {
        lp_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0)
            return lp_fail("%s: tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %" PRIu32,
                           g->map.path, t->name, t->offset, g->alignment);
        uint64_t avail = g->data_offset <= g->map.size ? g->map.size - g->data_offset : 0;
        if (t->offset > avail || t->nbytes > avail - t->offset)
            return lp_fail("%s: tensor '%s': offset past end of file (data %" PRIu64 "+%" PRIu64 " bytes at %" PRIu64
                           ", file has %" PRIu64 ")", g->map.path, t->name, t->offset, t->nbytes, g->data_offset,
                           g->map.size);
        t->data = g->map.data + g->data_offset + t->offset;
    }
    return 0;
}

static int read_tensor_infos(lp_gguf *g, cursor *c) {
    index_init(&g->tensor_index, g->n_tensors);
    g->tensors = lp_xcalloc((size_t)(g->n_tensors ? g->n_tensors : 1), sizeof *g->tensors);
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (read_tensor_info(g, c, i) != 0) return -1;
    g->data_offset = pad_to(c->pos, g->alignment);
    return check_tensor_placement(g);
}

static int read_header(lp_gguf *g, cursor *c) {
    const uint8_t *magic = NULL;
    uint64_t n_tensors, n_kv;
    c->what = "header";
    if (take(c, 4, "magic", &magic) != 0) return -1;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0) return lp_fail("%s: not a GGUF file (bad magic)", c->path);
    if (read_u32(c, "version", &g->version) != 0) return -1;
    if ((g->version & 0xFFFF) == 0)
        return lp_fail("%s: version 0x%08" PRIx32 ": big-endian GGUF files are not supported", c->path, g->version);
    if (g->version < 2 || g->version > GGUF_VERSION)
        return lp_fail("%s: unsupported GGUF version %" PRIu32 " (2 and 3 are supported)", c->path, g->version);
    if (read_u64(c, "tensor_count", &n_tensors) != 0 || read_u64(c, "kv_count", &n_kv) != 0) return -1;
    /* Smallest possible encodings: a KV is key(8+1) + type(4) + 1-byte value; a tensor info is
     * name(8+1) + n_dims(4) + one ne(8) + type(4) + offset(8). Larger counts cannot be real. */
    if (n_kv > left(c) / 14) return lp_fail("%s: kv_count %" PRIu64 " is more than the file can hold", c->path, n_kv);
    if (n_tensors > left(c) / 33)
        return lp_fail("%s: tensor_count %" PRIu64 " is more than the file can hold", c->path, n_tensors);
    g->n_kv = (int64_t)n_kv;
    g->n_tensors = (int64_t)n_tensors;
    return 0;
}

lp_gguf *lp_gguf_open(const char *path) {
    lp_gguf *g = lp_xcalloc(1, sizeof *g);
    if (lp_mmap_open(&g->map, path) != 0) {
        free(g);
        return NULL;
    }
    cursor c = {.data = g->map.data, .size = g->map.size, .path = g->map.path, .what = "header"};
    if (read_header(g, &c) != 0 || read_kvs(g, &c) != 0 || read_alignment(g) != 0 || read_tensor_infos(g, &c) != 0) {
        lp_gguf_close(g);
        return NULL;
    }
    return g;
}

void lp_gguf_close(lp_gguf *g) {
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv && g->kvs; i++) {
        free(g->kvs[i].key);
        free(g->kvs[i].str);
        free(g->kvs[i].str_offsets);
    }
    for (int64_t i = 0; i < g->n_tensors && g->tensors; i++) free((char *)g->tensors[i].name);
    free(g->kvs);
    free(g->tensors);
    index_free(&g->kv_index);
    index_free(&g->tensor_index);
    lp_mmap_close(&g->map);
    free(g);
}

const char *lp_gguf_path(const lp_gguf *g) { return g->map.path; }
uint32_t lp_gguf_alignment(const lp_gguf *g) { return g->alignment; }
uint64_t lp_gguf_data_offset(const lp_gguf *g) { return g->data_offset; }
int64_t lp_gguf_n_kv(const lp_gguf *g) { return g->n_kv; }

int64_t lp_gguf_find_kv(const lp_gguf *g, const char *key) { return index_find(&g->kv_index, g, kv_key_at, key); }

const char *lp_gguf_kv_key(const lp_gguf *g, int64_t i) { return i >= 0 && i < g->n_kv ? g->kvs[i].key : NULL; }

lp_gguf_vtype lp_gguf_kv_type(const lp_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kvs[i].type : (lp_gguf_vtype)-1;
}

/* The KV for key, which must have type `want` (or any type if want < 0); fails naming the key. */
static const gguf_kv *kv_typed(const lp_gguf *g, const char *key, int want) {
    int64_t i = lp_gguf_find_kv(g, key);
    if (i < 0) return lp_fail("%s: key '%s': missing", g->map.path, key), NULL;
    const gguf_kv *kv = &g->kvs[i];
    if (want >= 0 && kv->type != (lp_gguf_vtype)want)
        return lp_fail("%s: key '%s': has type %s, expected %s", g->map.path, key, vtype_info[kv->type].name,
                       vtype_info[want].name), NULL;
    return kv;
}

/* Integer value of any integer type: signed types in *s, unsigned in *u. */
static const gguf_kv *kv_integer(const lp_gguf *g, const char *key, bool *is_signed, int64_t *s, uint64_t *u) {
    const gguf_kv *kv = kv_typed(g, key, -1);
    if (!kv) return NULL;
    if (!vtype_info[kv->type].is_int)
        return lp_fail("%s: key '%s': has type %s, expected an integer", g->map.path, key, vtype_info[kv->type].name),
               NULL;
    const uint8_t *p = kv->payload;
    *is_signed = vtype_info[kv->type].is_signed;
    switch (kv->type) {
    case LP_GGUF_U8: *u = p[0]; break;
    case LP_GGUF_I8: *s = (int8_t)p[0]; break;
    case LP_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); *u = v; break; }
    case LP_GGUF_I16: { int16_t v; memcpy(&v, p, 2); *s = v; break; }
    case LP_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); *u = v; break; }
    case LP_GGUF_I32: { int32_t v; memcpy(&v, p, 4); *s = v; break; }
    case LP_GGUF_U64: memcpy(u, p, 8); break;
    default: memcpy(s, p, 8); break; /* I64 */
    }
    return kv;
}

int lp_gguf_get_u32(const lp_gguf *g, const char *key, uint32_t *out) {
    bool is_signed;
    int64_t s = 0;
    uint64_t u = 0;
    if (!kv_integer(g, key, &is_signed, &s, &u)) return -1;
    if (is_signed ? (s < 0 || s > (int64_t)UINT32_MAX) : u > UINT32_MAX)
        return is_signed ? lp_fail("%s: key '%s': value %" PRId64 " does not fit in uint32", g->map.path, key, s)
                         : lp_fail("%s: key '%s': value %" PRIu64 " does not fit in uint32", g->map.path, key, u);
    *out = is_signed ? (uint32_t)s : (uint32_t)u;
    return 0;
}

int lp_gguf_get_i64(const lp_gguf *g, const char *key, int64_t *out) {
    bool is_signed;
    int64_t s = 0;
    uint64_t u = 0;
    if (!kv_integer(g, key, &is_signed, &s, &u)) return -1;
    if (!is_signed && u > (uint64_t)INT64_MAX)
        return lp_fail("%s: key '%s': value %" PRIu64 " does not fit in int64", g->map.path, key, u);
    *out = is_signed ? s : (int64_t)u;
    return 0;
}

int lp_gguf_get_f32(const lp_gguf *g, const char *key, float *out) {
    const gguf_kv *kv = kv_typed(g, key, LP_GGUF_F32);
    if (!kv) return -1;
    memcpy(out, kv->payload, 4);
    return 0;
}

int lp_gguf_get_f64(const lp_gguf *g, const char *key, double *out) {
    const gguf_kv *kv = kv_typed(g, key, -1);
    if (!kv) return -1;
    if (kv->type == LP_GGUF_F64) {
        memcpy(out, kv->payload, 8);
        return 0;
    }
    float f;
    if (lp_gguf_get_f32(g, key, &f) != 0) return -1;
    *out = f;
    return 0;
}

int lp_gguf_get_bool(const lp_gguf *g, const char *key, bool *out) {
    const gguf_kv *kv = kv_typed(g, key, LP_GGUF_BOOL);
    if (!kv) return -1;
    *out = kv->payload[0] != 0;
    return 0;
}

const char *lp_gguf_get_str(const lp_gguf *g, const char *key) {
    const gguf_kv *kv = kv_typed(g, key, LP_GGUF_STRING);
    return kv ? kv->str : NULL;
}

int lp_gguf_get_arr(const lp_gguf *g, const char *key, lp_gguf_vtype *elem_type, uint64_t *n) {
    const gguf_kv *kv = kv_typed(g, key, LP_GGUF_ARRAY);
    if (!kv) return -1;
    if (elem_type) *elem_type = kv->elem_type;
    if (n) *n = kv->n;
    return 0;
}

const char *lp_gguf_get_arr_str(const lp_gguf *g, const char *key, uint64_t i, uint64_t *len) {
    const gguf_kv *kv = kv_typed(g, key, LP_GGUF_ARRAY);
    if (!kv) return NULL;
    if (kv->elem_type != LP_GGUF_STRING)
        return lp_fail("%s: key '%s': array of %s, expected STRING", g->map.path, key, vtype_info[kv->elem_type].name),
               NULL;
    if (i >= kv->n)
        return lp_fail("%s: key '%s': index %" PRIu64 " out of range (%" PRIu64 " strings)", g->map.path, key, i, kv->n),
               NULL;
    const uint8_t *p = kv->payload + kv->str_offsets[i];
    uint64_t n;
    memcpy(&n, p, 8);
    if (len) *len = n;
    return (const char *)p + 8;
}

const void *lp_gguf_get_arr_data(const lp_gguf *g, const char *key) {
    const gguf_kv *kv = kv_typed(g, key, LP_GGUF_ARRAY);
    if (!kv) return NULL;
    if (kv->elem_type == LP_GGUF_STRING)
        return lp_fail("%s: key '%s': array of STRING has no packed data", g->map.path, key), NULL;
    return kv->payload;
}

int64_t lp_gguf_n_tensors(const lp_gguf *g) { return g->n_tensors; }

const lp_gguf_tensor *lp_gguf_tensor_at(const lp_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const lp_gguf_tensor *lp_gguf_find_tensor(const lp_gguf *g, const char *name) {
    int64_t i = index_find(&g->tensor_index, g, tensor_name_at, name);
    return i >= 0 ? &g->tensors[i] : NULL;
}

void lp_gguf_release(const lp_gguf *g, const lp_gguf_tensor *t) {
    lp_mmap_release(&g->map, g->data_offset + t->offset, t->nbytes);
}

/* ---------------- writer ---------------- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} bytebuf;

static void buf_put(bytebuf *b, const void *src, size_t n) {
    if (b->len + n > b->cap) {
        while (b->len + n > b->cap) b->cap = b->cap ? b->cap * 2 : 256;
        b->p = lp_xrealloc(b->p, b->cap);
    }
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void buf_u32(bytebuf *b, uint32_t v) { buf_put(b, &v, 4); }
static void buf_u64(bytebuf *b, uint64_t v) { buf_put(b, &v, 8); }
static void buf_str(bytebuf *b, const char *s, uint64_t len) {
    buf_u64(b, len);
    buf_put(b, s, (size_t)len);
}

typedef struct {
    char *key;
    lp_gguf_vtype type;
    bytebuf value; /* exactly the bytes that follow the type tag in the file */
} wkv;

typedef struct {
    lp_type type;
    int n_dims;
    int64_t ne[LP_GGUF_MAX_DIMS];
} wtensor;

struct lp_gguf_writer {
    wkv *kvs;
    int64_t n_kv, cap_kv;
    wtensor *tensors;
    char **tensor_names;
    uint64_t *tensor_nbytes;
    int n_tensors, cap_tensors;
    char *error; /* first setter misuse, reported by begin/finish */
    bool begun;
    uint32_t alignment;
    lp_tensor_stream stream;
};

lp_gguf_writer *lp_gguf_writer_new(void) {
    lp_gguf_writer *w = lp_xcalloc(1, sizeof *w);
    w->alignment = LP_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void lp_gguf_writer_free(lp_gguf_writer *w) {
    if (!w) return;
    lp_tensor_stream_abort(&w->stream);
    for (int64_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].value.p);
    }
    for (int i = 0; i < w->n_tensors; i++) free(w->tensor_names[i]);
    free(w->kvs);
    free(w->tensors);
    free(w->tensor_names);
    free(w->tensor_nbytes);
    free(w->error);
    free(w);
}

static void writer_misuse(lp_gguf_writer *w, const char *msg, const char *key) {
    if (!w->error) w->error = lp_xasprintf("gguf writer: key '%s': %s", key ? key : "(null)", msg);
}

/* The value buffer for key (existing slot, emptied, or a new one at the end); NULL on misuse. */
static bytebuf *kv_slot(lp_gguf_writer *w, const char *key, lp_gguf_vtype type) {
    if (!key || !*key) return writer_misuse(w, "empty key", key), NULL;
    if (w->begun) return writer_misuse(w, "set after the header was written", key), NULL;
    for (int64_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, key) != 0) continue;
        w->kvs[i].type = type;
        w->kvs[i].value.len = 0;
        return &w->kvs[i].value;
    }
    if (w->n_kv == w->cap_kv) {
        w->cap_kv = w->cap_kv ? w->cap_kv * 2 : 16;
        w->kvs = lp_xrealloc(w->kvs, (size_t)w->cap_kv * sizeof *w->kvs);
    }
    wkv *kv = &w->kvs[w->n_kv++];
    memset(kv, 0, sizeof *kv);
    kv->key = lp_xstrdup(key);
    kv->type = type;
    return &kv->value;
}

int lp_gguf_set_scalar(lp_gguf_writer *w, const char *key, lp_gguf_vtype type, const void *value) {
    if (!vtype_scalar(type)) return lp_fail("gguf writer: key '%s': type %d is not a scalar type", key, (int)type);
    bytebuf *b = kv_slot(w, key, type);
    if (!b) return lp_fail("%s", w->error);
    if (type == LP_GGUF_BOOL) {
        uint8_t v = *(const bool *)value ? 1 : 0;
        buf_put(b, &v, 1);
    } else {
        buf_put(b, value, vtype_info[type].size);
    }
    return 0;
}

int lp_gguf_set_arr(lp_gguf_writer *w, const char *key, lp_gguf_vtype elem_type, const void *data, uint64_t n) {
    if (!vtype_scalar(elem_type))
        return lp_fail("gguf writer: key '%s': array element type %d is not numeric", key, (int)elem_type);
    bytebuf *b = kv_slot(w, key, LP_GGUF_ARRAY);
    if (!b) return lp_fail("%s", w->error);
    buf_u32(b, elem_type);
    buf_u64(b, n);
    if (elem_type == LP_GGUF_BOOL) {
        for (uint64_t i = 0; i < n; i++) {
            uint8_t v = ((const bool *)data)[i] ? 1 : 0;
            buf_put(b, &v, 1);
        }
    } else {
        buf_put(b, data, (size_t)(n * vtype_info[elem_type].size));
    }
    return 0;
}

void lp_gguf_set_u32(lp_gguf_writer *w, const char *key, uint32_t v) { lp_gguf_set_scalar(w, key, LP_GGUF_U32, &v); }
void lp_gguf_set_i32(lp_gguf_writer *w, const char *key, int32_t v) { lp_gguf_set_scalar(w, key, LP_GGUF_I32, &v); }
void lp_gguf_set_f32(lp_gguf_writer *w, const char *key, float v) { lp_gguf_set_scalar(w, key, LP_GGUF_F32, &v); }
void lp_gguf_set_bool(lp_gguf_writer *w, const char *key, bool v) { lp_gguf_set_scalar(w, key, LP_GGUF_BOOL, &v); }

void lp_gguf_set_str(lp_gguf_writer *w, const char *key, const char *v) {
    bytebuf *b = kv_slot(w, key, LP_GGUF_STRING);
    if (b) buf_str(b, v ? v : "", v ? strlen(v) : 0);
}

void lp_gguf_set_arr_str(lp_gguf_writer *w, const char *key, const char *const *v, uint64_t n) {
    bytebuf *b = kv_slot(w, key, LP_GGUF_ARRAY);
    if (!b) return;
    buf_u32(b, LP_GGUF_STRING);
    buf_u64(b, n);
    for (uint64_t i = 0; i < n; i++) buf_str(b, v[i] ? v[i] : "", v[i] ? strlen(v[i]) : 0);
}

void lp_gguf_set_arr_i32(lp_gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
    lp_gguf_set_arr(w, key, LP_GGUF_I32, v, n);
}

void lp_gguf_set_arr_f32(lp_gguf_writer *w, const char *key, const float *v, uint64_t n) {
    lp_gguf_set_arr(w, key, LP_GGUF_F32, v, n);
}

int lp_gguf_copy_kv(lp_gguf_writer *w, const lp_gguf *g, int64_t i) {
    if (i < 0 || i >= g->n_kv) return lp_fail("%s: kv index %" PRId64 " out of range", g->map.path, i);
    const gguf_kv *kv = &g->kvs[i];
    bytebuf *b = kv_slot(w, kv->key, kv->type);
    if (!b) return lp_fail("%s", w->error);
    buf_put(b, kv->raw, (size_t)kv->raw_len);
    return 0;
}

int lp_gguf_writer_add_tensor(lp_gguf_writer *w, const char *name, lp_type type, int n_dims, const int64_t *ne) {
    if (w->begun) return lp_fail("gguf writer: tensor '%s': added after the header was written", name);
    if (!name || !*name) return lp_fail("gguf writer: empty tensor name");
    if (strlen(name) > LP_GGUF_MAX_NAME)
        return lp_fail("gguf writer: tensor '%s': name longer than %d bytes", name, LP_GGUF_MAX_NAME);
    if (n_dims < 1 || n_dims > LP_GGUF_MAX_DIMS)
        return lp_fail("gguf writer: tensor '%s': n_dims %d (must be 1..%d)", name, n_dims, LP_GGUF_MAX_DIMS);
    for (int i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensor_names[i], name) == 0) return lp_fail("gguf writer: tensor '%s': duplicate name", name);
    wtensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    memcpy(t.ne, ne, (size_t)n_dims * sizeof *ne);
    uint64_t nbytes;
    const char *why;
    if ((unsigned)type >= LP_TYPE_COUNT || tensor_nbytes(type, t.ne, &nbytes, &why) != 0)
        return lp_fail("gguf writer: tensor '%s': type %d: %s", name, (int)type,
                       (unsigned)type >= LP_TYPE_COUNT ? "unknown or unsupported type" : why);
    if (w->n_tensors == w->cap_tensors) {
        w->cap_tensors = w->cap_tensors ? w->cap_tensors * 2 : 64;
        w->tensors = lp_xrealloc(w->tensors, (size_t)w->cap_tensors * sizeof *w->tensors);
        w->tensor_names = lp_xrealloc(w->tensor_names, (size_t)w->cap_tensors * sizeof *w->tensor_names);
        w->tensor_nbytes = lp_xrealloc(w->tensor_nbytes, (size_t)w->cap_tensors * sizeof *w->tensor_nbytes);
    }
    w->tensors[w->n_tensors] = t;
    w->tensor_names[w->n_tensors] = lp_xstrdup(name);
    w->tensor_nbytes[w->n_tensors] = nbytes;
    return w->n_tensors++;
}

uint64_t lp_gguf_writer_tensor_nbytes(const lp_gguf_writer *w, int idx) {
    return idx >= 0 && idx < w->n_tensors ? w->tensor_nbytes[idx] : 0;
}

/* A custom alignment is whatever general.alignment says, validated like the reader does. */
static int writer_alignment(lp_gguf_writer *w) {
    for (int64_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kvs[i].key, GGUF_KEY_ALIGNMENT) != 0) continue;
        if (w->kvs[i].type != LP_GGUF_U32)
            return lp_fail("gguf writer: key '%s': must be UINT32, not %s", GGUF_KEY_ALIGNMENT,
                           vtype_info[w->kvs[i].type].name);
        uint32_t a;
        memcpy(&a, w->kvs[i].value.p, 4);
        if (!is_pow2(a)) return lp_fail("gguf writer: key '%s': %" PRIu32 " is not a power of two", GGUF_KEY_ALIGNMENT, a);
        w->alignment = a;
    }
    return 0;
}

static void build_header(const lp_gguf_writer *w, bytebuf *h) {
    buf_put(h, GGUF_MAGIC, 4);
    buf_u32(h, GGUF_VERSION);
    buf_u64(h, (uint64_t)w->n_tensors);
    buf_u64(h, (uint64_t)w->n_kv);
    for (int64_t i = 0; i < w->n_kv; i++) {
        buf_str(h, w->kvs[i].key, strlen(w->kvs[i].key));
        buf_u32(h, w->kvs[i].type);
        buf_put(h, w->kvs[i].value.p, w->kvs[i].value.len);
    }
    uint64_t offset = 0;
    for (int i = 0; i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        buf_str(h, w->tensor_names[i], strlen(w->tensor_names[i]));
        buf_u32(h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) buf_u64(h, (uint64_t)t->ne[d]);
        buf_u32(h, (uint32_t)t->type);
        buf_u64(h, offset);
        offset += pad_to(w->tensor_nbytes[i], w->alignment);
    }
}

int lp_gguf_writer_begin(lp_gguf_writer *w, const char *path) {
    if (w->begun) return lp_fail("%s: gguf writer: begin called twice", path);
    if (w->error) return lp_fail("%s: %s", path, w->error);
    if (writer_alignment(w) != 0) return lp_fail_prefix("%s", path);
    bytebuf header = {0};
    build_header(w, &header);
    lp_outfile out;
    if (lp_outfile_open(&out, path) != 0) {
        free(header.p);
        return -1;
    }
    int rc = lp_outfile_write(&out, header.p, header.len);
    free(header.p);
    if (rc == 0) rc = lp_outfile_pad(&out, w->alignment);
    if (rc != 0) {
        lp_outfile_abort(&out);
        return -1;
    }
    w->begun = true;
    lp_tensor_stream_init(&w->stream, &out, w->n_tensors, w->tensor_nbytes, (const char *const *)w->tensor_names,
                          w->alignment);
    return 0;
}

int lp_gguf_writer_tensor_data(lp_gguf_writer *w, int idx, const void *data, size_t n) {
    return lp_tensor_stream_write(&w->stream, idx, data, n);
}

int lp_gguf_writer_finish(lp_gguf_writer *w) {
    if (w->error && lp_tensor_stream_is_open(&w->stream)) {
        int rc = lp_fail("%s: %s", w->stream.out.path, w->error);
        lp_tensor_stream_abort(&w->stream);
        return rc;
    }
    return lp_tensor_stream_finish(&w->stream);
}

uint64_t lp_gguf_writer_bytes(const lp_gguf_writer *w) { return lp_tensor_stream_bytes(&w->stream); }
