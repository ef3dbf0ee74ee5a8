/* select.h — choosing a backend by name ("auto", "cpu", "cuda") and creating the
 * engine on it. "auto" is CUDA when the build has it and a GPU is present. */
#ifndef LP_BACKEND_SELECT_H
#define LP_BACKEND_SELECT_H

#include "runtime/engine.h"

/* *chosen (optional) gets "cpu" or "cuda". */
lp_engine *lp_backend_engine_create(const lp_model *m, const char *name, const lp_engine_params *p,
                                    const char **chosen);
/* A CUDA device is usable; loads the CUDA module only where an NVIDIA device node exists. */
bool lp_backend_cuda_available(void);

#endif
