#include <math.h>

#include "cpu.h"

/* x and y are (rows, in); mean and variance over each row (biased, as PyTorch). */
void ert_cpu_layernorm(const ert_op *op, int rows, const float *x, float *y) {
    const int dim = op->desc.in;
    for (int r = 0; r < rows; ++r) {
        const float *xr = x + (size_t)r * dim;
        float *yr = y + (size_t)r * dim;
        double mean = 0.0, var = 0.0;
        for (int j = 0; j < dim; ++j) mean += xr[j];
        mean /= dim;
        for (int j = 0; j < dim; ++j) var += ((double)xr[j] - mean) * ((double)xr[j] - mean);
        var /= dim;
        const float rstd = (float)(1.0 / sqrt(var + (double)op->desc.eps));
        for (int j = 0; j < dim; ++j) {
            float v = ((float)((double)xr[j] - mean)) * rstd;
            yr[j] = v * (op->weight ? op->weight[j] : 1.0f) + (op->bias ? op->bias[j] : 0.0f);
        }
    }
}

/* x (f32 input) and y are (rows, in); in = channels * per_channel. */
void ert_cpu_normalize(const ert_op *op, int rows, const float *x, float *y) {
    const int in = op->desc.in, per = op->desc.in / op->desc.channels;
    for (int r = 0; r < rows; ++r)
        for (int j = 0; j < in; ++j) {
            const int c = j / per;
            y[(size_t)r * in + j] = x[(size_t)r * in + j] * op->weight[c] + op->bias[c];
        }
}

/* y += x, both (rows, width): the residual connection. */
void ert_cpu_add(int rows, int width, const float *x, float *y) {
    const size_t n = (size_t)rows * (size_t)width;
    for (size_t i = 0; i < n; ++i) y[i] += x[i];
}
