/*
 * Decode attention straight from the token-granular KV pool (bfloat16 or float32), for CPUs.
 *
 * Each "request" of the batch attends `group` query rows to its KV slots, read in place through
 * its row of slot indices: no gathered copy of K/V and no padding to the longest request. The
 * query rows that share a KV head are computed together, so each K/V block is loaded from
 * memory once for all of them: the GQA group of one decoding request (any number of rows
 * works; the engine sends decode steps only).
 *
 * Layouts (all contiguous); q, k and v share one element type, bfloat16 bits or float32:
 *   q      [batch, kv_heads, group, head_dim]
 *   k, v   [pool_slots, kv_heads, head_dim]
 *   slots  [batch, max_len] int64; row b holds lens[b] valid slots, the rest is ignored
 *   out    [batch, kv_heads, group, head_dim]  float32
 *   lse    [batch, kv_heads, group]            float32, natural log-sum-exp of the scaled scores
 *
 * Softmax runs online over blocks of keys in float32 (the running maximum rescales the
 * accumulator), like a flash-attention kernel. With AVX2 and head_dim a multiple of 8, q . k
 * takes eight keys at a time and p . v keeps the accumulator in registers (explicit vectors);
 * elsewhere plain loops. Built with -ffast-math for vectorized expf, so the code never relies
 * on infinities: an empty row gets out = 0 and lse = EMPTY_LSE.
 */
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define KEY_BLOCK 64
#define NO_MAX (-1e30f)
#define EMPTY_LSE (-1e30f)

static inline float bf16_to_float(uint16_t bits) {
    uint32_t wide = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &wide, sizeof value);
    return value;
}

/* Element `i` of a bfloat16 (`is_f32` 0) or float32 array, widened to float. */
static inline __attribute__((always_inline)) float load(const void *base, int64_t i, int is_f32) {
    return is_f32 ? ((const float *)base)[i] : bf16_to_float(((const uint16_t *)base)[i]);
}

#ifdef __AVX2__
/* Elements i .. i+7, widened to float. */
static inline __attribute__((always_inline)) __m256 load8(const void *base, int64_t i,
                                                          int is_f32) {
    if (is_f32) return _mm256_loadu_ps((const float *)base + i);
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
static inline __attribute__((always_inline)) void block_scores(
    const float *query, const void *k, const int64_t *rows, int64_t n, int64_t head_dim,
    int is_f32, float *scores) {
    int64_t j = 0;
#ifdef __AVX2__
    if (head_dim % 8 == 0) {
        for (; j + 8 <= n; j += 8) {
            __m256 acc[8];
            for (int t = 0; t < 8; ++t) acc[t] = _mm256_setzero_ps();
            for (int64_t d = 0; d < head_dim; d += 8) {
                const __m256 q = _mm256_loadu_ps(query + d);
                for (int t = 0; t < 8; ++t)
                    acc[t] = _mm256_fmadd_ps(q, load8(k, rows[j + t] + d, is_f32), acc[t]);
            }
            _mm256_storeu_ps(scores + j, sum_lanes_8x8(acc));
        }
        for (; j < n; ++j) {
            __m256 acc = _mm256_setzero_ps();
            for (int64_t d = 0; d < head_dim; d += 8)
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(query + d), load8(k, rows[j] + d, is_f32),
                                      acc);
            scores[j] = sum_lanes(acc);
        }
        return;
    }
#endif
    for (; j < n; ++j) {
        float dot = 0.0f;
        for (int64_t d = 0; d < head_dim; ++d) dot += query[d] * load(k, rows[j] + d, is_f32);
        scores[j] = dot;
    }
}

/* acc += sum_j p[j] * v[rows[j]] over the n keys of a block. The accumulator is held in
 * registers 64 elements at a time while every key of the block is added. */
static inline __attribute__((always_inline)) void block_accumulate(
    const float *p, const void *v, const int64_t *rows, int64_t n, int64_t head_dim, int is_f32,
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
                    sum[i] = _mm256_fmadd_ps(weight, load8(v, rows[j] + d0 + 8 * i, is_f32),
                                             sum[i]);
            }
            for (int64_t i = 0; i < vectors; ++i) _mm256_storeu_ps(acc + d0 + 8 * i, sum[i]);
        }
        return;
    }
#endif
    for (int64_t j = 0; j < n; ++j)
        for (int64_t d = 0; d < head_dim; ++d) acc[d] += p[j] * load(v, rows[j] + d, is_f32);
}

/* One (request, KV head) item. Inlined with a constant head_dim where it is common, so the
 * per-key loops unroll into whole vectors, and with a constant element type. */
static inline __attribute__((always_inline)) void attend_item(
    int64_t item, const void *q, const void *k, const void *v, const int64_t *slots,
    const int64_t *lens, int64_t max_len, int64_t kv_heads, int64_t group, int64_t head_dim,
    float scale, int is_f32, float *scratch, float *out, float *lse) {
    const int64_t row_stride = kv_heads * head_dim; /* elements between pool slots */
    const int64_t b = item / kv_heads, h = item % kv_heads;
    const int64_t len = lens[b];
    const int64_t *row_slots = slots + b * max_len;
    float *query = scratch, *acc = query + group * head_dim; /* [group][head_dim] each */
    float *scores = acc + group * head_dim;                    /* [group][KEY_BLOCK] */
    float *running_max = scores + group * KEY_BLOCK, *running_sum = running_max + group;
    int64_t rows[KEY_BLOCK];

    const int64_t q_item = item * group * head_dim;
    for (int64_t g = 0; g < group; ++g) {
        for (int64_t d = 0; d < head_dim; ++d) {
            query[g * head_dim + d] = load(q, q_item + g * head_dim + d, is_f32) * scale;
            acc[g * head_dim + d] = 0.0f;
        }
        running_max[g] = NO_MAX;
        running_sum[g] = 0.0f;
    }

    for (int64_t start = 0; start < len; start += KEY_BLOCK) {
        const int64_t n = len - start < KEY_BLOCK ? len - start : KEY_BLOCK;
        for (int64_t j = 0; j < n; ++j) rows[j] = row_slots[start + j] * row_stride + h * head_dim;
        /* K's block is read once per query head while it is hot in L1, then V's */
        for (int64_t g = 0; g < group; ++g)
            block_scores(query + g * head_dim, k, rows, n, head_dim, is_f32,
                         scores + g * KEY_BLOCK);
        for (int64_t g = 0; g < group; ++g) { /* online softmax: rescale, exponentiate */
            float *p = scores + g * KEY_BLOCK;
            float block_max = p[0];
            for (int64_t j = 1; j < n; ++j) block_max = fmaxf(block_max, p[j]);
            const float new_max = fmaxf(running_max[g], block_max);
            const float rescale = expf(running_max[g] - new_max);
            float block_sum = 0.0f;
            for (int64_t j = 0; j < n; ++j) {
                p[j] = expf(p[j] - new_max);
                block_sum += p[j];
            }
            running_sum[g] = running_sum[g] * rescale + block_sum;
            running_max[g] = new_max;
            for (int64_t d = 0; d < head_dim; ++d) acc[g * head_dim + d] *= rescale;
        }
        for (int64_t g = 0; g < group; ++g)
            block_accumulate(scores + g * KEY_BLOCK, v, rows, n, head_dim, is_f32,
                             acc + g * head_dim);
    }

    float *out_item = out + item * group * head_dim;
    float *lse_item = lse + item * group;
    for (int64_t g = 0; g < group; ++g) {
        const float inverse = len > 0 ? 1.0f / running_sum[g] : 0.0f;
        for (int64_t d = 0; d < head_dim; ++d)
            out_item[g * head_dim + d] = acc[g * head_dim + d] * inverse;
        lse_item[g] = len > 0 ? running_max[g] + logf(running_sum[g]) : EMPTY_LSE;
    }
}

/* Every item of the batch, for one constant element type. Returns -1 if scratch memory for
 * a thread cannot be allocated (nothing else can fail). */
static inline __attribute__((always_inline)) int attend_all(
    const void *q, const void *k, const void *v, const int64_t *slots, const int64_t *lens,
    int64_t batch, int64_t max_len, int64_t kv_heads, int64_t group, int64_t head_dim,
    float scale, int is_f32, int num_threads, float *out, float *lse) {
    const size_t scratch_floats = (size_t)group * (2 * head_dim + KEY_BLOCK + 2);
    int failed = 0;
#pragma omp parallel num_threads(num_threads)
    {
        float *scratch = malloc(scratch_floats * sizeof(float));
        if (scratch == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < batch * kv_heads; ++item) {
            if (scratch == NULL) continue;
            if (head_dim == 64)
                attend_item(item, q, k, v, slots, lens, max_len, kv_heads, group, 64, scale,
                            is_f32, scratch, out, lse);
            else if (head_dim == 128)
                attend_item(item, q, k, v, slots, lens, max_len, kv_heads, group, 128, scale,
                            is_f32, scratch, out, lse);
            else
                attend_item(item, q, k, v, slots, lens, max_len, kv_heads, group, head_dim, scale,
                            is_f32, scratch, out, lse);
        }
        free(scratch);
    }
    return failed ? -1 : 0;
}

/* Returns 0, or -1 when scratch memory could not be allocated. `is_f32`: q, k and v are
 * float32 (else bfloat16). `group` query rows share each KV head: a GQA group of one request,
 * or every query of the requests that share a prefix. */
int decode_attention(const void *q, const void *k, const void *v, const int64_t *slots,
                     const int64_t *lens, int64_t batch, int64_t max_len, int64_t kv_heads,
                     int64_t group, int64_t head_dim, float scale, int is_f32, int num_threads,
                     float *out, float *lse) {
    if (is_f32)
        return attend_all(q, k, v, slots, lens, batch, max_len, kv_heads, group, head_dim, scale,
                          1, num_threads, out, lse);
    return attend_all(q, k, v, slots, lens, batch, max_len, kv_heads, group, head_dim, scale, 0,
                      num_threads, out, lse);
}
