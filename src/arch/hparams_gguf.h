/* hparams_gguf.h — lp_hparams from GGUF metadata ({arch}.block_count & co,
 * FORMATS.md section 3.3). Helper owned by the runtime; kept beside arch.h
 * because it fills the same struct as the config.json reader. */
#ifndef LP_HPARAMS_GGUF_H
#define LP_HPARAMS_GGUF_H

#include "../formats/gguf.h"
#include "arch.h"

/* Fill hp from g's KVs (and tensor presence for the facts GGUF keeps only as
 * tensors: vocab rows, tied embeddings, attention biases). */
int lp_hparams_from_gguf(const lp_gguf *g, lp_hparams *hp);

#endif
