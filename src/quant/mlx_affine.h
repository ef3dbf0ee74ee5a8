/* mlx_affine.h — MLX affine group quantization (bits 2,3,4,5,6,8; groups 32/64/128).
 *
 * Layout (docs/FORMATS.md s.8): each row is a little-endian bit stream of
 * `bits`-wide codes packed into uint32 words; per group of `group` elements a
 * scale and a bias (stored by the caller in the model dtype), w = scale*q + bias.
 * Quantization follows MLX's CPU reference in f32 (zero exactly representable). */
#ifndef LP_MLX_AFFINE_H
#define LP_MLX_AFFINE_H

#include <stdbool.h>
#include <stdint.h>

bool lp_mlx_params_valid(int bits, int group);
/* uint32 words per row of n elements. */
int64_t lp_mlx_row_words(int64_t n, int bits);
/* Quantize one row of n elements: codes into w (lp_mlx_row_words words), n/group scales and biases (f32). */
void lp_mlx_quantize_row(const float *x, int64_t n, int bits, int group, uint32_t *w, float *scales, float *biases);
/* Dequantize one row. */
void lp_mlx_dequantize_row(const uint32_t *w, const float *scales, const float *biases, int64_t n, int bits, int group,
                           float *y);
/* Dot product of one quantized row with an f32 vector x of n elements. */
float lp_mlx_dot_row(const uint32_t *w, const float *scales, const float *biases, int64_t n, int bits, int group,
                     const float *x);

#endif
