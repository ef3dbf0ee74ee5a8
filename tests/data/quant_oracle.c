/* quant_oracle.c — tools-only (not built by CMake): a command-line driver around
 * llama.cpp's own ggml-quants.c, used by gen_quant_golden.py to produce the reference
 * bytes in quant_golden.bin. It runs exactly what llama-quantize runs without an
 * imatrix (quantize_<type>(src, dst, nrow, n_per_row, NULL)) and ggml's dequantizers.
 *
 * Build (ggml sources e.g. from the llama-cpp-python sdist, vendor/llama.cpp/ggml):
 *   G=.../vendor/llama.cpp/ggml
 *   gcc -O2 -DNDEBUG -ffp-contract=off -c $G/src/ggml-quants.c -I$G/include -I$G/src -o gq.o
 *   gcc -O2 -DNDEBUG -ffp-contract=off quant_oracle.c gq.o -I$G/include -I$G/src -o quant_oracle -lm
 * (-ffp-contract=off matches x86 builds of ggml-base, which get no FMA; -DNDEBUG as in
 * release builds, where nearest_int's range assert is off: Q2_K can exceed it.)
 *
 * Usage:
 *   quant_oracle q TYPE in.f32 out.bin     quantize the whole file as one row
 *   quant_oracle d TYPE in.bin out.f32     dequantize
 *   quant_oracle f16|bf16 in.f32 out.u16   ggml's scalar float conversions */
#define GGML_COMMON_DECL_C
#include "ggml-common.h"
#include "ggml-impl.h"
#include "ggml-quants.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The few ggml.c symbols ggml-quants.c needs. */
void ggml_abort(const char *file, int line, const char *fmt, ...) {
    fprintf(stderr, "ggml_abort %s:%d %s\n", file, line, fmt);
    abort();
}

typedef size_t (*quant_fn)(const float *, void *, int64_t, int64_t, const float *);
typedef void (*dequant_fn)(const void *, float *, int64_t);

static const struct {
    const char *name;
    enum ggml_type type;
    int block;
    size_t bytes;
    quant_fn quant; /* NULL: Q8_K, quantized with quantize_row_q8_K_ref */
    dequant_fn dequant;
} types[] = {
    {"q4_0", GGML_TYPE_Q4_0, 32, sizeof(block_q4_0), quantize_q4_0, (dequant_fn)dequantize_row_q4_0},
    {"q4_1", GGML_TYPE_Q4_1, 32, sizeof(block_q4_1), quantize_q4_1, (dequant_fn)dequantize_row_q4_1},
    {"q5_0", GGML_TYPE_Q5_0, 32, sizeof(block_q5_0), quantize_q5_0, (dequant_fn)dequantize_row_q5_0},
    {"q5_1", GGML_TYPE_Q5_1, 32, sizeof(block_q5_1), quantize_q5_1, (dequant_fn)dequantize_row_q5_1},
    {"q8_0", GGML_TYPE_Q8_0, 32, sizeof(block_q8_0), quantize_q8_0, (dequant_fn)dequantize_row_q8_0},
    {"iq4_nl", GGML_TYPE_IQ4_NL, 32, sizeof(block_iq4_nl), quantize_iq4_nl, (dequant_fn)dequantize_row_iq4_nl},
    {"mxfp4", GGML_TYPE_MXFP4, 32, sizeof(block_mxfp4), quantize_mxfp4, (dequant_fn)dequantize_row_mxfp4},
    {"q2_K", GGML_TYPE_Q2_K, 256, sizeof(block_q2_K), quantize_q2_K, (dequant_fn)dequantize_row_q2_K},
    {"q3_K", GGML_TYPE_Q3_K, 256, sizeof(block_q3_K), quantize_q3_K, (dequant_fn)dequantize_row_q3_K},
    {"q4_K", GGML_TYPE_Q4_K, 256, sizeof(block_q4_K), quantize_q4_K, (dequant_fn)dequantize_row_q4_K},
    {"q5_K", GGML_TYPE_Q5_K, 256, sizeof(block_q5_K), quantize_q5_K, (dequant_fn)dequantize_row_q5_K},
    {"q6_K", GGML_TYPE_Q6_K, 256, sizeof(block_q6_K), quantize_q6_K, (dequant_fn)dequantize_row_q6_K},
    {"q8_K", GGML_TYPE_Q8_K, 256, sizeof(block_q8_K), NULL, (dequant_fn)dequantize_row_q8_K},
};

size_t ggml_type_size(enum ggml_type t) {
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (types[i].type == t) return types[i].bytes;
    return 0;
}

size_t ggml_row_size(enum ggml_type t, int64_t n) {
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (types[i].type == t) return types[i].bytes * (size_t)(n / types[i].block);
    return 0;
}

const char *ggml_type_name(enum ggml_type t) {
    (void)t;
    return "?";
}

static void *slurp(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    if (!f) exit(2);
    fseek(f, 0, SEEK_END);
    *n = ftell(f);
    rewind(f);
    void *b = malloc((size_t)*n + 1);
    if (fread(b, 1, (size_t)*n, f) != (size_t)*n) exit(2);
    fclose(f);
    return b;
}

static void spill(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) exit(2);
    fclose(f);
}

int main(int argc, char **argv) {
    long n;
    if (argc == 4 && (!strcmp(argv[1], "f16") || !strcmp(argv[1], "bf16"))) {
        const float *x = slurp(argv[2], &n);
        n /= 4;
        uint16_t *o = malloc((size_t)n * 2 + 2);
        for (long i = 0; i < n; i++)
            o[i] = argv[1][0] == 'f' ? ggml_compute_fp32_to_fp16(x[i]) : ggml_compute_fp32_to_bf16(x[i]).bits;
        spill(argv[3], o, (size_t)n * 2);
        return 0;
    }
    if (argc != 5) return 2;
    int k = -1;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(types[i].name, argv[2])) k = (int)i;
    if (k < 0) return 2;
    if (argv[1][0] == 'q') {
        const float *x = slurp(argv[3], &n);
        n /= 4;
        size_t size = ggml_row_size(types[k].type, n);
        void *o = calloc(1, size + 1);
        if (types[k].quant) types[k].quant(x, o, 1, n, NULL);
        else quantize_row_q8_K_ref(x, o, n);
        spill(argv[4], o, size);
    } else {
        const void *b = slurp(argv[3], &n);
        long ne = n / (long)types[k].bytes * types[k].block;
        float *y = malloc((size_t)ne * 4 + 4);
        types[k].dequant(b, y, ne);
        spill(argv[4], y, (size_t)ne * 4);
    }
    return 0;
}
