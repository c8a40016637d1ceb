/*
 * Fused element-wise steps of a decoder layer on bfloat16 or float32 activations, for CPUs.
 *
 * Each function replaces a chain of small torch operators (residual add + RMSNorm, SiLU(gate) *
 * up, rotary embedding): one pass over the rows instead of one pass, one allocation and one
 * thread-pool wake-up per operator. Every intermediate is rounded to bfloat16 exactly where the
 * torch chain rounds it, so results are bit-identical to that chain except where float32
 * arithmetic is reordered (RMSNorm's sum of squares) or approximated (expf): a rare last-bit
 * difference in bfloat16.
 *
 * In float32 nothing is rounded between steps, as in the torch chain; results agree with it
 * to float32 rounding (the same reordered sums and approximated expf).
 *
 * Each step is written once for one row (`*_row`, always inlined) over a `Floats` flag, and
 * exported per dtype with its row loop: `*_bf16` takes bfloat16 bits (uint16), `*_f32` float32.
 * Tensors are contiguous rows (rotary: rows `row_stride` apart, its heads at the start of each).
 * Small problems run on the calling thread: waking the pool costs more than they do.
 */
#include "common.h"

#define PARALLEL_MIN_ELEMENTS (1 << 16)

/* The value the torch chain holds after a step: rounded to bfloat16, or float32 as is. */
INLINE float held(float value, Floats kind) { return kind == BF16 ? round_bf16(value) : value; }

/*
 * out = weight * held(rms_norm(float32(s))), s = held(x + delta) (or x when delta is NULL),
 * as transformers' LlamaRMSNorm on the residual stream; s is stored to `sum_out` when delta is
 * given (the new residual). All of x, delta, sum_out, out: [rows, dim] contiguous.
 */
INLINE void add_rms_norm_row(const void *x, const void *delta, const void *weight, int64_t r,
                             int64_t dim, float eps, void *sum_out, void *out, Floats kind) {
    const int64_t first = r * dim;
    const void *source = x;
    float squares = 0.0f;
    if (delta != NULL) {
        for (int64_t d = first; d < first + dim; ++d) {
            const float value = held(load(x, d, kind) + load(delta, d, kind), kind);
            store(sum_out, d, value, kind);
            squares += value * value;
        }
        source = sum_out;
    } else {
        for (int64_t d = first; d < first + dim; ++d) {
            const float value = load(x, d, kind);
            squares += value * value;
        }
    }
    const float inverse_rms = 1.0f / sqrtf(squares / (float)dim + eps);
    for (int64_t d = 0; d < dim; ++d) {
        const float normed = held(load(source, first + d, kind) * inverse_rms, kind);
        store(out, first + d, load(weight, d, kind) * normed, kind);
    }
}

/*
 * out = held(held(silu(gate)) * up) for gate_up rows [gate (inter) | up (inter)]:
 * the MLP's activation on the merged gate/up projection. out: [rows, inter].
 */
INLINE void silu_mul_row(const void *gate_up, int64_t r, int64_t inter, void *out, Floats kind) {
    const int64_t gate = r * 2 * inter, up = gate + inter;
    for (int64_t i = 0; i < inter; ++i) {
        const float g = load(gate_up, gate + i, kind);
        const float activated = held(g / (1.0f + expf(-g)), kind);
        store(out, r * inter + i, activated * load(gate_up, up + i, kind), kind);
    }
}

/*
 * Rotate-half rotary embedding in place: for each of `heads` heads of head_dim D at the start
 * of every row (row stride `row_stride`), x <- held(held(x * cos) + held(rotate_half(x) * sin)),
 * rotate_half(x) = [-x2, x1]. cos, sin: [rows, D], one row per token.
 */
INLINE void rotary_row(void *x, int64_t r, int64_t row_stride, int64_t heads, int64_t head_dim,
                       const void *cos, const void *sin, Floats kind) {
    const int64_t half = head_dim / 2;
    const int64_t angle = r * head_dim;
    for (int64_t h = 0; h < heads; ++h) {
        const int64_t head = r * row_stride + h * head_dim;
        for (int64_t i = 0; i < half; ++i) {
            const float x1 = load(x, head + i, kind), x2 = load(x, head + i + half, kind);
            const float first = held(x1 * load(cos, angle + i, kind), kind) +
                                held(-x2 * load(sin, angle + i, kind), kind);
            const float second = held(x2 * load(cos, angle + i + half, kind), kind) +
                                 held(x1 * load(sin, angle + i + half, kind), kind);
            store(x, head + i, first, kind);
            store(x, head + i + half, second, kind);
        }
    }
}

/* The row loops live in the exported functions, where `kind` is a literal: an OpenMP region
 * outlines its body before inlining, and a `kind` captured as a variable would keep the
 * per-element branches (and the scalar expf) in the loops. */
#define PARALLEL_ROWS \
    _Pragma("omp parallel for schedule(static) num_threads(num_threads) if (parallel)")

#define EXPORT_PER_DTYPE(suffix, ctype, kind)                                                  \
    void add_rms_norm_##suffix(const ctype *x, const ctype *delta, const ctype *weight,        \
                               int64_t rows, int64_t dim, float eps, int num_threads,          \
                               ctype *sum_out, ctype *out) {                                   \
        const int parallel = rows * dim >= PARALLEL_MIN_ELEMENTS;                              \
        PARALLEL_ROWS                                                                          \
        for (int64_t r = 0; r < rows; ++r)                                                     \
            add_rms_norm_row(x, delta, weight, r, dim, eps, sum_out, out, kind);               \
    }                                                                                          \
    void silu_mul_##suffix(const ctype *gate_up, int64_t rows, int64_t inter, int num_threads, \
                           ctype *out) {                                                       \
        const int parallel = rows * inter >= PARALLEL_MIN_ELEMENTS;                            \
        PARALLEL_ROWS                                                                          \
        for (int64_t r = 0; r < rows; ++r) silu_mul_row(gate_up, r, inter, out, kind);         \
    }                                                                                          \
    void rotary_##suffix(ctype *x, int64_t rows, int64_t row_stride, int64_t heads,            \
                         int64_t head_dim, const ctype *cos, const ctype *sin,                 \
                         int num_threads) {                                                    \
        const int parallel = rows * heads * head_dim >= PARALLEL_MIN_ELEMENTS;                 \
        PARALLEL_ROWS                                                                          \
        for (int64_t r = 0; r < rows; ++r)                                                     \
            rotary_row(x, r, row_stride, heads, head_dim, cos, sin, kind);                     \
    }

EXPORT_PER_DTYPE(bf16, uint16_t, BF16)
EXPORT_PER_DTYPE(f32, float, F32)
