/*
 * Attention straight from the token-granular KV pool (bfloat16 or float32), for CPUs: decode
 * steps and extends, each query token over its request's KV slots read in place through a row
 * of slot indices, with no gathered copy of K/V and no padding to the longest request.
 *
 * A decoding token's `group` query rows (its GQA group) share each KV head, so every K/V block
 * is loaded from memory once for all of them. An extend's new tokens are consecutive tokens on
 * one slot row, each seeing the keys up to itself (its own length): blocks of them are computed
 * together, so a K/V block is read once per block of tokens rather than once per token. Decode
 * tokens of consecutive rows that share a prefix of slots (the forks of one program) likewise
 * form a fork group: the prefix's K/V blocks are read once for all of them, then each token
 * goes on over its own slots, its online softmax carrying over (no merge).
 *
 * Layouts (all contiguous); q, k and v share one element type, bfloat16 bits or float32:
 *   q           [tokens, kv_heads, group, head_dim]
 *   k, v        [pool_slots, kv_heads, head_dim]
 *   slots       [rows, max_len] int64; a token of row r sees its first lens[token] slots
 *   token_rows  [tokens] int64, the slot row of each token (NULL: token t reads row t)
 *   lens        [tokens] int64
 *   out         [tokens, kv_heads, group, head_dim]  float32
 *   lse         [tokens, kv_heads, group]            float32, log-sum-exp of the scaled scores
 *
 * Softmax runs online over blocks of keys in float32 (the running maximum rescales the
 * accumulator), like a flash-attention kernel. Float32 pools with AVX2 and head_dim a multiple
 * of 16 run register tiles: blocks of >= 12 query rows per KV head with the rows in vector lanes
 * (attend_item_tiled), smaller ones (a decode step's GQA group) and fork groups 3 rows x 4 keys,
 * then 3 rows x 16 elements, per tile, all KV heads of a block in one item (attend_item_few).
 * bfloat16 with AVX2 takes eight keys at a time per query row; elsewhere plain loops. Built
 * with -ffast-math for vectorized expf, so the code never relies on infinities: an empty row
 * gets out = 0 and lse = EMPTY_LSE.
 */
#include <stdlib.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "common.h"

#define KEY_BLOCK 64
#define NO_MAX (-1e30f)

#ifdef __AVX2__
/* Elements i .. i+7, widened to float. */
INLINE __m256 load8(const void *base, int64_t i, Floats kind) {
    if (kind == F32) return _mm256_loadu_ps((const float *)base + i);
    const __m128i bits = _mm_loadu_si128((const __m128i *)((const uint16_t *)base + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

/* Lane t of the result is the sum of the 8 lanes of a[t]. */
static inline __m256 sum_lanes_8x8(const __m256 a[8]) {
    const __m256 s01 = _mm256_hadd_ps(a[0], a[1]), s23 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 s45 = _mm256_hadd_ps(a[4], a[5]), s67 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20),
                         _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

static inline float sum_lanes(__m256 a) {
    const __m128 half = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
    return _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
}
#endif

/* scores[j] = query . k[rows[j]] for the n keys of a block (rows: element offsets of the keys'
 * head_dim-long rows). Eight keys at a time, each into its own vector accumulator, summed
 * across lanes together. */
INLINE void block_scores(
    const float *query, const void *k, const int64_t *rows, int64_t n, int64_t head_dim,
    Floats kind, float *scores) {
    int64_t j = 0;
#ifdef __AVX2__
    if (head_dim % 8 == 0) {
        for (; j + 8 <= n; j += 8) {
            __m256 acc[8];
            for (int t = 0; t < 8; ++t) acc[t] = _mm256_setzero_ps();
            for (int64_t d = 0; d < head_dim; d += 8) {
                const __m256 q = _mm256_loadu_ps(query + d);
                for (int t = 0; t < 8; ++t)
                    acc[t] = _mm256_fmadd_ps(q, load8(k, rows[j + t] + d, kind), acc[t]);
            }
            _mm256_storeu_ps(scores + j, sum_lanes_8x8(acc));
        }
        for (; j < n; ++j) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t d = 0; d < head_dim; d += 8)
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(query + d), load8(k, rows[j] + d, kind),
                                      acc);
            scores[j] = sum_lanes(acc);
        }
        return;
    }
#endif
    for (; j < n; ++j) {
        float dot = 0.0f;
        for (int64_t d = 0; d < head_dim; ++d) dot += query[d] * load(k, rows[j] + d, kind);
        scores[j] = dot;
    }
}

/* acc += sum_j p[j] * v[rows[j]] over the n keys of a block. The accumulator is held in
 * registers 64 elements at a time while every key of the block is added. */
INLINE void block_accumulate(
    const float *p, const void *v, const int64_t *rows, int64_t n, int64_t head_dim, Floats kind,
    float *acc) {
#ifdef __AVX2__
    if (head_dim % 8 == 0) {
        for (int64_t d0 = 0; d0 < head_dim; d0 += 64) {
            const int64_t vectors = head_dim - d0 < 64 ? (head_dim - d0) / 8 : 8;
            __m256 sum[8];
            for (int64_t i = 0; i < vectors; ++i) sum[i] = _mm256_loadu_ps(acc + d0 + 8 * i);
            for (int64_t j = 0; j < n; ++j) {
                const __m256 weight = _mm256_set1_ps(p[j]);
                for (int64_t i = 0; i < vectors; ++i)
                    sum[i] = _mm256_fmadd_ps(weight, load8(v, rows[j] + d0 + 8 * i, kind),
                                             sum[i]);
            }
            for (int64_t i = 0; i < vectors; ++i) _mm256_storeu_ps(acc + d0 + 8 * i, sum[i]);
        }
        return;
    }
#endif
    for (int64_t j = 0; j < n; ++j)
        for (int64_t d = 0; d < head_dim; ++d) acc[d] += p[j] * load(v, rows[j] + d, kind);
}

/* Online softmax over one block of a row's scores: p[0..m) become exp(score - new running max),
 * the running max and sum take the block in; returns the factor that rescales what the row
 * accumulated before (1 when m is 0: the max stays). */
INLINE float softmax_block(float *p, int64_t m, float *running_max, float *running_sum) {
    float block_max = NO_MAX;
    for (int64_t j = 0; j < m; ++j) block_max = fmaxf(block_max, p[j]);
    const float new_max = fmaxf(*running_max, block_max);
    const float rescale = expf(*running_max - new_max);
    float block_sum = 0.0f;
    for (int64_t j = 0; j < m; ++j) {
        p[j] = expf(p[j] - new_max);
        block_sum += p[j];
    }
    *running_sum = *running_sum * rescale + block_sum;
    *running_max = new_max;
    return rescale;
}

/* The finished rows of an item: out = acc / running sum, lse = running max + log(sum); row r is
 * token first + r / group, query head r % group of KV head h. A row that saw no keys gets zero
 * output and EMPTY_LSE. */
static inline void write_rows(int64_t first, int64_t rows_n, int64_t h, const int64_t *lens,
                              int64_t kv_heads, int64_t group, int64_t head_dim,
                              const float *acc, const float *running_max,
                              const float *running_sum, float *out, float *lse) {
    for (int64_t r = 0; r < rows_n; ++r) {
        const int64_t token = first + r / group, g = r % group;
        const int64_t len = lens[token];
        float *out_row = out + ((token * kv_heads + h) * group + g) * head_dim;
        const float inverse = len > 0 ? 1.0f / running_sum[r] : 0.0f;
        for (int64_t d = 0; d < head_dim; ++d) out_row[d] = acc[r * head_dim + d] * inverse;
        lse[(token * kv_heads + h) * group + g] =
            len > 0 ? running_max[r] + logf(running_sum[r]) : EMPTY_LSE;
    }
}

#define ROW_TILE 16 /* rows per register tile of the tiled items (two vectors) */

static inline int64_t padded_rows(int64_t rows) {
    return (rows + ROW_TILE - 1) / ROW_TILE * ROW_TILE;
}

/* Per-thread scratch, in floats, for items of up to `rows` query rows (either path). */
static inline size_t scratch_floats(int64_t rows, int64_t head_dim) {
    return (size_t)padded_rows(rows) * (2 * head_dim + KEY_BLOCK + 6);
}

/* One item: a block of `count` consecutive tokens from `first`, all reading slot row `row`, and
 * one KV head `h`: count * group query rows, row r = (token r / group, head r % group), each over
 * the first lens[token] keys of the row. Every K/V block is loaded once for all of them. Inlined
 * with a constant head_dim where it is common, so the per-key loops unroll into whole vectors,
 * and with a constant element type. */
INLINE void attend_item(
    int64_t first, int64_t count, int64_t row, int64_t h, const void *q, const void *k,
    const void *v, const int64_t *slots, const int64_t *lens, int64_t max_len, int64_t kv_heads,
    int64_t group, int64_t head_dim, float scale, Floats kind, float *scratch, float *out,
    float *lse) {
    const int64_t row_stride = kv_heads * head_dim; /* elements between pool slots */
    const int64_t rows_n = count * group;
    const int64_t *row_slots = slots + row * max_len;
    float *query = scratch, *acc = query + rows_n * head_dim; /* [rows][head_dim] each */
    float *scores = acc + rows_n * head_dim;                    /* [rows][KEY_BLOCK] */
    float *running_max = scores + rows_n * KEY_BLOCK, *running_sum = running_max + rows_n;
    int64_t key_rows[KEY_BLOCK];

    int64_t item_len = 0; /* the longest of the block's rows */
    for (int64_t t = 0; t < count; ++t) {
        const int64_t len = lens[first + t];
        if (len > item_len) item_len = len;
        const int64_t q_row = ((first + t) * kv_heads + h) * group * head_dim;
        for (int64_t g = 0; g < group; ++g) {
            const int64_t r = t * group + g;
            for (int64_t d = 0; d < head_dim; ++d) {
                query[r * head_dim + d] = load(q, q_row + g * head_dim + d, kind) * scale;
                acc[r * head_dim + d] = 0.0f;
            }
            running_max[r] = NO_MAX;
            running_sum[r] = 0.0f;
        }
    }

    for (int64_t start = 0; start < item_len; start += KEY_BLOCK) {
        const int64_t n = item_len - start < KEY_BLOCK ? item_len - start : KEY_BLOCK;
        for (int64_t j = 0; j < n; ++j)
            key_rows[j] = row_slots[start + j] * row_stride + h * head_dim;
        /* K's block is read once per query row while it is hot in L1, then V's */
        for (int64_t r = 0; r < rows_n; ++r) {
            const int64_t visible = lens[first + r / group] - start;
            if (visible > 0)
                block_scores(query + r * head_dim, k, key_rows, visible < n ? visible : n,
                             head_dim, kind, scores + r * KEY_BLOCK);
        }
        for (int64_t r = 0; r < rows_n; ++r) { /* online softmax: rescale, exponentiate */
            const int64_t visible = lens[first + r / group] - start;
            if (visible <= 0) continue;
            const float rescale = softmax_block(scores + r * KEY_BLOCK, visible < n ? visible : n,
                                                running_max + r, running_sum + r);
            for (int64_t d = 0; d < head_dim; ++d) acc[r * head_dim + d] *= rescale;
        }
        for (int64_t r = 0; r < rows_n; ++r) {
            const int64_t visible = lens[first + r / group] - start;
            if (visible > 0)
                block_accumulate(scores + r * KEY_BLOCK, v, key_rows, visible < n ? visible : n,
                                 head_dim, kind, acc + r * head_dim);
        }
    }

    write_rows(first, rows_n, h, lens, kv_heads, group, head_dim, acc, running_max, running_sum,
               out, lse);
}

#ifdef __AVX2__
/* Items of at least this many query rows (an extend's block of tokens) run as small matrix
 * products over a float32 pool: query rows sit in vector lanes, so each key's element is
 * broadcast once for 16 rows and each value row loaded once for 4 rows. */
#define TILED_MIN_ROWS 12
#define KEY_TILE 6   /* keys per score tile: 12 accumulators */
#define OUT_ROWS 4   /* output rows per value tile */


/* attend_item for float32 pools and rows >= TILED_MIN_ROWS (head_dim a multiple of 16). Layout
 * in scratch, P = rows padded to ROW_TILE: query_t [head_dim][P] (scaled, transposed), probs
 * [KEY_BLOCK][P] (scores, then probabilities, key-major), acc [P][head_dim], and per row its
 * visible keys in the current block, running max, running sum, block max, rescale, block sum.
 * Padding rows see no keys. */
INLINE void attend_item_tiled(
    int64_t first, int64_t count, int64_t row, int64_t h, const float *q, const float *k,
    const float *v, const int64_t *slots, const int64_t *lens, int64_t max_len,
    int64_t kv_heads, int64_t group, int64_t head_dim, float scale, float *scratch, float *out,
    float *lse) {
    const int64_t row_stride = kv_heads * head_dim;
    const int64_t rows_n = count * group, P = padded_rows(rows_n);
    const int64_t *row_slots = slots + row * max_len;
    float *query_t = scratch, *probs = query_t + head_dim * P, *acc = probs + KEY_BLOCK * P;
    float *visible = acc + P * head_dim, *run_max = visible + P, *run_sum = run_max + P;
    float *block_max = run_sum + P, *rescale = block_max + P, *block_sum = rescale + P;
    int64_t key_rows[KEY_BLOCK];

    int64_t item_len = 0;
    for (int64_t r = 0; r < P; ++r) {
        const int64_t token = first + r / group;
        const int64_t len = r < rows_n ? lens[token] : 0;
        if (len > item_len) item_len = len;
        const float *q_row = q + ((token * kv_heads + h) * group + r % group) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) {
            query_t[d * P + r] = r < rows_n ? q_row[d] * scale : 0.0f;
            acc[r * head_dim + d] = 0.0f;
        }
        run_max[r] = NO_MAX;
        run_sum[r] = 0.0f;
    }

    for (int64_t start = 0; start < item_len; start += KEY_BLOCK) {
        const int64_t n = item_len - start < KEY_BLOCK ? item_len - start : KEY_BLOCK;
        for (int64_t j = 0; j < n; ++j)
            key_rows[j] = row_slots[start + j] * row_stride + h * head_dim;
        for (int64_t r = 0; r < P; ++r) {
            const int64_t len = r < rows_n ? lens[first + r / group] : 0;
            visible[r] = (float)(len - start);
        }
        /* probs[j][r] = query r . key j: ROW_TILE rows x KEY_TILE keys per register tile */
        for (int64_t r0 = 0; r0 < P; r0 += ROW_TILE) {
            int64_t j0 = 0;
            for (; j0 + KEY_TILE <= n; j0 += KEY_TILE) {
                __m256 sum[KEY_TILE][2];
                for (int t = 0; t < KEY_TILE; ++t)
                    sum[t][0] = sum[t][1] = _mm256_setzero_ps();
                for (int64_t d = 0; d < head_dim; ++d) {
                    const __m256 q0 = _mm256_loadu_ps(query_t + d * P + r0);
                    const __m256 q1 = _mm256_loadu_ps(query_t + d * P + r0 + 8);
                    for (int t = 0; t < KEY_TILE; ++t) {
                        const __m256 key = _mm256_broadcast_ss(k + key_rows[j0 + t] + d);
                        sum[t][0] = _mm256_fmadd_ps(q0, key, sum[t][0]);
                        sum[t][1] = _mm256_fmadd_ps(q1, key, sum[t][1]);
                    }
                }
                for (int t = 0; t < KEY_TILE; ++t) {
                    _mm256_storeu_ps(probs + (j0 + t) * P + r0, sum[t][0]);
                    _mm256_storeu_ps(probs + (j0 + t) * P + r0 + 8, sum[t][1]);
                }
            }
            for (; j0 < n; ++j0) {
                __m256 sum0 = _mm256_setzero_ps(), sum1 = _mm256_setzero_ps();
                for (int64_t d = 0; d < head_dim; ++d) {
                    const __m256 key = _mm256_broadcast_ss(k + key_rows[j0] + d);
                    sum0 = _mm256_fmadd_ps(_mm256_loadu_ps(query_t + d * P + r0), key, sum0);
                    sum1 = _mm256_fmadd_ps(_mm256_loadu_ps(query_t + d * P + r0 + 8), key, sum1);
                }
                _mm256_storeu_ps(probs + j0 * P + r0, sum0);
                _mm256_storeu_ps(probs + j0 * P + r0 + 8, sum1);
            }
        }
        /* online softmax across the rows' lanes (plain loops: gcc vectorizes them, expf too) */
        for (int64_t r = 0; r < P; ++r) block_max[r] = NO_MAX, block_sum[r] = 0.0f;
        for (int64_t j = 0; j < n; ++j)
            for (int64_t r = 0; r < P; ++r)
                block_max[r] = (float)j < visible[r] ? fmaxf(block_max[r], probs[j * P + r])
                                                     : block_max[r];
        for (int64_t r = 0; r < P; ++r) {
            const float new_max = fmaxf(run_max[r], block_max[r]);
            rescale[r] = expf(run_max[r] - new_max);
            run_max[r] = new_max;
        }
        for (int64_t j = 0; j < n; ++j)
            for (int64_t r = 0; r < P; ++r) {
                const float p = (float)j < visible[r] ? expf(probs[j * P + r] - run_max[r]) : 0.0f;
                probs[j * P + r] = p;
                block_sum[r] += p;
            }
        for (int64_t r = 0; r < P; ++r) run_sum[r] = run_sum[r] * rescale[r] + block_sum[r];
        /* acc[r] = acc[r] * rescale[r] + sum_j probs[j][r] v[j]: OUT_ROWS rows x 16 elements */
        for (int64_t r0 = 0; r0 < P; r0 += OUT_ROWS) {
            for (int64_t d = 0; d < head_dim; d += 16) {
                __m256 sum[OUT_ROWS][2];
                for (int i = 0; i < OUT_ROWS; ++i) {
                    const __m256 factor = _mm256_set1_ps(rescale[r0 + i]);
                    float *acc_row = acc + (r0 + i) * head_dim + d;
                    sum[i][0] = _mm256_mul_ps(_mm256_loadu_ps(acc_row), factor);
                    sum[i][1] = _mm256_mul_ps(_mm256_loadu_ps(acc_row + 8), factor);
                }
                for (int64_t j = 0; j < n; ++j) {
                    const __m256 v0 = _mm256_loadu_ps(v + key_rows[j] + d);
                    const __m256 v1 = _mm256_loadu_ps(v + key_rows[j] + d + 8);
                    for (int i = 0; i < OUT_ROWS; ++i) {
                        const __m256 p = _mm256_broadcast_ss(probs + j * P + r0 + i);
                        sum[i][0] = _mm256_fmadd_ps(p, v0, sum[i][0]);
                        sum[i][1] = _mm256_fmadd_ps(p, v1, sum[i][1]);
                    }
                }
                for (int i = 0; i < OUT_ROWS; ++i) {
                    float *acc_row = acc + (r0 + i) * head_dim + d;
                    _mm256_storeu_ps(acc_row, sum[i][0]);
                    _mm256_storeu_ps(acc_row + 8, sum[i][1]);
                }
            }
        }
    }

    write_rows(first, rows_n, h, lens, kv_heads, group, head_dim, acc, run_max, run_sum, out,
               lse);
}

/* Items of fewer rows (a decode step's GQA group, a short extend, an extend's last partial
 * block) over a float32 pool run in passes of up to FEW_ROWS rows that each keep a FEW_ROWS x
 * SCORE_KEYS tile of q . k sums, and then FEW_ROWS x 16 output elements, in registers: every K
 * and V vector loaded feeds FEW_ROWS multiply-adds, and no query row re-reads the block on its
 * own. */
#define FEW_ROWS 3
#define SCORE_KEYS 4

/* Lane t of the result is the sum of the 8 lanes of a_t (t < 4). */
static inline __m128 sum_lanes_4x8(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/* scores[r][j] = query[r] . key j for `rows` (<= FEW_ROWS) rows and the n keys of a block,
 * SCORE_KEYS keys at a time (key_rows is padded to a multiple of SCORE_KEYS, so a partial last
 * tile writes a few scores past n that nobody reads). */
INLINE void few_rows_scores(
    int rows, const float *query, const float *k, const int64_t *key_rows, int64_t n,
    int64_t head_dim, float *scores) {
    for (int64_t j0 = 0; j0 < n; j0 += SCORE_KEYS) {
        const float *k0 = k + key_rows[j0], *k1 = k + key_rows[j0 + 1];
        const float *k2 = k + key_rows[j0 + 2], *k3 = k + key_rows[j0 + 3];
        __m256 s00 = _mm256_setzero_ps(), s01 = s00, s02 = s00, s03 = s00;
        __m256 s10 = s00, s11 = s00, s12 = s00, s13 = s00;
        __m256 s20 = s00, s21 = s00, s22 = s00, s23 = s00;
        for (int64_t d = 0; d < head_dim; d += 8) {
            const __m256 c0 = _mm256_loadu_ps(k0 + d), c1 = _mm256_loadu_ps(k1 + d);
            const __m256 c2 = _mm256_loadu_ps(k2 + d), c3 = _mm256_loadu_ps(k3 + d);
            const __m256 q0 = _mm256_loadu_ps(query + d);
            s00 = _mm256_fmadd_ps(q0, c0, s00), s01 = _mm256_fmadd_ps(q0, c1, s01);
            s02 = _mm256_fmadd_ps(q0, c2, s02), s03 = _mm256_fmadd_ps(q0, c3, s03);
            if (rows > 1) {
                const __m256 q1 = _mm256_loadu_ps(query + head_dim + d);
                s10 = _mm256_fmadd_ps(q1, c0, s10), s11 = _mm256_fmadd_ps(q1, c1, s11);
                s12 = _mm256_fmadd_ps(q1, c2, s12), s13 = _mm256_fmadd_ps(q1, c3, s13);
            }
            if (rows > 2) {
                const __m256 q2 = _mm256_loadu_ps(query + 2 * head_dim + d);
                s20 = _mm256_fmadd_ps(q2, c0, s20), s21 = _mm256_fmadd_ps(q2, c1, s21);
                s22 = _mm256_fmadd_ps(q2, c2, s22), s23 = _mm256_fmadd_ps(q2, c3, s23);
            }
        }
        _mm_storeu_ps(scores + j0, sum_lanes_4x8(s00, s01, s02, s03));
        if (rows > 1) _mm_storeu_ps(scores + KEY_BLOCK + j0, sum_lanes_4x8(s10, s11, s12, s13));
        if (rows > 2)
            _mm_storeu_ps(scores + 2 * KEY_BLOCK + j0, sum_lanes_4x8(s20, s21, s22, s23));
    }
}

/* acc[r] = acc[r] * rescale[r] + sum_j p[r][j] v[j] for `rows` (<= FEW_ROWS) rows over the n
 * keys of a block, 16 output elements of every row at a time. */
INLINE void few_rows_accumulate(
    int rows, const float *p, const float *v, const int64_t *key_rows, int64_t n,
    int64_t head_dim, const float *rescale, float *acc) {
    for (int64_t d = 0; d < head_dim; d += 16) {
        float *a0 = acc + d, *a1 = a0 + head_dim, *a2 = a1 + head_dim;
        const __m256 f0 = _mm256_set1_ps(rescale[0]);
        __m256 o00 = _mm256_mul_ps(_mm256_loadu_ps(a0), f0);
        __m256 o01 = _mm256_mul_ps(_mm256_loadu_ps(a0 + 8), f0);
        __m256 o10 = _mm256_setzero_ps(), o11 = o10, o20 = o10, o21 = o10;
        if (rows > 1) {
            const __m256 f1 = _mm256_set1_ps(rescale[1]);
            o10 = _mm256_mul_ps(_mm256_loadu_ps(a1), f1);
            o11 = _mm256_mul_ps(_mm256_loadu_ps(a1 + 8), f1);
        }
        if (rows > 2) {
            const __m256 f2 = _mm256_set1_ps(rescale[2]);
            o20 = _mm256_mul_ps(_mm256_loadu_ps(a2), f2);
            o21 = _mm256_mul_ps(_mm256_loadu_ps(a2 + 8), f2);
        }
        for (int64_t j = 0; j < n; ++j) {
            const float *value = v + key_rows[j] + d;
            const __m256 v0 = _mm256_loadu_ps(value), v1 = _mm256_loadu_ps(value + 8);
            const __m256 w0 = _mm256_broadcast_ss(p + j);
            o00 = _mm256_fmadd_ps(w0, v0, o00), o01 = _mm256_fmadd_ps(w0, v1, o01);
            if (rows > 1) {
                const __m256 w1 = _mm256_broadcast_ss(p + KEY_BLOCK + j);
                o10 = _mm256_fmadd_ps(w1, v0, o10), o11 = _mm256_fmadd_ps(w1, v1, o11);
            }
            if (rows > 2) {
                const __m256 w2 = _mm256_broadcast_ss(p + 2 * KEY_BLOCK + j);
                o20 = _mm256_fmadd_ps(w2, v0, o20), o21 = _mm256_fmadd_ps(w2, v1, o21);
            }
        }
        _mm256_storeu_ps(a0, o00), _mm256_storeu_ps(a0 + 8, o01);
        if (rows > 1) _mm256_storeu_ps(a1, o10), _mm256_storeu_ps(a1 + 8, o11);
        if (rows > 2) _mm256_storeu_ps(a2, o20), _mm256_storeu_ps(a2 + 8, o21);
    }
}

/* One pass of `rows` (<= FEW_ROWS) rows, dispatched so that `rows` is a constant inside. */
#define FEW_ROWS_PASS(call, rows, ...)                     \
    switch (rows) {                                        \
    case 1: call(1, __VA_ARGS__); break;                   \
    case 2: call(2, __VA_ARGS__); break;                   \
    default: call(3, __VA_ARGS__); break;                  \
    }

/* An attend_item_few item's rows and their scratch: row i = (KV head h0 + i / rows_n, row
 * i % rows_n), and row r of a head is token first + r / group, query head r % group. */
typedef struct {
    int64_t first, rows_n, h0, heads;
    float *query, *acc;                 /* [heads * rows_n][head_dim] each */
    float *scores;                      /* [heads * rows_n][KEY_BLOCK] */
    float *running_max, *running_sum;   /* [heads * rows_n] each: the online softmax's state */
    float *rescale;                     /* [heads * rows_n]: for the current block */
} FewRows;

/* Rows [r_lo, r_hi) of every head of the item take in slots [begin, end) of one slot row, in
 * blocks of KEY_BLOCK keys; each row's online softmax carries on from where it stood. Scores
 * past a row's visible keys become probability 0, so the value pass runs over the whole block
 * for every row. */
INLINE void few_rows_over_keys(
    const FewRows *item, const int64_t *row_slots, int64_t begin, int64_t end, int64_t r_lo,
    int64_t r_hi, const float *k, const float *v, const int64_t *lens, int64_t kv_heads,
    int64_t group, int64_t head_dim) {
    const int64_t row_stride = kv_heads * head_dim;
    int64_t key_rows[KEY_BLOCK + SCORE_KEYS]; /* pool offsets of the keys' slots */
    for (int64_t start = begin; start < end; start += KEY_BLOCK) {
        const int64_t n = end - start < KEY_BLOCK ? end - start : KEY_BLOCK;
        for (int64_t j = 0; j < n; ++j) key_rows[j] = row_slots[start + j] * row_stride;
        for (int64_t j = n; j % SCORE_KEYS != 0; ++j) key_rows[j] = key_rows[n - 1];
        for (int64_t hh = 0; hh < item->heads; ++hh) {
            const int64_t h = item->h0 + hh, base = hh * item->rows_n;
            const float *k_head = k + h * head_dim, *v_head = v + h * head_dim;
            for (int64_t r0 = r_lo; r0 < r_hi; r0 += FEW_ROWS) {
                const int64_t rows = r_hi - r0 < FEW_ROWS ? r_hi - r0 : FEW_ROWS;
                FEW_ROWS_PASS(few_rows_scores, rows, item->query + (base + r0) * head_dim,
                              k_head, key_rows, n, head_dim,
                              item->scores + (base + r0) * KEY_BLOCK);
            }
            for (int64_t r = r_lo; r < r_hi; ++r) { /* online softmax: rescale, exponentiate */
                const int64_t visible = lens[item->first + r / group] - start, i = base + r;
                const int64_t m = visible < 0 ? 0 : visible < n ? visible : n;
                float *p = item->scores + i * KEY_BLOCK;
                item->rescale[i] = softmax_block(p, m, item->running_max + i,
                                                 item->running_sum + i);
                for (int64_t j = m; j < n; ++j) p[j] = 0.0f;
            }
            for (int64_t r0 = r_lo; r0 < r_hi; r0 += FEW_ROWS) {
                const int64_t rows = r_hi - r0 < FEW_ROWS ? r_hi - r0 : FEW_ROWS;
                FEW_ROWS_PASS(few_rows_accumulate, rows, item->scores + (base + r0) * KEY_BLOCK,
                              v_head, key_rows, n, head_dim, item->rescale + base + r0,
                              item->acc + (base + r0) * head_dim);
            }
        }
    }
}

/* attend_item for float32 pools and head_dim a multiple of 16, for blocks of fewer than
 * TILED_MIN_ROWS rows per KV head and for fork groups, over `heads` KV heads from h0 at once:
 * each block of keys is then read for all of them, whole pool rows in order. A fork group
 * (`shared` >= 0) is `count` decode tokens on rows of their own that agree on their first
 * `shared` slots: every row of the group takes in those keys together, block by block, then
 * each token its own rest. Otherwise (`shared` < 0) the tokens all read slot row `row`. Scratch
 * as attend_item's for heads * count * group rows (query, acc, scores, running max and sum)
 * plus each row's rescale for the current block. */
INLINE void attend_item_few(
    int64_t first, int64_t count, int64_t row, int64_t shared, int64_t h0, int64_t heads,
    const float *q, const float *k, const float *v, const int64_t *slots,
    const int64_t *token_rows, const int64_t *lens, int64_t max_len, int64_t kv_heads,
    int64_t group, int64_t head_dim, float scale, float *scratch, float *out, float *lse) {
    const int64_t rows_n = count * group, all_rows = heads * rows_n;
    float *acc = scratch + all_rows * head_dim, *scores = acc + all_rows * head_dim;
    float *running_max = scores + all_rows * KEY_BLOCK, *running_sum = running_max + all_rows;
    const FewRows item = {.first = first, .rows_n = rows_n, .h0 = h0, .heads = heads,
                          .query = scratch, .acc = acc, .scores = scores,
                          .running_max = running_max, .running_sum = running_sum,
                          .rescale = running_sum + all_rows};

    int64_t item_len = 0;
    for (int64_t i = 0; i < all_rows; ++i) {
        const int64_t h = h0 + i / rows_n, r = i % rows_n, token = first + r / group;
        if (lens[token] > item_len) item_len = lens[token];
        const float *q_row = q + ((token * kv_heads + h) * group + r % group) * head_dim;
        for (int64_t d = 0; d < head_dim; ++d) {
            item.query[i * head_dim + d] = q_row[d] * scale;
            item.acc[i * head_dim + d] = 0.0f;
        }
        item.running_max[i] = NO_MAX;
        item.running_sum[i] = 0.0f;
    }

    const int64_t common = shared < 0 ? item_len : shared;
    few_rows_over_keys(&item, slots + row * max_len, 0, common, 0, rows_n, k, v, lens, kv_heads,
                       group, head_dim);
    for (int64_t t = 0; shared >= 0 && t < count; ++t) {
        const int64_t token = first + t, own = token_rows == NULL ? token : token_rows[token];
        few_rows_over_keys(&item, slots + own * max_len, common, lens[token], t * group,
                           (t + 1) * group, k, v, lens, kv_heads, group, head_dim);
    }

    for (int64_t hh = 0; hh < heads; ++hh) {
        const int64_t base = hh * rows_n;
        write_rows(first, rows_n, h0 + hh, lens, kv_heads, group, head_dim,
                   item.acc + base * head_dim, item.running_max + base, item.running_sum + base,
                   out, lse);
    }
}
#endif

/* Does a block of `rows` query rows per KV head run attend_item_few? */
static inline int runs_few_rows(Floats kind, int64_t head_dim, int64_t rows) {
#ifdef __AVX2__
    return kind == F32 && head_dim % 16 == 0 && rows < TILED_MIN_ROWS;
#else
    (void)kind, (void)head_dim, (void)rows;
    return 0;
#endif
}

/* A block of the batch: tokens whose K/V blocks are read once for all of them. */
typedef struct {
    int64_t first, count; /* the tokens first .. first + count - 1 */
    int64_t row;          /* their slot row (a fork group: its first token's) */
    /* < 0: the tokens all read slot row `row` (one decode token, or consecutive new tokens of
     * an extend). >= 0: a fork group, one decode token per row, whose rows agree on their
     * first `shared` slots. */
    int64_t shared;
} TokenBlock;

/* A unit of parallel work: one block over `heads` consecutive KV heads from `h0`. */
typedef struct {
    int64_t block, h0, heads;
} WorkItem;

/* Every item of the batch, for one constant element type. Returns -1 if scratch memory for
 * a thread cannot be allocated (nothing else can fail). */
INLINE int attend_all(const void *q, const void *k, const void *v, const int64_t *slots,
                      const int64_t *token_rows, const int64_t *lens, const TokenBlock *blocks,
                      const WorkItem *items, int64_t num_items, int64_t max_len, int64_t kv_heads,
                      int64_t group, int64_t head_dim, int64_t max_rows, float scale, Floats kind,
                      int num_threads, float *out, float *lse) {
    int failed = 0;
#pragma omp parallel num_threads(num_threads)
    {
        float *scratch = malloc(scratch_floats(max_rows, head_dim) * sizeof(float));
        if (scratch == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = 0; i < num_items; ++i) {
            if (scratch == NULL) continue;
            const WorkItem item = items[i];
            const TokenBlock block = blocks[item.block];
            const int64_t h = item.h0;
#ifndef __AVX2__
            (void)token_rows; /* only fork groups read it */
#else
            if (kind == F32 && head_dim % 16 == 0) { /* register tiles, by the rows per KV head */
                if (block.shared >= 0 || runs_few_rows(kind, head_dim, block.count * group)) {
                    if (head_dim == 64)
                        attend_item_few(block.first, block.count, block.row, block.shared, h,
                                        item.heads, q, k, v, slots, token_rows, lens, max_len,
                                        kv_heads, group, 64, scale, scratch, out, lse);
                    else
                        attend_item_few(block.first, block.count, block.row, block.shared, h,
                                        item.heads, q, k, v, slots, token_rows, lens, max_len,
                                        kv_heads, group, head_dim, scale, scratch, out, lse);
                } else if (head_dim == 64) {
                    attend_item_tiled(block.first, block.count, block.row, h, q, k, v, slots,
                                      lens, max_len, kv_heads, group, 64, scale, scratch, out,
                                      lse);
                } else {
                    attend_item_tiled(block.first, block.count, block.row, h, q, k, v, slots,
                                      lens, max_len, kv_heads, group, head_dim, scale, scratch,
                                      out, lse);
                }
                continue;
            }
#endif
            if (head_dim == 64)
                attend_item(block.first, block.count, block.row, h, q, k, v, slots, lens,
                            max_len, kv_heads, group, 64, scale, kind, scratch, out, lse);
            else if (head_dim == 128)
                attend_item(block.first, block.count, block.row, h, q, k, v, slots, lens,
                            max_len, kv_heads, group, 128, scale, kind, scratch, out, lse);
            else
                attend_item(block.first, block.count, block.row, h, q, k, v, slots, lens,
                            max_len, kv_heads, group, head_dim, scale, kind, scratch, out, lse);
        }
        free(scratch);
    }
    return failed ? -1 : 0;
}

/* A fork group must share at least this many slots, so that reading them once pays for the
 * group's bookkeeping, and takes at most this many tokens. */
#define MIN_GROUP_SHARED 64
#define MAX_GROUP_TOKENS 16

static inline int64_t common_prefix(const int64_t *a, const int64_t *b, int64_t n) {
    int64_t i = 0;
    while (i < n && a[i] == b[i]) ++i;
    return i;
}

/* Joins consecutive one-token blocks on rows that share a prefix of slots (the forks of one
 * program, decoding) into fork groups of up to max_tokens tokens, in place. A token joins the
 * group before it when the slots the group reads once, (tokens - 1) * shared, do not shrink.
 * Returns the new number of blocks. */
static int64_t group_forks(TokenBlock *blocks, int64_t num_blocks, const int64_t *slots,
                           const int64_t *lens, int64_t max_len, int64_t max_tokens) {
    int64_t kept = 0;
    for (int64_t b = 0; b < num_blocks; ++b) {
        const TokenBlock block = blocks[b];
        TokenBlock *last = kept > 0 ? &blocks[kept - 1] : NULL;
        if (last != NULL && block.count == 1 && (last->shared >= 0 || last->count == 1) &&
            last->count < max_tokens) {
            const int64_t before = last->shared >= 0 ? last->shared : lens[last->first];
            const int64_t limit = before < lens[block.first] ? before : lens[block.first];
            const int64_t shared =
                common_prefix(slots + last->row * max_len, slots + block.row * max_len, limit);
            const int64_t read_once_before =
                (last->count - 1) * (last->shared >= 0 ? last->shared : 0);
            if (shared >= MIN_GROUP_SHARED && last->count * shared >= read_once_before) {
                last->count += 1, last->shared = shared;
                continue;
            }
        }
        blocks[kept++] = block;
    }
    return kept;
}

/* Returns 0, or -1 when memory could not be allocated. Query token t (q, out: [tokens,
 * kv_heads, group, head_dim]; lse: [tokens, kv_heads, group]) reads the first lens[t] slots of
 * row token_rows[t] of `slots` ([rows, max_len]); token_rows NULL: row t. Consecutive tokens of
 * one row (an extend's new tokens) form blocks of up to `block_tokens`, which read each K/V
 * block once; so do consecutive decode tokens whose rows share a prefix (fork groups, float32
 * register tiles only). `is_f32`: q, k and v are float32 (else bfloat16). */
int decode_attention(const void *q, const void *k, const void *v, const int64_t *slots,
                     const int64_t *token_rows, const int64_t *lens, int64_t tokens,
                     int64_t max_len, int64_t kv_heads, int64_t group, int64_t head_dim,
                     int64_t block_tokens, float scale, int is_f32, int num_threads, float *out,
                     float *lse) {
    const Floats kind = is_f32 ? F32 : BF16;
    if (block_tokens < 1) block_tokens = 1;
    TokenBlock *blocks = malloc((size_t)(tokens > 0 ? tokens : 1) * sizeof(TokenBlock));
    if (blocks == NULL) return -1;
    int64_t num_blocks = 0;
    for (int64_t t = 0; t < tokens; ++t) {
        const int64_t row = token_rows == NULL ? t : token_rows[t];
        TokenBlock *last = num_blocks > 0 ? &blocks[num_blocks - 1] : NULL;
        if (last != NULL && last->row == row && last->first + last->count == t &&
            last->count < block_tokens)
            ++last->count;
        else
            blocks[num_blocks++] = (TokenBlock){.first = t, .count = 1, .row = row, .shared = -1};
    }
    /* Fork groups no wider than leaves two blocks per thread (but pairs at least). */
    if (runs_few_rows(kind, head_dim, group)) {
        const int64_t fair = num_blocks / (2 * (int64_t)num_threads);
        num_blocks = group_forks(blocks, num_blocks, slots, lens, max_len,
                                 fair < 2 ? 2 : fair < MAX_GROUP_TOKENS ? fair : MAX_GROUP_TOKENS);
    }
    int64_t widest = 1;
    for (int64_t b = 0; b < num_blocks; ++b)
        if (blocks[b].count > widest) widest = blocks[b].count;
    /* Few-row float32 blocks (decode steps, fork groups) take all their KV heads in one item,
     * reading whole pool rows in order, when there are blocks enough to keep every thread busy;
     * other blocks get an item per KV head. */
    WorkItem *items =
        malloc((size_t)(num_blocks > 0 ? num_blocks : 1) * kv_heads * sizeof(WorkItem));
    if (items == NULL) {
        free(blocks);
        return -1;
    }
    const int whole_heads = num_blocks >= 2 * (int64_t)num_threads;
    int64_t num_items = 0;
    for (int64_t b = 0; b < num_blocks; ++b) {
        const int64_t rows = blocks[b].count * group;
        const int together =
            whole_heads && (blocks[b].shared >= 0 || runs_few_rows(kind, head_dim, rows));
        for (int64_t h = 0; h < kv_heads; h += together ? kv_heads : 1)
            items[num_items++] = (WorkItem){.block = b, .h0 = h, .heads = together ? kv_heads : 1};
    }
    const int64_t max_rows = widest * group * kv_heads; /* an item's rows, at most */
    const int status =
        kind == F32
            ? attend_all(q, k, v, slots, token_rows, lens, blocks, items, num_items, max_len,
                         kv_heads, group, head_dim, max_rows, scale, F32, num_threads, out, lse)
            : attend_all(q, k, v, slots, token_rows, lens, blocks, items, num_items, max_len,
                         kv_heads, group, head_dim, max_rows, scale, BF16, num_threads, out, lse);
    free(items);
    free(blocks);
    return status;
}
