/* sink_gguf.h — a conversion sink writing one GGUF file for one precision recipe. */
#ifndef LP_SINK_GGUF_H
#define LP_SINK_GGUF_H

#include "convert.h"
#include "gguf_meta.h"

/* plan: the recipe's per-tensor types (must list the same tensors as the job). */
int lp_sink_gguf_create(lp_sink *sink, const char *path, const lp_hparams *hp, const lp_plan *plan,
                        const lp_gguf_meta_args *meta);

#endif
