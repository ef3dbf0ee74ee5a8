/* test_cuda_loader.c — the CUDA module loader (src/backend/cuda/cuda_loader.c).
 *
 * The binaries do not link the CUDA libraries: this test starts with none mapped.
 * With LP_CUDA_MODULE naming a missing file, an executable, a text file or a shared
 * object without the entry, no device is reported and creation fails with one line
 * naming the file and the loader's reason. Then, where the build made the module
 * (nvcc present), the module beside the executable loads: on a machine without a
 * GPU it reports 0 devices and creation fails with the module's own message (which
 * also shows lp_fail() inside the module writes the host's lp_errmsg()). Tests run
 * in order: a loaded module stays loaded, so the loading test comes last. Before any
 * loading: `auto`'s probe finds no NVIDIA device node on a machine without a GPU and
 * loads nothing. */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/select.h"
#include "core/err.h"

#define MODULE_FILE "libllama-pajamas-cuda.so"

static bool mapped(const char *needle) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    bool hit = false;
    while (f && !hit && fgets(line, sizeof line, f)) hit = strstr(line, needle) != NULL;
    if (f) fclose(f);
    return hit;
}

/* LP_CUDA_MODULE=path must fail everywhere, with a message naming path and containing `why`. */
static void expect_refused(const char *path, const char *why) {
    setenv("LP_CUDA_MODULE", path, 1);
    assert_int_equal(lp_cuda_device_count(), 0);
    lp_err_clear();
    assert_null(lp_backend_cuda_create(0));
    const char *msg = lp_errmsg();
    printf("  %s\n", msg);
    assert_non_null(strstr(msg, "cuda backend: cannot load CUDA module"));
    assert_non_null(strstr(msg, path));
    assert_non_null(strstr(msg, why));
    assert_null(strchr(msg, '\n'));
    lp_err_clear();
    assert_true(lp_cuda_copy_bandwidth(0, 1 << 20) == 0.0);
    assert_non_null(strstr(lp_errmsg(), path));
    lp_cuda_mem mem;
    assert_int_equal(lp_backend_cuda_mem(NULL, &mem), -1);
    assert_string_equal(lp_backend_cuda_device_name(NULL), "");
    assert_false(mapped("libcudart") || mapped("libcublas"));
}

static void test_not_linked(void **state) {
    (void)state;
    /* nothing CUDA in the process before the loader is asked */
    assert_false(mapped("libcudart"));
    assert_false(mapped("libcublas"));
    assert_false(mapped(MODULE_FILE));
}

/* The device-node check on a directory the test controls: each node alone counts. */
static void test_device_nodes(void **state) {
    (void)state;
    char dir[] = "/tmp/lp-dev-XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_false(lp_cuda_device_node_present(dir));
    static const char *const nodes[] = {"nvidiactl", "nvidia0", "dxg", "nvhost-ctrl-gpu"};
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, nodes[i]);
        FILE *f = fopen(path, "w"); /* a plain file stands in for the character device */
        assert_non_null(f);
        fclose(f);
        assert_true(lp_cuda_device_node_present(dir));
        assert_int_equal(unlink(path), 0);
        assert_false(lp_cuda_device_node_present(dir));
    }
    snprintf(path, sizeof path, "%s/nvgpu", dir); /* a directory of nodes (Jetson) */
    assert_int_equal(mkdir(path, 0700), 0);
    assert_true(lp_cuda_device_node_present(dir));
    assert_int_equal(rmdir(path), 0);
    snprintf(path, sizeof path, "%s/nvidia-uvm", dir); /* not one that says a GPU is there */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_false(lp_cuda_device_node_present(dir));
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
    assert_false(lp_cuda_device_node_present("/nonexistent-lp-dir"));
}

/* `--backend auto`'s probe on this machine: without a node it answers no GPU, and the
 * module and the CUDA libraries stay unloaded. */
static void test_auto_probe(void **state) {
    (void)state;
    if (lp_cuda_device_node_present("/dev")) {
        printf("  an NVIDIA device node exists: the probe loads the module (checked below)\n");
        return;
    }
    unsetenv("LP_CUDA_MODULE");
    assert_false(lp_backend_cuda_available());
    assert_false(mapped(MODULE_FILE) || mapped("libcudart") || mapped("libcublas"));
}

static void test_missing_file(void **state) {
    (void)state;
    expect_refused("/nonexistent-lp-dir/" MODULE_FILE, "No such file");
}

static void test_not_a_module(void **state) {
    (void)state;
    expect_refused("/bin/true", "/bin/true");                      /* an executable */
    expect_refused(LP_SOURCE_DIR "/CMakeLists.txt", "ELF");         /* not ELF at all */
    Dl_info info;                                                   /* a real .so without the entry */
    assert_true(dladdr((void *)_cmocka_run_group_tests, &info) != 0 && info.dli_fname);
    printf("  (shared object without the entry: %s)\n", info.dli_fname);
    expect_refused(info.dli_fname, "not a llama-pajamas CUDA module");
    assert_non_null(strstr(lp_errmsg(), "lp_cuda_module_entry"));
}

/* Without LP_CUDA_MODULE: the module beside the executable (the build directory). */
static void test_module_beside_binary(void **state) {
    (void)state;
    unsetenv("LP_CUDA_MODULE");
    char dir[PATH_MAX], path[PATH_MAX + 64];
    assert_non_null(realpath(LP_BINARY_DIR, dir));
    snprintf(path, sizeof path, "%s/%s", dir, MODULE_FILE);
    if (access(path, F_OK) != 0) {
        /* no nvcc (or -DLP_CUDA=OFF): the search reports the build directory's path */
        printf("  no module in %s (built without CUDA)\n", dir);
        assert_int_equal(lp_cuda_device_count(), 0);
        assert_null(lp_backend_cuda_create(0));
        printf("  %s\n", lp_errmsg());
        assert_non_null(strstr(lp_errmsg(), path));
        assert_non_null(strstr(lp_errmsg(), "No such file"));
        return;
    }
    const int n = lp_cuda_device_count();
    printf("  module %s loaded: %d device(s)\n", path, n);
    assert_true(n >= 0);
    assert_true(mapped(MODULE_FILE));
    if (access("/dev/nvidiactl", F_OK) != 0) assert_int_equal(n, 0); /* this machine has no GPU */
    if (n == 0) {
        lp_err_clear();
        assert_null(lp_backend_cuda_create(0));
        const char *msg = lp_errmsg();
        printf("  %s\n", msg);
        assert_null(strstr(msg, "cannot load"));   /* the module answered... */
        assert_non_null(strstr(msg, "no CUDA device")); /* ...through the host's lp_fail */
        lp_err_clear();
        assert_true(lp_cuda_copy_bandwidth(0, 1 << 20) == 0.0);
        assert_non_null(strstr(lp_errmsg(), "cuda backend"));
    } else {
        lp_backend *be = lp_backend_cuda_create(0);
        assert_non_null(be);
        printf("  device 0: %s\n", lp_backend_cuda_device_name(be));
        assert_true(lp_backend_cuda_device_name(be)[0] != 0);
        be->ops->destroy(be);
    }
    /* loaded once, kept: LP_CUDA_MODULE no longer matters */
    setenv("LP_CUDA_MODULE", "/nonexistent-lp-dir/" MODULE_FILE, 1);
    assert_int_equal(lp_cuda_device_count(), n);
    unsetenv("LP_CUDA_MODULE");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_not_linked),
        cmocka_unit_test(test_device_nodes),
        cmocka_unit_test(test_auto_probe),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_not_a_module),
        cmocka_unit_test(test_module_beside_binary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
