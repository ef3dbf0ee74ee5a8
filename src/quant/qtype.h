/* qtype.h — element/block types as data: one traits row per type.
 *
 * Type ids are ggml's (they are written verbatim into GGUF tensor infos).
 * Every consumer — GGUF writer and reader, the conversion planner, validate,
 * and the CPU backend — goes through lp_qtype() instead of switching on types.
 *
 * Quantizers are the llama.cpp reference quantizers (quantize_row_*_ref), bit
 * exact, so our K-quant files equal llama-quantize's output without imatrix.
 * Matmul on the CPU follows ggml's scheme: the activation row is first
 * converted to `vec_dot_type` (e.g. Q8_K for K-quants, Q8_0 for Q8_0/Q4_0,
 * F32 for float weights), then vec_dot() multiplies one weight row by it. */
#ifndef LP_QTYPE_H
#define LP_QTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    LP_TYPE_F32 = 0,
    LP_TYPE_F16 = 1,
    LP_TYPE_Q4_0 = 2,
    LP_TYPE_Q4_1 = 3,
    LP_TYPE_Q5_0 = 6,
    LP_TYPE_Q5_1 = 7,
    LP_TYPE_Q8_0 = 8,
    LP_TYPE_Q2_K = 10,
    LP_TYPE_Q3_K = 11,
    LP_TYPE_Q4_K = 12,
    LP_TYPE_Q5_K = 13,
    LP_TYPE_Q6_K = 14,
    LP_TYPE_Q8_K = 15, /* activation-only intermediate, never stored in files */
    LP_TYPE_IQ4_NL = 20,
    LP_TYPE_BF16 = 30,
    LP_TYPE_MXFP4 = 39,
    LP_TYPE_COUNT = 40
} lp_type;

typedef void (*lp_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*lp_from_float_fn)(const float *src, void *dst, int64_t n);
/* Dot product of n elements: w in this type, x in this type's vec_dot_type. */
typedef float (*lp_vec_dot_fn)(int64_t n, const void *w, const void *x);

typedef struct {
    const char *name;        /* ggml type_name: "f32", "q4_K", ... */
    int block_size;          /* elements per block (1 for scalar types) */
    size_t block_bytes;      /* bytes per block */
    bool quantized;          /* block-quantized (not a plain float type) */
    lp_to_float_fn to_float; /* dequantize a row of n elements (n % block_size == 0) */
    lp_from_float_fn from_float; /* reference quantizer; NULL if this type cannot be produced */
    lp_type vec_dot_type;
    lp_vec_dot_fn vec_dot;   /* NULL if the type cannot be used as a matmul weight */
} lp_qtype_traits;

/* Activation quantization. The CPU matmul converts each activation row to the weight's
 * vec_dot_type with the arithmetic of llama.cpp's x86 CPU backend, bit for bit, so the
 * integer dot products see the same int8 codes and scales as llama.cpp does on the same
 * GGUF (details in qquant.c). For Q8_0 that is NOT the traits' from_float, which stays the
 * reference quantizer writing Q8_0 weights byte-identical to llama-quantize; for Q8_K the
 * two coincide. lp_from_float_act() is the portable version (every build writes the same
 * bytes with it); the matmul calls lp_from_float_fast() (qblocks.h), its SIMD twin. */
lp_from_float_fn lp_from_float_act(lp_type vec_dot_type);
void lp_from_float_act_q8_0(const float *x, void *y, int64_t n);

/* Traits for a type id; NULL for ids that are unknown or unsupported here. */
const lp_qtype_traits *lp_qtype(lp_type t);
/* Bytes of a row of n elements (n must be a multiple of the block size). */
size_t lp_row_size(lp_type t, int64_t n);
/* "q4_K" -> LP_TYPE_Q4_K (case-insensitive); -1 if unknown. */
int lp_type_from_name(const char *name);

/* Scalar conversions used all over (IEEE f16 RNE, bf16 RNE with quiet NaN, as ggml). */
float lp_f16_to_f32(uint16_t h);
uint16_t lp_f32_to_f16(float f);
float lp_bf16_to_f32(uint16_t h);
uint16_t lp_f32_to_bf16(float f);

#endif
