/* safetensors.h — safetensors reader (single file or HF sharded checkpoint) and writer.
 *
 * Reader: each shard is mmapped; the header is validated the way the reference
 * Rust reader does it (size limits, JSON, dtype, shape*bits == byte span, spans
 * contiguous and inside the file). Errors name the file and tensor.
 * A checkpoint is the union of its shards, addressed by tensor name.
 *
 * Writer: collects tensor descriptions, then streams data in declaration order
 * (header padded to 8 bytes like the Rust writer, `__metadata__` supported);
 * output is atomic (temp file + rename). */
#ifndef LP_SAFETENSORS_H
#define LP_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LP_ST_MAX_DIMS 8

typedef enum {
    LP_ST_BOOL, LP_ST_U8, LP_ST_I8, LP_ST_I16, LP_ST_U16, LP_ST_F16, LP_ST_BF16,
    LP_ST_I32, LP_ST_U32, LP_ST_F32, LP_ST_F64, LP_ST_I64, LP_ST_U64,
    LP_ST_F8_E4M3, LP_ST_F8_E5M2, LP_ST_F8_E8M0,
    LP_ST_DTYPE_COUNT
} lp_st_dtype;

const char *lp_st_dtype_name(lp_st_dtype d); /* "BF16" */
int lp_st_dtype_from_name(const char *s);    /* -1 if unknown */
size_t lp_st_dtype_size(lp_st_dtype d);      /* bytes per element */

typedef struct {
    const char *name;
    lp_st_dtype dtype;
    int n_dims;
    int64_t shape[LP_ST_MAX_DIMS]; /* row-major, slowest first */
    int64_t n_elements;
    uint64_t nbytes;
    const void *data;              /* into the mmap of its shard */
    int shard;                     /* index into the checkpoint's shard list */
} lp_st_tensor;

typedef struct lp_checkpoint lp_checkpoint;

/* Open a directory holding model.safetensors or model.safetensors.index.json (+ shards),
 * or a single .safetensors file. */
lp_checkpoint *lp_checkpoint_open(const char *path);
void lp_checkpoint_close(lp_checkpoint *c);
int64_t lp_checkpoint_n_tensors(const lp_checkpoint *c);
const lp_st_tensor *lp_checkpoint_tensor_at(const lp_checkpoint *c, int64_t i); /* sorted by name */
const lp_st_tensor *lp_checkpoint_find(const lp_checkpoint *c, const char *name);
int lp_checkpoint_n_shards(const lp_checkpoint *c);
const char *lp_checkpoint_shard_path(const lp_checkpoint *c, int shard);
uint64_t lp_checkpoint_total_bytes(const lp_checkpoint *c); /* sum of tensor bytes */
/* String value of `key` in a shard's "__metadata__" (e.g. "format" -> "pt"); NULL if absent. */
const char *lp_checkpoint_metadata(const lp_checkpoint *c, int shard, const char *key);
/* Tell the OS a tensor's pages may be dropped after conversion (bounded RSS). */
void lp_checkpoint_release(const lp_checkpoint *c, const lp_st_tensor *t);

/* Convert elements [start, start+n) of a float tensor (F32/F16/BF16/F64) to f32.
 * -1 with a message naming the tensor for non-float dtypes. */
int lp_st_to_f32(const lp_st_tensor *t, int64_t start, int64_t n, float *dst);

/* ---------------- writer ---------------- */
typedef struct lp_st_writer lp_st_writer;

lp_st_writer *lp_st_writer_new(void);
void lp_st_writer_free(lp_st_writer *w); /* aborts an unfinished file */
void lp_st_writer_set_metadata(lp_st_writer *w, const char *key, const char *value);
int lp_st_writer_add(lp_st_writer *w, const char *name, lp_st_dtype dtype, int n_dims, const int64_t *shape);
int lp_st_writer_begin(lp_st_writer *w, const char *path);
/* Data in declaration order; may be split over several calls. */
int lp_st_writer_data(lp_st_writer *w, int idx, const void *data, size_t n);
int lp_st_writer_finish(lp_st_writer *w);

#endif
