/* cuda_module.h — the ABI between the CUDA module (cuda_backend.cu, built into
 * libllama-pajamas-cuda.so) and its loader (cuda_loader.c): the entry symbol, the
 * host and module function tables, and a layout fingerprint (sizes of every struct
 * that crosses the boundary) so a module from another build is refused with a
 * message. Change a table: bump LP_CUDA_MODULE_ABI. */
#ifndef LP_CUDA_MODULE_H
#define LP_CUDA_MODULE_H

#include <stddef.h>
#include <stdint.h>

#include "../../quant/qtype.h"
#include "../../runtime/model.h"
#include "../backend.h"
#include "cuda_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LP_CUDA_MODULE_ABI 1
#define LP_CUDA_MODULE_ENTRY "lp_cuda_module_entry"

enum { LP_CUDA_N_LAYOUT = 10 };

/* sizeof the structs that cross the boundary, as each side was compiled. */
#define LP_CUDA_LAYOUT                                                                                          \
    {                                                                                                           \
        sizeof(lp_cuda_host), sizeof(lp_cuda_module), sizeof(lp_backend_ops), sizeof(lp_backend_config),       \
            sizeof(lp_batch_meta), sizeof(lp_attn_params), sizeof(lp_matmul_args), sizeof(lp_moe_params),       \
            sizeof(lp_weight), sizeof(lp_qtype_traits)                                                          \
    }

typedef struct {
    int abi; /* LP_CUDA_MODULE_ABI; this and layout[] stay first in every ABI */
    size_t layout[LP_CUDA_N_LAYOUT];
    int (*fail)(const char *fmt, ...);
    void *(*xmalloc)(size_t n);
    void *(*xcalloc)(size_t n, size_t size);
    void *(*xrealloc)(void *p, size_t n);
    const lp_qtype_traits *(*qtype)(lp_type t);
    uint16_t (*f32_to_f16)(float f);
} lp_cuda_host;

typedef struct {
    int abi; /* the module's LP_CUDA_MODULE_ABI; this and layout[] stay first */
    size_t layout[LP_CUDA_N_LAYOUT];
    lp_backend *(*create)(int device);
    int (*device_count)(void);
    int (*mem)(lp_backend *be, lp_cuda_mem *out);
    double (*copy_bandwidth)(int device, size_t bytes);
    const char *(*device_name)(lp_backend *be);
} lp_cuda_module;

/* The module adopts `host` only when its ABI and layout match its own; it always
 * returns its table so the loader can say what differs. */
typedef const lp_cuda_module *(*lp_cuda_entry_fn)(const lp_cuda_host *host);

#ifdef __cplusplus
}
#endif

#endif
