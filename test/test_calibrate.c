/* Calibration: ECE and reliability bins on hand-built cases, temperature fitting that
 * recovers a known temperature, and calibration.json written and read back. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "exitrt/exitrt.h"
#include "testutil.h"

/* Mean NLL and accuracy of labels under softmax(z / T), in double: the reference the
 * library's calibration figures are checked against. */
static double ref_nll(const float *z, const int32_t *y, int n, int C, double T, double *accuracy) {
    double total = 0.0;
    int right = 0;
    for (int i = 0; i < n; ++i) {
        const float *r = z + (size_t)i * C;
        double m = -INFINITY, sum = 0.0;
        int top = 0;
        for (int k = 0; k < C; ++k) {
            m = fmax(m, r[k] / T);
            if (r[k] > r[top]) top = k;
        }
        for (int k = 0; k < C; ++k) sum += exp(r[k] / T - m);
        total += log(sum) + m - r[y[i]] / T;
        right += top == y[i];
    }
    if (accuracy) *accuracy = (double)right / n;
    return total / n;
}

START_TEST(ece_by_hand) {
    float conf[10];
    uint8_t ok[10];
    for (int i = 0; i < 10; ++i) conf[i] = 0.95f, ok[i] = 1;
    ert_reliability_bin bins[ERT_ECE_BINS];
    ck_assert_double_eq_tol(ert_ece(conf, ok, 10, bins), 0.05, 1e-6);
    ck_assert_int_eq(bins[14].count, 10);
    ck_assert_double_eq_tol(bins[14].accuracy, 1.0, 1e-12);
    /* The bins tile [0, 1] in 15 equal steps (the reliability diagram draws them). */
    for (int k = 0; k < ERT_ECE_BINS; ++k) {
        ck_assert_double_eq_tol(bins[k].lo, k / 15.0, 1e-12);
        ck_assert_double_eq_tol(bins[k].hi, (k + 1) / 15.0, 1e-12);
    }
    /* 4 at 0.6 with 2 right, 6 at 0.9 all right: 0.4 * 0.1 + 0.6 * 0.1 */
    for (int i = 0; i < 10; ++i) conf[i] = i < 4 ? 0.6f : 0.9f, ok[i] = i >= 2;
    ck_assert_double_eq_tol(ert_ece(conf, ok, 10, bins), 0.10, 1e-6);
    ck_assert_int_eq(bins[9].count, 4);   /* [0.6, 0.6667) */
    ck_assert_int_eq(bins[13].count, 6);  /* [0.8667, 0.9333) */
    conf[0] = 1.0f;                       /* confidence 1 lands in the last bin */
    ert_ece(conf, ok, 10, bins);
    ck_assert_int_eq(bins[14].count, 1);
}
END_TEST

/* Labels drawn from softmax(z / 2) at exit 0: the fitted temperature of exit 0 is ~2. */
START_TEST(recovers_a_known_temperature) {
    enum { N = 4000, D = 24, C = 5 };
    ert_model *m = NULL;
    ck_assert_int_eq(ert_model_load(tu_path("test/fixtures/tiny-f32"), &m), ERT_OK);
    ert_session_options o = ert_session_options_default();
    o.max_batch = 500;
    ert_session *s = NULL;
    ck_assert_int_eq(ert_session_new(m, &o, &s), ERT_OK);
    ert_dataset d = {.n = N, .sample_size = D, .ndim = 3, .shape = {2, 3, 4}};
    snprintf(d.name, sizeof d.name, "synthetic");
    d.x = malloc(sizeof(float) * N * D);
    d.labels = malloc(sizeof(int32_t) * N);
    srand(21);
    for (int i = 0; i < N * D; ++i) d.x[i] = (float)rand() / (float)RAND_MAX;
    /* the model's own exit-0 logits, then a label sampled at temperature 2 */
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("fixed:0", &p), ERT_OK);
    float *logits = malloc(sizeof(float) * N * C), conf[500];
    int32_t pred[500], ex[500];
    for (int first = 0; first < N; first += 500) {
        ert_batch b = {.input = d.x + first * D, .n = 500};
        ert_outputs out = {pred, ex, conf, logits + first * C};
        ck_assert_int_eq(ert_session_run(s, p, &b, &out), ERT_OK);
    }
    for (int i = 0; i < N; ++i) {
        double w[C], sum = 0;
        for (int k = 0; k < C; ++k) sum += (w[k] = exp(logits[i * C + k] / 2.0));
        double u = (double)rand() / ((double)RAND_MAX + 1.0) * sum;
        int k = 0;
        while (k < C - 1 && (u -= w[k]) > 0) ++k;
        d.labels[i] = k;
    }
    ert_calibration cal;
    ck_assert_msg(ert_calibrate(s, &d, 500, &cal) == ERT_OK, "%s", ert_last_error());
    printf("fitted T0 = %.3f (labels drawn at T = 2), NLL %.4f -> %.4f\n", (double)cal.temperature[0],
           cal.before[0].nll, cal.after[0].nll);
    ck_assert_float_eq_tol(cal.temperature[0], 2.0f, 0.25f);
    ck_assert_double_le(cal.after[0].nll, cal.before[0].nll);
    ck_assert_int_eq(cal.num_exits, 3);
    ck_assert_int_eq(cal.samples, N);
    /* NLL and accuracy of every sample, before and after, as computed here from the
     * logits; the fitted T is the minimum (the NLL rises 1% away on either side). */
    double acc_ref;
    const double before = ref_nll(logits, d.labels, N, C, 1.0, &acc_ref), T0 = cal.temperature[0];
    ck_assert_double_eq_tol(cal.before[0].nll, before, 1e-9);
    ck_assert_double_eq_tol(cal.before[0].accuracy, acc_ref, 1e-12);
    ck_assert_double_eq_tol(cal.after[0].accuracy, acc_ref, 1e-12);
    const double after = ref_nll(logits, d.labels, N, C, T0, NULL);
    ck_assert_double_eq_tol(cal.after[0].nll, after, 1e-6);
    ck_assert_double_gt(ref_nll(logits, d.labels, N, C, T0 * 1.01, NULL), after);
    ck_assert_double_gt(ref_nll(logits, d.labels, N, C, T0 / 1.01, NULL), after);

    /* Any temperatures measured on every exit, each against its own fixed:e logits (batches
     * of 300: the last one is short). */
    const float temps[3] = {0.5f, 1.5f, 3.0f};
    ert_calibration_stats st[3];
    ck_assert_msg(ert_calibration_measure(s, &d, 300, temps, st) == ERT_OK, "%s", ert_last_error());
    for (int e = 0; e < 3; ++e) {
        char spec[16];
        snprintf(spec, sizeof spec, "fixed:%d", e);
        ert_policy *pe = NULL;
        ck_assert_int_eq(ert_policy_parse(spec, &pe), ERT_OK);
        for (int first = 0; first < N; first += 500) {
            ert_batch b = {.input = d.x + first * D, .n = 500};
            ert_outputs out = {pred, ex, conf, logits + first * C};
            ck_assert_int_eq(ert_session_run(s, pe, &b, &out), ERT_OK);
        }
        ert_policy_free(pe);
        ck_assert_double_eq_tol(st[e].nll, ref_nll(logits, d.labels, N, C, temps[e], &acc_ref), 1e-6);
        ck_assert_double_eq_tol(st[e].accuracy, acc_ref, 1e-12);
    }
    const float bad[3] = {1.0f, 0.0f, 1.0f};
    ck_assert_int_eq(ert_calibration_measure(s, &d, 500, bad, st), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("temperature[1] = 0: expected > 0"));

    /* written, then read back by the model loader */
    const char *dir = tu_copy_tiny();
    char path[512];
    snprintf(path, sizeof path, "%s/calibration.json", dir);
    ck_assert_int_eq(ert_calibration_write(&cal, path), ERT_OK);
    /* The file has every exit's temperature and 15 bins before and after. */
    cJSON *j = tu_json_load(path);
    const cJSON *exits = cJSON_GetObjectItem(j, "exits");
    ck_assert_int_eq(cJSON_GetArraySize(exits), 3);
    for (int e = 0; e < 3; ++e) {
        const cJSON *x = cJSON_GetArrayItem(exits, e);
        ck_assert_double_eq_tol(cJSON_GetObjectItem(x, "temperature")->valuedouble, cal.temperature[e], 1e-6);
        const cJSON *bins = cJSON_GetObjectItem(cJSON_GetObjectItem(x, "after"), "bins");
        ck_assert_int_eq(cJSON_GetArraySize(bins), ERT_ECE_BINS);
        ck_assert_double_eq_tol(cJSON_GetObjectItem(cJSON_GetArrayItem(bins, 14), "hi")->valuedouble, 1.0, 1e-12);
        ck_assert_double_eq_tol(cJSON_GetObjectItem(cJSON_GetObjectItem(x, "before"), "nll")->valuedouble,
                                cal.before[e].nll, 1e-9);
    }
    cJSON_Delete(j);
    ert_model *m2 = NULL;
    ck_assert_int_eq(ert_model_load(dir, &m2), ERT_OK);
    for (int e = 0; e < 3; ++e) ck_assert_float_eq_tol(ert_model_temperature(m2, e), cal.temperature[e], 1e-6f);
    const ert_model_load_options no = {.no_calibration = 1};
    ert_model *m3 = NULL;
    ck_assert_int_eq(ert_model_load_ex(dir, &no, &m3), ERT_OK);
    ck_assert_float_eq(ert_model_temperature(m3, 0), 1.0f);

    /* without labels: refused */
    int32_t *labels = d.labels;
    d.labels = NULL;
    ck_assert_int_eq(ert_calibrate(s, &d, 500, &cal), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("has no labels"));
    d.labels = labels;

    ert_model_free(m3), ert_model_free(m2);
    ert_policy_free(p);
    free(logits), free(d.x), free(d.labels);
    ert_session_free(s);
    ert_model_free(m);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("calibrate");
    TCase *tc = tcase_create("calibrate");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, ece_by_hand);
    tcase_add_test(tc, recovers_a_known_temperature);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(suite()); }
