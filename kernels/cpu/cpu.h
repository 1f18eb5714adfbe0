/* The CPU backend's ops: the plain reference every other backend is tested against. */
#ifndef ERT_CPU_H
#define ERT_CPU_H

#include "backend.h"

/* Linear ops run their GEMM on blocks of exactly this many rows (the last block padded),
 * so a row's result never depends on how many rows run with it: OpenBLAS picks kernels
 * (and summation orders) by matrix size, and `masked` and `compact` must agree exactly. */
#define ERT_CPU_GEMM_ROWS 64

struct ert_op {
    ert_op_desc desc;
    float *weight; /* owned copies of the descriptor's host arrays */
    float *bias;
    float *pad;    /* LINEAR: ERT_CPU_GEMM_ROWS x (in + out) for the last, partial block;
                      CONV2D: the im2col buffer of one sample and group */
};

/* The rows an op must process: the host count, clamped by the count in memory. */
static inline int ert_cpu_rows(ert_rows rows) {
    if (rows.dev_count && *rows.dev_count < rows.n) return *rows.dev_count;
    return rows.n;
}

void ert_cpu_linear(const ert_op *op, int rows, const float *x, float *y);
void ert_cpu_layernorm(const ert_op *op, int rows, const float *x, float *y);
void ert_cpu_normalize(const ert_op *op, int rows, const float *x, float *y);
void ert_cpu_add(int rows, int width, const float *x, float *y);
void ert_cpu_conv2d(const ert_op *op, int rows, const float *x, float *y);
void ert_cpu_pool(const ert_op *op, int rows, const float *x, float *y);
void ert_cpu_relu(int rows, int width, const float *x, float *y);
void ert_cpu_decide(const ert_decide_args *a);
void ert_cpu_compact(const ert_compact_args *a);

#endif
