/* Convolution and pooling over [C, H, W] samples (NCHW per sample), the plain
 * reference the cuDNN ops are tested against. Convolution is oneDNN's primitive for one
 * sample, run per sample (onednn.c), where it runs; else im2col + one OpenBLAS GEMM per
 * group and block of op->samples samples (always the whole block, of a width that is a
 * multiple of 64, so a sample's result depends neither on the batch nor on its place in
 * the block: cpu.h). */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "cpu.h"
#include "op_math.h"

/* The outputs ox in [lo, hi) whose input column ox * stride + x0 lies in [0, in_w). */
static void tap_range(int x0, int stride, int in_w, int out_w, int *lo, int *hi) {
    int l = x0 < 0 ? (-x0 + stride - 1) / stride : 0;
    int h = x0 >= in_w ? 0 : (in_w - 1 - x0) / stride + 1;
    if (l > out_w) l = out_w;
    if (h > out_w) h = out_w;
    *lo = l;
    *hi = h < l ? l : h;
}

/* col (C/g * kh * kw, H' * W') for channels [c0, c0 + C/g) of one sample x (C, H, W),
 * output positions [p0, p1) only. Each (channel, kernel tap) row is the input shifted by
 * the tap: per output row, the columns [lo, hi) read the input (a plain copy at stride
 * 1). Only those are written: the padding's places depend on the geometry alone, so in
 * the op's zeroed buffer they stay 0. */
static void im2col(const ert_conv_geom *g, const float *x, int c0, int p0, int p1, float *col, size_t ld) {
    const int cg = g->in_c / g->groups;
    for (int c = 0; c < cg; ++c)
        for (int i = 0; i < g->kh; ++i)
            for (int j = 0; j < g->kw; ++j) {
                float *row = col + ((size_t)(c * g->kh + i) * g->kw + j) * ld;
                const float *plane = x + (size_t)(c0 + c) * g->in_h * g->in_w;
                const int x0 = j * g->dw - g->pw; /* ix = ox * sw + x0 */
                int lo, hi;
                tap_range(x0, g->sw, g->in_w, g->out_w, &lo, &hi);
                for (int oy = p0 / g->out_w; oy < g->out_h && oy * g->out_w < p1; ++oy) {
                    const int iy = oy * g->sh - g->ph + i * g->dh;
                    const int first = oy * g->out_w; /* the row's outputs [a, b): the tap's span within [p0, p1) */
                    const int a = first + lo < p0 ? p0 - first : lo, b = first + hi > p1 ? p1 - first : hi;
                    if (iy < 0 || iy >= g->in_h || b <= a) continue;
                    float *dst = row + (size_t)first;
                    const float *src = plane + (size_t)iy * g->in_w;
                    if (g->sw == 1) memcpy(dst + a, src + a + x0, sizeof(float) * (size_t)(b - a));
                    else
                        for (int ox = a; ox < b; ++ox) dst[ox] = src[ox * g->sw + x0];
                }
            }
}

/* y = act(v + b) over one output plane; relu and identity as loops the compiler
 * vectorises (the same comparisons as ert_activate, so the same bits). */
static void bias_act(const float *v, float *y, int n, float b, int act) {
    if (act == ERT_ACT_RELU)
        for (int p = 0; p < n; ++p) {
            const float t = v[p] + b;
            y[p] = t < 0.0f ? 0.0f : t; /* NaN stays NaN */
        }
    else if (act == ERT_ACT_NONE)
        for (int p = 0; p < n; ++p) y[p] = v[p] + b;
    else
        for (int p = 0; p < n; ++p) y[p] = ert_activate(v[p] + b, act);
}

/* The output positions [p0, p1) of block sample s (columns [s hw, (s + 1) hw)) within
 * the columns [c0, c1). */
static void sample_span(int s, int hw, int c0, int c1, int *p0, int *p1) {
    *p0 = c0 - s * hw > 0 ? c0 - s * hw : 0;
    *p1 = c1 - s * hw < hw ? c1 - s * hw : hw;
}

/* A convolution's or pool's sample sizes in and out (floats), from its geometry. */
static size_t sample_in(const ert_op *op) {
    const ert_conv_geom *g = &op->desc.conv;
    return (size_t)g->in_c * g->in_h * g->in_w;
}
static size_t sample_out(const ert_op *op) {
    const ert_conv_geom *g = &op->desc.conv;
    return (size_t)g->out_c * g->out_h * g->out_w;
}

/* x (rows, C, H, W) -> y (rows, K, H', W'); W (K, C/g, kh, kw). One task per block of
 * op->samples samples and range of (at most) ERT_CPU_CONV_RANGE of its ld = op->cols GEMM
 * columns (cpu.h), in the thread's scratch: the block's im2col columns are its samples side by
 * side, then zeros up to ld; a task fills and computes only its range. In a last,
 * partial block the columns past the batch hold whatever the thread left there, their
 * outputs are dropped, and a range with no sample's column in it does not run. */
static void conv_task(void *ctx, int task, int thread) {
    const ert_cpu_job *j = ctx;
    const ert_op *op = j->op;
    const ert_conv_geom *g = &op->desc.conv;
    const int kg = g->out_c / g->groups, cg = g->in_c / g->groups;
    const int kdim = cg * g->kh * g->kw, hw = g->out_h * g->out_w, ns = op->samples;
    const size_t in_size = sample_in(op), out_size = sample_out(op);
    const size_t ld = (size_t)op->cols;
    float *col = op->pad + (size_t)thread * op->pad_floats, *out = col + (size_t)kdim * ld;
    const int r0 = task / j->parts * ns, m = j->rows - r0 < ns ? j->rows - r0 : ns;
    const int c0 = task % j->parts * ERT_CPU_CONV_RANGE;
    const int c1 = op->cols - c0 < ERT_CPU_CONV_RANGE ? op->cols : c0 + ERT_CPU_CONV_RANGE;
    if (c0 >= m * hw) return;
    const int s0 = c0 / hw, s1 = (c1 - 1) / hw < m - 1 ? (c1 - 1) / hw : m - 1; /* the samples it touches */
    for (int gi = 0; gi < g->groups; ++gi) {
        for (int s = s0; s <= s1; ++s) {
            int p0, p1;
            sample_span(s, hw, c0, c1, &p0, &p1);
            im2col(g, j->x + (size_t)(r0 + s) * in_size, gi * cg, p0, p1, col + (size_t)s * hw, ld);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, kg, c1 - c0, kdim, 1.0f,
                    op->weight + (size_t)gi * kg * kdim, kdim, col + c0, (int)ld, 0.0f, out + c0, (int)ld);
        for (int s = s0; s <= s1; ++s) {
            int p0, p1;
            sample_span(s, hw, c0, c1, &p0, &p1);
            float *ys = j->y + (size_t)(r0 + s) * out_size + (size_t)gi * kg * hw;
            for (int k = 0; k < kg; ++k)
                bias_act(out + (size_t)k * ld + (size_t)s * hw + p0, ys + (size_t)k * hw + p0, p1 - p0,
                         op->bias ? op->bias[gi * kg + k] : 0.0f, (int)op->desc.act);
        }
    }
}

/* On oneDNN (op->conv): one task per sample, its convolution (bias added; GELU, the
 * other activation, too: onednn.c), then relu in place; with a pool to run (op->then),
 * the pool reads the primitive's output in its own layout, in the thread's buffer, while
 * it is in cache, relu on the way (fmnist-cnn's first convolution writes 100 KB per
 * sample: a reorder of it back to NCHW cost twice the convolution). */
static void conv_sample_task(void *ctx, int r, int thread) {
    ert_cpu_job *j = ctx;
    const ert_op *op = j->op;
    const float *x = j->x + (size_t)r * sample_in(op);
    const int relu = op->desc.act == ERT_ACT_RELU;
    if (op->then) {
        const float *d = ert_cpu_conv_run_blocked(op->conv, thread, x);
        if (!d) j->failed = 1;
        else ert_cpu_pool_blocked(op->then, d, ert_cpu_conv_dst_block(op->conv), relu, j->y + (size_t)r * sample_out(op->then));
        return;
    }
    const size_t out = sample_out(op);
    float *y = j->y + (size_t)r * out;
    if (ert_cpu_conv_run(op->conv, thread, x, y)) {
        j->failed = 1;
        return;
    }
    if (relu)
        for (size_t i = 0; i < out; ++i) y[i] = y[i] < 0.0f ? 0.0f : y[i]; /* NaN stays NaN (ert_activate) */
}

int ert_cpu_conv_fusable(const ert_op *op, const ert_op *pool) {
    const ert_conv_geom *c = &op->desc.conv, *p = &pool->desc.conv;
    return op->desc.type == ERT_OP_CONV2D && ert_cpu_conv_dst_block(op->conv) > 0 && !op->then &&
           (pool->desc.type == ERT_OP_MAXPOOL || pool->desc.type == ERT_OP_AVGPOOL) && p->in_c == c->out_c &&
           p->in_h == c->out_h && p->in_w == c->out_w && pool->threads == op->threads;
}

int ert_cpu_conv2d(const ert_op *op, int rows, const float *x, float *y) {
    if (op->conv) {
        ert_cpu_job j = {.op = op, .rows = rows, .parts = 1, .x = x, .y = y};
        ert_cpu_parallel(op->threads, rows, conv_sample_task, &j);
        return j.failed ? -1 : 0;
    }
    ert_cpu_job j = {.op = op, .rows = rows, .parts = (op->cols + ERT_CPU_CONV_RANGE - 1) / ERT_CPU_CONV_RANGE,
                     .x = x, .y = y};
    ert_cpu_parallel(op->threads, (rows + op->samples - 1) / op->samples * j.parts, conv_task, &j);
    return 0;
}

/* The common 2x2 stride-2 window as one pass per output row: the same comparisons and
 * additions, in the same order, as the window loop in pool_task. A max starts from the
 * first tap (the loop's first step, from -inf, gives that tap's bits); an average from
 * 0, as the loop does (0 + -0 is +0). */
static void pool2x2(const float *x, float *y, int in_w, int out_h, int out_w, int is_max, float area) {
    for (int oy = 0; oy < out_h; ++oy) {
        const float *a = x + (size_t)2 * oy * in_w, *b = a + in_w;
        float *yr = y + (size_t)oy * out_w;
        if (is_max)
            for (int ox = 0; ox < out_w; ++ox)
                yr[ox] = ert_max_step(ert_max_step(ert_max_step(a[2 * ox], a[2 * ox + 1]), b[2 * ox]), b[2 * ox + 1]);
        else
            for (int ox = 0; ox < out_w; ++ox)
                yr[ox] = (((0.0f + a[2 * ox]) + a[2 * ox + 1]) + b[2 * ox] + b[2 * ox + 1]) / area;
    }
}

/* The rows (or columns) a pool's windows cover, padding included: from the first
 * window's start to the last one's end (floor mode may leave the input's last ones out). */
static int pool_extent(int out, int stride, int k) { return (out - 1) * stride + k; }

size_t ert_cpu_pool_scratch(const ert_conv_geom *g) {
    const int eh = pool_extent(g->out_h, g->sh, g->kh), ew = pool_extent(g->out_w, g->sw, g->kw);
    if (g->ph == 0 && g->pw == 0 && eh <= g->in_h && ew <= g->in_w) return 0; /* the windows lie in the input */
    return (size_t)eh * (size_t)ew;
}

void ert_cpu_pool_prepare(const ert_op *op) {
    const float fill = op->desc.type == ERT_OP_MAXPOOL ? -INFINITY : 0.0f;
    for (size_t i = 0; i < op->pad_floats * (size_t)op->threads; ++i) op->pad[i] = fill;
}

/* One sample. Each output is its window's taps, row by row and left to right,
 * from -inf (max) or 0 (average; divided by the whole window's size: the padding counts,
 * as PyTorch's count_include_pad). A padded plane is copied into the thread's scratch,
 * whose padding holds -inf (max) or 0 (average) since the op was made: a tap there leaves
 * the result's bits as they were, as if it were skipped (a sum from +0 is never -0). */
static void pool_sample(const ert_op *op, const float *x, float *y, int thread) {
    const ert_conv_geom *g = &op->desc.conv;
    const int is_max = op->desc.type == ERT_OP_MAXPOOL;
    const size_t in_plane = (size_t)g->in_h * g->in_w, out_plane = (size_t)g->out_h * g->out_w;
    const float area = (float)(g->kh * g->kw);
    const int ew = op->pad_floats ? pool_extent(g->out_w, g->sw, g->kw) : g->in_w; /* the row stride */
    const int eh = pool_extent(g->out_h, g->sh, g->kh);
    const int two = g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2;
    const int whole = g->out_h == 1 && g->out_w == 1 && !op->pad_floats && g->kw == g->in_w;
    float *scratch = op->pad + (size_t)thread * op->pad_floats;
    for (int c = 0; c < g->in_c; ++c) {
        const float *xp = x + (size_t)c * in_plane;
        float *yp = y + (size_t)c * out_plane;
        if (op->pad_floats) { /* the input, within the extent, at (ph, pw) */
            const int w = g->in_w < ew - g->pw ? g->in_w : ew - g->pw;
            for (int iy = 0; iy < g->in_h && g->ph + iy < eh; ++iy)
                memcpy(scratch + (size_t)(g->ph + iy) * ew + g->pw, xp + (size_t)iy * g->in_w, sizeof(float) * (size_t)w);
            xp = scratch;
        }
        if (two) {
            pool2x2(xp, yp, ew, g->out_h, g->out_w, is_max, area);
            continue;
        }
        if (whole) { /* one window over the plane: row by row is the plane in order */
            float acc = is_max ? -INFINITY : 0.0f;
            for (size_t i = 0; i < (size_t)g->kh * g->kw; ++i) acc = is_max ? ert_max_step(acc, xp[i]) : acc + xp[i];
            yp[0] = is_max ? acc : acc / area;
            continue;
        }
        for (int oy = 0; oy < g->out_h; ++oy) { /* a pass over the output row per tap */
            float *yr = yp + (size_t)oy * g->out_w;
            for (int ox = 0; ox < g->out_w; ++ox) yr[ox] = is_max ? -INFINITY : 0.0f;
            for (int i = 0; i < g->kh; ++i) {
                const float *xr = xp + (size_t)(oy * g->sh + i) * ew;
                for (int j = 0; j < g->kw; ++j)
                    if (is_max)
                        for (int ox = 0; ox < g->out_w; ++ox) yr[ox] = ert_max_step(yr[ox], xr[ox * g->sw + j]);
                    else
                        for (int ox = 0; ox < g->out_w; ++ox) yr[ox] += xr[ox * g->sw + j];
            }
            if (!is_max)
                for (int ox = 0; ox < g->out_w; ++ox) yr[ox] /= area;
        }
    }
}

void ert_cpu_pool_blocked(const ert_op *op, const float *x, int block, int relu, float *y) {
    enum { CHUNK = 64 }; /* channels at once: a vector's worth of lanes, several times */
    const ert_conv_geom *g = &op->desc.conv;
    const int is_max = op->desc.type == ERT_OP_MAXPOOL;
    const size_t in_plane = (size_t)g->in_h * g->in_w, out_plane = (size_t)g->out_h * g->out_w;
    const float area = (float)(g->kh * g->kw);
    float acc[CHUNK];
    for (int c0 = 0, n; c0 < g->in_c; c0 += n) { /* a chunk never spans two blocks */
        const int b = c0 % block;
        n = block - b < CHUNK ? block - b : CHUNK;
        if (n > g->in_c - c0) n = g->in_c - c0;
        const float *xb = x + (size_t)(c0 / block) * in_plane * (size_t)block + b;
        for (int oy = 0; oy < g->out_h; ++oy)
            for (int ox = 0; ox < g->out_w; ++ox) {
                for (int k = 0; k < n; ++k) acc[k] = is_max ? -INFINITY : 0.0f;
                /* pool_sample's taps in its order; one in the padding leaves the bits as they are */
                for (int i = 0; i < g->kh; ++i) {
                    const int iy = oy * g->sh - g->ph + i;
                    if (iy < 0 || iy >= g->in_h) continue;
                    for (int jx = 0; jx < g->kw; ++jx) {
                        const int ix = ox * g->sw - g->pw + jx;
                        if (ix < 0 || ix >= g->in_w) continue;
                        const float *t = xb + ((size_t)iy * g->in_w + ix) * (size_t)block;
                        for (int k = 0; k < n; ++k) {
                            const float v = relu && t[k] < 0.0f ? 0.0f : t[k]; /* NaN stays NaN */
                            acc[k] = is_max ? ert_max_step(acc[k], v) : acc[k] + v;
                        }
                    }
                }
                float *yo = y + (size_t)c0 * out_plane + (size_t)oy * g->out_w + ox;
                for (int k = 0; k < n; ++k) yo[(size_t)k * out_plane] = is_max ? acc[k] : acc[k] / area;
            }
    }
}

/* One task per sample. */
static void pool_task(void *ctx, int r, int thread) {
    const ert_cpu_job *jb = ctx;
    const ert_op *op = jb->op;
    pool_sample(op, jb->x + (size_t)r * sample_in(op), jb->y + (size_t)r * sample_out(op), thread);
}

void ert_cpu_pool(const ert_op *op, int rows, const float *x, float *y) {
    ert_cpu_job j = {.op = op, .rows = rows, .parts = 1, .x = x, .y = y};
    ert_cpu_parallel(op->threads, rows, pool_task, &j);
}
