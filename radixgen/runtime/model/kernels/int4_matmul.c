/*
 * float32 activations times a 4-bit grouped weight, for CPUs: the GGUF file's Q4_0/Q4_1 blocks
 * multiplied as stored, for the few-row passes (decode steps) that are bound by reading weights.
 *
 *   out[m, c] = sum_k x[m, k] * w[c, k],   w[c, k] = (code[c, k] - 8) * scale[c, g] + zero[c, g]
 *
 * with g = k / 32. Each weight is rebuilt in float32 as the dequantized dense matrix holds it
 * (one fused multiply-add instead of a rounded multiply and add: at most one rounding apart),
 * and the products are summed in float32 in another order than a dense GEMM, so results agree
 * with it to float32 rounding. A weight is decoded once and used for every row of x. The
 * multiply needs AVX2 (x86); elsewhere `int4_matmul_available` says 0 and nothing else exists.
 *
 * Layouts (all contiguous):
 *   x       [rows, k]        float32, rows <= MAX_ROWS
 *   codes   [cols, k / 2]    uint8: per group of 32, byte i holds element i (low nibble) and
 *                            element i + 16 (high nibble), as a GGUF Q4 block stores them
 *   scales  [cols, k / 32]   float32
 *   zeros   [cols, k / 32]   float32 (the value of code 8)
 *   out     [rows, cols]     float32
 */
#include <stdint.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define GROUP 32
#define LANES 8
#define MAX_ROWS 16

/* 1 where this build can multiply (x86 with AVX2), else 0: callers keep the dense path. */
int int4_matmul_available(void) {
#ifdef __AVX2__
    return 1;
#else
    return 0;
#endif
}

#ifdef __AVX2__
/* One output column: four 8-lane accumulators per row, one per quarter of a group. */
static void column(const float *x, int64_t rows, int64_t k, const uint8_t *col_codes,
                   const float *col_scales, const float *col_zeros, float *sums) {
    __m256 acc[MAX_ROWS][4];
    for (int64_t m = 0; m < rows; ++m)
        for (int j = 0; j < 4; ++j) acc[m][j] = _mm256_setzero_ps();
    const __m128i low_bits = _mm_set1_epi8(15);
    const __m256i eight = _mm256_set1_epi32(8);
    for (int64_t g = 0; g < k / GROUP; ++g) {
        const __m128i bytes = _mm_loadu_si128((const __m128i *)(col_codes + g * (GROUP / 2)));
        const __m128i low = _mm_and_si128(bytes, low_bits);                     /* elements 0-15 */
        const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), low_bits); /* 16-31 */
        const __m256 scale = _mm256_set1_ps(col_scales[g]), zero = _mm256_set1_ps(col_zeros[g]);
        __m256 w[4];
        const __m128i quarters[4] = {low, _mm_srli_si128(low, 8), high, _mm_srli_si128(high, 8)};
        for (int j = 0; j < 4; ++j) {
            const __m256i centred = _mm256_sub_epi32(_mm256_cvtepu8_epi32(quarters[j]), eight);
            w[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(centred), scale, zero);
        }
        for (int64_t m = 0; m < rows; ++m) {
            const float *x_group = x + m * k + g * GROUP;
            for (int j = 0; j < 4; ++j)
                acc[m][j] = _mm256_fmadd_ps(_mm256_loadu_ps(x_group + LANES * j), w[j], acc[m][j]);
        }
    }
    for (int64_t m = 0; m < rows; ++m) {
        const __m256 total = _mm256_add_ps(_mm256_add_ps(acc[m][0], acc[m][1]),
                                           _mm256_add_ps(acc[m][2], acc[m][3]));
        float lanes[LANES];
        _mm256_storeu_ps(lanes, total);
        float sum = 0.0f;
        for (int l = 0; l < LANES; ++l) sum += lanes[l];
        sums[m] = sum;
    }
}

/* Returns 0, or -1 when rows or k are outside the kernel's limits. */
int int4_matmul_f32(const float *x, int64_t rows, int64_t k, const uint8_t *codes,
                    const float *scales, const float *zeros, int64_t cols, int num_threads,
                    float *out) {
    if (rows < 1 || rows > MAX_ROWS || k % GROUP != 0) return -1;
    const int64_t groups = k / GROUP;
#pragma omp parallel for schedule(static) num_threads(num_threads)
    for (int64_t c = 0; c < cols; ++c) {
        float sums[MAX_ROWS];
        column(x, rows, k, codes + c * (k / 2), scales + c * groups, zeros + c * groups, sums);
        for (int64_t m = 0; m < rows; ++m) out[m * cols + c] = sums[m];
    }
    return 0;
}
#endif
