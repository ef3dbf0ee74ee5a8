/* cpu_backend.h — the CPU implementation of backend.h: a persistent thread pool
 * splitting matmul tiles and attention heads, AVX2 kernels where available,
 * F32 KV cache. */
#ifndef LP_CPU_BACKEND_H
#define LP_CPU_BACKEND_H

#include "../backend.h"

/* n_threads <= 0: all online CPUs. */
lp_backend *lp_backend_cpu_create(int n_threads);

#endif
