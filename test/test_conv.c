/* Convolutional ops on the CPU against PyTorch fixtures (test/fixtures/gen_conv_fixtures.py):
 * conv2d (stride, padding, dilation, groups, depthwise, non-square kernels, bias, relu),
 * max / average / global average pooling; a tiny early-exit CNN end to end; and the
 * loader's shape checks for image ops. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "cpu/cpu.h"
#include "testutil.h"

static cJSON *fx;
static const ert_backend_ops *ops;
static ert_backend *be;

static void setup(void) {
    fx = tu_json_load(tu_path("test/fixtures/conv_ops.json"));
    ops = ert_backend_cpu();
    ert_backend_config cfg = {.device = 0, .max_rows = 64, .dtype = ERT_DTYPE_F32};
    ck_assert_int_eq(ops->create(&cfg, &be), ERT_OK);
}

static void teardown(void) {
    ops->destroy(be);
    cJSON_Delete(fx);
}

static int num(const cJSON *c, const char *k) { return cJSON_GetObjectItem(c, k)->valueint; }
static int pair(const cJSON *c, const char *k, int i) { return cJSON_GetArrayItem(cJSON_GetObjectItem(c, k), i)->valueint; }

static float *floats(const cJSON *c, const char *k, int *n) {
    const cJSON *v = cJSON_GetObjectItem(c, k);
    return v && !cJSON_IsNull(v) ? tu_json_floats(v, n) : NULL;
}

/* Runs one op on n samples with a NaN-poisoned output and compares with y. */
static void run_and_compare(const ert_op_desc *d, int n, const float *x, const float *y, const char *what) {
    ert_op *op;
    ck_assert_msg(ops->op_new(be, d, &op) == ERT_OK, "%s", ert_last_error());
    const int total = n * d->out;
    float *got = malloc(sizeof(float) * (size_t)total);
    for (int i = 0; i < total; ++i) got[i] = NAN;
    ck_assert_int_eq(ops->op_run(be, op, (ert_rows){n, NULL}, x, got), ERT_OK);
    const double err = tu_rel_err(got, y, total, 1e-5, 1e-4);
    printf("%s: maxdiff ratio %.3g (%s)\n", what, err, op->gemm[0] ? op->gemm : "no GEMM");
    ck_assert_double_le(err, 1.0);
    ops->op_free(be, op);
    free(got);
}

START_TEST(conv2d_matches_pytorch) {
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(fx, "conv2d")) {
        int len;
        float *x = floats(c, "x", &len), *w = floats(c, "w", &len), *b = floats(c, "b", &len), *y = floats(c, "y", &len);
        const char *act = cJSON_GetObjectItem(c, "activation")->valuestring;
        ert_conv_geom g = {.in_c = num(c, "in_c"), .in_h = num(c, "in_h"), .in_w = num(c, "in_w"),
                           .out_c = num(c, "out_c"), .out_h = num(c, "out_h"), .out_w = num(c, "out_w"),
                           .kh = pair(c, "kernel", 0), .kw = pair(c, "kernel", 1), .sh = pair(c, "stride", 0),
                           .sw = pair(c, "stride", 1), .ph = pair(c, "padding", 0), .pw = pair(c, "padding", 1),
                           .dh = pair(c, "dilation", 0), .dw = pair(c, "dilation", 1), .groups = num(c, "groups")};
        ert_op_desc d = {.type = ERT_OP_CONV2D, .name = "conv fixture", .in = g.in_c * g.in_h * g.in_w,
                         .out = g.out_c * g.out_h * g.out_w, .weight = w, .bias = b, .conv = g, .max_rows = 64,
                         .act = strcmp(act, "relu") == 0 ? ERT_ACT_RELU : strcmp(act, "gelu") == 0 ? ERT_ACT_GELU : ERT_ACT_NONE};
        for (int gi = 0; gi < 2; ++gi) { /* the default GEMM (oneDNN where it runs), then OpenBLAS */
            char what[192];
            snprintf(what, sizeof what, "conv2d n%d %dx%dx%d -> %d k%dx%d s%d p%d d%d g%d %s bias=%d%s", num(c, "n"),
                     g.in_c, g.in_h, g.in_w, g.out_c, g.kh, g.kw, g.sh, g.ph, g.dh, g.groups, act, b != NULL,
                     gi ? ", ERT_CPU_GEMM=openblas" : "");
            if (gi) setenv("ERT_CPU_GEMM", "openblas", 1);
            run_and_compare(&d, num(c, "n"), x, y, what);
            unsetenv("ERT_CPU_GEMM");
        }
        free(x), free(w), free(b), free(y);
        ++cases;
    }
    ck_assert_int_ge(cases, 10);
}
END_TEST

static void pools(const char *key, ert_op_type type) {
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(fx, key)) {
        int len;
        float *x = floats(c, "x", &len), *y = floats(c, "y", &len);
        const int global = type == ERT_OP_AVGPOOL && !cJSON_GetObjectItem(c, "kernel");
        ert_conv_geom g = {.in_c = num(c, "c"), .in_h = num(c, "h"), .in_w = num(c, "w"), .out_c = num(c, "c"),
                           .groups = 1, .dh = 1, .dw = 1};
        if (global) {
            g.kh = g.in_h, g.kw = g.in_w, g.sh = g.sw = 1, g.out_h = g.out_w = 1;
        } else {
            g.kh = pair(c, "kernel", 0), g.kw = pair(c, "kernel", 1), g.sh = pair(c, "stride", 0);
            g.sw = pair(c, "stride", 1), g.ph = pair(c, "padding", 0), g.pw = pair(c, "padding", 1);
            g.out_h = num(c, "out_h"), g.out_w = num(c, "out_w");
        }
        ert_op_desc d = {.type = type, .in = g.in_c * g.in_h * g.in_w, .out = g.out_c * g.out_h * g.out_w, .conv = g,
                         .max_rows = 64};
        char what[128];
        snprintf(what, sizeof what, "%s n%d %dx%dx%d k%dx%d s%d p%d", key, num(c, "n"), g.in_c, g.in_h, g.in_w, g.kh,
                 g.kw, g.sh, g.ph);
        run_and_compare(&d, num(c, "n"), x, y, what);
        free(x), free(y);
    }
}

START_TEST(pools_match_pytorch) {
    pools("maxpool", ERT_OP_MAXPOOL);
    pools("avgpool", ERT_OP_AVGPOOL);
    pools("global_avgpool", ERT_OP_AVGPOOL);
}
END_TEST

START_TEST(relu_keeps_nan) {
    float x[4] = {-1.0f, 0.5f, NAN, -0.0f}, y[4];
    ert_op_desc d = {.type = ERT_OP_RELU, .in = 4, .out = 4, .max_rows = 1};
    ert_op *op;
    ck_assert_int_eq(ops->op_new(be, &d, &op), ERT_OK);
    ck_assert_int_eq(ops->op_run(be, op, (ert_rows){1, NULL}, x, y), ERT_OK);
    ck_assert_float_eq(y[0], 0.0f);
    ck_assert_float_eq(y[1], 0.5f);
    ck_assert(isnan(y[2]));
    ops->op_free(be, op);
}
END_TEST

/* The tiny CNN fixture (conv with padding, stride, groups, dilation, depthwise, 3x1
 * kernels, max/avg/global pooling, a stage without exit) against PyTorch, per exit. */
START_TEST(tiny_cnn_matches_pytorch) {
    cJSON *ref = tu_json_load(tu_path("test/fixtures/tiny-cnn/reference.json"));
    ert_model *m = NULL;
    ck_assert_msg(ert_model_load(tu_path("test/fixtures/tiny-cnn"), &m) == ERT_OK, "%s", ert_last_error());
    const int D = ert_model_input_size(m), C = ert_model_num_classes(m), E = ert_model_num_exits(m);
    const cJSON *inputs = cJSON_GetObjectItem(ref, "inputs"), *logits = cJSON_GetObjectItem(ref, "exit_logits");
    const int n = cJSON_GetArraySize(inputs);
    float *x = malloc(sizeof(float) * (size_t)n * D);
    for (int i = 0; i < n; ++i) {
        int len;
        float *row = tu_json_floats(cJSON_GetArrayItem(inputs, i), &len);
        ck_assert_int_eq(len, D);
        memcpy(x + (size_t)i * D, row, sizeof(float) * (size_t)D);
        free(row);
    }
    ck_assert_int_eq(cJSON_GetArraySize(logits), E);
    ert_session_options o = ert_session_options_default();
    o.max_batch = n;
    ert_session *s = NULL;
    ck_assert_int_eq(ert_session_new(m, &o, &s), ERT_OK);
    float *lg = malloc(sizeof(float) * (size_t)n * C), conf[64];
    int32_t pred[64], ex[64];
    for (int e = 0; e < E; ++e) {
        char spec[32];
        snprintf(spec, sizeof spec, "fixed:%d", e);
        ert_policy *p = NULL;
        ck_assert_int_eq(ert_policy_parse(spec, &p), ERT_OK);
        ert_batch b = {.input = x, .n = n};
        ert_outputs out = {pred, ex, conf, lg};
        ck_assert_msg(ert_session_run(s, p, &b, &out) == ERT_OK, "%s", ert_last_error());
        for (int i = 0; i < n; ++i) {
            int c;
            float *z = tu_json_floats(cJSON_GetArrayItem(cJSON_GetArrayItem(logits, e), i), &c);
            ck_assert_int_eq(c, C);
            ck_assert_double_le(tu_rel_err(lg + (size_t)i * C, z, C, 1e-5, 1e-4), 1.0);
            free(z);
        }
        ert_policy_free(p);
    }
    /* masked and compact agree exactly on the CNN too */
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("confidence:0.3", &p), ERT_OK);
    int32_t pred2[64], ex2[64];
    float conf2[64];
    ert_batch b = {.input = x, .n = n};
    ert_outputs out = {pred, ex, conf, NULL}, out2 = {pred2, ex2, conf2, NULL};
    ck_assert_int_eq(ert_session_run(s, p, &b, &out), ERT_OK);
    ert_session *sm = NULL;
    o.mode = ERT_MODE_MASKED;
    ck_assert_int_eq(ert_session_new(m, &o, &sm), ERT_OK);
    ck_assert_int_eq(ert_session_run(sm, p, &b, &out2), ERT_OK);
    ck_assert(memcmp(pred, pred2, sizeof(int32_t) * (size_t)n) == 0);
    ck_assert(memcmp(ex, ex2, sizeof(int32_t) * (size_t)n) == 0);
    ck_assert(memcmp(conf, conf2, sizeof(float) * (size_t)n) == 0);
    ert_policy_free(p);
    ert_session_free(sm);
    ert_session_free(s);
    /* Parameters per stage and head as the file holds them: the element counts of the
     * tensors named stages.K.* and exits.E.* in the safetensors header. */
    FILE *f = fopen(tu_path("test/fixtures/tiny-cnn/model.safetensors"), "rb");
    ck_assert_ptr_nonnull(f);
    unsigned char len8[8];
    ck_assert_uint_eq(fread(len8, 1, 8, f), 8);
    size_t hlen = 0;
    for (int i = 7; i >= 0; --i) hlen = hlen << 8 | len8[i];
    char *text = calloc(1, hlen + 1);
    ck_assert_uint_eq(fread(text, 1, hlen, f), hlen);
    fclose(f);
    cJSON *header = cJSON_Parse(text);
    ck_assert_ptr_nonnull(header);
    int64_t body[ERT_MAX_STAGES] = {0}, head[ERT_MAX_EXITS] = {0};
    const cJSON *t;
    cJSON_ArrayForEach(t, header) {
        int k;
        int64_t numel = 1;
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(t, "shape")) numel *= (int64_t)d->valuedouble;
        if (sscanf(t->string, "stages.%d.", &k) == 1) body[k] += numel;
        else if (sscanf(t->string, "exits.%d.", &k) == 1) head[k] += numel;
    }
    for (int k = 0; k < ert_model_num_stages(m); ++k) {
        ert_stage_info si;
        ck_assert_int_eq(ert_model_stage_info(m, k, &si), ERT_OK);
        ck_assert_int_eq(si.params, body[k]);
        ck_assert_int_eq(si.head_params, si.has_exit ? head[si.exit_index] : 0);
    }
    cJSON_Delete(header);
    free(text);
    ert_model_free(m);
    free(x), free(lg);
    cJSON_Delete(ref);
}
END_TEST

/* A direct convolution in double (loops over the definition), the reference for the
 * batched im2col + GEMM path beyond the fixtures' few samples. */
static void direct_conv(const ert_conv_geom *g, const float *w, const float *b, int relu, const float *x, float *y) {
    const int kg = g->out_c / g->groups, cg = g->in_c / g->groups;
    for (int k = 0; k < g->out_c; ++k)
        for (int oy = 0; oy < g->out_h; ++oy)
            for (int ox = 0; ox < g->out_w; ++ox) {
                double acc = b ? b[k] : 0.0;
                for (int c = 0; c < cg; ++c)
                    for (int i = 0; i < g->kh; ++i)
                        for (int j = 0; j < g->kw; ++j) {
                            const int iy = oy * g->sh - g->ph + i * g->dh, ix = ox * g->sw - g->pw + j * g->dw;
                            if (iy < 0 || iy >= g->in_h || ix < 0 || ix >= g->in_w) continue;
                            acc += (double)w[((k * cg + c) * g->kh + i) * g->kw + j] *
                                   x[((k / kg * cg + c) * g->in_h + iy) * g->in_w + ix];
                        }
                y[(k * g->out_h + oy) * g->out_w + ox] = (float)(relu && acc < 0.0 ? 0.0 : acc);
            }
}

/* Which GEMM a linear or conv op of the CPU backend runs on, "onednn" or "openblas (why)", with
 * ERT_CPU_GEMM set to `gemm` (NULL: unset) while it is created. */
static ert_status gemm_on(const char *gemm, const ert_op_desc *d, ert_op **op) {
    if (gemm) setenv("ERT_CPU_GEMM", gemm, 1);
    const ert_status st = ops->op_new(be, d, op);
    unsetenv("ERT_CPU_GEMM");
    return st;
}

/* On OpenBLAS the CPU conv runs its GEMM on blocks of samples (cpu.h, ert_cpu_conv_block:
 * 512 / (H'W') samples, so 20 at 5x5, 10 at 7x7, 6 at 9x9 and 1 at 40x40); on oneDNN
 * each sample alone, through a primitive made for one sample (onednn.c). Either way a
 * sample's output must depend neither on the batch nor on its place in it: the same bits
 * alone as in a batch of several blocks and a partial one, also after a batch of NaN and
 * inf left its values in the scratch; and the batched outputs match a direct convolution.
 * Where oneDNN is built and the CPU has AVX-512, it is what a conv of groups 1 runs on
 * (grouped ones may not: oneDNN runs some as a GEMM per sample, and they stay on OpenBLAS). */
START_TEST(conv2d_sample_does_not_depend_on_the_batch) {
    const struct {
        ert_conv_geom g;
        int n;
    } cases[] = {
        {{.in_c = 4, .in_h = 9, .in_w = 9, .out_c = 6, .out_h = 5, .out_w = 5, .kh = 3, .kw = 3, .sh = 2, .sw = 2,
          .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 2}, 97},
        {{.in_c = 3, .in_h = 7, .in_w = 7, .out_c = 5, .out_h = 7, .out_w = 7, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
          .ph = 2, .pw = 2, .dh = 2, .dw = 2, .groups = 1}, 45},
        {{.in_c = 1, .in_h = 40, .in_w = 40, .out_c = 3, .out_h = 40, .out_w = 40, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
          .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1}, 3},
        /* few output channels and K = 72: OpenBLAS computes the last columns of a GEMM
         * whose width is not a multiple of its unroll with an edge kernel that rounds
         * differently (6 samples of 81 columns = 486 wide); the block is padded to 64 */
        {{.in_c = 8, .in_h = 9, .in_w = 9, .out_c = 4, .out_h = 9, .out_w = 9, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
          .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1}, 25},
        /* 2 samples of 196 columns run as column ranges: were they 256 + 192 wide, a
         * sample's columns would land in a 256- or a 192-wide GEMM by its place in the
         * block, and with few output channels and K = 576 OpenBLAS's small-matrix
         * kernel (chosen by size) rounds the narrow one differently */
        {{.in_c = 64, .in_h = 14, .in_w = 14, .out_c = 8, .out_h = 14, .out_w = 14, .kh = 3, .kw = 3, .sh = 1,
          .sw = 1, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1}, 5},
        /* depthwise (groups = channels: oneDNN's brdgmm kernels) */
        {{.in_c = 6, .in_h = 9, .in_w = 9, .out_c = 6, .out_h = 9, .out_w = 9, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
          .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 6}, 25},
        /* 300 output channels (a channel count no block of 16 divides) */
        {{.in_c = 2, .in_h = 5, .in_w = 5, .out_c = 300, .out_h = 5, .out_w = 5, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
          .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1}, 23},
    };
    const char *gemms[] = {NULL, "openblas"}; /* the default GEMM (oneDNN where it runs), then OpenBLAS */
    const size_t ncases = sizeof cases / sizeof *cases;
    for (size_t t = 0; t < 2 * ncases; ++t) {
        const size_t ci = t % ncases;
        const int gi = (int)(t / ncases);
        const ert_conv_geom g = cases[ci].g;
        const int n = cases[ci].n, in = g.in_c * g.in_h * g.in_w, out = g.out_c * g.out_h * g.out_w;
        const int nw = g.out_c * (g.in_c / g.groups) * g.kh * g.kw;
        float *w = malloc(sizeof(float) * (size_t)nw), *b = malloc(sizeof(float) * (size_t)g.out_c);
        float *x = malloc(sizeof(float) * (size_t)n * in), *poison = malloc(sizeof(float) * (size_t)n * in);
        float *y = malloc(sizeof(float) * (size_t)n * out), *one = malloc(sizeof(float) * (size_t)out);
        float *ref = malloc(sizeof(float) * (size_t)out);
        unsigned s = 12345u + (unsigned)ci;
        for (int i = 0; i < nw; ++i) w[i] = (float)((s = s * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
        for (int i = 0; i < g.out_c; ++i) b[i] = 0.1f * (float)(i % 3) - 0.1f;
        for (int i = 0; i < n * in; ++i) {
            x[i] = (float)((s = s * 1103515245u + 12345u) >> 8) / 16777216.0f * 2.0f - 1.0f;
            poison[i] = i % 2 ? NAN : INFINITY;
        }
        int per_block, cols;
        ert_cpu_conv_block(g.out_h * g.out_w, &per_block, &cols);
        ck_assert_msg(ci == 2 ? per_block == 1 : n > per_block && n % per_block != 0,
                      "case %zu: %d samples for blocks of %d", ci, n, per_block);
        ck_assert_int_eq(cols % 64, 0);
        ert_op_desc d = {.type = ERT_OP_CONV2D, .name = "conv", .in = in, .out = out, .weight = w, .bias = b,
                         .conv = g, .max_rows = n, .act = ERT_ACT_RELU};
        ert_op *op;
        ck_assert_msg(gemm_on(gemms[gi], &d, &op) == ERT_OK, "%s", ert_last_error());
        printf("conv case %zu, ERT_CPU_GEMM=%s: %s\n", ci, gemms[gi] ? gemms[gi] : "", op->gemm);
        if (gi) ck_assert_str_eq(op->gemm, "openblas (ERT_CPU_GEMM=openblas)");
#ifdef ERT_WITH_ONEDNN
        else if (g.groups == 1 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
            ck_assert_str_eq(op->gemm, "onednn");
#endif
        ck_assert_int_eq(ops->op_run(be, op, (ert_rows){n, NULL}, x, y), ERT_OK);
        for (int r = 0; r < n; ++r) {
            direct_conv(&g, w, b, 1, x + (size_t)r * in, ref);
            const double err = tu_rel_err(y + (size_t)r * out, ref, out, 1e-5, 1e-4);
            ck_assert_msg(err <= 1.0, "case %zu sample %d: maxdiff ratio %.3g against the direct convolution", ci, r, err);
        }
        /* the poison fills every column of every block; then each sample alone, then all
         * but the last (a different partial block), must give the batched bits */
        float *again = malloc(sizeof(float) * (size_t)n * out);
        ck_assert_int_eq(ops->op_run(be, op, (ert_rows){n, NULL}, poison, again), ERT_OK);
        for (int r = 0; r < n; ++r) {
            ck_assert_int_eq(ops->op_run(be, op, (ert_rows){1, NULL}, x + (size_t)r * in, one), ERT_OK);
            for (int i = 0; i < out; ++i)
                ck_assert_msg(memcmp(&one[i], &y[(size_t)r * out + i], sizeof(float)) == 0,
                              "case %zu sample %d output %d: %.9g alone, %.9g in the batch of %d", ci, r, i, one[i],
                              y[(size_t)r * out + i], n);
        }
        ck_assert_int_eq(ops->op_run(be, op, (ert_rows){n, NULL}, poison, again), ERT_OK);
        ck_assert_int_eq(ops->op_run(be, op, (ert_rows){n - 1, NULL}, x, again), ERT_OK);
        for (size_t i = 0; i < (size_t)(n - 1) * out; ++i)
            ck_assert_msg(memcmp(&again[i], &y[i], sizeof(float)) == 0, "case %zu output %zu: %.9g in a batch of %d, %.9g of %d",
                          ci, i, again[i], n - 1, y[i], n);
        ops->op_free(be, op);
        free(w), free(b), free(x), free(poison), free(y), free(one), free(ref), free(again);
    }
}
END_TEST

/* A linear op's rows must not depend on the batch: on OpenBLAS its GEMMs run on blocks of
 * 64 rows, on oneDNN a block's rows run as primitives of 64, 32, ..., 1 rows (m's binary
 * digits). Each row alone, and every batch of 1 to 70 rows starting anywhere in 130, gives
 * the bits of the batch of 130; the two GEMMs agree within rounding; and where oneDNN is
 * built and the CPU has AVX-512 (brgemm), it is what the op runs on. Outputs of 10, 256
 * and 600 columns: one range, exactly one, three with a shorter last one. A third run
 * pads a block's last rows to 4 (ERT_ONEDNN_MIN_ROWS, what oneDNN 3.7 needs at 2 for
 * K > 1024): the same bits as the first. */
START_TEST(linear_row_does_not_depend_on_the_batch) {
    enum { N = 130, IN = 300, RUNS = 3 };
    const int outs[] = {10, 256, 600};
    const char *gemms[RUNS] = {NULL, "openblas", NULL};
    for (size_t oi = 0; oi < sizeof outs / sizeof *outs; ++oi) {
        const int out = outs[oi];
        float *w = malloc(sizeof(float) * (size_t)out * IN), *b = malloc(sizeof(float) * (size_t)out);
        float *x = malloc(sizeof(float) * N * IN), *y[RUNS], *got = malloc(sizeof(float) * N * (size_t)out);
        unsigned s = 99u + (unsigned)oi;
        for (int i = 0; i < out * IN; ++i) w[i] = (float)((s = s * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
        for (int i = 0; i < out; ++i) b[i] = 0.01f * (float)(i % 7);
        for (int i = 0; i < N * IN; ++i) x[i] = (float)((s = s * 1103515245u + 12345u) >> 8) / 16777216.0f * 2.0f - 1.0f;
        const ert_op_desc d = {.type = ERT_OP_LINEAR, .name = "fc", .in = IN, .out = out, .weight = w, .bias = b,
                               .max_rows = N, .act = ERT_ACT_GELU};
        for (int gi = 0; gi < RUNS; ++gi) {
            ert_op *op;
            if (gi == 2) setenv("ERT_ONEDNN_MIN_ROWS", "4", 1);
            const ert_status st = gemm_on(gemms[gi], &d, &op);
            unsetenv("ERT_ONEDNN_MIN_ROWS");
            ck_assert_msg(st == ERT_OK, "%s", ert_last_error());
            printf("linear %d -> %d, ERT_CPU_GEMM=%s%s: %s\n", IN, out, gemms[gi] ? gemms[gi] : "",
                   gi == 2 ? " ERT_ONEDNN_MIN_ROWS=4" : "", op->gemm);
            if (gi == 1) ck_assert_str_eq(op->gemm, "openblas (ERT_CPU_GEMM=openblas)");
#ifdef ERT_WITH_ONEDNN
            else if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
                ck_assert_str_eq(op->gemm, "onednn");
            if (op->mm) ck_assert_int_eq(ert_cpu_mm_min_rows(op->mm), gi == 2 ? 4 : 1);
#endif
            y[gi] = malloc(sizeof(float) * N * (size_t)out);
            ck_assert_int_eq(ops->op_run(be, op, (ert_rows){N, NULL}, x, y[gi]), ERT_OK);
            for (int first = 0; first < N; first += 1 + first % 5)
                for (int rows = 1; rows <= 70 && first + rows <= N; rows += rows < 8 ? 1 : 9) {
                    ck_assert_int_eq(ops->op_run(be, op, (ert_rows){rows, NULL}, x + (size_t)first * IN, got), ERT_OK);
                    const float *want = y[gi] + (size_t)first * out;
                    size_t i = 0;
                    while (i < (size_t)rows * out && memcmp(&got[i], &want[i], sizeof(float)) == 0) ++i;
                    ck_assert_msg(i == (size_t)rows * out, "%s, %d -> %d: row %d output %zu is %.9g in %d rows from %d, %.9g in %d",
                                  op->gemm, IN, out, first + (int)(i / out), i % out, i < (size_t)rows * out ? got[i] : 0.0f,
                                  rows, first, i < (size_t)rows * out ? want[i] : 0.0f, N);
                }
            ops->op_free(be, op);
        }
        const double err = tu_rel_err(y[0], y[1], N * out, 1e-5, 1e-4);
        ck_assert_msg(err <= 1.0, "%d -> %d: the two GEMMs differ by %.3g of the tolerance", IN, out, err);
        ck_assert_msg(memcmp(y[2], y[0], sizeof(float) * N * (size_t)out) == 0, "%d -> %d: padded rows differ", IN, out);
        free(w), free(b), free(x), free(y[0]), free(y[1]), free(y[2]), free(got);
    }
    /* a wrong setting is refused by name, and so is oneDNN where it cannot run */
    const ert_op_desc d = {.type = ERT_OP_LINEAR, .name = "fc", .in = 4, .out = 2, .weight = (float[8]){0},
                           .max_rows = 1};
    ert_op *op = NULL;
    ck_assert_int_eq(gemm_on("mkl", &d, &op), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("ERT_CPU_GEMM 'mkl': expected onednn or openblas"));
#ifndef ERT_WITH_ONEDNN
    ck_assert_int_eq(gemm_on("onednn", &d, &op), ERT_ERR_UNSUPPORTED);
    ck_assert(tu_error_has("'fc' cannot run on oneDNN (ERT_CPU_GEMM=onednn): built without oneDNN"));
#else
    if (__builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
        setenv("ERT_ONEDNN_MIN_ROWS", "3", 1);
        const ert_status st = gemm_on(NULL, &d, &op);
        unsetenv("ERT_ONEDNN_MIN_ROWS");
        ck_assert_int_eq(st, ERT_ERR_INVALID_ARGUMENT);
        ck_assert(tu_error_has("ERT_ONEDNN_MIN_ROWS='3': expected 1, 2, 4 or 8"));
    }
#endif
}
END_TEST

/* On oneDNN a GELU linear op adds its bias and applies GELU inside the matmul (oneDNN's
 * erf, onednn.c); on OpenBLAS linear.c does, with glibc's erff. Both must give PyTorch's
 * GELU within the tolerance, keep NaN, map +inf to +inf and -inf to NaN (x * Phi(x) at
 * -inf is -inf * 0), with and without a bias, for 600 columns (three ranges, the last
 * shorter) and rows of values from -8 to 8. */
START_TEST(gelu_linear_on_both_libraries) {
    enum { IN = 3, OUT = 600, ROWS = 9 };
    static float w[OUT * IN], b[OUT], x[ROWS * IN], y[2][ROWS * OUT];
    for (int o = 0; o < OUT; ++o) {
        for (int i = 0; i < IN; ++i) w[o * IN + i] = 0.25f + 0.25f * (float)((o + i) % 3); /* positive: inf stays inf */
        b[o] = 0.01f * (float)(o % 11) - 0.05f;
    }
    for (int r = 0; r < 6; ++r)
        for (int i = 0; i < IN; ++i) x[r * IN + i] = -8.0f + 16.0f * (float)(r * IN + i) / (6 * IN - 1);
    for (int i = 0; i < IN; ++i) x[6 * IN + i] = NAN, x[7 * IN + i] = 3e38f, x[8 * IN + i] = -3e38f;
    const char *gemms[] = {NULL, "openblas"};
    for (int biased = 0; biased <= 1; ++biased) {
        const ert_op_desc d = {.type = ERT_OP_LINEAR, .name = "fc", .in = IN, .out = OUT, .weight = w,
                               .bias = biased ? b : NULL, .max_rows = ROWS, .act = ERT_ACT_GELU};
        for (int gi = 0; gi < 2; ++gi) {
            ert_op *op;
            ck_assert_msg(gemm_on(gemms[gi], &d, &op) == ERT_OK, "%s", ert_last_error());
            ck_assert_int_eq(ops->op_run(be, op, (ert_rows){ROWS, NULL}, x, y[gi]), ERT_OK);
            /* on oneDNN (2 or 3) GELU runs inside the matmul: 3's needs the clip (onednn.c) */
            if (strncmp(op->gemm, "onednn", 6) == 0) ck_assert_msg(op->mm && ert_cpu_mm_fused(op->mm), "GELU not fused");
            for (int r = 0; r < ROWS; ++r)
                for (int o = 0; o < OUT; ++o) {
                    double z = biased ? b[o] : 0.0;
                    for (int i = 0; i < IN; ++i) z += (double)x[r * IN + i] * w[o * IN + i];
                    const double want = r == 6 || r == 8 ? NAN : r == 7 ? INFINITY : 0.5 * z * (1.0 + erf(z / sqrt(2.0)));
                    const float got = y[gi][r * OUT + o];
                    const int ok = isnan(want) ? isnan(got) : isinf(want) ? isinf(got) && got > 0
                                                                          : fabs(got - want) <= 1e-5 + 1e-4 * fabs(want);
                    ck_assert_msg(ok, "%s, bias %d: row %d column %d is %.9g, GELU %.9g", op->gemm, biased, r, o,
                                  (double)got, want);
                }
            ops->op_free(be, op);
        }
    }
}
END_TEST

/* The CPU ops run their tasks (blocks of samples, column ranges, blocks of rows) on the
 * backend's threads, each thread with its own scratch (kernels/cpu/parallel.c): an answer
 * must be the same bits for any thread count, for batches of one block, of several and of
 * a partial one. Linear outputs of 10, 256, 300 and 600 columns cover one range, exactly
 * one, and two and three ranges with a shorter last one; the average pool is padded (a
 * scratch plane per thread); layernorm and relu run 27 rows of 600 a task. */
START_TEST(cpu_ops_give_the_same_bits_on_any_thread_count) {
    const ert_conv_geom conv[] = {
        {.in_c = 4, .in_h = 9, .in_w = 9, .out_c = 6, .out_h = 5, .out_w = 5, .kh = 3, .kw = 3, .sh = 2, .sw = 2,
         .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 2},
        {.in_c = 1, .in_h = 28, .in_w = 28, .out_c = 32, .out_h = 28, .out_w = 28, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
         .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1},
        {.in_c = 32, .in_h = 14, .in_w = 14, .out_c = 32, .out_h = 7, .out_w = 7, .kh = 2, .kw = 2, .sh = 2, .sw = 2,
         .ph = 0, .pw = 0, .dh = 1, .dw = 1, .groups = 1}, /* as a max pool */
        {.in_c = 8, .in_h = 14, .in_w = 14, .out_c = 8, .out_h = 7, .out_w = 7, .kh = 3, .kw = 3, .sh = 2, .sw = 2,
         .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1}, /* as an average pool */
    };
    const int linear_out[] = {10, 256, 300, 600}, rows[] = {1, 5, 64, 65, 150}, threads[] = {2, 3, 7};
    enum { LINEAR_IN = 200, MAX_ROWS = 150, CASES = 10, ROW_WIDTH = 600 };
    ert_backend *bes[4];
    for (int t = 0; t < 4; ++t) {
        ert_backend_config cfg = {.device = 0, .max_rows = MAX_ROWS, .dtype = ERT_DTYPE_F32,
                                  .threads = t ? threads[t - 1] : 1};
        ck_assert_msg(ops->create(&cfg, &bes[t]) == ERT_OK, "%s", ert_last_error());
    }
    unsigned seed = 777u;
    for (int c = 0; c < CASES; ++c) {
        ert_op_desc d = {.name = "op", .max_rows = MAX_ROWS, .act = ERT_ACT_RELU};
        char what[64];
        if (c < 4) {
            d.type = ERT_OP_LINEAR, d.in = LINEAR_IN, d.out = linear_out[c];
            snprintf(what, sizeof what, "linear %d -> %d", d.in, d.out);
        } else if (c >= 8) { /* row-wise: tasks of whole rows (27 rows of 600) */
            d.type = c == 8 ? ERT_OP_LAYERNORM : ERT_OP_RELU, d.in = d.out = ROW_WIDTH, d.eps = 1e-5f;
            d.act = ERT_ACT_NONE;
            snprintf(what, sizeof what, "%s %d", c == 8 ? "layernorm" : "relu", ROW_WIDTH);
        } else {
            const ert_conv_geom *g = &conv[c - 4];
            d.type = c == 6 ? ERT_OP_MAXPOOL : c == 7 ? ERT_OP_AVGPOOL : ERT_OP_CONV2D, d.conv = *g;
            d.in = g->in_c * g->in_h * g->in_w, d.out = g->out_c * g->out_h * g->out_w;
            if (d.type != ERT_OP_CONV2D) d.act = ERT_ACT_NONE;
            snprintf(what, sizeof what, "%s %dx%dx%d -> %dx%dx%d", c == 6 ? "maxpool" : c == 7 ? "avgpool" : "conv2d",
                     g->in_c, g->in_h, g->in_w, g->out_c, g->out_h, g->out_w);
        }
        const size_t nw = d.type == ERT_OP_LINEAR      ? (size_t)d.out * d.in
                          : d.type == ERT_OP_CONV2D    ? (size_t)d.conv.out_c * (d.conv.in_c / d.conv.groups) * 9
                          : d.type == ERT_OP_LAYERNORM ? (size_t)d.in
                                                       : 0;
        const size_t nb = d.type == ERT_OP_LINEAR      ? (size_t)d.out
                          : d.type == ERT_OP_CONV2D    ? (size_t)d.conv.out_c
                          : d.type == ERT_OP_LAYERNORM ? (size_t)d.in
                                                       : 0;
        float *w = nw ? malloc(sizeof(float) * nw) : NULL, *b = nb ? malloc(sizeof(float) * nb) : NULL;
        for (size_t i = 0; i < nw; ++i) w[i] = (float)((seed = seed * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
        for (size_t i = 0; i < nb; ++i) b[i] = (float)((seed = seed * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
        d.weight = w, d.bias = b;
        float *x = malloc(sizeof(float) * (size_t)MAX_ROWS * d.in);
        float *want = malloc(sizeof(float) * (size_t)MAX_ROWS * d.out), *got = malloc(sizeof(float) * (size_t)MAX_ROWS * d.out);
        for (size_t i = 0; i < (size_t)MAX_ROWS * d.in; ++i)
            x[i] = (float)((seed = seed * 1103515245u + 12345u) >> 8) / 16777216.0f * 2.0f - 1.0f;
        ert_op *op[4];
        for (int t = 0; t < 4; ++t) ck_assert_msg(ops->op_new(bes[t], &d, &op[t]) == ERT_OK, "%s", ert_last_error());
        for (size_t ri = 0; ri < sizeof rows / sizeof *rows; ++ri) {
            const size_t n = (size_t)rows[ri] * d.out;
            for (size_t i = 0; i < n; ++i) want[i] = NAN;
            ck_assert_int_eq(ops->op_run(bes[0], op[0], (ert_rows){rows[ri], NULL}, x, want), ERT_OK);
            size_t i = 0;
            while (i < n && !isnan(want[i])) ++i;
            ck_assert_msg(i == n, "%s: output %zu not written", what, i);
            for (int t = 1; t < 4; ++t) {
                for (i = 0; i < n; ++i) got[i] = NAN;
                ck_assert_int_eq(ops->op_run(bes[t], op[t], (ert_rows){rows[ri], NULL}, x, got), ERT_OK);
                i = 0; /* the first differing output (one assertion: check records each) */
                while (i < n && memcmp(&got[i], &want[i], sizeof(float)) == 0) ++i;
                ck_assert_msg(i == n, "%s, %d rows: output %zu is %.9g on %d threads, %.9g on 1", what, rows[ri], i,
                              i < n ? got[i] : 0.0f, threads[t - 1], i < n ? want[i] : 0.0f);
            }
        }
        for (int t = 0; t < 4; ++t) ops->op_free(bes[t], op[t]);
        free(w), free(b), free(x), free(want), free(got);
    }
    for (int t = 0; t < 4; ++t) ops->destroy(bes[t]);
    ck_assert_int_ge(ert_cpu_widest_team(), 7); /* the tasks really ran on 7 threads */
}
END_TEST

/* Every pool is bit for bit the window loop (taps inside the input, row by row, left to
 * right, from -inf or 0; NaN wins a max; a NaN is any NaN: which operand's payload an
 * addition of two keeps is the compiler's choice), here written out, on values with NaN,
 * infinities, -0 and odd input sizes. conv.c takes other paths: 2x2 stride 2 (which
 * leaves the last row and column of an odd plane out), one window over the plane
 * (global; its average also on finite values only), and a padded plane copied into
 * scratch whose padding holds -inf or 0 (the taps the loop skips). */
START_TEST(pools_are_the_window_loop) {
    enum { C = 3, H = 17, W = 15, N = 4 };
    static float x[N * C * H * W], got[N * C * (H + 2) * (W + 2)];
    unsigned seed = 99u;
    for (int i = 0; i < N * C * H * W; ++i) {
        seed = seed * 1103515245u + 12345u;
        const int k = (int)(seed >> 24) % 32;
        /* finite values of magnitudes 2^-12 .. 2^12, so that another order of additions rounds differently */
        x[i] = k == 0 ? NAN : k == 1 ? INFINITY : k == 2 ? -INFINITY : k == 3 ? -0.0f
             : ldexpf((float)((seed >> 8) & 0xffff) / 65536.0f - 0.5f, (int)((seed >> 4) % 25) - 12);
    }
    /* without the non-finite values too: a global average of finite values is finite */
    static float fin[N * C * H * W];
    for (int i = 0; i < N * C * H * W; ++i) fin[i] = isfinite(x[i]) ? x[i] : 0.25f;
    /* kh, kw, sh, sw, ph, pw; finite input only */
    static const int cases[][7] = {{2, 2, 2, 2, 0, 0, 0}, {H, W, 1, 1, 0, 0, 0}, {H, W, 1, 1, 0, 0, 1},
                                   {2, 2, 2, 2, 1, 1, 0}, {3, 3, 2, 2, 1, 1, 0}, {3, 3, 1, 1, 0, 0, 0},
                                   {3, 3, 1, 1, 1, 1, 0}, {2, 3, 1, 2, 1, 1, 0}, {3, 2, 3, 2, 1, 0, 0}};
    for (size_t t = 0; t < 2 * sizeof cases / sizeof cases[0]; ++t) {
        const int *cs = cases[t / 2], is_max = (int)(t % 2);
        const float *in = cs[6] ? fin : x;
        const int kh = cs[0], kw = cs[1], sh = cs[2], sw = cs[3], ph = cs[4], pw = cs[5];
        const int oh = (H + 2 * ph - kh) / sh + 1, ow = (W + 2 * pw - kw) / sw + 1;
        const ert_conv_geom g = {.in_c = C, .in_h = H, .in_w = W, .out_c = C, .out_h = oh, .out_w = ow, .kh = kh,
                                 .kw = kw, .sh = sh, .sw = sw, .ph = ph, .pw = pw, .dh = 1, .dw = 1, .groups = 1};
        ert_op_desc d = {.type = is_max ? ERT_OP_MAXPOOL : ERT_OP_AVGPOOL, .name = "pool", .in = C * H * W,
                         .out = C * oh * ow, .conv = g, .max_rows = N};
        ert_op *op;
        ck_assert_int_eq(ops->op_new(be, &d, &op), ERT_OK);
        ck_assert_int_eq(ops->op_run(be, op, (ert_rows){N, NULL}, in, got), ERT_OK);
        int bad = -1;
        for (int p = 0; p < N * C && bad < 0; ++p)
            for (int oy = 0; oy < oh; ++oy)
                for (int ox = 0; ox < ow; ++ox) {
                    float acc = is_max ? -INFINITY : 0.0f;
                    for (int iy = sh * oy - ph; iy < sh * oy - ph + kh; ++iy)
                        for (int ix = sw * ox - pw; ix < sw * ox - pw + kw; ++ix) {
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            const float v = in[(size_t)p * H * W + iy * W + ix];
                            acc = is_max ? ((v > acc || v != v) ? v : acc) : acc + v;
                        }
                    if (!is_max) acc /= (float)(kh * kw);
                    const int at = p * oh * ow + oy * ow + ox;
                    const int same = isnan(acc) ? isnan(got[at]) : memcmp(&acc, &got[at], sizeof acc) == 0;
                    if (bad < 0 && !same) bad = at;
                }
        ck_assert_msg(bad < 0, "%dx%d stride %dx%d padding %dx%d %s: output %d differs from the window loop", kh, kw,
                      sh, sw, ph, pw, is_max ? "max" : "avg", bad);
        ops->op_free(be, op);
    }
}
END_TEST

/* A convolution on oneDNN may run the pool after it on each sample's output (backend
 * op_fuse; the session asks for every conv2d -> pool pair): the fused op's output is the
 * two ops' run apart, bit for bit, for max and average pools of each path (2x2, padded,
 * a general window, global), on inputs with NaN and inf, on any row count. Pairs it cannot
 * fuse are refused with ERT_ERR_UNSUPPORTED and no message, and so is every pair under
 * ERT_CPU_FUSE=0 (a bad value fails the backend's creation by message). */
START_TEST(conv_and_pool_fused_give_the_ops_bits) {
    enum { C = 3, H = 12, K = 8, N = 37 };
    static float x[N * C * H * H], w[K * C * 9], b[K], apart[N * K * H * H], fused[N * K * H * H],
        mid[N * K * H * H];
    unsigned seed = 7u;
    for (int i = 0; i < N * C * H * H; ++i) {
        seed = seed * 1103515245u + 12345u;
        const int k = (int)(seed >> 24) % 64;
        x[i] = k == 0 ? NAN : k == 1 ? INFINITY : (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    for (int i = 0; i < K * C * 9; ++i) w[i] = (float)((i * 37) % 19) / 19.0f - 0.5f;
    for (int k = 0; k < K; ++k) b[k] = (float)k / 8.0f - 0.4f;
    const ert_conv_geom cg = {.in_c = C, .in_h = H, .in_w = H, .out_c = K, .out_h = H, .out_w = H, .kh = 3, .kw = 3,
                              .sh = 1, .sw = 1, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1};
    const ert_op_desc cd = {.type = ERT_OP_CONV2D, .name = "conv", .in = C * H * H, .out = K * H * H, .conv = cg,
                            .act = ERT_ACT_RELU, .weight = w, .bias = b, .max_rows = N};
    /* kh, kw, sh, sw, ph, pw */
    static const int cases[][6] = {{2, 2, 2, 2, 0, 0}, {2, 2, 2, 2, 1, 1}, {3, 3, 2, 2, 1, 1}, {H, H, 1, 1, 0, 0}};
    const int before = ert_cpu_fused_ops();
    int fused_pairs = 0;
    for (size_t t = 0; t < 2 * sizeof cases / sizeof cases[0]; ++t) {
        const int *cs = cases[t / 2], is_max = (int)(t % 2);
        const int oh = (H + 2 * cs[4] - cs[0]) / cs[2] + 1, ow = (H + 2 * cs[5] - cs[1]) / cs[3] + 1;
        const ert_conv_geom pg = {.in_c = K, .in_h = H, .in_w = H, .out_c = K, .out_h = oh, .out_w = ow, .kh = cs[0],
                                  .kw = cs[1], .sh = cs[2], .sw = cs[3], .ph = cs[4], .pw = cs[5], .dh = 1, .dw = 1,
                                  .groups = 1};
        const ert_op_desc pd = {.type = is_max ? ERT_OP_MAXPOOL : ERT_OP_AVGPOOL, .name = "pool", .in = K * H * H,
                                .out = K * oh * ow, .conv = pg, .max_rows = N};
        ert_op *conv, *pool, *fconv, *fpool;
        ck_assert_int_eq(ops->op_new(be, &cd, &conv), ERT_OK);
        ck_assert_int_eq(ops->op_new(be, &pd, &pool), ERT_OK);
        ck_assert_int_eq(ops->op_new(be, &cd, &fconv), ERT_OK);
        ck_assert_int_eq(ops->op_new(be, &pd, &fpool), ERT_OK);
        const ert_status st = ops->op_fuse(be, fconv, fpool);
        if (strncmp(fconv->gemm, "onednn", 6) != 0) { /* on OpenBLAS (a build or CPU without oneDNN): apart */
            ck_assert_int_eq(st, ERT_ERR_UNSUPPORTED);
            printf("conv + pool: not fused, the convolution runs on %s\n", fconv->gemm);
        } else {
            ck_assert_int_eq(st, ERT_OK);
            fused_pairs++;
            /* a pool fused already, and a pool of another shape: refused */
            ck_assert_int_eq(ops->op_fuse(be, fconv, pool), ERT_ERR_UNSUPPORTED);
            ck_assert_int_eq(ops->op_fuse(be, conv, conv), ERT_ERR_UNSUPPORTED);
            for (const int *n = (const int[]){N, 1, 5, 0}; *n; ++n) {
                const size_t outs = (size_t)*n * K * oh * ow;
                for (size_t i = 0; i < outs; ++i) apart[i] = fused[i] = -7.0f;
                ck_assert_int_eq(ops->op_run(be, conv, (ert_rows){*n, NULL}, x, mid), ERT_OK);
                ck_assert_int_eq(ops->op_run(be, pool, (ert_rows){*n, NULL}, mid, apart), ERT_OK);
                ck_assert_int_eq(ops->op_run(be, fconv, (ert_rows){*n, NULL}, x, fused), ERT_OK);
                size_t at = 0; /* the same bits; a NaN only as a NaN (pool_blocked in conv.c) */
                while (at < outs && (memcmp(&apart[at], &fused[at], sizeof(float)) == 0 || (isnan(apart[at]) && isnan(fused[at]))))
                    ++at;
                ck_assert_msg(at == outs, "%s %dx%d stride %d padding %d, %d samples: output %zu is %.9g apart, %.9g fused",
                              is_max ? "max" : "avg", cs[0], cs[1], cs[2], cs[4], *n, at, at < outs ? apart[at] : 0.0,
                              at < outs ? fused[at] : 0.0);
            }
        }
        ops->op_free(be, fconv);
        ops->op_free(be, fpool);
        ops->op_free(be, conv);
        ops->op_free(be, pool);
    }
    ck_assert_int_eq(ert_cpu_fused_ops() - before, fused_pairs);
    printf("conv + pool fused: %d pairs, the same bits as apart\n", fused_pairs);

    /* ERT_CPU_FUSE=0: every pair runs apart; another value is refused */
    ert_backend *off = NULL;
    const ert_backend_config cfg = {.device = 0, .max_rows = N, .dtype = ERT_DTYPE_F32};
    setenv("ERT_CPU_FUSE", "yes", 1);
    ck_assert_int_eq(ops->create(&cfg, &off), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(ert_last_error(), "ERT_CPU_FUSE 'yes': expected 0 or 1"), "%s", ert_last_error());
    setenv("ERT_CPU_FUSE", "0", 1);
    ck_assert_int_eq(ops->create(&cfg, &off), ERT_OK);
    unsetenv("ERT_CPU_FUSE");
    const ert_op_desc pd = {.type = ERT_OP_MAXPOOL, .name = "pool", .in = K * H * H, .out = K * 6 * 6,
                            .conv = {K, H, H, K, 6, 6, 2, 2, 2, 2, 0, 0, 1, 1, 1}, .max_rows = N};
    ert_op *conv, *pool;
    ck_assert_int_eq(ops->op_new(off, &cd, &conv), ERT_OK);
    ck_assert_int_eq(ops->op_new(off, &pd, &pool), ERT_OK);
    ck_assert_int_eq(ops->op_fuse(off, conv, pool), ERT_ERR_UNSUPPORTED);
    ops->op_free(off, conv);
    ops->op_free(off, pool);
    ops->destroy(off);
}
END_TEST

/* The fused pool reads the convolution's output in oneDNN's layout: NHWC on AVX-512
 * (the case above), nChw8c on AVX2, nChw16c or nChw4c elsewhere. Each layout here, from a
 * sample in NCHW moved by hand (channels padded to a whole block), with and without relu
 * on the way, against (relu and) the pool op on the NCHW sample: the same bits, a NaN as a NaN;
 * 76 channels (blocks of 8 and 16 padded; NHWC wider than the pool's 64-channel chunks),
 * 2x2, padded, 3x3 stride 2 and global windows, max and average, NaN, inf and -0 in the
 * values. */
START_TEST(pools_read_every_blocked_layout) {
    enum { C = 76, H = 9, W = 7, CP = 80 };
    static float nchw[C * H * W], relued[C * H * W], blocked[CP * H * W], want[2][C * H * W], got[C * H * W];
    unsigned seed = 11u;
    for (int i = 0; i < C * H * W; ++i) {
        seed = seed * 1103515245u + 12345u;
        const int k = (int)(seed >> 24) % 32;
        nchw[i] = k == 0 ? NAN : k == 1 ? -INFINITY : k == 2 ? -0.0f : (float)((seed >> 8) & 0xffff) / 16384.0f - 2.0f;
        relued[i] = nchw[i] < 0.0f ? 0.0f : nchw[i];
    }
    static const int blocks[] = {1, 4, 8, 16, C}; /* NCHW, nChw4c, nChw8c, nChw16c, NHWC */
    static const int cases[][6] = {{2, 2, 2, 2, 0, 0}, {2, 2, 2, 2, 1, 1}, {3, 3, 2, 2, 1, 1}, {H, W, 1, 1, 0, 0}};
    int checked = 0;
    for (size_t t = 0; t < 2 * sizeof cases / sizeof cases[0]; ++t) {
        const int *cs = cases[t / 2], is_max = (int)(t % 2);
        const int oh = (H + 2 * cs[4] - cs[0]) / cs[2] + 1, ow = (W + 2 * cs[5] - cs[1]) / cs[3] + 1;
        const ert_op_desc pd = {.type = is_max ? ERT_OP_MAXPOOL : ERT_OP_AVGPOOL, .name = "pool", .in = C * H * W,
                                .out = C * oh * ow, .max_rows = 1,
                                .conv = {.in_c = C, .in_h = H, .in_w = W, .out_c = C, .out_h = oh, .out_w = ow,
                                         .kh = cs[0], .kw = cs[1], .sh = cs[2], .sw = cs[3], .ph = cs[4], .pw = cs[5],
                                         .dh = 1, .dw = 1, .groups = 1}};
        ert_op *pool;
        ck_assert_int_eq(ops->op_new(be, &pd, &pool), ERT_OK);
        ck_assert_int_eq(ops->op_run(be, pool, (ert_rows){1, NULL}, nchw, want[0]), ERT_OK);
        ck_assert_int_eq(ops->op_run(be, pool, (ert_rows){1, NULL}, relued, want[1]), ERT_OK);
        for (size_t bi = 0; bi < 2 * sizeof blocks / sizeof blocks[0]; ++bi) {
            const int relu = (int)(bi % 2);
            const float *w = want[relu];
            const int B = blocks[bi / 2];
            for (int i = 0; i < CP * H * W; ++i) blocked[i] = 12345.0f; /* the padded channels: never read */
            for (int c = 0; c < C; ++c)
                for (int p = 0; p < H * W; ++p) blocked[((size_t)(c / B) * H * W + p) * B + c % B] = nchw[c * H * W + p];
            for (int i = 0; i < C * oh * ow; ++i) got[i] = -7.0f;
            ert_cpu_pool_blocked(pool, blocked, B, relu, got);
            for (int i = 0; i < C * oh * ow; ++i)
                ck_assert_msg(memcmp(&w[i], &got[i], sizeof(float)) == 0 || (isnan(w[i]) && isnan(got[i])),
                              "%s %dx%d stride %d padding %d, block %d, relu %d: output %d is %.9g, not %.9g",
                              is_max ? "max" : "avg", cs[0], cs[1], cs[2], cs[4], B, relu, i, got[i], w[i]);
            checked++;
        }
        ops->op_free(be, pool);
    }
    ck_assert_int_eq(checked, 80);
}
END_TEST

/* The session asks to fuse every conv2d -> pool pair of a sequence: in a body, and in an
 * exit head (conv, global average pool, flatten, linear). Its answers are the unfused
 * session's, bit for bit (ERT_CPU_FUSE=0), in compact and masked mode. */
START_TEST(a_session_fuses_conv_and_pool_pairs) {
    static const char *config =
        "{\"format\":\"exitrt-model\",\"version\":1,\"name\":\"allconv\","
        "\"input\":{\"shape\":[2,6,6],\"mean\":[0.5,0.5],\"std\":[0.25,0.25]},\"classes\":[\"a\",\"b\",\"c\"],"
        "\"stages\":[{\"ops\":[{\"op\":\"conv2d\",\"in_channels\":2,\"out_channels\":4,\"kernel\":3,\"padding\":1,"
        "\"activation\":\"relu\",\"weight\":\"c0\",\"bias\":\"b0\"},{\"op\":\"maxpool\",\"kernel\":2,\"stride\":2}],"
        "\"exit\":[{\"op\":\"conv2d\",\"in_channels\":4,\"out_channels\":3,\"kernel\":3,\"padding\":1,\"weight\":\"h0\","
        "\"bias\":\"hb0\"},{\"op\":\"global_avgpool\"},{\"op\":\"flatten\"},"
        "{\"op\":\"linear\",\"in\":3,\"out\":3,\"weight\":\"l0\"}]},"
        "{\"ops\":[{\"op\":\"conv2d\",\"in_channels\":4,\"out_channels\":4,\"kernel\":3,\"padding\":1,"
        "\"activation\":\"relu\",\"weight\":\"c1\"}],"
        "\"exit\":[{\"op\":\"global_avgpool\"},{\"op\":\"flatten\"},{\"op\":\"linear\",\"in\":4,\"out\":3,\"weight\":\"l1\"}]}]}";
    static float c0[4 * 2 * 9], b0[4], h0[3 * 4 * 9], hb0[3], c1[4 * 4 * 9], l1[3 * 4], l0[3 * 3];
    float *all[] = {c0, b0, h0, hb0, c1, l1, l0};
    const size_t sizes[] = {4 * 2 * 9, 4, 3 * 4 * 9, 3, 4 * 4 * 9, 3 * 4, 3 * 3};
    for (int t = 0; t < 7; ++t)
        for (size_t i = 0; i < sizes[t]; ++i) all[t][i] = (float)(((size_t)t * 131 + i * 29) % 23) / 23.0f - 0.45f;
    const tu_tensor ts[7] = {{"c0", "F32", 4, {4, 2, 3, 3}, c0, sizeof c0, {0, 0}},
                             {"b0", "F32", 1, {4}, b0, sizeof b0, {0, 0}},
                             {"h0", "F32", 4, {3, 4, 3, 3}, h0, sizeof h0, {0, 0}},
                             {"hb0", "F32", 1, {3}, hb0, sizeof hb0, {0, 0}},
                             {"c1", "F32", 4, {4, 4, 3, 3}, c1, sizeof c1, {0, 0}},
                             {"l1", "F32", 2, {3, 4}, l1, sizeof l1, {0, 0}},
                             {"l0", "F32", 2, {3, 3}, l0, sizeof l0, {0, 0}}};
    const char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    tu_write_text(path, config);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    tu_write_safetensors(path, ts, 7);
    ert_model *m = NULL;
    ck_assert_msg(ert_model_load(dir, &m) == ERT_OK, "%s", ert_last_error());
    enum { N = 29, D = 2 * 6 * 6 };
    static float x[N * D];
    for (int i = 0; i < N * D; ++i) x[i] = (float)((i * 7919) % 1000) / 1000.0f;
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("confidence:0.4", &p), ERT_OK);
    static int32_t pred[2][N], ex[2][N];
    static float conf[2][N], lg[2][N * 3];
    for (int mode = 0; mode < 2; ++mode) {
        for (int f = 0; f < 2; ++f) {
            ert_session_options o = ert_session_options_default();
            o.max_batch = N;
            o.mode = mode ? ERT_MODE_MASKED : ERT_MODE_COMPACT;
            setenv("ERT_CPU_FUSE", f ? "1" : "0", 1);
            const int before = ert_cpu_fused_ops();
            ert_session *s = NULL;
            ck_assert_msg(ert_session_new(m, &o, &s) == ERT_OK, "%s", ert_last_error());
            unsetenv("ERT_CPU_FUSE");
            /* on oneDNN: the body's pair and the head's; on OpenBLAS none */
            const int fused = ert_cpu_fused_ops() - before;
            ck_assert_int_eq(fused, f && strstr(ert_session_device(s), "oneDNN") ? 2 : 0);
            ert_batch b = {.input = x, .n = N};
            ert_outputs out = {pred[f], ex[f], conf[f], lg[f]};
            ck_assert_msg(ert_session_run(s, p, &b, &out) == ERT_OK, "%s", ert_last_error());
            ert_session_free(s);
            if (f) printf("all-conv model, %s mode: %d pairs fused\n", mode ? "masked" : "compact", fused);
        }
        ck_assert(memcmp(pred[0], pred[1], sizeof pred[0]) == 0);
        ck_assert(memcmp(ex[0], ex[1], sizeof ex[0]) == 0);
        ck_assert(memcmp(conf[0], conf[1], sizeof conf[0]) == 0);
        ck_assert(memcmp(lg[0], lg[1], sizeof lg[0]) == 0);
        int exits[2] = {0, 0};
        for (int i = 0; i < N; ++i) exits[ex[0][i] > 0]++;
        ck_assert_msg(mode || (exits[0] > 0 && exits[1] > 0), "compact: %d left at exit 0, %d later: both heads must run",
                      exits[0], exits[1]);
    }
    ert_policy_free(p);
    ert_model_free(m);
}
END_TEST

/* libgomp is not fork-safe: after a process ran an op on several threads, a forked
 * child's first team would wait for threads that did not come along. The child runs its
 * tasks on one thread instead, with the same answers; an op it makes itself (oneDNN's
 * primitives created there) too. A linear op and a convolution (whose oneDNN reorders
 * run on their caller: none starts a team of its own). */
START_TEST(a_forked_child_still_runs_ops) {
    enum { IN = 200, OUT = 600, ROWS = 150, C = 8, K = 16, H = 12 };
    static float w[OUT * IN], x[ROWS * IN], want[2][ROWS * OUT], got[ROWS * OUT];
    for (int i = 0; i < OUT * IN; ++i) w[i] = (float)(i % 17) / 17.0f - 0.5f;
    for (int i = 0; i < ROWS * IN; ++i) x[i] = (float)(i % 13) / 13.0f - 0.5f;
    ert_backend *b2;
    ert_backend_config cfg = {.device = 0, .max_rows = ROWS, .dtype = ERT_DTYPE_F32, .threads = 2};
    ck_assert_int_eq(ops->create(&cfg, &b2), ERT_OK);
    /* a linear op, and a convolution (8 -> 16 channels, 12x12: 15 samples fill x) */
    const ert_conv_geom g = {.in_c = C, .in_h = H, .in_w = H, .out_c = K, .out_h = H, .out_w = H, .kh = 3, .kw = 3,
                             .sh = 1, .sw = 1, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1};
    const ert_op_desc d[2] = {
        {.type = ERT_OP_LINEAR, .name = "l", .in = IN, .out = OUT, .weight = w, .max_rows = ROWS},
        {.type = ERT_OP_CONV2D, .name = "c", .in = C * H * H, .out = K * H * H, .weight = w, .conv = g, .max_rows = 15,
         .act = ERT_ACT_RELU}};
    const int rows[2] = {ROWS, 15};
    ert_op *op[2];
    for (int k = 0; k < 2; ++k) {
        ck_assert_msg(ops->op_new(b2, &d[k], &op[k]) == ERT_OK, "%s", ert_last_error());
        printf("forked child: %s on %s\n", d[k].name, op[k]->gemm);
        /* a team of 2 exists now */
        ck_assert_int_eq(ops->op_run(b2, op[k], (ert_rows){rows[k], NULL}, x, want[k]), ERT_OK);
    }
    fflush(stdout);
    const pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        alarm(10); /* a hang ends as SIGALRM, not a stuck test */
        int ok = 1;
        for (int k = 0; k < 2; ++k) {
            const size_t n = (size_t)rows[k] * (size_t)d[k].out * sizeof(float);
            ok = ok && ops->op_run(b2, op[k], (ert_rows){rows[k], NULL}, x, got) == ERT_OK && memcmp(got, want[k], n) == 0;
            ert_op *again = NULL;
            memset(got, 0, sizeof got);
            ok = ok && ops->op_new(b2, &d[k], &again) == ERT_OK &&
                 ops->op_run(b2, again, (ert_rows){rows[k], NULL}, x, got) == ERT_OK && memcmp(got, want[k], n) == 0;
        }
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child %s %d",
                  WIFEXITED(status) ? "exited with" : "died of signal", WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    for (int k = 0; k < 2; ++k) ops->op_free(b2, op[k]);
    ops->destroy(b2);
}
END_TEST

/* Writes `text` to root/rel, making its directories. */
static void put(const char *root, const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')); ++p) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    tu_write_text(path, text);
}

/* Replaces each '@' of `text` with `root`. */
static void at_root(const char *text, const char *root, char *out, size_t cap) {
    size_t n = 0;
    for (const char *p = text; *p; ++p) {
        const size_t add = *p == '@' ? strlen(root) : 1;
        ck_assert_uint_lt(n + add, cap);
        memcpy(out + n, *p == '@' ? root : p, add);
        n += add;
    }
    out[n] = '\0';
}

/* The memory and CPU limits come from the process's own cgroup and every ancestor, the
 * tightest winning (a Slurm job's or a systemd unit's limit sits below the root), in
 * both cgroup versions, where /proc/self/mountinfo says each hierarchy is mounted; a
 * mount that shows a cgroup below the hierarchy's root (a container without its own
 * cgroup namespace) is its top level, and what lies under it is read only on the
 * process's own path (a sibling's limit is not the process's). A level without its file
 * counts for nothing. Fake hierarchies in a temporary directory. */
START_TEST(cgroup_limits_come_from_every_level) {
    const char *root = tu_tmpdir();
    static const char *const files[][2] = {
        /* v2: memory on the slice, the CPU quota on the job; "max" means none */
        {"v2/memory.max", "max\n"},
        {"v2/slice/memory.max", "1073741824\n"},
        {"v2/slice/job/memory.max", "max\n"},
        {"v2/slice/job/cpu.max", "150000 100000\n"},
        {"v2/slice/cpu.max", "max 100000\n"},
        /* v1: each controller its own hierarchy, "cpu,cpuacct" mounted together; v1's
         * "unlimited" is none */
        {"v1/memory/memory.limit_in_bytes", "9223372036854771712\n"},
        {"v1/memory/process_api/x/memory.limit_in_bytes", "536870912\n"},
        {"v1/cpu/cpu.cfs_quota_us", "300000\n"},
        {"v1/cpu/cpu.cfs_period_us", "100000\n"},
        {"v1/cpu/grp/cpu.cfs_quota_us", "-1\n"},
        {"v1/cpu/grp/cpu.cfs_period_us", "100000\n"},
        /* a container's cgroup mounted as the top (v2), with a cgroup of its own inside */
        {"box/memory.max", "2147483648\n"},
        {"box/cpu.max", "400000 100000\n"},
        {"box/inner/memory.max", "1073741824\n"},
        /* the same in v1 (systemd inside the container): its system.slice is a child of the
         * container's cgroup, not an ancestor of the process's, whose path has the same name */
        {"dock/memory.limit_in_bytes", "2147483648\n"},
        {"dock/system.slice/memory.limit_in_bytes", "104857600\n"},
    };
    for (size_t i = 0; i < sizeof files / sizeof *files; ++i) put(root, files[i][0], files[i][1]);
    static const char v2[] = "30 1 0:26 / @/v2 rw,nosuid - cgroup2 cgroup2 rw\n",
                      v1[] = "32 31 0:29 / @/v1/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n"
                             "35 31 0:32 / @/v1/memory rw - cgroup cgroup rw,memory\n"
                             "40 31 0:37 / @/v1/systemd rw - cgroup cgroup rw,name=systemd\n"
                             "41 31 0:38 / @/v1/unified rw - cgroup2 cgroup2 rw\n",
                      box[] = "30 1 0:26 /docker/abc @/box rw - cgroup2 cgroup2 rw\n",
                      dock[] = "35 31 0:32 /system.slice/docker-abc.scope @/dock rw - cgroup cgroup rw,memory\n";
    const struct {
        const char *self, *mountinfo;
        size_t memory;
        int cpus;
    } cases[] = {
        {"0::/slice/job\n", v2, (size_t)1 << 30, 2},
        {"0::/slice/job/\n", v2, (size_t)1 << 30, 2},
        {"0::/slice\n", v2, (size_t)1 << 30, 0},
        {"0::/\n", v2, SIZE_MAX, 0},
        {"12:pids:/x\n4:memory:/process_api/x\n3:cpu,cpuacct:/grp\n0::/\n", v1, (size_t)1 << 29, 3},
        {"4:memory:/process_api/x (deleted)\n", v1, (size_t)1 << 29, 0},
        {"4:memory:/\n", v1, SIZE_MAX, 0},
        {"0::/docker/abc\n", box, (size_t)1 << 31, 4},
        {"0::/docker/abc/inner\n", box, (size_t)1 << 30, 4},
        {"0::/docker/abc/../v2/slice\n", box, (size_t)1 << 31, 4}, /* not below the mount: its top only */
        {"0::/elsewhere\n", box, (size_t)1 << 31, 4},
        {"4:memory:/system.slice/docker-abc.scope\n", dock, (size_t)1 << 31, 0},
        {"0::/slice/job\n", "", SIZE_MAX, 0},
        {"", v2, SIZE_MAX, 0},
        {"garbage\n:\n::\n", v2, SIZE_MAX, 0},
        {"0::/slice/job\n", "garbage\n - \n1 2 3\n", SIZE_MAX, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; ++i) {
        char mountinfo[1024];
        at_root(cases[i].mountinfo, root, mountinfo, sizeof mountinfo);
        const ert_cgroup_limits lim = ert_cgroup_read(cases[i].self, mountinfo);
        ck_assert_msg(lim.memory == cases[i].memory && lim.cpus == cases[i].cpus,
                      "case %zu ('%s'): memory %zu, cpus %d; expected %zu, %d", i, cases[i].self, lim.memory, lim.cpus,
                      cases[i].memory, cases[i].cpus);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* A convolution's im2col writes only the places its input covers and relies on the
 * padding's staying 0, so its scratch is its own (cpu.h), never shared with another op
 * of the backend. A linear op's last, partial block copies its NaN rows into its
 * scratch; a padded, dilated, grouped convolution run after it gives the bits it gave
 * before, and the direct convolution's values. */
START_TEST(ops_do_not_read_what_another_op_left_in_the_scratch) {
    enum { LIN_IN = 2048, LIN_OUT = 16, LIN_ROWS = 63, N = 7 };
    const ert_conv_geom g = {.in_c = 4, .in_h = 9, .in_w = 8, .out_c = 6, .out_h = 9, .out_w = 8, .kh = 3, .kw = 3,
                             .sh = 1, .sw = 1, .ph = 2, .pw = 2, .dh = 2, .dw = 2, .groups = 2};
    const int in = g.in_c * g.in_h * g.in_w, out = g.out_c * g.out_h * g.out_w;
    static float lw[LIN_OUT * LIN_IN], lx[LIN_ROWS * LIN_IN], ly[LIN_ROWS * LIN_OUT];
    static float w[6 * 2 * 9], b[6], x[N * 4 * 9 * 8], first[N * 6 * 9 * 8], after[N * 6 * 9 * 8], ref[6 * 9 * 8];
    unsigned seed = 4242u;
    for (size_t i = 0; i < sizeof w / sizeof *w; ++i) w[i] = (float)((seed = seed * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
    for (int i = 0; i < 6; ++i) b[i] = 0.05f * (float)i - 0.1f;
    for (int i = 0; i < N * in; ++i) x[i] = (float)((seed = seed * 1103515245u + 12345u) >> 8) / 16777216.0f - 0.5f;
    for (int i = 0; i < LIN_ROWS * LIN_IN; ++i) lx[i] = NAN;
    ert_backend *b1;
    ert_backend_config cfg = {.device = 0, .max_rows = 64, .dtype = ERT_DTYPE_F32, .threads = 1};
    ck_assert_int_eq(ops->create(&cfg, &b1), ERT_OK);
    ert_op_desc cd = {.type = ERT_OP_CONV2D, .name = "conv", .in = in, .out = out, .weight = w, .bias = b, .conv = g,
                      .max_rows = N, .act = ERT_ACT_NONE};
    ert_op_desc ld = {.type = ERT_OP_LINEAR, .name = "linear", .in = LIN_IN, .out = LIN_OUT, .weight = lw, .max_rows = 64};
    ert_op *conv, *lin;
    ck_assert_int_eq(ops->op_new(b1, &cd, &conv), ERT_OK);
    ck_assert_int_eq(ops->op_new(b1, &ld, &lin), ERT_OK);
    ck_assert_int_eq(ops->op_run(b1, conv, (ert_rows){N, NULL}, x, first), ERT_OK);
    ck_assert_int_eq(ops->op_run(b1, lin, (ert_rows){LIN_ROWS, NULL}, lx, ly), ERT_OK);
    ck_assert(isnan(ly[0]));
    ck_assert_int_eq(ops->op_run(b1, conv, (ert_rows){N, NULL}, x, after), ERT_OK);
    for (int r = 0; r < N; ++r) {
        direct_conv(&g, w, b, 0, x + (size_t)r * in, ref);
        const double err = tu_rel_err(after + (size_t)r * out, ref, out, 1e-5, 1e-4);
        ck_assert_msg(err <= 1.0, "sample %d: maxdiff ratio %.3g against the direct convolution", r, err);
    }
    int i = 0;
    while (i < N * out && memcmp(&after[i], &first[i], sizeof(float)) == 0) ++i;
    ck_assert_msg(i == N * out, "output %d: %.9g after the linear op, %.9g before", i, i < N * out ? after[i] : 0.0f,
                  i < N * out ? first[i] : 0.0f);
    ops->op_free(b1, conv);
    ops->op_free(b1, lin);
    ops->destroy(b1);
}
END_TEST

/* The scratch grows with the thread count, so it counts against the memory the CPU
 * sessions may hold: too many threads for ERT_CPU_MEMORY_LIMIT are refused when the op
 * is made, with what to change; fewer fit, and a destroyed backend gives its share back.
 * On OpenBLAS, whose scratch (a block of samples' im2col columns) is the larger. */
START_TEST(scratch_counts_against_the_memory_limit) {
    setenv("ERT_CPU_GEMM", "openblas", 1);
    /* 64 -> 8 channels at 14x14, 3x3: (576 + 8) x 512 floats, 1.14 MiB per thread */
    const ert_conv_geom g = {.in_c = 64, .in_h = 14, .in_w = 14, .out_c = 8, .out_h = 14, .out_w = 14, .kh = 3,
                             .kw = 3, .sh = 1, .sw = 1, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1};
    static float w[8 * 64 * 9];
    ert_op_desc d = {.type = ERT_OP_CONV2D, .name = "stage0.conv1", .in = 64 * 196, .out = 8 * 196, .weight = w,
                     .conv = g, .max_rows = 8};
    setenv("ERT_CPU_MEMORY_LIMIT", "100000000", 1); /* 95.4 MB */
    for (int round = 0; round < 3; ++round) {
        const int threads = round == 1 ? 128 : 64; /* 73 MB fits; 146 MB does not */
        ert_backend *b1;
        ert_backend_config cfg = {.device = 0, .max_rows = 8, .dtype = ERT_DTYPE_F32, .threads = threads};
        ck_assert_int_eq(ops->create(&cfg, &b1), ERT_OK);
        ert_op *op = NULL;
        const ert_status st = ops->op_new(b1, &d, &op);
        if (threads == 128) {
            ck_assert_int_eq(st, ERT_ERR_OUT_OF_MEMORY);
            ck_assert_msg(strstr(ert_last_error(), "scratch for 128 threads: cpu backend: 146.0 MB more") &&
                              strstr(ert_last_error(), "more than ERT_CPU_MEMORY_LIMIT's 95.4 MB (use fewer threads: "
                                                       "--threads, ERT_CPU_THREADS or the session option threads)"),
                          "%s", ert_last_error());
        } else {
            ck_assert_msg(st == ERT_OK, "%d threads: %s", threads, ert_last_error());
            ops->op_free(b1, op);
        }
        ops->destroy(b1);
    }
    unsetenv("ERT_CPU_MEMORY_LIMIT");
    unsetenv("ERT_CPU_GEMM");
}
END_TEST

/* A session left to the default thread count that does not fit the memory limit is made
 * again on half as many threads, down to one, and says so; a count that was set is kept,
 * or refused. fmnist-cnn on OpenBLAS at batch 16 under a 16 MB limit: its buffers fit
 * beside one thread's scratch, not beside two threads'. */
START_TEST(default_threads_halve_to_fit_the_memory_limit) {
    unsetenv("ERT_CPU_THREADS");
    setenv("ERT_CPU_GEMM", "openblas", 1);
    int n = 0;
    ck_assert_int_eq(ert_cpu_threads_default(&n), ERT_OK);
    ert_model *m = NULL;
    ck_assert_msg(ert_model_load(tu_path("models/fmnist-cnn"), &m) == ERT_OK, "%s", ert_last_error());
    ert_session_options o = ert_session_options_default();
    o.max_batch = 16;
    float x[784 * 16];
    for (int i = 0; i < 784 * 16; ++i) x[i] = (float)((i * 37) % 101) / 100.0f;
    int32_t pred[2][16], ex[2][16];
    float conf[2][16];
    /* the answers with every thread and no limit */
    ert_session *s = NULL;
    ck_assert_int_eq(ert_session_new(m, &o, &s), ERT_OK);
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("confidence:0.9", &p), ERT_OK);
    ert_batch bt = {.input = x, .n = 16};
    ck_assert_int_eq(ert_session_run(s, p, &bt, &(ert_outputs){pred[0], ex[0], conf[0], NULL}), ERT_OK);
    ck_assert_str_eq(ert_session_device(s), tu_cpu_name(n)); /* the name says the count in force */
    ert_session_free(s);

    setenv("ERT_CPU_MEMORY_LIMIT", "16000000", 1);
    s = NULL;
    ck_assert_msg(ert_session_new(m, &o, &s) == ERT_OK, "%s", ert_last_error());
    const int got = ert_session_get_options(s).threads;
    if (n > 1) {
        ck_assert_msg(got == 1, "%d threads, expected 1 (of %d)", got, n);
        char want[64];
        snprintf(want, sizeof want, "CPU threads lowered from %d to 1 to fit the memory limit", n);
        ck_assert_msg(strstr(ert_session_exec_note(s), want), "%s", ert_session_exec_note(s));
    } else {
        printf("default_threads_halve_to_fit_the_memory_limit: 1 CPU here, nothing to lower\n");
        ck_assert_str_eq(ert_session_exec_note(s), "");
    }
    ck_assert_int_eq(ert_session_run(s, p, &bt, &(ert_outputs){pred[1], ex[1], conf[1], NULL}), ERT_OK);
    /* the same answers on fewer threads, bit for bit */
    ck_assert(memcmp(pred[0], pred[1], sizeof pred[0]) == 0 && memcmp(ex[0], ex[1], sizeof ex[0]) == 0 &&
              memcmp(conf[0], conf[1], sizeof conf[0]) == 0);
    ck_assert_str_eq(ert_session_device(s), tu_cpu_name(1));
    /* the options in force open the same session again: their device is "cpu", not the name */
    ert_session_options in_force = ert_session_get_options(s);
    char device[16];
    snprintf(device, sizeof device, "%s", in_force.device); /* the session's string */
    in_force.device = device;
    ck_assert_str_eq(device, "cpu");
    ert_session_free(s);
    ck_assert_msg(ert_session_new(m, &in_force, &s) == ERT_OK, "%s", ert_last_error());
    ck_assert_str_eq(ert_session_device(s), tu_cpu_name(1));
    ck_assert_str_eq(ert_session_exec_note(s), "");
    ert_session_free(s);

    /* two threads asked for, by the option or the environment: refused, with what to change */
    for (int by_env = 0; by_env < 2; ++by_env) {
        ert_session_options t = o;
        if (by_env) setenv("ERT_CPU_THREADS", "2", 1);
        else t.threads = 2;
        s = NULL;
        ck_assert_int_eq(ert_session_new(m, &t, &s), ERT_ERR_OUT_OF_MEMORY);
        ck_assert_msg(tu_error_has("buffers for 16 rows: cpu backend:") && tu_error_has("(lower the batch size)"), "%s",
                      ert_last_error());
        unsetenv("ERT_CPU_THREADS");
    }
    unsetenv("ERT_CPU_MEMORY_LIMIT");
    unsetenv("ERT_CPU_GEMM");
    ert_policy_free(p);
    ert_model_free(m);
}
END_TEST

/* A refused op gives back what it held before the refusal (its weights and bias): after
 * it, a block of all but 4 KiB of the limit fits (the bias alone takes 4 KiB). On
 * OpenBLAS, whose scratch per thread is large (on oneDNN it is 64 KB). */
START_TEST(a_refused_op_gives_its_blocks_back) {
    setenv("ERT_CPU_GEMM", "openblas", 1);
    enum { IN = 1000, OUT = 1000 }; /* 4 MB of weights; 512 KB of scratch per thread */
    float *w = calloc((size_t)IN * OUT, sizeof *w), *bias = calloc(OUT, sizeof *bias);
    ck_assert(w && bias);
    const ert_op_desc d = {.type = ERT_OP_LINEAR, .name = "fc", .in = IN, .out = OUT, .weight = w, .bias = bias,
                           .max_rows = 1};
    setenv("ERT_CPU_MEMORY_LIMIT", "100000000", 1);
    const ert_backend_config cfg = {.device = 0, .max_rows = 1, .dtype = ERT_DTYPE_F32, .threads = 256};
    ert_backend *b1;
    ck_assert_int_eq(ops->create(&cfg, &b1), ERT_OK);
    ert_op *op = NULL;
    ck_assert_int_eq(ops->op_new(b1, &d, &op), ERT_ERR_OUT_OF_MEMORY); /* 128 MB of scratch */
    ck_assert(tu_error_has("scratch for 256 threads"));
    void *p = NULL;
    ck_assert_msg(ops->alloc(b1, 100000000 - 4160, &p) == ERT_OK, "%s", ert_last_error()); /* 256 bytes spare */
    ops->release(b1, p);
    ops->destroy(b1);
    unsetenv("ERT_CPU_MEMORY_LIMIT");
    unsetenv("ERT_CPU_GEMM");
    free(w);
    free(bias);
}
END_TEST

/* The weights are counted too, on either library (oneDNN holds them packed), of a linear
 * op and of a convolution: a second copy of a 64 MiB matrix is refused while the first is
 * held, and fits once it is freed. */
START_TEST(weights_count_against_the_memory_limit) {
    enum { N = 4096 };
    float *w = calloc((size_t)N * N, sizeof *w), *x = calloc(N, sizeof *x), *y = calloc(N, sizeof *y);
    ck_assert(w && x && y);
    w[(size_t)N * N - 1] = 3.5f;
    x[N - 1] = 1.0f;
    /* a linear op, and the same weights as a 1x1 convolution of a 1x1 image */
    const ert_conv_geom g = {.in_c = N, .in_h = 1, .in_w = 1, .out_c = N, .out_h = 1, .out_w = 1, .kh = 1, .kw = 1,
                             .sh = 1, .sw = 1, .dh = 1, .dw = 1, .groups = 1};
    const ert_op_desc ds[2] = {
        {.type = ERT_OP_LINEAR, .name = "head.weight", .in = N, .out = N, .weight = w, .max_rows = 1},
        {.type = ERT_OP_CONV2D, .name = "conv.weight", .in = N, .out = N, .weight = w, .conv = g, .max_rows = 1}};
    setenv("ERT_CPU_MEMORY_LIMIT", "100000000", 1); /* 95.4 MB */
    for (int t = 0; t < 4; ++t) {
        const ert_op_desc d = ds[t / 2];
        const int gemm = t % 2;
        if (gemm) setenv("ERT_CPU_GEMM", "openblas", 1);
        ert_backend *b[2];
        ert_op *op[2] = {NULL, NULL};
        ert_backend_config cfg = {.device = 0, .max_rows = 1, .dtype = ERT_DTYPE_F32, .threads = 1};
        for (int i = 0; i < 2; ++i) ck_assert_int_eq(ops->create(&cfg, &b[i]), ERT_OK);
        ck_assert_msg(ops->op_new(b[0], &d, &op[0]) == ERT_OK, "%s", ert_last_error());
        printf("%s: weights on %s\n", d.name, op[0]->gemm);
        ck_assert_int_eq(ops->op_new(b[1], &d, &op[1]), ERT_ERR_OUT_OF_MEMORY);
        ck_assert_msg(strstr(ert_last_error(), " MB more would make this process's CPU sessions hold") &&
                          strstr(ert_last_error(), "more than ERT_CPU_MEMORY_LIMIT's 95.4 MB (the weights"),
                      "%s", ert_last_error());
        ops->op_free(b[0], op[0]);
        ck_assert_msg(ops->op_new(b[1], &d, &op[1]) == ERT_OK, "%s", ert_last_error());
        ck_assert_int_eq(ops->op_run(b[1], op[1], (ert_rows){1, NULL}, x, y), ERT_OK);
        ck_assert_float_eq(y[N - 1], 3.5f); /* the copy is whole */
        ck_assert_float_eq(y[0], 0.0f);
        ops->op_free(b[1], op[1]);
        for (int i = 0; i < 2; ++i) ops->destroy(b[i]);
        unsetenv("ERT_CPU_GEMM");
    }
    unsetenv("ERT_CPU_MEMORY_LIMIT");
    free(w), free(x), free(y);
}
END_TEST

/* The default thread count respects a container's CPU quota (docker --cpus=N). */
START_TEST(cpu_quota_gives_the_thread_count) {
    const struct {
        const char *quota, *period;
        int cpus;
    } cases[] = {{"200000", "100000", 2}, {"150000", "100000", 2}, {"50000", "100000", 1}, {"max", "100000", 0},
                 {"-1", "100000", 0},     {"abc", "100000", 0},    {"100000", "0", 0},    {"1e12", "1", 256},
                 {"", "", 0},             {"nan", "1", 0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; ++i)
        ck_assert_msg(ert_cpu_quota_parse(cases[i].quota, cases[i].period) == cases[i].cpus, "'%s' '%s': %d, expected %d",
                      cases[i].quota, cases[i].period, ert_cpu_quota_parse(cases[i].quota, cases[i].period),
                      cases[i].cpus);
}
END_TEST

/* Shape errors in image models name the op and the shapes. */
START_TEST(image_shape_errors) {
    static float w[4 * 2 * 3 * 3], wl[5 * 4 * 4 * 4];
    tu_tensor t[2] = {{"cw", "F32", 4, {4, 2, 3, 3}, w, sizeof w, {0, 0}},
                      {"lw", "F32", 2, {5, 64}, wl, sizeof wl, {0, 0}}};
    struct {
        const char *ops, *needle;
    } cases[] = {
        {"{\"op\":\"linear\",\"in\":72,\"out\":5,\"weight\":\"lw\"}", "linear needs a vector input, not a [2, 6, 6] image"},
        {"{\"op\":\"conv2d\",\"in_channels\":3,\"out_channels\":4,\"kernel\":3,\"weight\":\"cw\"}",
         "conv2d has in_channels = 3 but its input has 2 channels"},
        {"{\"op\":\"maxpool\",\"kernel\":7}", "a 7x7 window does not fit the 6x6 input"},
        {"{\"op\":\"conv2d\",\"in_channels\":2,\"out_channels\":4,\"kernel\":3,\"groups\":3,\"weight\":\"cw\"}",
         "groups = 3 must divide"},
        {"{\"op\":\"flatten\"},{\"op\":\"maxpool\",\"kernel\":2}", "maxpool needs a [C, H, W] image input"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; ++i) {
        char config[2048], path[512];
        snprintf(config, sizeof config,
                 "{\"input\":{\"shape\":[2,6,6]},\"classes\":[\"a\",\"b\",\"c\",\"d\",\"e\"],\"stages\":[{\"ops\":[%s],"
                 "\"exit\":[{\"op\":\"flatten\"},{\"op\":\"linear\",\"in\":64,\"out\":5,\"weight\":\"lw\"}]}]}",
                 cases[i].ops);
        const char *dir = tu_tmpdir();
        snprintf(path, sizeof path, "%s/config.json", dir);
        tu_write_text(path, config);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        tu_write_safetensors(path, t, 2);
        ert_model *m = NULL;
        ck_assert_int_ne(ert_model_load(dir, &m), ERT_OK);
        ck_assert_msg(tu_error_has(cases[i].needle), "case %zu", i);
    }
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("conv");
    TCase *tc = tcase_create("cpu");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, conv2d_matches_pytorch);
    tcase_add_test(tc, pools_match_pytorch);
    tcase_add_test(tc, relu_keeps_nan);
    tcase_add_test(tc, conv2d_sample_does_not_depend_on_the_batch);
    tcase_add_test(tc, linear_row_does_not_depend_on_the_batch);
    tcase_add_test(tc, gelu_linear_on_both_libraries);
    tcase_add_test(tc, cpu_ops_give_the_same_bits_on_any_thread_count);
    tcase_add_test(tc, cpu_quota_gives_the_thread_count);
    tcase_add_test(tc, cgroup_limits_come_from_every_level);
    tcase_add_test(tc, ops_do_not_read_what_another_op_left_in_the_scratch);
    tcase_add_test(tc, scratch_counts_against_the_memory_limit);
    tcase_add_test(tc, weights_count_against_the_memory_limit);
    tcase_add_test(tc, default_threads_halve_to_fit_the_memory_limit);
    tcase_add_test(tc, a_refused_op_gives_its_blocks_back);
    tcase_add_test(tc, a_forked_child_still_runs_ops);
    tcase_add_test(tc, pools_are_the_window_loop);
    tcase_add_test(tc, conv_and_pool_fused_give_the_ops_bits);
    tcase_add_test(tc, pools_read_every_blocked_layout);
    tcase_add_test(tc, a_session_fuses_conv_and_pool_pairs);
    tcase_add_test(tc, tiny_cnn_matches_pytorch);
    tcase_add_test(tc, image_shape_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(suite()); }
