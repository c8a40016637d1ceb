/*
 * Decode attention straight from the token-granular KV pool (bfloat16 or float32), for CPUs.
 *
 * One query token per request attends to that request's own KV slots, read in place through
 * its row of slot indices: no gathered copy of K/V and no padding to the longest request.
 * Grouped-query attention: the `group` query heads that share a KV head are computed together,
 * so each K/V row is loaded once per KV head.
 *
 * Layouts (all contiguous); q, k and v share one element type, bfloat16 bits or float32:
 *   q      [batch, kv_heads, group, head_dim]
 *   k, v   [pool_slots, kv_heads, head_dim]
 *   slots  [batch, max_len] int64; row b holds lens[b] valid slots, the rest is ignored
 *   out    [batch, kv_heads, group, head_dim]  float32
 *   lse    [batch, kv_heads, group]            float32, natural log-sum-exp of the scaled scores
 *
 * Softmax runs online over blocks of keys in float32 (the running maximum rescales the
 * accumulator), like a flash-attention kernel. Built with -ffast-math for vectorized expf, so
 * the code never relies on infinities: an empty row gets out = 0 and lse = EMPTY_LSE.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define KEY_BLOCK 64
#define MAX_GROUP 16
#define MAX_HEAD_DIM 256
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

/* One (request, KV head) item. Inlined with a constant head_dim where it is common, so the
 * per-key loops unroll into whole vectors, and with a constant element type. */
static inline __attribute__((always_inline)) void attend_item(
    int64_t item, const void *q, const void *k, const void *v, const int64_t *slots,
    const int64_t *lens, int64_t max_len, int64_t kv_heads, int64_t group, int64_t head_dim,
    float scale, int is_f32, float *out, float *lse) {
    const int64_t row_stride = kv_heads * head_dim; /* elements between pool slots */
    const int64_t b = item / kv_heads, h = item % kv_heads;
    const int64_t len = lens[b];
    const int64_t *row_slots = slots + b * max_len;
    float query[MAX_GROUP][MAX_HEAD_DIM], acc[MAX_GROUP][MAX_HEAD_DIM];
    float scores[MAX_GROUP][KEY_BLOCK], running_max[MAX_GROUP], running_sum[MAX_GROUP];
    float row[MAX_HEAD_DIM];

    const int64_t q_item = item * group * head_dim;
    for (int64_t g = 0; g < group; ++g) {
        for (int64_t d = 0; d < head_dim; ++d) {
            query[g][d] = load(q, q_item + g * head_dim + d, is_f32) * scale;
            acc[g][d] = 0.0f;
        }
        running_max[g] = NO_MAX;
        running_sum[g] = 0.0f;
    }

    for (int64_t start = 0; start < len; start += KEY_BLOCK) {
        const int64_t n = len - start < KEY_BLOCK ? len - start : KEY_BLOCK;
        for (int64_t j = 0; j < n; ++j) { /* scores = q . k for the block */
            const int64_t k_row = row_slots[start + j] * row_stride + h * head_dim;
            for (int64_t d = 0; d < head_dim; ++d) row[d] = load(k, k_row + d, is_f32);
            for (int64_t g = 0; g < group; ++g) {
                float dot = 0.0f;
                for (int64_t d = 0; d < head_dim; ++d) dot += query[g][d] * row[d];
                scores[g][j] = dot;
            }
        }
        for (int64_t g = 0; g < group; ++g) { /* online softmax: rescale, exponentiate */
            float block_max = scores[g][0];
            for (int64_t j = 1; j < n; ++j) block_max = fmaxf(block_max, scores[g][j]);
            const float new_max = fmaxf(running_max[g], block_max);
            const float rescale = expf(running_max[g] - new_max);
            float block_sum = 0.0f;
            for (int64_t j = 0; j < n; ++j) {
                scores[g][j] = expf(scores[g][j] - new_max);
                block_sum += scores[g][j];
            }
            running_sum[g] = running_sum[g] * rescale + block_sum;
            running_max[g] = new_max;
            for (int64_t d = 0; d < head_dim; ++d) acc[g][d] *= rescale;
        }
        for (int64_t j = 0; j < n; ++j) { /* acc += p . v */
            const int64_t v_row = row_slots[start + j] * row_stride + h * head_dim;
            for (int64_t d = 0; d < head_dim; ++d) row[d] = load(v, v_row + d, is_f32);
            for (int64_t g = 0; g < group; ++g) {
                const float p = scores[g][j];
                for (int64_t d = 0; d < head_dim; ++d) acc[g][d] += p * row[d];
            }
        }
    }

    float *out_item = out + item * group * head_dim;
    float *lse_item = lse + item * group;
    for (int64_t g = 0; g < group; ++g) {
        const float inverse = len > 0 ? 1.0f / running_sum[g] : 0.0f;
        for (int64_t d = 0; d < head_dim; ++d) out_item[g * head_dim + d] = acc[g][d] * inverse;
        lse_item[g] = len > 0 ? running_max[g] + logf(running_sum[g]) : EMPTY_LSE;
    }
}

/* Every item of the batch, for one constant element type. */
static inline __attribute__((always_inline)) void attend_all(
    const void *q, const void *k, const void *v, const int64_t *slots, const int64_t *lens,
    int64_t batch, int64_t max_len, int64_t kv_heads, int64_t group, int64_t head_dim,
    float scale, int is_f32, int num_threads, float *out, float *lse) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
    for (int64_t item = 0; item < batch * kv_heads; ++item) {
        if (head_dim == 64)
            attend_item(item, q, k, v, slots, lens, max_len, kv_heads, group, 64, scale, is_f32,
                        out, lse);
        else if (head_dim == 128)
            attend_item(item, q, k, v, slots, lens, max_len, kv_heads, group, 128, scale, is_f32,
                        out, lse);
        else
            attend_item(item, q, k, v, slots, lens, max_len, kv_heads, group, head_dim, scale,
                        is_f32, out, lse);
    }
}

/* Returns 0, or -1 when group or head_dim exceed the kernel's fixed limits. `is_f32`: q, k and
 * v are float32 (else bfloat16). */
int decode_attention(const void *q, const void *k, const void *v, const int64_t *slots,
                     const int64_t *lens, int64_t batch, int64_t max_len, int64_t kv_heads,
                     int64_t group, int64_t head_dim, float scale, int is_f32, int num_threads,
                     float *out, float *lse) {
    if (group > MAX_GROUP || head_dim > MAX_HEAD_DIM) return -1;
    if (is_f32)
        attend_all(q, k, v, slots, lens, batch, max_len, kv_heads, group, head_dim, scale, 1,
                   num_threads, out, lse);
    else
        attend_all(q, k, v, slots, lens, batch, max_len, kv_heads, group, head_dim, scale, 0,
                   num_threads, out, lse);
    return 0;
}
