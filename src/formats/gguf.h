/* gguf.h — GGUF v3 reader (mmap, fully validated) and streaming writer.
 *
 * Reader: lp_gguf_open() maps the file and validates magic, version, every KV
 * (types, string/array lengths), every tensor info (name length, dims, type,
 * offset alignment, data inside the file). Nothing after it trusts sizes.
 *
 * Writer: build KVs and tensor infos first (sizes are known from shapes), then
 * lp_gguf_writer_begin() writes the header and lp_gguf_writer_tensor() streams
 * each tensor's bytes in declaration order, padded to the alignment;
 * lp_gguf_writer_finish() commits the temp file atomically. Only one tensor's
 * data is ever in memory. Output is deterministic for identical inputs. */
#ifndef LP_GGUF_H
#define LP_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../quant/qtype.h"

#define LP_GGUF_DEFAULT_ALIGNMENT 32
#define LP_GGUF_MAX_DIMS 4
#define LP_GGUF_MAX_NAME 63

typedef enum {
    LP_GGUF_U8 = 0,
    LP_GGUF_I8 = 1,
    LP_GGUF_U16 = 2,
    LP_GGUF_I16 = 3,
    LP_GGUF_U32 = 4,
    LP_GGUF_I32 = 5,
    LP_GGUF_F32 = 6,
    LP_GGUF_BOOL = 7,
    LP_GGUF_STRING = 8,
    LP_GGUF_ARRAY = 9,
    LP_GGUF_U64 = 10,
    LP_GGUF_I64 = 11,
    LP_GGUF_F64 = 12,
} lp_gguf_vtype;

typedef struct {
    const char *name; /* NUL-terminated copy */
    lp_type type;
    int n_dims;
    int64_t ne[LP_GGUF_MAX_DIMS]; /* ne[0] fastest; unused dims are 1 */
    uint64_t offset;              /* relative to the data section */
    uint64_t nbytes;
    const void *data;             /* into the mmap */
} lp_gguf_tensor;

/* ---------------- reader ---------------- */
typedef struct lp_gguf lp_gguf;

lp_gguf *lp_gguf_open(const char *path);
void lp_gguf_close(lp_gguf *g);
const char *lp_gguf_path(const lp_gguf *g);
uint32_t lp_gguf_alignment(const lp_gguf *g);
uint64_t lp_gguf_data_offset(const lp_gguf *g); /* absolute file offset of the data section */

int64_t lp_gguf_n_kv(const lp_gguf *g);
int64_t lp_gguf_find_kv(const lp_gguf *g, const char *key); /* index or -1 */
const char *lp_gguf_kv_key(const lp_gguf *g, int64_t i);
lp_gguf_vtype lp_gguf_kv_type(const lp_gguf *g, int64_t i);
/* Typed scalar getters by key. Return 0 on success; -1 with lp_fail() naming the key if
 * missing or of another type (integer getters accept any integer type whose value fits). */
int lp_gguf_get_u32(const lp_gguf *g, const char *key, uint32_t *out);
int lp_gguf_get_i64(const lp_gguf *g, const char *key, int64_t *out);
int lp_gguf_get_f32(const lp_gguf *g, const char *key, float *out);
int lp_gguf_get_bool(const lp_gguf *g, const char *key, bool *out);
/* String value (not NUL-terminated in the file: we return a NUL-terminated copy owned by g). */
const char *lp_gguf_get_str(const lp_gguf *g, const char *key);
/* Arrays: element type and count; -1 if key missing or not an array. */
int lp_gguf_get_arr(const lp_gguf *g, const char *key, lp_gguf_vtype *elem_type, uint64_t *n);
/* i-th string of a string array (pointer into the mmap, length in *len). */
const char *lp_gguf_get_arr_str(const lp_gguf *g, const char *key, uint64_t i, uint64_t *len);
/* Raw pointer to the packed elements of a numeric array (little-endian, unaligned). */
const void *lp_gguf_get_arr_data(const lp_gguf *g, const char *key);

/* F32 or F64 value as double. */
int lp_gguf_get_f64(const lp_gguf *g, const char *key, double *out);
/* "UINT32", "STRING", ... ("?" for an unknown id). */
const char *lp_gguf_vtype_name(lp_gguf_vtype t);

int64_t lp_gguf_n_tensors(const lp_gguf *g);
const lp_gguf_tensor *lp_gguf_tensor_at(const lp_gguf *g, int64_t i);
const lp_gguf_tensor *lp_gguf_find_tensor(const lp_gguf *g, const char *name); /* NULL if absent */
/* Tell the OS a tensor's pages may be dropped (bounded RSS while streaming a model). */
void lp_gguf_release(const lp_gguf *g, const lp_gguf_tensor *t);

/* ---------------- writer ---------------- */
typedef struct lp_gguf_writer lp_gguf_writer;

lp_gguf_writer *lp_gguf_writer_new(void);
void lp_gguf_writer_free(lp_gguf_writer *w); /* aborts an unfinished file (temp removed) */
/* KV setters: insertion order is kept; setting an existing key replaces its value in place. */
void lp_gguf_set_u32(lp_gguf_writer *w, const char *key, uint32_t v);
void lp_gguf_set_i32(lp_gguf_writer *w, const char *key, int32_t v);
void lp_gguf_set_f32(lp_gguf_writer *w, const char *key, float v);
void lp_gguf_set_bool(lp_gguf_writer *w, const char *key, bool v);
void lp_gguf_set_str(lp_gguf_writer *w, const char *key, const char *v);
void lp_gguf_set_arr_str(lp_gguf_writer *w, const char *key, const char *const *v, uint64_t n);
void lp_gguf_set_arr_i32(lp_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
void lp_gguf_set_arr_f32(lp_gguf_writer *w, const char *key, const float *v, uint64_t n);
/* Any scalar type: value points to the matching C type (uint8_t, int8_t, uint16_t, int16_t,
 * uint32_t, int32_t, float, bool, -, -, uint64_t, int64_t, double). -1 for STRING/ARRAY. */
int lp_gguf_set_scalar(lp_gguf_writer *w, const char *key, lp_gguf_vtype type, const void *value);
/* Numeric or BOOL array from a packed C array of the matching element type. */
int lp_gguf_set_arr(lp_gguf_writer *w, const char *key, lp_gguf_vtype elem_type, const void *data, uint64_t n);
/* Copy KV i of an open reader verbatim (same key, type and bytes). */
int lp_gguf_copy_kv(lp_gguf_writer *w, const lp_gguf *g, int64_t i);
/* Setter misuse (empty key, setting after begin) is reported by begin/finish, since setters return void. */
/* Declare a tensor (n_dims 1..4, ne[0] fastest). Returns its index, -1 on a bad name/shape/type. */
int lp_gguf_writer_add_tensor(lp_gguf_writer *w, const char *name, lp_type type, int n_dims, const int64_t *ne);
uint64_t lp_gguf_writer_tensor_nbytes(const lp_gguf_writer *w, int idx);
/* Open "<path>.tmp.<pid>" and write header + KVs + tensor infos + padding. */
int lp_gguf_writer_begin(lp_gguf_writer *w, const char *path);
/* Append the data of tensor idx; must be called in declaration order with exactly nbytes bytes
 * (may be split over several calls; padding is added when a tensor is complete). */
int lp_gguf_writer_tensor_data(lp_gguf_writer *w, int idx, const void *data, size_t n);
/* Check that all tensors were written, flush, rename into place. */
int lp_gguf_writer_finish(lp_gguf_writer *w);
uint64_t lp_gguf_writer_bytes(const lp_gguf_writer *w); /* bytes written so far */

#endif
