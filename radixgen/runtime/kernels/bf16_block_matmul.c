/*
 * bfloat16 activations times a GGUF block-quantized weight, with AVX512-BF16 dot products: the
 * decode-step matmul of bfloat16 engines, where reading the weights bounds the step.
 *
 *   out[m, c] = sum_k x[m, k] * w[c, k],   with g = k / 32 and
 *   4-bit: w[c, k] = code[c, k] * scale[c, g] + min[c, g]      (GGUF Q4_1's d and m)
 *   8-bit: w[c, k] = code[c, k] * scale[c, g]
 *
 * `vdpbf16ps` multiplies pairs of bfloat16 values and adds both products to a float32 lane. A
 * 4-bit code c becomes the bfloat16 value 128 + c with one OR (0x4300 | c: exponent 2^7, the
 * code in the low mantissa bits), exactly; an 8-bit code goes through float32 (exact, |c| <= 128).
 * Products of bfloat16 values are exact in float32, so each group's sum
 *
 *   acc[m, c, g] = sum_{k in g} (128 + code[c, k]) * x[m, k]         (4-bit)
 *   out[m, c]   += scale[c, g] * acc + (min[c, g] - 128 * scale[c, g]) * xsum[m, g]
 *
 * where xsum[m, g] is the float32 sum of x over the group, rounds only in float32 additions: the
 * weights are the file's own values, never rounded to bfloat16 (PyTorch's int4 kernel rounds
 * scales and zeros to bfloat16). The 128 offset costs a cancellation of about 16x in relative
 * float32 rounding (~1e-6), far below bfloat16's resolution.
 *
 * A batch-1 decode step streams every weight once, so its time is the bytes it reads. A 4-bit
 * group's scale and min are the file's float16 values: kept as float16 (`half` = 1) they cost 4
 * bytes per 32 weights beside 16 of codes, where float32 copies cost 8 (the step ran ~10% faster
 * for it). Weights whose scale or min is not a float16 value keep float32 (`half` = 0).
 *
 * Layout (`bf16_block_matmul.py` packs it): columns go in panels of 16, one vector lane each;
 * within a panel, the codes of consecutive input pairs lie together so that one vector holds
 * input pair (2j, 2j+1) of all 16 columns, as `vdpbf16ps` wants them.
 *
 *   x       [rows, k]                     bfloat16, rows `x_stride` elements apart
 *   4-bit:  codes [cols / 16, k / 4, 32]  uint8: byte 2i + j of (p, q) holds, low nibble, the
 *                                         code of column 16p + i at input 4q + j, high nibble
 *                                         at input 4q + 2 + j
 *           scales, mins [cols / 16, k / 32, 16] float16 (`half`) or float32
 *   8-bit:  codes [cols / 16, k / 2, 32]  int8: byte 2i + j of (p, q) is the code of column
 *                                         16p + i at input 2q + j
 *           scales [cols / 16, k / 32, 16] float32
 *   out     [rows, cols]                  bfloat16 (4-bit) or float32 (8-bit)
 *
 * cols is a multiple of 16 (the packer pads with zero weights) and k of 32. Without AVX512-BF16
 * `bf16_block_matmul_available` says 0 and nothing else exists: engines keep PyTorch's kernel.
 */
#include <stdlib.h>
#ifdef __AVX512BF16__
#include <immintrin.h>
#endif

#include "common.h"

#define GROUP 32
#define PANEL 16   /* columns per panel: one float32 lane each */
#define ROW_TILE 4 /* rows of x multiplied per pass over a panel's codes */
#define MAX_GROUPS 1024 /* k up to 32768 */

int bf16_block_matmul_available(void) {
#ifdef __AVX512BF16__
    return 1;
#else
    return 0;
#endif
}

#ifdef __AVX512BF16__

/* Sums of x over each group of 32 inputs, in float32: [rows, k / 32]. */
static void group_sums(const uint16_t *x, int64_t x_stride, int64_t rows, int64_t groups,
                       float *sums) {
    for (int64_t m = 0; m < rows; ++m)
        for (int64_t g = 0; g < groups; ++g) {
            float sum = 0.0f;
            for (int d = 0; d < GROUP; ++d) sum += bf16_to_float(x[m * x_stride + g * GROUP + d]);
            sums[m * groups + g] = sum;
        }
}

/* One input pair of row m at input `at`, broadcast to every lane as a bfloat16 pair. */
INLINE __m512bh pair(const uint16_t *x, int64_t at) {
    int32_t bits;
    memcpy(&bits, x + at, sizeof bits);
    return (__m512bh)_mm512_set1_epi32(bits);
}

INLINE void store_lanes(void *out, int64_t at, __m512 value, int bf16_out) {
    if (bf16_out)
        _mm256_storeu_si256((__m256i *)((uint16_t *)out + at), (__m256i)_mm512_cvtneps_pbh(value));
    else
        _mm512_storeu_ps((float *)out + at, value);
}

/* 16 per-column group values (a scale or a min) at `at`, float16 or float32, in float32. */
INLINE __m512 group_values(const void *values, int64_t at, int half) {
    if (half) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)values + at)));
    return _mm512_loadu_ps((const float *)values + at);
}

/* Rows r0 .. r0 + NR of one 4-bit panel: every group's codes are decoded once for all NR rows. */
INLINE void int4_panel(const uint16_t *x, int64_t x_stride, int64_t k, const uint8_t *codes,
                       const void *scales, const void *mins, int half, const float *sums, int NR,
                       void *out, int64_t out_stride) {
    const __m512i low = _mm512_set1_epi16(0x0f), one28 = _mm512_set1_epi16(0x4300);
    const int64_t groups = k / GROUP;
    __m512 total[ROW_TILE];
    for (int r = 0; r < NR; ++r) total[r] = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
        /* Four independent chains per row (pair half x even/odd step), so the dot product's
         * latency does not bound one row alone. Every tile width sums in this same order: a
         * row's result does not depend on the rows beside it (a speculative verify pass of
         * several tokens rounds each exactly as a one-token decode step does). */
        __m512 acc[4][ROW_TILE];
        for (int c = 0; c < 4; ++c)
            for (int r = 0; r < NR; ++r) acc[c][r] = _mm512_setzero_ps();
        const uint8_t *block = codes + g * (GROUP / 4) * 32;
#pragma GCC unroll 8
        for (int q = 0; q < GROUP / 4; ++q) {
            const __m256i raw = _mm256_loadu_si256((const __m256i *)(block + q * 32));
            const __m512i bytes = _mm512_cvtepu8_epi16(raw);
            const __m512bh first = (__m512bh)_mm512_or_si512(_mm512_and_si512(bytes, low), one28);
            const __m512bh second = (__m512bh)_mm512_or_si512(_mm512_srli_epi16(bytes, 4), one28);
            const int64_t at = g * GROUP + q * 4;
            const int c = 2 * (q & 1);
            for (int r = 0; r < NR; ++r) {
                acc[c][r] = _mm512_dpbf16_ps(acc[c][r], first, pair(x + r * x_stride, at));
                const __m512bh next = pair(x + r * x_stride, at + 2);
                acc[c + 1][r] = _mm512_dpbf16_ps(acc[c + 1][r], second, next);
            }
        }
        const __m512 scale = group_values(scales, g * PANEL, half);
        /* min - 128 * scale, rounded once: the product is exact */
        const __m512 bias = _mm512_fmadd_ps(_mm512_set1_ps(-128.0f), scale,
                                            group_values(mins, g * PANEL, half));
        for (int r = 0; r < NR; ++r) {
            const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[0][r], acc[1][r]),
                                             _mm512_add_ps(acc[2][r], acc[3][r]));
            total[r] = _mm512_fmadd_ps(bias, _mm512_set1_ps(sums[r * groups + g]), total[r]);
            total[r] = _mm512_fmadd_ps(scale, sum, total[r]);
        }
    }
    for (int r = 0; r < NR; ++r) store_lanes(out, r * out_stride, total[r], 1);
}

/* Rows r0 .. r0 + NR of one 8-bit panel. */
INLINE void int8_panel(const uint16_t *x, int64_t x_stride, int64_t k, const int8_t *codes,
                       const float *scales, int NR, void *out, int64_t out_stride) {
    const int64_t groups = k / GROUP;
    __m512 total[ROW_TILE];
    for (int r = 0; r < NR; ++r) total[r] = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
        __m512 acc[4][ROW_TILE]; /* four chains for every tile width, as in int4_panel */
        for (int c = 0; c < 4; ++c)
            for (int r = 0; r < NR; ++r) acc[c][r] = _mm512_setzero_ps();
        const int8_t *block = codes + g * (GROUP / 2) * 32;
#pragma GCC unroll 16
        for (int q = 0; q < GROUP / 2; ++q) {
            const __m128i *at_codes = (const __m128i *)(block + q * 32);
            const __m512i low_codes = _mm512_cvtepi8_epi32(_mm_loadu_si128(at_codes));
            const __m512i high_codes = _mm512_cvtepi8_epi32(_mm_loadu_si128(at_codes + 1));
            const __m512 first = _mm512_cvtepi32_ps(low_codes);
            const __m512 second = _mm512_cvtepi32_ps(high_codes);
            const __m512bh weights = _mm512_cvtne2ps_pbh(second, first);
            const int64_t at = g * GROUP + q * 2;
            const int c = q & 3;
            for (int r = 0; r < NR; ++r)
                acc[c][r] = _mm512_dpbf16_ps(acc[c][r], weights, pair(x + r * x_stride, at));
        }
        const __m512 scale = _mm512_loadu_ps(scales + g * PANEL);
        for (int r = 0; r < NR; ++r) {
            const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[0][r], acc[1][r]),
                                             _mm512_add_ps(acc[2][r], acc[3][r]));
            total[r] = _mm512_fmadd_ps(scale, sum, total[r]);
        }
    }
    for (int r = 0; r < NR; ++r) store_lanes(out, r * out_stride, total[r], 0);
}

/* Every row tile of panel p (the tile width a compile-time constant for the inner loops). */
static void int4_panel_rows(const uint16_t *x, int64_t x_stride, int64_t rows, int64_t k,
                            const uint8_t *codes, const void *scales, const void *mins, int half,
                            const float *sums, int64_t cols, int64_t p, uint16_t *out) {
    const int64_t groups = k / GROUP;
    const size_t panel_bytes = (size_t)(groups * PANEL) * (half ? sizeof(uint16_t) : sizeof(float));
    codes += p * (k / 4) * 32;
    scales = (const char *)scales + p * panel_bytes;
    mins = (const char *)mins + p * panel_bytes;
    for (int64_t r0 = 0; r0 < rows; r0 += ROW_TILE) {
        const uint16_t *xr = x + r0 * x_stride;
        const float *sr = sums + r0 * groups;
        uint16_t *o = out + r0 * cols + p * PANEL;
        switch (rows - r0 < ROW_TILE ? rows - r0 : ROW_TILE) {
        case 1: int4_panel(xr, x_stride, k, codes, scales, mins, half, sr, 1, o, cols); break;
        case 2: int4_panel(xr, x_stride, k, codes, scales, mins, half, sr, 2, o, cols); break;
        case 3: int4_panel(xr, x_stride, k, codes, scales, mins, half, sr, 3, o, cols); break;
        default: int4_panel(xr, x_stride, k, codes, scales, mins, half, sr, 4, o, cols); break;
        }
    }
}

static void int8_panel_rows(const uint16_t *x, int64_t x_stride, int64_t rows, int64_t k,
                            const int8_t *codes, const float *scales, int64_t cols, int64_t p,
                            float *out) {
    codes += p * (k / 2) * 32;
    scales += p * (k / GROUP) * PANEL;
    for (int64_t r0 = 0; r0 < rows; r0 += ROW_TILE) {
        const uint16_t *xr = x + r0 * x_stride;
        float *o = out + r0 * cols + p * PANEL;
        switch (rows - r0 < ROW_TILE ? rows - r0 : ROW_TILE) {
        case 1: int8_panel(xr, x_stride, k, codes, scales, 1, o, cols); break;
        case 2: int8_panel(xr, x_stride, k, codes, scales, 2, o, cols); break;
        case 3: int8_panel(xr, x_stride, k, codes, scales, 3, o, cols); break;
        default: int8_panel(xr, x_stride, k, codes, scales, 4, o, cols); break;
        }
    }
}

/* Returns 0, or -1 when k is no multiple of 32 (or too wide) or cols no multiple of 16, -2 when
 * memory for the group sums is lacking. Threads take panels of 16 columns. */
int int4_matmul_bf16(const uint16_t *x, int64_t x_stride, int64_t rows, int64_t k,
                     const uint8_t *codes, const void *scales, const void *mins, int half,
                     int64_t cols, int num_threads, uint16_t *out) {
    if (rows < 0 || k % GROUP != 0 || k / GROUP > MAX_GROUPS || cols % PANEL != 0) return -1;
    if (rows == 0) return 0;
    float *sums = malloc((size_t)(rows * (k / GROUP)) * sizeof(float));
    if (sums == NULL) return -2;
    group_sums(x, x_stride, rows, k / GROUP, sums);
    const int64_t panels = cols / PANEL;
#pragma omp parallel for schedule(static) num_threads(num_threads) if (panels > 1)
    for (int64_t p = 0; p < panels; ++p)
        int4_panel_rows(x, x_stride, rows, k, codes, scales, mins, half, sums, cols, p, out);
    free(sums);
    return 0;
}

int int8_matmul_bf16(const uint16_t *x, int64_t x_stride, int64_t rows, int64_t k,
                     const int8_t *codes, const float *scales, int64_t cols, int num_threads,
                     float *out) {
    if (rows < 0 || k % GROUP != 0 || cols % PANEL != 0) return -1;
    const int64_t panels = cols / PANEL;
#pragma omp parallel for schedule(static) num_threads(num_threads) if (panels > 1)
    for (int64_t p = 0; p < panels; ++p)
        int8_panel_rows(x, x_stride, rows, k, codes, scales, cols, p, out);
    return 0;
}
#endif
