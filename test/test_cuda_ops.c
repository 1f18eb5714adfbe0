/* The CUDA backend against the CPU reference, op by op, through the backend table only,
 * on seeded random inputs (test-backend-ops style). Prints one line per case with its
 * worst error ratio (1 = at the tolerance).
 *
 * Skips (exit 77, the reason printed) when built without CUDA or when there is no CUDA
 * device. 16-bit inputs are rounded before the CPU sees them, so both backends compute
 * from the same numbers; outputs are poisoned (NaN bytes) before each run, so an element
 * the device forgets to write fails the comparison, and a guard row after the last row
 * must stay poisoned. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "dtype.h"
#include "exit_math.h"
#include "backend_testutil.h"
#include "testutil.h"

static const ert_backend_ops *cpu, *gpu;

#define MAX_ROWS 1000
static const int kRows[] = {1, 3, 17, 64, 100, 257, 1000};
#define NROWS ((int)(sizeof kRows / sizeof *kRows))
static const ert_dtype kDtypes[] = {ERT_DTYPE_F32, ERT_DTYPE_TF32, ERT_DTYPE_BF16, ERT_DTYPE_F16};

/* ---------------------------------------------------------------- random numbers */

static float rng_normal(void) {
    const float u = ((float)(rng_u32() >> 8) + 0.5f) * (1.0f / 16777216.0f), v = rng_uniform(0.0f, 1.0f);
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/* ---------------------------------------------------------------- linear */

typedef struct shape {
    int in, out;
} shape;

static const shape kLinearShapes[] = {{37, 19}, {784, 512}, {128, 10}};

static double check_linear(ert_backend *g, ert_backend *c, ert_dtype dt, shape s, ert_activation act, int has_bias,
                           int f32_out) {
    const size_t nw = (size_t)s.out * s.in, es = esize(dt), os = f32_out ? 4 : es;
    const ert_dtype out_dt = f32_out ? ERT_DTYPE_F32 : dt;
    const tolerance tol = tol_for(dt);
    float *w = malloc(nw * sizeof(float)), *wr = malloc(nw * sizeof(float)), *b = malloc((size_t)s.out * sizeof(float));
    fill_uniform(w, nw, -1.0f / sqrtf((float)s.in), 1.0f / sqrtf((float)s.in));
    fill_uniform(b, (size_t)s.out, -0.5f, 0.5f);
    memcpy(wr, w, nw * sizeof(float));
    round_act(dt, wr, nw);
    ert_op_desc dg = {.type = ERT_OP_LINEAR, .name = "linear", .in = s.in, .out = s.out, .act = act, .weight = w,
                      .bias = has_bias ? b : NULL, .f32_out = f32_out, .max_rows = MAX_ROWS};
    ert_op_desc dc = dg;
    dc.weight = wr;
    ert_op *og = NULL, *oc = NULL;
    RUN_OK(gpu, gpu->op_new(g, &dg, &og));
    RUN_OK(cpu, cpu->op_new(c, &dc, &oc));

    void *gx = balloc(gpu, g, (size_t)MAX_ROWS * s.in * es), *gy = balloc(gpu, g, (size_t)(MAX_ROWS + 1) * s.out * os);
    void *cx = balloc(cpu, c, (size_t)MAX_ROWS * s.in * 4), *cy = balloc(cpu, c, (size_t)MAX_ROWS * s.out * 4);
    float *x = malloc((size_t)MAX_ROWS * s.in * sizeof(float)), *yg = malloc((size_t)MAX_ROWS * s.out * sizeof(float)),
          *yc = malloc((size_t)MAX_ROWS * s.out * sizeof(float));
    unsigned char *xa = malloc((size_t)MAX_ROWS * s.in * es), *raw = malloc((size_t)(MAX_ROWS + 1) * s.out * os);
    double worst = 0.0;
    for (int k = 0; k < NROWS; ++k) {
        const int n = kRows[k];
        const size_t nx = (size_t)n * s.in, ny = (size_t)n * s.out;
        fill_uniform(x, nx, -1.0f, 1.0f);
        round_act(dt, x, nx);
        to_act(dt, x, nx, xa);
        bup(gpu, g, gx, xa, nx * es);
        bup(cpu, c, cx, x, nx * 4);
        bfill(gpu, g, gy, ny * os + (size_t)s.out * os, 0xFF);
        RUN_OK(gpu, gpu->op_run(g, og, (ert_rows){n, NULL}, gx, gy));
        RUN_OK(cpu, cpu->op_run(c, oc, (ert_rows){n, NULL}, cx, cy));
        bdown(gpu, g, raw, gy, ny * os + (size_t)s.out * os);
        bdown(cpu, c, yc, cy, ny * 4);
        from_act(out_dt, raw, ny, yg);
        ck_assert_msg(all_bytes(raw + ny * os, (size_t)s.out * os, 0xFF), "linear %s %d->%d rows %d: wrote past the rows",
                      ert_dtype_name(dt), s.in, s.out, n);
        const double err = tu_rel_err(yg, yc, (int)ny, tol.atol, tol.rtol);
        ck_assert_msg(err <= 1.0, "linear %s %d->%d act %d bias %d f32_out %d rows %d: error ratio %g",
                      ert_dtype_name(dt), s.in, s.out, (int)act, has_bias, f32_out, n, err);
        if (err > worst) worst = err;
    }
    gpu->op_free(g, og);
    cpu->op_free(c, oc);
    gpu->release(g, gx), gpu->release(g, gy), cpu->release(c, cx), cpu->release(c, cy);
    free(w), free(wr), free(b), free(x), free(yg), free(yc), free(xa), free(raw);
    return worst;
}

START_TEST(linear_matches_cpu) {
    const ert_dtype dt = kDtypes[_i];
    ert_backend *g = make(gpu, dt, MAX_ROWS), *c = make(cpu, ERT_DTYPE_F32, MAX_ROWS);
    rng_seed(100 + (uint64_t)_i);
    for (size_t s = 0; s < sizeof kLinearShapes / sizeof *kLinearShapes; ++s)
        for (int act = ERT_ACT_NONE; act <= ERT_ACT_GELU; ++act)
            for (int bias = 0; bias <= 1; ++bias)
                for (int f32_out = 0; f32_out <= 1; ++f32_out) {
                    const double e = check_linear(g, c, dt, kLinearShapes[s], (ert_activation)act, bias, f32_out);
                    printf("OK linear %-4s %3d->%-3d act %d bias %d f32_out %d: worst error ratio %.3g\n",
                           ert_dtype_name(dt), kLinearShapes[s].in, kLinearShapes[s].out, act, bias, f32_out, e);
                }
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

/* Graph mode, op by op: a linear op captured as a SWITCH node over the default buckets
 * (cuBLASLt captured once per bucket) gives the eager op's rows bit for bit for any
 * device count, and writes nothing past the count's bucket (nothing at all for 0). */
START_TEST(linear_graph_matches_eager) {
    const ert_dtype dt = kDtypes[_i];
    static const int counts[] = {0, 1, 2, 3, 17, 64, 65, 100, 257, 512, 513, MAX_ROWS, 0, 5, MAX_ROWS + 9};
    ert_backend *g = make(gpu, dt, MAX_ROWS);
    rng_seed(900 + (uint64_t)_i);
    for (size_t si = 0; si < sizeof kLinearShapes / sizeof *kLinearShapes; ++si)
        for (int act = ERT_ACT_RELU; act <= ERT_ACT_GELU; ++act)
            for (int f32_out = 0; f32_out <= 1; ++f32_out) {
                const shape sh = kLinearShapes[si];
                const size_t nw = (size_t)sh.out * sh.in, nx = (size_t)MAX_ROWS * sh.in, es = esize(dt);
                float *w = malloc(nw * sizeof(float)), *b = malloc((size_t)sh.out * sizeof(float));
                float *x = malloc(nx * sizeof(float));
                unsigned char *xa = malloc(nx * es);
                fill_uniform(w, nw, -1.0f / sqrtf((float)sh.in), 1.0f / sqrtf((float)sh.in));
                fill_uniform(b, (size_t)sh.out, -0.5f, 0.5f);
                fill_uniform(x, nx, -1.0f, 1.0f);
                to_act(dt, x, nx, xa);
                const ert_op_desc d = {.type = ERT_OP_LINEAR, .name = "linear", .in = sh.in, .out = sh.out,
                                       .act = (ert_activation)act, .weight = w, .bias = b, .f32_out = f32_out,
                                       .max_rows = MAX_ROWS};
                ert_op *op = NULL;
                RUN_OK(gpu, gpu->op_new(g, &d, &op));
                void *gx = balloc(gpu, g, nx * es);
                bup(gpu, g, gx, xa, nx * es);
                char what[128];
                snprintf(what, sizeof what, "graph linear %s %d->%d act %d f32_out %d", ert_dtype_name(dt), sh.in,
                         sh.out, act, f32_out);
                check_graph_vs_eager(gpu, g, op, gx, (size_t)sh.out * (f32_out ? 4 : es), MAX_ROWS, counts,
                                     (int)(sizeof counts / sizeof *counts), what);
                printf("OK %s: equal to eager at %d device counts, nothing past the bucket\n", what,
                       (int)(sizeof counts / sizeof *counts));
                gpu->op_free(g, op);
                gpu->release(g, gx);
                free(w), free(b), free(x), free(xa);
            }
    gpu->destroy(g);
}
END_TEST

/* NaN inputs: every activation keeps NaN (op_math's relu is `x < 0 ? 0 : x`, as PyTorch's),
 * and so does cuBLASLt's fused RELU epilogue (H200, cuBLASLt 13.1), which linear.cu uses
 * (ERT_LINEAR_FUSE_RELU 1); this test says so if that ever changes. */
START_TEST(linear_nan_rows) {
    ert_backend *g = make(gpu, ERT_DTYPE_F32, 8), *c = make(cpu, ERT_DTYPE_F32, 8);
    const int in = 37, out = 19, n = 3;
    float w[37 * 19], b[19], x[3 * 37], yg[4 * 19], yc[3 * 19];
    rng_seed(7);
    fill_uniform(w, sizeof w / sizeof *w, -0.2f, 0.2f);
    fill_uniform(b, 19, -0.5f, 0.5f);
    fill_uniform(x, sizeof x / sizeof *x, -1.0f, 1.0f);
    for (int j = 0; j < in; ++j) x[in + j] = NAN; /* row 1 */
    void *gx = balloc(gpu, g, sizeof x), *gy = balloc(gpu, g, sizeof yg), *cx = balloc(cpu, c, sizeof x),
         *cy = balloc(cpu, c, sizeof yc);
    bup(gpu, g, gx, x, sizeof x);
    bup(cpu, c, cx, x, sizeof x);
    for (int act = ERT_ACT_NONE; act <= ERT_ACT_GELU; ++act)
        for (int bias = 0; bias <= 1; ++bias) {
            ert_op_desc d = {.type = ERT_OP_LINEAR, .name = "nan", .in = in, .out = out, .act = (ert_activation)act,
                             .weight = w, .bias = bias ? b : NULL, .max_rows = 8};
            ert_op *og, *oc;
            RUN_OK(gpu, gpu->op_new(g, &d, &og));
            RUN_OK(cpu, cpu->op_new(c, &d, &oc));
            bfill(gpu, g, gy, sizeof yg, 0xFF);
            RUN_OK(gpu, gpu->op_run(g, og, (ert_rows){n, NULL}, gx, gy));
            RUN_OK(cpu, cpu->op_run(c, oc, (ert_rows){n, NULL}, cx, cy));
            bdown(gpu, g, yg, gy, sizeof yg);
            bdown(cpu, c, yc, cy, sizeof yc);
            for (int i = 0; i < n * out; ++i) {
                const int same = (isnan(yg[i]) && isnan(yc[i])) ||
                                 (!isnan(yg[i]) && !isnan(yc[i]) && fabsf(yg[i] - yc[i]) <= 1e-4f * (1.0f + fabsf(yc[i])));
                ck_assert_msg(same, "linear act %d bias %d, row %d col %d: cuda %g, cpu %g", act, bias, i / out, i % out,
                              (double)yg[i], (double)yc[i]);
            }
            gpu->op_free(g, og);
            cpu->op_free(c, oc);
        }
    printf("OK linear NaN rows: relu and gelu keep NaN, on both backends alike\n");
    gpu->release(g, gx), gpu->release(g, gy), cpu->release(c, cx), cpu->release(c, cy);
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

/* ---------------------------------------------------------------- layernorm, normalize */

/* Runs one prepared row-wise op (x: in_dt, y: dt) on every row count, and once more with
 * a device count below the host count (rows past it must stay poisoned). */
static double check_rowwise(ert_backend *g, ert_backend *c, ert_dtype dt, ert_op *og, ert_op *oc, int width,
                            ert_dtype in_dt, float lo, float hi, float offset) {
    const size_t es = esize(dt), is = esize(in_dt), cap = (size_t)(MAX_ROWS + 1) * width;
    const tolerance tol = tol_for(dt);
    void *gx = balloc(gpu, g, cap * is), *gy = balloc(gpu, g, cap * es);
    void *cx = balloc(cpu, c, cap * 4), *cy = balloc(cpu, c, cap * 4);
    float *x = malloc(cap * sizeof(float)), *yg = malloc(cap * sizeof(float)), *yc = malloc(cap * sizeof(float));
    unsigned char *xa = malloc(cap * is), *raw = malloc(cap * es);
    double worst = 0.0;
    for (int k = 0; k <= NROWS; ++k) {
        const int n = k < NROWS ? kRows[k] : 257, dev = k < NROWS ? -1 : 100; /* last pass: device count 100 */
        const int done = dev >= 0 ? dev : n;
        const size_t nx = (size_t)n * width, nd = (size_t)done * width;
        int32_t *gcount = dev >= 0 ? bcount(gpu, g, dev) : NULL, *ccount = dev >= 0 ? bcount(cpu, c, dev) : NULL;
        fill_uniform(x, nx, lo, hi);
        for (size_t i = 0; i < nx; ++i) x[i] += offset;
        round_act(in_dt, x, nx);
        to_act(in_dt, x, nx, xa);
        bup(gpu, g, gx, xa, nx * is);
        bup(cpu, c, cx, x, nx * 4);
        bfill(gpu, g, gy, nx * es + (size_t)width * es, 0xFF);
        RUN_OK(gpu, gpu->op_run(g, og, (ert_rows){n, gcount}, gx, gy));
        RUN_OK(cpu, cpu->op_run(c, oc, (ert_rows){n, ccount}, cx, cy));
        bdown(gpu, g, raw, gy, nx * es + (size_t)width * es);
        bdown(cpu, c, yc, cy, nd * 4);
        from_act(dt, raw, nd, yg);
        ck_assert_msg(all_bytes(raw + nd * es, (nx - nd) * es + (size_t)width * es, 0xFF),
                      "width %d rows %d (device count %d): wrote past the rows", width, n, dev);
        const double err = tu_rel_err(yg, yc, (int)nd, tol.atol, tol.rtol);
        ck_assert_msg(err <= 1.0, "%s width %d rows %d (device count %d): error ratio %g", ert_dtype_name(dt), width, n,
                      dev, err);
        if (err > worst) worst = err;
        if (gcount) gpu->release(g, gcount), cpu->release(c, ccount);
    }
    gpu->release(g, gx), gpu->release(g, gy), cpu->release(c, cx), cpu->release(c, cy);
    free(x), free(yg), free(yc), free(xa), free(raw);
    return worst;
}

START_TEST(layernorm_matches_cpu) {
    const ert_dtype dt = kDtypes[_i];
    const int dims[] = {37, 512, 784};
    ert_backend *g = make(gpu, dt, MAX_ROWS), *c = make(cpu, ERT_DTYPE_F32, MAX_ROWS);
    rng_seed(200 + (uint64_t)_i);
    for (int k = 0; k < 3; ++k)
        for (int params = 0; params <= 1; ++params) {
            const int dim = dims[k];
            float *w = malloc((size_t)dim * sizeof(float)), *b = malloc((size_t)dim * sizeof(float));
            fill_uniform(w, (size_t)dim, 0.5f, 1.5f);
            fill_uniform(b, (size_t)dim, -0.5f, 0.5f);
            ert_op_desc d = {.type = ERT_OP_LAYERNORM, .name = "ln", .in = dim, .out = dim, .eps = 1e-5f,
                             .weight = params ? w : NULL, .bias = params ? b : NULL, .max_rows = MAX_ROWS};
            ert_op *og, *oc;
            RUN_OK(gpu, gpu->op_new(g, &d, &og));
            RUN_OK(cpu, cpu->op_new(c, &d, &oc));
            /* rows with a mean of 2 and spread 3: two-pass variance is checked for real */
            const double e = check_rowwise(g, c, dt, og, oc, dim, dt, -3.0f, 3.0f, 2.0f);
            printf("OK layernorm %-4s dim %3d params %d: worst error ratio %.3g\n", ert_dtype_name(dt), dim, params, e);
            gpu->op_free(g, og);
            cpu->op_free(c, oc);
            free(w), free(b);
        }
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

START_TEST(normalize_matches_cpu) {
    const ert_dtype dt = kDtypes[_i];
    const int channels[] = {1, 3, 3}, per[] = {784, 37, 256};
    ert_backend *g = make(gpu, dt, MAX_ROWS), *c = make(cpu, ERT_DTYPE_F32, MAX_ROWS);
    rng_seed(300 + (uint64_t)_i);
    for (int k = 0; k < 3; ++k) {
        float scale[3], shift[3];
        fill_uniform(scale, 3, 0.5f, 2.0f);
        fill_uniform(shift, 3, -1.0f, 1.0f);
        const int width = channels[k] * per[k];
        ert_op_desc d = {.type = ERT_OP_NORMALIZE, .name = "norm", .in = width, .out = width, .channels = channels[k],
                         .weight = scale, .bias = shift, .max_rows = MAX_ROWS};
        ert_op *og, *oc;
        RUN_OK(gpu, gpu->op_new(g, &d, &og));
        RUN_OK(cpu, cpu->op_new(c, &d, &oc));
        /* the input of normalize is always f32 */
        const double e = check_rowwise(g, c, dt, og, oc, width, ERT_DTYPE_F32, 0.0f, 1.0f, 0.0f);
        printf("OK normalize %-4s %d x %d: worst error ratio %.3g\n", ert_dtype_name(dt), channels[k], per[k], e);
        gpu->op_free(g, og);
        cpu->op_free(c, oc);
    }
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

/* ---------------------------------------------------------------- add */

/* y += x with both pointers `shift` elements past an aligned base (1 = the scalar path),
 * on every row count and once with a device count; the element after the rows must keep
 * its sentinel. */
static double check_add(ert_backend *g, ert_backend *c, ert_dtype dt, int width, int shift) {
    const size_t es = esize(dt), cap = (size_t)MAX_ROWS * width + 2;
    const tolerance tol = tol_for(dt);
    unsigned char *gx = balloc(gpu, g, cap * es), *gy = balloc(gpu, g, cap * es);
    float *cx = balloc(cpu, c, cap * 4), *cy = balloc(cpu, c, cap * 4);
    float *x = malloc(cap * sizeof(float)), *y = malloc(cap * sizeof(float)), *yg = malloc(cap * sizeof(float)),
          *yc = malloc(cap * sizeof(float));
    unsigned char *a = malloc(cap * es);
    double worst = 0.0;
    for (int k = 0; k <= NROWS; ++k) {
        const int n = k < NROWS ? kRows[k] : 257, dev = k < NROWS ? -1 : 100;
        const size_t nx = (size_t)n * width, nd = (size_t)(dev >= 0 ? dev : n) * width;
        int32_t *gcount = dev >= 0 ? bcount(gpu, g, dev) : NULL, *ccount = dev >= 0 ? bcount(cpu, c, dev) : NULL;
        fill_uniform(x, nx, -1.0f, 1.0f);
        fill_uniform(y, nx, -1.0f, 1.0f);
        y[nx] = 1024.0f; /* sentinel (exact in every type) */
        round_act(dt, x, nx);
        round_act(dt, y, nx);
        to_act(dt, x, nx, a);
        bup(gpu, g, gx + shift * es, a, nx * es);
        to_act(dt, y, nx + 1, a);
        bup(gpu, g, gy + shift * es, a, (nx + 1) * es);
        bup(cpu, c, cx + shift, x, nx * 4);
        bup(cpu, c, cy + shift, y, (nx + 1) * 4);
        RUN_OK(gpu, gpu->add(g, (ert_rows){n, gcount}, width, gx + shift * es, gy + shift * es));
        RUN_OK(cpu, cpu->add(c, (ert_rows){n, ccount}, width, cx + shift, cy + shift));
        bdown(gpu, g, a, gy + shift * es, (nx + 1) * es);
        from_act(dt, a, nx + 1, yg);
        bdown(cpu, c, yc, cy + shift, (nx + 1) * 4);
        ck_assert_msg(yg[nx] == 1024.0f, "add %s width %d shift %d rows %d: wrote past the rows", ert_dtype_name(dt),
                      width, shift, n);
        for (size_t i = nd; i < nx; ++i)
            ck_assert_msg(yg[i] == y[i], "add width %d rows %d, device count %d: element %zu changed", width, n, dev, i);
        const double err = tu_rel_err(yg, yc, (int)nd, tol.atol, tol.rtol);
        ck_assert_msg(err <= 1.0, "add %s width %d shift %d rows %d: error ratio %g", ert_dtype_name(dt), width, shift,
                      n, err);
        if (err > worst) worst = err;
        if (gcount) gpu->release(g, gcount), cpu->release(c, ccount);
    }
    gpu->release(g, gx), gpu->release(g, gy), cpu->release(c, cx), cpu->release(c, cy);
    free(x), free(y), free(yg), free(yc), free(a);
    return worst;
}

START_TEST(add_matches_cpu) {
    const ert_dtype dt = kDtypes[_i];
    ert_backend *g = make(gpu, dt, MAX_ROWS), *c = make(cpu, ERT_DTYPE_F32, MAX_ROWS);
    rng_seed(400 + (uint64_t)_i);
    const int widths[] = {37, 512};
    for (int k = 0; k < 2; ++k)
        for (int shift = 0; shift <= 1; ++shift) {
            const double e = check_add(g, c, dt, widths[k], shift);
            printf("OK add %-4s width %d shift %d: worst error ratio %.3g\n", ert_dtype_name(dt), widths[k], shift, e);
        }
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

/* ---------------------------------------------------------------- decide */

static const ert_policy_kind kPolicies[] = {ERT_POLICY_CONFIDENCE, ERT_POLICY_ENTROPY, ERT_POLICY_MARGIN,
                                            ERT_POLICY_PATIENCE,   ERT_POLICY_FIXED,   ERT_POLICY_ORACLE,
                                            ERT_POLICY_SCHEDULED,  ERT_POLICY_NONE};

static ert_exit_params params_for(ert_policy_kind kind) {
    ert_exit_params p;
    memset(&p, 0, sizeof p);
    p.kind = (int32_t)kind;
    p.num_exits = 4;
    p.patience = 2;
    p.fixed_exit = 2;
    for (int e = 0; e < ERT_MAX_EXITS; ++e) {
        p.threshold[e] = kind == ERT_POLICY_CONFIDENCE ? 0.6f : kind == ERT_POLICY_ENTROPY ? 0.5f : 0.3f;
        p.inv_temp[e] = 1.0f / (0.8f + 0.2f * (float)e);
    }
    return p;
}

/* One row of logits whose policy score is not within 1e-4 of the threshold (libm and
 * CUDA's expf/logf may differ in the last ulp); some rows get a NaN or an infinity. */
static void make_logits(float *z, int classes, int r, const ert_exit_params *p, int e) {
    for (int tries = 0;; ++tries) {
        const float scale = classes > 20 ? 3.5f : 2.5f;
        for (int j = 0; j < classes; ++j) z[j] = scale * rng_normal();
        if (r % 13 == 5) z[rng_u32() % (uint32_t)classes] = NAN;
        else if (r % 17 == 3) z[rng_u32() % (uint32_t)classes] = INFINITY;
        else if (r % 19 == 7) z[rng_u32() % (uint32_t)classes] = -INFINITY;
        const ert_softmax_stats s = ert_softmax_stats_compute(z, classes, p->inv_temp[e]);
        const float score = ert_exit_score(p->kind, &s);
        if (!s.finite || isnan(score) || fabsf(score - p->threshold[e]) > 1e-4f || tries > 100) return;
    }
}

typedef struct decide_buffers {
    float *logits, *conf, *logits_out;
    int32_t *orig, *pred, *exit_at, *count;
    ert_sample_state *state;
    uint8_t *keep;
} decide_buffers;

static decide_buffers decide_alloc(const ert_backend_ops *o, ert_backend *be, int rows, int classes, int batch) {
    decide_buffers b;
    b.logits = balloc(o, be, (size_t)rows * classes * sizeof(float));
    b.conf = balloc(o, be, (size_t)batch * sizeof(float));
    b.logits_out = balloc(o, be, (size_t)batch * classes * sizeof(float));
    b.orig = balloc(o, be, (size_t)rows * sizeof(int32_t));
    b.pred = balloc(o, be, (size_t)batch * sizeof(int32_t));
    b.exit_at = balloc(o, be, (size_t)batch * sizeof(int32_t));
    b.count = balloc(o, be, sizeof(int32_t));
    b.state = balloc(o, be, (size_t)rows * sizeof(ert_sample_state));
    b.keep = balloc(o, be, (size_t)rows);
    return b;
}

static void decide_release(const ert_backend_ops *o, ert_backend *be, decide_buffers *b) {
    o->release(be, b->logits), o->release(be, b->conf), o->release(be, b->logits_out), o->release(be, b->orig);
    o->release(be, b->pred);
    o->release(be, b->exit_at), o->release(be, b->count), o->release(be, b->state), o->release(be, b->keep);
}

/* The same inputs on both backends, then every output compared. Returns the rows that
 * left (on the CPU). */
static int check_decide(ert_backend *g, ert_backend *c, ert_policy_kind kind, int classes, int rows, int exit_index,
                        int is_last, int dev_count, int want_logits) {
    const int batch = rows + 7;
    const ert_exit_params p = params_for(kind);
    float *logits = malloc((size_t)rows * classes * sizeof(float)), *conf = malloc((size_t)batch * sizeof(float));
    float *conf_g = malloc((size_t)batch * sizeof(float));
    int32_t *perm = malloc((size_t)batch * sizeof(int32_t)), *fill = malloc((size_t)batch * sizeof(int32_t));
    int32_t *pred_g = malloc((size_t)batch * sizeof(int32_t)), *pred_c = malloc((size_t)batch * sizeof(int32_t));
    int32_t *exit_g = malloc((size_t)batch * sizeof(int32_t)), *exit_c = malloc((size_t)batch * sizeof(int32_t));
    ert_sample_state *st = malloc((size_t)rows * sizeof *st), *st_g = malloc((size_t)rows * sizeof *st),
                     *st_c = malloc((size_t)rows * sizeof *st);
    uint8_t *keep_g = malloc((size_t)rows), *keep_c = malloc((size_t)rows);
    const size_t lo_bytes = (size_t)batch * classes * sizeof(float);
    unsigned char *lo_g = malloc(lo_bytes), *lo_c = malloc(lo_bytes);

    for (int i = 0; i < batch; ++i) perm[i] = i, fill[i] = -7, conf[i] = -3.0f;
    for (int i = batch - 1; i > 0; --i) {
        const int j = (int)(rng_u32() % (uint32_t)(i + 1));
        const int32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int r = 0; r < rows; ++r) {
        float *z = logits + (size_t)r * classes;
        make_logits(z, classes, r, &p, exit_index);
        const ert_softmax_stats s = ert_softmax_stats_compute(z, classes, p.inv_temp[exit_index]);
        st[r].label = r % 5 == 0 ? -1 : (rng_u32() & 1) ? s.top1 : (int32_t)(rng_u32() % (uint32_t)classes);
        st[r].target_exit = (int32_t)(rng_u32() % 4);
        st[r].last_pred = (rng_u32() & 1) ? s.top1 : (int32_t)(rng_u32() % (uint32_t)(classes + 1)) - 1;
        st[r].streak = (int32_t)(rng_u32() % 3);
        st[r].done = r % 7 == 2;
    }

    const ert_backend_ops *o[2] = {gpu, cpu};
    ert_backend *be[2] = {g, c};
    decide_buffers b[2];
    for (int k = 0; k < 2; ++k) {
        b[k] = decide_alloc(o[k], be[k], rows, classes, batch);
        bup(o[k], be[k], b[k].logits, logits, (size_t)rows * classes * sizeof(float));
        bup(o[k], be[k], b[k].orig, perm, (size_t)rows * sizeof(int32_t));
        bup(o[k], be[k], b[k].state, st, (size_t)rows * sizeof *st);
        bup(o[k], be[k], b[k].pred, fill, (size_t)batch * sizeof(int32_t));
        bup(o[k], be[k], b[k].exit_at, fill, (size_t)batch * sizeof(int32_t));
        bup(o[k], be[k], b[k].conf, conf, (size_t)batch * sizeof(float));
        bup(o[k], be[k], b[k].count, &dev_count, sizeof dev_count);
        bfill(o[k], be[k], b[k].keep, (size_t)rows, 0xEE);
        bfill(o[k], be[k], b[k].logits_out, lo_bytes, 0xCD);
        const ert_decide_args a = {.params = p, .exit_index = exit_index, .is_last = is_last, .classes = classes,
                                   .rows = {rows, dev_count >= 0 ? b[k].count : NULL}, .logits = b[k].logits,
                                   .orig_index = b[k].orig, .state = b[k].state, .keep = b[k].keep,
                                   .pred = b[k].pred, .exit_at = b[k].exit_at, .conf = b[k].conf,
                                   .logits_out = want_logits ? b[k].logits_out : NULL};
        RUN_OK(o[k], o[k]->decide(be[k], &a));
    }
    bdown(gpu, g, keep_g, b[0].keep, (size_t)rows);
    bdown(cpu, c, keep_c, b[1].keep, (size_t)rows);
    bdown(gpu, g, st_g, b[0].state, (size_t)rows * sizeof *st);
    bdown(cpu, c, st_c, b[1].state, (size_t)rows * sizeof *st);
    bdown(gpu, g, pred_g, b[0].pred, (size_t)batch * sizeof(int32_t));
    bdown(cpu, c, pred_c, b[1].pred, (size_t)batch * sizeof(int32_t));
    bdown(gpu, g, exit_g, b[0].exit_at, (size_t)batch * sizeof(int32_t));
    bdown(cpu, c, exit_c, b[1].exit_at, (size_t)batch * sizeof(int32_t));
    bdown(gpu, g, conf_g, b[0].conf, (size_t)batch * sizeof(float));
    bdown(cpu, c, conf, b[1].conf, (size_t)batch * sizeof(float));
    bdown(gpu, g, lo_g, b[0].logits_out, lo_bytes);
    bdown(cpu, c, lo_c, b[1].logits_out, lo_bytes);
    /* bytes: NaN logits must be copied as they are */
    ck_assert_msg(memcmp(lo_g, lo_c, lo_bytes) == 0, "decide kind %d C %d rows %d: logits_out differ", (int)kind,
                  classes, rows);

    int left = 0;
    for (int r = 0; r < rows; ++r) {
        ck_assert_msg(keep_g[r] == keep_c[r], "decide kind %d C %d rows %d exit %d last %d: keep[%d] cuda %d cpu %d",
                      (int)kind, classes, rows, exit_index, is_last, r, keep_g[r], keep_c[r]);
        ck_assert_msg(memcmp(&st_g[r], &st_c[r], sizeof *st) == 0, "decide kind %d C %d rows %d: state[%d] differs",
                      (int)kind, classes, rows, r);
        left += keep_c[r] == 0 && !st[r].done;
    }
    for (int i = 0; i < batch; ++i) {
        ck_assert_msg(pred_g[i] == pred_c[i] && exit_g[i] == exit_c[i],
                      "decide kind %d C %d rows %d: sample %d pred %d/%d exit %d/%d (cuda/cpu)", (int)kind, classes,
                      rows, i, pred_g[i], pred_c[i], exit_g[i], exit_c[i]);
        const int same = (isnan(conf_g[i]) && isnan(conf[i])) || fabsf(conf_g[i] - conf[i]) <= 1e-5f;
        ck_assert_msg(same, "decide kind %d C %d rows %d: sample %d conf %.8g/%.8g", (int)kind, classes, rows, i,
                      (double)conf_g[i], (double)conf[i]);
    }
    decide_release(gpu, g, &b[0]);
    decide_release(cpu, c, &b[1]);
    free(logits), free(conf), free(conf_g), free(perm), free(fill), free(pred_g), free(pred_c), free(exit_g);
    free(exit_c), free(st), free(st_g), free(st_c), free(keep_g), free(keep_c), free(lo_g), free(lo_c);
    return left;
}

START_TEST(decide_matches_cpu) {
    const ert_policy_kind kind = kPolicies[_i];
    ert_backend *g = make(gpu, ERT_DTYPE_F32, MAX_ROWS), *c = make(cpu, ERT_DTYPE_F32, MAX_ROWS);
    const int classes[] = {10, 100}, rows[] = {1, 17, 257, 1000};
    const int exits[][2] = {{0, 0}, {2, 0}, {3, 1}}; /* exit index, is_last */
    rng_seed(500 + (uint64_t)_i);
    for (int ci = 0; ci < 2; ++ci)
        for (int ri = 0; ri < 4; ++ri)
            for (int ei = 0; ei < 3; ++ei) {
                const int left =
                    check_decide(g, c, kind, classes[ci], rows[ri], exits[ei][0], exits[ei][1], -1, ei != 1);
                printf("OK decide kind %d C %3d rows %4d exit %d last %d: %d left\n", (int)kind, classes[ci], rows[ri],
                       exits[ei][0], exits[ei][1], left);
            }
    /* a device count below the host count: rows past it are not touched */
    check_decide(g, c, kind, 10, 257, 1, 0, 100, 1);
    check_decide(g, c, kind, 10, 257, 1, 0, 0, 1);
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

/* ---------------------------------------------------------------- compact */

static ert_backend *make_compact_backend(ert_dtype dt, const char *path) {
    setenv("ERT_COMPACT_PATH", path, 1);
    ert_backend *be = make(gpu, dt, COMPACT_MAX_ROWS);
    unsetenv("ERT_COMPACT_PATH");
    return be;
}

/* gather on the three path choices, fill (its one-launch path up to 1024 rows, the CUB
 * scan above) on the device; both on the CPU too (f32). */
START_TEST(compact_matches_reference) {
    const ert_dtype dt = _i == 0 ? ERT_DTYPE_F32 : ERT_DTYPE_BF16;
    const ert_backend_ops *ops[4] = {gpu, gpu, gpu, cpu};
    const char *labels[4] = {"cub", "fused", "auto", "cpu"};
    ert_backend *bes[4];
    for (int p = 0; p < 3; ++p) bes[p] = make_compact_backend(dt, labels[p]);
    bes[3] = make(cpu, ERT_DTYPE_F32, COMPACT_MAX_ROWS);
    const int n = dt == ERT_DTYPE_F32 ? 4 : 3;
    check_compaction(ops, bes, labels, n, dt, ERT_COMPACT_GATHER, 600 + (uint64_t)_i);
    const ert_backend_ops *fops[2] = {gpu, cpu};
    const char *flabels[2] = {"fill", "cpu fill"};
    ert_backend *fbes[2] = {bes[2], bes[3]};
    check_compaction(fops, fbes, flabels, n == 4 ? 2 : 1, dt, ERT_COMPACT_FILL, 700 + (uint64_t)_i);
    printf("OK compact %s: gather (cub, fused and auto paths) and fill equal their references%s\n",
           ert_dtype_name(dt), dt == ERT_DTYPE_F32 ? ", and the cpu backend's" : "");
    for (int p = 0; p < 3; ++p) gpu->destroy(bes[p]);
    cpu->destroy(bes[3]);
}
END_TEST

/* ---------------------------------------------------------------- backend basics */

START_TEST(backend_basics) {
    ert_backend *g = make(gpu, ERT_DTYPE_BF16, 16);
    ck_assert_uint_eq(gpu->act_elem_size(g), 2);
    ck_assert_int_eq(gpu->host_memory, 0);
    ck_assert(strncmp(gpu->device_name(g), "cuda:0 (", 8) == 0);
    /* alloc zeroes; host memory round-trips; events measure a non-negative time */
    unsigned char *d = balloc(gpu, g, 1000), *h = NULL;
    RUN_OK(gpu, gpu->host_alloc(g, 1000, (void **)&h));
    bdown(gpu, g, h, d, 1000);
    ck_assert(all_bytes(h, 1000, 0));
    ert_event *e0, *e1;
    double ms = -1.0;
    RUN_OK(gpu, gpu->event_new(g, &e0));
    RUN_OK(gpu, gpu->event_new(g, &e1));
    RUN_OK(gpu, gpu->event_record(g, e0));
    bfill(gpu, g, d, 1000, 7);
    RUN_OK(gpu, gpu->event_record(g, e1));
    RUN_OK(gpu, gpu->event_elapsed_ms(g, e0, e1, &ms));
    ck_assert(ms >= 0.0);
    gpu->event_free(g, e0), gpu->event_free(g, e1), gpu->event_free(g, NULL);
    gpu->host_release(g, h), gpu->host_release(g, NULL);
    gpu->release(g, d), gpu->release(g, NULL);
    gpu->op_free(g, NULL);
    /* too many rows is an error naming the op, not a crash */
    float w[4] = {1, 2, 3, 4};
    ert_op_desc desc = {.type = ERT_OP_LINEAR, .name = "tiny", .in = 2, .out = 2, .weight = w, .max_rows = 4};
    ert_op *op;
    RUN_OK(gpu, gpu->op_new(g, &desc, &op));
    ck_assert_int_eq(gpu->op_run(g, op, (ert_rows){5, NULL}, NULL, NULL), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(strstr(ert_last_error(), "tiny") != NULL);
    /* an allocation the device cannot hold is an out-of-memory error by message, and
     * loses nothing: the failed call's CUDA error is not reported again by the next
     * launch check (ert_cuda_status clears it) */
    void *huge = NULL;
    ck_assert_int_eq(gpu->alloc(g, (size_t)1 << 52, &huge), ERT_ERR_OUT_OF_MEMORY);
    ck_assert_msg(strstr(ert_last_error(), "cudaErrorMemoryAllocation") != NULL, "%s", ert_last_error());
    ck_assert_ptr_null(huge);
    float *gx = balloc(gpu, g, 4 * 2 * sizeof(uint16_t)), *gy = balloc(gpu, g, 4 * 2 * sizeof(uint16_t));
    RUN_OK(gpu, gpu->op_run(g, op, (ert_rows){4, NULL}, gx, gy));
    RUN_OK(gpu, gpu->sync(g));
    gpu->release(g, gx), gpu->release(g, gy);
    gpu->op_free(g, op);
    check_backend_refusals(gpu, g, 16);
    gpu->destroy(g);
    gpu->destroy(NULL);
}
END_TEST

/* One case per op family, so that CK_RUN_CASE can pick some (compute-sanitizer runs). */
static Suite *suite(void) {
    Suite *s = suite_create("cuda_ops");
    TCase *basics = tcase_create("basics"), *linear = tcase_create("linear"), *norm = tcase_create("norm"),
          *decide = tcase_create("decide"), *compact = tcase_create("compact");
    tcase_add_test(basics, backend_basics);
    tcase_add_test(basics, linear_nan_rows);
    tcase_add_loop_test(linear, linear_matches_cpu, 0, 4);
    tcase_add_loop_test(linear, linear_graph_matches_eager, 0, 4);
    tcase_add_loop_test(norm, layernorm_matches_cpu, 0, 4);
    tcase_add_loop_test(norm, normalize_matches_cpu, 0, 4);
    tcase_add_loop_test(norm, add_matches_cpu, 0, 4);
    tcase_add_loop_test(decide, decide_matches_cpu, 0, (int)(sizeof kPolicies / sizeof *kPolicies));
    tcase_add_loop_test(compact, compact_matches_reference, 0, 2);
    TCase *all[] = {basics, linear, norm, decide, compact};
    for (int i = 0; i < 5; ++i) {
        tcase_set_timeout(all[i], 600);
        tcase_add_checked_fixture(all[i], cuda_env_clear, NULL);
        suite_add_tcase(s, all[i]);
    }
    return s;
}

int main(void) {
    const int skip = cuda_backends_or_skip(&cpu, &gpu);
    /* No fork: CUDA cannot be used in a child forked after the parent initialised it. */
    return skip >= 0 ? skip : tu_run_nofork(suite());
}
