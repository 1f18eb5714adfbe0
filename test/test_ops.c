/* Every CPU op against fixtures computed by PyTorch (test/fixtures/gen_fixtures.py),
 * through the backend table, as the session calls them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "exit_math.h"
#include "op_math.h"
#include "testutil.h"

static cJSON *fixtures;
static const ert_backend_ops *ops;
static ert_backend *be;

static void setup(void) {
    fixtures = tu_json_load(tu_path("test/fixtures/ops.json"));
    ops = ert_backend_cpu();
    ert_backend_config cfg = {.device = 0, .max_rows = 1024, .dtype = ERT_DTYPE_F32};
    ck_assert_int_eq(ops->create(&cfg, &be), ERT_OK);
}

static void teardown(void) {
    ops->destroy(be);
    cJSON_Delete(fixtures);
}

static float *field(const cJSON *c, const char *key, int *n) {
    const cJSON *v = cJSON_GetObjectItem(c, key);
    if (!v || cJSON_IsNull(v)) return NULL;
    return tu_json_floats(v, n);
}

START_TEST(linear_matches_pytorch) {
    const cJSON *c;
    int cases = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(fixtures, "linear")) {
        const int rows = cJSON_GetObjectItem(c, "rows")->valueint, in = cJSON_GetObjectItem(c, "in")->valueint,
                  out = cJSON_GetObjectItem(c, "out")->valueint;
        const char *act = cJSON_GetObjectItem(c, "activation")->valuestring;
        int n;
        float *x = field(c, "x", &n), *w = field(c, "w", &n), *b = field(c, "b", &n), *y = field(c, "y", &n);
        ert_op_desc d = {.type = ERT_OP_LINEAR, .name = "fixture", .in = in, .out = out, .weight = w, .bias = b,
                         .max_rows = rows,
                         .act = strcmp(act, "relu") == 0 ? ERT_ACT_RELU : strcmp(act, "gelu") == 0 ? ERT_ACT_GELU : ERT_ACT_NONE};
        ert_op *op;
        ck_assert_int_eq(ops->op_new(be, &d, &op), ERT_OK);
        float *got = malloc(sizeof(float) * (size_t)rows * out);
        for (int i = 0; i < rows * out; ++i) got[i] = NAN; /* poison: every element must be written */
        ck_assert_int_eq(ops->op_run(be, op, (ert_rows){rows, NULL}, x, got), ERT_OK);
        double err = tu_rel_err(got, y, rows * out, 1e-5, 1e-4);
        printf("linear %dx%d->%d %s bias=%d: maxdiff ratio %.3g\n", rows, in, out, act, b != NULL, err);
        ck_assert_double_le(err, 1.0);
        ops->op_free(be, op);
        free(x), free(w), free(b), free(y), free(got);
        ++cases;
    }
    ck_assert_int_ge(cases, 4);
}
END_TEST

START_TEST(layernorm_matches_pytorch) {
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(fixtures, "layernorm")) {
        const int rows = cJSON_GetObjectItem(c, "rows")->valueint, dim = cJSON_GetObjectItem(c, "dim")->valueint;
        int n;
        float *x = field(c, "x", &n), *w = field(c, "w", &n), *b = field(c, "b", &n), *y = field(c, "y", &n);
        ert_op_desc d = {.type = ERT_OP_LAYERNORM, .in = dim, .out = dim, .weight = w, .bias = b,
                         .eps = (float)cJSON_GetObjectItem(c, "eps")->valuedouble, .max_rows = rows};
        ert_op *op;
        ck_assert_int_eq(ops->op_new(be, &d, &op), ERT_OK);
        float *got = malloc(sizeof(float) * (size_t)rows * dim);
        for (int i = 0; i < rows * dim; ++i) got[i] = NAN;
        ck_assert_int_eq(ops->op_run(be, op, (ert_rows){rows, NULL}, x, got), ERT_OK);
        double err = tu_rel_err(got, y, rows * dim, 1e-5, 1e-4);
        printf("layernorm %dx%d: maxdiff ratio %.3g\n", rows, dim, err);
        ck_assert_double_le(err, 1.0);
        ops->op_free(be, op);
        free(x), free(w), free(b), free(y), free(got);
    }
}
END_TEST

START_TEST(gelu_matches_pytorch) {
    const cJSON *g = cJSON_GetObjectItem(fixtures, "gelu");
    int n;
    float *x = field(g, "x", &n), *y = field(g, "y", &n);
    float *got = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; ++i) got[i] = ert_gelu(x[i]);
    ck_assert_double_le(tu_rel_err(got, y, n, 1e-6, 1e-5), 1.0);
    free(x), free(y), free(got);
}
END_TEST

START_TEST(softmax_stats_match_pytorch) {
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(fixtures, "softmax_stats")) {
        int C;
        float *z = field(c, "logits", &C);
        const float T = (float)cJSON_GetObjectItem(c, "temperature")->valuedouble;
        ert_softmax_stats s = ert_softmax_stats_compute(z, C, 1.0f / T);
        ck_assert_int_eq(s.finite, 1);
        ck_assert_int_eq(s.top1, cJSON_GetObjectItem(c, "argmax")->valueint);
        ck_assert_float_eq_tol(s.p1, cJSON_GetObjectItem(c, "max_prob")->valuedouble, 2e-6);
        ck_assert_float_eq_tol(s.p2, cJSON_GetObjectItem(c, "second_prob")->valuedouble, 2e-6);
        ck_assert_float_eq_tol(s.p1 - s.p2, cJSON_GetObjectItem(c, "margin")->valuedouble, 4e-6);
        ck_assert_float_eq_tol(s.entropy_norm, cJSON_GetObjectItem(c, "entropy_norm")->valuedouble, 1e-5);
        free(z);
    }
}
END_TEST

START_TEST(normalize_and_add) {
    /* 2 channels of 3 values: y = x * scale[c] + shift[c]; then y += x. */
    float scale[2] = {2.0f, -1.0f}, shift[2] = {0.5f, 1.0f};
    ert_op_desc d = {.type = ERT_OP_NORMALIZE, .in = 6, .out = 6, .channels = 2, .weight = scale, .bias = shift,
                     .max_rows = 2};
    ert_op *op;
    ck_assert_int_eq(ops->op_new(be, &d, &op), ERT_OK);
    float x[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, y[12];
    float want[12] = {0.5f, 2.5f, 4.5f, -2, -3, -4, 12.5f, 14.5f, 16.5f, -8, -9, -10};
    ck_assert_int_eq(ops->op_run(be, op, (ert_rows){2, NULL}, x, y), ERT_OK);
    for (int i = 0; i < 12; ++i) ck_assert_float_eq(y[i], want[i]);
    /* a row count in memory below the host count limits the rows touched */
    int32_t count = 1;
    float z[12] = {0};
    ck_assert_int_eq(ops->add(be, (ert_rows){2, &count}, 6, x, z), ERT_OK);
    for (int i = 0; i < 12; ++i) ck_assert_float_eq(z[i], i < 6 ? x[i] : 0.0f);
    ops->op_free(be, op);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("cpu");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, linear_matches_pytorch);
    tcase_add_test(tc, layernorm_matches_pytorch);
    tcase_add_test(tc, gelu_matches_pytorch);
    tcase_add_test(tc, softmax_stats_match_pytorch);
    tcase_add_test(tc, normalize_and_add);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(suite()); }
