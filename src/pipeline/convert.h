/* convert.h — one streaming pass over a checkpoint feeding several output sinks.
 *
 * The engine walks the model's tensors (by role and layer, from the plan), reads
 * each source tensor once, in chunks of rows, converts the chunk to f32 (bf16 /
 * f16 / f32 sources; llama q/k permutation and expert stacking applied), and
 * hands the rows to every sink (one per GGUF precision, one per MLX recipe),
 * which quantize them on the thread pool and stream them to their files. Peak
 * memory is a few chunk buffers, independent of the checkpoint size. */
#ifndef LP_CONVERT_H
#define LP_CONVERT_H

#include <stdbool.h>
#include <stdint.h>

#include "../arch/arch.h"
#include "../core/pool.h"
#include "../formats/safetensors.h"
#include "plan.h"

/* A sink receives every tensor of the plan, rows in order. */
typedef struct lp_sink {
    void *self;
    const char *label;
    /* bytes of one converted row of tensor t in the sink's chunk buffer */
    size_t (*row_bytes)(void *self, int t);
    /* convert one f32 row (called concurrently from pool threads) */
    void (*convert_row)(void *self, int t, int64_t row, const float *src, void *dst);
    /* write converted rows [row0, row0+n) of tensor t (main thread, in order) */
    int (*write_rows)(void *self, int t, int64_t row0, int64_t n, const void *rows);
    int (*end_tensor)(void *self, int t); /* may be NULL */
    /* The type tensor t is stored in; may be NULL. When it is the source's own block
     * type (gpt-oss MXFP4 experts), the engine hands over the source blocks (in ggml
     * layout) instead of f32 rows, as llama.cpp's converter does: requantizing the
     * exact values can choose another, equally exact, scale and so other bytes. */
    lp_type (*tensor_type)(void *self, int t);
    int (*finish)(void *self);            /* commit the artifact */
    void (*destroy)(void *self);          /* frees; removes temp files if not finished */
} lp_sink;

typedef struct {
    const lp_hparams *hp;
    const lp_checkpoint *ckpt;
    const lp_plan *tensors; /* the tensor list (shapes, roles); types are per sink */
    lp_sink *sinks;
    int n_sinks;
    lp_pool *pool;
    bool quiet;
    uint64_t source_bytes_read; /* out */
    double seconds;             /* out */
} lp_convert_job;

int lp_convert_run(lp_convert_job *job);

/* Does the checkpoint hold the source of an optional role (biases, lm_head)?
 * An lp_role_present_fn for lp_plan_build, with ctx = lp_source_ref*. */
typedef struct {
    const lp_hparams *hp;
    const lp_checkpoint *ckpt;
} lp_source_ref;
int lp_convert_role_present(void *source_ref, lp_role role, int layer);

#endif
