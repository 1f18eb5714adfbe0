/* The shipped models on the real data: the runtime agrees with PyTorch (per-exit logits on
 * the first test images, per-exit test accuracy), the final exit reaches its target, a
 * middle confidence threshold keeps accuracy within a point at clearly fewer FLOPs, the
 * shipped calibration lowers the mean ECE over the exits on the test split, and the main
 * job's sweep / frontier / plots / select pipeline runs on both models (smaller). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu.h"
#include "exitrt/exitrt.h"
#include "testutil.h"

typedef struct shipped {
    const char *dir, *reference;
    double min_final_accuracy;
    int64_t ece_samples; /* test samples for the ECE check (the CNN is slower on 2 cores) */
} shipped;

static const shipped models[] = {
    {"models/fmnist-mlp", "test/fixtures/fmnist-mlp-reference.json", 0.88, 10000},
    {"models/fmnist-cnn", "test/fixtures/fmnist-cnn-reference.json", 0.91, 3000},
};
enum { NUM_MODELS = sizeof models / sizeof *models };

static ert_dataset *test_data;
static ert_model *model[NUM_MODELS];     /* without calibration: temperatures 1 */
static ert_session *session[NUM_MODELS];
static cJSON *ref[NUM_MODELS];

static void setup(void) {
    ck_assert_msg(ert_dataset_load("fashion-mnist:test", &test_data) == ERT_OK, "%s", ert_last_error());
    const ert_model_load_options mo = {.no_calibration = 1};
    for (int i = 0; i < NUM_MODELS; ++i) {
        ck_assert_msg(ert_model_load_ex(tu_path(models[i].dir), &mo, &model[i]) == ERT_OK, "%s", ert_last_error());
        ert_session_options o = ert_session_options_default();
        o.max_batch = 512;
        ck_assert_int_eq(ert_session_new(model[i], &o, &session[i]), ERT_OK);
        ref[i] = tu_json_load(tu_path(models[i].reference));
    }
}

static void teardown(void) {
    for (int i = 0; i < NUM_MODELS; ++i) {
        cJSON_Delete(ref[i]);
        ert_session_free(session[i]);
        ert_model_free(model[i]);
    }
    ert_dataset_free(test_data);
}

static ert_eval_result *evaluate(int i, const char *spec) {
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse(spec, &p), ERT_OK);
    ert_eval_result *r = NULL;
    ert_eval_options eo = {.batch = 512, .warmup = 0};
    ck_assert_msg(ert_evaluate(session[i], p, test_data, &eo, &r) == ERT_OK, "%s", ert_last_error());
    ert_policy_free(p);
    return r;
}

START_TEST(matches_pytorch_logits) {
    for (int m = 0; m < NUM_MODELS; ++m) {
        const cJSON *idx = cJSON_GetObjectItem(ref[m], "indices"), *logits = cJSON_GetObjectItem(ref[m], "exit_logits");
        const int n = cJSON_GetArraySize(idx), C = ert_model_num_classes(model[m]);
        ck_assert_int_eq(cJSON_GetArraySize(logits), ert_model_num_exits(model[m]));
        double worst = 0;
        for (int e = 0; e < ert_model_num_exits(model[m]); ++e) {
            char spec[32];
            snprintf(spec, sizeof spec, "fixed:%d", e);
            ert_policy *p = NULL;
            ck_assert_int_eq(ert_policy_parse(spec, &p), ERT_OK);
            int32_t pred[64], ex[64];
            float conf[64], lg[64 * 10];
            ert_batch b = {.input = test_data->x, .n = n};
            ert_outputs out = {pred, ex, conf, lg};
            ck_assert_int_eq(ert_session_run(session[m], p, &b, &out), ERT_OK);
            for (int i = 0; i < n; ++i) {
                ck_assert_int_eq(cJSON_GetArrayItem(idx, i)->valueint, i);
                int c;
                float *z = tu_json_floats(cJSON_GetArrayItem(cJSON_GetArrayItem(logits, e), i), &c);
                ck_assert_int_eq(c, C);
                const double err = tu_rel_err(lg + i * C, z, C, 1e-4, 1e-4);
                if (err > worst) worst = err;
                int arg = 0;
                for (int k = 1; k < c; ++k)
                    if (z[k] > z[arg]) arg = k;
                ck_assert_int_eq(pred[i], arg);
                free(z);
            }
            ert_policy_free(p);
        }
        printf("%s: logits vs PyTorch over %d images x %d exits: max error ratio %.3g\n", models[m].dir, n,
               ert_model_num_exits(model[m]), worst);
        ck_assert_double_le(worst, 1.0);
    }
}
END_TEST

/* The CPU backend runs an op's blocks on several threads (kernels/cpu/parallel.c): the
 * answers, logits included, must be the same bits on 1 thread as on 3 (more than this
 * machine's cores) and on the default, in compact mode with survivors moving between
 * stages, in batches that end in partial blocks. */
START_TEST(answers_do_not_depend_on_threads) {
    enum { N = 300, BATCH = 100, C = 10 };
    const int threads[] = {1, 3, 0};
    for (int m = 0; m < NUM_MODELS; ++m) {
        static int32_t pred[3][N], ex[3][N];
        static float conf[3][N], lg[3][N * C];
        ert_policy *p = NULL;
        ck_assert_int_eq(ert_policy_parse("confidence:0.9", &p), ERT_OK);
        for (int t = 0; t < 3; ++t) {
            ert_session_options o = ert_session_options_default();
            o.max_batch = BATCH;
            o.threads = threads[t];
            ert_session *s = NULL;
            ck_assert_msg(ert_session_new(model[m], &o, &s) == ERT_OK, "%s", ert_last_error());
            for (int first = 0; first < N; first += BATCH - 9) {
                const int n = N - first < BATCH - 9 ? N - first : BATCH - 9;
                ert_batch b = {.input = test_data->x + (size_t)first * ert_model_input_size(model[m]), .n = n};
                ert_outputs out = {pred[t] + first, ex[t] + first, conf[t] + first, lg[t] + (size_t)first * C};
                ck_assert_msg(ert_session_run(s, p, &b, &out) == ERT_OK, "%s", ert_last_error());
            }
            ert_session_free(s);
            if (threads[t] == 3) /* really on 3 threads: not, e.g., serial in a forked child */
                ck_assert_int_ge(ert_cpu_widest_team(), 3);
        }
        int left_early = 0;
        for (int i = 0; i < N; ++i) left_early += ex[0][i] < ert_model_num_exits(model[m]) - 1;
        ck_assert_int_gt(left_early, N / 4); /* survivors really moved */
        for (int t = 1; t < 3; ++t) {
            ck_assert_msg(memcmp(pred[t], pred[0], sizeof pred[0]) == 0 && memcmp(ex[t], ex[0], sizeof ex[0]) == 0 &&
                              memcmp(conf[t], conf[0], sizeof conf[0]) == 0 && memcmp(lg[t], lg[0], sizeof lg[0]) == 0,
                          "%s: answers on %d threads differ from 1 thread", models[m].dir, threads[t]);
        }
        ert_policy_free(p);
    }
}
END_TEST

START_TEST(per_exit_accuracy_matches_pytorch) {
    for (int m = 0; m < NUM_MODELS; ++m) {
        const cJSON *acc = cJSON_GetObjectItem(ref[m], "test_accuracy_per_exit");
        for (int e = 0; e < ert_model_num_exits(model[m]); ++e) {
            char spec[32];
            snprintf(spec, sizeof spec, "fixed:%d", e);
            ert_eval_result *r = evaluate(m, spec);
            const double want = cJSON_GetArrayItem(acc, e)->valuedouble;
            printf("%s exit %d: test accuracy %.4f (PyTorch %.4f), FLOPs fraction %.3f\n", models[m].dir, e,
                   r->accuracy, want, r->flops_fraction);
            /* f32 on both sides; a few borderline samples may flip on summation order */
            ck_assert_double_le(fabs(r->accuracy - want), 3e-4);
            ck_assert_int_eq(r->exit_histogram[e], 10000);
            ert_eval_result_free(r);
        }
    }
}
END_TEST

START_TEST(final_exit_and_middle_threshold) {
    for (int m = 0; m < NUM_MODELS; ++m) {
        ert_eval_result *full = evaluate(m, "none");
        ert_eval_result *mid = evaluate(m, "confidence:0.9");
        printf("%s: final exit %.2f%%; confidence:0.9 %.2f%% at %.3f of the FLOPs, mean exit %.2f\n", models[m].dir,
               100 * full->accuracy, 100 * mid->accuracy, mid->flops_fraction, mid->mean_exit);
        ck_assert_double_ge(full->accuracy, models[m].min_final_accuracy);
        ck_assert_double_ge(mid->accuracy, full->accuracy - 0.01);
        ck_assert_double_lt(mid->flops_fraction, 0.75);
        ert_eval_result_free(full);
        ert_eval_result_free(mid);
    }
}
END_TEST

START_TEST(shipped_calibration_lowers_test_ece) {
    for (int m = 0; m < NUM_MODELS; ++m) {
        ert_model *cal = NULL;
        ck_assert_int_eq(ert_model_load(tu_path(models[m].dir), &cal), ERT_OK);
        float ones[ERT_MAX_EXITS], temps[ERT_MAX_EXITS];
        const int E = ert_model_num_exits(cal);
        for (int e = 0; e < E; ++e) {
            ones[e] = 1.0f;
            temps[e] = ert_model_temperature(cal, e);
            ck_assert(temps[e] != 1.0f); /* the file is there and was read */
        }
        ert_dataset part = *test_data;
        part.n = models[m].ece_samples;
        ert_calibration_stats before[ERT_MAX_EXITS], after[ERT_MAX_EXITS];
        ck_assert_int_eq(ert_calibration_measure(session[m], &part, 512, ones, before), ERT_OK);
        ck_assert_int_eq(ert_calibration_measure(session[m], &part, 512, temps, after), ERT_OK);
        double eb = 0, ea = 0;
        for (int e = 0; e < E; ++e) eb += before[e].ece / E, ea += after[e].ece / E;
        printf("%s: mean test ECE over exits (%lld samples) %.4f -> %.4f\n", models[m].dir, (long long)part.n, eb, ea);
        ck_assert_double_lt(ea, eb);
        ert_model_free(cal);
    }
}
END_TEST

/* The main job's pipeline (tools/main.sh), smaller, through the CLI on both shipped models:
 * a sweep of every policy family with the per-exit threshold search (chosen on the
 * validation split) prints the frontier and writes its files and plots (where a python
 * with matplotlib is found), select answers a latency budget with a frontier point, and
 * the shift report shows confidence exits firing later under blur at severity 5. */
/* `shift-report` of confidence:0.9 on model m under one corruption kind at `severities`:
 * its summary line's accuracy and mean exit, clean -> the highest severity (the line
 * itself in *line, the report in out). */
static void shift_summary(int m, const char *kind, const char *severities, const char *dir, char *out, size_t out_len,
                          const char **line, double *a0, double *a1, double *e0, double *e1) {
    char args[1024], err[1 << 14], key[64];
    snprintf(args, sizeof args,
             "shift-report --model %s --data fashion-mnist:test --limit 512 --batch 256 --policy confidence:0.9 "
             "--shifts %s --severities %s --out %s/shift-%s",
             models[m].dir, kind, severities, dir, kind);
    ck_assert_msg(tu_cli(args, out, out_len, err, sizeof err) == 0, "%s: %s", args, err);
    snprintf(key, sizeof key, "\nconfidence:0.9           %s ", kind);
    *line = strstr(out, key);
    ck_assert_msg(*line != NULL, "%s", out);
    ck_assert_int_eq(sscanf(*line, " %*s %*s %lf%% -> %lf%% %lf -> %lf", a0, a1, e0, e1), 4);
}

START_TEST(main_job_pipeline_on_the_shipped_models) {
    static char out[1 << 16], err[1 << 14];
    for (int m = 0; m < NUM_MODELS; ++m) {
        char dir[512], args[1024], path[600];
        snprintf(dir, sizeof dir, "%s/sweep-%d", tu_tmpdir(), m);
        snprintf(args, sizeof args,
                 "sweep --model %s --data fashion-mnist:test --limit 768 --batch 256 --grid 2 --per-exit-search "
                 "--budget-flops 0.5 --out %s --plot",
                 models[m].dir, dir);
        ck_assert_msg(tu_cli(args, out, sizeof out, err, sizeof err) == 0, "%s: %s", args, err);
        /* the CLI finds a python with matplotlib ($ERT_PYTHON, python3, /usr/bin/python3) or says so */
        const int plots = strstr(out, "plots skipped: no python3 with matplotlib") == NULL;
        ck_assert_msg(strstr(out, "Pareto frontier, accuracy vs mean batch latency") != NULL, "%s", out);
        ck_assert_msg(strstr(out, "chosen on fashion-mnist:val") != NULL, "%s", out);
        static const char *files[] = {"sweep.csv", "sweep.json", "reliability.json", "frontier.png", "exits.png"};
        for (int f = 0; f < (plots ? 5 : 3); ++f) {
            snprintf(path, sizeof path, "%s/%s", dir, files[f]);
            FILE *fp = fopen(path, "rb");
            ck_assert_msg(fp != NULL, "%s: %s missing", models[m].dir, files[f]);
            fclose(fp);
        }
        /* --grid 2 of the fixed exits 0 .. E-2: both ends (the MLP's 0 and 3 of four) */
        snprintf(path, sizeof path, "%s/sweep.json", dir);
        ert_sweep_result *sw = NULL;
        ck_assert_int_eq(ert_sweep_read(path, &sw), ERT_OK);
        const int last = ert_model_num_exits(model[m]) - 2;
        int fixed_mask = 0;
        for (int i = 0; i < sw->num_rows; ++i)
            if (strcmp(sw->rows[i].family, "fixed") == 0) fixed_mask |= 1 << (int)sw->rows[i].param;
        ck_assert_msg(fixed_mask == ((1 << 0) | (1 << last)), "%s: fixed rows 0x%x", models[m].dir, fixed_mask);
        ert_sweep_result_free(sw);
        snprintf(args, sizeof args, "select --from %s --latency-budget 75%%", dir);
        ck_assert_msg(tu_cli(args, out, sizeof out, err, sizeof err) == 0, "%s: %s", args, err);
        ck_assert_msg(strstr(out, "on the Pareto frontier of accuracy vs batch-mean latency: yes") != NULL, "%s",
                      out);
        /* under blur, confidence exits fire later as the severity grows (both models) */
        const char *sum;
        double a0, a1, e0, e1, ms0, ms1;
        shift_summary(m, "blur", "1,5", dir, out, sizeof out, &sum, &a0, &a1, &e0, &e1);
        ck_assert_int_eq(sscanf(sum, " %*s %*s %*s %*s %*s %*s %*s %*s %*s %lf -> %lf", &ms0, &ms1), 2);
        ck_assert_msg(e1 > e0, "%s: mean exit %.3f (clean) -> %.3f (blur 5): not later", models[m].dir, e0, e1);
        printf("%s: sweep, frontier%s and select through the CLI; blur 5: accuracy %.2f%% -> %.2f%%, mean exit "
               "%.3f -> %.3f, batch %.1f -> %.1f ms\n",
               models[m].dir, plots ? ", plots" : "", a0, a1, e0, e1, ms0, ms1);
        /* under contrast 5 the CNN's exits fire earlier while its accuracy collapses (a
         * PyTorch forward agrees: bench/results/2026-11-29-cpu-cnn-shift): the report warns;
         * the MLP's fire later, and it does not */
        shift_summary(m, "contrast", "5", dir, out, sizeof out, &sum, &a0, &a1, &e0, &e1);
        const char *warn = strstr(out, "warning: confidence:0.9 under contrast 5: the exits fire earlier");
        if (strstr(models[m].dir, "cnn")) {
            ck_assert_msg(e1 < e0 && a1 < a0 - 50 && warn, "%s: no warning: %s", models[m].dir, out);
            ck_assert_ptr_nonnull(strstr(sum, " earlier "));
        } else {
            ck_assert_msg(e1 > e0 && !warn, "%s: %s", models[m].dir, out);
        }
        printf("%s: contrast 5: accuracy %.2f%% -> %.2f%%, mean exit %.3f -> %.3f%s\n", models[m].dir, a0, a1, e0, e1,
               warn ? " (warned: confidently wrong)" : "");
    }
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("fmnist");
    TCase *tc = tcase_create("shipped models");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, matches_pytorch_logits);
    tcase_add_test(tc, answers_do_not_depend_on_threads);
    tcase_add_test(tc, per_exit_accuracy_matches_pytorch);
    tcase_add_test(tc, final_exit_and_middle_threshold);
    tcase_add_test(tc, shipped_calibration_lowers_test_ece);
    tcase_add_test(tc, main_job_pipeline_on_the_shipped_models);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(suite()); }
