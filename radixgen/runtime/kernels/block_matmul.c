/*
 * float32 activations times a GGUF block-quantized weight, for CPUs: the file's Q4_0/Q4_1 and
 * Q8_0 codes multiplied as stored, for the passes of a few dozen rows (decode steps) where
 * reading the weights, not multiplying them, bounds a dense GEMM.
 *
 *   out[m, c] = sum_k x[m, k] * w[c, k],   with g = k / 32 and
 *   4-bit: w[c, k] = (code[c, k] - 8) * scale[c, g] + zero[c, g]
 *   8-bit: w[c, k] = code[c, k] * scale[c, g]
 *
 * Each weight is rebuilt in float32 as the dequantized dense matrix holds it (4-bit: one fused
 * multiply-add instead of a rounded multiply and add, at most one rounding apart; 8-bit: the
 * product is exact), and each output is summed over k in order (up to 4 rows: two interleaved
 * chains), so results agree with a dense GEMM to float32 rounding. A weight is decoded once
 * per call and used for every row of x. The multiply needs AVX2
 * (x86); elsewhere `block_matmul_available` says 0 and nothing else exists.
 *
 * The codes are not in the file's order but in column panels (`block_matmul.py` packs them):
 * columns go in blocks of 8, and within a block, 8 consecutive inputs of all 8 columns lie
 * together, so one vector load yields one input of 8 columns.
 *
 *   x       [rows, k]                float32
 *   codes   4-bit: [cols / 8, k / 8, 8] int32: nibble j of word (b, p, i) is the code of
 *           column 8b + i at input 8p + j;
 *           8-bit: [cols / 8, k, 8] int8: byte (b, d, i) is the code of column 8b + i at d
 *   scales  [cols / 8, k / 32, 8]    float32
 *   zeros   [cols / 8, k / 32, 8]    float32 (4-bit only: the value of code 8)
 *   out     [rows, cols]             float32
 *
 * cols is a multiple of 16 (the packer pads with zero weights) and k of 32.
 */
#include <stdlib.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "common.h"

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
#define PANEL_COLS 16 /* columns decoded together: two vectors of 8, one panel row per input */
#define ROW_TILE 6    /* rows of x per register tile: ROW_TILE x 2 vector accumulators */
#define SLICE_GROUPS 16 /* groups of inputs decoded at a time: a 32 KB panel (best of 4/8/16/all) */

/* Where one weight's codes lie, and how to rebuild a slice of it. */
typedef struct BlockWeight {
    const void *codes;
    const float *scales, *zeros;
    /* Rebuilds inputs [g0 * 32, g1 * 32) of the 8-column block `block` (of a weight k wide) in
     * float32: input g0 * 32 + d, column i of the block, lands in dest[d * PANEL_COLS + i]. */
    void (*decode)(const struct BlockWeight *w, int64_t k, int64_t block, int64_t g0,
                   int64_t g1, float *dest);
    /* out[r, 0:8] = x[r] . the 8 columns of `block` for nr <= FEW_ROWS rows of x, decoding
     * in registers. */
    void (*few_rows)(const struct BlockWeight *w, int64_t k, int64_t block, const float *x,
                     int64_t x_stride, int nr, float *out, int64_t out_stride);
} BlockWeight;

/* 4-bit: a word per column holds 8 inputs; shifting all 8 words at once yields input j of the
 * 8 columns, rebuilt as (code - 8) * scale + zero. */
INLINE __m256 int4_weights(__m256i words, int j, __m256 scale, __m256 zero) {
    const __m256i nibble = _mm256_and_si256(_mm256_srli_epi32(words, 4 * j), _mm256_set1_epi32(15));
    const __m256 centred = _mm256_cvtepi32_ps(_mm256_sub_epi32(nibble, _mm256_set1_epi32(8)));
    return _mm256_fmadd_ps(centred, scale, zero);
}

/* 8-bit: 8 bytes per input, one per column, widened and scaled (exact in float32). */
INLINE __m256 int8_weights(const int8_t *bytes, __m256 scale) {
    const __m128i codes = _mm_loadl_epi64((const __m128i *)bytes);
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(codes)), scale);
}

static void decode_int4_block(const BlockWeight *w, int64_t k, int64_t block, int64_t g0,
                              int64_t g1, float *dest) {
    const __m256i *codes = (const __m256i *)w->codes + block * (k / LANES);
    const float *scales = w->scales + block * (k / GROUP) * LANES;
    const float *zeros = w->zeros + block * (k / GROUP) * LANES;
    for (int64_t g = g0; g < g1; ++g) {
        const __m256 scale = _mm256_loadu_ps(scales + g * LANES);
        const __m256 zero = _mm256_loadu_ps(zeros + g * LANES);
        for (int p = 0; p < GROUP / LANES; ++p) {
            const __m256i words = _mm256_loadu_si256(codes + g * (GROUP / LANES) + p);
            float *row = dest + ((g - g0) * GROUP + p * LANES) * PANEL_COLS;
            for (int j = 0; j < LANES; ++j)
                _mm256_store_ps(row + j * PANEL_COLS, int4_weights(words, j, scale, zero));
        }
    }
}

static void decode_int8_block(const BlockWeight *w, int64_t k, int64_t block, int64_t g0,
                              int64_t g1, float *dest) {
    const int8_t *codes = (const int8_t *)w->codes + block * k * LANES;
    const float *scales = w->scales + block * (k / GROUP) * LANES;
    for (int64_t g = g0; g < g1; ++g) {
        const __m256 scale = _mm256_loadu_ps(scales + g * LANES);
        for (int64_t d = g * GROUP; d < (g + 1) * GROUP; ++d)
            _mm256_store_ps(dest + (d - g0 * GROUP) * PANEL_COLS,
                            int8_weights(codes + d * LANES, scale));
    }
}

/* Rows 0..nr-1 (nr <= FEW_ROWS, a constant after inlining) each multiply the weights of input
 * `d` (one vector: 8 columns) into chain c (named accumulators acc<row>_<c>; two chains, every
 * other input, hide the multiply-add latency). */
#define FEW_ROWS 4
#define FEW_ROWS_ACCUMULATE(weights_of_d, d, c)                                                  \
    {                                                                                            \
        const __m256 weights = (weights_of_d);                                                   \
        acc0_##c = _mm256_fmadd_ps(_mm256_broadcast_ss(x + (d)), weights, acc0_##c);             \
        if (nr > 1)                                                                              \
            acc1_##c = _mm256_fmadd_ps(_mm256_broadcast_ss(x + x_stride + (d)), weights,         \
                                       acc1_##c);                                                \
        if (nr > 2)                                                                              \
            acc2_##c = _mm256_fmadd_ps(_mm256_broadcast_ss(x + 2 * x_stride + (d)), weights,     \
                                       acc2_##c);                                                \
        if (nr > 3)                                                                              \
            acc3_##c = _mm256_fmadd_ps(_mm256_broadcast_ss(x + 3 * x_stride + (d)), weights,     \
                                       acc3_##c);                                                \
    }
#define FEW_ROWS_DECLARE                                                                         \
    const __m256 zero_acc = _mm256_setzero_ps();                                                 \
    __m256 acc0_0 = zero_acc, acc0_1 = zero_acc, acc1_0 = zero_acc, acc1_1 = zero_acc;           \
    __m256 acc2_0 = zero_acc, acc2_1 = zero_acc, acc3_0 = zero_acc, acc3_1 = zero_acc;
#define FEW_ROWS_STORE                                                                           \
    {                                                                                            \
        _mm256_storeu_ps(out, _mm256_add_ps(acc0_0, acc0_1));                                    \
        if (nr > 1) _mm256_storeu_ps(out + out_stride, _mm256_add_ps(acc1_0, acc1_1));           \
        if (nr > 2) _mm256_storeu_ps(out + 2 * out_stride, _mm256_add_ps(acc2_0, acc2_1));       \
        if (nr > 3) _mm256_storeu_ps(out + 3 * out_stride, _mm256_add_ps(acc3_0, acc3_1));       \
    }

/* out[r, 0:8] = x[r] . the 8 columns of `block` for a few rows, decoding in registers: for so
 * few rows a panel would be written and read back for little use. */
INLINE void int4_few_rows(const BlockWeight *w, int64_t k, int64_t block, const float *x,
                          int64_t x_stride, int nr, float *out, int64_t out_stride) {
    const __m256i *codes = (const __m256i *)w->codes + block * (k / LANES);
    const float *scales = w->scales + block * (k / GROUP) * LANES;
    const float *zeros = w->zeros + block * (k / GROUP) * LANES;
    FEW_ROWS_DECLARE
    for (int64_t g = 0; g < k / GROUP; ++g) {
        const __m256 scale = _mm256_loadu_ps(scales + g * LANES);
        const __m256 zero = _mm256_loadu_ps(zeros + g * LANES);
        for (int p = 0; p < GROUP / LANES; ++p) {
            const __m256i words = _mm256_loadu_si256(codes + g * (GROUP / LANES) + p);
            const int64_t d = g * GROUP + p * LANES;
#define INPUT(j, c) FEW_ROWS_ACCUMULATE(int4_weights(words, j, scale, zero), d + j, c)
            INPUT(0, 0) INPUT(1, 1) INPUT(2, 0) INPUT(3, 1)
            INPUT(4, 0) INPUT(5, 1) INPUT(6, 0) INPUT(7, 1)
#undef INPUT
        }
    }
    FEW_ROWS_STORE
}

INLINE void int8_few_rows(const BlockWeight *w, int64_t k, int64_t block, const float *x,
                          int64_t x_stride, int nr, float *out, int64_t out_stride) {
    const int8_t *codes = (const int8_t *)w->codes + block * k * LANES;
    const float *scales = w->scales + block * (k / GROUP) * LANES;
    FEW_ROWS_DECLARE
    for (int64_t g = 0; g < k / GROUP; ++g) {
        const __m256 scale = _mm256_loadu_ps(scales + g * LANES);
        for (int64_t d = g * GROUP; d < (g + 1) * GROUP; d += 2) {
#define INPUT(j, c) FEW_ROWS_ACCUMULATE(int8_weights(codes + (d + j) * LANES, scale), d + j, c)
            INPUT(0, 0) INPUT(1, 1)
#undef INPUT
        }
    }
    FEW_ROWS_STORE
}

/* The few-rows bodies for 1..FEW_ROWS rows, each with its row count a constant. */
#define FEW_ROWS_DISPATCH(name)                                                                  \
    static void name##_dispatch(const BlockWeight *w, int64_t k, int64_t block, const float *x,  \
                                int64_t x_stride, int nr, float *out, int64_t out_stride) {      \
        switch (nr) {                                                                            \
        case 1: name(w, k, block, x, x_stride, 1, out, out_stride); break;                       \
        case 2: name(w, k, block, x, x_stride, 2, out, out_stride); break;                       \
        case 3: name(w, k, block, x, x_stride, 3, out, out_stride); break;                       \
        default: name(w, k, block, x, x_stride, FEW_ROWS, out, out_stride); break;               \
        }                                                                                        \
    }
FEW_ROWS_DISPATCH(int4_few_rows)
FEW_ROWS_DISPATCH(int8_few_rows)
#undef FEW_ROWS_DISPATCH
#undef FEW_ROWS_DECLARE
#undef FEW_ROWS_ACCUMULATE
#undef FEW_ROWS_STORE

/* out[r, 0:16] (+)= x[r, 0:len] . panel for nr rows (a constant after inlining): input d of
 * each row is broadcast and multiplies panel row d, so every output column stays in its vector
 * lane and nothing is summed across lanes. `accumulate`: add to what out holds (the sums over
 * the earlier slices of k). The accumulators are named variables, not an array: GCC keeps an
 * array of vectors in memory here (a float load may alias it), storing it every step. */
INLINE void tile(const float *x, int64_t x_stride, int64_t len, const float *panel, int nr,
                 int accumulate, float *out, int64_t out_stride) {
    __m256 lo0, hi0, lo1, hi1, lo2, hi2, lo3, hi3, lo4, hi4, lo5, hi5; /* columns 0-7, 8-15 */
    lo0 = hi0 = lo1 = hi1 = lo2 = hi2 = lo3 = hi3 = lo4 = hi4 = lo5 = hi5 = _mm256_setzero_ps();
#define LOAD(i)                                                                                  \
    if (nr > i && accumulate) {                                                                  \
        lo##i = _mm256_loadu_ps(out + i * out_stride);                                           \
        hi##i = _mm256_loadu_ps(out + i * out_stride + LANES);                                   \
    }
    LOAD(0) LOAD(1) LOAD(2) LOAD(3) LOAD(4) LOAD(5)
#undef LOAD
    for (int64_t d = 0; d < len; ++d) {
        const __m256 low_cols = _mm256_load_ps(panel + d * PANEL_COLS);
        const __m256 high_cols = _mm256_load_ps(panel + d * PANEL_COLS + LANES);
#define ROW(i)                                                                                   \
    if (nr > i) {                                                                                \
        const __m256 xv = _mm256_broadcast_ss(x + i * x_stride + d);                             \
        lo##i = _mm256_fmadd_ps(xv, low_cols, lo##i);                                            \
        hi##i = _mm256_fmadd_ps(xv, high_cols, hi##i);                                           \
    }
        ROW(0) ROW(1) ROW(2) ROW(3) ROW(4) ROW(5)
#undef ROW
    }
#define STORE(i)                                                                                 \
    if (nr > i) {                                                                                \
        _mm256_storeu_ps(out + i * out_stride, lo##i);                                           \
        _mm256_storeu_ps(out + i * out_stride + LANES, hi##i);                                   \
    }
    STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5)
#undef STORE
}

/* One or two rows: their output vectors alone would wait on each multiply-add's latency, so
 * four chains per output take every fourth input each and are added at the end (named
 * variables again, as in `tile`). */
INLINE void tile_chained(const float *x, int64_t x_stride, int64_t len, const float *panel, int nr,
                         int accumulate, float *out, int64_t out_stride) {
    const __m256 zero = _mm256_setzero_ps();
#define DECLARE(c) __m256 lo0_##c = zero, hi0_##c = zero, lo1_##c = zero, hi1_##c = zero;
    DECLARE(0) DECLARE(1) DECLARE(2) DECLARE(3)
#undef DECLARE
    if (accumulate) {
        lo0_0 = _mm256_loadu_ps(out), hi0_0 = _mm256_loadu_ps(out + LANES);
        if (nr > 1)
            lo1_0 = _mm256_loadu_ps(out + out_stride),
            hi1_0 = _mm256_loadu_ps(out + out_stride + LANES);
    }
    for (int64_t d = 0; d < len; d += 4) {
#define STEP(c)                                                                                  \
    {                                                                                            \
        const __m256 low_cols = _mm256_load_ps(panel + (d + c) * PANEL_COLS);                    \
        const __m256 high_cols = _mm256_load_ps(panel + (d + c) * PANEL_COLS + LANES);           \
        const __m256 x0 = _mm256_broadcast_ss(x + d + c);                                        \
        lo0_##c = _mm256_fmadd_ps(x0, low_cols, lo0_##c);                                        \
        hi0_##c = _mm256_fmadd_ps(x0, high_cols, hi0_##c);                                       \
        if (nr > 1) {                                                                            \
            const __m256 x1 = _mm256_broadcast_ss(x + x_stride + d + c);                         \
            lo1_##c = _mm256_fmadd_ps(x1, low_cols, lo1_##c);                                    \
            hi1_##c = _mm256_fmadd_ps(x1, high_cols, hi1_##c);                                   \
        }                                                                                        \
    }
        STEP(0) STEP(1) STEP(2) STEP(3)
#undef STEP
    }
#define SUM(v) _mm256_add_ps(_mm256_add_ps(v##_0, v##_1), _mm256_add_ps(v##_2, v##_3))
    _mm256_storeu_ps(out, SUM(lo0));
    _mm256_storeu_ps(out + LANES, SUM(hi0));
    if (nr > 1) {
        _mm256_storeu_ps(out + out_stride, SUM(lo1));
        _mm256_storeu_ps(out + out_stride + LANES, SUM(hi1));
    }
#undef SUM
}

/* A tile of 1..ROW_TILE rows, dispatched to a constant-shape body (len is a multiple of 4). */
static void any_tile(const float *x, int64_t x_stride, int64_t len, const float *panel, int nr,
                     int accumulate, float *out, int64_t out_stride) {
    switch (nr) {
    case 1: tile_chained(x, x_stride, len, panel, 1, accumulate, out, out_stride); break;
    case 2: tile_chained(x, x_stride, len, panel, 2, accumulate, out, out_stride); break;
    case 3: tile(x, x_stride, len, panel, 3, accumulate, out, out_stride); break;
    case 4: tile(x, x_stride, len, panel, 4, accumulate, out, out_stride); break;
    case 5: tile(x, x_stride, len, panel, 5, accumulate, out, out_stride); break;
    default: tile(x, x_stride, len, panel, ROW_TILE, accumulate, out, out_stride); break;
    }
}

/* Returns 0, -1 when k is no multiple of the group size or cols of the panel width, -2 when
 * scratch memory is lacking. Each thread takes PANEL_COLS columns at a time. Up to FEW_ROWS
 * rows multiply straight from the decoded registers; more rows go one slice of SLICE_GROUPS
 * groups of inputs after another: the slice is decoded into a float32 panel (32 KB, in L1/L2)
 * and every row of x multiplies it in register tiles. Either way a weight is decoded once per
 * call, and each output sums over k in order. */
static int panel_matmul(const float *x, int64_t rows, int64_t k, const BlockWeight *w,
                        int64_t cols, int num_threads, float *out) {
    if (rows < 0 || k % GROUP != 0 || cols % PANEL_COLS != 0) return -1;
    if (rows == 0) return 0;
    const int64_t panels = cols / PANEL_COLS, groups = k / GROUP;
    const int uses_panel = rows > FEW_ROWS; /* else every row multiplies from registers */
    int failed = 0;
#pragma omp parallel num_threads(num_threads)
    {
        float *panel = NULL;
        if (uses_panel) {
            panel = aligned_alloc(64, PANEL_COLS * SLICE_GROUPS * GROUP * sizeof(float));
            if (panel == NULL) {
#pragma omp atomic write
                failed = 1;
            }
        }
#pragma omp for schedule(static)
        for (int64_t p = 0; p < panels; ++p) {
            if (!uses_panel) {
                for (int half = 0; half < 2; ++half)
                    w->few_rows(w, k, 2 * p + half, x, k, (int)rows,
                                out + p * PANEL_COLS + half * LANES, cols);
                continue;
            }
            if (panel == NULL) continue;
            for (int64_t g0 = 0; g0 < groups; g0 += SLICE_GROUPS) {
                const int64_t g1 = g0 + SLICE_GROUPS < groups ? g0 + SLICE_GROUPS : groups;
                w->decode(w, k, 2 * p, g0, g1, panel);
                w->decode(w, k, 2 * p + 1, g0, g1, panel + LANES);
                for (int64_t r0 = 0; r0 < rows; r0 += ROW_TILE) {
                    const int nr = rows - r0 < ROW_TILE ? (int)(rows - r0) : ROW_TILE;
                    any_tile(x + r0 * k + g0 * GROUP, k, (g1 - g0) * GROUP, panel, nr, g0 > 0,
                             out + r0 * cols + p * PANEL_COLS, cols);
                }
            }
        }
        free(panel);
    }
    return failed ? -2 : 0;
}

int int4_matmul_f32(const float *x, int64_t rows, int64_t k, const int32_t *codes,
                    const float *scales, const float *zeros, int64_t cols, int num_threads,
                    float *out) {
    const BlockWeight w = {codes, scales, zeros, decode_int4_block, int4_few_rows_dispatch};
    return panel_matmul(x, rows, k, &w, cols, num_threads, out);
}

int int8_matmul_f32(const float *x, int64_t rows, int64_t k, const int8_t *codes,
                    const float *scales, int64_t cols, int num_threads, float *out) {
    const BlockWeight w = {codes, scales, NULL, decode_int8_block, int8_few_rows_dispatch};
    return panel_matmul(x, rows, k, &w, cols, num_threads, out);
}
#endif
