/* cuda_loader.c — the public API of cuda_backend.h, served by the CUDA module
 * (libllama-pajamas-cuda.so, built from cuda_backend.cu by cmake/cuda.cmake when
 * nvcc is found) which is dlopen()ed on first use. The core library and the
 * binaries never link cudart or cuBLAS: a binary built on a CUDA machine starts
 * (and runs on the CPU) where the CUDA libraries are missing, and `quant info`
 * does not pay ~200 MB of CUDA libraries it never calls.
 *
 * Where the module is looked for, in order:
 *   1. $LP_CUDA_MODULE when set and non-empty: that file and nothing else;
 *   2. the directory of the running executable (/proc/self/exe): the build tree;
 *   3. ../lib/llama-pajamas relative to that directory: an installed layout
 *      (bin/llama-pajamas-run + lib/llama-pajamas/libllama-pajamas-cuda.so).
 * The first of 2-3 that exists is loaded (a broken module is reported, not
 * skipped). A module that is missing or does not load (libcudart absent, not a
 * module, another ABI) makes lp_cuda_device_count() return 0 and the other
 * calls fail with one line naming the module path and the loader's error. A
 * failed load is tried again at the next call; a loaded module stays loaded
 * until exit (the CUDA runtime does not support being unloaded).
 *
 * The handshake: the module exports one symbol, lp_cuda_module_entry(host). The
 * host passes the few lpcore functions the module calls (lp_fail, lp_x*alloc,
 * lp_qtype, lp_f32_to_f16) and gets back a table of the five public functions. Both sides carry
 * an ABI number and the sizes of the structs that cross the boundary, so a module
 * from another build is refused with a message instead of crashing.
 *
 * Why pass lpcore's functions through the entry instead of exporting the
 * executables' symbols (-rdynamic) and leaving them undefined in the module:
 *   - it works for every executable as it is: no linker flag to remember on each
 *     CLI, test and bench target (and in bench/cuda_device.sh's gcc build);
 *   - -rdynamic exports only what the static lpcore archive contributed to that
 *     executable: one that links no object defining lp_qtype (a small test) could
 *     not load the module, and which objects get linked changes with unrelated
 *     edits; here the table itself references them;
 *   - the module is linked with -z defs and exports exactly one symbol, so a new
 *     lpcore call in cuda_backend.cu fails at build time (add it to the table)
 *     rather than at dlopen time on some machine;
 *   - lp_fail stays the executable's: its thread-local message is the one
 *     lp_errmsg() reads, with no second copy of lpcore in the module.
 *
 * The tables are declared once, in cuda_module.h, for both sides. */
#include "cuda_backend.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../core/err.h"
#include "../../quant/qtype.h"
#include "../../runtime/model.h"
#include "cuda_module.h"

#ifndef LP_CUDA_MODULE_NAME
#define LP_CUDA_MODULE_NAME "libllama-pajamas-cuda.so"
#endif
/* 1 when this build also built the module (cmake/cuda.cmake), for the message only. */
#ifndef LP_CUDA_MODULE_BUILT
#define LP_CUDA_MODULE_BUILT 0
#endif

/* ---- loading ---- */

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static const lp_cuda_module *loaded; /* under load_lock; never unset once set */

static const lp_cuda_host host_table = {
    LP_CUDA_MODULE_ABI, LP_CUDA_LAYOUT, lp_fail, lp_xmalloc, lp_xcalloc, lp_xrealloc, lp_qtype, lp_f32_to_f16,
};

/* snprintf into a fixed message buffer, where cutting a very long path is fine. */
static void LP_PRINTF(3, 4) say(char *dst, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, cap, fmt, ap);
    va_end(ap);
}

/* The directory of the running executable into dir (no trailing slash); 0 or -1. */
static int exe_dir(char *dir, size_t cap) {
    char path[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
    if (n <= 0) return -1;
    path[n] = 0;
    char *slash = strrchr(path, '/');
    if (!slash) return -1;
    *slash = 0;
    if ((size_t)snprintf(dir, cap, "%s", path[0] ? path : "/") >= cap) return -1;
    return 0;
}

/* dlopen `path`, resolve and call the entry, check the handshake. On failure err
 * gets the reason (without the path) and the handle is closed. */
static const lp_cuda_module *open_module(const char *path, char *err, size_t cap) {
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        say(err, cap, "%s", e ? e : "dlopen failed");
        return NULL;
    }
    void *sym = dlsym(h, LP_CUDA_MODULE_ENTRY);
    if (!sym) {
        const char *e = dlerror();
        say(err, cap, "not a llama-pajamas CUDA module (%s)", e ? e : "no " LP_CUDA_MODULE_ENTRY);
        dlclose(h);
        return NULL;
    }
    lp_cuda_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry); /* object pointer to function pointer, POSIX-style */
    const lp_cuda_module *m = entry(&host_table);
    const size_t want[LP_CUDA_N_LAYOUT] = LP_CUDA_LAYOUT;
    if (!m || m->abi != LP_CUDA_MODULE_ABI) {
        say(err, cap, "module ABI %d, this program expects %d (rebuild the module with this tree)", m ? m->abi : -1,
                 LP_CUDA_MODULE_ABI);
        dlclose(h);
        return NULL;
    }
    for (int i = 0; i < LP_CUDA_N_LAYOUT; i++)
        if (m->layout[i] != want[i]) {
            say(err, cap, "module built from another source tree (struct #%d: %zu bytes, here %zu); rebuild it", i,
                     m->layout[i], want[i]);
            dlclose(h);
            return NULL;
        }
    return m; /* the handle is kept open until exit */
}

/* The loaded module, loading it first if needed; NULL with one line in err. */
static const lp_cuda_module *get_module(char *err, size_t cap) {
    pthread_mutex_lock(&load_lock);
    const lp_cuda_module *m = loaded;
    if (m) {
        pthread_mutex_unlock(&load_lock);
        return m;
    }
    char why[768];
    const char *env = getenv("LP_CUDA_MODULE");
    if (env && env[0]) {
        m = open_module(env, why, sizeof why);
        if (!m) say(err, cap, "cuda backend: cannot load CUDA module %s (from $LP_CUDA_MODULE): %s", env, why);
    } else {
        char dir[PATH_MAX], cand[2][PATH_MAX + 64];
        int n_cand = 0, pick = 0;
        if (exe_dir(dir, sizeof dir) == 0) {
            snprintf(cand[0], sizeof cand[0], "%s/%s", dir, LP_CUDA_MODULE_NAME);
            snprintf(cand[1], sizeof cand[1], "%s/../lib/llama-pajamas/%s", dir, LP_CUDA_MODULE_NAME);
            n_cand = 2;
            pick = access(cand[0], F_OK) == 0 || access(cand[1], F_OK) != 0 ? 0 : 1;
        }
        if (n_cand == 0) {
            say(err, cap, "cuda backend: cannot find the CUDA module %s: /proc/self/exe unreadable; set LP_CUDA_MODULE",
                     LP_CUDA_MODULE_NAME);
        } else {
            m = open_module(cand[pick], why, sizeof why);
            if (!m)
                say(err, cap, "cuda backend: cannot load CUDA module %s: %s (%s; LP_CUDA_MODULE=path overrides)",
                         cand[pick], why,
                         LP_CUDA_MODULE_BUILT ? "searched the executable's directory and ../lib/llama-pajamas"
                                              : "this build has no CUDA module: nvcc not found or -DLP_CUDA=OFF");
        }
    }
    if (m) loaded = m;
    pthread_mutex_unlock(&load_lock);
    return m;
}

/* ---- the public API ---- */

/* Nodes of the NVIDIA Linux driver (nvidiactl, and nvidia0 for the first GPU), of WSL2's
 * GPU paravirtualisation (dxg: any vendor's GPU; loading the module there only costs
 * time) and of Jetson's integrated GPU (nvhost-ctrl-gpu, nvgpu/ on newer releases).
 * Containers get the same nodes (nvidia-container-toolkit, --gpus). A miss makes
 * `auto` choose the CPU, so the list errs on the side of a node too many. */
bool lp_cuda_device_node_present(const char *dev_dir) {
    static const char *const nodes[] = {"nvidiactl", "nvidia0", "dxg", "nvhost-ctrl-gpu", "nvgpu"};
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        char path[PATH_MAX];
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dev_dir, nodes[i]) < sizeof path && access(path, F_OK) == 0) return true;
    }
    return false;
}

lp_backend *lp_backend_cuda_create(int device) {
    char err[1024];
    const lp_cuda_module *m = get_module(err, sizeof err);
    if (!m) {
        lp_fail("%s", err);
        return NULL;
    }
    return m->create(device);
}

int lp_cuda_device_count(void) {
    char err[1024];
    const lp_cuda_module *m = get_module(err, sizeof err);
    return m ? m->device_count() : 0;
}

int lp_backend_cuda_mem(lp_backend *be, lp_cuda_mem *out) {
    char err[1024];
    const lp_cuda_module *m = get_module(err, sizeof err);
    if (!m) return lp_fail("%s", err);
    if (!be) return lp_fail("cuda backend: mem: no backend");
    return m->mem(be, out);
}

double lp_cuda_copy_bandwidth(int device, size_t bytes) {
    char err[1024];
    const lp_cuda_module *m = get_module(err, sizeof err);
    if (!m) {
        lp_fail("%s", err);
        return 0.0;
    }
    return m->copy_bandwidth(device, bytes);
}

const char *lp_backend_cuda_device_name(lp_backend *be) {
    char err[1024];
    const lp_cuda_module *m = be ? get_module(err, sizeof err) : NULL;
    return m ? m->device_name(be) : "";
}
