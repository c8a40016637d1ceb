/*
 * Fused element-wise steps of a decoder layer on bfloat16 activations, for CPUs.
 *
 * Each function replaces a chain of small torch operators (residual add + RMSNorm, SiLU(gate) *
 * up, rotary embedding): one pass over the rows instead of one pass, one allocation and one
 * thread-pool wake-up per operator. Every intermediate is rounded to bfloat16 exactly where the
 * torch chain rounds it, so results are bit-identical to that chain except where float32
 * arithmetic is reordered (RMSNorm's sum of squares) or approximated (expf): a rare last-bit
 * difference in bfloat16.
 *
 * Tensors are bfloat16 bits in contiguous rows (rotary: rows `row_stride` apart, its heads at
 * the start of each). Small problems run on the calling thread: waking the pool costs more
 * than they do.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define PARALLEL_MIN_ELEMENTS (1 << 16)

static inline float bf16_to_float(uint16_t bits) {
    uint32_t wide = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &wide, sizeof value);
    return value;
}

/* Round to nearest even, as torch converts float32 to bfloat16 (NaN stays a quiet NaN). */
static inline uint16_t float_to_bf16(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

static inline float round_bf16(float value) { return bf16_to_float(float_to_bf16(value)); }

/*
 * out = weight * bf16(rms_norm(float32(s))), s = bf16(x + delta) (or x when delta is NULL),
 * as transformers' LlamaRMSNorm on the residual stream; s is stored to `sum_out` when delta is
 * given (the new residual). All of x, delta, sum_out, out: [rows, dim] contiguous.
 */
void add_rms_norm_bf16(const uint16_t *x, const uint16_t *delta, const uint16_t *weight,
                       int64_t rows, int64_t dim, float eps, int num_threads, uint16_t *sum_out,
                       uint16_t *out) {
#pragma omp parallel for schedule(static) num_threads(num_threads) \
    if (rows * dim >= PARALLEL_MIN_ELEMENTS)
    for (int64_t r = 0; r < rows; ++r) {
        const uint16_t *x_row = x + r * dim;
        const uint16_t *source = x_row;
        float squares = 0.0f;
        if (delta != NULL) {
            const uint16_t *delta_row = delta + r * dim;
            uint16_t *sum_row = sum_out + r * dim;
            for (int64_t d = 0; d < dim; ++d) {
                float value = round_bf16(bf16_to_float(x_row[d]) + bf16_to_float(delta_row[d]));
                sum_row[d] = float_to_bf16(value);
                squares += value * value;
            }
            source = sum_row;
        } else {
            for (int64_t d = 0; d < dim; ++d) {
                float value = bf16_to_float(x_row[d]);
                squares += value * value;
            }
        }
        const float inverse_rms = 1.0f / sqrtf(squares / (float)dim + eps);
        uint16_t *out_row = out + r * dim;
        for (int64_t d = 0; d < dim; ++d) {
            float normed = round_bf16(bf16_to_float(source[d]) * inverse_rms);
            out_row[d] = float_to_bf16(bf16_to_float(weight[d]) * normed);
        }
    }
}

/*
 * out = bf16(bf16(silu(gate)) * up) for gate_up rows [gate (inter) | up (inter)]:
 * the MLP's activation on the merged gate/up projection. out: [rows, inter].
 */
void silu_mul_bf16(const uint16_t *gate_up, int64_t rows, int64_t inter, int num_threads,
                   uint16_t *out) {
#pragma omp parallel for schedule(static) num_threads(num_threads) \
    if (rows * inter >= PARALLEL_MIN_ELEMENTS)
    for (int64_t r = 0; r < rows; ++r) {
        const uint16_t *gate = gate_up + r * 2 * inter;
        const uint16_t *up = gate + inter;
        uint16_t *out_row = out + r * inter;
        for (int64_t i = 0; i < inter; ++i) {
            float g = bf16_to_float(gate[i]);
            float activated = round_bf16(g / (1.0f + expf(-g)));
            out_row[i] = float_to_bf16(activated * bf16_to_float(up[i]));
        }
    }
}

/*
 * Rotate-half rotary embedding in place: for each of `heads` heads of head_dim D at the start
 * of every row (row stride `row_stride`), x <- bf16(bf16(x * cos) + bf16(rotate_half(x) * sin)),
 * rotate_half(x) = [-x2, x1]. cos, sin: [rows, D] bfloat16, one row per token.
 */
void rotary_bf16(uint16_t *x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                 const uint16_t *cos, const uint16_t *sin, int num_threads) {
    const int64_t half = head_dim / 2;
#pragma omp parallel for schedule(static) num_threads(num_threads) \
    if (rows * heads * head_dim >= PARALLEL_MIN_ELEMENTS)
    for (int64_t r = 0; r < rows; ++r) {
        const uint16_t *cos_row = cos + r * head_dim;
        const uint16_t *sin_row = sin + r * head_dim;
        for (int64_t h = 0; h < heads; ++h) {
            uint16_t *head = x + r * row_stride + h * head_dim;
            for (int64_t i = 0; i < half; ++i) {
                float x1 = bf16_to_float(head[i]), x2 = bf16_to_float(head[i + half]);
                float first = round_bf16(x1 * bf16_to_float(cos_row[i])) +
                              round_bf16(-x2 * bf16_to_float(sin_row[i]));
                float second = round_bf16(x2 * bf16_to_float(cos_row[i + half])) +
                               round_bf16(x1 * bf16_to_float(sin_row[i + half]));
                head[i] = float_to_bf16(first);
                head[i + half] = float_to_bf16(second);
            }
        }
    }
}
