/* Convolution, pooling and relu over [C, H, W] samples (NCHW per sample), the plain
 * reference the cuDNN ops are tested against. Convolution is im2col + one OpenBLAS GEMM
 * per sample and group, so a sample's result never depends on the batch. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu.h"
#include "op_math.h"

/* col (C/g * kh * kw, H' * W') for channels [c0, c0 + C/g) of one sample x (C, H, W). */
static void im2col(const ert_conv_geom *g, const float *x, int c0, float *col) {
    const int cg = g->in_c / g->groups, hw = g->out_h * g->out_w;
    for (int c = 0; c < cg; ++c)
        for (int i = 0; i < g->kh; ++i)
            for (int j = 0; j < g->kw; ++j) {
                float *row = col + ((size_t)(c * g->kh + i) * g->kw + j) * hw;
                const float *plane = x + (size_t)(c0 + c) * g->in_h * g->in_w;
                for (int oy = 0; oy < g->out_h; ++oy) {
                    const int iy = oy * g->sh - g->ph + i * g->dh;
                    for (int ox = 0; ox < g->out_w; ++ox) {
                        const int ix = ox * g->sw - g->pw + j * g->dw;
                        const int inside = iy >= 0 && iy < g->in_h && ix >= 0 && ix < g->in_w;
                        row[oy * g->out_w + ox] = inside ? plane[iy * g->in_w + ix] : 0.0f;
                    }
                }
            }
}

/* x (rows, C, H, W) -> y (rows, K, H', W'); W (K, C/g, kh, kw). */
void ert_cpu_conv2d(const ert_op *op, int rows, const float *x, float *y) {
    const ert_conv_geom *g = &op->desc.conv;
    const int kg = g->out_c / g->groups, cg = g->in_c / g->groups;
    const int kdim = cg * g->kh * g->kw, hw = g->out_h * g->out_w;
    const size_t in_size = (size_t)g->in_c * g->in_h * g->in_w, out_size = (size_t)g->out_c * hw;
    for (int r = 0; r < rows; ++r) {
        const float *xs = x + (size_t)r * in_size;
        float *ys = y + (size_t)r * out_size;
        for (int gi = 0; gi < g->groups; ++gi) {
            im2col(g, xs, gi * cg, op->pad);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kg, hw, kdim, 1.0f,
                        op->weight + (size_t)gi * kg * kdim, kdim, op->pad, hw, 0.0f, ys + (size_t)gi * kg * hw, hw);
        }
        for (int k = 0; k < g->out_c; ++k)
            for (int p = 0; p < hw; ++p) {
                float *v = &ys[(size_t)k * hw + p];
                *v = ert_activate(*v + (op->bias ? op->bias[k] : 0.0f), (int)op->desc.act);
            }
    }
}

/* Max or average over each window of each channel; padding is -inf for max and zeros
 * counted in the divisor for average (PyTorch's count_include_pad=True). */
void ert_cpu_pool(const ert_op *op, int rows, const float *x, float *y) {
    const ert_conv_geom *g = &op->desc.conv;
    const int is_max = op->desc.type == ERT_OP_MAXPOOL;
    const size_t in_plane = (size_t)g->in_h * g->in_w, out_plane = (size_t)g->out_h * g->out_w;
    const float area = (float)(g->kh * g->kw);
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < g->in_c; ++c) {
            const float *xp = x + ((size_t)r * g->in_c + c) * in_plane;
            float *yp = y + ((size_t)r * g->out_c + c) * out_plane;
            for (int oy = 0; oy < g->out_h; ++oy)
                for (int ox = 0; ox < g->out_w; ++ox) {
                    float acc = is_max ? -INFINITY : 0.0f;
                    for (int i = 0; i < g->kh; ++i) {
                        const int iy = oy * g->sh - g->ph + i;
                        if (iy < 0 || iy >= g->in_h) continue;
                        for (int j = 0; j < g->kw; ++j) {
                            const int ix = ox * g->sw - g->pw + j;
                            if (ix < 0 || ix >= g->in_w) continue;
                            const float v = xp[iy * g->in_w + ix];
                            if (is_max) acc = (v > acc || v != v) ? v : acc; /* NaN wins, as in PyTorch */
                            else acc += v;
                        }
                    }
                    yp[oy * g->out_w + ox] = is_max ? acc : acc / area;
                }
        }
}

void ert_cpu_relu(int rows, int width, const float *x, float *y) {
    const size_t n = (size_t)rows * (size_t)width;
    for (size_t i = 0; i < n; ++i) y[i] = ert_activate(x[i], ERT_ACT_RELU);
}
