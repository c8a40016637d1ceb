/*
 * What every kernel of radixgen/runtime/kernels shares: element types, bfloat16 conversion and
 * the empty-row convention of the attention kernels. Static inline only: each kernel is its own
 * shared object, compiled alone with this header (build.py hashes it into every cache key).
 */
#ifndef RADIXGEN_KERNELS_COMMON_H
#define RADIXGEN_KERNELS_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* For the small helpers of the inner loops: a call would cost more than their work, and
 * inlining lets a constant argument (an element type, a head size) fold away. */
#define INLINE static inline __attribute__((always_inline))

/* log-sum-exp of a row that saw no key: its weight vanishes in a log-sum-exp merge. The kernels
 * are built with -ffast-math, so no infinities. */
#define EMPTY_LSE (-1e30f)

/* The element type of a tensor of activations or KV. */
typedef enum { F32 = 0, BF16 = 1 } Floats;

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

/* Element `i` of a bfloat16 or float32 array, widened to float. */
INLINE float load(const void *base, int64_t i, Floats kind) {
    return kind == BF16 ? bf16_to_float(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

/* Store `value` as element `i` (rounded to nearest even in bfloat16). */
INLINE void store(void *base, int64_t i, float value, Floats kind) {
    if (kind == BF16)
        ((uint16_t *)base)[i] = float_to_bf16(value);
    else
        ((float *)base)[i] = value;
}

#endif
