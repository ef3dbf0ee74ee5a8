/* qquant_k.c — owns the K-quant reference quantizers (Q2_K..Q6_K, ggml's
 * quantize_row_*_ref, i.e. what llama-quantize writes without an imatrix) and the Q8_K
 * activation quantizer.
 *
 * Bit exactness with llama.cpp depends on keeping ggml's float32 operation order
 * expression by expression (with -ffp-contract=off): the scale searches compare sums
 * of products, and one different rounding flips a code. So the helpers below keep
 * ggml's structure and the comments say what each step is for.
 * Rows must be a whole number of 256-element super-blocks. */
#include "quant/qblocks.h"

#include <math.h>
#include <string.h>

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define GROUP_MAX_EPS 1e-15f

/* Asymmetric fit x ~ scale*L + min (min <= 0) with L in [0, nmax], minimising the
 * weighted error (|.| if use_mad, else squared); tries nstep+1 inverse scales around
 * nmax/(max-min) and solves the 2x2 least squares for each. Returns scale; *the_min
 * gets -min (>= 0). This is ggml's make_qkx2_quants. */
static float make_qkx2_quants(int n, int nmax, const float *x, const float *weights, uint8_t *L, float *the_min,
                              uint8_t *Laux, float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        int l = lp_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)MAX(0, MIN(nmax, l));
        float diff = scale * L[i] + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = lp_nearest_int(iscale * (x[i] - min));
            l = MAX(0, MIN(nmax, l));
            Laux[i] = (uint8_t)l;
            float w = weights[i];
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = use_mad ? fabsf(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                memcpy(L, Laux, (size_t)n);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Index and value of the element of largest magnitude (first on ties). */
static inline float signed_absmax(const float *x, int n, float *amax_out) {
    float amax = 0, max = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    *amax_out = amax;
    return max;
}

/* Symmetric fit for Q6_K (ggml's make_qx_quants with rmse_type 1, no imatrix):
 * L in [0, 2*nmax) holds l + nmax for l in [-nmax, nmax-1], weights x^2; tries 18
 * inverse scales around -nmax/max and keeps the best weighted least-squares scale. */
static float make_qx_quants(int n, int nmax, const float *x, int8_t *L) {
    float amax;
    const float max = signed_absmax(x, n, &amax);
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = lp_nearest_int(iscale * x[i]);
        l = MAX(-nmax, MIN(nmax - 1, l));
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = lp_nearest_int(iscale * x[i]);
            l = MAX(-nmax, MIN(nmax - 1, l));
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = lp_nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + MAX(-nmax, MIN(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Symmetric fit for Q3_K (ggml's make_q3_quants with do_rmse): start from rounding at
 * -nmax/max, then up to 5 coordinate-descent passes moving single codes when that
 * raises sumlx^2/suml2 (weights x^2). L gets l + nmax in [0, 2*nmax). */
static float make_q3_quants(int n, int nmax, const float *x, int8_t *L) {
    float amax;
    const float max = signed_absmax(x, n, &amax);
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = lp_nearest_int(iscale * x[i]);
        l = MAX(-nmax, MIN(nmax - 1, l));
        L[i] = (int8_t)l;
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (slx > 0) {
                float sl2 = suml2 - w * L[i] * L[i];
                int new_l = lp_nearest_int(x[i] * sl2 / slx);
                new_l = MAX(-nmax, MIN(nmax - 1, new_l));
                if (new_l != L[i]) {
                    slx += w * x[i] * new_l;
                    sl2 += w * new_l * new_l;
                    if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                        L[i] = (int8_t)new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; ++i) L[i] = (int8_t)(L[i] + nmax);
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* Q2_K/Q3_K 2-bit plane: element 128n + 32s + l goes to bits 2s..2s+1 of qs[32n + l]. */
static inline void pack_two_bit(const uint8_t *L, uint8_t qs[64]) {
    for (int j = 0; j < LP_QK_K; j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
}

/* ---- Q2_K ---- */

void lp_from_float_q2_K(const float *x, void *vy, int64_t n) {
    lp_block_q2_K *y = vy;
    const float q4scale = 15.f;
    for (int64_t i = 0; i < n / LP_QK_K; i++, x += LP_QK_K) {
        uint8_t L[LP_QK_K], Laux[16];
        float weights[16], mins[16], scales[16];
        float max_scale = 0, max_min = 0; /* the min is subtracted, so scales are >= 0 */
        for (int j = 0; j < 16; ++j) {
            for (int l = 0; l < 16; ++l) weights[l] = fabsf(x[16 * j + l]);
            scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0) {
            float iscale = q4scale / max_scale;
            for (int j = 0; j < 16; ++j) y[i].scales[j] = (uint8_t)lp_nearest_int(iscale * scales[j]);
            y[i].d = lp_f32_to_f16(max_scale / q4scale);
        } else {
            for (int j = 0; j < 16; ++j) y[i].scales[j] = 0;
            y[i].d = lp_f32_to_f16(0.f);
        }
        if (max_min > 0) {
            float iscale = q4scale / max_min;
            for (int j = 0; j < 16; ++j) y[i].scales[j] |= (uint8_t)(lp_nearest_int(iscale * mins[j]) << 4);
            y[i].dmin = lp_f32_to_f16(max_min / q4scale);
        } else {
            y[i].dmin = lp_f32_to_f16(0.f);
        }
        /* requantise against the scales as they will be decoded */
        for (int j = 0; j < 16; ++j) {
            const float d = lp_half_to_float(y[i].d) * (y[i].scales[j] & 0xF);
            if (!d) continue;
            const float dm = lp_half_to_float(y[i].dmin) * (y[i].scales[j] >> 4);
            for (int ii = 0; ii < 16; ++ii) {
                int l = lp_nearest_int((x[16 * j + ii] + dm) / d);
                L[16 * j + ii] = (uint8_t)MAX(0, MIN(3, l));
            }
        }
        pack_two_bit(L, y[i].qs);
    }
}

/* ---- Q3_K ---- */

void lp_from_float_q3_K(const float *x, void *vy, int64_t n) {
    lp_block_q3_K *y = vy;
    for (int64_t i = 0; i < n / LP_QK_K; i++, x += LP_QK_K) {
        int8_t L[LP_QK_K];
        float scales[16];
        float max_scale = 0, amax = 0;
        for (int j = 0; j < 16; ++j) {
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
            float scale = fabsf(scales[j]);
            if (scale > amax) {
                amax = scale;
                max_scale = scales[j];
            }
        }
        /* 6-bit scales: low nibbles in bytes 0..7 (j and j+8 share a byte), top 2 bits
         * of scale j in bits 2*(j/4) of byte 8 + j%4 */
        memset(y[i].scales, 0, 12);
        if (max_scale) {
            float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; ++j) {
                int8_t l = (int8_t)lp_nearest_int(iscale * scales[j]);
                l = (int8_t)(MAX(-32, MIN(31, l)) + 32);
                if (j < 8) y[i].scales[j] = l & 0xF;
                else y[i].scales[j - 8] |= (uint8_t)((l & 0xF) << 4);
                l >>= 4;
                y[i].scales[j % 4 + 8] |= (uint8_t)(l << (2 * (j / 4)));
            }
            y[i].d = lp_f32_to_f16(1 / iscale);
        } else {
            y[i].d = lp_f32_to_f16(0.f);
        }
        for (int j = 0; j < 16; ++j) {
            int8_t sc = (int8_t)(j < 8 ? y[i].scales[j] & 0xF : y[i].scales[j - 8] >> 4);
            sc = (int8_t)((sc | (((y[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
            float d = lp_half_to_float(y[i].d) * sc;
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii) {
                int l = lp_nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(MAX(-4, MIN(3, l)) + 4);
            }
        }
        /* high bit of element j -> bit j/32 of hmask[j%32]; the rest stays 2-bit */
        memset(y[i].hmask, 0, 32);
        for (int j = 0; j < LP_QK_K; ++j) {
            if (L[j] > 3) {
                y[i].hmask[j % 32] |= (uint8_t)(1 << (j / 32));
                L[j] -= 4;
            }
        }
        pack_two_bit((const uint8_t *)L, y[i].qs);
    }
}

/* ---- Q4_K / Q5_K (share everything but the code width and the high-bit plane) ---- */

/* Pack 8 6-bit scales and mins into 12 bytes (inverse of ggml's get_scale_min_k4). */
static void pack_scale_min_k4(const uint8_t ls[8], const uint8_t lm[8], uint8_t s[12]) {
    for (int j = 0; j < 8; ++j) {
        if (j < 4) {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (uint8_t)((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
            s[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
            s[j - 0] |= (uint8_t)((lm[j] >> 4) << 6);
        }
    }
}

static inline void unpack_scale_min_k4(int j, const uint8_t s[12], uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j - 0] >> 6) << 4));
    }
}

/* Shared body: fills d, dmin, scales[12] and the codes L[256] in [0, nmax]. */
static void quantize_k4k5(const float *x, int nmax, float rmin, int nstep, uint16_t *d_out, uint16_t *dmin_out,
                          uint8_t scales_out[12], uint8_t L[LP_QK_K]) {
    uint8_t Laux[32];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
        /* weight = rms of the sub-block + |x|: errors on large values cost more */
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
        ls[j] = (uint8_t)lp_nearest_int(inv_scale * scales[j]);
        lm[j] = (uint8_t)lp_nearest_int(inv_min * mins[j]);
        ls[j] = MIN(63, ls[j]);
        lm[j] = MIN(63, lm[j]);
    }
    pack_scale_min_k4(ls, lm, scales_out);
    *d_out = lp_f32_to_f16(max_scale / 63.f);
    *dmin_out = lp_f32_to_f16(max_min / 63.f);
    /* requantise against the scales as they will be decoded */
    for (int j = 0; j < 8; ++j) {
        uint8_t sc, m;
        unpack_scale_min_k4(j, scales_out, &sc, &m);
        const float d = lp_half_to_float(*d_out) * sc;
        if (!d) continue;
        const float dm = lp_half_to_float(*dmin_out) * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = lp_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)MAX(0, MIN(nmax, l));
        }
    }
}

/* Q4_K/Q5_K nibble plane: 64-element chunk c, element 64c+l low nibble of qs[32c+l],
 * element 64c+32+l high nibble. */
static inline void pack_k_nibbles(const uint8_t *L, uint8_t qs[128]) {
    for (int j = 0; j < LP_QK_K; j += 64)
        for (int l = 0; l < 32; ++l) qs[j / 2 + l] = (uint8_t)((L[j + l] & 0xF) | (L[j + l + 32] & 0xF) << 4);
}

void lp_from_float_q4_K(const float *x, void *vy, int64_t n) {
    lp_block_q4_K *y = vy;
    for (int64_t i = 0; i < n / LP_QK_K; i++, x += LP_QK_K) {
        uint8_t L[LP_QK_K];
        memset(y[i].scales, 0, 12);
        quantize_k4k5(x, 15, -1.f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
        pack_k_nibbles(L, y[i].qs);
    }
}

void lp_from_float_q5_K(const float *x, void *vy, int64_t n) {
    lp_block_q5_K *y = vy;
    for (int64_t i = 0; i < n / LP_QK_K; i++, x += LP_QK_K) {
        uint8_t L[LP_QK_K];
        memset(y[i].scales, 0, 12);
        quantize_k4k5(x, 31, -0.5f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        /* bit 4 of element e -> bit e/32 of qh[e%32] */
        memset(y[i].qh, 0, 32);
        for (int e = 0; e < LP_QK_K; ++e) y[i].qh[e % 32] |= (uint8_t)(((L[e] >> 4) & 1) << (e / 32));
        pack_k_nibbles(L, y[i].qs);
    }
}

/* ---- Q6_K ---- */

void lp_from_float_q6_K(const float *x, void *vy, int64_t n) {
    lp_block_q6_K *y = vy;
    for (int64_t i = 0; i < n / LP_QK_K; i++, x += LP_QK_K) {
        int8_t L[LP_QK_K];
        float scales[16];
        float max_scale = 0, max_abs_scale = 0;
        for (int ib = 0; ib < 16; ++ib) {
            const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
            scales[ib] = scale;
            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float iscale = -128.f / max_scale;
        y[i].d = lp_f32_to_f16(1 / iscale);
        for (int ib = 0; ib < 16; ++ib) y[i].scales[ib] = (int8_t)MIN(127, lp_nearest_int(iscale * scales[ib]));
        for (int j = 0; j < 16; ++j) {
            float d = lp_half_to_float(y[i].d) * y[i].scales[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii) {
                int l = lp_nearest_int(x[16 * j + ii] / d);
                L[16 * j + ii] = (int8_t)(MAX(-32, MIN(31, l)) + 32);
            }
        }
        /* 128-element halves: low nibbles of elements l, l+32 in ql[l], ql[l+32]; of
         * l+64, l+96 in their high nibbles; the four 2-bit tops share qh[l] */
        uint8_t *ql = y[i].ql, *qh = y[i].qh;
        for (int j = 0; j < LP_QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                  ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

/* ---- Q8_K (activations) ---- */

void lp_from_float_q8_K(const float *x, void *vy, int64_t n) {
    lp_block_q8_K *y = vy;
    for (int64_t i = 0; i < n / LP_QK_K; i++, x += LP_QK_K) {
        float amax;
        const float max = signed_absmax(x, LP_QK_K, &amax);
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        /* -127 (not -128) keeps codes symmetric, which the SIMD kernels rely on */
        const float iscale = -127.f / max;
        for (int j = 0; j < LP_QK_K; ++j) y[i].qs[j] = (int8_t)MIN(127, lp_nearest_int(iscale * x[j]));
        for (int j = 0; j < 16; ++j) {
            int sum = 0;
            for (int ii = 0; ii < 16; ++ii) sum += y[i].qs[j * 16 + ii];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}
