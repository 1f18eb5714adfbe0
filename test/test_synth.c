/* Synthetic models (ert_synth_write, `exitrt synth`) and the headline benchmark
 * (`exitrt bench`): the files load with the right shapes and parameter counts, are
 * reproducible from the seed, bad options name themselves, masked and compact agree on
 * the scheduled policy, and the bench JSON holds sane figures on the CPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exitrt/exitrt.h"
#include "runtime/safetensors.h"
#include "testutil.h"

static char out_text[1 << 16], err_text[1 << 12];

/* Runs `exitrt ARGS` ($ERT_CLI), capturing stdout and stderr; returns the exit status. */
static int cli(const char *args) { return tu_cli(args, out_text, sizeof out_text, err_text, sizeof err_text); }

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int same_file(const char *a, const char *b) {
    size_t la, lb;
    unsigned char *x = read_all(a, &la), *y = read_all(b, &lb);
    const int same = la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

/* DIR/NAME in one of 8 rotating static buffers (DIR may be an earlier result). */
static const char *in_dir(const char *dir, const char *name) {
    static char buf[8][600];
    static int slot;
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s/%s", dir, name);
    char *out = buf[slot++ % 8];
    memcpy(out, tmp, sizeof tmp);
    return out;
}

START_TEST(loads_with_the_right_shapes) {
    const ert_dtype dtypes[] = {ERT_DTYPE_F32, ERT_DTYPE_BF16, ERT_DTYPE_F16};
    const char *st_names[] = {"F32", "BF16", "F16"};
    const int D = 24, L = 5, C = 7;
    for (int d = 0; d < 3; ++d) {
        const char *dir = in_dir(tu_tmpdir(), "new/sub"); /* created with its parent */
        const ert_synth_options o = {.width = D, .depth = L, .classes = C, .dtype = dtypes[d], .seed = 42};
        ck_assert_int_eq(ert_synth_write(&o, dir), ERT_OK);
        ert_model *m = NULL;
        ck_assert_msg(ert_model_load(dir, &m) == ERT_OK, "%s", ert_last_error());
        ck_assert_str_eq(ert_model_name(m), "synth-D24-L5");
        ck_assert_int_eq(ert_model_input_size(m), D);
        ck_assert_int_eq(ert_model_num_classes(m), C);
        ck_assert_int_eq(ert_model_num_stages(m), L);
        ck_assert_int_eq(ert_model_num_exits(m), L);
        ck_assert_str_eq(ert_model_class_label(m, 0), "c0");
        ck_assert_str_eq(ert_model_class_label(m, C - 1), "c6");
        int64_t params = 0;
        for (int k = 0; k < L; ++k) {
            ert_stage_info si;
            ck_assert_int_eq(ert_model_stage_info(m, k, &si), ERT_OK);
            ck_assert(si.has_exit);
            ck_assert_int_eq(si.exit_index, k);
            ck_assert_int_eq(si.width_in, D);
            ck_assert_int_eq(si.width_out, D);
            params += si.params + si.head_params;
        }
        ck_assert_int_eq(params, (int64_t)L * (D * D + D) + (int64_t)L * (D * C + C));
        ert_model_free(m);

        /* The file: 8-byte aligned data, the requested dtype, values within their
         * scales, not constant, centred. */
        ert_safetensors *st = NULL;
        ck_assert_int_eq(ert_st_open(in_dir(dir, "model.safetensors"), &st), ERT_OK);
        ck_assert_uint_eq(st->data_start % 8, 0);
        ck_assert_int_eq(st->count, 4 * L);
        ert_st_tensor *w = ert_st_find(st, "stages.2.fc.weight");
        ck_assert_ptr_nonnull(w);
        ck_assert_str_eq(ert_st_dtype_name(w->dtype), st_names[d]);
        float *v = malloc(sizeof(float) * (size_t)w->numel);
        ert_st_read_f32(st, w, v);
        const double a = 0.5 / sqrt((double)D);
        double sum = 0.0, abs_sum = 0.0;
        for (int64_t i = 0; i < w->numel; ++i) {
            ck_assert(fabs(v[i]) <= a * 1.01);
            sum += v[i];
            abs_sum += fabs(v[i]);
        }
        ck_assert(fabs(sum / (double)w->numel) < 0.1 * a);
        ck_assert(fabs(abs_sum / (double)w->numel - a / 2) < 0.1 * a); /* E|U(-a,a)| = a/2 */
        free(v);
        ert_st_close(st);
    }
}
END_TEST

START_TEST(same_seed_same_bytes) {
    const char *a = tu_tmpdir(), *b = tu_tmpdir(), *c = tu_tmpdir();
    ert_synth_options o = {.width = 33, .depth = 3, .classes = 4, .dtype = ERT_DTYPE_BF16, .seed = 7};
    ck_assert_int_eq(ert_synth_write(&o, a), ERT_OK);
    ck_assert_int_eq(ert_synth_write(&o, b), ERT_OK);
    o.seed = 8;
    ck_assert_int_eq(ert_synth_write(&o, c), ERT_OK);
    ck_assert(same_file(in_dir(a, "model.safetensors"), in_dir(b, "model.safetensors")));
    ck_assert(same_file(in_dir(a, "config.json"), in_dir(b, "config.json")));
    ck_assert(!same_file(in_dir(a, "model.safetensors"), in_dir(c, "model.safetensors")));
    /* Rewriting over an existing model leaves no temporary file behind. */
    o.seed = 7;
    ck_assert_int_eq(ert_synth_write(&o, a), ERT_OK);
    ck_assert(same_file(in_dir(a, "model.safetensors"), in_dir(b, "model.safetensors")));
    char cmd[700];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 2", a);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(bad_options_name_themselves) {
    const ert_synth_options good = {.width = 8, .depth = 2, .classes = 3, .dtype = ERT_DTYPE_F32, .seed = 1};
    struct {
        ert_synth_options o;
        const char *needle;
    } cases[] = {
        {good, NULL},
        {good, "width 0"},
        {good, "width 65537"},
        {good, "depth 0"},
        {good, "depth 33"},
        {good, "classes 1"},
        {good, "classes 100001"},
        {good, "dtype 'tf32'"},
    };
    cases[1].o.width = 0;
    cases[2].o.width = 65537;
    cases[3].o.depth = 0;
    cases[4].o.depth = 33;
    cases[5].o.classes = 1;
    cases[6].o.classes = 100001;
    cases[7].o.dtype = ERT_DTYPE_TF32;
    for (size_t i = 1; i < sizeof cases / sizeof *cases; ++i) {
        const char *dir = in_dir(tu_tmpdir(), "never");
        ck_assert_int_eq(ert_synth_write(&cases[i].o, dir), ERT_ERR_INVALID_ARGUMENT);
        ck_assert(tu_error_has(cases[i].needle));
        ck_assert_int_ne(access(dir, F_OK), 0); /* nothing created */
    }
    ck_assert_int_eq(ert_synth_write(NULL, "/tmp/x"), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(ert_synth_write(&good, NULL), ERT_ERR_INVALID_ARGUMENT);
    /* A directory that cannot be made: the message names the path. */
    const char *file = in_dir(tu_tmpdir(), "plain-file");
    tu_write_text(file, "x");
    char below[700];
    snprintf(below, sizeof below, "%s/model", file);
    ck_assert_int_eq(ert_synth_write(&good, below), ERT_ERR_IO);
    ck_assert(tu_error_has("plain-file"));
    ck_assert_int_eq(ert_synth_write(&good, file), ERT_ERR_IO);
    ck_assert(tu_error_has("not a directory"));
}
END_TEST

/* Masked and compact runs of the scheduled policy compute the same rows through the
 * same math: identical exits (the drawn schedule), predictions and confidences. */
START_TEST(masked_and_compact_agree) {
    const char *dir = tu_tmpdir();
    const int D = 32, L = 6, C = 10, B = 64;
    const ert_synth_options o = {.width = D, .depth = L, .classes = C, .dtype = ERT_DTYPE_F32, .seed = 3};
    ck_assert_int_eq(ert_synth_write(&o, dir), ERT_OK);
    ert_model *m = NULL;
    ck_assert_int_eq(ert_model_load(dir, &m), ERT_OK);
    ert_policy *pol = NULL;
    ck_assert_int_eq(ert_policy_parse("scheduled:hazard=0.2,seed=5", &pol), ERT_OK);
    float *x = malloc(sizeof(float) * B * D);
    srand(11);
    for (int i = 0; i < B * D; ++i) x[i] = ((float)rand() + 1.0f) / ((float)RAND_MAX + 1.0f);
    const ert_batch batch = {.input = x, .n = B, .first_index = 100};
    const ert_mode modes[3] = {ERT_MODE_MASKED, ERT_MODE_COMPACT, ERT_MODE_FULL};
    int32_t pred[3][64], ex[3][64];
    float conf[3][64];
    for (int v = 0; v < 3; ++v) {
        ert_session_options so = ert_session_options_default();
        so.max_batch = B;
        so.mode = modes[v];
        ert_session *s = NULL;
        ck_assert_int_eq(ert_session_new(m, &so, &s), ERT_OK);
        ert_outputs out = {.pred = pred[v], .exit_index = ex[v], .confidence = conf[v]};
        ck_assert_msg(ert_session_run(s, pol, &batch, &out) == ERT_OK, "%s", ert_last_error());
        ert_session_free(s);
    }
    int early = 0, last = 0;
    for (int i = 0; i < B; ++i) {
        const int want = ert_policy_scheduled_exit(pol, 100 + i, L);
        ck_assert_int_eq(ex[0][i], want);
        ck_assert_int_eq(ex[1][i], want);
        ck_assert_int_eq(pred[0][i], pred[1][i]);
        ck_assert(fabsf(conf[0][i] - conf[1][i]) <= 1e-5f * conf[0][i]);
        ck_assert(isfinite(conf[1][i]) && conf[1][i] > 1.0f / C - 1e-6f && conf[1][i] <= 1.0f);
        ck_assert_int_eq(ex[2][i], L - 1);
        if (want == L - 1) {
            ck_assert_int_eq(pred[2][i], pred[1][i]);
            ++last;
        } else {
            ++early;
        }
    }
    ck_assert(early > 10 && last > 5); /* both kinds of sample were checked */
    free(x);
    ert_policy_free(pol);
    ert_model_free(m);
}
END_TEST

START_TEST(cli_synth) {
    ck_assert_int_eq(cli("synth --help"), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "usage: exitrt synth"));
    const char *dir = in_dir(tu_tmpdir(), "m");
    char a[1024];
    snprintf(a, sizeof a, "synth --width 8 --depth 2 --classes 3 --dtype f16 --seed 9 --out %s", dir);
    ck_assert_int_eq(cli(a), 0);
    ert_model *m = NULL;
    ck_assert_int_eq(ert_model_load(dir, &m), ERT_OK);
    ck_assert_int_eq(ert_model_num_stages(m), 2);
    ert_model_free(m);
    struct {
        const char *args, *needle;
    } cases[] = {
        {"synth --depth 2 --out /tmp/x", "exitrt synth: --width D is required"},
        {"synth --width 8 --out /tmp/x", "exitrt synth: --depth L is required"},
        {"synth --width 8 --depth 2", "exitrt synth: --out DIR is required"},
        {"synth --width 8 --depth 40 --out /tmp/ert-never", "depth 40"},
        {"synth --width x --depth 2 --out /tmp/x", "--width 'x'"},
        {"synth --width 8 --depth 2 --dtype tf32 --out /tmp/x", "--dtype 'tf32'"},
        {"bench --widths 0", "exitrt bench: --widths '0'"},
        {"bench --hazard 2", "exitrt bench: --hazard '2'"},
        {"bench --device tpu:0 --widths 8 --batches 4 --depth 2 --reps 1 --warmup 0", "device 'tpu:0'"},
        {"bench --device cpu --dtype bf16 --widths 8 --batches 4 --depth 2 --reps 1", "cpu backend computes in f32"},
        {"bench --device cuda:0 --threads 2", "--threads 2: sets the cpu device's threads; 'cuda:0' is not the cpu"},
        {"bench --threads 300", "--threads '300': expected an integer in 1..256"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; ++i) {
        ck_assert_msg(cli(cases[i].args) == 1, "%s: expected exit 1", cases[i].args);
        ck_assert_msg(strstr(err_text, cases[i].needle) != NULL, "%s: stderr '%s' lacks '%s'", cases[i].args,
                      err_text, cases[i].needle);
        ck_assert_msg(strchr(err_text, '\n') == err_text + strlen(err_text) - 1 || strstr(err_text, "usage:"),
                      "%s: not one line: %s", cases[i].args, err_text);
    }
    ck_assert_int_eq(cli("bench --help"), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "usage: exitrt bench"));
}
END_TEST

static double num(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    ck_assert_msg(cJSON_IsNumber(v), "missing number '%s'", key);
    return v->valuedouble;
}

/* One bench run on the cpu, every figure of the JSON checked; gather and fill compaction
 * must both give the scheduled exits and the eager predictions in every variant. */
static void bench_json_with(const char *compaction) {
    const char *tmp = tu_tmpdir(), *json = in_dir(tu_tmpdir(), "bench.json");
    char a[1024];
    snprintf(a, sizeof a,
             "bench --device cpu --widths 64 --batches 16,40 --depth 4 --reps 3 --warmup 1 --exec both --json %s --tmp %s "
             "--compaction %s --threads 2",
             json, tmp, compaction);
    ck_assert_msg(cli(a) == 0, "%s", err_text);
    ck_assert_ptr_nonnull(strstr(out_text, "speedup"));
    char targets[128];
    snprintf(targets, sizeof targets, "graph-mode targets (issue 4, set for the H200; this run: %s)", tu_cpu_name(2));
    ck_assert_msg(strstr(out_text, targets), "%s", out_text);
    cJSON *j = tu_json_load(json);
    const cJSON *meta = cJSON_GetObjectItem(j, "meta");
    ck_assert_str_eq(cJSON_GetObjectItem(meta, "device")->valuestring, tu_cpu_name(2));
    ck_assert_str_eq(cJSON_GetObjectItem(meta, "dtype")->valuestring, "f32");
    ck_assert_double_eq(num(meta, "hazard"), 0.15);
    ck_assert_str_eq(cJSON_GetObjectItem(meta, "exec")->valuestring, "both");
    ck_assert_str_eq(cJSON_GetObjectItem(meta, "compaction")->valuestring, compaction);
    ck_assert_int_eq((int)num(meta, "reps"), 3);
    ck_assert(cJSON_IsString(cJSON_GetObjectItem(meta, "date")));
    const cJSON *points = cJSON_GetObjectItem(j, "points");
    ck_assert_int_eq(cJSON_GetArraySize(points), 2);
    const int batches[2] = {16, 40};
    for (int p = 0; p < 2; ++p) {
        const cJSON *pt = cJSON_GetArrayItem(points, p);
        const int B = batches[p];
        ck_assert_int_eq((int)num(pt, "width"), 64);
        ck_assert_int_eq((int)num(pt, "batch"), B);
        const char *variants[] = {"full", "masked", "compact", "ideal", "full-graph", "compact-graph", "ideal-graph"};
        for (int v = 0; v < 7; ++v) {
            const cJSON *var = cJSON_GetObjectItem(pt, variants[v]);
            ck_assert_msg(var != NULL, "missing %s", variants[v]);
            ck_assert(num(var, "median_ms") > 0);
            ck_assert(num(var, "p99_ms") >= num(var, "median_ms"));
            ck_assert(num(var, "flops") > 0);
        }
        const cJSON *compact = cJSON_GetObjectItem(pt, "compact"), *ideal = cJSON_GetObjectItem(pt, "ideal");
        const cJSON *rows = cJSON_GetObjectItem(compact, "rows"), *irows = cJSON_GetObjectItem(ideal, "rows");
        ck_assert_int_eq(cJSON_GetArraySize(rows), 4);
        ck_assert_int_eq(cJSON_GetArrayItem(rows, 0)->valueint, B);
        double work = 0;
        for (int k = 0; k < 4; ++k) {
            const int r = cJSON_GetArrayItem(rows, k)->valueint;
            ck_assert(k == 0 || r <= cJSON_GetArrayItem(rows, k - 1)->valueint);
            ck_assert_int_eq(cJSON_GetArrayItem(irows, k)->valueint, r); /* the ideal ran the same rows */
            work += r;
        }
        ck_assert_int_eq((int)num(pt, "host_syncs"), 0);
        ck_assert_int_eq((int)num(compact, "host_syncs"), 0);
        const double surv = num(pt, "survivor_fraction"), expect = num(pt, "survivor_fraction_expected");
        ck_assert_double_eq_tol(surv, work / (4.0 * B), 1e-9);
        /* hazard 0.15 over 4 blocks: (1 + .85 + .85^2 + .85^3) / 4 = 0.7967 */
        ck_assert_double_eq_tol(expect, 0.796656, 1e-5);
        ck_assert_msg(fabs(surv - expect) < 0.2, "survivor fraction %g, expected about %g", surv, expect);
        ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(pt, "exits_match")));
        ck_assert_double_eq(num(pt, "pred_agreement"), 1.0);
        ck_assert_double_eq_tol(num(pt, "speedup"), num(cJSON_GetObjectItem(pt, "full"), "median_ms") /
                                                         num(compact, "median_ms"), 1e-9);
        ck_assert(num(pt, "of_ideal") > 0 && num(pt, "routing_share") >= 0 && num(pt, "routing_share") < 1);
        ck_assert_double_eq(num(pt, "sync_share"), 0.0);
        /* graph mode (the cpu's recording): the same rows and predictions, 0 syncs */
        const cJSON *g = cJSON_GetObjectItem(pt, "graph"), *cg = cJSON_GetObjectItem(pt, "compact-graph");
        ck_assert_ptr_nonnull(g);
        const cJSON *grows = cJSON_GetObjectItem(cg, "rows");
        for (int k = 0; k < 4; ++k)
            ck_assert_int_eq(cJSON_GetArrayItem(grows, k)->valueint, cJSON_GetArrayItem(rows, k)->valueint);
        ck_assert_int_eq((int)num(g, "host_syncs"), 0);
        ck_assert_double_eq(num(g, "pred_agreement_with_eager"), 1.0);
        ck_assert(num(g, "padding_waste") >= 0.0 && num(g, "padding_waste") < 1.0);
        ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(g, "stage_event_overhead_ms")));
        ck_assert(num(cJSON_GetObjectItem(pt, "compact-graph-untimed"), "batch_median_ms") > 0);
    }
    cJSON_Delete(j);
    /* The synthesised models were removed from --tmp. */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", tmp);
    ck_assert_int_eq(system(cmd), 0);
}

START_TEST(cli_bench_json) {
    bench_json_with("gather");
    bench_json_with("fill");
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("synth");
    TCase *tc = tcase_create("synth");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, loads_with_the_right_shapes);
    tcase_add_test(tc, same_seed_same_bytes);
    tcase_add_test(tc, bad_options_name_themselves);
    tcase_add_test(tc, masked_and_compact_agree);
    tcase_add_test(tc, cli_synth);
    tcase_add_test(tc, cli_bench_json);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    if (!getenv("ERT_CLI")) {
        fprintf(stderr, "test_synth: ERT_CLI must be set (ctest sets it)\n");
        return 1;
    }
    return tu_run(suite());
}
