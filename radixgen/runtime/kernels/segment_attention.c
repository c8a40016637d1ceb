/*
 * Attention of query tokens against KV segments read in place from the token-granular pool,
 * on Intel AMX tiles (bfloat16 products, float32 accumulation), for CPUs that have them.
 *
 * A *problem* is a list of query tokens and a list of KV slots: a shared prefix that a group of
 * requests attends to at once, or one request's own part. Token i of a problem sees the first
 * limits[i] slots of its list (causal own parts), or all of them when `limits` is NULL. The
 * problems of one call have disjoint tokens, so a call can merge its result into the `out`/`lse`
 * of an earlier call (`accumulate`) by their log-sum-exp, in place.
 *
 * Work items are (problem, KV head, chunk of up to CHUNK_TILES x 16 query rows). Grouped-query
 * attention folds the `group` query heads that share a KV head into rows (row = token * group +
 * g). An item packs its keys once into the layouts the tile multiply reads (K^T in dim pairs,
 * V in key pairs), then for every tile of 16 rows and every chunk of up to 512 keys:
 *
 *   scores [16 rows, keys] = Q [16, 64] . K^T     up to four 16-key tiles at once (tiles 0-3)
 *   softmax per row in AVX-512, float32, against the running maximum; P rounded to bfloat16
 *   O [16 rows, 64] += P [16, 32 keys] . V        per 32 keys, O in tiles 0-3 (16 dims each)
 *
 * O goes to memory between chunks and is rescaled there when a chunk raises a row's maximum.
 * Only head_dim 64 is supported.
 *
 * Layouts (contiguous, except that q's token rows are `q_row_stride` elements apart):
 *   q      [tokens, kv_heads, group, 64]  bfloat16 bits
 *   k, v   [pool_slots, kv_heads, 64]     bfloat16 bits
 *   out    [tokens, kv_heads, group, 64]  float32
 *   lse    [tokens, kv_heads, group]      float32, natural log-sum-exp of the scaled scores
 * A token that sees no key gets out = 0 and lse = EMPTY_LSE (or keeps its accumulated values).
 */
#include <immintrin.h>
#include <stdlib.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "common.h"

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__) && defined(__linux__)
#define HAVE_AMX 1
#endif

#define HEAD_DIM 64
#define TILE_ROWS 16
#define KEY_TILE 16      /* keys per score tile */
#define KEY_BLOCK 32     /* keys per P.V product: one bfloat16 tile of P */
#define KEY_CHUNK 512    /* keys whose scores a row tile holds at once (32 KB float32) */
#define CHUNK_TILES 8    /* row tiles per work item, sharing one packing of K and V */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

#ifdef HAVE_AMX

/* Tile numbers. The tile intrinsics paste their tile argument into assembly, so the names go
 * through one more macro to expand. Tiles 0-3 accumulate scores (QK phase), then O (PV phase:
 * 16 output dims each); A and B operands alternate between two tiles each, so a load need not
 * wait for the product still reading the other. */
#define TILE_A0 5
#define TILE_A1 7
#define TILE_B0 4
#define TILE_B1 6
#define TILE_LOAD(tile, base, stride) _tile_loadd(tile, base, stride)
#define TILE_STORE(tile, base, stride) _tile_stored(tile, base, stride)
#define TILE_ZERO(tile) _tile_zero(tile)
#define TILE_DOT(acc, a, b) _tile_dpbf16ps(acc, a, b)

typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} TileConfig;

static void configure_tiles(void) {
    TileConfig config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; ++t) { /* every tile: 16 rows of 64 bytes */
        config.rows[t] = TILE_ROWS;
        config.bytes_per_row[t] = 64;
    }
    _tile_loadconfig(&config);
}

/* 2^x for float32 lanes: x = n + r, |r| <= 1/2, degree-5 polynomial (relative error ~3e-6,
 * far below the bfloat16 rounding of P), 2^n by scalef. */
static inline __m512 exp2_512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-126.0f));
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.3333558e-3f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.6181291e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.5504109e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4022651e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.9314718e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* In-register transpose of a 16 x 16 matrix of 32-bit elements (row i -> lane i). */
static inline void transpose16(__m512i r[16]) {
    __m512i a[16], b[16];
    for (int i = 0; i < 8; ++i) {
        a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) { /* b[4i + k], 128-bit lane L: column 4L + k of rows 4i.. */
        b[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    for (int k = 0; k < 4; ++k) { /* gather 128-bit lane L of b[k], b[4+k], b[8+k], b[12+k] */
        const __m512i c0 = _mm512_shuffle_i32x4(b[k], b[4 + k], 0x44);
        const __m512i c1 = _mm512_shuffle_i32x4(b[k], b[4 + k], 0xEE);
        const __m512i c2 = _mm512_shuffle_i32x4(b[8 + k], b[12 + k], 0x44);
        const __m512i c3 = _mm512_shuffle_i32x4(b[8 + k], b[12 + k], 0xEE);
        r[k] = _mm512_shuffle_i32x4(c0, c2, 0x88);
        r[4 + k] = _mm512_shuffle_i32x4(c0, c2, 0xDD);
        r[8 + k] = _mm512_shuffle_i32x4(c1, c3, 0x88);
        r[12 + k] = _mm512_shuffle_i32x4(c1, c3, 0xDD);
    }
}

/* K^T of each 16-key tile as two B operands (dims 0-31, 32-63): row t holds, for every key,
 * its dims (2t, 2t+1). packed: [key tiles][2][16 rows][16 lanes] 32-bit. */
static void pack_keys(const uint16_t *k, const int64_t *slots, int64_t n_keys, int64_t stride,
                      uint32_t *packed) {
    for (int64_t tile = 0; tile * KEY_TILE < n_keys; ++tile) {
        for (int half = 0; half < 2; ++half) {
            __m512i rows[16];
            for (int j = 0; j < KEY_TILE; ++j) {
                const int64_t key = tile * KEY_TILE + j;
                rows[j] = key < n_keys ? _mm512_loadu_si512(k + slots[key] * stride + half * 32)
                                       : _mm512_setzero_si512();
            }
            transpose16(rows);
            uint32_t *dest = packed + (tile * 2 + half) * 256;
            for (int t = 0; t < 16; ++t) _mm512_store_si512(dest + t * 16, rows[t]);
        }
    }
}

/* V of each 32-key block as four B operands (output dims 16d..16d+15): row t holds, for every
 * dim, the values of keys 2t and 2t+1. packed: [key blocks][4][16 rows][16 lanes] 32-bit. */
static void pack_values(const uint16_t *v, const int64_t *slots, int64_t n_keys, int64_t stride,
                        uint32_t *packed) {
    uint16_t first_idx[32], second_idx[32];
    for (int i = 0; i < 32; ++i) { /* word i: dim i / 2 (+16) of key (i odd ? b : a) */
        first_idx[i] = (uint16_t)(i / 2 + (i % 2 ? 32 : 0));
        second_idx[i] = (uint16_t)(16 + i / 2 + (i % 2 ? 32 : 0));
    }
    const __m512i first = _mm512_loadu_si512(first_idx), second = _mm512_loadu_si512(second_idx);
    for (int64_t block = 0; block * KEY_BLOCK < n_keys; ++block) {
        uint32_t *dest = packed + block * 4 * 256;
        for (int t = 0; t < 16; ++t) {
            const int64_t key_a = block * KEY_BLOCK + 2 * t, key_b = key_a + 1;
            const __m512i zero = _mm512_setzero_si512();
            const uint16_t *row_a = key_a < n_keys ? v + slots[key_a] * stride : NULL;
            const uint16_t *row_b = key_b < n_keys ? v + slots[key_b] * stride : NULL;
            const __m512i a_lo = row_a ? _mm512_loadu_si512(row_a) : zero;
            const __m512i a_hi = row_a ? _mm512_loadu_si512(row_a + 32) : zero;
            const __m512i b_lo = row_b ? _mm512_loadu_si512(row_b) : zero;
            const __m512i b_hi = row_b ? _mm512_loadu_si512(row_b + 32) : zero;
            _mm512_store_si512(dest + 0 * 256 + t * 16, _mm512_permutex2var_epi16(a_lo, first, b_lo));
            _mm512_store_si512(dest + 1 * 256 + t * 16, _mm512_permutex2var_epi16(a_lo, second, b_lo));
            _mm512_store_si512(dest + 2 * 256 + t * 16, _mm512_permutex2var_epi16(a_hi, first, b_hi));
            _mm512_store_si512(dest + 3 * 256 + t * 16, _mm512_permutex2var_epi16(a_hi, second, b_hi));
        }
    }
}

/* A unit of parallel work: rows first_row .. of one problem (up to CHUNK_TILES row tiles),
 * over one KV head. */
typedef struct {
    int64_t problem, head, first_row;
} WorkItem;

typedef struct {
    const uint16_t *q;
    const int64_t *tokens, *limits; /* this problem's entries */
    int64_t q_row_stride, n_keys, kv_heads, group, head;
    float scale;
    int accumulate;
    float *out, *lse;
} Problem;

/* Scores of `tiles` (1-4) key tiles from `first_tile` into tiles 0.., stored to `scores`. */
static inline void score_tiles(const uint32_t *keys, int64_t first_tile, int tiles, float *scores,
                               int64_t stride) {
#define SCORE(c)                                                                   \
    do {                                                                           \
        const uint32_t *packed = keys + (first_tile + c) * 2 * 256;                \
        TILE_ZERO(c);                                                              \
        TILE_LOAD(TILE_B0, packed, 64);                                            \
        TILE_DOT(c, TILE_A0, TILE_B0);                                             \
        TILE_LOAD(TILE_B1, packed + 256, 64);                                      \
        TILE_DOT(c, TILE_A1, TILE_B1);                                             \
    } while (0)
    SCORE(0);
    if (tiles > 1) SCORE(1);
    if (tiles > 2) SCORE(2);
    if (tiles > 3) SCORE(3);
#undef SCORE
    TILE_STORE(0, scores, stride);
    if (tiles > 1) TILE_STORE(1, scores + KEY_TILE, stride);
    if (tiles > 2) TILE_STORE(2, scores + 2 * KEY_TILE, stride);
    if (tiles > 3) TILE_STORE(3, scores + 3 * KEY_TILE, stride);
}

/* Softmax numerators of one row's `visible` scores (of `padded`, a multiple of 32) against
 * its running maximum, as bfloat16 P (zero past `visible`); returns their float32 sum. The
 * running maximum rises to this chunk's; `factor` gets how much earlier sums shrink. */
static inline float row_probabilities(const float *scores, int64_t visible, int64_t padded,
                                      float scale, float *row_max, float *factor,
                                      uint16_t *probs) {
    const int64_t full = visible / 16, rest = visible % 16;
    const __mmask16 tail = (__mmask16)((1u << rest) - 1);
    __m512 top = _mm512_set1_ps(EMPTY_LSE);
    for (int64_t j = 0; j < full; ++j) top = _mm512_max_ps(top, _mm512_load_ps(scores + 16 * j));
    if (rest) top = _mm512_mask_max_ps(top, tail, top, _mm512_load_ps(scores + 16 * full));
    const float chunk_max = _mm512_reduce_max_ps(top) * scale;
    *factor = 1.0f;
    if (chunk_max > *row_max) {
        if (*row_max > EMPTY_LSE) *factor = expf(*row_max - chunk_max);
        *row_max = chunk_max;
    }
    const float log2e = 1.44269504f;
    const __m512 slope = _mm512_set1_ps(scale * log2e), shift = _mm512_set1_ps(*row_max * log2e);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < padded / 16; j += 2) { /* 32 keys: one 64-byte row of P */
        __m512 p0 = exp2_512(_mm512_fmsub_ps(_mm512_load_ps(scores + 16 * j), slope, shift));
        __m512 p1 = exp2_512(_mm512_fmsub_ps(_mm512_load_ps(scores + 16 * j + 16), slope, shift));
        if (j + 2 > full) { /* the block holding `visible`, or past it */
            p0 = _mm512_maskz_mov_ps(j < full ? 0xFFFF : j == full ? tail : 0, p0);
            p1 = _mm512_maskz_mov_ps(j + 1 < full ? 0xFFFF : j + 1 == full ? tail : 0, p1);
        }
        sum = _mm512_add_ps(sum, _mm512_add_ps(p0, p1));
        _mm512_store_si512(probs + 16 * j, (__m512i)_mm512_cvtne2ps_pbh(p1, p0));
    }
    return _mm512_reduce_add_ps(sum);
}

/* O tiles (0-3) += P [16, n] . V for the packed value blocks from `first_block`. Successive
 * blocks load P into alternate A tiles. */
static inline void accumulate_values(const uint16_t *probs, int64_t stride, int64_t blocks,
                                     const uint32_t *values, int64_t first_block) {
#define VALUE_BLOCK(a)                                                             \
    do {                                                                           \
        TILE_LOAD(a, p, stride);                                                   \
        TILE_LOAD(TILE_B0, packed, 64);                                            \
        TILE_DOT(0, a, TILE_B0);                                                   \
        TILE_LOAD(TILE_B1, packed + 256, 64);                                      \
        TILE_DOT(1, a, TILE_B1);                                                   \
        TILE_LOAD(TILE_B0, packed + 512, 64);                                      \
        TILE_DOT(2, a, TILE_B0);                                                   \
        TILE_LOAD(TILE_B1, packed + 768, 64);                                      \
        TILE_DOT(3, a, TILE_B1);                                                   \
    } while (0)
    for (int64_t b = 0; b < blocks; ++b) {
        const uint32_t *packed = values + (first_block + b) * 4 * 256;
        const uint16_t *p = probs + b * KEY_BLOCK;
        if (b % 2 == 0)
            VALUE_BLOCK(TILE_A0);
        else
            VALUE_BLOCK(TILE_A1);
    }
#undef VALUE_BLOCK
}

/* Rows [first, first + n_rows) of a problem (n_rows <= 16) against its packed keys: for each
 * chunk of keys, all scores (QK), an exact softmax per row, then O += P.V. O lives in memory
 * between chunks, rescaled when a chunk raises a row's maximum. */
static void attend_tile(const Problem *p, int64_t first, int64_t n_rows, const uint32_t *keys,
                        const uint32_t *values) {
    uint16_t query[TILE_ROWS][HEAD_DIM] __attribute__((aligned(64)));
    float scores[TILE_ROWS][KEY_CHUNK] __attribute__((aligned(64)));
    uint16_t probs[TILE_ROWS][KEY_CHUNK] __attribute__((aligned(64)));
    float acc[TILE_ROWS][HEAD_DIM] __attribute__((aligned(64)));
    float row_max[TILE_ROWS], row_sum[TILE_ROWS], factor[TILE_ROWS];
    int64_t limit[TILE_ROWS], max_limit = 0;
    const int64_t G = p->group, H = p->kv_heads;

    for (int i = 0; i < TILE_ROWS; ++i) {
        row_max[i] = EMPTY_LSE;
        row_sum[i] = 0.0f;
        limit[i] = 0;
        if (i < n_rows) {
            const int64_t row = first + i, entry = row / G;
            const int64_t token = p->tokens[entry];
            limit[i] = p->limits ? p->limits[entry] : p->n_keys;
            if (limit[i] > p->n_keys) limit[i] = p->n_keys;
            memcpy(query[i], p->q + token * p->q_row_stride + (p->head * G + row % G) * HEAD_DIM,
                   sizeof query[i]);
        } else {
            memset(query[i], 0, sizeof query[i]);
        }
        if (limit[i] > max_limit) max_limit = limit[i];
    }

    for (int64_t start = 0; start < max_limit; start += KEY_CHUNK) {
        const int64_t n = max_limit - start < KEY_CHUNK ? max_limit - start : KEY_CHUNK;
        const int64_t padded = (n + KEY_BLOCK - 1) / KEY_BLOCK * KEY_BLOCK;
        const int64_t key_tiles = (n + KEY_TILE - 1) / KEY_TILE;
        TILE_LOAD(TILE_A0, &query[0][0], sizeof query[0]);
        TILE_LOAD(TILE_A1, &query[0][32], sizeof query[0]);
        for (int64_t t = 0; t < key_tiles; t += 4)
            score_tiles(keys, start / KEY_TILE + t, key_tiles - t < 4 ? (int)(key_tiles - t) : 4,
                        &scores[0][t * KEY_TILE], sizeof scores[0]);
        int rescale = 0;
        for (int i = 0; i < TILE_ROWS; ++i) {
            int64_t visible = limit[i] - start;
            visible = visible < 0 ? 0 : visible > n ? n : visible;
            factor[i] = 1.0f;
            if (visible == 0) {
                memset(probs[i], 0, padded * sizeof probs[i][0]);
                continue;
            }
            const float sum = row_probabilities(scores[i], visible, padded, p->scale,
                                                &row_max[i], &factor[i], probs[i]);
            row_sum[i] = row_sum[i] * factor[i] + sum;
            rescale |= factor[i] != 1.0f;
        }
        if (start == 0) {
            TILE_ZERO(0);
            TILE_ZERO(1);
            TILE_ZERO(2);
            TILE_ZERO(3);
        } else {
            if (rescale)
                for (int i = 0; i < TILE_ROWS; ++i)
                    for (int d = 0; d < HEAD_DIM; ++d) acc[i][d] *= factor[i];
            TILE_LOAD(0, &acc[0][0], sizeof acc[0]);
            TILE_LOAD(1, &acc[0][16], sizeof acc[0]);
            TILE_LOAD(2, &acc[0][32], sizeof acc[0]);
            TILE_LOAD(3, &acc[0][48], sizeof acc[0]);
        }
        accumulate_values(&probs[0][0], sizeof probs[0], padded / KEY_BLOCK, values,
                          start / KEY_BLOCK);
        TILE_STORE(0, &acc[0][0], sizeof acc[0]);
        TILE_STORE(1, &acc[0][16], sizeof acc[0]);
        TILE_STORE(2, &acc[0][32], sizeof acc[0]);
        TILE_STORE(3, &acc[0][48], sizeof acc[0]);
    }

    for (int i = 0; i < n_rows; ++i) {
        const int64_t row = first + i, token = p->tokens[row / G];
        const int64_t at = (token * H + p->head) * G + row % G;
        float *out = p->out + at * HEAD_DIM;
        const int seen = row_sum[i] > 0.0f;
        const float lse = seen ? row_max[i] + logf(row_sum[i]) : EMPTY_LSE;
        const float inverse = seen ? 1.0f / row_sum[i] : 0.0f;
        if (!p->accumulate) {
            for (int d = 0; d < HEAD_DIM; ++d) out[d] = acc[i][d] * inverse;
            p->lse[at] = lse;
        } else if (seen) { /* merge with the earlier segments of this token */
            const float old = p->lse[at], top = old > lse ? old : lse;
            const float w_old = expf(old - top), w_new = expf(lse - top);
            const float total = w_old + w_new;
            const float a = w_old / total, b = w_new * inverse / total;
            for (int d = 0; d < HEAD_DIM; ++d) out[d] = out[d] * a + acc[i][d] * b;
            p->lse[at] = top + logf(total);
        }
    }
}

#endif /* HAVE_AMX */

/* 0 when AMX tiles can be used by this process, -1 otherwise. */
int segment_attention_init(void) {
#ifdef HAVE_AMX
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 ? 0 : -1;
#else
    return -1;
#endif
}

/* Returns 0; -1 without AMX; -2 when head_dim is not 64; -3 when out of memory. */
int segment_attention_bf16(const uint16_t *q, int64_t q_row_stride, const uint16_t *k,
                           const uint16_t *v, int64_t num_problems, const int64_t *token_offsets,
                           const int64_t *tokens, const int64_t *limits,
                           const int64_t *slot_offsets, const int64_t *slots, int64_t kv_heads,
                           int64_t group, int64_t head_dim, float scale, int accumulate,
                           int num_threads, float *out, float *lse) {
#ifndef HAVE_AMX
    (void)q, (void)q_row_stride, (void)k, (void)v, (void)num_problems, (void)token_offsets;
    (void)tokens, (void)limits, (void)slot_offsets, (void)slots, (void)kv_heads, (void)group;
    (void)head_dim, (void)scale, (void)accumulate, (void)num_threads, (void)out, (void)lse;
    return -1;
#else
    if (head_dim != HEAD_DIM) return -2;
    const int64_t chunk_rows = CHUNK_TILES * TILE_ROWS;
    int64_t num_items = 0;
    for (int64_t p = 0; p < num_problems; ++p) {
        const int64_t rows = (token_offsets[p + 1] - token_offsets[p]) * group;
        num_items += kv_heads * ((rows + chunk_rows - 1) / chunk_rows);
    }
    WorkItem *items = malloc(sizeof(WorkItem) * (num_items > 0 ? num_items : 1));
    if (!items) return -3;
    int64_t n = 0;
    for (int64_t p = 0; p < num_problems; ++p) {
        const int64_t rows = (token_offsets[p + 1] - token_offsets[p]) * group;
        for (int64_t h = 0; h < kv_heads; ++h)
            for (int64_t first = 0; first < rows; first += chunk_rows) {
                items[n++] = (WorkItem){.problem = p, .head = h, .first_row = first};
            }
    }
    int failed = 0;
#pragma omp parallel num_threads(num_threads)
    {
        configure_tiles();
        uint32_t *packed = NULL;
        int64_t capacity = 0; /* key blocks the scratch holds */
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < num_items; ++item) {
            const int64_t p = items[item].problem, h = items[item].head;
            const int64_t first = items[item].first_row;
            const int64_t entry = token_offsets[p];
            const int64_t rows = (token_offsets[p + 1] - entry) * group;
            const int64_t n_rows = rows - first < chunk_rows ? rows - first : chunk_rows;
            const int64_t *problem_slots = slots + slot_offsets[p];
            int64_t n_keys = slot_offsets[p + 1] - slot_offsets[p];
            if (limits) { /* keys beyond every row's limit need no packing */
                int64_t seen = 0;
                for (int64_t e = first / group; e <= (first + n_rows - 1) / group; ++e)
                    if (limits[entry + e] > seen) seen = limits[entry + e];
                if (seen < n_keys) n_keys = seen;
            }
            const int64_t blocks = (n_keys + KEY_BLOCK - 1) / KEY_BLOCK;
            if (blocks > capacity) { /* key tiles (2 KB each, 2 per block) + value blocks (4 KB) */
                free(packed);
                capacity = blocks;
                packed = aligned_alloc(64, (size_t)capacity * 8192);
                if (!packed) {
                    capacity = 0;
#pragma omp atomic write
                    failed = 1;
                    continue;
                }
            }
            const int64_t stride = kv_heads * HEAD_DIM;
            uint32_t *keys = packed, *values = packed + blocks * 2 * 2 * 256;
            pack_keys(k + h * HEAD_DIM, problem_slots, n_keys, stride, keys);
            pack_values(v + h * HEAD_DIM, problem_slots, n_keys, stride, values);
            const Problem problem = {q,
                                     tokens + entry,
                                     limits ? limits + entry : NULL,
                                     q_row_stride,
                                     n_keys,
                                     kv_heads,
                                     group,
                                     h,
                                     scale,
                                     accumulate,
                                     out,
                                     lse};
            for (int64_t row = first; row < first + n_rows; row += TILE_ROWS) {
                const int64_t left = first + n_rows - row;
                attend_tile(&problem, row, left < TILE_ROWS ? left : TILE_ROWS, keys, values);
            }
        }
        free(packed);
        _tile_release();
    }
    free(items);
    return failed ? -3 : 0;
#endif
}
