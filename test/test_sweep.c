/* Sweeps end to end on the tiny fixture model: the exit table predicts every run exactly
 * (CPU), sweep rows and frontier flags are consistent and survive the JSON round trip,
 * the per-exit threshold search respects its budget on validation data, and the CLI
 * (sweep, select, eval of the selected policy file, shift-report) works on generated
 * .npy data. tools/plot.py is smoke-tested when python3 has matplotlib. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "exit_math.h"
#include "exitrt/exitrt.h"
#include "runtime/sweep_internal.h"
#include "testutil.h"

#define N_SAMPLES 300

static char out_text[1 << 17], err_text[1 << 13];
static char test_spec[1024], val_spec[1024];

static int cli(const char *args) { return tu_cli(args, out_text, sizeof out_text, err_text, sizeof err_text); }

static int lines(const char *s) {
    int n = 0;
    for (; *s; ++s) n += *s == '\n';
    return n;
}


/* Random images for the tiny model ([2,3,4]) labelled by the model's own final exit,
 * 30% of the labels replaced at random: the exits then disagree with the labels often
 * enough for accuracy to move with the policy. */
static void make_split(const char *dir, const char *name, unsigned seed, char *spec, size_t len) {
    static float x[N_SAMPLES * 24];
    static int32_t y[N_SAMPLES], pred[N_SAMPLES], ex[N_SAMPLES];
    static float conf[N_SAMPLES];
    srand(seed);
    for (int i = 0; i < N_SAMPLES * 24; ++i) x[i] = (float)rand() / (float)RAND_MAX;
    ert_model *m = NULL;
    ck_assert_int_eq(ert_model_load(tu_path("test/fixtures/tiny-f32"), &m), ERT_OK);
    ert_session_options so = ert_session_options_default();
    so.max_batch = N_SAMPLES;
    ert_session *s = NULL;
    ck_assert_int_eq(ert_session_new(m, &so, &s), ERT_OK);
    ert_policy *none = NULL;
    ck_assert_int_eq(ert_policy_parse("none", &none), ERT_OK);
    ert_batch b = {.input = x, .n = N_SAMPLES};
    ert_outputs o = {.pred = pred, .exit_index = ex, .confidence = conf};
    ck_assert_int_eq(ert_session_run(s, none, &b, &o), ERT_OK);
    for (int i = 0; i < N_SAMPLES; ++i) y[i] = rand() % 10 < 3 ? rand() % 5 : pred[i];
    ert_policy_free(none);
    ert_session_free(s);
    ert_model_free(m);
    char px[512], py[512];
    snprintf(px, sizeof px, "%s/%s-x.npy", dir, name);
    snprintf(py, sizeof py, "%s/%s-y.npy", dir, name);
    char shape[64];
    snprintf(shape, sizeof shape, "(%d, 2, 3, 4)", N_SAMPLES);
    tu_write_npy(px, "<f4", shape, x, sizeof x);
    snprintf(shape, sizeof shape, "(%d,)", N_SAMPLES);
    tu_write_npy(py, "<i4", shape, y, sizeof y);
    snprintf(spec, len, "%s:%s", px, py);
}

static void setup(void) {
    char dir[256]; /* tu_tmpdir's buffers are reused by later calls (tu_cli makes one per run) */
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    make_split(dir, "test", 5, test_spec, sizeof test_spec);
    make_split(dir, "val", 6, val_spec, sizeof val_spec);
}

/* A model, a session and a dataset for the API tests. */
typedef struct fixture {
    ert_model *model;
    ert_session *session;
    ert_dataset *data;
} fixture;

static fixture open_fixture_at(const char *model_dir, const char *spec, int max_batch) {
    fixture f = {0};
    ck_assert_int_eq(ert_model_load(model_dir, &f.model), ERT_OK);
    ert_session_options so = ert_session_options_default();
    so.max_batch = max_batch;
    ck_assert_int_eq(ert_session_new(f.model, &so, &f.session), ERT_OK);
    ck_assert_int_eq(ert_dataset_load(spec, &f.data), ERT_OK);
    return f;
}

static fixture open_fixture(const char *spec, int max_batch) {
    return open_fixture_at(tu_path("test/fixtures/tiny-f32"), spec, max_batch);
}

static void close_fixture(fixture *f) {
    ert_dataset_free(f->data);
    ert_session_free(f->session);
    ert_model_free(f->model);
}

START_TEST(table_predicts_every_run) {
    fixture f = open_fixture(test_spec, 64);
    ert_exit_table *t = NULL;
    ck_assert_int_eq(ert_exit_table_build(f.session, f.data, 48, &t), ERT_OK);
    ck_assert_int_eq(ert_exit_table_samples(t), N_SAMPLES);
    ck_assert_int_eq(ert_exit_table_num_exits(t), 3);
    const char *specs[] = {"none", "confidence:0.5", "confidence:0.3,0.6", "entropy:0.8", "margin:0.2",
                           "patience:2", "fixed:1", "oracle", "confidence:0.5;temp=2", "entropy:0.5,0.9;temp=0.5"};
    static int32_t pred[N_SAMPLES], ex[N_SAMPLES];
    for (size_t k = 0; k < sizeof specs / sizeof *specs; ++k) {
        ert_policy *p = NULL;
        ck_assert_int_eq(ert_policy_parse(specs[k], &p), ERT_OK);
        ert_eval_result *r = NULL;
        ert_eval_options eo = {.batch = 64};
        ck_assert_int_eq(ert_evaluate(f.session, p, f.data, &eo, &r), ERT_OK);
        ert_sim_result sim;
        ck_assert_int_eq(ert_exit_table_simulate(t, p, &sim, pred, ex), ERT_OK);
        for (int i = 0; i < N_SAMPLES; ++i) {
            ck_assert_msg(ex[i] == r->exit_index[i] && pred[i] == r->pred[i], "%s: sample %d: sim %d/%d, run %d/%d",
                          specs[k], i, ex[i], pred[i], r->exit_index[i], r->pred[i]);
        }
        ck_assert_double_eq(sim.accuracy, r->accuracy);
        ck_assert_double_eq(sim.mean_exit, r->mean_exit);
        ck_assert_double_eq_tol(sim.flops_fraction, r->flops_fraction, 1e-9);
        for (int e = 0; e < 3; ++e) ck_assert_int_eq(sim.exit_histogram[e], r->exit_histogram[e]);
        ert_eval_result_free(r);
        ert_policy_free(p);
    }
    /* Without options: batches of the session's max_batch, no warm-up. */
    ert_policy *fixed0 = NULL;
    ck_assert_int_eq(ert_policy_parse("fixed:0", &fixed0), ERT_OK);
    ert_eval_result *r0 = NULL;
    ck_assert_int_eq(ert_evaluate(f.session, fixed0, f.data, NULL, &r0), ERT_OK);
    ck_assert_int_eq(r0->num_batches, (N_SAMPLES + 63) / 64);
    ck_assert_double_eq(r0->mean_exit, 0.0);
    ert_eval_result_free(r0);
    /* When an exit's answer was ready: -1 where its stage did not run (fixed:0 stops at
     * stage 0) and for bad arguments. */
    ert_profile prof;
    ck_assert_int_eq(ert_session_profile(f.session, &prof), ERT_OK);
    ck_assert_double_ge(ert_profile_exit_ready_ms(f.model, &prof, 0), 0.0);
    ck_assert_double_eq(ert_profile_exit_ready_ms(f.model, &prof, 2), -1.0);
    ck_assert_double_eq(ert_profile_exit_ready_ms(f.model, &prof, 3), -1.0);
    ck_assert_double_eq(ert_profile_exit_ready_ms(f.model, &prof, -1), -1.0);
    ck_assert_double_eq(ert_profile_exit_ready_ms(f.model, NULL, 0), -1.0);
    ert_policy_free(fixed0);
    ert_policy *sched = NULL;
    ck_assert_int_eq(ert_policy_parse("scheduled:hazard=0.3", &sched), ERT_OK);
    ert_sim_result sim;
    ck_assert_int_eq(ert_exit_table_simulate(t, sched, &sim, NULL, NULL), ERT_ERR_UNSUPPORTED);
    ert_policy_free(sched);
    /* Calibration statistics of every exit. */
    ert_calibration_stats st[3];
    ck_assert_int_eq(ert_exit_table_calibration(t, 1, st), ERT_OK);
    /* the figures calibration measures from its own runs at temperature 1; no NLL */
    ert_calibration_stats ref[3];
    const float ones[3] = {1.0f, 1.0f, 1.0f};
    ck_assert_int_eq(ert_calibration_measure(f.session, f.data, 64, ones, ref), ERT_OK);
    for (int e = 0; e < 3; ++e) {
        int64_t count = 0;
        for (int b = 0; b < ERT_ECE_BINS; ++b) count += st[e].bins[b].count;
        ck_assert_int_eq(count, N_SAMPLES);
        ck_assert(isnan(st[e].nll));
        ck_assert_double_eq(st[e].accuracy, ref[e].accuracy);
        ck_assert_double_eq_tol(st[e].ece, ref[e].ece, 1e-12);
        for (int b = 0; b < ERT_ECE_BINS; ++b) ck_assert_int_eq(st[e].bins[b].count, ref[e].bins[b].count);
    }
    ert_exit_table_free(t);
    close_fixture(&f);
}
END_TEST

static void same_latency(const ert_latency *a, const ert_latency *b) {
    ck_assert_double_eq_tol(a->mean, b->mean, 1e-12);
    ck_assert_double_eq_tol(a->p50, b->p50, 1e-12);
    ck_assert_double_eq_tol(a->p95, b->p95, 1e-12);
    ck_assert_double_eq_tol(a->p99, b->p99, 1e-12);
    ck_assert_double_eq_tol(a->max, b->max, 1e-12);
}

static void same_double(double a, double b) {
    if (isnan(b)) ck_assert(isnan(a));
    else ck_assert_double_eq_tol(a, b, 1e-12 * (1.0 + fabs(b)));
}

/* A sweep read back from its JSON has every field it was written with. */
static void same_sweep(const ert_sweep_result *back, const ert_sweep_result *r) {
    ck_assert_str_eq(back->model, r->model);
    ck_assert_str_eq(back->data, r->data);
    ck_assert_str_eq(back->device, r->device);
    ck_assert_str_eq(back->mode, r->mode);
    ck_assert_str_eq(back->dtype, r->dtype);
    ck_assert_str_eq(back->date, r->date);
    ck_assert_str_eq(back->exec, r->exec);
    ck_assert_str_eq(back->compaction, r->compaction);
    ck_assert_str_eq(back->calibration, r->calibration);
    ck_assert_int_eq(back->model_calibrated, r->model_calibrated);
    ck_assert_int_eq(back->batch, r->batch);
    ck_assert_int_eq(back->warmup, r->warmup);
    ck_assert_int_eq(back->reps, r->reps);
    ck_assert_int_eq(back->samples, r->samples);
    ck_assert_int_eq(back->num_exits, r->num_exits);
    same_double(back->flops_full, r->flops_full);
    for (int e = 0; e < r->num_exits; ++e) same_double(back->exit_flops_fraction[e], r->exit_flops_fraction[e]);
    ck_assert_int_eq(back->sim_mismatch, r->sim_mismatch);
    ck_assert_int_eq(back->num_rows, r->num_rows);
    for (int i = 0; i < r->num_rows; ++i) {
        const ert_sweep_row *a = &back->rows[i], *b = &r->rows[i];
        ck_assert_str_eq(a->policy, b->policy);
        ck_assert_str_eq(a->family, b->family);
        same_double(a->param, b->param);
        ck_assert_int_eq(a->calibrated, b->calibrated);
        ck_assert_int_eq(a->reference, b->reference);
        ck_assert_int_eq(a->samples, b->samples);
        same_double(a->accuracy, b->accuracy);
        same_double(a->mean_exit, b->mean_exit);
        same_double(a->flops_fraction, b->flops_fraction);
        same_double(a->throughput, b->throughput);
        ck_assert_int_eq(a->num_batches, b->num_batches);
        same_latency(&a->batch_ms, &b->batch_ms);
        same_latency(&a->sample_ms, &b->sample_ms);
        ck_assert_int_eq(a->num_exits, b->num_exits);
        for (int e = 0; e < b->num_exits; ++e) {
            ck_assert_int_eq(a->exit_histogram[e], b->exit_histogram[e]);
            ck_assert_int_eq(a->exit_correct[e], b->exit_correct[e]);
        }
        ck_assert_int_eq(a->sim_mismatch, b->sim_mismatch);
        ck_assert_int_eq(a->frontier_mean, b->frontier_mean);
        ck_assert_int_eq(a->frontier_p99, b->frontier_p99);
    }
}

static int count_family(const ert_sweep_result *r, const char *fam) {
    int n = 0;
    for (int i = 0; i < r->num_rows; ++i) n += strcmp(r->rows[i].family, fam) == 0;
    return n;
}

/* The progress steps of a sweep: the exit table's passes, then one step per round of a
 * batch of every point ("pass P of R, batch B of NB"), in order, ending at the total. */
typedef struct steps {
    int count, last_done, total, ordered;
    char first_round[64], last_round[64];
} steps;

static void on_step(void *user, const ert_sweep_progress *p) {
    steps *st = user;
    if (st->count++ > 0 && p->done < st->last_done) st->ordered = 0;
    st->last_done = p->done;
    st->total = p->total;
    if (strncmp(p->what, "pass ", 5) == 0) {
        if (!st->first_round[0]) snprintf(st->first_round, sizeof st->first_round, "%s", p->what);
        if (p->done < p->total) snprintf(st->last_round, sizeof st->last_round, "%s", p->what);
    }
}

START_TEST(sweep_rows_and_round_trip) {
    fixture f = open_fixture(test_spec, 64);
    ert_sweep_options so = ert_sweep_options_default();
    so.grid = 3;
    so.batch = 50;
    so.reps = 2;
    steps st = {.ordered = 1};
    so.progress = on_step;
    so.progress_user = &st;
    ert_sweep_result *r = NULL;
    ck_assert_int_eq(ert_sweep_run(f.session, f.data, &so, &r), ERT_OK);
    /* 3 exit-table passes + 2 passes x 6 batches (300 samples in batches of 50), then "done" */
    ck_assert_int_eq(st.total, 3 + 2 * 6);
    ck_assert_int_eq(st.last_done, st.total);
    ck_assert(st.ordered);
    ck_assert_str_eq(st.first_round, "pass 1 of 2, batch 1 of 6");
    ck_assert_str_eq(st.last_round, "pass 2 of 2, batch 6 of 6");
    ck_assert_str_eq(r->rows[0].policy, "none");
    ck_assert_int_eq(count_family(r, "oracle"), 1);
    ck_assert_int_ge(count_family(r, "confidence"), 2);
    ck_assert_int_ge(count_family(r, "entropy"), 2);
    ck_assert_int_ge(count_family(r, "margin"), 2);
    ck_assert_int_eq(count_family(r, "patience"), 1); /* 3 exits: patience:2 only */
    ck_assert_int_eq(count_family(r, "fixed"), 2);    /* fixed:0 and fixed:1 */
    ck_assert_int_eq(r->sim_mismatch, 0);
    ck_assert_int_gt(r->latency.batches, 0);
    int *on = malloc(sizeof *on * (size_t)r->num_rows);
    ck_assert_int_ge(ert_sweep_frontier(r->rows, r->num_rows, ERT_LATENCY_BATCH_MEAN, on), 1);
    for (int i = 0; i < r->num_rows; ++i) {
        const ert_sweep_row *w = &r->rows[i];
        int64_t total = 0;
        for (int e = 0; e < w->num_exits; ++e) total += w->exit_histogram[e];
        ck_assert_int_eq(total, N_SAMPLES);
        ck_assert_int_eq(w->num_batches, 2 * 6);
        ck_assert_int_eq(w->sim_mismatch, 0);
        ck_assert_int_eq(w->frontier_mean, on[i]);
        ck_assert(w->batch_ms.mean > 0 && w->batch_ms.p99 >= w->batch_ms.p50);
        ck_assert(w->sample_ms.p99 <= w->batch_ms.max + 1e-9); /* a sample is answered within its batch */
        ck_assert_int_eq(w->calibrated, strcmp(w->family, "confidence") && strcmp(w->family, "entropy") &&
                                                strcmp(w->family, "margin") ? -1 : 0);
        if (strcmp(w->policy, "fixed:0") == 0) ck_assert_double_eq(w->mean_exit, 0.0);
        if (w->reference) ck_assert(!w->frontier_mean && !w->frontier_p99);
    }
    /* Threshold rows of one family are distinct and ordered by FLOPs. */
    double prev = -1;
    for (int i = 0; i < r->num_rows; ++i)
        if (strcmp(r->rows[i].family, "confidence") == 0) {
            ck_assert(r->rows[i].flops_fraction >= prev);
            prev = r->rows[i].flops_fraction;
        }
    free(on);

    char dir[256]; /* tu_tmpdir's buffers are reused by later calls (tu_cli makes one per run) */
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    char sub[512];
    snprintf(sub, sizeof sub, "%s/a/b", dir); /* created */
    ck_assert_int_eq(ert_sweep_write(r, sub), ERT_OK);
    ert_sweep_result *back = NULL;
    ck_assert_int_eq(ert_sweep_read(sub, &back), ERT_OK);
    ck_assert_str_eq(back->model, "tiny-f32");
    ck_assert_str_eq(back->compaction, "fill"); /* auto, on the cpu */
    ck_assert_int_eq(back->batch, 50);
    same_sweep(back, r);
    ert_sweep_result_free(back);
    /* the fitted latency model is written for readers of the file, every stage */
    char path[600];
    snprintf(path, sizeof path, "%s/sweep.json", sub);
    cJSON *j = tu_json_load(path);
    const cJSON *lm = cJSON_GetObjectItem(j, "latency_model");
    ck_assert_double_eq(cJSON_GetObjectItem(lm, "batches")->valuedouble, (double)r->latency.batches);
    const char *keys[] = {"stage_fixed_ms", "stage_per_row_ms"};
    for (int k = 0; k < 2; ++k) {
        const cJSON *a = cJSON_GetObjectItem(lm, keys[k]);
        ck_assert_int_eq(cJSON_GetArraySize(a), r->latency.num_stages);
        for (int i = 0; i < r->latency.num_stages; ++i)
            ck_assert_double_eq_tol(cJSON_GetArrayItem(a, i)->valuedouble,
                                    k ? r->latency.per_row_ms[i] : r->latency.fixed_ms[i], 1e-12);
    }
    cJSON_Delete(j);
    ck_assert_int_eq(ert_sweep_read("/nonexistent/sweep.json", &back), ERT_ERR_IO);
    ck_assert_int_eq(ert_sweep_read(NULL, &back), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(ert_sweep_read(sub, NULL), ERT_ERR_INVALID_ARGUMENT);
    /* a directory cannot be made under a file */
    snprintf(path, sizeof path, "%s/sweep.json/c", sub);
    ck_assert_int_eq(ert_sweep_write(r, path), ERT_ERR_IO);
    ck_assert(tu_error_has("cannot create"));
    snprintf(path, sizeof path, "%s/sweep.json", sub); /* a file where the directory should be */
    ck_assert_int_eq(ert_sweep_write(r, path), ERT_ERR_IO);
    ck_assert(tu_error_has("is not a directory"));
    /* a file holding only the format and no rows: the defaults */
    snprintf(path, sizeof path, "%s/minimal.json", dir);
    tu_write_text(path, "{\"format\": \"exitrt-sweep\", \"rows\": []}");
    ck_assert_int_eq(ert_sweep_read(path, &back), ERT_OK);
    ck_assert_int_eq(back->num_rows, 0);
    ck_assert_int_eq(back->batch, 0);
    ck_assert_int_eq(back->warmup, 0);
    ck_assert_int_eq(back->reps, 1);
    ck_assert_int_eq(back->sim_mismatch, -1);
    ck_assert_int_eq(back->model_calibrated, 0);
    ck_assert_str_eq(back->exec, "eager");
    ck_assert_str_eq(back->compaction, "gather");
    ert_sweep_result_free(back);
    /* a row without its policy */
    tu_write_text(path, "{\"format\": \"exitrt-sweep\", \"rows\": [{\"accuracy\": 0.5, \"batch_latency_ms\": {}, "
                        "\"sample_latency_ms\": {}}]}");
    ck_assert_int_eq(ert_sweep_read(path, &back), ERT_ERR_FORMAT);
    ck_assert(tu_error_has("row 0 lacks policy, accuracy or the latencies"));
    /* ... or without either latency */
    tu_write_text(path, "{\"format\": \"exitrt-sweep\", \"rows\": [{\"policy\": \"none\", \"accuracy\": 0.5, "
                        "\"batch_latency_ms\": {}}]}");
    ck_assert_int_eq(ert_sweep_read(path, &back), ERT_ERR_FORMAT);
    tu_write_text(path, "{\"format\": \"exitrt-sweep\", \"rows\": [{\"policy\": \"none\", \"accuracy\": 0.5, "
                        "\"sample_latency_ms\": {}}]}");
    ck_assert_int_eq(ert_sweep_read(path, &back), ERT_ERR_FORMAT);
    ert_sweep_result_free(r);

    /* No labels: refused with a reason. */
    int32_t *labels = f.data->labels;
    f.data->labels = NULL;
    ck_assert_int_eq(ert_sweep_run(f.session, f.data, &so, &r), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("no labels"));
    f.data->labels = labels;
    close_fixture(&f);
}
END_TEST

START_TEST(per_exit_search_respects_its_budget) {
    fixture f = open_fixture(val_spec, 64);
    ert_exit_table *t = NULL;
    ck_assert_int_eq(ert_exit_table_build(f.session, f.data, 64, &t), ERT_OK);
    const double budgets[] = {0.55, 0.7, 0.9};
    for (int k = 0; k < 3; ++k) {
        ert_threshold_search_options o = ert_threshold_search_options_default();
        o.budget_flops = budgets[k];
        ert_threshold_search_result res;
        ck_assert_int_eq(ert_threshold_search(t, &o, &res), ERT_OK);
        ck_assert_int_eq(res.num_thresholds, 2);
        ck_assert(res.search.flops_fraction <= budgets[k]);
        ck_assert(res.search.accuracy >= res.shared.accuracy); /* it starts from the best shared one */
        /* The spec runs as simulated: measured on the same validation data. */
        ert_policy *p = NULL;
        ck_assert_int_eq(ert_policy_parse(res.policy, &p), ERT_OK);
        ert_sweep_row row;
        memset(&row, 0, sizeof row);
        ck_assert_int_eq(ert_sweep_measure(f.session, p, f.data, 64, 0, 1, NULL, t, &row), ERT_OK);
        ck_assert_int_eq(row.sim_mismatch, 0);
        ck_assert_double_eq(row.accuracy, res.search.accuracy);
        ck_assert_double_eq_tol(row.flops_fraction, res.search.flops_fraction, 1e-9);
        ck_assert(row.flops_fraction <= budgets[k] + 1e-9);
        ert_policy_free(p);
    }
    /* A budget below the cheapest point is refused; no budget at all too. */
    ert_threshold_search_options o = ert_threshold_search_options_default();
    ert_threshold_search_result res;
    o.budget_flops = 0.01;
    ck_assert_int_eq(ert_threshold_search(t, &o, &res), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("cheapest"));
    o.budget_flops = NAN;
    ck_assert_int_eq(ert_threshold_search(t, &o, &res), ERT_ERR_INVALID_ARGUMENT);
    /* A latency budget through a fitted latency model: the prediction respects it. */
    ert_latency_model lm;
    ert_latency_model_init(&lm);
    const char *specs[] = {"none", "fixed:0", "confidence:0.5", "confidence:0.8", "entropy:0.6"};
    for (int k = 0; k < 5; ++k) {
        ert_policy *p = NULL;
        ck_assert_int_eq(ert_policy_parse(specs[k], &p), ERT_OK);
        ert_sweep_row row;
        ck_assert_int_eq(ert_sweep_measure(f.session, p, f.data, 64, 1, 1, &lm, NULL, &row), ERT_OK);
        ert_policy_free(p);
    }
    ck_assert_int_eq(ert_latency_model_finish(&lm), ERT_OK);
    int32_t all_last[N_SAMPLES], all_first[N_SAMPLES];
    for (int i = 0; i < N_SAMPLES; ++i) all_last[i] = 2, all_first[i] = 0;
    const double slow = ert_latency_model_predict(&lm, f.model, all_last, N_SAMPLES, 64);
    const double fast = ert_latency_model_predict(&lm, f.model, all_first, N_SAMPLES, 64);
    ck_assert(fast < slow);
    o = ert_threshold_search_options_default();
    o.budget_ms = 0.5 * (fast + slow);
    o.latency = &lm;
    o.batch = 64;
    ck_assert_int_eq(ert_threshold_search(t, &o, &res), ERT_OK);
    ck_assert(res.predicted_ms <= o.budget_ms);
    ert_exit_table_free(t);
    close_fixture(&f);
}
END_TEST

static ert_sim_result simulate_spec(const ert_exit_table *t, const char *spec) {
    ert_policy *p = NULL;
    ck_assert_msg(ert_policy_parse(spec, &p) == ERT_OK, "%s: %s", spec, ert_last_error());
    ert_sim_result sim;
    ck_assert_int_eq(ert_exit_table_simulate(t, p, &sim, NULL, NULL), ERT_OK);
    ert_policy_free(p);
    return sim;
}

/* The search's answer is a coordinate-wise optimum. With more candidates than samples,
 * each exit's candidates are all of its scores (as a spec rounds them) and 0 and 1; moving
 * any one exit's threshold to any of them, the others kept, must not give a run within
 * the budget that is better (more correct, or as many for fewer FLOPs), simulated from
 * the table. The shared baseline has one threshold. */
START_TEST(per_exit_search_is_a_coordinate_optimum) {
    fixture f = open_fixture(val_spec, 64);
    ert_exit_table *t = NULL;
    ck_assert_int_eq(ert_exit_table_build(f.session, f.data, 64, &t), ERT_OK);
    const int E = t->num_exits, C = t->classes;
    ck_assert_int_eq(E, 3); /* the specs below name two thresholds */
    const ert_policy_kind kinds[] = {ERT_POLICY_CONFIDENCE, ERT_POLICY_ENTROPY, ERT_POLICY_MARGIN};
    const char *names[] = {"confidence", "entropy", "margin"};
    const double budgets[] = {0.6, 0.8};
    static float cand[N_SAMPLES + 2];
    int moves = 0;
    for (int k = 0; k < 3; ++k)
        for (int b = 0; b < 2; ++b) {
            ert_threshold_search_options o = ert_threshold_search_options_default();
            o.kind = kinds[k];
            o.budget_flops = budgets[b];
            o.candidates = 2 * N_SAMPLES;
            o.max_rounds = 50;
            ert_threshold_search_result res;
            ck_assert_msg(ert_threshold_search(t, &o, &res) == ERT_OK, "%s", ert_last_error());
            ck_assert_int_lt(res.rounds, o.max_rounds);
            ck_assert_ptr_null(strchr(res.shared_policy, ','));
            const int64_t best_correct = llround(res.search.accuracy * N_SAMPLES);
            for (int e = 0; e < E - 1; ++e) {
                int nc = 0;
                for (int i = 0; i < N_SAMPLES; ++i) {
                    const ert_softmax_stats st = ert_softmax_stats_compute(t->logits + ((size_t)i * E + e) * C, C,
                                                                           1.0f / ert_model_temperature(f.model, e));
                    const float sc = ert_exit_score(kinds[k], &st);
                    if (!st.finite || isnan(sc)) continue;
                    const float q = ert_threshold_round(sc);
                    cand[nc++] = q < 0.0f ? 0.0f : q > 1.0f ? 1.0f : q;
                }
                cand[nc++] = 0.0f;
                cand[nc++] = 1.0f;
                for (int j = 0; j < nc; ++j) {
                    float thr[ERT_MAX_EXITS];
                    memcpy(thr, res.threshold, sizeof thr);
                    thr[e] = cand[j];
                    char spec[256];
                    snprintf(spec, sizeof spec, "%s:%.6g,%.6g", names[k], thr[0], thr[1]);
                    const ert_sim_result sim = simulate_spec(t, spec);
                    const int64_t correct = llround(sim.accuracy * N_SAMPLES);
                    const int better = correct > best_correct ||
                                       (correct == best_correct && sim.flops_fraction < res.search.flops_fraction - 1e-12);
                    ck_assert_msg(!(sim.flops_fraction <= budgets[b] && better),
                                  "%s within %.2f: '%s' gives %lld correct at %.6f FLOPs, better than the answer '%s' "
                                  "(%lld at %.6f)",
                                  names[k], budgets[b], spec, (long long)correct, sim.flops_fraction, res.policy,
                                  (long long)best_correct, res.search.flops_fraction);
                    ++moves;
                }
            }
        }
    ck_assert_int_gt(moves, 1000);
    ert_exit_table_free(t);
    close_fixture(&f);
}
END_TEST

/* Calibration in the loop, on a copy of the tiny model with a calibration.json: `on` runs
 * the threshold families with the model's temperatures, `off` at temperature 1 (their
 * specs say ;temp=1), `both` each family both ways; fixed and the references do not
 * depend on temperature and run once (fixed:0 and fixed:1: the last exit's is `none`). */
START_TEST(sweep_calibration_modes) {
    const char *dir = tu_copy_tiny();
    char path[512];
    snprintf(path, sizeof path, "%s/calibration.json", dir);
    tu_write_text(path, "{\"temperatures\": [2.0, 0.5, 1.0]}\n");
    fixture f = open_fixture_at(dir, test_spec, 64);
    const char *fams[] = {"confidence", "fixed"};
    const ert_calibration_use modes[] = {ERT_CALIBRATION_ON, ERT_CALIBRATION_OFF, ERT_CALIBRATION_BOTH};
    const char *mode_names[] = {"on", "off", "both"};
    for (int k = 0; k < 3; ++k) {
        ert_sweep_options o = ert_sweep_options_default();
        o.policies = fams;
        o.num_policies = 2;
        o.grid = 2;
        o.batch = 64;
        o.warmup = 0;
        o.calibration = modes[k];
        ert_sweep_result *r = NULL;
        ck_assert_msg(ert_sweep_run(f.session, f.data, &o, &r) == ERT_OK, "%s", ert_last_error());
        ck_assert_str_eq(r->calibration, mode_names[k]);
        int cal = 0, uncal = 0, fixed_mask = 0, fixed_rows = 0;
        for (int i = 0; i < r->num_rows; ++i) {
            const ert_sweep_row *w = &r->rows[i];
            const int temp1 = strstr(w->policy, ";temp=1") != NULL;
            if (strcmp(w->family, "confidence") == 0) {
                ck_assert_msg(w->calibrated == !temp1, "%s: row '%s' calibrated=%d", mode_names[k], w->policy,
                              w->calibrated);
                cal += w->calibrated == 1;
                uncal += w->calibrated == 0;
            } else if (strcmp(w->family, "fixed") == 0) {
                ck_assert_int_eq(w->calibrated, -1);
                fixed_mask |= 1 << (int)w->param;
                ++fixed_rows;
            }
        }
        ck_assert_msg(modes[k] == ERT_CALIBRATION_OFF ? cal == 0 : cal >= 1, "%s: %d calibrated rows", mode_names[k], cal);
        ck_assert_msg(modes[k] == ERT_CALIBRATION_ON ? uncal == 0 : uncal >= 1, "%s: %d rows at temperature 1",
                      mode_names[k], uncal);
        ck_assert_int_eq(fixed_rows, 2);
        ck_assert_int_eq(fixed_mask, (1 << 0) | (1 << 1));
        ck_assert_int_eq(r->sim_mismatch, 0);
        ck_assert_int_eq(r->model_calibrated, 1);
        /* and read back as written */
        char out[600];
        snprintf(out, sizeof out, "%s/sweep-%s", dir, mode_names[k]);
        ck_assert_int_eq(ert_sweep_write(r, out), ERT_OK);
        ert_sweep_result *back = NULL;
        ck_assert_int_eq(ert_sweep_read(out, &back), ERT_OK);
        same_sweep(back, r);
        ert_sweep_result_free(back);
        ert_sweep_result_free(r);
    }
    close_fixture(&f);
}
END_TEST

/* The shared grid: up to `grid` operating points in strictly ascending FLOPs (no two the
 * same); a grid below 1 is refused. */
START_TEST(shared_grid_points_are_distinct) {
    fixture f = open_fixture(val_spec, 64);
    ert_exit_table *t = NULL;
    ck_assert_int_eq(ert_exit_table_build(f.session, f.data, 64, &t), ERT_OK);
    const ert_policy_kind kinds[] = {ERT_POLICY_CONFIDENCE, ERT_POLICY_ENTROPY, ERT_POLICY_MARGIN};
    const char *names[] = {"confidence", "entropy", "margin"};
    float thr[64];
    int count = -1;
    ck_assert_int_eq(ert_thresholds_grid(t, ERT_POLICY_CONFIDENCE, 0, 0, thr, &count), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("bad argument"));
    ck_assert_int_eq(ert_thresholds_grid(NULL, ERT_POLICY_CONFIDENCE, 0, 4, thr, &count), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(ert_thresholds_grid(t, ERT_POLICY_CONFIDENCE, 0, 4, NULL, &count), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(ert_thresholds_grid(t, ERT_POLICY_CONFIDENCE, 0, 4, thr, NULL), ERT_ERR_INVALID_ARGUMENT);
    for (int k = 0; k < 3; ++k) {
        ck_assert_int_eq(ert_thresholds_grid(t, kinds[k], 0, 40, thr, &count), ERT_OK);
        ck_assert_int_gt(count, 5);
        ck_assert_int_le(count, 40);
        ert_sim_result prev = {0};
        for (int j = 0; j < count; ++j) {
            char spec[64];
            snprintf(spec, sizeof spec, "%s:%.6g", names[k], thr[j]);
            const ert_sim_result sim = simulate_spec(t, spec);
            if (j > 0)
                ck_assert_msg(sim.flops_fraction > prev.flops_fraction, "%s: point %d's FLOPs %.6f after %.6f", names[k],
                              j, sim.flops_fraction, prev.flops_fraction);
            prev = sim;
        }
    }
    ert_exit_table_free(t);
    close_fixture(&f);
}
END_TEST

/* Extra points join the plan with their own family and param, kept even when a family
 * (or `none`) has the same spec, and are measured like every other point; one without a
 * spec is refused by message. */
START_TEST(sweep_extra_points) {
    fixture f = open_fixture(test_spec, 64);
    const ert_sweep_point extra[] = {{"confidence:0.55", "per-exit", 0.7}, {"none", "shared", 0.7}};
    const char *fams[] = {"fixed"};
    ert_sweep_options so = ert_sweep_options_default();
    so.policies = fams;
    so.num_policies = 1;
    so.batch = 64;
    so.extra = extra;
    so.num_extra = 2;
    ert_sweep_result *r = NULL;
    ck_assert_msg(ert_sweep_run(f.session, f.data, &so, &r) == ERT_OK, "%s", ert_last_error());
    ck_assert_int_eq(count_family(r, "per-exit"), 1);
    ck_assert_int_eq(count_family(r, "shared"), 1);
    int none_rows = 0;
    for (int i = 0; i < r->num_rows; ++i) {
        const ert_sweep_row *w = &r->rows[i];
        none_rows += strcmp(w->policy, "none") == 0;
        if (strcmp(w->family, "per-exit") == 0) {
            ck_assert_str_eq(w->policy, "confidence:0.55");
            ck_assert_double_eq(w->param, 0.7);
            ck_assert_int_eq(w->sim_mismatch, 0);
            ck_assert_int_eq(w->num_batches, 5);
        }
    }
    ck_assert_int_eq(none_rows, 2);
    ck_assert_int_eq(r->sim_mismatch, 0);
    ert_sweep_result_free(r);
    const ert_sweep_point bad[] = {{NULL, "per-exit", 0.7}};
    so.extra = bad;
    so.num_extra = 1;
    ck_assert_int_eq(ert_sweep_run(f.session, f.data, &so, &r), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("extra point 0 has no spec or family"));
    close_fixture(&f);
}
END_TEST

/* Interleaved measurement gives each job what it gives alone: jobs on two datasets of
 * different sizes (300 clean samples, 130 rotated ones: 5 and 3 batches of 64), each row
 * against ert_sweep_measure of the same job; the exit-table check holds on the interleaved
 * runs; a job without data is refused by message. */
START_TEST(interleaved_jobs_measure_what_each_does_alone) {
    fixture f = open_fixture(test_spec, 64);
    ert_dataset *rot = NULL;
    ck_assert_int_eq(ert_dataset_copy(f.data, &rot), ERT_OK);
    ck_assert_int_eq(ert_shift_apply(rot, ERT_SHIFT_ROTATE, 3, 7), ERT_OK);
    rot->n = 130;
    ert_exit_table *t = NULL;
    ck_assert_int_eq(ert_exit_table_build(f.session, f.data, 64, &t), ERT_OK);
    const char *specs[] = {"none", "confidence:0.6", "patience:2", "fixed:0"};
    ert_policy *pols[4];
    ert_measure_job jobs[8];
    for (int k = 0; k < 4; ++k) {
        ck_assert_int_eq(ert_policy_parse(specs[k], &pols[k]), ERT_OK);
        jobs[2 * k] = (ert_measure_job){pols[k], f.data, t};
        jobs[2 * k + 1] = (ert_measure_job){pols[k], rot, NULL};
    }
    ert_sweep_options o = ert_sweep_options_default();
    o.batch = 64;
    o.reps = 2;
    steps st = {.ordered = 1};
    o.progress = on_step;
    o.progress_user = &st;
    ert_sweep_row rows[8];
    memset(rows, 0, sizeof rows);
    ck_assert_msg(ert_sweep_measure_jobs(f.session, jobs, 8, &o, NULL, rows) == ERT_OK, "%s", ert_last_error());
    ck_assert_int_eq(st.total, 2 * 5);
    ck_assert_str_eq(st.last_round, "pass 2 of 2, batch 5 of 5");
    for (int j = 0; j < 8; ++j) {
        ert_sweep_row alone;
        memset(&alone, 0, sizeof alone);
        ck_assert_int_eq(ert_sweep_measure(f.session, jobs[j].policy, jobs[j].data, 64, 1, 1, NULL, jobs[j].table, &alone),
                         ERT_OK);
        ck_assert_int_eq(rows[j].samples, j % 2 ? 130 : N_SAMPLES);
        ck_assert_int_eq(rows[j].num_batches, 2 * (j % 2 ? 3 : 5));
        ck_assert_msg(rows[j].accuracy == alone.accuracy, "job %d: accuracy %g interleaved, %g alone", j,
                      rows[j].accuracy, alone.accuracy);
        ck_assert(rows[j].mean_exit == alone.mean_exit);
        ck_assert(fabs(rows[j].flops_fraction - alone.flops_fraction) < 1e-12);
        for (int e = 0; e < 3; ++e) ck_assert_int_eq(rows[j].exit_histogram[e], alone.exit_histogram[e]);
        ck_assert_int_eq(rows[j].sim_mismatch, j % 2 ? -1 : 0);
        ck_assert(rows[j].batch_ms.mean > 0 && rows[j].sample_ms.p99 <= rows[j].batch_ms.max + 1e-9);
    }
    /* the rotated data moves the exits: the jobs did not share outputs */
    ck_assert(rows[2].mean_exit != rows[3].mean_exit || rows[2].accuracy != rows[3].accuracy);
    /* a run that fails names its point and data: a NaN in sample 200 (batch 3 of 5) */
    ert_dataset *nan = NULL;
    ck_assert_int_eq(ert_dataset_copy(f.data, &nan), ERT_OK);
    snprintf(nan->name, sizeof nan->name, "poisoned");
    nan->x[200 * nan->sample_size + 5] = NAN;
    jobs[5].data = nan;
    ck_assert_int_eq(ert_sweep_measure_jobs(f.session, jobs, 8, &o, NULL, rows), ERT_ERR_NUMERIC);
    ck_assert_msg(tu_error_has("sweep point 'patience:2' on 'poisoned': input sample 8, element 5: NaN"), "%s",
                  ert_last_error());
    ert_dataset_free(nan);
    jobs[3].data = NULL;
    ck_assert_int_eq(ert_sweep_measure_jobs(f.session, jobs, 8, &o, NULL, rows), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("job 3 has no policy or data"));
    for (int k = 0; k < 4; ++k) ert_policy_free(pols[k]);
    ert_exit_table_free(t);
    ert_dataset_free(rot);
    close_fixture(&f);
}
END_TEST

/* "DATA"/"VAL" in args are replaced by the generated splits. */
static int cli_fmt(const char *fmt, const char *dir) {
    char args[8192];
    size_t at = 0;
    for (const char *p = fmt; *p && at < sizeof args - 1;) {
        if (strncmp(p, "DATA", 4) == 0) at += (size_t)snprintf(args + at, sizeof args - at, "%s", test_spec), p += 4;
        else if (strncmp(p, "VAL", 3) == 0) at += (size_t)snprintf(args + at, sizeof args - at, "%s", val_spec), p += 3;
        else if (strncmp(p, "DIR", 3) == 0) at += (size_t)snprintf(args + at, sizeof args - at, "%s", dir), p += 3;
        else args[at++] = *p++;
    }
    args[at] = '\0';
    return cli(args);
}

static int file_exists(const char *dir, const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat sb;
    return stat(p, &sb) == 0;
}

START_TEST(cli_sweep_select_eval) {
    char dir[256]; /* tu_tmpdir's buffers are reused by later calls (tu_cli makes one per run) */
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    /* fill compaction: the measured runs must still match the exit-table simulation */
    ck_assert_int_eq(cli_fmt("sweep --model test/fixtures/tiny-f32 --data DATA --out DIR/s --grid 3 --batch 64 "
                             "--per-exit-search --budget-flops 0.7 --val VAL --compaction fill",
                             dir),
                     0);
    ck_assert_ptr_nonnull(strstr(out_text, "| fill compaction |"));
    ck_assert_ptr_nonnull(strstr(out_text, "Pareto frontier"));
    ck_assert_ptr_nonnull(strstr(out_text, "per-exit thresholds"));
    ck_assert_ptr_nonnull(strstr(out_text, "exit-table check: 0 sample decisions differ"));
    char sdir[600];
    snprintf(sdir, sizeof sdir, "%s/s", dir);
    ck_assert(file_exists(sdir, "sweep.csv") && file_exists(sdir, "sweep.json") && file_exists(sdir, "reliability.json"));
    ert_sweep_result *written = NULL;
    ck_assert_int_eq(ert_sweep_read(sdir, &written), ERT_OK);
    ck_assert_str_eq(written->compaction, "fill");
    ert_sweep_result_free(written);

    /* CSV: the header's columns, one line per JSON row, every line as wide as the header. */
    char path[700];
    snprintf(path, sizeof path, "%s/sweep.csv", sdir);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    char line[4096];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "policy,family,param,calibrated,reference,samples,accuracy,mean_exit,flops_fraction,"
                           "throughput,batch_mean_ms,batch_p50_ms,batch_p95_ms,batch_p99_ms,sample_mean_ms,"
                           "sample_p50_ms,sample_p95_ms,sample_p99_ms,frontier_mean,frontier_p99,exit_0,exit_1,exit_2\n");
    int csv_rows = 0;
    while (fgets(line, sizeof line, f)) {
        /* commas outside the quoted policy */
        int commas = 0, quoted = 0;
        for (const char *c = line; *c; ++c) {
            if (*c == '"') quoted = !quoted;
            else if (*c == ',' && !quoted) commas++;
        }
        ck_assert_int_eq(commas, 22);
        csv_rows++;
    }
    fclose(f);

    ert_sweep_result *r = NULL;
    ck_assert_int_eq(ert_sweep_read(sdir, &r), ERT_OK);
    ck_assert_int_eq(csv_rows, r->num_rows);
    ck_assert(r->has_search);
    ck_assert_int_eq(count_family(r, "per-exit"), 1);
    /* a FLOPs budget alone: the answers ran with the grid, the prediction from its timings */
    const char *pm = strstr(out_text, ", predicted ");
    ck_assert_msg(pm && strtod(pm + 12, NULL) > 0, "no predicted latency in: %s", out_text);
    int *on = malloc(sizeof *on * (size_t)r->num_rows);
    ert_sweep_frontier(r->rows, r->num_rows, ERT_LATENCY_BATCH_MEAN, on);
    for (int i = 0; i < r->num_rows; ++i) ck_assert_int_eq(on[i], r->rows[i].frontier_mean);
    ert_sweep_frontier(r->rows, r->num_rows, ERT_LATENCY_BATCH_P99, on);
    for (int i = 0; i < r->num_rows; ++i) ck_assert_int_eq(on[i], r->rows[i].frontier_p99);
    for (int i = 0; i < r->num_rows; ++i)
        if (strcmp(r->rows[i].family, "per-exit") == 0) ck_assert_int_eq(r->rows[i].sim_mismatch, 0);

    /* select under a budget between the fastest and the slowest point */
    double lo = INFINITY, hi = 0;
    for (int i = 0; i < r->num_rows; ++i) {
        lo = fmin(lo, r->rows[i].batch_ms.mean);
        hi = fmax(hi, r->rows[i].batch_ms.mean);
    }
    char args[1024];
    snprintf(args, sizeof args, "select --from DIR/s --latency-budget %.6f", 0.5 * (lo + hi));
    ck_assert_int_eq(cli_fmt(args, dir), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "on the Pareto frontier of accuracy vs batch-mean latency: yes"));
    snprintf(path, sizeof path, "%s/policy.json", sdir);
    cJSON *pj = tu_json_load(path);
    const char *chosen = cJSON_GetObjectItem(pj, "policy")->valuestring;
    int found = -1;
    for (int i = 0; i < r->num_rows; ++i)
        if (strcmp(r->rows[i].policy, chosen) == 0) found = i;
    ck_assert_int_ge(found, 0);
    ck_assert(r->rows[found].frontier_mean);
    ck_assert(r->rows[found].batch_ms.mean <= 0.5 * (lo + hi));
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(pj, "on_frontier")));
    cJSON_Delete(pj);
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse(path, &p), ERT_OK);
    ert_policy_free(p);
    ck_assert_int_eq(cli_fmt("eval --model test/fixtures/tiny-f32 --data DATA --policy DIR/s/policy.json", dir), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "accuracy"));

    /* p99 budget, relative budget, accuracy target, JSON output, another file name */
    snprintf(args, sizeof args, "select --from DIR/s/sweep.json --latency-budget 80%% --percentile 99 --json --out DIR/p99.json");
    ck_assert_int_eq(cli_fmt(args, dir), 0);
    cJSON *sj = cJSON_Parse(out_text);
    ck_assert_ptr_nonnull(sj);
    ck_assert_str_eq(cJSON_GetObjectItem(sj, "metric")->valuestring, "batch-p99");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(sj, "on_frontier")));
    cJSON_Delete(sj);
    ck_assert_int_eq(cli_fmt("select --from DIR/s --min-accuracy 1%", dir), 0);
    ck_assert_int_eq(cli_fmt("select --from DIR/s --min-accuracy 0.5 --latency sample --percentile 95", dir), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "sample-p95"));

    /* one-line errors */
    struct {
        const char *args, *needle;
    } bad[] = {
        {"select --from DIR/s --latency-budget 0.000001", "no operating point meets the query"},
        {"select --from DIR/s", "give --latency-budget MS or --min-accuracy A"},
        {"select --from DIR/s --min-accuracy 2", "--min-accuracy '2'"},
        {"select --from DIR/s --latency-budget 5 --percentile 90", "--percentile '90'"},
        {"select --from DIR/nowhere --latency-budget 5", "cannot open"},
        {"sweep --model test/fixtures/tiny-f32 --data DATA", "--out DIR is required"},
        {"sweep --model test/fixtures/tiny-f32 --data DATA --out DIR/x --per-exit-search", "needs a budget"},
        {"sweep --model test/fixtures/tiny-f32 --data DATA --out DIR/x --per-exit-search --budget-flops 0.5 --val DATA",
         "choose thresholds on other data"},
        {"sweep --model test/fixtures/tiny-f32 --data DATA --out DIR/x --policies confidence,bogus", "unknown kind 'bogus'"},
        {"sweep --model test/fixtures/tiny-f32 --data DATA --out DIR/x --shift fog", "--shift 'fog'"},
        {"sweep --model test/fixtures/tiny-f32 --data DATA --out DIR/x --calibration maybe", "--calibration 'maybe'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; ++i) {
        ck_assert_msg(cli_fmt(bad[i].args, dir) == 1, "%s: expected exit 1", bad[i].args);
        ck_assert_msg(strstr(err_text, bad[i].needle) != NULL, "%s: stderr '%s' lacks '%s'", bad[i].args, err_text,
                      bad[i].needle);
        ck_assert_msg(lines(err_text) == 1, "%s: not one line: %s", bad[i].args, err_text);
    }
    free(on);
    ert_sweep_result_free(r);
}
END_TEST

START_TEST(cli_sweep_options) {
    char dir[256]; /* tu_tmpdir's buffers are reused by later calls (tu_cli makes one per run) */
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    /* explicit specs, calibration both (the fixture has no calibration: one setting),
     * a corruption, repetitions */
    ck_assert_int_eq(cli_fmt("sweep --model test/fixtures/tiny-f32 --data DATA --out DIR --policies "
                             "confidence,entropy:0.5,fixed:1 --grid 2 --calibration both --shift rotate --severity 2 "
                             "--reps 2 --warmup 0 --no-oracle --limit 150",
                             dir),
                     0);
    ert_sweep_result *r = NULL;
    ck_assert_int_eq(ert_sweep_read(dir, &r), ERT_OK);
    ck_assert_str_eq(r->calibration, "none");
    ck_assert_str_eq(r->shift, "rotate");
    ck_assert_int_eq(r->shift_severity, 2);
    ck_assert_int_eq(r->samples, 150);
    ck_assert_int_eq(count_family(r, "oracle"), 0);
    ck_assert_int_eq(count_family(r, "entropy"), 1);
    ck_assert_int_eq(count_family(r, "fixed"), 1);
    ck_assert_int_eq(count_family(r, "confidence"), 2);
    ert_sweep_result_free(r);
    /* A latency budget as a share of the `none` point, through the fitted latency model:
     * feasible unless the machine made `none` look faster than the cheapest prediction. */
    char sub[300];
    snprintf(sub, sizeof sub, "%s/ms", dir);
    const int rc = cli_fmt("sweep --model test/fixtures/tiny-f32 --data DATA --out DIR/ms --grid 2 --policies fixed "
                           "--per-exit-search --budget-ms 95% --val VAL",
                           dir);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(ert_sweep_read(sub, &r), ERT_OK);
    if (r->has_search) {
        ck_assert(r->search_budget_ms > 0);
        ck_assert_int_eq(count_family(r, "per-exit"), 1);
    } else {
        ck_assert_ptr_nonnull(strstr(err_text, "per-exit search skipped"));
        ck_assert_ptr_nonnull(strstr(err_text, "cheapest"));
    }
    ert_sweep_result_free(r);
    /* A FLOPs budget nothing can meet: the sweep is kept, the search skipped. */
    ck_assert_int_eq(cli_fmt("sweep --model test/fixtures/tiny-f32 --data DATA --out DIR/none --grid 1 --policies fixed "
                             "--per-exit-search --budget-flops 0.01 --val VAL",
                             dir),
                     0);
    ck_assert_ptr_nonnull(strstr(err_text, "per-exit search skipped"));
    snprintf(sub, sizeof sub, "%s/none", dir);
    ck_assert_int_eq(ert_sweep_read(sub, &r), ERT_OK);
    ck_assert(!r->has_search);
    ck_assert_int_eq(count_family(r, "per-exit"), 0);
    ert_sweep_result_free(r);
    const char *cmds[] = {"sweep --help", "select --help", "shift-report --help"};
    for (int i = 0; i < 3; ++i) {
        ck_assert_int_eq(cli(cmds[i]), 0);
        ck_assert_ptr_nonnull(strstr(out_text, "usage: exitrt"));
    }
}
END_TEST

START_TEST(cli_shift_report) {
    char dir[256]; /* tu_tmpdir's buffers are reused by later calls (tu_cli makes one per run) */
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    ck_assert_int_eq(cli_fmt("shift-report --model test/fixtures/tiny-f32 --data DATA --out DIR --policy none "
                             "--policy confidence:0.5 --shifts translate,contrast --severities 1,5 --batch 50",
                             dir),
                     0);
    ck_assert_ptr_nonnull(strstr(out_text, "summary"));
    char path[600];
    snprintf(path, sizeof path, "%s/shift.json", dir);
    cJSON *j = tu_json_load(path);
    const cJSON *rows = cJSON_GetObjectItem(j, "rows");
    ck_assert_int_eq(cJSON_GetArraySize(rows), (1 + 2 * 2) * 2);
    const cJSON *row;
    cJSON_ArrayForEach(row, rows) {
        const char *shift = cJSON_GetObjectItem(row, "shift")->valuestring;
        const cJSON *d = cJSON_GetObjectItem(row, "delta");
        if (strcmp(shift, "none") == 0) {
            ck_assert_double_eq(cJSON_GetObjectItem(d, "accuracy")->valuedouble, 0.0);
            ck_assert_double_eq(cJSON_GetObjectItem(d, "mean_exit")->valuedouble, 0.0);
        }
        if (strcmp(cJSON_GetObjectItem(row, "policy")->valuestring, "none") == 0)
            ck_assert_double_eq(cJSON_GetObjectItem(row, "mean_exit")->valuedouble, 2.0);
        ck_assert(cJSON_IsObject(cJSON_GetObjectItem(row, "sample_latency_ms")));
        ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(row, "exit_share")), 3);
    }
    cJSON_Delete(j);
    snprintf(path, sizeof path, "%s/shift.csv", dir);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    int n = 0;
    char line[2048];
    while (fgets(line, sizeof line, f)) ++n;
    fclose(f);
    ck_assert_int_eq(n, 1 + 10);
    ck_assert_int_eq(cli_fmt("shift-report --model test/fixtures/tiny-f32 --data DATA --out DIR --severities 7", dir), 1);
    ck_assert_ptr_nonnull(strstr(err_text, "--severities '7'"));
}
END_TEST

/* tools/plot.py renders a sweep when python3 has matplotlib; otherwise says why not. */
START_TEST(plot_smoke) {
    const char *py = NULL;
    if (system("python3 -c 'import matplotlib' >/dev/null 2>&1") == 0) py = "python3";
    else if (system("/usr/bin/python3 -c 'import matplotlib' >/dev/null 2>&1") == 0) py = "/usr/bin/python3";
    if (!py) {
        printf("plot_smoke: skipped: no python3 with matplotlib (apt-get install python3-matplotlib)\n");
        return;
    }
    char dir[256]; /* tu_tmpdir's buffers are reused by later calls (tu_cli makes one per run) */
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    ck_assert_int_eq(cli_fmt("sweep --model test/fixtures/tiny-f32 --data DATA --out DIR --grid 2 --limit 100 --plot",
                             dir),
                     0);
    ck_assert(file_exists(dir, "frontier.png") && file_exists(dir, "frontier.svg"));
    ck_assert(file_exists(dir, "exits.png") && file_exists(dir, "reliability.png"));
    ck_assert_int_eq(cli_fmt("shift-report --model test/fixtures/tiny-f32 --data DATA --out DIR/sh --shifts blur "
                             "--severities 1,3 --policy none --limit 100 --plot",
                             dir),
                     0);
    char sh[600];
    snprintf(sh, sizeof sh, "%s/sh", dir);
    ck_assert(file_exists(sh, "shift.png"));
}
END_TEST

int main(void) {
    Suite *s = suite_create("sweep");
    TCase *tc = tcase_create("sweep");
    tcase_add_unchecked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, table_predicts_every_run);
    tcase_add_test(tc, sweep_rows_and_round_trip);
    tcase_add_test(tc, interleaved_jobs_measure_what_each_does_alone);
    tcase_add_test(tc, sweep_extra_points);
    tcase_add_test(tc, per_exit_search_respects_its_budget);
    tcase_add_test(tc, per_exit_search_is_a_coordinate_optimum);
    tcase_add_test(tc, shared_grid_points_are_distinct);
    tcase_add_test(tc, sweep_calibration_modes);
    tcase_add_test(tc, cli_sweep_select_eval);
    tcase_add_test(tc, cli_sweep_options);
    tcase_add_test(tc, cli_shift_report);
    tcase_add_test(tc, plot_smoke);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
