/*
 * float32 activations times a GGUF block-quantized weight, for CPUs: the file's Q4_0/Q4_1 and
 * Q8_0 blocks multiplied as stored, for the passes of a few dozen rows (decode steps) where
 * reading the weights, not multiplying them, bounds a dense GEMM.
 *
 *   out[m, c] = sum_k x[m, k] * w[c, k],   with g = k / 32 and
 *   4-bit: w[c, k] = (code[c, k] - 8) * scale[c, g] + zero[c, g]
 *   8-bit: w[c, k] = code[c, k] * scale[c, g]
 *
 * Each weight is rebuilt in float32 as the dequantized dense matrix holds it (4-bit: one fused
 * multiply-add instead of a rounded multiply and add, at most one rounding apart; 8-bit: the
 * product is exact), and the products are summed in float32 in another order than a dense
 * GEMM, so results agree with it to float32 rounding. A weight is decoded once and used for
 * every row of x. The multiply needs AVX2 (x86); elsewhere `block_matmul_available` says 0 and
 * nothing else exists.
 *
 * Layouts (all contiguous):
 *   x       [rows, k]        float32
 *   codes   4-bit: [cols, k / 2] uint8: per group of 32, byte i holds element i (low nibble)
 *           and element i + 16 (high nibble), as a GGUF Q4 block stores them;
 *           8-bit: [cols, k] int8
 *   scales  [cols, k / 32]   float32
 *   zeros   [cols, k / 32]   float32 (4-bit only: the value of code 8)
 *   out     [rows, cols]     float32
 */
#include <stdint.h>
#include <stdlib.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define GROUP 32
#define LANES 8

/* 1 where this build can multiply (x86 with AVX2), else 0: callers keep the dense path. */
int block_matmul_available(void) {
#ifdef __AVX2__
    return 1;
#else
    return 0;
#endif
}

#ifdef __AVX2__
#define COL_BLOCK 4 /* columns decoded into a panel together */
#define ROW_BLOCK 2 /* rows of x per register tile: ROW_BLOCK x COL_BLOCK accumulators */

/* Where one weight's blocks lie; `decode` rebuilds column `col` in float32 into dest [k]. */
typedef struct BlockWeight {
    const void *codes;
    const float *scales, *zeros;
    void (*decode)(const struct BlockWeight *w, int64_t k, int64_t col, float *dest);
} BlockWeight;

/* 4-bit: per group of 32, the 16 code bytes widened to four vectors of 8. */
static void decode_int4_column(const BlockWeight *w, int64_t k, int64_t col, float *dest) {
    const uint8_t *codes = (const uint8_t *)w->codes + col * (k / 2);
    const float *scales = w->scales + col * (k / GROUP), *zeros = w->zeros + col * (k / GROUP);
    const __m128i low_bits = _mm_set1_epi8(15);
    const __m256i eight = _mm256_set1_epi32(8);
    for (int64_t g = 0; g < k / GROUP; ++g) {
        const __m128i bytes = _mm_loadu_si128((const __m128i *)(codes + g * (GROUP / 2)));
        const __m128i low = _mm_and_si128(bytes, low_bits);                     /* elements 0-15 */
        const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), low_bits); /* 16-31 */
        const __m256 scale = _mm256_set1_ps(scales[g]), zero = _mm256_set1_ps(zeros[g]);
        const __m128i quarters[4] = {low, _mm_srli_si128(low, 8), high, _mm_srli_si128(high, 8)};
        for (int j = 0; j < 4; ++j) {
            const __m256i centred = _mm256_sub_epi32(_mm256_cvtepu8_epi32(quarters[j]), eight);
            _mm256_storeu_ps(dest + g * GROUP + LANES * j,
                             _mm256_fmadd_ps(_mm256_cvtepi32_ps(centred), scale, zero));
        }
    }
}

/* 8-bit: per group of 32, the signed codes widened and scaled (exact in float32). */
static void decode_int8_column(const BlockWeight *w, int64_t k, int64_t col, float *dest) {
    const int8_t *codes = (const int8_t *)w->codes + col * k;
    const float *scales = w->scales + col * (k / GROUP);
    for (int64_t g = 0; g < k / GROUP; ++g) {
        const __m256 scale = _mm256_set1_ps(scales[g]);
        for (int j = 0; j < GROUP / LANES; ++j) {
            const __m128i bytes = _mm_loadl_epi64((const __m128i *)(codes + g * GROUP + LANES * j));
            const __m256 values = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
            _mm256_storeu_ps(dest + g * GROUP + LANES * j, _mm256_mul_ps(values, scale));
        }
    }
}

static inline float sum_lanes(__m256 a) {
    const __m128 half = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
}

/* out[r, c] = x[r] . panel[c] for nr rows and nc columns (constants after inlining): every
 * accumulator in a register, each x vector loaded once for all nc columns. */
static inline __attribute__((always_inline)) void tile(const float *x, int64_t k,
                                                       const float *panel, int nr, int nc,
                                                       float *out, int64_t out_stride) {
    __m256 acc[ROW_BLOCK][COL_BLOCK];
    for (int r = 0; r < nr; ++r)
        for (int c = 0; c < nc; ++c) acc[r][c] = _mm256_setzero_ps();
    for (int64_t d = 0; d < k; d += LANES) {
        __m256 w[COL_BLOCK];
        for (int c = 0; c < nc; ++c) w[c] = _mm256_loadu_ps(panel + c * k + d);
        for (int r = 0; r < nr; ++r) {
            const __m256 xv = _mm256_loadu_ps(x + r * k + d);
            for (int c = 0; c < nc; ++c) acc[r][c] = _mm256_fmadd_ps(xv, w[c], acc[r][c]);
        }
    }
    for (int r = 0; r < nr; ++r)
        for (int c = 0; c < nc; ++c) out[r * out_stride + c] = sum_lanes(acc[r][c]);
}

/* A tile of any shape up to ROW_BLOCK x COL_BLOCK, dispatched to a constant-shape body. */
static void any_tile(const float *x, int64_t k, const float *panel, int nr, int nc, float *out,
                     int64_t out_stride) {
#define TILE(R, C)                                          \
    if (nr == R && nc == C) {                               \
        tile(x, k, panel, R, C, out, out_stride);           \
        return;                                             \
    }
    TILE(2, 4) TILE(1, 4) TILE(2, 3) TILE(1, 3)
    TILE(2, 2) TILE(1, 2) TILE(2, 1) TILE(1, 1)
#undef TILE
}

/* Returns 0, -1 when k is no multiple of the group size, -2 when scratch memory is lacking. Each
 * thread decodes COL_BLOCK columns at a time into a float32 panel (it stays in L1/L2) and
 * multiplies every row of x by it in register tiles, so a weight is decoded once per call and
 * x is read once per panel rather than once per column. */
static int panel_matmul(const float *x, int64_t rows, int64_t k, const BlockWeight *w,
                        int64_t cols, int num_threads, float *out) {
    if (rows < 0 || k % GROUP != 0) return -1;
    if (rows == 0) return 0;
    const int64_t blocks = (cols + COL_BLOCK - 1) / COL_BLOCK;
    int failed = 0;
#pragma omp parallel num_threads(num_threads)
    {
        float *panel = aligned_alloc(64, COL_BLOCK * k * sizeof(float)); /* k % 32 == 0 */
        if (panel == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t block = 0; block < blocks; ++block) {
            if (panel == NULL) continue;
            const int64_t c0 = block * COL_BLOCK;
            const int nc = cols - c0 < COL_BLOCK ? (int)(cols - c0) : COL_BLOCK;
            for (int c = 0; c < nc; ++c) w->decode(w, k, c0 + c, panel + c * k);
            for (int64_t r0 = 0; r0 < rows; r0 += ROW_BLOCK) {
                const int nr = rows - r0 < ROW_BLOCK ? (int)(rows - r0) : ROW_BLOCK;
                any_tile(x + r0 * k, k, panel, nr, nc, out + r0 * cols + c0, cols);
            }
        }
        free(panel);
    }
    return failed ? -2 : 0;
}

int int4_matmul_f32(const float *x, int64_t rows, int64_t k, const uint8_t *codes,
                    const float *scales, const float *zeros, int64_t cols, int num_threads,
                    float *out) {
    const BlockWeight w = {codes, scales, zeros, decode_int4_column};
    return panel_matmul(x, rows, k, &w, cols, num_threads, out);
}

int int8_matmul_f32(const float *x, int64_t rows, int64_t k, const int8_t *codes,
                    const float *scales, int64_t cols, int num_threads, float *out) {
    const BlockWeight w = {codes, scales, NULL, decode_int8_column};
    return panel_matmul(x, rows, k, &w, cols, num_threads, out);
}
#endif
