/* tensor_stream.h — the data-section half of the GGUF and safetensors writers (internal).
 *
 * Both writers know every tensor's size before the first data byte and then
 * accept data in declaration order, possibly in several pieces per tensor.
 * This keeps that bookkeeping (order, exact byte counts, padding after each
 * tensor, atomic commit) in one place. */
#ifndef LP_TENSOR_STREAM_H
#define LP_TENSOR_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "../core/fileio.h"

typedef struct {
    lp_outfile out;
    int n_tensors;
    const uint64_t *nbytes;   /* borrowed: size of each tensor */
    const char *const *names; /* borrowed: for messages */
    size_t alignment;         /* zero padding after every tensor; 1 = none */
    int current;              /* tensor receiving data */
    uint64_t current_done;    /* bytes of it received so far */
    int failed;               /* a write error happened: only abort is possible */
    uint64_t final_bytes;     /* file size once committed */
} lp_tensor_stream;

/* Take ownership of an already-opened outfile (header written). */
void lp_tensor_stream_init(lp_tensor_stream *s, lp_outfile *out, int n_tensors, const uint64_t *nbytes,
                           const char *const *names, size_t alignment);
int lp_tensor_stream_write(lp_tensor_stream *s, int idx, const void *data, size_t n);
/* Verify every tensor is complete, then commit the file. */
int lp_tensor_stream_finish(lp_tensor_stream *s);
void lp_tensor_stream_abort(lp_tensor_stream *s);
int lp_tensor_stream_is_open(const lp_tensor_stream *s);
/* Bytes written so far (the final size after a successful finish). */
uint64_t lp_tensor_stream_bytes(const lp_tensor_stream *s);

#endif
