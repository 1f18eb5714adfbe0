#include <cblas.h>
#include <string.h>

#include "cpu.h"
#include "op_math.h"

/* y (rows, out) = x (rows, in) W^T for exactly ERT_CPU_GEMM_ROWS rows. */
static void gemm_block(const ert_op *op, const float *x, float *y) {
    const int in = op->desc.in, out = op->desc.out;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ERT_CPU_GEMM_ROWS, out, in, 1.0f, x, in, op->weight, in,
                0.0f, y, out);
}

/* x is (rows, in), W is (out, in), y is (rows, out): y = act(x W^T + b). */
void ert_cpu_linear(const ert_op *op, int rows, const float *x, float *y) {
    const int in = op->desc.in, out = op->desc.out, act = (int)op->desc.act;
    const int full = rows / ERT_CPU_GEMM_ROWS * ERT_CPU_GEMM_ROWS;
    for (int r = 0; r < full; r += ERT_CPU_GEMM_ROWS) gemm_block(op, x + (size_t)r * in, y + (size_t)r * out);
    if (full < rows) {
        float *px = op->pad, *py = op->pad + (size_t)ERT_CPU_GEMM_ROWS * in;
        const int m = rows - full;
        memcpy(px, x + (size_t)full * in, sizeof(float) * (size_t)m * in);
        gemm_block(op, px, py);
        memcpy(y + (size_t)full * out, py, sizeof(float) * (size_t)m * out);
    }
    for (int r = 0; r < rows; ++r) {
        float *row = y + (size_t)r * out;
        for (int j = 0; j < out; ++j) row[j] = ert_activate(row[j] + (op->bias ? op->bias[j] : 0.0f), act);
    }
}
