/* The CUDA backend's image ops against the CPU reference, through the backend table only,
 * on seeded random inputs: conv2d (cuDNN: fused and unfused plans), maxpool, avgpool
 * (global too) and relu, for f32, tf32, bf16 and f16, with f32 outputs (f32_out) as well.
 * Prints one line per case with its worst error ratio (1 = at the tolerance).
 *
 * Skips (exit 77, the reason printed) when built without CUDA or when there is no CUDA
 * device; the conv2d cases say SKIP when the build has no cuDNN (the pools still run, and
 * the test then exits with the skip code).
 * 16-bit inputs and weights are rounded before the CPU sees them, so both backends
 * compute from the same numbers; outputs are poisoned (NaN bytes) before each run, so an
 * element the device forgets to write fails the comparison, and a guard row after the
 * last row must stay poisoned. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "dtype.h"
#include "backend_testutil.h"
#include "testutil.h"

static const ert_backend_ops *cpu, *gpu;

#define MAX_ROWS 129
static const int kRows[] = {1, 3, 64, 129};
#define NROWS ((int)(sizeof kRows / sizeof *kRows))
static const ert_dtype kDtypes[] = {ERT_DTYPE_F32, ERT_DTYPE_TF32, ERT_DTYPE_BF16, ERT_DTYPE_F16};

/* ---------------------------------------------------------------- tolerances */

/* The image ops (a convolution sums C/groups * kh * kw products in cuDNN's order, not
 * im2col's; pools their windows): half as much again as a GEMM's tolerance below f32. */
static tolerance image_tol(ert_dtype dt) {
    tolerance t = tol_for(dt);
    if (dt != ERT_DTYPE_F32) t.atol *= 1.5, t.rtol *= 1.5;
    return t;
}

/* Largest |got - want| / (atol + rtol |want|); NaN must meet NaN and an infinity the same
 * infinity (INFINITY otherwise). *at gets the worst index. */
static double compare(const float *got, const float *want, size_t n, tolerance t, size_t *at) {
    double worst = 0.0;
    *at = 0;
    for (size_t i = 0; i < n; ++i) {
        double e;
        if (isnan(got[i]) || isnan(want[i])) e = isnan(got[i]) && isnan(want[i]) ? 0.0 : INFINITY;
        else if (isinf(got[i]) || isinf(want[i])) e = got[i] == want[i] ? 0.0 : INFINITY;
        else e = fabs((double)got[i] - (double)want[i]) / (t.atol + t.rtol * fabs((double)want[i]));
        if (e > worst) {
            worst = e;
            *at = i;
            if (e == INFINITY) break;
        }
    }
    return worst;
}

/* ---------------------------------------------------------------- one op on both backends */

/* An op prepared on both backends, with buffers for MAX_ROWS rows and a guard row. */
typedef struct pair {
    ert_backend *g, *c;
    ert_op *og, *oc;
    ert_dtype dt, out_dt; /* activation type; out_dt is f32 with f32_out */
    int in, out;
    int skips_count;      /* the device op honours rows.dev_count (cuDNN does not) */
    void *gx, *gy;
    float *cx, *cy;
} pair;

/* Prepares desc on the GPU (dg, full-precision weights) and the CPU (dc, weights rounded
 * as the GPU stores them). Returns the GPU's status; nothing is held unless ERT_OK. */
static ert_status pair_new(pair *p, ert_backend *g, ert_backend *c, ert_dtype dt, const ert_op_desc *dg,
                           const ert_op_desc *dc) {
    memset(p, 0, sizeof *p);
    p->g = g, p->c = c, p->dt = dt;
    p->out_dt = dg->f32_out ? ERT_DTYPE_F32 : dt;
    p->in = dg->in, p->out = dg->out;
    p->skips_count = dg->type != ERT_OP_CONV2D;
    const ert_status st = gpu->op_new(g, dg, &p->og);
    if (st != ERT_OK) return st;
    RUN_OK(cpu, cpu->op_new(c, dc, &p->oc));
    p->gx = balloc(gpu, g, (size_t)(MAX_ROWS + 1) * p->in * esize(dt));
    p->gy = balloc(gpu, g, (size_t)(MAX_ROWS + 1) * p->out * esize(p->out_dt));
    p->cx = balloc(cpu, c, (size_t)(MAX_ROWS + 1) * p->in * 4);
    p->cy = balloc(cpu, c, (size_t)(MAX_ROWS + 1) * p->out * 4);
    return ERT_OK;
}

static void pair_free(pair *p) {
    gpu->op_free(p->g, p->og);
    cpu->op_free(p->c, p->oc);
    gpu->release(p->g, p->gx), gpu->release(p->g, p->gy);
    cpu->release(p->c, p->cx), cpu->release(p->c, p->cy);
}

/* Runs the pair on n rows of x (n * in host values, already rounded to the activation
 * type), with a device count `dev` when >= 0, in place (y = x) when asked; checks the
 * guard row, the rows past the device count (where the device op honours it) and the
 * values. Returns the worst error ratio. */
static double pair_run(const pair *p, int n, int dev, const float *x, int in_place, const char *label) {
    const size_t es = esize(p->dt), os = esize(p->out_dt);
    const size_t nx = (size_t)n * p->in, ny = (size_t)n * p->out, row_out = (size_t)p->out * os;
    const int done = dev >= 0 && dev < n ? dev : n;
    const size_t nd = (size_t)done * p->out;
    const tolerance tol = image_tol(p->dt);
    unsigned char *xa = malloc((nx ? nx : 1) * es), *raw = malloc((ny + p->out) * os);
    float *yg = malloc((ny ? ny : 1) * sizeof(float)), *yc = malloc((ny ? ny : 1) * sizeof(float));
    int32_t *gcount = dev >= 0 ? bcount(gpu, p->g, dev) : NULL, *ccount = dev >= 0 ? bcount(cpu, p->c, dev) : NULL;
    void *gy = in_place ? p->gx : p->gy;
    float *cy = in_place ? p->cx : p->cy;

    to_act(p->dt, x, nx, xa);
    bup(gpu, p->g, p->gx, xa, nx * es);
    bup(cpu, p->c, p->cx, x, nx * 4);
    if (in_place) bfill(gpu, p->g, (unsigned char *)p->gx + nx * es, row_out, 0xFF);
    else bfill(gpu, p->g, p->gy, ny * os + row_out, 0xFF);
    RUN_OK(gpu, gpu->op_run(p->g, p->og, (ert_rows){n, gcount}, p->gx, gy));
    RUN_OK(cpu, cpu->op_run(p->c, p->oc, (ert_rows){n, ccount}, p->cx, cy));
    bdown(gpu, p->g, raw, gy, ny * os + row_out);
    bdown(cpu, p->c, yc, cy, nd * 4);
    from_act(p->out_dt, raw, nd, yg);
    ck_assert_msg(all_bytes(raw + ny * os, row_out, 0xFF), "%s %s rows %d: wrote past the rows", label,
                  ert_dtype_name(p->dt), n);
    if (p->skips_count && !in_place)
        ck_assert_msg(all_bytes(raw + nd * os, (ny - nd) * os, 0xFF), "%s %s rows %d, device count %d: wrote past it",
                      label, ert_dtype_name(p->dt), n, dev);
    size_t at = 0;
    const double err = compare(yg, yc, nd, tol, &at);
    ck_assert_msg(err <= 1.0, "%s %s rows %d (device count %d): error ratio %g at [row %zu, %zu]: cuda %.8g, cpu %.8g",
                  label, ert_dtype_name(p->dt), n, dev, err, at / (size_t)p->out, at % (size_t)p->out,
                  nd ? (double)yg[at] : 0.0, nd ? (double)yc[at] : 0.0);
    if (gcount) gpu->release(p->g, gcount), cpu->release(p->c, ccount);
    free(xa), free(raw), free(yg), free(yc);
    return err;
}

/* Every row count, then 129 rows with a device count of 100, on uniform inputs. */
static double pair_sweep(const pair *p, float lo, float hi, int in_place, const char *label) {
    float *x = malloc((size_t)MAX_ROWS * p->in * sizeof(float));
    double worst = 0.0;
    for (int k = 0; k <= NROWS; ++k) {
        const int n = k < NROWS ? kRows[k] : MAX_ROWS, dev = k < NROWS ? -1 : 100;
        fill_uniform(x, (size_t)n * p->in, lo, hi);
        round_act(p->dt, x, (size_t)n * p->in);
        const double e = pair_run(p, n, dev, x, in_place, label);
        if (e > worst) worst = e;
    }
    free(x);
    return worst;
}

/* ---------------------------------------------------------------- conv2d */

typedef struct conv_shape {
    const char *what;
    int c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, groups;
} conv_shape;

static const conv_shape kConvShapes[] = {
    {"3x3 pad 1", 8, 12, 12, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {"stride 2", 8, 13, 11, 12, 3, 3, 2, 2, 1, 1, 1, 1, 1},
    {"dilation 2", 6, 14, 13, 8, 3, 3, 1, 1, 2, 2, 2, 2, 1},
    {"groups 2", 8, 10, 10, 12, 3, 3, 1, 1, 1, 1, 1, 1, 2},
    {"depthwise", 16, 10, 9, 16, 3, 3, 1, 1, 1, 1, 1, 1, 16},
    {"depthwise x2 s2", 8, 9, 9, 16, 3, 3, 2, 2, 1, 1, 1, 1, 8},
    {"3x1", 5, 9, 7, 7, 3, 1, 1, 1, 1, 0, 1, 1, 1},
    {"1x1", 32, 7, 7, 24, 1, 1, 1, 1, 0, 0, 1, 1, 1},
    {"5x5 stem", 3, 28, 28, 16, 5, 5, 1, 1, 2, 2, 1, 1, 1},
};
#define NCONV ((int)(sizeof kConvShapes / sizeof *kConvShapes))

static ert_conv_geom conv_geom(const conv_shape *s) {
    ert_conv_geom g = {.in_c = s->c, .in_h = s->h, .in_w = s->w, .out_c = s->k, .kh = s->kh, .kw = s->kw,
                       .sh = s->sh, .sw = s->sw, .ph = s->ph, .pw = s->pw, .dh = s->dh, .dw = s->dw,
                       .groups = s->groups};
    g.out_h = (s->h + 2 * s->ph - s->dh * (s->kh - 1) - 1) / s->sh + 1;
    g.out_w = (s->w + 2 * s->pw - s->dw * (s->kw - 1) - 1) / s->sw + 1;
    return g;
}

/* Weights and bias of a conv shape, the weights also as the GPU rounds them. */
typedef struct conv_params {
    float *w, *wr, *b;
} conv_params;

static conv_params conv_params_new(const conv_shape *s, ert_dtype dt) {
    const size_t nw = (size_t)s->k * (s->c / s->groups) * s->kh * s->kw;
    const float bound = 1.0f / sqrtf((float)(s->c / s->groups * s->kh * s->kw));
    conv_params p = {malloc(nw * sizeof(float)), malloc(nw * sizeof(float)), malloc((size_t)s->k * sizeof(float))};
    fill_uniform(p.w, nw, -bound, bound);
    fill_uniform(p.b, (size_t)s->k, -0.5f, 0.5f);
    memcpy(p.wr, p.w, nw * sizeof(float));
    round_act(dt, p.wr, nw);
    return p;
}

static void conv_params_free(conv_params *p) { free(p->w), free(p->wr), free(p->b); }

static ert_op_desc conv_desc(const conv_shape *s, const float *w, const float *b, ert_activation act, int f32_out) {
    const ert_conv_geom g = conv_geom(s);
    return (ert_op_desc){.type = ERT_OP_CONV2D, .name = "conv", .in = g.in_c * g.in_h * g.in_w,
                         .out = g.out_c * g.out_h * g.out_w, .act = act, .weight = w, .bias = b, .f32_out = f32_out,
                         .max_rows = MAX_ROWS, .conv = g};
}

/* 1 when the GPU's answer to op_new says this build has no cuDNN (conv cases then skip,
 * and the whole test reports a skip at the end, so ctest does not call it passed). */
static int cudnn_missing;
static int no_cudnn(ert_status st) {
    const int missing = st == ERT_ERR_UNSUPPORTED && strstr(ert_last_error(), "needs cuDNN") != NULL;
    cudnn_missing |= missing;
    return missing;
}

/* One conv case on every row count; -1 when the build has no cuDNN. */
static double check_conv(ert_backend *g, ert_backend *c, ert_dtype dt, const conv_shape *s, ert_activation act,
                         int has_bias, int f32_out) {
    conv_params w = conv_params_new(s, dt);
    const ert_op_desc dg = conv_desc(s, w.w, has_bias ? w.b : NULL, act, f32_out);
    const ert_op_desc dc = conv_desc(s, w.wr, has_bias ? w.b : NULL, act, 0);
    char label[160];
    snprintf(label, sizeof label, "conv %s act %d bias %d f32_out %d", s->what, (int)act, has_bias, f32_out);
    pair p;
    const ert_status st = pair_new(&p, g, c, dt, &dg, &dc);
    if (no_cudnn(st)) {
        conv_params_free(&w);
        return -1.0;
    }
    ck_assert_msg(st == ERT_OK, "%s %s: op_new: %s", label, ert_dtype_name(dt), ert_last_error());
    const double e = pair_sweep(&p, -1.0f, 1.0f, 0, label);
    pair_free(&p);
    conv_params_free(&w);
    return e;
}

START_TEST(conv_matches_cpu) {
    const ert_dtype dt = kDtypes[_i];
    ert_backend *g = make(gpu, dt, MAX_ROWS), *c = make(cpu, ERT_DTYPE_F32, MAX_ROWS);
    rng_seed(700 + (uint64_t)_i);
    for (int s = 0; s < NCONV; ++s)
        for (int act = ERT_ACT_NONE; act <= ERT_ACT_GELU; ++act)
            for (int bias = 0; bias <= 1; ++bias)
                for (int f32_out = 0; f32_out <= 1; ++f32_out) {
                    /* f32 outputs (the widened plan on 16-bit sessions): a few shapes */
                    if (f32_out && !(bias && (s == 0 || s == 5 || s == 8))) continue;
                    const double e = check_conv(g, c, dt, &kConvShapes[s], (ert_activation)act, bias, f32_out);
                    if (e < 0) {
                        printf("SKIP conv2d %s: %s\n", ert_dtype_name(dt), ert_last_error());
                        goto done;
                    }
                    printf("OK conv %-4s %-16s act %d bias %d f32_out %d: worst error ratio %.3g\n",
                           ert_dtype_name(dt), kConvShapes[s].what, act, bias, f32_out, e);
                }
done:
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

/* Graph mode, op by op: a conv2d op captured as a SWITCH node over the default buckets
 * (cuDNN captured once per bucket, between powers of two too) gives the eager op's rows
 * bit for bit for any device count (cuDNN may pick other kernels for another N: this says
 * whether it does), and writes nothing past the count's bucket (nothing for 0). */
START_TEST(conv_graph_matches_eager) {
    const ert_dtype dt = kDtypes[_i];
    static const int shapes[] = {0, 1, 4, 8};
    static const int counts[] = {0, 1, 2, 3, 5, 17, 64, 65, 100, MAX_ROWS, 0, 7, MAX_ROWS + 9};
    ert_backend *g = make(gpu, dt, MAX_ROWS);
    rng_seed(950 + (uint64_t)_i);
    const size_t es = esize(dt);
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; ++si)
        for (int act = ERT_ACT_RELU; act <= ERT_ACT_GELU; ++act) {
            const conv_shape *sh = &kConvShapes[shapes[si]];
            conv_params w = conv_params_new(sh, dt);
            const ert_op_desc d = conv_desc(sh, w.w, w.b, (ert_activation)act, 0);
            ert_op *op = NULL;
            const ert_status st = gpu->op_new(g, &d, &op);
            if (no_cudnn(st)) {
                printf("SKIP graph conv2d %s: %s\n", ert_dtype_name(dt), ert_last_error());
                conv_params_free(&w);
                goto done;
            }
            RUN_OK(gpu, st);
            const size_t nx = (size_t)MAX_ROWS * d.in;
            float *x = malloc(nx * sizeof(float));
            unsigned char *xa = malloc(nx * es);
            fill_uniform(x, nx, -1.0f, 1.0f);
            to_act(dt, x, nx, xa);
            void *gx = balloc(gpu, g, nx * es);
            bup(gpu, g, gx, xa, nx * es);
            char what[128];
            snprintf(what, sizeof what, "graph conv %s %s act %d", ert_dtype_name(dt), sh->what, act);
            check_graph_vs_eager(gpu, g, op, gx, (size_t)d.out * es, MAX_ROWS, counts,
                                 (int)(sizeof counts / sizeof *counts), what);
            printf("OK %s: equal to eager at %d device counts, nothing past the bucket\n", what,
                   (int)(sizeof counts / sizeof *counts));
            gpu->op_free(g, op);
            gpu->release(g, gx);
            free(x), free(xa);
            conv_params_free(&w);
        }
done:
    gpu->destroy(g);
}
END_TEST

/* The unfused plan (cudnnConvolutionForward + our bias/activation pass), which a fused
 * plan falls back to, forced with ERT_CONV_FUSE=0; then, for information only, whether
 * every fusable case gets a fused plan here (ERT_CONV_FUSE=require says why not). */
START_TEST(conv_unfused_matches_cpu) {
    const ert_dtype dt = kDtypes[_i];
    ert_backend *g = make(gpu, dt, MAX_ROWS), *c = make(cpu, ERT_DTYPE_F32, MAX_ROWS);
    const int shapes[] = {0, 2, 4};
    rng_seed(800 + (uint64_t)_i);
    setenv("ERT_CONV_FUSE", "0", 1);
    for (int k = 0; k < 3; ++k)
        for (int act = ERT_ACT_NONE; act <= ERT_ACT_RELU; ++act)
            for (int bias = 0; bias <= 1; ++bias) {
                const double e = check_conv(g, c, dt, &kConvShapes[shapes[k]], (ert_activation)act, bias, 0);
                if (e < 0) {
                    printf("SKIP conv2d %s: %s\n", ert_dtype_name(dt), ert_last_error());
                    goto done;
                }
                printf("OK conv unfused %-4s %-16s act %d bias %d: worst error ratio %.3g\n", ert_dtype_name(dt),
                       kConvShapes[shapes[k]].what, act, bias, e);
            }
    setenv("ERT_CONV_FUSE", "require", 1);
    const int fused_shapes[] = {0, 4, 7};
    for (int k = 0; k < 3; ++k)
        for (int act = ERT_ACT_NONE; act <= ERT_ACT_RELU; ++act)
            for (int f32_out = 0; f32_out <= 1; ++f32_out) {
                const conv_shape *s = &kConvShapes[fused_shapes[k]];
                conv_params w = conv_params_new(s, dt);
                const ert_op_desc d = conv_desc(s, w.w, w.b, (ert_activation)act, f32_out);
                ert_op *op = NULL;
                if (gpu->op_new(g, &d, &op) == ERT_OK)
                    printf("INFO conv %-4s %-16s act %d f32_out %d: fused plan\n", ert_dtype_name(dt), s->what, act,
                           f32_out);
                else
                    printf("NOTE conv %-4s %-16s act %d f32_out %d: no fused plan: %s\n", ert_dtype_name(dt), s->what,
                           act, f32_out, ert_last_error());
                gpu->op_free(g, op);
                conv_params_free(&w);
            }
done:
    unsetenv("ERT_CONV_FUSE");
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

/* A sample made of NaN gives NaN everywhere in its output under every activation (relu
 * keeps NaN, as op_math's and PyTorch's relu do), on the fused and the unfused plan, and
 * leaves the other samples alone (no algorithm mixes samples). */
START_TEST(conv_nan_sample) {
    const ert_dtype dt = _i == 0 ? ERT_DTYPE_F32 : ERT_DTYPE_BF16;
    ert_backend *g = make(gpu, dt, MAX_ROWS), *c = make(cpu, ERT_DTYPE_F32, MAX_ROWS);
    const conv_shape *s = &kConvShapes[0];
    rng_seed(900 + (uint64_t)_i);
    for (int fuse = 1; fuse >= 0; --fuse) {
        setenv("ERT_CONV_FUSE", fuse ? "1" : "0", 1);
        for (int act = ERT_ACT_NONE; act <= ERT_ACT_GELU; ++act) {
            conv_params w = conv_params_new(s, dt);
            const ert_op_desc dg = conv_desc(s, w.w, w.b, (ert_activation)act, 0);
            const ert_op_desc dc = conv_desc(s, w.wr, w.b, (ert_activation)act, 0);
            pair p;
            const ert_status st = pair_new(&p, g, c, dt, &dg, &dc);
            if (no_cudnn(st)) {
                printf("SKIP conv2d NaN: %s\n", ert_last_error());
                conv_params_free(&w);
                goto done;
            }
            ck_assert_msg(st == ERT_OK, "conv NaN act %d: op_new: %s", act, ert_last_error());
            const int n = 3;
            float *x = malloc((size_t)n * p.in * sizeof(float));
            fill_uniform(x, (size_t)n * p.in, -1.0f, 1.0f);
            round_act(dt, x, (size_t)n * p.in);
            for (int j = 0; j < p.in; ++j) x[p.in + j] = NAN; /* sample 1 */
            char label[96];
            snprintf(label, sizeof label, "conv NaN sample act %d fuse %d", act, fuse);
            pair_run(&p, n, -1, x, 0, label); /* NaN must meet NaN, position by position */
            printf("OK conv NaN sample %-4s act %d %s plan: NaN in, NaN out, other samples exact\n", ert_dtype_name(dt),
                   act, fuse ? "default" : "unfused");
            free(x);
            pair_free(&p);
            conv_params_free(&w);
        }
    }
done:
    unsetenv("ERT_CONV_FUSE");
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

/* A small network's worth of ops in a row, activations in the session's type in between:
 * conv (relu) -> maxpool -> conv with f32 outputs (logits), against the CPU in f32. */
START_TEST(conv_chain_matches_cpu) {
    const ert_dtype dt = kDtypes[_i];
    ert_backend *g = make(gpu, dt, MAX_ROWS), *c = make(cpu, ERT_DTYPE_F32, MAX_ROWS);
    const conv_shape s1 = {"stem", 3, 16, 16, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1};
    const conv_shape s2 = {"head", 8, 8, 8, 10, 3, 3, 2, 2, 1, 1, 1, 1, 1};
    rng_seed(1000 + (uint64_t)_i);
    conv_params w1 = conv_params_new(&s1, dt), w2 = conv_params_new(&s2, dt);
    const ert_op_desc c1g = conv_desc(&s1, w1.w, w1.b, ERT_ACT_RELU, 0);
    const ert_op_desc c1c = conv_desc(&s1, w1.wr, w1.b, ERT_ACT_RELU, 0);
    const ert_op_desc c2g = conv_desc(&s2, w2.w, w2.b, ERT_ACT_NONE, 1); /* logits: f32 */
    const ert_op_desc c2c = conv_desc(&s2, w2.wr, w2.b, ERT_ACT_NONE, 0);
    const ert_conv_geom pg = {.in_c = 8, .in_h = 16, .in_w = 16, .out_c = 8, .out_h = 8, .out_w = 8, .kh = 2, .kw = 2,
                              .sh = 2, .sw = 2, .dh = 1, .dw = 1, .groups = 1};
    const ert_op_desc pd = {.type = ERT_OP_MAXPOOL, .name = "pool", .in = 8 * 16 * 16, .out = 8 * 8 * 8,
                            .max_rows = MAX_ROWS, .conv = pg};
    ert_op *og[3] = {NULL, NULL, NULL}, *oc[3] = {NULL, NULL, NULL};
    const ert_status st = gpu->op_new(g, &c1g, &og[0]);
    if (no_cudnn(st)) {
        printf("SKIP conv chain: %s\n", ert_last_error());
    } else {
        ck_assert_msg(st == ERT_OK, "chain conv1: %s", ert_last_error());
        RUN_OK(gpu, gpu->op_new(g, &pd, &og[1]));
        RUN_OK(gpu, gpu->op_new(g, &c2g, &og[2]));
        RUN_OK(cpu, cpu->op_new(c, &c1c, &oc[0]));
        RUN_OK(cpu, cpu->op_new(c, &pd, &oc[1]));
        RUN_OK(cpu, cpu->op_new(c, &c2c, &oc[2]));
        const int widths[4] = {c1g.in, c1g.out, pd.out, c2g.out};
        const size_t es = esize(dt);
        void *gb[4];
        float *cb[4];
        for (int k = 0; k < 4; ++k) {
            gb[k] = balloc(gpu, g, (size_t)MAX_ROWS * widths[k] * (k == 3 ? 4 : es));
            cb[k] = balloc(cpu, c, (size_t)MAX_ROWS * widths[k] * 4);
        }
        float *x = malloc((size_t)MAX_ROWS * widths[0] * sizeof(float));
        float *yg = malloc((size_t)MAX_ROWS * widths[3] * sizeof(float));
        float *yc = malloc((size_t)MAX_ROWS * widths[3] * sizeof(float));
        unsigned char *xa = malloc((size_t)MAX_ROWS * widths[0] * es);
        double worst = 0.0;
        for (int k = 0; k < NROWS; ++k) {
            const int n = kRows[k];
            const size_t nx = (size_t)n * widths[0], ny = (size_t)n * widths[3];
            fill_uniform(x, nx, -1.0f, 1.0f);
            round_act(dt, x, nx);
            to_act(dt, x, nx, xa);
            bup(gpu, g, gb[0], xa, nx * es);
            bup(cpu, c, cb[0], x, nx * 4);
            bfill(gpu, g, gb[3], ny * 4, 0xFF);
            for (int o = 0; o < 3; ++o) {
                RUN_OK(gpu, gpu->op_run(g, og[o], (ert_rows){n, NULL}, gb[o], gb[o + 1]));
                RUN_OK(cpu, cpu->op_run(c, oc[o], (ert_rows){n, NULL}, cb[o], cb[o + 1]));
            }
            bdown(gpu, g, yg, gb[3], ny * 4);
            bdown(cpu, c, yc, cb[3], ny * 4);
            size_t at = 0;
            /* two 16-bit roundings on the way: twice the one-op tolerance */
            tolerance t = image_tol(dt);
            t.atol *= 2, t.rtol *= 2;
            const double e = compare(yg, yc, ny, t, &at);
            ck_assert_msg(e <= 1.0, "chain %s rows %d: error ratio %g at %zu: cuda %g, cpu %g", ert_dtype_name(dt), n,
                          e, at, (double)yg[at], (double)yc[at]);
            if (e > worst) worst = e;
        }
        printf("OK conv -> maxpool -> conv (f32 logits) %-4s: worst error ratio %.3g\n", ert_dtype_name(dt), worst);
        for (int k = 0; k < 4; ++k) gpu->release(g, gb[k]), cpu->release(c, cb[k]);
        free(x), free(yg), free(yc), free(xa);
    }
    for (int o = 0; o < 3; ++o) gpu->op_free(g, og[o]), cpu->op_free(c, oc[o]);
    conv_params_free(&w1), conv_params_free(&w2);
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

/* ---------------------------------------------------------------- pools */

typedef struct pool_shape {
    const char *what;
    int c, h, w, kh, kw, sh, sw, ph, pw;
} pool_shape;

static const pool_shape kPoolShapes[] = {
    {"3x3 s2 p1", 5, 9, 11, 3, 3, 2, 2, 1, 1},
    {"2x2 s2", 4, 8, 8, 2, 2, 2, 2, 0, 0},
    {"3x2 s1x2 p1x1", 3, 7, 10, 3, 2, 1, 2, 1, 1},
    {"3x3 s3 p1", 6, 13, 13, 3, 3, 3, 3, 1, 1},
    {"5x5 s2 p2", 2, 11, 9, 5, 5, 2, 2, 2, 2},
    {"global 7x7", 16, 7, 7, 7, 7, 1, 1, 0, 0},
    {"global 5x9", 8, 5, 9, 5, 9, 1, 1, 0, 0},
    {"global 1x1", 8, 1, 1, 1, 1, 1, 1, 0, 0},
    {"global 33x31", 3, 33, 31, 33, 31, 1, 1, 0, 0},
};
#define NPOOL ((int)(sizeof kPoolShapes / sizeof *kPoolShapes))

static ert_op_desc pool_desc(const pool_shape *s, ert_op_type type, int f32_out) {
    ert_conv_geom g = {.in_c = s->c, .in_h = s->h, .in_w = s->w, .out_c = s->c, .kh = s->kh, .kw = s->kw,
                       .sh = s->sh, .sw = s->sw, .ph = s->ph, .pw = s->pw, .dh = 1, .dw = 1, .groups = 1};
    g.out_h = (s->h + 2 * s->ph - s->kh) / s->sh + 1;
    g.out_w = (s->w + 2 * s->pw - s->kw) / s->sw + 1;
    return (ert_op_desc){.type = type, .name = type == ERT_OP_MAXPOOL ? "maxpool" : "avgpool",
                         .in = s->c * s->h * s->w, .out = s->c * g.out_h * g.out_w, .f32_out = f32_out,
                         .max_rows = MAX_ROWS, .conv = g};
}

START_TEST(pool_matches_cpu) {
    const ert_dtype dt = kDtypes[_i];
    ert_backend *g = make(gpu, dt, MAX_ROWS), *c = make(cpu, ERT_DTYPE_F32, MAX_ROWS);
    rng_seed(1100 + (uint64_t)_i);
    for (int s = 0; s < NPOOL; ++s)
        for (int t = 0; t < 2; ++t)
            for (int f32_out = 0; f32_out <= 1; ++f32_out) {
                const ert_op_type type = t ? ERT_OP_AVGPOOL : ERT_OP_MAXPOOL;
                const ert_op_desc d = pool_desc(&kPoolShapes[s], type, f32_out);
                char label[96];
                snprintf(label, sizeof label, "%s %s f32_out %d", d.name, kPoolShapes[s].what, f32_out);
                pair p;
                RUN_OK(gpu, pair_new(&p, g, c, dt, &d, &d));
                const double e = pair_sweep(&p, -2.0f, 2.0f, 0, label);
                printf("OK %-7s %-4s %-14s f32_out %d: worst error ratio %.3g\n", d.name, ert_dtype_name(dt),
                       kPoolShapes[s].what, f32_out, e);
                pair_free(&p);
            }
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

/* NaN and infinities inside windows: max lets NaN win (PyTorch) and keeps +inf, the
 * average turns NaN and mixed infinities into NaN, like the CPU reference. */
START_TEST(pool_nan_inf) {
    const ert_dtype dt = _i == 0 ? ERT_DTYPE_F32 : ERT_DTYPE_F16;
    ert_backend *g = make(gpu, dt, MAX_ROWS), *c = make(cpu, ERT_DTYPE_F32, MAX_ROWS);
    const int shapes[] = {0, 4, 5, 8};
    rng_seed(1200 + (uint64_t)_i);
    for (int k = 0; k < 4; ++k)
        for (int t = 0; t < 2; ++t) {
            const ert_op_desc d = pool_desc(&kPoolShapes[shapes[k]], t ? ERT_OP_AVGPOOL : ERT_OP_MAXPOOL, 0);
            pair p;
            RUN_OK(gpu, pair_new(&p, g, c, dt, &d, &d));
            const int n = 3;
            float *x = malloc((size_t)n * p.in * sizeof(float));
            fill_uniform(x, (size_t)n * p.in, -2.0f, 2.0f);
            round_act(dt, x, (size_t)n * p.in);
            for (int j = 0; j < p.in; j += 7) x[p.in + j] = NAN;                 /* sample 1 */
            for (int j = 3; j < p.in; j += 11) x[2 * p.in + j] = (j & 1) ? INFINITY : -INFINITY; /* sample 2 */
            char label[96];
            snprintf(label, sizeof label, "%s %s NaN/inf", d.name, kPoolShapes[shapes[k]].what);
            pair_run(&p, n, -1, x, 0, label);
            printf("OK %-7s %-4s %-14s NaN and infinities as on the CPU\n", d.name, ert_dtype_name(dt),
                   kPoolShapes[shapes[k]].what);
            free(x);
            pair_free(&p);
        }
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

/* ---------------------------------------------------------------- relu */

START_TEST(relu_matches_cpu) {
    const ert_dtype dt = kDtypes[_i];
    ert_backend *g = make(gpu, dt, MAX_ROWS), *c = make(cpu, ERT_DTYPE_F32, MAX_ROWS);
    const int widths[] = {37, 512, 8 * 7 * 7};
    rng_seed(1300 + (uint64_t)_i);
    for (int k = 0; k < 3; ++k)
        for (int mode = 0; mode < 3; ++mode) { /* 0: y separate, 1: f32 outputs, 2: in place */
            const ert_op_desc d = {.type = ERT_OP_RELU, .name = "relu", .in = widths[k], .out = widths[k],
                                   .f32_out = mode == 1, .max_rows = MAX_ROWS};
            char label[64];
            snprintf(label, sizeof label, "relu width %d mode %d", widths[k], mode);
            pair p;
            RUN_OK(gpu, pair_new(&p, g, c, dt, &d, &d));
            double e = mode == 2 ? 0.0 : pair_sweep(&p, -1.0f, 1.0f, 0, label);
            /* NaN, infinities and signed zeros in every row */
            float *x = malloc((size_t)MAX_ROWS * widths[k] * sizeof(float));
            fill_uniform(x, (size_t)MAX_ROWS * widths[k], -1.0f, 1.0f);
            round_act(dt, x, (size_t)MAX_ROWS * widths[k]);
            for (size_t j = 0; j < (size_t)MAX_ROWS * widths[k]; j += 5)
                x[j] = (const float[]){NAN, INFINITY, -INFINITY, -0.0f, 0.0f}[(j / 5) % 5];
            for (int r = 0; r < NROWS; ++r) {
                const double er = pair_run(&p, kRows[r], -1, x, mode == 2, label);
                if (er > e) e = er;
            }
            free(x);
            printf("OK relu %-4s width %4d %-9s: worst error ratio %.3g (NaN kept)\n", ert_dtype_name(dt), widths[k],
                   mode == 0 ? "" : mode == 1 ? "f32_out" : "in place", e);
            pair_free(&p);
        }
    gpu->destroy(g);
    cpu->destroy(c);
}
END_TEST

/* ---------------------------------------------------------------- argument checks */

START_TEST(image_op_errors) {
    ert_backend *g = make(gpu, ERT_DTYPE_F32, 8);
    ert_op *op = NULL;
    ert_op_desc d = pool_desc(&kPoolShapes[0], ERT_OP_MAXPOOL, 0);
    d.name = "bad_pool";
    d.max_rows = 8;
    d.conv.out_h += 1; /* not what the window gives */
    ck_assert_int_eq(gpu->op_new(g, &d, &op), ERT_ERR_SHAPE);
    ck_assert(tu_error_has("bad_pool"));
    d = pool_desc(&kPoolShapes[0], ERT_OP_AVGPOOL, 0);
    d.name = "wide_pad";
    d.max_rows = 8;
    d.conv.ph = 2; /* more than half the 3x3 window */
    ck_assert_int_eq(gpu->op_new(g, &d, &op), ERT_ERR_SHAPE);
    ck_assert(tu_error_has("wide_pad"));
    const ert_op_desc r = {.type = ERT_OP_RELU, .name = "bad_relu", .in = 10, .out = 11, .max_rows = 8};
    ck_assert_int_eq(gpu->op_new(g, &r, &op), ERT_ERR_SHAPE);
    ck_assert(tu_error_has("bad_relu"));
    /* a convolution whose groups do not divide its channels */
    conv_params w = conv_params_new(&kConvShapes[3], ERT_DTYPE_F32);
    ert_op_desc cd = conv_desc(&kConvShapes[3], w.w, w.b, ERT_ACT_NONE, 0);
    cd.name = "bad_conv";
    cd.max_rows = 8;
    cd.conv.groups = 3;
    const ert_status st = gpu->op_new(g, &cd, &op);
    if (no_cudnn(st)) {
        printf("SKIP conv2d argument check: %s\n", ert_last_error());
    } else {
        ck_assert_int_eq(st, ERT_ERR_SHAPE);
        ck_assert(tu_error_has("bad_conv"));
    }
    conv_params_free(&w);
    gpu->destroy(g);
    printf("OK image op argument checks name the op\n");
}
END_TEST

/* One case per op family, so that CK_RUN_CASE can pick some (compute-sanitizer runs). */
static Suite *suite(void) {
    Suite *s = suite_create("cuda_conv");
    TCase *conv = tcase_create("conv"), *pool = tcase_create("pool"), *relu = tcase_create("relu"),
          *errors = tcase_create("errors");
    tcase_add_loop_test(conv, conv_matches_cpu, 0, 4);
    tcase_add_loop_test(conv, conv_unfused_matches_cpu, 0, 4);
    tcase_add_loop_test(conv, conv_nan_sample, 0, 2);
    tcase_add_loop_test(conv, conv_chain_matches_cpu, 0, 4);
    tcase_add_loop_test(conv, conv_graph_matches_eager, 0, 4);
    tcase_add_loop_test(pool, pool_matches_cpu, 0, 4);
    tcase_add_loop_test(pool, pool_nan_inf, 0, 2);
    tcase_add_loop_test(relu, relu_matches_cpu, 0, 4);
    tcase_add_test(errors, image_op_errors);
    TCase *all[] = {conv, pool, relu, errors};
    for (int i = 0; i < 4; ++i) {
        tcase_set_timeout(all[i], 600);
        tcase_add_checked_fixture(all[i], cuda_env_clear, NULL);
        suite_add_tcase(s, all[i]);
    }
    return s;
}

int main(void) {
    const int skip = cuda_backends_or_skip(&cpu, &gpu);
    /* No fork: CUDA cannot be used in a child forked after the parent initialised it. */
    if (skip >= 0) return skip;
    const int rc = tu_run_nofork(suite());
    if (rc == 0 && cudnn_missing)
        return cuda_skip_or_fail("conv2d: this build has no cuDNN", "the pool and relu cases ran and passed");
    return rc;
}
