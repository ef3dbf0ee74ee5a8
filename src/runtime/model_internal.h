/* model_internal.h — what the model loaders (model.c for GGUF / HF, model_mlx.c for
 * MLX directories) share; not part of the runtime's public API. */
#ifndef LP_MODEL_INTERNAL_H
#define LP_MODEL_INTERNAL_H

#include "model.h"

/* The model frees p when it is freed; returns p. */
void *lp_model_own(lp_model *m, void *p);
/* The weight slot of a role (layer ignored for global roles). */
lp_weight *lp_model_slot(lp_model *m, lp_role role, int layer);

#endif
