/* mlx_types.h — MLX affine weights as runtime block types (ids >= LP_TYPE_MLX_FIRST).
 *
 * An MLX quantized matrix is three tensors (U32 codes, scales, biases). The CPU
 * runtime wants one row of self-contained blocks per weight row, so the loader
 * repacks each group of `group` elements into one block:
 *
 *     f32 scale | f32 bias | group*bits/32 uint32 words of codes
 *
 * The code words are copied unchanged from MLX's row bit stream (a group always
 * covers whole words because group is a multiple of 32), and w = scale*q + bias
 * with the stored (bf16/f16/f32) scale and bias widened exactly to f32, so the
 * runtime dequantizes to exactly what mx.dequantize gives in f32.
 *
 * These ids are internal to the runtime: they never appear in GGUF files. One id
 * per (bits, group): bits 2,3,4,5,6,8 x groups 32,64,128. The activation type is
 * F32 (vec_dot multiplies a block row with an f32 vector; AVX2 for every width). */
#ifndef LP_MLX_TYPES_H
#define LP_MLX_TYPES_H

#include <stdbool.h>
#include <stdint.h>

#include "quant/qtype.h"

#define LP_TYPE_MLX_FIRST 64
#define LP_TYPE_MLX_COUNT 18 /* 6 widths x 3 group sizes */

/* The block type for (bits, group); (lp_type)-1 if MLX does not support the pair. */
lp_type lp_mlx_type(int bits, int group);
/* Traits of an MLX block type; NULL for any other id. */
const lp_qtype_traits *lp_mlx_qtype(lp_type t);
bool lp_type_is_mlx(lp_type t);
/* Parameters of an MLX block type (0 for other ids). */
int lp_mlx_type_bits(lp_type t);
int lp_mlx_type_group(lp_type t);

/* Bytes of one block: 8 + group*bits/8. */
size_t lp_mlx_block_bytes(int bits, int group);
/* Repack one MLX row (n elements; `words` = its U32 codes, any alignment; scales and
 * biases per group as f32) into n/group blocks at dst. */
void lp_mlx_pack_blocks(const void *words, const float *scales, const float *biases, int64_t n, int bits,
                        int group, void *dst);

#endif
