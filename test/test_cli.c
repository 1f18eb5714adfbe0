/* The exitrt program: exit codes, one-line errors, --json keys, the per-sample CSV, and
 * nothing half-written when a run fails. Runs the built binary ($ERT_CLI). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "exitrt/exitrt.h"
#include "testutil.h"

static char out_text[1 << 16], err_text[1 << 12];

/* Runs `exitrt ARGS`, capturing stdout and stderr; returns the exit status. */
static int cli(const char *args) { return tu_cli(args, out_text, sizeof out_text, err_text, sizeof err_text); }

static int lines(const char *s) {
    int n = 0;
    for (; *s; ++s) n += *s == '\n';
    return n;
}


static char data_spec[1024];

static void setup(void) { tu_write_tiny_npy(5, 50, data_spec, sizeof data_spec); }

START_TEST(help_and_usage) {
    ck_assert_int_eq(cli(""), 1);
    ck_assert_ptr_nonnull(strstr(err_text, "usage: exitrt"));
    ck_assert_int_eq(cli("--help"), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "  ERT_CPU_THREADS=N "));
    ck_assert_ptr_nonnull(strstr(out_text, "  ERT_CPU_GEMM=LIB "));
    const char *cmds[] = {"info", "eval", "compare"};
    for (int i = 0; i < 3; ++i) {
        char a[64];
        snprintf(a, sizeof a, "%s --help", cmds[i]);
        ck_assert_int_eq(cli(a), 0);
        ck_assert_ptr_nonnull(strstr(out_text, "usage: exitrt"));
    }
    ck_assert_int_eq(cli("frobnicate"), 1);
    ck_assert_ptr_nonnull(strstr(err_text, "unknown command 'frobnicate'"));
}
END_TEST

/* `exitrt --version`: the version and commit, then the libraries as loaded, the same text
 * the API gives; a oneDNN loaded must be of the major version the build was made against. */
START_TEST(version_names_the_libraries) {
    ck_assert_int_eq(cli("--version"), 0);
    char head[128], info[1024];
    snprintf(head, sizeof head, "exitrt %s (commit %s)\n", ert_version(), ert_commit());
    ck_assert_msg(strncmp(out_text, head, strlen(head)) == 0, "%s", out_text);
    ck_assert_str_eq(ert_version(), "0.1");
    ck_assert(strlen(ert_commit()) > 0);
    ert_build_info(info, sizeof info);
    char want[1200];
    snprintf(want, sizeof want, "%s%s\n", head, info);
    ck_assert_str_eq(out_text, want);
    ck_assert_int_eq(lines(out_text), 3);
    ck_assert_msg(strncmp(info, "cpu: OpenBLAS 0.", 16) == 0, "%s", info);
    const char *dnnl = strstr(info, "; oneDNN ");
    ck_assert_msg(dnnl, "%s", info);
    int major, minor, patch, built, built_minor;
    if (strncmp(dnnl, "; oneDNN not built in", 21) != 0) {
        ck_assert_int_eq(sscanf(dnnl, "; oneDNN %d.%d.%d (built against %d.%d)", &major, &minor, &patch, &built,
                                &built_minor), 5);
        ck_assert_int_eq(major, built);
    }
    const char *cuda = strstr(info, "\ncuda: ");
    ck_assert_msg(cuda && (strncmp(cuda, "\ncuda: not built in", 19) == 0 || strncmp(cuda, "\ncuda: built for sm_", 20) == 0),
                  "%s", info);
    ck_assert_int_eq(cli("version"), 0);
    ck_assert(strncmp(out_text, head, strlen(head)) == 0);
}
END_TEST

START_TEST(errors_are_one_line) {
    char a[2048];
    struct {
        const char *args, *needle;
    } cases[] = {
        {"eval --model /nonexistent --data fashion-mnist:test", "/nonexistent/config.json': cannot open"},
        {"eval --model test/fixtures/tiny-f32 --data DATA --policy bogus", "unknown kind 'bogus'"},
        {"eval --model test/fixtures/tiny-f32 --data DATA --batch 0", "--batch '0'"},
        {"eval --model test/fixtures/tiny-f32 --data DATA --mode sideways", "--mode: invalid argument: mode 'sideways': expected compact, masked or full"},
        {"eval --model test/fixtures/tiny-f32 --data fashion-mnist:test", "784 values per sample"},
        {"eval --model test/fixtures/tiny-f32 --data nowhere.npy", "nowhere.npy"},
        {"eval --model test/fixtures/tiny-f32 --data DATA --device tpu:0", "device 'tpu:0'"},
        {"eval --model test/fixtures/tiny-f32 --data DATA --policy fixed:9", "exit 9 does not exist"},
        {"eval --model test/fixtures/tiny-f32", "--data SPLIT is required"},
        {"eval --model test/fixtures/tiny-f32 --data DATA extra", "unexpected argument 'extra'"},
        {"info", "--model DIR is required"},
        {"eval --model test/fixtures/tiny-f32 --data DATA --exec fast", "exec 'fast': expected eager, graph or auto"},
        {"eval --model test/fixtures/tiny-f32 --data DATA --compaction sort", "compaction 'sort': expected auto, gather or fill"},
        {"eval --model test/fixtures/tiny-f32 --data DATA --exec graph --buckets 8,4", "4 does not increase on 8"},
        {"eval --model test/fixtures/tiny-f32 --data DATA --batch 16 --buckets 32", "32 is outside 1..16"},
        {"sweep --model test/fixtures/tiny-f32 --data DATA --out /tmp/x --exec sideways", "exec 'sideways'"},
        {"sweep --model test/fixtures/tiny-f32 --data DATA --out /tmp/x --compaction sort", "compaction 'sort'"},
        {"loadtest --model test/fixtures/tiny-f32 --data DATA --compaction sort", "--compaction: invalid argument"},
        {"bench --exec fast", "--exec 'fast': expected eager, graph or both"},
        {"eval --model test/fixtures/tiny-f32 --data DATA --threads 0", "--threads '0': expected an integer in 1..256"},
        {"eval --model test/fixtures/tiny-f32 --data DATA --device cuda:0 --threads 2",
         "exitrt eval: --threads 2: sets the cpu device's threads; 'cuda:0' is not the cpu"},
        {"sweep --model test/fixtures/tiny-f32 --data DATA --out /tmp/x --device cuda:1 --threads 4",
         "exitrt sweep: --threads 4: sets the cpu device's threads; 'cuda:1' is not the cpu"},
        {"calibrate --model test/fixtures/tiny-f32 --data DATA --threads x", "exitrt calibrate: --threads 'x'"},
        {"calibrate --model test/fixtures/tiny-f32 --data DATA --batch 12x",
         "exitrt calibrate: --batch '12x': expected an integer in 1..1048576"},
        {"calibrate --model test/fixtures/tiny-f32 --data fashion-mnist:test", "exitrt calibrate: refusing to fit on the test split"},
        {"calibrate --data DATA", "exitrt calibrate: --model DIR is required"},
        {"loadtest --model test/fixtures/tiny-f32 --data DATA --max-batch 8 --exec graph --buckets 4,2",
         "exitrt loadtest: --buckets: invalid argument"},
        {"shift-report --model test/fixtures/tiny-f32 --data DATA --out /tmp/x --dtype f99", "exitrt shift-report: invalid argument: dtype 'f99'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; ++i) {
        const char *d = strstr(cases[i].args, "DATA");
        if (d) snprintf(a, sizeof a, "%.*s%s%s", (int)(d - cases[i].args), cases[i].args, data_spec, d + 4);
        else snprintf(a, sizeof a, "%s", cases[i].args);
        ck_assert_msg(cli(a) == 1, "%s: expected exit 1", a);
        ck_assert_msg(strstr(err_text, cases[i].needle) != NULL, "%s: stderr '%s' lacks '%s'", a, err_text,
                      cases[i].needle);
        ck_assert_msg(lines(err_text) == 1 || strstr(err_text, "usage:"), "%s: not one line: %s", a, err_text);
    }
}
END_TEST

START_TEST(json_has_the_keys) {
    char a[2048];
    snprintf(a, sizeof a, "eval --model test/fixtures/tiny-f32 --data %s --policy confidence:0.5 --batch 16 --json",
             data_spec);
    ck_assert_int_eq(cli(a), 0);
    cJSON *j = cJSON_Parse(out_text);
    ck_assert_ptr_nonnull(j);
    const char *keys[] = {"accuracy", "mean_exit", "exit_histogram", "flops_fraction", "latency_ms", "samples"};
    for (int i = 0; i < 6; ++i) ck_assert_msg(cJSON_GetObjectItem(j, keys[i]) != NULL, "missing key %s", keys[i]);
    const cJSON *lat = cJSON_GetObjectItem(j, "latency_ms");
    const char *lk[] = {"mean", "p50", "p95", "p99"};
    for (int i = 0; i < 4; ++i) ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(lat, lk[i])));
    ck_assert_int_eq(cJSON_GetObjectItem(j, "samples")->valueint, 50);
    const cJSON *h = cJSON_GetObjectItem(j, "exit_histogram");
    ck_assert_int_eq(cJSON_GetArraySize(h), 3);
    int total = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, h) total += v->valueint;
    ck_assert_int_eq(total, 50);
    const double acc = cJSON_GetObjectItem(j, "accuracy")->valuedouble;
    ck_assert(acc >= 0.0 && acc <= 1.0);
    const double ff = cJSON_GetObjectItem(j, "flops_fraction")->valuedouble;
    ck_assert(ff > 0.3 && ff < 1.3);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "exec")->valuestring, "eager");
    cJSON_Delete(j);
}
END_TEST

/* --shift on eval and compare: the CLI's answers equal the library's on data corrupted by
 * ert_shift_apply with the same kind, severity and seed; KIND:S and --severity S agree;
 * the data is named after its corruption; bad kinds and severities are one-line errors. */
static double num(const cJSON *j, const char *key) { return cJSON_GetObjectItem(j, key)->valuedouble; }

START_TEST(eval_and_compare_on_shifted_data) {
    ert_model *m = NULL;
    ert_session *s = tu_tiny_session(16, &m);
    ert_dataset *d = NULL;
    ck_assert_int_eq(ert_dataset_load(data_spec, &d), ERT_OK);
    ck_assert_int_eq(ert_shift_apply(d, ERT_SHIFT_TRANSLATE, 4, 9), ERT_OK);
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("confidence:0.5", &p), ERT_OK);
    ert_eval_result *want = NULL;
    const ert_eval_options eo = {.batch = 16};
    ck_assert_int_eq(ert_evaluate(s, p, d, &eo, &want), ERT_OK);

    const char *runs[] = {
        "eval --model test/fixtures/tiny-f32 --data %s --policy confidence:0.5 --batch 16 --shift translate:4 "
        "--seed 9 --json",
        "eval --model test/fixtures/tiny-f32 --data %s --policy confidence:0.5 --batch 16 --shift translate "
        "--severity 4 --seed 9 --json",
        "compare --model test/fixtures/tiny-f32 --data %s --policy confidence:0.5 --batch 16 --shift translate:4 "
        "--seed 9 --json",
    };
    char a[2048], name[1100];
    snprintf(name, sizeof name, "%s, translate 4", data_spec);
    for (int i = 0; i < 3; ++i) {
        snprintf(a, sizeof a, runs[i], data_spec);
        ck_assert_msg(cli(a) == 0, "%s: %s", a, err_text);
        cJSON *doc = cJSON_Parse(out_text);
        ck_assert_ptr_nonnull(doc);
        const cJSON *j = cJSON_IsArray(doc) ? cJSON_GetArrayItem(doc, 0) : doc;
        ck_assert_str_eq(cJSON_GetObjectItem(j, "data")->valuestring, name);
        ck_assert_str_eq(cJSON_GetObjectItem(j, "shift")->valuestring, "translate");
        ck_assert_double_eq(num(j, "severity"), 4);
        ck_assert_double_eq(num(j, "seed"), 9);
        ck_assert_msg(num(j, "accuracy") == want->accuracy, "%s: accuracy %g, library %g", runs[i], num(j, "accuracy"),
                      want->accuracy);
        ck_assert(num(j, "mean_exit") == want->mean_exit);
        for (int e = 0; e < want->num_exits; ++e)
            ck_assert_int_eq(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "exit_histogram"), e)->valueint,
                             want->exit_histogram[e]);
        cJSON_Delete(doc);
    }
    /* the clean data decides otherwise: the corruption was applied */
    snprintf(a, sizeof a, "eval --model test/fixtures/tiny-f32 --data %s --policy confidence:0.5 --batch 16 --json",
             data_spec);
    ck_assert_int_eq(cli(a), 0);
    cJSON *clean = cJSON_Parse(out_text);
    ck_assert(num(clean, "accuracy") != want->accuracy || num(clean, "mean_exit") != want->mean_exit);
    ck_assert_ptr_null(cJSON_GetObjectItem(clean, "shift"));
    cJSON_Delete(clean);

    struct {
        const char *args, *needle;
    } bad[] = {
        {"eval --model test/fixtures/tiny-f32 --data %s --shift fog",
         "--shift 'fog': expected gaussian-noise, blur, contrast, translate or rotate"},
        {"compare --model test/fixtures/tiny-f32 --data %s --shift blur:9", "--shift severity '9': expected an integer in 1..5"},
        {"eval --model test/fixtures/tiny-f32 --data %s --shift blur --severity 0", "--severity '0'"},
        {"sweep --model test/fixtures/tiny-f32 --data %s --out /tmp/x --shift blur:6", "--shift severity '6'"},
        {"eval --model test/fixtures/tiny-f32 --data %s --severity 2", "--severity describes a corruption: give --shift"},
        {"sweep --model test/fixtures/tiny-f32 --data %s --out /tmp/x --seed 4", "--seed describes a corruption"},
        {"eval --model test/fixtures/tiny-f32 --data %s --shift blur --seed 9007199254740993", "--seed '9007199254740993'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; ++i) {
        snprintf(a, sizeof a, bad[i].args, data_spec);
        ck_assert_msg(cli(a) == 1, "%s: expected exit 1", a);
        ck_assert_msg(strstr(err_text, bad[i].needle) && lines(err_text) == 1, "%s: stderr '%s' lacks '%s'", a,
                      err_text, bad[i].needle);
    }
    ert_eval_result_free(want);
    ert_policy_free(p);
    ert_dataset_free(d);
    ert_session_free(s);
    ert_model_free(m);
}
END_TEST

/* --exec graph runs the recorded forward on the cpu with the same answers (test_exec has
 * the thorough comparison); the JSON says which execution ran. */
START_TEST(exec_graph_from_the_cli) {
    char a[2048];
    snprintf(a, sizeof a, "eval --model test/fixtures/tiny-f32 --data %s --policy confidence:0.5 --batch 16 --json",
             data_spec);
    ck_assert_int_eq(cli(a), 0);
    cJSON *je = cJSON_Parse(out_text);
    snprintf(a, sizeof a,
             "eval --model test/fixtures/tiny-f32 --data %s --policy confidence:0.5 --batch 16 --json --exec graph "
             "--buckets 4,8",
             data_spec);
    ck_assert_msg(cli(a) == 0, "%s", err_text);
    cJSON *jg = cJSON_Parse(out_text);
    ck_assert_ptr_nonnull(je);
    ck_assert_ptr_nonnull(jg);
    ck_assert_str_eq(cJSON_GetObjectItem(jg, "exec")->valuestring, "graph");
    ck_assert_str_eq(cJSON_GetObjectItem(jg, "compaction")->valuestring, "fill"); /* auto, on the cpu */
    const char *same[] = {"accuracy", "mean_exit", "flops_fraction"};
    for (int i = 0; i < 3; ++i)
        ck_assert_double_eq(cJSON_GetObjectItem(je, same[i])->valuedouble, cJSON_GetObjectItem(jg, same[i])->valuedouble);
    cJSON_Delete(jg);
    /* in-place fill compaction: the same figures */
    snprintf(a, sizeof a,
             "eval --model test/fixtures/tiny-f32 --data %s --policy confidence:0.5 --batch 16 --json --compaction fill",
             data_spec);
    ck_assert_msg(cli(a) == 0, "%s", err_text);
    jg = cJSON_Parse(out_text);
    ck_assert_ptr_nonnull(jg);
    ck_assert_str_eq(cJSON_GetObjectItem(jg, "compaction")->valuestring, "fill");
    for (int i = 0; i < 3; ++i)
        ck_assert_double_eq(cJSON_GetObjectItem(je, same[i])->valuedouble, cJSON_GetObjectItem(jg, same[i])->valuedouble);
    cJSON_Delete(je);
    cJSON_Delete(jg);
    snprintf(a, sizeof a, "eval --model test/fixtures/tiny-f32 --data %s --exec graph --profile", data_spec);
    ck_assert_int_eq(cli(a), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "one graph launch per batch"));
    ck_assert_ptr_nonnull(strstr(out_text, "host syncs per forward 0.0"));
    ck_assert_ptr_nonnull(strstr(out_text, "padding (FLOPs on rows past the survivors)"));

    /* A capture that fails (the CPU recording's fault injection): --exec graph stops with
     * the one-line reason; --exec auto says it runs eager, and does. */
    ck_assert_int_eq(setenv("ERT_CPU_GRAPH_FAIL_AT", "3", 1), 0);
    snprintf(a, sizeof a, "eval --model test/fixtures/tiny-f32 --data %s --exec graph", data_spec);
    ck_assert_int_eq(cli(a), 1);
    ck_assert_str_eq(err_text, "exitrt eval: backend error: session on 'cpu': exec graph: capturing the forward "
                               "pass: cpu backend: recorded call 3 refused (ERT_CPU_GRAPH_FAIL_AT)\n");
    snprintf(a, sizeof a, "eval --model test/fixtures/tiny-f32 --data %s --policy confidence:0.5 --batch 16 --json "
             "--exec auto", data_spec);
    ck_assert_msg(cli(a) == 0, "%s", err_text);
    ck_assert_str_eq(err_text, "exitrt eval: graph mode unavailable, running eager: exec graph: capturing the forward "
                               "pass: cpu backend: recorded call 3 refused (ERT_CPU_GRAPH_FAIL_AT)\n");
    ck_assert_int_eq(unsetenv("ERT_CPU_GRAPH_FAIL_AT"), 0);
    jg = cJSON_Parse(out_text);
    ck_assert_ptr_nonnull(jg);
    ck_assert_str_eq(cJSON_GetObjectItem(jg, "exec")->valuestring, "eager");
    cJSON_Delete(jg);
}
END_TEST

/* ERT_CPU_GEMM picks the CPU's linear-op library, the device's name says which, the
 * answers agree, and a wrong value is refused by name. */
START_TEST(gemm_from_the_environment) {
    char a[2048];
    snprintf(a, sizeof a, "eval --model test/fixtures/tiny-f32 --data %s --policy confidence:0.5 --json --threads 1",
             data_spec);
    double acc[2];
    for (int g = 0; g < 2; ++g) {
        if (g) setenv("ERT_CPU_GEMM", "openblas", 1);
        const int rc = cli(a);
        unsetenv("ERT_CPU_GEMM");
        ck_assert_msg(rc == 0, "%s", err_text);
        cJSON *j = cJSON_Parse(out_text);
        ck_assert_ptr_nonnull(j);
        ck_assert_str_eq(cJSON_GetObjectItem(j, "device")->valuestring, g ? "cpu (1 thread, OpenBLAS)" : tu_cpu_name(1));
        acc[g] = cJSON_GetObjectItem(j, "accuracy")->valuedouble;
        cJSON_Delete(j);
    }
    ck_assert_double_eq(acc[0], acc[1]);
    setenv("ERT_CPU_GEMM", "mkl", 1);
    const int rc = cli(a);
    unsetenv("ERT_CPU_GEMM");
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(err_text, "ERT_CPU_GEMM 'mkl': expected onednn or openblas"), "%s", err_text);
}
END_TEST

/* The CPU's libraries per op: fmnist-cnn's convolutions run on oneDNN on AVX2 too, its
 * linear ops need AVX-512 (brgemm), so with oneDNN held to AVX2 (DNNL_MAX_CPU_ISA) the
 * device is "oneDNN + OpenBLAS", with ERT_CPU_GEMM=openblas "OpenBLAS"; the answers agree
 * within a sample of 64, and ERT_CPU_GEMM=onednn refuses the linear op with the reason. */
START_TEST(libraries_per_op) {
#ifndef ERT_WITH_ONEDNN
    printf("libraries_per_op: built without oneDNN, OpenBLAS only\n");
#else
    if (!__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl")) {
        printf("libraries_per_op: no AVX-512 here, nothing to hold back\n");
        return;
    }
    const struct {
        const char *name, *value, *device;
    } runs[] = {{NULL, NULL, "cpu (1 thread, oneDNN)"},
                {"DNNL_MAX_CPU_ISA", "AVX2", "cpu (1 thread, oneDNN + OpenBLAS)"},
                {"ERT_CPU_GEMM", "openblas", "cpu (1 thread, OpenBLAS)"}};
    const char *a = "eval --model models/fmnist-cnn --data fashion-mnist:test --limit 64 --batch 64 "
                    "--policy confidence:0.9 --json --threads 1";
    double acc[3];
    for (int i = 0; i < 3; ++i) {
        if (runs[i].name) setenv(runs[i].name, runs[i].value, 1);
        const int rc = cli(a);
        if (runs[i].name) unsetenv(runs[i].name);
        ck_assert_msg(rc == 0, "%s=%s: %s", runs[i].name, runs[i].value, err_text);
        cJSON *j = cJSON_Parse(out_text);
        ck_assert_ptr_nonnull(j);
        ck_assert_str_eq(cJSON_GetObjectItem(j, "device")->valuestring, runs[i].device);
        acc[i] = cJSON_GetObjectItem(j, "accuracy")->valuedouble;
        cJSON_Delete(j);
    }
    for (int i = 1; i < 3; ++i)
        ck_assert_msg(fabs(acc[i] - acc[0]) <= 1.0 / 64 + 1e-12, "%s: accuracy %g, %g by default", runs[i].name, acc[i],
                      acc[0]);
    setenv("DNNL_MAX_CPU_ISA", "AVX2", 1);
    setenv("ERT_CPU_GEMM", "onednn", 1);
    const int rc = cli(a);
    unsetenv("DNNL_MAX_CPU_ISA");
    unsetenv("ERT_CPU_GEMM");
    ck_assert_int_eq(rc, 1);
    ck_assert_msg(strstr(err_text, "cannot run on oneDNN (ERT_CPU_GEMM=onednn): oneDNN: matmul") &&
                      strstr(err_text, "not brgemm (its bits depend on the rows)"),
                  "%s", err_text);
#endif
}
END_TEST

/* --threads on every command that runs a model: the device's name in the output says the
 * count in force, and the answers do not depend on it. */
START_TEST(threads_from_the_cli) {
    char a[2048];
    double acc[2], exit_mean[2];
    for (int t = 0; t < 2; ++t) {
        snprintf(a, sizeof a, "eval --model test/fixtures/tiny-f32 --data %s --policy confidence:0.5 --batch 16 --json "
                 "--threads %d", data_spec, t ? 3 : 1);
        ck_assert_msg(cli(a) == 0, "%s", err_text);
        cJSON *j = cJSON_Parse(out_text);
        ck_assert_ptr_nonnull(j);
        ck_assert_str_eq(cJSON_GetObjectItem(j, "device")->valuestring, tu_cpu_name(t ? 3 : 1));
        acc[t] = cJSON_GetObjectItem(j, "accuracy")->valuedouble;
        exit_mean[t] = cJSON_GetObjectItem(j, "mean_exit")->valuedouble;
        cJSON_Delete(j);
    }
    ck_assert_double_eq(acc[0], acc[1]);
    ck_assert_double_eq(exit_mean[0], exit_mean[1]);
    const char *runs[] = {"compare --model test/fixtures/tiny-f32 --data %s --policy none --threads 2",
                          "sweep --model test/fixtures/tiny-f32 --data %s --grid 2 --policies fixed --threads 2 "
                          "--out %s/sweep",
                          "shift-report --model test/fixtures/tiny-f32 --data %s --shifts blur --severities 1 "
                          "--threads 2 --out %s/shift",
                          "calibrate --model test/fixtures/tiny-f32 --data %s --threads 2 --out %s/cal.json"};
    for (int i = 0; i < 4; ++i) {
        snprintf(a, sizeof a, runs[i], data_spec, tu_tmpdir());
        ck_assert_msg(cli(a) == 0, "%s: %s", a, err_text);
        ck_assert_msg(strstr(out_text, tu_cpu_name(2)), "%s: the device's name is missing: %s", a, out_text);
    }
    const char *helps[] = {"eval", "compare", "sweep", "shift-report", "calibrate", "bench", "loadtest"};
    for (int i = 0; i < 7; ++i) {
        snprintf(a, sizeof a, "%s --help", helps[i]);
        ck_assert_int_eq(cli(a), 0);
        ck_assert_msg(strstr(out_text, "--threads N") || strstr(out_text, "--threads,"), "%s --help: no --threads",
                      helps[i]);
    }
}
END_TEST

START_TEST(csv_rows_and_nothing_half_written) {
    const char *dir = tu_tmpdir();
    char csv[512], a[2048];
    snprintf(csv, sizeof csv, "%s/rows.csv", dir);
    snprintf(a, sizeof a, "eval --model test/fixtures/tiny-f32 --data %s --policy entropy:0.8 --batch 7 --output %s",
             data_spec, csv);
    ck_assert_int_eq(cli(a), 0);
    FILE *f = fopen(csv, "r");
    ck_assert_ptr_nonnull(f);
    char line[256];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_str_eq(line, "index,label,pred,exit,confidence\n");
    int rows = 0, idx, label, pred, ex;
    float conf;
    while (fscanf(f, "%d,%d,%d,%d,%f\n", &idx, &label, &pred, &ex, &conf) == 5) {
        ck_assert_int_eq(idx, rows);
        ck_assert(pred >= 0 && pred < 5 && ex >= 0 && ex < 3 && conf > 0 && conf <= 1);
        ++rows;
    }
    fclose(f);
    ck_assert_int_eq(rows, 50);
    /* A failing run leaves the earlier file as it was and no temporary beside it. */
    snprintf(a, sizeof a, "eval --model test/fixtures/tiny-f32 --data %s --policy fixed:7 --output %s", data_spec, csv);
    ck_assert_int_eq(cli(a), 1);
    f = fopen(csv, "r");
    int n = 0;
    while (fgets(line, sizeof line, f)) ++n;
    fclose(f);
    ck_assert_int_eq(n, 51);
    const char *other = tu_tmpdir();
    snprintf(a, sizeof a, "ls '%s' | wc -l > '%s/count'", dir, other);
    ck_assert_int_eq(system(a), 0);
    char cp[600];
    snprintf(cp, sizeof cp, "%s/count", other);
    f = fopen(cp, "r");
    ck_assert_int_eq(fscanf(f, "%d", &n), 1);
    fclose(f);
    ck_assert_int_eq(n, 1); /* rows.csv only */
    /* A path that cannot be written fails cleanly. */
    snprintf(a, sizeof a, "eval --model test/fixtures/tiny-f32 --data %s --output /nonexistent/x.csv", data_spec);
    ck_assert_int_eq(cli(a), 1);
    ck_assert_ptr_nonnull(strstr(err_text, "--output '/nonexistent/x.csv': cannot write"));
}
END_TEST

START_TEST(info_and_compare) {
    ck_assert_int_eq(cli("info --model test/fixtures/tiny-f32"), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "model tiny-f32: input 24 values, 5 classes, 4 stages, 3 exits"));
    char a[2048];
    snprintf(a, sizeof a, "compare --model test/fixtures/tiny-f32 --data %s --policy none --policy fixed:0 --json",
             data_spec);
    ck_assert_int_eq(cli(a), 0);
    cJSON *j = cJSON_Parse(out_text);
    ck_assert_int_eq(cJSON_GetArraySize(j), 2);
    const cJSON *fixed0 = cJSON_GetArrayItem(j, 1);
    ck_assert_str_eq(cJSON_GetObjectItem(fixed0, "policy")->valuestring, "fixed:0");
    ck_assert_double_eq(cJSON_GetObjectItem(fixed0, "mean_exit")->valuedouble, 0.0);
    cJSON_Delete(j);
    /* compare runs its policies interleaved; each row is what eval gives that policy alone */
    snprintf(a, sizeof a,
             "compare --model test/fixtures/tiny-f32 --data %s --policy none --policy confidence:0.5 --batch 7 --json",
             data_spec);
    ck_assert_int_eq(cli(a), 0);
    j = cJSON_Parse(out_text);
    const cJSON *cmp = cJSON_GetArrayItem(j, 1);
    snprintf(a, sizeof a, "eval --model test/fixtures/tiny-f32 --data %s --policy confidence:0.5 --batch 7 --json",
             data_spec);
    ck_assert_int_eq(cli(a), 0);
    cJSON *e = cJSON_Parse(out_text);
    ck_assert_ptr_nonnull(e);
    const char *keys[] = {"samples", "accuracy", "mean_exit", "flops_fraction"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; ++k)
        ck_assert_msg(cJSON_GetObjectItem(cmp, keys[k])->valuedouble == cJSON_GetObjectItem(e, keys[k])->valuedouble,
                      "%s: compare %g, eval %g", keys[k], cJSON_GetObjectItem(cmp, keys[k])->valuedouble,
                      cJSON_GetObjectItem(e, keys[k])->valuedouble);
    const cJSON *hc = cJSON_GetObjectItem(cmp, "exit_histogram"), *he = cJSON_GetObjectItem(e, "exit_histogram");
    ck_assert_int_eq(cJSON_GetArraySize(hc), 3);
    for (int x = 0; x < 3; ++x)
        ck_assert_int_eq(cJSON_GetArrayItem(hc, x)->valueint, cJSON_GetArrayItem(he, x)->valueint);
    cJSON_Delete(e);
    cJSON_Delete(j);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_add_unchecked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, help_and_usage);
    tcase_add_test(tc, version_names_the_libraries);
    tcase_add_test(tc, errors_are_one_line);
    tcase_add_test(tc, json_has_the_keys);
    tcase_add_test(tc, eval_and_compare_on_shifted_data);
    tcase_add_test(tc, exec_graph_from_the_cli);
    tcase_add_test(tc, threads_from_the_cli);
    tcase_add_test(tc, gemm_from_the_environment);
    tcase_add_test(tc, libraries_per_op);
    tcase_add_test(tc, csv_rows_and_nothing_half_written);
    tcase_add_test(tc, info_and_compare);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    if (!getenv("ERT_CLI") || !getenv("ERT_SOURCE_DIR")) {
        fprintf(stderr, "test_cli: ERT_CLI and ERT_SOURCE_DIR must be set (ctest sets them)\n");
        return 1;
    }
    return tu_run(suite());
}
