/*
 * A whole narrow forward pass of a Llama-family decoder in one call: every layer's norms, 4-bit
 * projections, rotary embedding, K/V store and in-place attention, then the final norm.
 *
 * A decode step of a small model is a few hundred tiny operations (about ten per layer), each
 * microseconds of work; from Python each also pays its dispatch, argument checks and result
 * allocation, which on a 135M model cost as much as the work itself. This file runs the same
 * operations from C, calling the very functions the per-operation path calls (it includes their
 * sources): the element-wise steps of elementwise.c, the 4-bit matmuls of bf16_block_matmul.c
 * (bfloat16, AVX512-BF16) or block_matmul.c (float32, AVX2), and decode_attention.c. Each is
 * called with the arguments, thread count and roundings the per-operation path gives it, so the
 * result is bit-identical to that path (a test compares them), not merely close.
 *
 * Each layer's weights are described by one row of `layers` ([num_layers, LAYER_FIELDS] int64:
 * data addresses and nothing else), built once by decode_step.py, which also keeps the tensors
 * alive. Per call (all contiguous, `kind` = bfloat16 bits or float32 as `is_f32` says):
 *
 *   x             [rows, hidden]        kind: the token embeddings (read only)
 *   cos, sin      [rows, head_dim]      kind: each token's rotary angles
 *   k_pool, v_pool [num_layers, pool_slots, kv_heads, head_dim]  kind: the KV pool
 *   out_cache_loc [rows] int64: the slot receiving each token's K/V
 *   slots, token_rows, lens, max_len: the attention problem, as decode_attention.c takes it
 *   final_norm    [hidden]              kind
 *   out           [rows, hidden]        kind: the final norm of the last residual stream
 *
 * Every projection is 4-bit with padded width equal to its width (the caller checks); a
 * projection bias (Qwen2's q/k/v) is optional. Returns 0, or as the matmuls do: -1 for shapes
 * a matmul refused, -2 for memory that could not be allocated.
 */
#include <stdlib.h>

#include "elementwise.c"
#undef GROUP
#undef ROW_TILE
#undef FEW_ROWS
#include "bf16_block_matmul.c"
#undef GROUP
#undef ROW_TILE
#undef FEW_ROWS
#include "block_matmul.c"
#undef GROUP
#undef ROW_TILE
#undef FEW_ROWS
#include "decode_attention.c"

/* The columns of one row of the layer table (decode_step.py names them in this order). A
 * projection's SHIFTS are its mins (bfloat16 kernel) or zeros (float32 kernel); its HALF is 1
 * where the bfloat16 kernel's scales and mins are float16 (a flag, not an address). */
enum {
    QKV_CODES, QKV_SCALES, QKV_SHIFTS, QKV_HALF, QKV_BIAS,
    O_CODES, O_SCALES, O_SHIFTS, O_HALF,
    GATE_UP_CODES, GATE_UP_SCALES, GATE_UP_SHIFTS, GATE_UP_HALF,
    DOWN_CODES, DOWN_SCALES, DOWN_SHIFTS, DOWN_HALF,
    INPUT_NORM, POST_ATTENTION_NORM,
    LAYER_FIELDS
};

int decode_step_layer_fields(void) { return LAYER_FIELDS; }

/* 1 where this build has a 4-bit matmul for `is_f32` activations, else 0. */
int decode_step_available(int is_f32) {
#if defined(__AVX512BF16__) && defined(__AVX2__)
    (void)is_f32;
    return 1;
#elif defined(__AVX2__)
    return is_f32 ? 1 : 0;
#else
    (void)is_f32;
    return 0;
#endif
}

#ifdef __AVX2__

#define FIELD(row, name) ((const void *)(intptr_t)(row)[name])

/* out [rows, cols] = x [rows, k] @ w.T for the projection whose codes sit at row[codes]. */
static int project(const int64_t *row, int codes, const void *x, int64_t rows, int64_t k,
                   int64_t cols, int is_f32, int num_threads, void *out) {
    if (is_f32)
        return int4_matmul_f32(x, rows, k, FIELD(row, codes), FIELD(row, codes + 1),
                               FIELD(row, codes + 2), cols, num_threads, out);
#ifdef __AVX512BF16__
    return int4_matmul_bf16(x, k, rows, k, FIELD(row, codes), FIELD(row, codes + 1),
                            FIELD(row, codes + 2), (int)row[codes + 3], cols, num_threads, out);
#else
    return -1;
#endif
}

/* The per-operation path's `out + bias`: each element rounded to the activations' type. */
static void add_bias(void *x, const void *bias, int64_t rows, int64_t cols, Floats kind) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
            store(x, r * cols + c, held(load(x, r * cols + c, kind) + load(bias, c, kind), kind),
                  kind);
}

/* The next `elements` of the scratch block at *at. */
static void *take(char **at, int64_t elements, size_t size) {
    void *start = *at;
    *at += elements * size;
    return start;
}

#define NORM(...) (is_f32 ? add_rms_norm_f32(__VA_ARGS__) : add_rms_norm_bf16(__VA_ARGS__))

int decode_step(const int64_t *layers, int64_t num_layers, const void *x, const void *cos,
                const void *sin, void *k_pool, void *v_pool, int64_t pool_slots,
                const int64_t *out_cache_loc, const int64_t *slots, const int64_t *token_rows,
                const int64_t *lens, int64_t max_len, int64_t rows, int64_t hidden,
                int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t inter, float eps,
                float scale, int64_t block_tokens, int is_f32, int num_threads,
                const void *final_norm, void *out) {
    const Floats kind = is_f32 ? F32 : BF16;
    const size_t size = is_f32 ? sizeof(float) : sizeof(uint16_t);
    const int64_t q_width = heads * head_dim, kv_width = kv_heads * head_dim;
    const int64_t qkv_width = q_width + 2 * kv_width;
    /* Scratch: the activations below in `kind`, then float32 attention outputs and lse. */
    const int64_t elements = rows * (4 * hidden + qkv_width + 2 * q_width + 3 * inter);
    char *scratch = malloc(elements * size + (size_t)(rows * (q_width + heads)) * sizeof(float));
    if (scratch == NULL) return -2;
    char *at = scratch;
    void *residual = take(&at, rows * hidden, size), *normed = take(&at, rows * hidden, size);
    void *qkv = take(&at, rows * qkv_width, size), *q = take(&at, rows * q_width, size);
    void *attended = take(&at, rows * q_width, size), *projected = take(&at, rows * hidden, size);
    void *gate_up = take(&at, rows * 2 * inter, size), *activated = take(&at, rows * inter, size);
    void *mlp = take(&at, rows * hidden, size);
    float *attention = (float *)at, *lse = attention + rows * q_width;

    int status = 0;
    const int64_t layer_slots = pool_slots * kv_width; /* elements of one layer's K (or V) */
    for (int64_t l = 0; l < num_layers && status == 0; ++l) {
        const int64_t *row = layers + l * LAYER_FIELDS;
        /* The residual adds are deferred into the next norm, as in the per-operation path. */
        if (l == 0) {
            NORM(x, NULL, FIELD(row, INPUT_NORM), rows, hidden, eps, num_threads, NULL, normed);
            memcpy(residual, x, rows * hidden * size);
        } else {
            NORM(mlp, residual, FIELD(row, INPUT_NORM), rows, hidden, eps, num_threads,
                 residual, normed);
        }
        status = project(row, QKV_CODES, normed, rows, hidden, qkv_width, is_f32, num_threads,
                         qkv);
        if (status != 0) break;
        if (row[QKV_BIAS] != 0) add_bias(qkv, FIELD(row, QKV_BIAS), rows, qkv_width, kind);
        if (is_f32)
            rotary_f32(qkv, rows, qkv_width, heads + kv_heads, head_dim, cos, sin, num_threads);
        else
            rotary_bf16(qkv, rows, qkv_width, heads + kv_heads, head_dim, cos, sin, num_threads);
        char *k_layer = (char *)k_pool + l * layer_slots * size;
        char *v_layer = (char *)v_pool + l * layer_slots * size;
        for (int64_t r = 0; r < rows; ++r) {
            const char *token = (const char *)qkv + r * qkv_width * size;
            memcpy((char *)q + r * q_width * size, token, q_width * size);
            memcpy(k_layer + out_cache_loc[r] * kv_width * size, token + q_width * size,
                   kv_width * size);
            memcpy(v_layer + out_cache_loc[r] * kv_width * size,
                   token + (q_width + kv_width) * size, kv_width * size);
        }
        if (decode_attention(q, k_layer, v_layer, slots, token_rows, lens, rows, max_len,
                             kv_heads, heads / kv_heads, head_dim, block_tokens, scale, is_f32,
                             num_threads, attention, lse) != 0) {
            status = -2;
            break;
        }
        for (int64_t i = 0; i < rows * q_width; ++i) store(attended, i, attention[i], kind);
        status = project(row, O_CODES, attended, rows, q_width, hidden, is_f32, num_threads,
                         projected);
        if (status != 0) break;
        NORM(residual, projected, FIELD(row, POST_ATTENTION_NORM), rows, hidden, eps,
             num_threads, residual, normed);
        status = project(row, GATE_UP_CODES, normed, rows, hidden, 2 * inter, is_f32,
                         num_threads, gate_up);
        if (status != 0) break;
        if (is_f32)
            silu_mul_f32(gate_up, rows, inter, num_threads, activated);
        else
            silu_mul_bf16(gate_up, rows, inter, num_threads, activated);
        status = project(row, DOWN_CODES, activated, rows, inter, hidden, is_f32, num_threads,
                         mlp);
    }
    if (status == 0)
        NORM(mlp, residual, final_norm, rows, hidden, eps, num_threads, residual, out);
    free(scratch);
    return status;
}
#else
int decode_step(void) { return -2; }
#endif
