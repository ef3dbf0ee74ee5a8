/* cuda_backend.h — the CUDA implementation of backend.h (NVIDIA GPUs, built for
 * sm_90 plus PTX). Weights are uploaded once (raw GGUF blocks split into a quant
 * plane and a scale plane), the KV cache is F16 on the device, activations stay
 * in device buffers, and read() copies back only what is asked.
 *
 * The implementation lives in the module libllama-pajamas-cuda.so (cuda_backend.cu,
 * built when nvcc is found), which these functions load on first use through
 * cuda_loader.c: $LP_CUDA_MODULE, else beside the executable, else
 * ../lib/llama-pajamas relative to it. Binaries do not link cudart or cuBLAS. When
 * the module is missing or does not load (no nvcc at build time, libcudart absent)
 * lp_cuda_device_count() returns 0 and the other calls fail with one line naming
 * the module path and the loader's error.
 *
 * Environment switches (debugging): LP_CUDA_GRAPHS=0 (no CUDA graphs),
 * LP_CUDA_FUSE=0 (no op fusion; attention's combine is a separate launch again),
 * LP_CUDA_NOFUSE=res,normrope,heads,fold,emit,stagenorm,attn1,glu (those fusions left out;
 * attn1: a one-token step's attention and per-head ops in one launch),
 * LP_CUDA_PROFILE=1 (eager steps with per-op GPU times, printed as a table when the
 * backend is destroyed), LP_CUDA_PDL=0 (plain launches, no programmatic dependent
 * launch, which is otherwise on for batch-1 steps), LP_CUDA_DROP=kind,... (timing
 * experiments: those op kinds are skipped, results are wrong); tuning:
 * LP_CUDA_GEMV_MAX_N (batches up to this many rows use the GEMV kernels, larger ones
 * the MMA kernel or GEMM; default 8), LP_CUDA_MMA_MAX_N (batches above that and up to
 * this many rows multiply quantized weights with the int8 tensor-core kernel, larger
 * ones GEMM with F16 tiles; default 64, 0 turns the MMA kernel off; sm_80 and newer),
 * LP_CUDA_ATTN_CHUNK (decode attention: cache positions per split block at least;
 * default 128; 0 splits every context the most ways), LP_CUDA_GEMV_BPS (batch-1 GEMV:
 * blocks per SM, no more than fit, each walking several row groups; default 8, i.e. one
 * resident wave; 0 launches one block per row group), LP_CUDA_ATTN1_GRID=0 (one-token
 * attention launches a block for every split, not just the live ones), LP_CUDA_ATTN1_MAX
 * (one-token attention in one launch up to this many positions, the split kernel above;
 * default: always; 0: while each warp has one tile, 128 x the splits). */
#ifndef LP_CUDA_BACKEND_H
#define LP_CUDA_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "../backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A backend on GPU `device` (0 = first); NULL with lp_errmsg() set when CUDA is not
 * built in, no device exists, or the device cannot be used. The engine takes it
 * through lp_engine_create_with_backend(). */
lp_backend *lp_backend_cuda_create(int device);

/* Number of usable CUDA devices; 0 when built without CUDA or none is present. Loads
 * the module (and with it the CUDA libraries, ~220 MB) on first call. */
int lp_cuda_device_count(void);

/* Whether dev_dir (normally "/dev") has a node an NVIDIA driver creates, checked without
 * loading anything: where this is false no CUDA device can be present, so a caller that
 * only probes (`--backend auto`) can skip loading the module. */
bool lp_cuda_device_node_present(const char *dev_dir);

/* Device memory the backend holds, in bytes. */
typedef struct {
    size_t weights, kv_cache, scratch;
    size_t device_used; /* whole device: total - free (includes the CUDA context) */
    size_t device_total;
} lp_cuda_mem;

int lp_backend_cuda_mem(lp_backend *be, lp_cuda_mem *out);

/* Device-to-device cudaMemcpy bandwidth of `device` in GB/s, counting bytes read plus
 * bytes written (the convention of the baselines), median of 5 copies of `bytes`;
 * 0 on failure (lp_errmsg() says why). */
double lp_cuda_copy_bandwidth(int device, size_t bytes);

/* The device's name ("NVIDIA H100 80GB HBM3"), or "" when unknown. */
const char *lp_backend_cuda_device_name(lp_backend *be);

#ifdef __cplusplus
}
#endif

#endif
