#include <cblas.h>
#include <stdatomic.h>
#include <string.h>

#include "cpu.h"
#include "op_math.h"

/* One task: y = act(x W^T + b) for the output columns [c0, c1) of one block of rows.
 * On oneDNN (onednn.c) the block's rows run as primitives of fixed row counts into the
 * thread's scratch (a GELU op's with its bias and GELU applied: only copied out here).
 * On OpenBLAS the GEMM always has ERT_CPU_GEMM_ROWS rows: the last, partial block is
 * computed in the thread's scratch on a copy of its rows (the rows past them hold
 * whatever was there; their outputs are dropped). Either way a row's bits do not depend
 * on the rows run with it. */
static void linear_task(void *ctx, int task, int thread) {
    ert_cpu_job *j = ctx;
    const ert_op *op = j->op;
    const int in = op->desc.in, out = op->desc.out, act = (int)op->desc.act, part = task % j->parts;
    const int r0 = task / j->parts * ERT_CPU_GEMM_ROWS, c0 = part * ERT_CPU_LINEAR_COLS;
    const int c1 = out - c0 < ERT_CPU_LINEAR_COLS ? out : c0 + ERT_CPU_LINEAR_COLS;
    const int m = j->rows - r0 < ERT_CPU_GEMM_ROWS ? j->rows - r0 : ERT_CPU_GEMM_ROWS;
    const float *x = j->x + (size_t)r0 * in;
    float *y = j->y + (size_t)r0 * out;
    const float *g; /* the products: row r, column c0 + i at g[r * ld + i] */
    int ld = out;
    if (op->mm) {
        if (!(g = ert_cpu_mm_run(op->mm, thread, part, m, x))) {
            j->failed = 1;
            return;
        }
        ld = c1 - c0;
    } else {
        float *dst = y;
        if (m < ERT_CPU_GEMM_ROWS) {
            float *px = op->pad + (size_t)thread * op->pad_floats;
            memcpy(px, x, sizeof(float) * (size_t)m * in);
            x = px;
            dst = px + (size_t)ERT_CPU_GEMM_ROWS * in;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ERT_CPU_GEMM_ROWS, c1 - c0, in, 1.0f, x, in,
                    op->weight + (size_t)c0 * in, in, 0.0f, dst + c0, out);
        g = dst + c0;
    }
    const int fused = op->mm && ert_cpu_mm_fused(op->mm);
    for (int r = 0; r < m; ++r) {
        const float *src = g + (size_t)r * ld;
        float *row = y + (size_t)r * out + c0;
        if (fused) memcpy(row, src, sizeof(float) * (size_t)(c1 - c0));
        else
            for (int c = 0; c < c1 - c0; ++c)
                row[c] = ert_activate(src[c] + (op->bias ? op->bias[c0 + c] : 0.0f), act);
    }
}

/* x is (rows, in), W is (out, in), y is (rows, out): y = act(x W^T + b). One task per
 * block of rows and ERT_CPU_LINEAR_COLS output columns: the GEMMs' shapes depend on the
 * op alone, never on the batch or the thread count (cpu.h). */
int ert_cpu_linear(const ert_op *op, int rows, const float *x, float *y) {
    const int blocks = (rows + ERT_CPU_GEMM_ROWS - 1) / ERT_CPU_GEMM_ROWS;
    ert_cpu_job j = {.op = op, .rows = rows, .parts = (op->desc.out + ERT_CPU_LINEAR_COLS - 1) / ERT_CPU_LINEAR_COLS,
                     .x = x, .y = y};
    ert_cpu_parallel(op->threads, blocks * j.parts, linear_task, &j);
    return j.failed ? -1 : 0;
}
