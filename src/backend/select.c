/* select.c — backend selection: CUDA when asked for (or, for `auto`, when an NVIDIA
 * device node exists and the CUDA module loads and sees a device, cuda_loader.c), the
 * CPU backend otherwise. Builds without nvcc have no module: the loader's one-line
 * error says so. */
#include "backend/select.h"

#include <string.h>

#include "core/err.h"

#include "backend/cuda/cuda_backend.h"

/* The node check first: counting devices loads the module and the CUDA libraries
 * (~220 MB) even where the libraries are installed without a GPU. */
bool lp_backend_cuda_available(void) { return lp_cuda_device_node_present("/dev") && lp_cuda_device_count() > 0; }

lp_engine *lp_backend_engine_create(const lp_model *m, const char *name, const lp_engine_params *p,
                                    const char **chosen) {
    bool want_cuda = strcmp(name, "cuda") == 0 ||
                     (strcmp(name, "auto") == 0 && lp_backend_cuda_available());
    if (!want_cuda) {
        if (chosen) *chosen = "cpu";
        return lp_engine_create(m, p);
    }
    lp_backend *be = lp_backend_cuda_create(0);
    if (!be) return NULL;
    if (chosen) *chosen = "cuda";
    return lp_engine_create_with_backend(m, be, p);
}
