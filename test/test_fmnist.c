/* The shipped model on the real data: the runtime agrees with PyTorch (per-exit logits on
 * the first test images, per-exit test accuracy), the final exit reaches 88%, and a middle
 * confidence threshold stays within a point of it while executing clearly fewer FLOPs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "exitrt/exitrt.h"
#include "testutil.h"

static ert_model *model;
static ert_dataset *test_data;
static ert_session *session;
static cJSON *ref;

static void setup(void) {
    /* temperatures 1: the PyTorch logits are compared through the plain softmax */
    const ert_model_load_options mo = {.no_calibration = 1};
    ck_assert_msg(ert_model_load_ex(tu_path("models/fmnist-mlp"), &mo, &model) == ERT_OK, "%s", ert_last_error());
    ck_assert_msg(ert_dataset_load("fashion-mnist:test", &test_data) == ERT_OK, "%s", ert_last_error());
    ert_session_options o = ert_session_options_default();
    o.max_batch = 512;
    ck_assert_int_eq(ert_session_new(model, &o, &session), ERT_OK);
    ref = tu_json_load(tu_path("test/fixtures/fmnist-mlp-reference.json"));
}

static void teardown(void) {
    cJSON_Delete(ref);
    ert_session_free(session);
    ert_dataset_free(test_data);
    ert_model_free(model);
}

static ert_eval_result *evaluate(const char *spec) {
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse(spec, &p), ERT_OK);
    ert_eval_result *r = NULL;
    ert_eval_options eo = {.batch = 512, .warmup = 0};
    ck_assert_msg(ert_evaluate(session, p, test_data, &eo, &r) == ERT_OK, "%s", ert_last_error());
    ert_policy_free(p);
    return r;
}

START_TEST(matches_pytorch_logits) {
    const cJSON *idx = cJSON_GetObjectItem(ref, "indices"), *logits = cJSON_GetObjectItem(ref, "exit_logits");
    const int n = cJSON_GetArraySize(idx);
    ck_assert_int_eq(cJSON_GetArraySize(logits), ert_model_num_exits(model));
    double worst = 0;
    for (int e = 0; e < ert_model_num_exits(model); ++e) {
        char spec[32];
        snprintf(spec, sizeof spec, "fixed:%d", e);
        ert_policy *p = NULL;
        ck_assert_int_eq(ert_policy_parse(spec, &p), ERT_OK);
        int32_t pred[64], ex[64];
        float conf[64];
        ert_batch b = {.input = test_data->x, .n = n};
        ert_outputs out = {pred, ex, conf, NULL};
        ck_assert_int_eq(ert_session_run(session, p, &b, &out), ERT_OK);
        for (int i = 0; i < n; ++i) {
            ck_assert_int_eq(cJSON_GetArrayItem(idx, i)->valueint, i);
            int c;
            float *z = tu_json_floats(cJSON_GetArrayItem(cJSON_GetArrayItem(logits, e), i), &c);
            int arg = 0;
            double sum = 0;
            for (int k = 1; k < c; ++k)
                if (z[k] > z[arg]) arg = k;
            for (int k = 0; k < c; ++k) sum += exp((double)z[k] - z[arg]);
            ck_assert_int_eq(pred[i], arg);
            const double err = fabs(conf[i] - 1.0 / sum);
            if (err > worst) worst = err;
            free(z);
        }
        ert_policy_free(p);
    }
    printf("fmnist-mlp: max |confidence - PyTorch| over %d images x %d exits = %.3g\n", n,
           ert_model_num_exits(model), worst);
    ck_assert_double_lt(worst, 1e-5);
}
END_TEST

START_TEST(per_exit_accuracy_matches_pytorch) {
    const cJSON *acc = cJSON_GetObjectItem(ref, "test_accuracy_per_exit");
    for (int e = 0; e < ert_model_num_exits(model); ++e) {
        char spec[32];
        snprintf(spec, sizeof spec, "fixed:%d", e);
        ert_eval_result *r = evaluate(spec);
        const double want = cJSON_GetArrayItem(acc, e)->valuedouble;
        printf("exit %d: test accuracy %.4f (PyTorch %.4f), FLOPs fraction %.3f\n", e, r->accuracy, want,
               r->flops_fraction);
        /* f32 on both sides; a few borderline samples may flip on summation order */
        ck_assert_double_le(fabs(r->accuracy - want), 3e-4);
        ck_assert_int_eq(r->exit_histogram[e], 10000);
        ert_eval_result_free(r);
    }
}
END_TEST

START_TEST(final_exit_and_middle_threshold) {
    ert_eval_result *full = evaluate("none");
    ert_eval_result *mid = evaluate("confidence:0.9");
    printf("final exit: %.2f%%; confidence:0.9: %.2f%% at %.3f of the FLOPs, mean exit %.2f\n",
           100 * full->accuracy, 100 * mid->accuracy, mid->flops_fraction, mid->mean_exit);
    ck_assert_double_ge(full->accuracy, 0.88);
    ck_assert_double_ge(mid->accuracy, full->accuracy - 0.01);
    ck_assert_double_lt(mid->flops_fraction, 0.75);
    ck_assert_double_lt(mid->mean_exit, 2.0);
    ert_eval_result_free(full);
    ert_eval_result_free(mid);
}
END_TEST

/* The shipped calibration.json (fitted on fashion-mnist:val) lowers the mean ECE over the
 * exits on the test split. */
START_TEST(shipped_calibration_lowers_test_ece) {
    ert_model *cal = NULL;
    ck_assert_int_eq(ert_model_load(tu_path("models/fmnist-mlp"), &cal), ERT_OK);
    float ones[ERT_MAX_EXITS], temps[ERT_MAX_EXITS];
    const int E = ert_model_num_exits(cal);
    for (int e = 0; e < E; ++e) {
        ones[e] = 1.0f;
        temps[e] = ert_model_temperature(cal, e);
        ck_assert(temps[e] != 1.0f); /* the file is there and was read */
    }
    ert_calibration_stats before[ERT_MAX_EXITS], after[ERT_MAX_EXITS];
    ck_assert_int_eq(ert_calibration_measure(session, test_data, 512, ones, before), ERT_OK);
    ck_assert_int_eq(ert_calibration_measure(session, test_data, 512, temps, after), ERT_OK);
    double eb = 0, ea = 0;
    for (int e = 0; e < E; ++e) eb += before[e].ece / E, ea += after[e].ece / E;
    printf("fmnist-mlp test ECE over exits: %.4f -> %.4f\n", eb, ea);
    ck_assert_double_lt(ea, eb);
    ert_model_free(cal);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("fmnist");
    TCase *tc = tcase_create("fmnist-mlp");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, matches_pytorch_logits);
    tcase_add_test(tc, per_exit_accuracy_matches_pytorch);
    tcase_add_test(tc, final_exit_and_middle_threshold);
    tcase_add_test(tc, shipped_calibration_lowers_test_ece);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(suite()); }
