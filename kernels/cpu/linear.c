#include <cblas.h>

#include "cpu.h"
#include "op_math.h"

/* x is (rows, in), W is (out, in), y is (rows, out): y = act(x W^T + b). */
void ert_cpu_linear(const ert_op *op, int rows, const float *x, float *y) {
    const int in = op->desc.in, out = op->desc.out;
    if (rows <= 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, in, op->weight, in,
                0.0f, y, out);
    const int act = (int)op->desc.act;
    for (int r = 0; r < rows; ++r) {
        float *row = y + (size_t)r * out;
        for (int j = 0; j < out; ++j) row[j] = ert_activate(row[j] + (op->bias ? op->bias[j] : 0.0f), act);
    }
}
