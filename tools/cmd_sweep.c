/* exitrt sweep, select and shift-report: accuracy-latency curves of exit policies, their
 * Pareto frontiers, the best operating point under a budget, and how the operating
 * points move under input corruptions. The numbers come from the library (exitrt/
 * evaluate.h); this file parses options, prints tables, writes the shift report and
 * calls tools/plot.py for the pictures. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "exitrt/exitrt.h"

#define MAX_ITEMS 64


/* Splits "a,b,c" into items, which point into *copy (the caller frees it; a repeated
 * option replaces the previous list). */
static int sw_split(const char *flag, const char *text, const char **items, int max, char **copy_out) {
    free(*copy_out);
    char *copy = *copy_out = strdup(text);
    if (!copy) cli_fail("out of memory");
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == max) cli_fail("%s: at most %d items", flag, max);
        items[n++] = tok;
    }
    if (n == 0) cli_fail("%s '%s': expected a comma-separated list", flag, text);
    return n;
}

static ert_calibration_use parse_calibration(const char *text, int allow_both) {
    if (strcmp(text, "on") == 0) return ERT_CALIBRATION_ON;
    if (strcmp(text, "off") == 0) return ERT_CALIBRATION_OFF;
    if (allow_both && strcmp(text, "both") == 0) return ERT_CALIBRATION_BOTH;
    cli_fail("--calibration '%s': expected on, off%s", text, allow_both ? " or both" : "");
}

/* ---------------------------------------------------------------- files */

/* mkdir -p */
static void make_dir(const char *dir) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) cli_fail("'%s': path too long", dir);
    for (char *p = buf + 1;; ++p) {
        const char c = *p;
        if (c == '/' || c == '\0') {
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                cli_fail("--out '%s': cannot create '%s': %s", dir, buf, strerror(errno));
            *p = c;
        }
        if (c == '\0') break;
    }
}

/* Writes FILE.tmp.PID, then renames it over FILE: nothing is ever half-written. */
static void write_file(const char *path, const char *text) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) cli_fail("'%s': cannot write", path);
    const size_t len = strlen(text);
    const int ok = fwrite(text, 1, len, f) == len;
    if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
        remove(tmp);
        cli_fail("'%s': write failed", path);
    }
}

static void write_json(const char *path, cJSON *j) {
    char *text = cJSON_Print(j);
    if (!text) cli_fail("out of memory");
    write_file(path, text);
    free(text);
}

/* ---------------------------------------------------------------- progress */

/* A bar on stderr when it is a terminal; nothing otherwise (logs and CI stay clean). */
typedef struct bar {
    int on;
    const char *label;
} bar;

static void bar_draw(bar *b, int done, int total, const char *what) {
    if (!b->on || total <= 0) return;
    enum { W = 28 };
    const int fill = (int)((long long)W * done / total);
    char cells[W + 1];
    for (int i = 0; i < W; ++i) cells[i] = i < fill ? '#' : '.';
    cells[W] = '\0';
    fprintf(stderr, "\r%s [%s] %d/%d %-40.40s", b->label, cells, done, total, what ? what : "");
    if (done >= total) fprintf(stderr, "\r%*s\r", W + 60 + (int)strlen(b->label), "");
    fflush(stderr);
}

static void on_sweep_progress(void *user, const ert_sweep_progress *p) { bar_draw(user, p->done, p->total, p->what); }

/* ---------------------------------------------------------------- plots */

static int run_quiet(char *const argv[]) {
    fflush(stdout); /* or the child would write our buffered output a second time */
    fflush(stderr);
    const pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        FILE *null = freopen("/dev/null", "w", stdout);
        (void)null;
        null = freopen("/dev/null", "w", stderr);
        (void)null;
        execvp(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int run_loud(char *const argv[]) {
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* tools/plot.py: $ERT_PLOT_SCRIPT, else beside the program's source tree (build dirs sit
 * in or next to it), else below the current directory. */
static const char *find_plot_script(void) {
    static char path[PATH_MAX + 64];
    const char *env = getenv("ERT_PLOT_SCRIPT");
    if (env && *env) return file_exists(env) ? env : NULL;
    char exe[PATH_MAX];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        const char *rel[] = {"/../tools/plot.py", "/../../tools/plot.py", "/tools/plot.py", "/../main/tools/plot.py"};
        for (size_t i = 0; i < sizeof rel / sizeof *rel; ++i) {
            snprintf(path, sizeof path, "%s%s", exe, rel[i]);
            if (file_exists(path)) return path;
        }
    }
    snprintf(path, sizeof path, "tools/plot.py");
    return file_exists(path) ? path : NULL;
}

/* A python with matplotlib: $ERT_PYTHON, python3, /usr/bin/python3. */
static const char *find_python(void) {
    const char *env = getenv("ERT_PYTHON");
    const char *cands[] = {env && *env ? env : NULL, "python3", "/usr/bin/python3"};
    for (size_t i = 0; i < sizeof cands / sizeof *cands; ++i) {
        if (!cands[i]) continue;
        char *argv[] = {(char *)cands[i], "-c", "import matplotlib", NULL};
        if (run_quiet(argv) == 0) return cands[i];
    }
    return NULL;
}

/* Runs `python3 tools/plot.py KIND DIR [extra...]`; says how to get matplotlib when it
 * is missing. Plots are optional: a missing tool never fails the command. */
static void plot(const char *kind, const char *dir, const char *extra1, const char *extra2) {
    const char *script = find_plot_script();
    if (!script) {
        printf("plots skipped: tools/plot.py not found (run from the source tree or set ERT_PLOT_SCRIPT)\n");
        return;
    }
    const char *py = find_python();
    if (!py) {
        printf("plots skipped: no python3 with matplotlib (Debian: apt-get install python3-matplotlib; elsewhere: "
               "python3 -m pip install matplotlib; or set ERT_PYTHON); then: python3 %s %s %s\n",
               script, kind, dir);
        return;
    }
    char *argv[] = {(char *)py, (char *)script, (char *)kind, (char *)dir, (char *)extra1, (char *)extra2, NULL};
    if (run_loud(argv) != 0) printf("plots: %s %s %s %s failed (see above)\n", py, script, kind, dir);
}

/* ---------------------------------------------------------------- shared setup */

typedef struct common {
    const char *model, *data, *out;
    cli_session_flags session; /* --device, --dtype, --exec, --buckets, --compaction, --threads */
    int batch, warmup, reps, limit;
    ert_mode mode;
    int no_calibration;
} common;

static ert_session *open_session(const common *c, ert_model **model, ert_dataset **data) {
    cli_load(c->model, c->data, c->no_calibration, c->limit, model, data);
    if (!(*data)->labels) cli_fail("--data '%s' has no labels: accuracy needs them (FILE.npy:LABELS.npy)", c->data);
    ert_session_options so = ert_session_options_default();
    so.max_batch = c->batch;
    so.mode = c->mode;
    cli_session_apply(&c->session, &so);
    ert_session *s = NULL;
    cli_check(ert_session_new(*model, &so, &s));
    cli_note_exec(s);
    return s;
}

static void path_join(char *out, size_t len, const char *dir, const char *name) {
    if (snprintf(out, len, "%s/%s", dir, name) >= (int)len) cli_fail("'%s/%s': path too long", dir, name);
}

static const char *cal_text(int c) { return c == 1 ? "yes" : c == 0 ? "no" : "-"; }

/* ---------------------------------------------------------------- sweep */

static void sweep_usage(FILE *f) {
    fprintf(f,
            "usage: exitrt sweep --model DIR --data SPLIT --out DIR [options]\n"
            "\n"
            "Runs a grid of operating points of every exit policy (thresholds, patience values,\n"
            "fixed exits) plus `none` and `oracle` as references, each one measured: accuracy,\n"
            "mean exit, FLOPs fraction, throughput, batch latency mean/p50/p95/p99 and per-sample\n"
            "latency p50/p95/p99 (until the sample's exit was decided), exit histogram. Marks the\n"
            "Pareto frontiers (accuracy vs mean and vs p99 batch latency; oracle excluded) and\n"
            "writes DIR/sweep.csv, DIR/sweep.json and DIR/reliability.json. The points run\n"
            "interleaved, batch by batch (batch b of every point, then b + 1), so that a drift\n"
            "of the machine touches every point alike.\n"
            "\n"
            "  -m, --model DIR        model directory\n"
            "  -d, --data SPLIT       labelled data: fashion-mnist:test | fashion-mnist:val |\n"
            "                         FILE.npy:LABELS.npy\n"
            "  -o, --out DIR          output directory (created if needed)\n"
            "  -P, --policies LIST    families confidence,entropy,margin,patience,fixed (the\n"
            "                         default, all five) and/or specs run as given, e.g.\n"
            "                         confidence,fixed,entropy:0.2,patience:3\n"
            "  -g, --grid N           points per threshold family, at most per patience/fixed\n"
            "                         (default 8); thresholds placed where the FLOPs spread evenly\n"
            "  -D, --device DEV       cpu (default) | cuda:N\n"
            "  -b, --batch N          samples per batch (default 256)\n"
            "      --dtype T          f32 (default) | tf32 | bf16 | f16 (CUDA)\n"
            CLI_EXEC_HELP("  ")
            CLI_THREADS_HELP("  ")
            "  -M, --mode MODE        compact (default) | masked | full\n"
            "      --warmup N         untimed batches of each point before each pass (default 1)\n"
            "      --reps N           timed passes over the data per point (default 1)\n"
            "      --limit N          only the first N samples (of the validation data too)\n"
            "      --calibration C    on (default: the model's calibration.json) | off\n"
            "                         (temperature 1) | both (threshold policies run both ways;\n"
            "                         rows carry `calibrated`)\n"
            "      --shift KIND[:S]   corrupt the data first: gaussian-noise | blur | contrast |\n"
            "                         translate | rotate\n"
            "      --severity S       1..5 (default 3; KIND:S sets it too)\n"
            "      --seed S           seed of the corruption (default 1)\n"
            "      --per-exit-search  also search one threshold per exit on the validation data\n"
            "                         under a budget, then measure it (and the best shared\n"
            "                         threshold under the same budget) on --data: with the\n"
            "                         grid under --budget-flops alone, after it with --budget-ms\n"
            "      --budget-flops F   the search's compute budget: FLOPs fraction <= F\n"
            "      --budget-ms MS     the search's latency budget: predicted mean batch ms <= MS\n"
            "                         (a per-stage latency model fitted on this sweep's runs), or\n"
            "                         P%% of the `none` point's measured mean batch latency\n"
            "      --val SPLIT        the search's data (default fashion-mnist:val for\n"
            "                         fashion-mnist data); never the test split\n"
            "      --search-policy K  confidence (default) | entropy | margin\n"
            "      --no-oracle        leave the oracle reference out\n"
            "      --plot             render the frontier, exit histograms and reliability\n"
            "                         diagram with tools/plot.py (python3 + matplotlib)\n"
            "  -h, --help             this text\n");
}

enum {
    OPT_WARMUP = 1000, OPT_REPS, OPT_LIMIT, OPT_CAL, OPT_SHIFT, OPT_SEVERITY, OPT_SEED, OPT_SEARCH,
    OPT_BFLOPS, OPT_BMS, OPT_VAL, OPT_SPOL, OPT_NO_ORACLE, OPT_PLOT, OPT_SHIFTS, OPT_SEVERITIES, OPT_FROM,
    OPT_BUDGET, OPT_PCT, OPT_LATENCY, OPT_MINACC, OPT_CALIBRATED, OPT_JSON
};

/* Writes one reliability JSON (the format tools/plot.py reads) from the exit table. */
static void write_reliability(const char *path, const ert_exit_table *t, int uncalibrated, const ert_model *m,
                              const char *data) {
    const int E = ert_model_num_exits(m);
    ert_calibration_stats *st = calloc((size_t)E, sizeof *st);
    if (!st) cli_fail("out of memory");
    cli_check(ert_exit_table_calibration(t, uncalibrated, st));
    int calibrated = 0;
    for (int e = 0; e < E && !uncalibrated; ++e) calibrated |= ert_model_temperature(m, e) != 1.0f;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", ert_model_name(m));
    cJSON_AddStringToObject(j, "data", data);
    cJSON_AddBoolToObject(j, "calibrated", calibrated);
    cJSON *exits = cJSON_AddArrayToObject(j, "exits");
    for (int e = 0; e < E; ++e) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "exit", e);
        cJSON_AddNumberToObject(x, "temperature", uncalibrated ? 1.0 : ert_model_temperature(m, e));
        cJSON_AddNumberToObject(x, "ece", st[e].ece);
        cJSON_AddNumberToObject(x, "accuracy", st[e].accuracy);
        cJSON *bins = cJSON_AddArrayToObject(x, "bins");
        for (int b = 0; b < ERT_ECE_BINS; ++b) {
            const ert_reliability_bin *bn = &st[e].bins[b];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "lo", bn->lo);
            cJSON_AddNumberToObject(o, "hi", bn->hi);
            cJSON_AddNumberToObject(o, "confidence", bn->confidence);
            cJSON_AddNumberToObject(o, "accuracy", bn->accuracy);
            cJSON_AddNumberToObject(o, "count", (double)bn->count);
            cJSON_AddItemToArray(bins, o);
        }
        cJSON_AddItemToArray(exits, x);
    }
    write_json(path, j);
    cJSON_Delete(j);
    free(st);
}

static void print_rows(const ert_sweep_result *r) {
    printf("%-34s %4s %9s %9s %6s %10s %9s %9s %9s %9s %3s\n", "policy", "cal", "accuracy", "mean exit", "FLOPs",
           "samples/s", "mean ms", "p99 ms", "s.p50 ms", "s.p99 ms", "F");
    for (int i = 0; i < r->num_rows; ++i) {
        const ert_sweep_row *w = &r->rows[i];
        char mark[4] = "";
        if (w->frontier_mean) strcat(mark, "M");
        if (w->frontier_p99) strcat(mark, "P");
        if (w->reference) strcat(mark, "r");
        printf("%-34.34s %4s %8.2f%% %9.3f %6.3f %10.0f %9.3f %9.3f %9.3f %9.3f %3s\n", w->policy,
               cal_text(w->calibrated), 100.0 * w->accuracy, w->mean_exit, w->flops_fraction, w->throughput,
               w->batch_ms.mean, w->batch_ms.p99, w->sample_ms.p50, w->sample_ms.p99, mark);
    }
}

static int cmp_row_lat(const void *a, const void *b) {
    const ert_sweep_row *x = *(const ert_sweep_row *const *)a, *y = *(const ert_sweep_row *const *)b;
    return (x->batch_ms.mean > y->batch_ms.mean) - (x->batch_ms.mean < y->batch_ms.mean);
}

/* The frontier of accuracy vs mean batch latency, fastest first (a markdown table). */
static void print_frontier(const ert_sweep_result *r) {
    const ert_sweep_row **f = malloc(sizeof *f * (size_t)(r->num_rows ? r->num_rows : 1));
    if (!f) cli_fail("out of memory");
    int n = 0;
    for (int i = 0; i < r->num_rows; ++i)
        if (r->rows[i].frontier_mean) f[n++] = &r->rows[i];
    qsort(f, (size_t)n, sizeof *f, cmp_row_lat);
    printf("\nPareto frontier, accuracy vs mean batch latency (%s, %s, batch %d, %lld samples of %s):\n\n", r->model,
           r->device, r->batch, (long long)r->samples, r->data);
    printf("| policy | cal | accuracy | mean exit | FLOPs | batch mean ms | batch p99 ms | sample p99 ms | "
           "p99 frontier |\n");
    printf("|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n; ++i)
        printf("| %s | %s | %.2f%% | %.3f | %.3f | %.3f | %.3f | %.3f | %s |\n", f[i]->policy,
               cal_text(f[i]->calibrated), 100.0 * f[i]->accuracy, f[i]->mean_exit, f[i]->flops_fraction,
               f[i]->batch_ms.mean, f[i]->batch_ms.p99, f[i]->sample_ms.p99, f[i]->frontier_p99 ? "yes" : "no");
    free(f);
}

/* The per-exit search's data: the validation split and its exit table. */
typedef struct search_data {
    ert_dataset *val;
    ert_exit_table *table;
} search_data;

/* Runs the per-exit search on the validation table; 1 with an answer, 0 when no
 * thresholds fit the budget (said on stderr: an answer, not a failure of the sweep). */
static int run_search(const search_data *sd, const ert_threshold_search_options *to, ert_threshold_search_result *out) {
    const ert_status ss = ert_threshold_search(sd->table, to, out);
    if (ss == ERT_ERR_INVALID_ARGUMENT) {
        fprintf(stderr, "%s: per-exit search skipped: %s\n", cli_prog(), ert_last_error());
        return 0;
    }
    cli_check(ss);
    return 1;
}

/* The predicted mean batch latency of a spec on the validation data (NaN if unparsable). */
static double predict_ms(const search_data *sd, const ert_latency_model *lm, const ert_model *model, const char *spec,
                         int batch) {
    ert_policy *pol = NULL;
    if (ert_policy_parse(spec, &pol) != ERT_OK) return NAN;
    const int64_t n = sd->val->n;
    int32_t *pred = malloc(sizeof *pred * (size_t)n), *ex = malloc(sizeof *ex * (size_t)n);
    if (!pred || !ex) cli_fail("out of memory");
    ert_sim_result sim;
    cli_check(ert_exit_table_simulate(sd->table, pol, &sim, pred, ex));
    const double ms = ert_latency_model_predict(lm, model, ex, n, batch);
    free(pred);
    free(ex);
    ert_policy_free(pol);
    return ms;
}

int cmd_sweep(int argc, char **argv) {
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},     {"data", required_argument, 0, 'd'},
        {"out", required_argument, 0, 'o'},       {"policies", required_argument, 0, 'P'},
        {"grid", required_argument, 0, 'g'},      CLI_SESSION_LONG_OPTIONS,
        {"batch", required_argument, 0, 'b'},
        {"mode", required_argument, 0, 'M'},      {"warmup", required_argument, 0, OPT_WARMUP},
        {"reps", required_argument, 0, OPT_REPS}, {"limit", required_argument, 0, OPT_LIMIT},
        {"calibration", required_argument, 0, OPT_CAL}, {"shift", required_argument, 0, OPT_SHIFT},
        {"severity", required_argument, 0, OPT_SEVERITY}, {"seed", required_argument, 0, OPT_SEED},
        {"per-exit-search", no_argument, 0, OPT_SEARCH}, {"budget-flops", required_argument, 0, OPT_BFLOPS},
        {"budget-ms", required_argument, 0, OPT_BMS}, {"val", required_argument, 0, OPT_VAL},
        {"search-policy", required_argument, 0, OPT_SPOL}, {"no-oracle", no_argument, 0, OPT_NO_ORACLE},
        {"plot", no_argument, 0, OPT_PLOT},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    common c = {.batch = 256, .warmup = 1, .reps = 1, .mode = ERT_MODE_COMPACT};
    const char *policies[MAX_ITEMS], *val = NULL;
    char *policies_text = NULL; /* what policies[] points into */
    int num_policies = 0, grid = 8, severity = 3, search = 0, do_plot = 0, no_oracle = 0;
    long long seed = 1;
    double budget_flops = NAN, budget_ms = NAN, budget_share = NAN;
    ert_calibration_use cal = ERT_CALIBRATION_ON;
    ert_shift_kind shift = ERT_SHIFT_NONE;
    const char *shift_opts = NULL; /* --severity or --seed: they need --shift */
    ert_policy_kind search_kind = ERT_POLICY_CONFIDENCE;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "m:d:o:P:g:D:b:M:h", lo, NULL)) != -1) {
        if (cli_session_flag(&c.session, opt, optarg)) continue;
        switch (opt) {
        case 'm': c.model = optarg; break;
        case 'd': c.data = optarg; break;
        case 'o': c.out = optarg; break;
        case 'P': num_policies = sw_split("--policies", optarg, policies, MAX_ITEMS, &policies_text); break;
        case 'g': grid = (int)cli_int("--grid", optarg, 1, 256); break;
        case 'b': c.batch = (int)cli_int("--batch", optarg, 1, 1 << 20); break;
        case 'M': c.mode = cli_mode(optarg); break;
        case OPT_WARMUP: c.warmup = (int)cli_int("--warmup", optarg, 0, 1000); break;
        case OPT_REPS: c.reps = (int)cli_int("--reps", optarg, 1, 1000); break;
        case OPT_LIMIT: c.limit = (int)cli_int("--limit", optarg, 1, 1 << 30); break;
        case OPT_CAL: cal = parse_calibration(optarg, 1); break;
        case OPT_SHIFT: cli_shift(optarg, &shift, &severity); break;
        case OPT_SEVERITY:
            severity = (int)cli_int("--severity", optarg, 1, ERT_SHIFT_MAX_SEVERITY);
            shift_opts = "--severity";
            break;
        case OPT_SEED:
            seed = cli_int("--seed", optarg, 0, CLI_MAX_SEED);
            shift_opts = "--seed";
            break;
        case OPT_SEARCH: search = 1; break;
        case OPT_BFLOPS: budget_flops = cli_real("--budget-flops", optarg, 0.0, 100.0); break;
        case OPT_BMS: {
            const size_t len = strlen(optarg);
            if (len > 1 && optarg[len - 1] == '%') { /* a share of the `none` point's mean batch latency */
                char num[64];
                snprintf(num, sizeof num, "%.*s", (int)(len - 1), optarg);
                budget_share = cli_real("--budget-ms", num, 0.0, 1e6);
                budget_ms = 0.0; /* set once `none` is measured */
            } else {
                budget_ms = cli_real("--budget-ms", optarg, 0.0, 1e9);
            }
            break;
        }
        case OPT_VAL: val = optarg; break;
        case OPT_SPOL:
            if (strcmp(optarg, "confidence") == 0) search_kind = ERT_POLICY_CONFIDENCE;
            else if (strcmp(optarg, "entropy") == 0) search_kind = ERT_POLICY_ENTROPY;
            else if (strcmp(optarg, "margin") == 0) search_kind = ERT_POLICY_MARGIN;
            else cli_fail("--search-policy '%s': expected confidence, entropy or margin", optarg);
            break;
        case OPT_NO_ORACLE: no_oracle = 1; break;
        case OPT_PLOT: do_plot = 1; break;
        case 'h': free(policies_text); sweep_usage(stdout); return 0;
        default: free(policies_text); sweep_usage(stderr); return 1;
        }
    }
    cli_no_extra_args(argc, argv, sweep_usage);
    if (!c.out) cli_fail("--out DIR is required");
    if (shift_opts && shift == ERT_SHIFT_NONE) cli_fail("%s describes a corruption: give --shift KIND too", shift_opts);
    if (search && isnan(budget_flops) && isnan(budget_ms))
        cli_fail("--per-exit-search needs a budget: --budget-flops F and/or --budget-ms MS");
    if (!search && (!isnan(budget_flops) || !isnan(budget_ms) || val))
        cli_fail("--budget-flops, --budget-ms and --val go with --per-exit-search");
    if (search && c.mode != ERT_MODE_COMPACT) cli_fail("--per-exit-search models compact mode: drop --mode");

    ert_model *model = NULL;
    ert_dataset *data = NULL;
    ert_session *sess = open_session(&c, &model, &data);
    if (shift != ERT_SHIFT_NONE) cli_check(ert_shift_apply(data, shift, severity, (uint64_t)seed));
    if (search && !val) {
        if (strncmp(c.data, "fashion-mnist:", 14) != 0)
            cli_fail("--per-exit-search: give the validation data with --val SPLIT (thresholds are never chosen on "
                   "the data they are reported on)");
        val = "fashion-mnist:val";
    }
    if (search && strcmp(val, c.data) == 0)
        cli_fail("--val '%s' is the data the sweep reports on: choose thresholds on other data", val);
    make_dir(c.out);

    bar b = {.on = isatty(2), .label = "sweep"};
    /* The exit table of the data: grids, the simulation check, the reliability diagram. */
    ert_exit_table *table = NULL;
    bar_draw(&b, 0, 1, "exit table");
    cli_check(ert_exit_table_build(sess, data, c.batch, &table));
    char path[4200];
    path_join(path, sizeof path, c.out, "reliability.json");
    write_reliability(path, table, cal == ERT_CALIBRATION_OFF, model, data->name);

    /* The per-exit search chooses on the validation data. With a FLOPs budget alone it
     * needs no timings: it runs before the sweep, and its two answers are measured on
     * --data interleaved with the grid, so that a drift of the machine cannot favour
     * them. A latency budget needs the grid's timings (a latency model, `none`'s
     * latency): then it runs after the grid and its answers are measured after it. */
    search_data sd = {0};
    ert_threshold_search_options to = ert_threshold_search_options_default();
    ert_threshold_search_result sr;
    int model_calibrated = 0, have_search = 0;
    for (int e = 0; e < ert_model_num_exits(model); ++e) model_calibrated |= ert_model_temperature(model, e) != 1.0f;
    ert_sweep_point extra[2];
    int num_extra = 0;
    const int search_first = search && isnan(budget_ms);
    if (search) {
        cli_check(ert_dataset_load(val, &sd.val));
        if (c.limit && c.limit < sd.val->n) sd.val->n = c.limit;
        if (!sd.val->labels) cli_fail("--val '%s' has no labels", val);
        bar_draw(&b, 0, 1, "exit table of the validation data");
        cli_check(ert_exit_table_build(sess, sd.val, c.batch, &sd.table));
        to.kind = search_kind;
        to.uncalibrated = cal == ERT_CALIBRATION_OFF && model_calibrated;
        to.budget_flops = budget_flops;
        to.batch = c.batch;
    }
    if (search_first && (have_search = run_search(&sd, &to, &sr))) {
        extra[num_extra++] = (ert_sweep_point){sr.policy, "per-exit", budget_flops};
        ert_policy *shared = NULL; /* none when no shared threshold fits the budget */
        if (ert_policy_parse(sr.shared_policy, &shared) == ERT_OK)
            extra[num_extra++] = (ert_sweep_point){sr.shared_policy, "shared", budget_flops};
        ert_policy_free(shared);
    }

    ert_sweep_options so = ert_sweep_options_default();
    so.extra = extra;
    so.num_extra = num_extra;
    so.policies = num_policies ? policies : NULL;
    so.num_policies = num_policies;
    so.grid = grid;
    so.batch = c.batch;
    so.warmup = c.warmup;
    so.reps = c.reps;
    so.calibration = cal;
    so.no_oracle = no_oracle;
    so.table = table;
    so.progress = on_sweep_progress;
    so.progress_user = &b;
    ert_sweep_result *r = NULL;
    cli_check(ert_sweep_run(sess, data, &so, &r));
    if (r->model_calibrated && cal != ERT_CALIBRATION_OFF) { /* before / after calibration */
        path_join(path, sizeof path, c.out, "reliability-uncalibrated.json");
        write_reliability(path, table, 1, model, data->name);
    }
    if (shift != ERT_SHIFT_NONE) {
        snprintf(r->shift, sizeof r->shift, "%s", ert_shift_name(shift));
        r->shift_severity = severity;
        r->shift_seed = (uint64_t)seed;
    }

    if (search && !search_first) {
        if (!isnan(budget_share)) {
            for (int i = 0; i < r->num_rows; ++i)
                if (strcmp(r->rows[i].policy, "none") == 0) budget_ms = budget_share / 100.0 * r->rows[i].batch_ms.mean;
            if (!(budget_ms > 0))
                cli_fail("--budget-ms %g%%: the sweep has no `none` point to take a share of", budget_share);
        }
        to.budget_ms = budget_ms;
        to.latency = r->latency.batches > 0 ? &r->latency : NULL;
        if ((have_search = run_search(&sd, &to, &sr))) {
            /* Both answers, chosen on the validation data, measured on --data. */
            const char *specs[2] = {sr.policy, sr.shared_policy};
            const char *fams[2] = {"per-exit", "shared"};
            for (int k = 0; k < 2; ++k) {
                ert_policy *pol = NULL;
                if (ert_policy_parse(specs[k], &pol) != ERT_OK) continue; /* no shared point within the budget */
                ert_sweep_row row;
                memset(&row, 0, sizeof row);
                ert_policy_to_string(pol, row.policy, sizeof row.policy);
                snprintf(row.family, sizeof row.family, "%s", fams[k]);
                row.param = !isnan(budget_flops) ? budget_flops : budget_ms;
                row.calibrated = model_calibrated && !to.uncalibrated;
                bar_draw(&b, k, 2, specs[k]);
                cli_check(ert_sweep_measure(sess, pol, data, c.batch, c.warmup, c.reps, NULL, table, &row));
                bar_draw(&b, 2, 2, "");
                ert_policy_free(pol);
                cli_check(ert_sweep_result_add(r, &row));
                if (row.sim_mismatch >= 0) /* in the exit-table check's total, as the grid's rows */
                    r->sim_mismatch = (r->sim_mismatch < 0 ? 0 : r->sim_mismatch) + row.sim_mismatch;
            }
        }
    }
    if (have_search) {
        if (search_first && r->latency.batches > 0) { /* the prediction the report prints, from the grid's timings */
            sr.predicted_ms = predict_ms(&sd, &r->latency, model, sr.policy, c.batch);
            sr.shared_predicted_ms = predict_ms(&sd, &r->latency, model, sr.shared_policy, c.batch);
        }
        r->search = sr;
        r->has_search = 1;
        snprintf(r->search_data, sizeof r->search_data, "%s", sd.val->name);
        snprintf(r->search_kind, sizeof r->search_kind, "%s",
                 search_kind == ERT_POLICY_ENTROPY  ? "entropy"
                 : search_kind == ERT_POLICY_MARGIN ? "margin"
                                                    : "confidence");
        r->search_budget_flops = budget_flops;
        r->search_budget_ms = budget_ms;
    }
    ert_exit_table_free(sd.table);
    ert_dataset_free(sd.val);
    cli_check(ert_sweep_write(r, c.out));

    printf("sweep: model %s | data %s (%lld samples)%s%s | device %s | mode %s | exec %s | %s compaction | batch %d | "
           "calibration %s | %s\n\n",
           r->model, r->data, (long long)r->samples, r->shift[0] ? " | shift " : "", r->shift, r->device, r->mode, r->exec,
           r->compaction, r->batch, r->calibration, r->date);
    print_rows(r);
    printf("F: M on the frontier of accuracy vs mean batch latency, P vs p99 batch latency, r reference (oracle:\n"
           "needs the labels, never on a frontier). FLOPs = executed share of the full model's. s.p50/s.p99 =\n"
           "per-sample latency, until the sample's exit was decided.\n");
    print_frontier(r);
    if (r->has_search) {
        const ert_threshold_search_result *s = &r->search;
        printf("\nper-exit thresholds (%s), chosen on %s under", r->search_kind, r->search_data);
        if (!isnan(budget_flops)) printf(" FLOPs fraction <= %g", budget_flops);
        if (!isnan(budget_ms))
            printf("%s predicted mean batch latency <= %g ms", isnan(budget_flops) ? "" : " and", budget_ms);
        printf(" (%d rounds, %d threshold vectors tried):\n", s->rounds, s->evaluations);
        printf("  %-40s on %s: accuracy %.2f%%, FLOPs %.3f, mean exit %.3f", s->policy, r->search_data,
               100.0 * s->search.accuracy, s->search.flops_fraction, s->search.mean_exit);
        if (!isnan(s->predicted_ms)) printf(", predicted %.3f ms", s->predicted_ms);
        printf("\n  %-40s on %s: accuracy %.2f%%, FLOPs %.3f (best shared threshold)\n", s->shared_policy,
               r->search_data, 100.0 * s->shared.accuracy, s->shared.flops_fraction);
        for (int i = 0; i < r->num_rows; ++i) {
            const ert_sweep_row *w = &r->rows[i];
            if (strcmp(w->family, "per-exit") && strcmp(w->family, "shared")) continue;
            printf("  %-40s on %s: accuracy %.2f%%, FLOPs %.3f, mean exit %.3f, batch mean %.3f ms, p99 %.3f ms%s\n",
                   w->policy, r->data, 100.0 * w->accuracy, w->flops_fraction, w->mean_exit, w->batch_ms.mean,
                   w->batch_ms.p99, w->frontier_mean ? " (on the frontier)" : "");
        }
    }
    if (r->sim_mismatch >= 0)
        printf("\nexit-table check: %lld sample decisions differ from the simulation over all runs%s\n",
               (long long)r->sim_mismatch, r->sim_mismatch ? " (expected on GPUs and in bf16/f16; 0 on the CPU)" : "");
    printf("\nwrote %s/sweep.csv, %s/sweep.json, %s/reliability.json\n", c.out, c.out, c.out);
    if (do_plot) plot("sweep", c.out, NULL, NULL);

    ert_sweep_result_free(r);
    ert_exit_table_free(table);
    ert_session_free(sess);
    ert_dataset_free(data);
    ert_model_free(model);
    free(policies_text);
    return 0;
}

/* ---------------------------------------------------------------- select */

static void select_usage(FILE *f) {
    fprintf(f,
            "usage: exitrt select --from DIR (--latency-budget MS [--percentile P] | --min-accuracy A)\n"
            "                     [--latency batch|sample] [--calibrated yes|no|any] [--out FILE]\n"
            "                     [--json] [--plot]\n"
            "\n"
            "Answers a budget query from a sweep (DIR/sweep.json): the most accurate operating\n"
            "point whose latency is within the budget (ties: the faster), or the fastest one that\n"
            "reaches the accuracy. The answer is a point of the Pareto frontier of that latency.\n"
            "Writes it as a policy file that `exitrt eval --policy FILE` accepts.\n"
            "\n"
            "  -f, --from DIR           a sweep's output directory (or its sweep.json)\n"
            "  -l, --latency-budget MS  milliseconds, or a share of the `none` point's latency\n"
            "                           with %% (e.g. 60%%)\n"
            "  -p, --percentile P       50 | 95 | 99: budget the P-th percentile instead of the mean\n"
            "      --latency KIND       batch (default: a whole batch) | sample (until a sample's\n"
            "                           exit was decided)\n"
            "  -a, --min-accuracy A     a fraction (0.89) or a percentage (89%%); with a budget too,\n"
            "                           both must hold\n"
            "      --calibrated C       yes | no | any (default): which rows of a --calibration both\n"
            "                           sweep to consider\n"
            "  -o, --out FILE           the policy file (default DIR/policy.json)\n"
            "      --json               print the chosen row as JSON\n"
            "      --plot               re-render DIR's plots with the budget line\n"
            "  -h, --help               this text\n"
            "\n"
            "Thresholds chosen on test data are tuned on test: sweep the validation split, select\n"
            "there, and report `exitrt eval --policy FILE` on the test split.\n");
}

int cmd_select(int argc, char **argv) {
    static const struct option lo[] = {
        {"from", required_argument, 0, 'f'},      {"latency-budget", required_argument, 0, 'l'},
        {"percentile", required_argument, 0, 'p'}, {"latency", required_argument, 0, OPT_LATENCY},
        {"min-accuracy", required_argument, 0, 'a'}, {"calibrated", required_argument, 0, OPT_CALIBRATED},
        {"out", required_argument, 0, 'o'},       {"json", no_argument, 0, OPT_JSON},
        {"plot", no_argument, 0, OPT_PLOT},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *from = NULL, *budget_text = NULL, *pct = NULL, *kind = "batch", *acc_text = NULL, *out = NULL;
    int json = 0, do_plot = 0, calibrated = -2;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "f:l:p:a:o:h", lo, NULL)) != -1) {
        switch (opt) {
        case 'f': from = optarg; break;
        case 'l': budget_text = optarg; break;
        case 'p': pct = optarg; break;
        case OPT_LATENCY: kind = optarg; break;
        case 'a': acc_text = optarg; break;
        case OPT_CALIBRATED:
            if (strcmp(optarg, "yes") == 0) calibrated = 1;
            else if (strcmp(optarg, "no") == 0) calibrated = 0;
            else if (strcmp(optarg, "any") == 0) calibrated = -2;
            else cli_fail("--calibrated '%s': expected yes, no or any", optarg);
            break;
        case 'o': out = optarg; break;
        case OPT_JSON: json = 1; break;
        case OPT_PLOT: do_plot = 1; break;
        case 'h': select_usage(stdout); return 0;
        default: select_usage(stderr); return 1;
        }
    }
    cli_no_extra_args(argc, argv, select_usage);
    if (!from) cli_fail("--from DIR is required (the output directory of exitrt sweep)");
    if (!budget_text && !acc_text) cli_fail("give --latency-budget MS or --min-accuracy A");
    if (strcmp(kind, "batch") != 0 && strcmp(kind, "sample") != 0)
        cli_fail("--latency '%s': expected batch or sample", kind);
    if (pct && strcmp(pct, "50") != 0 && strcmp(pct, "95") != 0 && strcmp(pct, "99") != 0 && strcmp(pct, "mean") != 0)
        cli_fail("--percentile '%s': expected 50, 95 or 99", pct);
    char mname[32];
    snprintf(mname, sizeof mname, "%s-%s%s", kind, pct && strcmp(pct, "mean") ? "p" : "", pct ? pct : "mean");
    ert_select_query q = ert_select_query_default();
    cli_check(ert_latency_metric_parse(mname, &q.metric));
    q.calibrated = calibrated;

    ert_sweep_result *r = NULL;
    cli_check(ert_sweep_read(from, &r));
    if (r->num_rows == 0) cli_fail("--from '%s': the sweep has no rows", from);
    double ref_ms = NAN;
    for (int i = 0; i < r->num_rows; ++i)
        if (strcmp(r->rows[i].policy, "none") == 0) ref_ms = ert_sweep_row_latency(&r->rows[i], q.metric);
    if (budget_text) {
        const size_t len = strlen(budget_text);
        if (len > 1 && budget_text[len - 1] == '%') {
            char num[64];
            snprintf(num, sizeof num, "%.*s", (int)(len - 1), budget_text);
            const double share = cli_real("--latency-budget", num, 0.0, 1e6);
            if (isnan(ref_ms))
                cli_fail("--latency-budget %s: the sweep has no `none` row to take a share of", budget_text);
            q.latency_budget_ms = share / 100.0 * ref_ms;
        } else {
            q.latency_budget_ms = cli_real("--latency-budget", budget_text, 0.0, 1e9);
        }
    }
    if (acc_text) {
        const size_t len = strlen(acc_text);
        if (len > 1 && acc_text[len - 1] == '%') {
            char num[64];
            snprintf(num, sizeof num, "%.*s", (int)(len - 1), acc_text);
            q.min_accuracy = cli_real("--min-accuracy", num, 0.0, 100.0) / 100.0;
        } else {
            char *end;
            const double v = strtod(acc_text, &end);
            if (end == acc_text || *end || !(v >= 0.0 && v <= 1.0))
                cli_fail("--min-accuracy '%s': expected a fraction in [0, 1] or a percentage like 89.5%%", acc_text);
            q.min_accuracy = v;
        }
    }
    const int best = ert_select(r->rows, r->num_rows, &q);
    if (best < 0) {
        /* Say what the closest thing was, so the user can move the budget. */
        double fastest = INFINITY, top = -1;
        for (int i = 0; i < r->num_rows; ++i) {
            if (r->rows[i].reference) continue;
            const double l = ert_sweep_row_latency(&r->rows[i], q.metric);
            if (l < fastest) fastest = l;
            if (r->rows[i].accuracy > top) top = r->rows[i].accuracy;
        }
        cli_fail("no operating point meets the query (%s: fastest %.4f ms; best accuracy %.2f%%)",
               ert_latency_metric_name(q.metric), fastest, 100.0 * top);
    }
    const ert_sweep_row *w = &r->rows[best];
    /* The frontier of the query's metric over the rows the query considered. */
    int *on = malloc(sizeof *on * (size_t)r->num_rows);
    ert_sweep_row *kept = malloc(sizeof *kept * (size_t)r->num_rows);
    if (!on || !kept) cli_fail("out of memory");
    int nk = 0, at = -1;
    for (int i = 0; i < r->num_rows; ++i)
        if (calibrated == -2 || r->rows[i].calibrated == -1 || r->rows[i].calibrated == calibrated) {
            if (i == best) at = nk;
            kept[nk++] = r->rows[i];
        }
    ert_sweep_frontier(kept, nk, q.metric, on);
    const int on_frontier = at >= 0 && on[at];
    free(kept);
    free(on);

    char path[4200];
    if (out) {
        snprintf(path, sizeof path, "%s", out);
    } else {
        struct stat sb;
        if (stat(from, &sb) == 0 && S_ISDIR(sb.st_mode)) path_join(path, sizeof path, from, "policy.json");
        else {
            snprintf(path, sizeof path, "%s", from);
            char *slash = strrchr(path, '/');
            if (slash) snprintf(slash + 1, sizeof path - (size_t)(slash + 1 - path), "policy.json");
            else snprintf(path, sizeof path, "policy.json");
        }
    }
    const double lat = ert_sweep_row_latency(w, q.metric);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "policy", w->policy);
    cJSON_AddStringToObject(j, "family", w->family);
    cJSON_AddStringToObject(j, "model", r->model);
    cJSON_AddStringToObject(j, "data", r->data);
    cJSON_AddStringToObject(j, "device", r->device);
    cJSON_AddNumberToObject(j, "batch", r->batch);
    cJSON_AddStringToObject(j, "metric", ert_latency_metric_name(q.metric));
    if (!isnan(q.latency_budget_ms)) cJSON_AddNumberToObject(j, "budget_ms", q.latency_budget_ms);
    if (!isnan(q.min_accuracy)) cJSON_AddNumberToObject(j, "min_accuracy", q.min_accuracy);
    cJSON_AddNumberToObject(j, "accuracy", w->accuracy);
    cJSON_AddNumberToObject(j, "latency_ms", lat);
    cJSON_AddNumberToObject(j, "batch_mean_ms", w->batch_ms.mean);
    cJSON_AddNumberToObject(j, "batch_p99_ms", w->batch_ms.p99);
    cJSON_AddNumberToObject(j, "sample_p99_ms", w->sample_ms.p99);
    cJSON_AddNumberToObject(j, "flops_fraction", w->flops_fraction);
    cJSON_AddNumberToObject(j, "mean_exit", w->mean_exit);
    cJSON_AddNumberToObject(j, "calibrated", w->calibrated);
    cJSON_AddBoolToObject(j, "on_frontier", on_frontier);
    write_json(path, j);
    if (json) {
        char *text = cJSON_PrintUnformatted(j);
        printf("%s\n", text);
        free(text);
    } else {
        printf("query: ");
        if (!isnan(q.latency_budget_ms)) printf("%s latency <= %.4f ms%s", ert_latency_metric_name(q.metric),
                                                q.latency_budget_ms, acc_text ? ", " : "");
        if (!isnan(q.min_accuracy)) printf("accuracy >= %.2f%%", 100.0 * q.min_accuracy);
        printf("  (%d operating points of %s on %s, %s)\n", r->num_rows, r->model, r->data, r->device);
        printf("best:  %s%s\n", w->policy,
               w->calibrated == 1 ? " (calibrated)" : w->calibrated == 0 ? " (temperature 1)" : "");
        printf("       accuracy %.2f%% | %s %.4f ms | batch mean %.4f ms, p99 %.4f ms | sample p99 %.4f ms | FLOPs "
               "%.3f | mean exit %.3f\n",
               100.0 * w->accuracy, ert_latency_metric_name(q.metric), lat, w->batch_ms.mean, w->batch_ms.p99,
               w->sample_ms.p99, w->flops_fraction, w->mean_exit);
        printf("       on the Pareto frontier of accuracy vs %s latency: %s\n", ert_latency_metric_name(q.metric),
               on_frontier ? "yes" : "NO");
        printf("wrote %s (exitrt eval --policy %s)\n", path, path);
    }
    cJSON_Delete(j);
    if (do_plot) {
        struct stat sb;
        if (stat(from, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            char arg[4300];
            snprintf(arg, sizeof arg, "--policy-file=%s", path);
            plot("sweep", from, arg, NULL);
        } else {
            printf("plots: --plot needs --from DIR\n");
        }
    }
    ert_sweep_result_free(r);
    return 0;
}

/* ---------------------------------------------------------------- shift-report */

static void shift_usage(FILE *f) {
    fprintf(f,
            "usage: exitrt shift-report --model DIR --data SPLIT --out DIR [--policy SPEC]... [options]\n"
            "\n"
            "Runs operating points on the clean data and under every corruption and severity, and\n"
            "reports how accuracy, exit rates, FLOPs and mean / p99 latency (batch and per sample)\n"
            "move against the clean data. Writes DIR/shift.csv and DIR/shift.json. The runs\n"
            "interleave batch by batch (batch b of every run, then b + 1), so that a drift of the\n"
            "machine cannot pass for a latency change under a corruption; every corrupted copy of\n"
            "the data is held at once (26 copies with the default shifts and severities).\n"
            "\n"
            "  -m, --model DIR        model directory\n"
            "  -d, --data SPLIT       labelled data (fashion-mnist:test, FILE.npy:LABELS.npy)\n"
            "  -o, --out DIR          output directory (created if needed)\n"
            "  -p, --policy SPEC      an operating point: a spec or a policy file such as the one\n"
            "                         `exitrt select` writes; repeatable (default: none,\n"
            "                         confidence:0.9, patience:2)\n"
            "      --shifts LIST      gaussian-noise,blur,contrast,translate,rotate (the default)\n"
            "      --severities LIST  1..5 (default 1,2,3,4,5)\n"
            "      --seed S           seed of the corruptions (default 1)\n"
            "  -D, --device DEV       cpu (default) | cuda:N\n"
            "  -b, --batch N          samples per batch (default 256)\n"
            "      --dtype T          f32 (default) | tf32 | bf16 | f16 (CUDA)\n"
            CLI_EXEC_HELP("  ")
            CLI_THREADS_HELP("  ")
            "      --warmup N         untimed batches of each run before each pass (default 1)\n"
            "      --reps N           timed passes per run (default 1)\n"
            "      --limit N          only the first N samples\n"
            "      --calibration C    on (default: the model's calibration.json) | off\n"
            "      --plot             render the shift curves with tools/plot.py\n"
            "  -h, --help             this text\n");
}

typedef struct shift_row {
    int policy;
    ert_shift_kind kind;
    int severity;
    ert_sweep_row row;
} shift_row;

/* Accuracy points lost at the highest severity past which exits that fire earlier than
 * on clean data are called confidently wrong. */
#define CONFIDENTLY_WRONG_DROP 0.05

/* Policy p under shift kind from clean to the highest severity: the last row, its
 * severity, and whether mean exit and batch mean latency never fell along the way. */
static const ert_sweep_row *shift_last(const shift_row *rows, int n, int p, ert_shift_kind kind, int *severity,
                                       int *exit_rises, int *ms_rises) {
    const ert_sweep_row *last = &rows[p].row;
    *severity = 0;
    *exit_rises = *ms_rises = 1;
    for (int i = 0; i < n; ++i) {
        const shift_row *s = &rows[i];
        if (s->policy != p || s->kind != kind) continue;
        if (s->row.mean_exit < last->mean_exit) *exit_rises = 0;
        if (s->row.batch_ms.mean < last->batch_ms.mean) *ms_rises = 0;
        last = &s->row;
        *severity = s->severity;
    }
    return last;
}

static double pct_change(double v, double base) { return base > 0 ? 100.0 * (v - base) / base : NAN; }

static cJSON *shift_row_json(const shift_row *s, const ert_sweep_row *clean) {
    const ert_sweep_row *w = &s->row;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "policy", w->policy);
    cJSON_AddStringToObject(j, "shift", ert_shift_name(s->kind));
    cJSON_AddNumberToObject(j, "severity", s->severity);
    cJSON_AddNumberToObject(j, "strength", ert_shift_strength(s->kind, s->severity));
    cJSON_AddNumberToObject(j, "accuracy", w->accuracy);
    cJSON_AddNumberToObject(j, "mean_exit", w->mean_exit);
    cJSON_AddNumberToObject(j, "flops_fraction", w->flops_fraction);
    cJSON_AddNumberToObject(j, "throughput", w->throughput);
    cJSON *h = cJSON_AddArrayToObject(j, "exit_histogram"), *sh = cJSON_AddArrayToObject(j, "exit_share");
    for (int e = 0; e < w->num_exits; ++e) {
        cJSON_AddItemToArray(h, cJSON_CreateNumber((double)w->exit_histogram[e]));
        cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)w->exit_histogram[e] / (double)w->samples));
    }
    const ert_latency *ls[2] = {&w->batch_ms, &w->sample_ms};
    const char *names[2] = {"batch_latency_ms", "sample_latency_ms"};
    for (int k = 0; k < 2; ++k) {
        cJSON *l = cJSON_AddObjectToObject(j, names[k]);
        cJSON_AddNumberToObject(l, "mean", ls[k]->mean);
        cJSON_AddNumberToObject(l, "p50", ls[k]->p50);
        cJSON_AddNumberToObject(l, "p95", ls[k]->p95);
        cJSON_AddNumberToObject(l, "p99", ls[k]->p99);
    }
    cJSON *d = cJSON_AddObjectToObject(j, "delta");
    cJSON_AddNumberToObject(d, "accuracy", w->accuracy - clean->accuracy);
    cJSON_AddNumberToObject(d, "mean_exit", w->mean_exit - clean->mean_exit);
    cJSON_AddNumberToObject(d, "flops_fraction", w->flops_fraction - clean->flops_fraction);
    cJSON_AddNumberToObject(d, "batch_mean_pct", pct_change(w->batch_ms.mean, clean->batch_ms.mean));
    cJSON_AddNumberToObject(d, "batch_p99_pct", pct_change(w->batch_ms.p99, clean->batch_ms.p99));
    cJSON_AddNumberToObject(d, "sample_mean_pct", pct_change(w->sample_ms.mean, clean->sample_ms.mean));
    cJSON_AddNumberToObject(d, "sample_p99_pct", pct_change(w->sample_ms.p99, clean->sample_ms.p99));
    return j;
}

int cmd_shift_report(int argc, char **argv) {
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},     {"data", required_argument, 0, 'd'},
        {"out", required_argument, 0, 'o'},       {"policy", required_argument, 0, 'p'},
        {"shifts", required_argument, 0, OPT_SHIFTS}, {"severities", required_argument, 0, OPT_SEVERITIES},
        {"seed", required_argument, 0, OPT_SEED}, CLI_SESSION_LONG_OPTIONS,
        {"batch", required_argument, 0, 'b'},
        {"warmup", required_argument, 0, OPT_WARMUP}, {"reps", required_argument, 0, OPT_REPS},
        {"limit", required_argument, 0, OPT_LIMIT}, {"calibration", required_argument, 0, OPT_CAL},
        {"plot", no_argument, 0, OPT_PLOT},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    common c = {.batch = 256, .warmup = 1, .reps = 1, .mode = ERT_MODE_COMPACT};
    const char *policies[MAX_ITEMS], *shift_names[MAX_ITEMS], *sev_text[MAX_ITEMS];
    char *shifts_text = NULL, *sev_list = NULL; /* what shift_names[] and sev_text[] point into */
    int num_policies = 0, num_shifts = 0, num_sev = 0, do_plot = 0;
    long long seed = 1;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "m:d:o:p:D:b:h", lo, NULL)) != -1) {
        if (cli_session_flag(&c.session, opt, optarg)) continue;
        switch (opt) {
        case 'm': c.model = optarg; break;
        case 'd': c.data = optarg; break;
        case 'o': c.out = optarg; break;
        case 'p':
            if (num_policies == MAX_ITEMS) cli_fail("too many --policy options");
            policies[num_policies++] = optarg;
            break;
        case OPT_SHIFTS: num_shifts = sw_split("--shifts", optarg, shift_names, MAX_ITEMS, &shifts_text); break;
        case OPT_SEVERITIES: num_sev = sw_split("--severities", optarg, sev_text, MAX_ITEMS, &sev_list); break;
        case OPT_SEED: seed = cli_int("--seed", optarg, 0, CLI_MAX_SEED); break;
        case 'b': c.batch = (int)cli_int("--batch", optarg, 1, 1 << 20); break;
        case OPT_WARMUP: c.warmup = (int)cli_int("--warmup", optarg, 0, 1000); break;
        case OPT_REPS: c.reps = (int)cli_int("--reps", optarg, 1, 1000); break;
        case OPT_LIMIT: c.limit = (int)cli_int("--limit", optarg, 1, 1 << 30); break;
        case OPT_CAL: c.no_calibration = parse_calibration(optarg, 0) == ERT_CALIBRATION_OFF; break;
        case OPT_PLOT: do_plot = 1; break;
        case 'h': free(shifts_text); free(sev_list); shift_usage(stdout); return 0;
        default: free(shifts_text); free(sev_list); shift_usage(stderr); return 1;
        }
    }
    cli_no_extra_args(argc, argv, shift_usage);
    if (!c.out) cli_fail("--out DIR is required");
    ert_shift_kind kinds[MAX_ITEMS];
    int sevs[MAX_ITEMS];
    if (!num_shifts) {
        static const char *const all[] = {"gaussian-noise", "blur", "contrast", "translate", "rotate"};
        for (int i = 0; i < 5; ++i) shift_names[num_shifts++] = all[i];
    }
    for (int i = 0; i < num_shifts; ++i)
        if (ert_shift_parse(shift_names[i], &kinds[i]) != ERT_OK || kinds[i] == ERT_SHIFT_NONE)
            cli_fail("--shifts: '%s': expected gaussian-noise, blur, contrast, translate or rotate", shift_names[i]);
    if (!num_sev)
        for (int s = 1; s <= ERT_SHIFT_MAX_SEVERITY; ++s) sevs[num_sev++] = s;
    else
        for (int i = 0; i < num_sev; ++i) sevs[i] = (int)cli_int("--severities", sev_text[i], 1, ERT_SHIFT_MAX_SEVERITY);
    if (!num_policies) {
        policies[num_policies++] = "none";
        policies[num_policies++] = "confidence:0.9";
        policies[num_policies++] = "patience:2";
    }
    ert_policy *pols[MAX_ITEMS];
    for (int p = 0; p < num_policies; ++p) cli_check(ert_policy_parse(policies[p], &pols[p]));

    ert_model *model = NULL;
    ert_dataset *clean = NULL;
    ert_session *sess = open_session(&c, &model, &clean);
    make_dir(c.out);
    const int conds = 1 + num_shifts * num_sev, total = conds * num_policies;
    shift_row *rows = calloc((size_t)total, sizeof *rows);
    if (!rows) cli_fail("out of memory");
    bar b = {.on = isatty(2), .label = "shift-report"};
    /* Every condition's data at once, so that the runs interleave batch by batch
     * (ert_sweep_measure_jobs): a drift of the machine then cannot pass for a latency
     * change under a corruption. */
    ert_dataset **ds = calloc((size_t)conds, sizeof *ds);
    ert_measure_job *jobs = calloc((size_t)total, sizeof *jobs);
    ert_sweep_row *measured = calloc((size_t)total, sizeof *measured);
    if (!ds || !jobs || !measured) cli_fail("out of memory");
    int n = 0;
    for (int ci = 0; ci < conds; ++ci) {
        const ert_shift_kind kind = ci == 0 ? ERT_SHIFT_NONE : kinds[(ci - 1) / num_sev];
        const int sev = ci == 0 ? 0 : sevs[(ci - 1) % num_sev];
        bar_draw(&b, 0, 1, ert_shift_name(kind));
        cli_check(ert_dataset_copy(clean, &ds[ci]));
        cli_shift_data(ds[ci], kind, sev, (uint64_t)seed); /* renamed: errors name the run's data */
        for (int p = 0; p < num_policies; ++p, ++n) {
            rows[n].policy = p;
            rows[n].kind = kind;
            rows[n].severity = sev;
            jobs[n] = (ert_measure_job){pols[p], ds[ci], NULL};
        }
    }
    ert_sweep_options mo = ert_sweep_options_default();
    mo.batch = c.batch;
    mo.warmup = c.warmup;
    mo.reps = c.reps;
    mo.progress = on_sweep_progress;
    mo.progress_user = &b;
    cli_check(ert_sweep_measure_jobs(sess, jobs, total, &mo, NULL, measured));
    for (int i = 0; i < total; ++i) {
        rows[i].row = measured[i];
        ert_policy_to_string(pols[rows[i].policy], rows[i].row.policy, sizeof rows[i].row.policy);
    }
    for (int ci = 0; ci < conds; ++ci) ert_dataset_free(ds[ci]);
    free(ds);
    free(jobs);
    free(measured);

    /* Files: one JSON with everything, one CSV line per run. */
    time_t now = time(NULL);
    struct tm tm;
    char date[32];
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", "exitrt-shift-report");
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddStringToObject(j, "model", ert_model_name(model));
    cJSON_AddStringToObject(j, "data", clean->name);
    cJSON_AddNumberToObject(j, "samples", (double)clean->n);
    cJSON_AddStringToObject(j, "device", ert_session_device(sess));
    cJSON_AddNumberToObject(j, "batch", c.batch);
    cJSON_AddNumberToObject(j, "reps", c.reps);
    cJSON_AddNumberToObject(j, "seed", (double)seed);
    cJSON_AddStringToObject(j, "calibration", c.no_calibration ? "off" : "on");
    cJSON_AddStringToObject(j, "date", date);
    cJSON *pa = cJSON_AddArrayToObject(j, "policies");
    for (int p = 0; p < num_policies; ++p) cJSON_AddItemToArray(pa, cJSON_CreateString(rows[p].row.policy));
    cJSON *ra = cJSON_AddArrayToObject(j, "rows");
    char *csv = NULL;
    size_t csv_len = 0;
    FILE *cf = open_memstream(&csv, &csv_len);
    if (!cf) cli_fail("out of memory");
    fprintf(cf, "policy,shift,severity,strength,accuracy,mean_exit,flops_fraction,batch_mean_ms,batch_p99_ms,"
                "sample_mean_ms,sample_p99_ms,d_accuracy,d_mean_exit,d_flops_fraction,d_batch_mean_pct,"
                "d_batch_p99_pct,d_sample_p99_pct");
    const int E = ert_model_num_exits(model);
    for (int e = 0; e < E; ++e) fprintf(cf, ",exit_%d", e);
    fprintf(cf, "\n");
    for (int i = 0; i < n; ++i) {
        const shift_row *s = &rows[i];
        const ert_sweep_row *w = &s->row, *cl = &rows[s->policy].row;
        cJSON_AddItemToArray(ra, shift_row_json(s, cl));
        fprintf(cf, "\"%s\",%s,%d,%g,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.3f,%.3f,%.3f", w->policy,
                ert_shift_name(s->kind), s->severity, ert_shift_strength(s->kind, s->severity), w->accuracy,
                w->mean_exit, w->flops_fraction, w->batch_ms.mean, w->batch_ms.p99, w->sample_ms.mean,
                w->sample_ms.p99, w->accuracy - cl->accuracy, w->mean_exit - cl->mean_exit,
                w->flops_fraction - cl->flops_fraction, pct_change(w->batch_ms.mean, cl->batch_ms.mean),
                pct_change(w->batch_ms.p99, cl->batch_ms.p99), pct_change(w->sample_ms.p99, cl->sample_ms.p99));
        for (int e = 0; e < E; ++e) fprintf(cf, ",%lld", (long long)w->exit_histogram[e]);
        fprintf(cf, "\n");
    }
    if (fclose(cf) != 0) cli_fail("out of memory");
    char path[4200];
    path_join(path, sizeof path, c.out, "shift.csv");
    write_file(path, csv);
    free(csv);
    path_join(path, sizeof path, c.out, "shift.json");
    write_json(path, j);
    cJSON_Delete(j);

    /* The table, per policy, and whether exits fire later and latency rises. */
    printf("shift-report: model %s | data %s (%lld samples) | device %s | batch %d | reps %d | seed %lld\n",
           ert_model_name(model), clean->name, (long long)clean->n, ert_session_device(sess), c.batch, c.reps, seed);
    for (int p = 0; p < num_policies; ++p) {
        const ert_sweep_row *cl = &rows[p].row;
        printf("\npolicy %s\n", cl->policy);
        printf("%-15s %3s %9s %8s %9s %7s %7s %7s %10s %7s %9s %7s %10s %7s\n", "shift", "sev", "accuracy", "d acc",
               "mean exit", "d exit", "exit0%", "FLOPs", "mean ms", "d%", "p99 ms", "d%", "s.p99 ms", "d%");
        for (int i = 0; i < n; ++i) {
            const shift_row *s = &rows[i];
            if (s->policy != p) continue;
            const ert_sweep_row *w = &s->row;
            printf("%-15s %3d %8.2f%% %+7.2f %9.3f %+7.3f %6.1f%% %7.3f %10.3f %+7.1f %9.3f %+7.1f %10.3f %+7.1f\n",
                   s->kind == ERT_SHIFT_NONE ? "clean" : ert_shift_name(s->kind), s->severity, 100.0 * w->accuracy,
                   100.0 * (w->accuracy - cl->accuracy), w->mean_exit, w->mean_exit - cl->mean_exit,
                   100.0 * (double)w->exit_histogram[0] / (double)w->samples, w->flops_fraction, w->batch_ms.mean,
                   pct_change(w->batch_ms.mean, cl->batch_ms.mean), w->batch_ms.p99,
                   pct_change(w->batch_ms.p99, cl->batch_ms.p99), w->sample_ms.p99,
                   pct_change(w->sample_ms.p99, cl->sample_ms.p99));
        }
    }
    printf("\nsummary (clean -> the highest severity; \"rises\" = never falls from one severity to the next, \"up\" =\n"
           "higher but not at every step):\n");
    printf("%-24s %-15s %21s %24s %24s %22s\n", "policy", "shift", "accuracy", "mean exit", "batch mean ms",
           "sample p99 ms");
    for (int p = 0; p < num_policies; ++p)
        for (int k = 0; k < num_shifts; ++k) {
            const ert_sweep_row *cl = &rows[p].row;
            int sev, exit_rises, ms_rises;
            const ert_sweep_row *last = shift_last(rows, n, p, kinds[k], &sev, &exit_rises, &ms_rises);
            char a[32], e[48], l[48], sp[40];
            snprintf(a, sizeof a, "%.2f%% -> %.2f%%", 100.0 * cl->accuracy, 100.0 * last->accuracy);
            snprintf(e, sizeof e, "%.3f -> %.3f %s", cl->mean_exit, last->mean_exit,
                     last->mean_exit > cl->mean_exit   ? (exit_rises ? "rises" : "up")
                     : last->mean_exit < cl->mean_exit ? "earlier"
                                                       : "same");
            snprintf(l, sizeof l, "%.3f -> %.3f %s", cl->batch_ms.mean, last->batch_ms.mean,
                     last->batch_ms.mean > cl->batch_ms.mean ? (ms_rises ? "rises" : "up") : "lower");
            snprintf(sp, sizeof sp, "%.3f -> %.3f", cl->sample_ms.p99, last->sample_ms.p99);
            printf("%-24.24s %-15s %21s %24s %24s %22s\n", cl->policy, ert_shift_name(kinds[k]), a, e, l, sp);
        }
    int warned = 0;
    for (int p = 0; p < num_policies; ++p)
        for (int k = 0; k < num_shifts; ++k) {
            const ert_sweep_row *cl = &rows[p].row;
            int sev, exit_rises, ms_rises;
            const ert_sweep_row *last = shift_last(rows, n, p, kinds[k], &sev, &exit_rises, &ms_rises);
            if (last->mean_exit >= cl->mean_exit || last->accuracy >= cl->accuracy - CONFIDENTLY_WRONG_DROP) continue;
            printf("%swarning: %s under %s %d: the exits fire earlier (mean exit %.3f -> %.3f) while accuracy falls "
                   "(%.2f%% -> %.2f%%):\n  confidently wrong; latency alone would read this shift as an improvement\n",
                   warned++ ? "" : "\n", cl->policy, ert_shift_name(kinds[k]), sev, cl->mean_exit, last->mean_exit,
                   100.0 * cl->accuracy, 100.0 * last->accuracy);
        }
    printf("\nwrote %s/shift.csv and %s/shift.json\n", c.out, c.out);
    if (do_plot) plot("shift", c.out, NULL, NULL);

    free(rows);
    for (int p = 0; p < num_policies; ++p) ert_policy_free(pols[p]);
    ert_session_free(sess);
    ert_dataset_free(clean);
    ert_model_free(model);
    free(shifts_text);
    free(sev_list);
    return 0;
}
