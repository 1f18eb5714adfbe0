/* Row-wise ops: layernorm, the input normalisation, the residual add and relu. Each runs
 * as tasks of whole rows on the op's threads (parallel.c); a row's arithmetic does not
 * depend on the rows run with it, so neither do its bits. */
#include <math.h>

#include "cpu.h"
#include "op_math.h"

enum { ROW_TASK_VALUES = 16384 }; /* about this many values per task */

typedef void (*row_fn)(const ert_op *op, int width, const float *x, float *y);

typedef struct rows_job {
    const ert_op *op; /* NULL for the residual add */
    row_fn fn;
    int rows, width, per; /* per: rows per task */
    const float *x;
    float *y;
} rows_job;

static void rows_task(void *ctx, int task, int thread) {
    (void)thread;
    const rows_job *j = ctx;
    const int r1 = (task + 1) * j->per < j->rows ? (task + 1) * j->per : j->rows;
    for (int r = task * j->per; r < r1; ++r)
        j->fn(j->op, j->width, j->x + (size_t)r * j->width, j->y + (size_t)r * j->width);
}

static void run_rows(int threads, const ert_op *op, row_fn fn, int rows, int width, const float *x, float *y) {
    const int per = width < 1 || width >= ROW_TASK_VALUES ? 1 : ROW_TASK_VALUES / width;
    rows_job j = {.op = op, .fn = fn, .rows = rows, .width = width, .per = per, .x = x, .y = y};
    ert_cpu_parallel(threads, (rows + per - 1) / per, rows_task, &j);
}

/* The sum over the row of f(x_j) = (x_j - shift)^(1 + squared), in double: 8 partial sums
 * (j mod 8, which the compiler keeps in vector registers), added pairwise, then the last
 * dim mod 8 values in order. One chain of dependent additions took 4 cycles a value. */
static double row_sum(const float *x, int dim, double shift, int squared) {
    double s[8] = {0.0};
    int j = 0;
    for (; j + 8 <= dim; j += 8)
        for (int k = 0; k < 8; ++k) {
            const double d = (double)x[j + k] - shift;
            s[k] += squared ? d * d : d;
        }
    double sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    for (; j < dim; ++j) {
        const double d = (double)x[j] - shift;
        sum += squared ? d * d : d;
    }
    return sum;
}

/* Mean and variance over the row (biased, as PyTorch), in double. */
static void layernorm_row(const ert_op *op, int dim, const float *xr, float *yr) {
    const double mean = row_sum(xr, dim, 0.0, 0) / dim, var = row_sum(xr, dim, mean, 1) / dim;
    const float rstd = (float)(1.0 / sqrt(var + (double)op->desc.eps));
    for (int j = 0; j < dim; ++j) {
        float v = ((float)((double)xr[j] - mean)) * rstd;
        yr[j] = v * (op->weight ? op->weight[j] : 1.0f) + (op->bias ? op->bias[j] : 0.0f);
    }
}

/* in = channels * per_channel. */
static void normalize_row(const ert_op *op, int in, const float *x, float *y) {
    const int per = in / op->desc.channels;
    for (int c = 0; c < op->desc.channels; ++c)
        for (int j = c * per; j < (c + 1) * per; ++j) y[j] = x[j] * op->weight[c] + op->bias[c];
}

static void add_row(const ert_op *op, int width, const float *x, float *y) {
    (void)op;
    for (int i = 0; i < width; ++i) y[i] += x[i];
}

static void relu_row(const ert_op *op, int width, const float *x, float *y) {
    (void)op;
    for (int i = 0; i < width; ++i) y[i] = ert_activate(x[i], ERT_ACT_RELU);
}

/* x and y are (rows, in). */
void ert_cpu_layernorm(const ert_op *op, int rows, const float *x, float *y) {
    run_rows(op->threads, op, layernorm_row, rows, op->desc.in, x, y);
}

/* x (f32 input) and y are (rows, in). */
void ert_cpu_normalize(const ert_op *op, int rows, const float *x, float *y) {
    run_rows(op->threads, op, normalize_row, rows, op->desc.in, x, y);
}

/* y += x, both (rows, width): the residual connection. */
void ert_cpu_add(int threads, int rows, int width, const float *x, float *y) {
    run_rows(threads, NULL, add_row, rows, width, x, y);
}

void ert_cpu_relu(const ert_op *op, int rows, const float *x, float *y) {
    run_rows(op->threads, op, relu_row, rows, op->desc.in, x, y);
}
