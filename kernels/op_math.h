/* Element-wise math shared by the CPU and CUDA ops. */
#ifndef ERT_OP_MATH_H
#define ERT_OP_MATH_H

#include <math.h>

#include "hd.h"

/* GELU in its exact erf form (PyTorch's default): x * Phi(x). */
ERT_HD float ert_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

/* act: 0 none, 1 relu, 2 gelu (ert_activation). */
ERT_HD float ert_activate(float x, int act) {
    if (act == 1) return x < 0.0f ? 0.0f : x; /* NaN stays NaN, as in PyTorch and cuBLASLt */
    if (act == 2) return ert_gelu(x);
    return x;
}

/* One step of a max pool: the larger of acc and v, and NaN once either is NaN (PyTorch).
 * Written as `v > acc ? v : acc` (x86's MAXPS, exactly) and then v where v is NaN: the
 * same values as (v > acc || v != v) ? v : acc, in a third of the SSE instructions. */
ERT_HD float ert_max_step(float acc, float v) {
    const float m = v > acc ? v : acc;
    return v != v ? v : m;
}

#endif
