/* cuda_stub.c — the CUDA backend's entry points when the build has no nvcc
 * (LP_HAVE_CUDA undefined): creation fails with a clear message, no devices. */
#include "cuda_backend.h"

#ifndef LP_HAVE_CUDA

#include "../../core/err.h"

lp_backend *lp_backend_cuda_create(int device) {
    (void)device;
    lp_fail("cuda backend: built without CUDA (configure with nvcc on the PATH and -DLP_CUDA=ON)");
    return NULL;
}

int lp_cuda_device_count(void) { return 0; }

int lp_backend_cuda_mem(lp_backend *be, lp_cuda_mem *out) {
    (void)be;
    (void)out;
    return lp_fail("cuda backend: built without CUDA");
}

double lp_cuda_copy_bandwidth(int device, size_t bytes) {
    (void)device;
    (void)bytes;
    lp_fail("cuda backend: built without CUDA");
    return 0.0;
}

const char *lp_backend_cuda_device_name(lp_backend *be) {
    (void)be;
    return "";
}

#else
/* ISO C forbids an empty translation unit. */
typedef int lp_cuda_stub_unused;
#endif
