/* tensor_stream.c — ordered, size-checked streaming of tensor data into an atomic output file. */
#include "tensor_stream.h"

#include <string.h>

#include "../core/err.h"

void lp_tensor_stream_init(lp_tensor_stream *s, lp_outfile *out, int n_tensors, const uint64_t *nbytes,
                           const char *const *names, size_t alignment) {
    memset(s, 0, sizeof *s);
    s->out = *out;
    s->n_tensors = n_tensors;
    s->nbytes = nbytes;
    s->names = names;
    s->alignment = alignment ? alignment : 1;
}

int lp_tensor_stream_is_open(const lp_tensor_stream *s) { return s->out.fp != NULL; }

/* Close the current tensor: pad it and move on. Zero-byte tensors need no data call,
 * so they are skipped here too. */
static int complete_current(lp_tensor_stream *s) {
    while (s->current < s->n_tensors && s->current_done == s->nbytes[s->current]) {
        if (s->alignment > 1 && lp_outfile_pad(&s->out, s->alignment) != 0) return -1;
        s->current++;
        s->current_done = 0;
    }
    return 0;
}

int lp_tensor_stream_write(lp_tensor_stream *s, int idx, const void *data, size_t n) {
    const char *path = s->out.path ? s->out.path : "(writer)";
    if (!lp_tensor_stream_is_open(s)) return lp_fail("%s: tensor data written before the header", path);
    if (s->failed) return lp_fail("%s: earlier write failed", path);
    if (idx < 0 || idx >= s->n_tensors) return lp_fail("%s: tensor index %d out of range", path, idx);
    /* A call for an already completed (e.g. zero-byte) tensor with no data is harmless. */
    if (idx < s->current && n == 0) return 0;
    if (idx != s->current)
        return lp_fail("%s: tensor '%s': data out of order (expected tensor '%s' next)", path, s->names[idx],
                       s->current < s->n_tensors ? s->names[s->current] : "(none)");
    if (n > s->nbytes[idx] - s->current_done)
        return lp_fail("%s: tensor '%s': %zu bytes given but only %llu remain of %llu", path, s->names[idx], n,
                       (unsigned long long)(s->nbytes[idx] - s->current_done), (unsigned long long)s->nbytes[idx]);
    if (lp_outfile_write(&s->out, data, n) != 0) {
        s->failed = 1;
        return -1;
    }
    s->current_done += n;
    if (complete_current(s) != 0) {
        s->failed = 1;
        return -1;
    }
    return 0;
}

int lp_tensor_stream_finish(lp_tensor_stream *s) {
    if (!lp_tensor_stream_is_open(s)) return lp_fail("(writer): finish without an open file");
    int rc = 0;
    if (s->failed)
        rc = lp_fail("%s: not written: a write failed earlier", s->out.path);
    else if (complete_current(s) != 0)
        rc = -1; /* message already names the failed write */
    else if (s->current < s->n_tensors)
        rc = lp_fail("%s: tensor '%s': only %llu of %llu bytes written", s->out.path, s->names[s->current],
                     (unsigned long long)s->current_done, (unsigned long long)s->nbytes[s->current]);
    if (rc != 0) {
        lp_tensor_stream_abort(s);
        return rc;
    }
    s->final_bytes = s->out.written;
    return lp_outfile_commit(&s->out);
}

uint64_t lp_tensor_stream_bytes(const lp_tensor_stream *s) {
    return lp_tensor_stream_is_open(s) ? s->out.written : s->final_bytes;
}

void lp_tensor_stream_abort(lp_tensor_stream *s) {
    if (lp_tensor_stream_is_open(s)) lp_outfile_abort(&s->out);
}
