/* exitrt loadtest: tail latency under load. Open- or closed-loop arrivals on the
 * generator's own clock, dynamic batching, early answers at each request's exit, the
 * peak arrival rate under a latency objective per policy, and the SLO controller in a
 * load-step and a distribution-shift scenario (each with the controller off and on). */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "exitrt/exitrt.h"

#define MAX_POINTS 64

static void lt_usage(FILE *f) {
    fprintf(f,
            "usage: exitrt loadtest --model DIR --data SPLIT [--policy SPEC]... [options]\n"
            "       exitrt loadtest ... --find-peak --slo-ms X [--percentile 99]\n"
            "       exitrt loadtest ... --controller slo --points LIST [--scenario load-step|shift]\n"
            "\n"
            "Sends requests to the model as a server receives them: arrivals at random (or from\n"
            "N clients), batched while they wait, each answered when its exit's results are\n"
            "ready. Reports throughput, latency percentiles split into queueing and compute,\n"
            "SLO attainment, accuracy and exits. The generator keeps its own clock: a slow\n"
            "server shows as queueing, never as fewer requests (no coordinated omission).\n"
            "\n"
            "model and data:\n"
            "  -m, --model DIR        model directory\n"
            "  -d, --data SPLIT       fashion-mnist:test | fashion-mnist:val | FILE.npy[:LABELS.npy]\n"
            "  -p, --policy SPEC      exit policy; repeat for one run (or peak search) per policy\n"
            "                         (default confidence:0.9)\n"
            "  -D, --device DEV       cpu (default) | cuda:N\n"
            "      --dtype T          f32 (default) | tf32 | bf16 | f16 (CUDA only)\n"
            CLI_EXEC_HELP("  ")
            "  -M, --mode MODE        compact (default) | masked | full\n"
            "      --limit N          only the first N samples of the data\n"
            "arrivals (the run ends after --requests or --duration; the queue then drains):\n"
            "      --qps R            open loop: mean arrival rate (default 2000)\n"
            "      --arrival KIND     poisson (default) | constant\n"
            "  -c, --concurrency N    closed loop instead: N clients, each sending its next request\n"
            "                         when its answer arrives\n"
            "  -n, --requests N       requests to send (default: --duration 3 s; peak trials 10000)\n"
            "  -t, --duration S       seconds of arrivals (scenarios: default 6)\n"
            "      --seed S           arrivals and sample choice (default 1)\n"
            "batching and serving:\n"
            "  -b, --max-batch N      a batch leaves when it holds N requests (default 64) ...\n"
            "      --max-delay-ms MS  ... or when its oldest request has waited MS (default 2)\n"
            "  -s, --streams K        K sessions on worker threads sharing the model; a batch goes\n"
            "                         to whichever is free (default 1)\n"
            "      --threads N        cpu: each stream's ops' threads (default: ERT_CPU_THREADS, or\n"
            "                         every CPU this process may run on, divided among the streams)\n"
            "      --late-answers     answer every request when its batch ends, not at its exit\n"
            "objective:\n"
            "      --slo-ms X         latency objective in ms (default 20)\n"
            "      --percentile P     the percentile held under it (default 99)\n"
            "peak search (MLPerf Server style, per policy):\n"
            "      --find-peak        binary search for the highest Poisson rate whose percentile\n"
            "                         stays under --slo-ms; prints the policies at their peak\n"
            "      --qps-lo R, --qps-hi R  the bracket (default: from a closed-loop capacity run)\n"
            "      --tolerance F      stop when the bracket is narrower than F (default 0.03)\n"
            "                         a trial's arrivals must span 20 x --slo-ms (shorter bursts\n"
            "                         drain within the bound at any rate): --requests N tests rates\n"
            "                         up to N / (20 x slo) only, and a peak at that limit says so\n"
            "adaptive operating point:\n"
            "      --controller KIND  off (default) | slo: move along --points to hold the\n"
            "                         percentile under --slo-ms with the strictest point possible\n"
            "      --points LIST      operating points, strictest first: policy specs separated by\n"
            "                         commas (confidence:0.99,confidence:0.9,fixed:0) or @FILE.json\n"
            "                         (an array of specs, or of objects with a \"policy\" key, or\n"
            "                         an object holding such an array as \"points\" or \"frontier\")\n"
            "      --start-point I    the point a run starts at (default 0)\n"
            "      --window-ms MS     controller period and timeline resolution (default 200)\n"
            "      --slack F          stricter after --patience windows under F x SLO (default 0.7)\n"
            "      --patience N       (default 3)\n"
            "      --scenario NAME    load-step: the rate steps from --qps to --step-qps at --step-at;\n"
            "                         shift: from --shift-at, a --shift-fraction of requests carry\n"
            "                         corrupted inputs (--shift KIND:SEVERITY). Runs the\n"
            "                         controller off (fixed at --start-point) and on, and prints\n"
            "                         p99 and accuracy before and after, and over time. Without\n"
            "                         --qps the rates come from the points' measured capacities\n"
            "                         (load step: 0.5x, then 1.4x the start point's; shift: between\n"
            "                         the start point's on clean inputs and on the shifted mix).\n"
            "      --step-qps R, --step-at S, --shift-fraction F (0.5), --shift-at S (the times\n"
            "                         default to half the duration)\n"
            "      --shift KIND[:SEV] the corruption: gaussian-noise | blur | contrast | translate |\n"
            "                         rotate, severity 1..5 (default gaussian-noise:5)\n"
            "output:\n"
            "  -j, --json             print one JSON object instead of the tables\n"
            "  -o, --output FILE      write that JSON object to FILE (tools/plot_load.py plots it)\n"
            "      --timeline FILE    per window and run: time, rates, p50/p99, accuracy, point (CSV)\n"
            "      --requests-csv FILE  one row per request\n"
            "  -h, --help             this text\n");
}


/* ---------------------------------------------------------------- operating points */

typedef struct point_list {
    char *spec[MAX_POINTS];
    int n;
} point_list;

static void points_add(point_list *p, const char *text, size_t len) {
    while (len && (*text == ' ')) text++, len--;
    while (len && text[len - 1] == ' ') len--;
    if (!len) cli_fail("--points: an empty operating point");
    if (p->n == MAX_POINTS) cli_fail("--points: more than %d operating points", MAX_POINTS);
    p->spec[p->n] = malloc(len + 1);
    if (!p->spec[p->n]) cli_fail("out of memory");
    memcpy(p->spec[p->n], text, len);
    p->spec[p->n++][len] = '\0';
}

/* Splits "confidence:0.99,0.9,fixed:0" into specs: a comma starts a new spec only where
 * a letter follows it, since thresholds (and ;temp= lists) are numbers. */
static void points_parse_list(point_list *p, const char *text) {
    const char *start = text;
    for (const char *c = text; *c; ++c)
        if (*c == ',' && ((c[1] >= 'a' && c[1] <= 'z') || (c[1] >= 'A' && c[1] <= 'Z') || c[1] == '/' ||
                          (c[1] == '.' && c[2] == '/'))) {
            points_add(p, start, (size_t)(c - start));
            start = c + 1;
        }
    points_add(p, start, strlen(start));
}

static void points_from_json_array(point_list *p, const cJSON *arr, const char *path) {
    const cJSON *item;
    cJSON_ArrayForEach(item, arr) {
        const cJSON *pol = cJSON_IsObject(item) ? cJSON_GetObjectItem(item, "policy") : item;
        if (!cJSON_IsString(pol)) cli_fail("--points '%s': expected policy specs (strings, or objects with \"policy\")", path);
        points_add(p, pol->valuestring, strlen(pol->valuestring));
    }
}

static void points_parse_file(point_list *p, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) cli_fail("--points '%s': cannot open", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)(len > 0 ? len : 0) + 1);
    if (!text || (len > 0 && fread(text, 1, (size_t)len, f) != (size_t)len)) cli_fail("--points '%s': cannot read", path);
    fclose(f);
    text[len > 0 ? len : 0] = '\0';
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) cli_fail("--points '%s': not valid JSON", path);
    const cJSON *arr = j;
    if (cJSON_IsObject(j)) {
        arr = cJSON_GetObjectItem(j, "points");
        if (!arr) arr = cJSON_GetObjectItem(j, "frontier");
    }
    if (!cJSON_IsArray(arr)) cli_fail("--points '%s': expected an array, or an object with \"points\" or \"frontier\"", path);
    points_from_json_array(p, arr, path);
    cJSON_Delete(j);
    if (p->n == 0) cli_fail("--points '%s': no operating points", path);
}

/* ---------------------------------------------------------------- options */

typedef enum { SC_NONE = 0, SC_LOAD_STEP, SC_SHIFT } scenario;

typedef struct lt_opts {
    const char *model, *data, *output, *timeline, *requests_csv, *points_text;
    const char *policies[MAX_POINTS];
    int num_policies;
    cli_session_flags session; /* --device, --dtype, --exec, --buckets, --compaction, --threads */
    ert_mode mode;
    long long limit;
    int json, find_peak, qps_given, duration_given, requests_given;
    ert_load_options lo;
    ert_peak_options po;
    int streams;
    scenario sc;
    double step_at, shift_at;
    ert_shift_kind shift_kind;
    int shift_severity;
} lt_opts;

enum {
    O_LIMIT = 1000, O_QPS, O_ARRIVAL, O_SEED, O_DELAY, O_LATE, O_SLO, O_PCT, O_PEAK, O_QLO, O_QHI, O_TOL,
    O_CTRL, O_POINTS, O_START, O_WINDOW, O_SLACK, O_PATIENCE, O_SCEN, O_STEPQ, O_STEPAT, O_SHFRAC, O_SHIFT,
    O_SHAT, O_TIMELINE, O_REQCSV
};

static void parse_opts(int argc, char **argv, lt_opts *o) {
    static const struct option lo[] = {
        {"model", required_argument, 0, 'm'},        {"data", required_argument, 0, 'd'},
        {"policy", required_argument, 0, 'p'},       CLI_SESSION_LONG_OPTIONS,
        {"mode", required_argument, 0, 'M'},
        {"limit", required_argument, 0, O_LIMIT},    {"qps", required_argument, 0, O_QPS},
        {"arrival", required_argument, 0, O_ARRIVAL}, {"concurrency", required_argument, 0, 'c'},
        {"requests", required_argument, 0, 'n'},     {"duration", required_argument, 0, 't'},
        {"seed", required_argument, 0, O_SEED},      {"max-batch", required_argument, 0, 'b'},
        {"max-delay-ms", required_argument, 0, O_DELAY}, {"streams", required_argument, 0, 's'},
        {"late-answers", no_argument, 0, O_LATE},    {"slo-ms", required_argument, 0, O_SLO},
        {"percentile", required_argument, 0, O_PCT}, {"find-peak", no_argument, 0, O_PEAK},
        {"qps-lo", required_argument, 0, O_QLO},     {"qps-hi", required_argument, 0, O_QHI},
        {"tolerance", required_argument, 0, O_TOL},  {"controller", required_argument, 0, O_CTRL},
        {"points", required_argument, 0, O_POINTS},  {"start-point", required_argument, 0, O_START},
        {"window-ms", required_argument, 0, O_WINDOW}, {"slack", required_argument, 0, O_SLACK},
        {"patience", required_argument, 0, O_PATIENCE}, {"scenario", required_argument, 0, O_SCEN},
        {"step-qps", required_argument, 0, O_STEPQ}, {"step-at", required_argument, 0, O_STEPAT},
        {"shift-fraction", required_argument, 0, O_SHFRAC}, {"shift", required_argument, 0, O_SHIFT},
        {"shift-at", required_argument, 0, O_SHAT},  {"json", no_argument, 0, 'j'},
        {"output", required_argument, 0, 'o'},       {"timeline", required_argument, 0, O_TIMELINE},
        {"requests-csv", required_argument, 0, O_REQCSV},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    o->lo = ert_load_options_default();
    o->lo.qps = 2000;
    o->lo.slo_ms = 20;
    o->po.percentile = 99;
    o->streams = 1;
    o->step_at = o->shift_at = -1;
    o->shift_kind = ERT_SHIFT_GAUSSIAN_NOISE;
    o->shift_severity = 5;
    o->lo.shift_fraction = 0.5;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "m:d:p:D:M:c:n:t:b:s:jo:h", lo, NULL)) != -1) {
        if (cli_session_flag(&o->session, c, optarg)) continue;
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'd': o->data = optarg; break;
        case 'p':
            if (o->num_policies == MAX_POINTS) cli_fail("more than %d --policy options", MAX_POINTS);
            o->policies[o->num_policies++] = optarg;
            break;
        case 'M': o->mode = cli_mode(optarg); break;
        case O_LIMIT: o->limit = cli_int("--limit", optarg, 1, 1LL << 40); break;
        case O_QPS:
            o->lo.qps = cli_real("--qps", optarg, 1e-3, 1e9);
            o->qps_given = 1;
            break;
        case O_ARRIVAL:
            if (strcmp(optarg, "poisson") == 0) o->lo.arrival = ERT_ARRIVAL_POISSON;
            else if (strcmp(optarg, "constant") == 0) o->lo.arrival = ERT_ARRIVAL_CONSTANT;
            else cli_fail("--arrival '%s': expected poisson or constant", optarg);
            break;
        case 'c':
            o->lo.concurrency = (int)cli_int("--concurrency", optarg, 1, 1 << 20);
            o->lo.arrival = ERT_ARRIVAL_CLOSED;
            break;
        case 'n':
            o->lo.requests = cli_int("--requests", optarg, 1, 1LL << 31);
            o->requests_given = 1;
            break;
        case 't':
            o->lo.duration_s = cli_real("--duration", optarg, 1e-3, 86400);
            o->duration_given = 1;
            break;
        case O_SEED: o->lo.seed = (uint64_t)cli_int("--seed", optarg, 0, 1LL << 62); break;
        case 'b': o->lo.max_batch = (int)cli_int("--max-batch", optarg, 1, 1 << 16); break;
        case O_DELAY: o->lo.max_delay_ms = cli_real("--max-delay-ms", optarg, 0, 1e6); break;
        case 's': o->streams = (int)cli_int("--streams", optarg, 1, 64); break;
        case O_LATE: o->lo.late_answers = 1; break;
        case O_SLO: o->lo.slo_ms = cli_real("--slo-ms", optarg, 1e-3, 1e7); break;
        case O_PCT: o->lo.percentile = cli_real("--percentile", optarg, 1, 100); break;
        case O_PEAK: o->find_peak = 1; break;
        case O_QLO: o->po.qps_lo = cli_real("--qps-lo", optarg, 1e-3, 1e9); break;
        case O_QHI: o->po.qps_hi = cli_real("--qps-hi", optarg, 1e-3, 1e9); break;
        case O_TOL: o->po.tolerance = cli_real("--tolerance", optarg, 1e-4, 0.9); break;
        case O_CTRL:
            if (strcmp(optarg, "off") == 0 || strcmp(optarg, "none") == 0) o->lo.controller = ERT_CONTROLLER_NONE;
            else if (strcmp(optarg, "slo") == 0) o->lo.controller = ERT_CONTROLLER_SLO;
            else cli_fail("--controller '%s': expected off or slo", optarg);
            break;
        case O_POINTS: o->points_text = optarg; break;
        case O_START: o->lo.point = (int)cli_int("--start-point", optarg, 0, MAX_POINTS - 1); break;
        case O_WINDOW: o->lo.window_ms = cli_real("--window-ms", optarg, 1, 1e6); break;
        case O_SLACK: o->lo.slack = cli_real("--slack", optarg, 0.01, 0.99); break;
        case O_PATIENCE: o->lo.patience = (int)cli_int("--patience", optarg, 1, 1000); break;
        case O_SCEN:
            if (strcmp(optarg, "load-step") == 0) o->sc = SC_LOAD_STEP;
            else if (strcmp(optarg, "shift") == 0) o->sc = SC_SHIFT;
            else if (strcmp(optarg, "none") == 0) o->sc = SC_NONE;
            else cli_fail("--scenario '%s': expected load-step or shift", optarg);
            break;
        case O_STEPQ: o->lo.step_qps = cli_real("--step-qps", optarg, 1e-3, 1e9); break;
        case O_STEPAT: o->step_at = cli_real("--step-at", optarg, 1e-3, 86400); break;
        case O_SHFRAC: o->lo.shift_fraction = cli_real("--shift-fraction", optarg, 0, 1); break;
        case O_SHIFT:
            o->shift_severity = 5; /* KIND alone: severity 5 */
            cli_shift(optarg, &o->shift_kind, &o->shift_severity);
            break;
        case O_SHAT: o->shift_at = cli_real("--shift-at", optarg, 0, 86400); break;
        case 'j': o->json = 1; break;
        case 'o': o->output = optarg; break;
        case O_TIMELINE: o->timeline = optarg; break;
        case O_REQCSV: o->requests_csv = optarg; break;
        case 'h': lt_usage(stdout); exit(0);
        default: lt_usage(stderr); exit(1);
        }
    }
    cli_no_extra_args(argc, argv, lt_usage);
    cli_require_model_data(o->model, o->data);
    if (o->find_peak && o->sc) cli_fail("--find-peak and --scenario are separate runs: give one");
    if (o->find_peak && o->lo.controller) cli_fail("--find-peak runs each policy at a fixed point: drop --controller");
    if (o->find_peak && o->lo.arrival == ERT_ARRIVAL_CLOSED) cli_fail("--find-peak searches Poisson rates: drop --concurrency");
    if (o->sc && o->lo.arrival == ERT_ARRIVAL_CLOSED) cli_fail("--scenario needs open-loop arrivals: drop --concurrency");
    if (o->sc && !o->points_text && o->num_policies < 2)
        cli_fail("--scenario needs operating points: --points LIST (strictest first)");
    if (o->lo.controller && !o->points_text && o->num_policies < 2)
        cli_fail("--controller slo needs operating points: --points LIST (strictest first)");
    if (o->lo.step_qps > 0 && o->sc != SC_LOAD_STEP && o->step_at < 0)
        cli_fail("--step-qps needs --step-at S (or --scenario load-step)");
    if (!o->requests_given && !o->duration_given) {
        if (o->find_peak) o->lo.requests = 10000;
        else o->lo.duration_s = o->sc ? 6.0 : 3.0;
    }
    o->po.slo_ms = o->lo.slo_ms;
    o->po.percentile = o->lo.percentile;
}

/* ---------------------------------------------------------------- JSON */

static cJSON *stats_json(const ert_load_stats *s) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "mean", s->mean);
    cJSON_AddNumberToObject(j, "p50", s->p50);
    cJSON_AddNumberToObject(j, "p90", s->p90);
    cJSON_AddNumberToObject(j, "p95", s->p95);
    cJSON_AddNumberToObject(j, "p99", s->p99);
    cJSON_AddNumberToObject(j, "p99.9", s->p999);
    cJSON_AddNumberToObject(j, "max", s->max);
    return j;
}

static void add_num_or_null(cJSON *j, const char *key, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(j, key, v);
    else cJSON_AddNullToObject(j, key);
}

/* Accuracy and SLO attainment: negative when unknown (no labels, no SLO). */
static void add_share_or_null(cJSON *j, const char *key, double v) { add_num_or_null(j, key, v >= 0 ? v : NAN); }

static cJSON *result_json(const ert_load_result *r, point_list *pts) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "requests", (double)r->requests);
    cJSON_AddNumberToObject(j, "duration_s", r->duration_s);
    cJSON_AddNumberToObject(j, "offered_qps", r->offered_qps);
    cJSON_AddNumberToObject(j, "throughput", r->throughput);
    cJSON_AddItemToObject(j, "latency_ms", stats_json(&r->latency));
    cJSON_AddItemToObject(j, "queue_ms", stats_json(&r->queue));
    cJSON_AddItemToObject(j, "compute_ms", stats_json(&r->compute));
    cJSON_AddNumberToObject(j, "slo_ms", r->slo_ms);
    add_share_or_null(j, "slo_attainment", r->slo_attainment);
    add_share_or_null(j, "accuracy", r->accuracy);
    add_num_or_null(j, "mean_exit", r->mean_exit);
    cJSON *h = cJSON_AddArrayToObject(j, "exit_histogram");
    for (int e = 0; e < r->num_exits; ++e) cJSON_AddItemToArray(h, cJSON_CreateNumber((double)r->exit_histogram[e]));
    cJSON_AddNumberToObject(j, "batches", (double)r->batches);
    cJSON_AddNumberToObject(j, "mean_batch", r->mean_batch);
    cJSON *pr = cJSON_AddArrayToObject(j, "point_requests");
    for (int p = 0; p < r->num_points && p < 64; ++p)
        cJSON_AddItemToArray(pr, cJSON_CreateNumber((double)r->point_requests[p]));
    cJSON *tl = cJSON_AddArrayToObject(j, "timeline");
    for (int w = 0; w < r->num_windows; ++w) {
        const ert_load_window *x = &r->windows[w];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "t_s", x->t_ms * 1e-3);
        cJSON_AddNumberToObject(o, "arrivals", (double)x->arrivals);
        cJSON_AddNumberToObject(o, "completed", (double)x->completed);
        cJSON_AddNumberToObject(o, "offered_qps", x->offered_qps);
        cJSON_AddNumberToObject(o, "throughput_qps", x->throughput_qps);
        add_num_or_null(o, "p50_ms", x->p50_ms);
        add_num_or_null(o, "p99_ms", x->p99_ms);
        add_share_or_null(o, "accuracy", x->accuracy);
        add_num_or_null(o, "mean_exit", x->mean_exit);
        cJSON_AddNumberToObject(o, "shifted_share", x->shifted_share);
        cJSON_AddNumberToObject(o, "point", x->point);
        cJSON_AddItemToArray(tl, o);
    }
    cJSON *ch = cJSON_AddArrayToObject(j, "changes");
    for (int c = 0; c < r->num_changes; ++c) {
        const ert_load_change *x = &r->changes[c];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "t_s", x->t_ms * 1e-3);
        cJSON_AddNumberToObject(o, "from", x->from);
        cJSON_AddNumberToObject(o, "to", x->to);
        cJSON_AddStringToObject(o, "from_policy", pts->spec[x->from]);
        cJSON_AddStringToObject(o, "to_policy", pts->spec[x->to]);
        cJSON_AddNumberToObject(o, "observed_ms", x->observed_ms);
        cJSON_AddNumberToObject(o, "observed_requests", (double)x->observed_n);
        cJSON_AddItemToArray(ch, o);
    }
    return j;
}

static cJSON *phase_json(const ert_load_phase *p) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "requests", (double)p->requests);
    add_num_or_null(j, "latency_q_ms", p->latency_q);
    add_num_or_null(j, "p50_ms", p->p50);
    add_share_or_null(j, "accuracy", p->accuracy);
    add_num_or_null(j, "mean_exit", p->mean_exit);
    add_share_or_null(j, "slo_attainment", p->slo_attainment);
    return j;
}

static cJSON *trial_json(const ert_peak_trial *t) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "qps", t->qps);
    add_num_or_null(j, "latency_q_ms", t->latency_q);
    add_num_or_null(j, "latency_q_tail_ms", t->latency_q_tail);
    cJSON_AddNumberToObject(j, "throughput", t->throughput);
    add_share_or_null(j, "accuracy", t->accuracy);
    add_num_or_null(j, "mean_exit", t->mean_exit);
    cJSON_AddBoolToObject(j, "pass", t->pass);
    return j;
}

/* ---------------------------------------------------------------- files */

/* Writes PATH.tmp.PID and renames it over PATH: a failed run leaves PATH as it was. */
typedef struct out_file {
    const char *path;
    char tmp[4096];
    FILE *f;
} out_file;

static void out_open(out_file *of, const char *flag, const char *path) {
    of->path = path;
    snprintf(of->tmp, sizeof of->tmp, "%s.tmp.%d", path, (int)getpid());
    of->f = fopen(of->tmp, "w");
    if (!of->f) cli_fail("%s '%s': cannot write", flag, path);
}

static void out_close(out_file *of, const char *flag, int ok) {
    if (fclose(of->f) != 0 || !ok || rename(of->tmp, of->path) != 0) {
        remove(of->tmp);
        cli_fail("%s '%s': write failed", flag, of->path);
    }
}

static void write_json_file(const char *path, const cJSON *root) {
    out_file of;
    out_open(&of, "--output", path);
    char *text = cJSON_Print(root);
    int ok = text && fputs(text, of.f) >= 0 && fputc('\n', of.f) != EOF;
    free(text);
    out_close(&of, "--output", ok);
}

/* A run to report: its label, point names and result. */
typedef struct run_rec {
    char label[64];       /* "confidence:0.9", "controller off", ... */
    const char *controller;
    ert_load_result *r;
} run_rec;

static void write_timeline(const char *path, const run_rec *runs, int n, point_list *pts) {
    out_file of;
    out_open(&of, "--timeline", path);
    int ok = fprintf(of.f, "run,controller,t_s,offered_qps,throughput_qps,p50_ms,p99_ms,accuracy,mean_exit,"
                           "shifted_share,point,point_policy\n") > 0;
    for (int i = 0; ok && i < n; ++i)
        for (int w = 0; ok && w < runs[i].r->num_windows; ++w) {
            const ert_load_window *x = &runs[i].r->windows[w];
            ok = fprintf(of.f, "\"%s\",%s,%.3f,%.1f,%.1f,%.4f,%.4f,%.5f,%.4f,%.4f,%d,\"%s\"\n", runs[i].label,
                         runs[i].controller, x->t_ms * 1e-3, x->offered_qps, x->throughput_qps, x->p50_ms, x->p99_ms,
                         x->accuracy, x->mean_exit, x->shifted_share, x->point, pts->spec[x->point]) > 0;
        }
    out_close(&of, "--timeline", ok);
}

static void write_requests(const char *path, const run_rec *runs, int n) {
    out_file of;
    out_open(&of, "--requests-csv", path);
    int ok = fprintf(of.f, "run,index,arrival_ms,start_ms,done_ms,latency_ms,queue_ms,sample,shifted,exit,pred,"
                           "correct,point,stream,batch,batch_size\n") > 0;
    for (int i = 0; ok && i < n; ++i)
        for (int64_t k = 0; ok && k < runs[i].r->requests; ++k) {
            const ert_load_request *q = &runs[i].r->req[k];
            ok = fprintf(of.f, "\"%s\",%lld,%.4f,%.4f,%.4f,%.4f,%.4f,%lld,%d,%d,%d,%d,%d,%d,%lld,%d\n", runs[i].label,
                         (long long)k, q->arrival_ms, q->start_ms, q->done_ms, q->done_ms - q->arrival_ms,
                         q->start_ms - q->arrival_ms, (long long)q->sample, q->shifted, q->exit, q->pred, q->correct,
                         q->point, q->stream, (long long)q->batch, q->batch_size) > 0;
        }
    out_close(&of, "--requests-csv", ok);
}

/* ---------------------------------------------------------------- printing */

static const char *arrival_text(const lt_opts *o, char *buf, size_t len) {
    const ert_load_options *l = &o->lo;
    char lim[64];
    if (l->requests > 0) snprintf(lim, sizeof lim, "%lld requests", (long long)l->requests);
    else snprintf(lim, sizeof lim, "%.1f s", l->duration_s);
    if (l->arrival == ERT_ARRIVAL_CLOSED) snprintf(buf, len, "closed loop, %d clients, %s", l->concurrency, lim);
    else snprintf(buf, len, "%s %.0f qps, %s", l->arrival == ERT_ARRIVAL_CONSTANT ? "constant" : "Poisson", l->qps, lim);
    return buf;
}

static void print_stats_row(const char *name, const ert_load_stats *s) {
    printf("  %-10s %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f\n", name, s->mean, s->p50, s->p90, s->p95, s->p99, s->p999,
           s->max);
}

static void print_result(const char *label, const ert_load_result *r, point_list *pts) {
    printf("\n%s\n", label);
    printf("  %lld requests in %.2f s: offered %.0f qps, throughput %.0f qps; %lld batches (mean %.1f requests)\n",
           (long long)r->requests, r->duration_s, r->offered_qps, r->throughput, (long long)r->batches, r->mean_batch);
    printf("  %-10s %8s %8s %8s %8s %8s %8s %8s\n", "ms", "mean", "p50", "p90", "p95", "p99", "p99.9", "max");
    print_stats_row("latency", &r->latency);
    print_stats_row("queueing", &r->queue);
    print_stats_row("compute", &r->compute);
    if (r->slo_attainment >= 0) printf("  SLO %.1f ms: %.2f%% answered within;", r->slo_ms, 100.0 * r->slo_attainment);
    if (r->accuracy >= 0) printf(" accuracy %.2f%%;", 100.0 * r->accuracy);
    printf(" mean exit %.3f\n  exits:", r->mean_exit);
    for (int e = 0; e < r->num_exits; ++e)
        printf(" %d: %lld (%.1f%%)", e, (long long)r->exit_histogram[e],
               r->requests ? 100.0 * (double)r->exit_histogram[e] / (double)r->requests : 0.0);
    printf("\n");
    if (r->num_points > 1) {
        printf("  requests per operating point:");
        for (int p = 0; p < r->num_points && p < 64; ++p)
            if (r->point_requests[p]) printf(" %s: %lld", pts->spec[p], (long long)r->point_requests[p]);
        printf("\n");
    }
    for (int c = 0; c < r->num_changes; ++c)
        printf("  [%7.3f s] %s -> %s (window percentile %.2f ms over %lld requests)\n",
               r->changes[c].t_ms * 1e-3, pts->spec[r->changes[c].from], pts->spec[r->changes[c].to],
               r->changes[c].observed_ms,
               (long long)r->changes[c].observed_n);
}

/* ---------------------------------------------------------------- the command */

/* The closed-loop throughput of one operating point (its capacity), on clean inputs or
 * with the scenario's share of shifted ones. */
static double capacity_of(ert_load_server *srv, const ert_load_options *base, int point, double shift_fraction) {
    ert_load_options c = *base;
    c.arrival = ERT_ARRIVAL_CLOSED;
    c.concurrency = 2 * base->max_batch * ert_load_server_streams(srv);
    c.controller = ERT_CONTROLLER_NONE;
    c.step_at_s = 0;
    c.shift_at_s = shift_fraction > 0 ? 0 : -1;
    c.shift_fraction = shift_fraction;
    c.duration_s = 0;
    c.requests = 20 * c.concurrency;
    c.point = point;
    ert_load_result *r = NULL;
    cli_check(ert_loadtest_run(srv, &c, &r));
    const double t = r->throughput;
    ert_load_result_free(r);
    return t;
}

int cmd_loadtest(int argc, char **argv) {
    lt_opts o = {0};
    parse_opts(argc, argv, &o);

    /* Operating points: --points, else the policies. */
    point_list pts = {0};
    if (o.points_text) {
        if (o.points_text[0] == '@') points_parse_file(&pts, o.points_text + 1);
        else points_parse_list(&pts, o.points_text);
        if (o.num_policies) cli_fail("give --points or --policy, not both");
    } else {
        for (int i = 0; i < o.num_policies; ++i) points_add(&pts, o.policies[i], strlen(o.policies[i]));
        if (pts.n == 0) points_add(&pts, "confidence:0.9", strlen("confidence:0.9"));
    }
    if (o.lo.point >= pts.n) cli_fail("--start-point %d: there are %d operating points", o.lo.point, pts.n);
    ert_policy *pol[MAX_POINTS] = {0};
    for (int i = 0; i < pts.n; ++i) cli_check(ert_policy_parse(pts.spec[i], &pol[i]));

    ert_model *model = NULL;
    ert_dataset *data = NULL, *shifted = NULL;
    cli_load(o.model, o.data, 0, o.limit, &model, &data);
    const int want_shift = o.sc == SC_SHIFT || (o.shift_at >= 0 && o.lo.shift_fraction > 0);
    if (want_shift) {
        /* The corrupted copy of the same samples (the evaluation suite's corruptions). */
        cli_check(ert_dataset_copy(data, &shifted));
        cli_check(ert_shift_apply(shifted, o.shift_kind, o.shift_severity, o.lo.seed + 99));
    }
    ert_load_server_options so = ert_load_server_options_default();
    so.session.mode = o.mode;
    so.session.max_batch = o.lo.max_batch;
    so.streams = o.streams;
    cli_session_apply(&o.session, &so.session);
    ert_load_server *srv = NULL;
    cli_check(ert_load_server_new(model, data, shifted, (const ert_policy *const *)pol, pts.n, &so, &srv));
    /* The streams' sessions share their options: the first says what runs. */
    const ert_session *s0 = ert_load_server_session(srv, 0);
    cli_note_exec(s0);
    const char *device = ert_session_device(s0);
    so.session.exec = ert_session_get_options(s0).exec;
    so.session.compaction = ert_session_get_options(s0).compaction;

    char arr[160];
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "model", ert_model_name(model));
    cJSON_AddStringToObject(root, "data", data->name);
    cJSON_AddStringToObject(root, "device", device);
    cJSON_AddStringToObject(root, "exec", ert_exec_name(so.session.exec));
    cJSON_AddStringToObject(root, "compaction", ert_compaction_name(so.session.compaction));
    cJSON_AddNumberToObject(root, "streams", so.streams);
    cJSON_AddNumberToObject(root, "max_batch", o.lo.max_batch);
    cJSON_AddNumberToObject(root, "max_delay_ms", o.lo.max_delay_ms);
    cJSON_AddNumberToObject(root, "slo_ms", o.lo.slo_ms);
    cJSON_AddNumberToObject(root, "percentile", o.lo.percentile);
    cJSON_AddBoolToObject(root, "early_answers", !o.lo.late_answers);
    cJSON *pj = cJSON_AddArrayToObject(root, "points");
    for (int i = 0; i < pts.n; ++i) cJSON_AddItemToArray(pj, cJSON_CreateString(pts.spec[i]));
    const int table = !o.json;
    if (table)
        printf("model %s | data %s (%lld samples) | device %s | streams %d | batch <= %d, delay %.2f ms | %s answers\n",
               ert_model_name(model), data->name, (long long)data->n, device, so.streams, o.lo.max_batch,
               o.lo.max_delay_ms, o.lo.late_answers ? "late (batch end)" : "early (at the exit)");

    run_rec runs[2 * MAX_POINTS];
    int nruns = 0;

    if (o.find_peak) {
        cJSON_AddStringToObject(root, "kind", "peak");
        cJSON_AddStringToObject(root, "trial", arrival_text(&o, arr, sizeof arr));
        cJSON *peaks = cJSON_AddArrayToObject(root, "peaks");
        if (table)
            printf("peak search: Poisson arrivals, each trial %s; bound p%g <= %.2f ms (whole trial and its second half)\n",
                   o.lo.requests > 0 ? "a fixed number of requests" : "a fixed duration", o.lo.percentile,
                   o.lo.slo_ms);
        ert_peak_result *pk = calloc((size_t)pts.n, sizeof *pk);
        if (!pk) cli_fail("out of memory");
        for (int i = 0; i < pts.n; ++i) {
            ert_load_options t = o.lo;
            t.point = i;
            cli_check(ert_loadtest_find_peak(srv, &t, &o.po, &pk[i]));
            cJSON *pj1 = cJSON_CreateObject();
            cJSON_AddStringToObject(pj1, "policy", pts.spec[i]);
            cJSON_AddBoolToObject(pj1, "found", pk[i].found);
            cJSON_AddNumberToObject(pj1, "peak_qps", pk[i].found ? pk[i].peak_qps : 0.0);
            cJSON_AddNumberToObject(pj1, "capacity_qps", pk[i].capacity_qps);
            cJSON_AddNumberToObject(pj1, "max_qps", pk[i].max_qps);
            cJSON_AddBoolToObject(pj1, "limited", pk[i].limited);
            cJSON_AddItemToObject(pj1, "at_peak", trial_json(&pk[i].at_peak));
            cJSON *tr = cJSON_AddArrayToObject(pj1, "trials");
            for (int k = 0; k < pk[i].num_trials; ++k) cJSON_AddItemToArray(tr, trial_json(&pk[i].trials[k]));
            cJSON_AddItemToArray(peaks, pj1);
            if (table) {
                printf("\n%s: closed-loop capacity %.0f qps\n", pts.spec[i], pk[i].capacity_qps);
                printf("  %10s %10s %10s %10s %9s %5s\n", "qps", "p-whole", "p-2nd-half", "thruput", "accuracy", "pass");
                for (int k = 0; k < pk[i].num_trials; ++k) {
                    const ert_peak_trial *x = &pk[i].trials[k];
                    printf("  %10.0f %10.3f %10.3f %10.0f %8.2f%% %5s\n", x->qps, x->latency_q, x->latency_q_tail,
                           x->throughput, 100.0 * x->accuracy, x->pass ? "yes" : "no");
                }
                fflush(stdout);
            }
        }
        if (table) {
            printf("\npeak under p%g <= %.2f ms\n%-28s %10s %12s %10s %10s %10s\n", o.lo.percentile, o.lo.slo_ms,
                   "policy", "peak qps", "p at peak", "accuracy", "mean exit", "capacity");
            for (int i = 0; i < pts.n; ++i) {
                if (!pk[i].found) {
                    printf("%-28s %10s (even %.0f qps missed the bound: p %.3f ms)\n", pts.spec[i], "-",
                           pk[i].at_peak.qps, pk[i].at_peak.latency_q);
                    continue;
                }
                printf("%-28s %10.0f %12.3f %9.2f%% %10.3f %10.0f%s\n", pts.spec[i], pk[i].peak_qps,
                       pk[i].at_peak.latency_q, 100.0 * pk[i].at_peak.accuracy, pk[i].at_peak.mean_exit,
                       pk[i].capacity_qps, pk[i].limited ? "  (at least: the trials' limit)" : "");
            }
            for (int i = 0; i < pts.n; ++i)
                if (pk[i].limited) {
                    printf("the trials' limit: %lld requests test rates up to %.0f qps (their arrivals must span "
                           "%d x the bound, or a burst would drain within it); more --requests may find higher "
                           "peaks\n",
                           (long long)o.lo.requests, pk[i].max_qps, ERT_PEAK_MIN_SPAN);
                    break;
                }
        }
        free(pk);
    } else if (o.sc) {
        const int last = pts.n - 1;
        ert_load_options base = o.lo;
        const double dur = base.duration_s > 0 ? base.duration_s : 6.0;
        double cap0 = 0, capl = 0, cap0s = 0;
        if (!o.qps_given) {
            /* Rates from the measured capacities (closed loop) of the start point and the
             * loosest point. Load step: half the start point's capacity, then 1.4x it (at
             * most 0.8x the loosest point's). Shift: between the start point's capacity on
             * clean inputs and on the shifted mix, so that the shift alone overloads it. */
            cap0 = capacity_of(srv, &base, base.point, 0.0);
            capl = capacity_of(srv, &base, last, 0.0);
            if (o.sc == SC_LOAD_STEP) {
                base.qps = 0.5 * cap0;
                if (!(base.step_qps > 0)) base.step_qps = fmin(1.4 * cap0, 0.8 * capl);
            } else {
                cap0s = capacity_of(srv, &base, base.point, base.shift_fraction);
                base.qps = fmin(0.5 * (cap0 + cap0s), 0.85 * cap0);
            }
            if (table) {
                printf("capacity (closed loop): %s %.0f qps", pts.spec[base.point], cap0);
                if (cap0s > 0) printf(" (%.0f qps with the shifted mix)", cap0s);
                printf(", %s %.0f qps -> offered %.0f qps", pts.spec[last], capl, base.qps);
                if (o.sc == SC_LOAD_STEP) printf(", then %.0f qps", base.step_qps);
                printf("\n");
            }
        }
        const double at = o.sc == SC_LOAD_STEP ? (o.step_at > 0 ? o.step_at : dur / 2) : (o.shift_at >= 0 ? o.shift_at : dur / 2);
        if (o.sc == SC_LOAD_STEP) {
            if (!(base.step_qps > 0)) base.step_qps = 2.0 * base.qps;
            base.step_at_s = at;
            base.shift_fraction = 0;
        } else {
            base.shift_at_s = at;
        }
        cJSON_AddStringToObject(root, "kind", "scenario");
        cJSON_AddStringToObject(root, "scenario", o.sc == SC_LOAD_STEP ? "load-step" : "shift");
        cJSON_AddNumberToObject(root, "qps", base.qps);
        if (o.sc == SC_LOAD_STEP) cJSON_AddNumberToObject(root, "step_qps", base.step_qps);
        else {
            cJSON_AddNumberToObject(root, "shift_fraction", base.shift_fraction);
            cJSON_AddStringToObject(root, "shift", ert_shift_name(o.shift_kind));
            cJSON_AddNumberToObject(root, "shift_severity", o.shift_severity);
        }
        cJSON_AddNumberToObject(root, "change_at_s", at);
        cJSON_AddNumberToObject(root, "duration_s", dur);
        if (cap0 > 0) {
            cJSON_AddNumberToObject(root, "capacity_start_point_qps", cap0);
            cJSON_AddNumberToObject(root, "capacity_loosest_point_qps", capl);
            if (cap0s > 0) cJSON_AddNumberToObject(root, "capacity_start_point_shifted_qps", cap0s);
        }
        cJSON *rj = cJSON_AddArrayToObject(root, "runs");
        if (table) {
            if (o.sc == SC_LOAD_STEP)
                printf("scenario load-step: Poisson %.0f qps, %.0f qps from %.2f s, %.1f s; SLO p%g <= %.1f ms\n",
                       base.qps, base.step_qps, at, dur, base.percentile, base.slo_ms);
            else
                printf("scenario shift: Poisson %.0f qps; from %.2f s, %.0f%% of inputs corrupted (%s, severity %d); "
                       "%.1f s; SLO p%g <= %.1f ms\n",
                       base.qps, at, 100 * base.shift_fraction, ert_shift_name(o.shift_kind), o.shift_severity, dur,
                       base.percentile, base.slo_ms);
            printf("points:");
            for (int i = 0; i < pts.n; ++i) printf(" [%d] %s", i, pts.spec[i]);
            printf("\n");
        }
        ert_load_phase ph[2][2];
        for (int c = 0; c < 2; ++c) {
            ert_load_options l = base;
            l.controller = c ? ERT_CONTROLLER_SLO : ERT_CONTROLLER_NONE;
            ert_load_result *r = NULL;
            cli_check(ert_loadtest_run(srv, &l, &r));
            run_rec *rr = &runs[nruns++];
            snprintf(rr->label, sizeof rr->label, "controller %s", c ? "slo" : "off");
            rr->controller = c ? "slo" : "off";
            rr->r = r;
            ph[c][0] = ert_load_result_phase(r, -INFINITY, at * 1e3, base.percentile);
            ph[c][1] = ert_load_result_phase(r, at * 1e3, INFINITY, base.percentile);
            cJSON *one = result_json(r, &pts);
            cJSON_AddStringToObject(one, "controller", rr->controller);
            cJSON_AddStringToObject(one, "start_policy", pts.spec[base.point]);
            cJSON *phs = cJSON_AddObjectToObject(one, "phases");
            cJSON_AddItemToObject(phs, "before", phase_json(&ph[c][0]));
            cJSON_AddItemToObject(phs, "after", phase_json(&ph[c][1]));
            cJSON_AddItemToArray(rj, one);
        }
        if (table) {
            printf("\n%-8s %8s %8s %10s %10s %9s %9s %9s\n", "t (s)", "offered", "off p99", "off acc", "on p99",
                   "on acc", "on point", "shifted");
            printf("(per %.0f ms window, by answer time; p99 = p%g)\n", base.window_ms, base.percentile);
            const ert_load_result *a = runs[0].r, *b = runs[1].r;
            const int nw = a->num_windows > b->num_windows ? a->num_windows : b->num_windows;
            for (int w = 0; w < nw; ++w) {
                const ert_load_window *x = w < a->num_windows ? &a->windows[w] : NULL;
                const ert_load_window *y = w < b->num_windows ? &b->windows[w] : NULL;
                const ert_load_window *t = x ? x : y;
                char cell[4][32];
                const ert_load_window *ws[2] = {x, y};
                for (int k = 0; k < 2; ++k) {
                    const ert_load_window *v = ws[k];
                    if (v && v->completed) {
                        snprintf(cell[2 * k], sizeof cell[0], "%.2f", v->p99_ms);
                        snprintf(cell[2 * k + 1], sizeof cell[0], "%.2f%%", 100 * v->accuracy);
                    } else {
                        snprintf(cell[2 * k], sizeof cell[0], "-");
                        snprintf(cell[2 * k + 1], sizeof cell[0], "-");
                    }
                }
                printf("%-8.2f %8.0f %8s %10s %10s %9s %9s %8.0f%%\n", t->t_ms * 1e-3, t->offered_qps, cell[0], cell[1],
                       cell[2], cell[3], y ? pts.spec[y->point] : "-", 100 * t->shifted_share);
            }
            printf("\n%-11s %-7s %9s %9s %9s %10s %10s %9s\n", "controller", "phase", "requests", "p50 ms", "p99 ms",
                   "within SLO", "accuracy", "mean exit");
            for (int c = 0; c < 2; ++c)
                for (int p = 0; p < 2; ++p)
                    printf("%-11s %-7s %9lld %9.2f %9.2f %9.2f%% %9.2f%% %9.3f\n", c ? "slo" : "off", p ? "after" : "before",
                           (long long)ph[c][p].requests, ph[c][p].p50, ph[c][p].latency_q,
                           100 * ph[c][p].slo_attainment, 100 * ph[c][p].accuracy, ph[c][p].mean_exit);
            printf("(p99 = p%g; phases split at %.2f s by intended arrival)\n", base.percentile, at);
            print_result("controller slo: whole run", runs[1].r, &pts);
        }
    } else {
        cJSON_AddStringToObject(root, "kind", "loadtest");
        cJSON_AddStringToObject(root, "arrival", arrival_text(&o, arr, sizeof arr));
        cJSON *rj = cJSON_AddArrayToObject(root, "runs");
        if (table)
            printf("arrivals: %s; objective p%g <= %.1f ms%s\n", arr, o.lo.percentile, o.lo.slo_ms,
                   o.lo.controller ? "; SLO controller on" : "");
        /* With the controller: one run over the points. Without: one run per policy. */
        const int nrun = o.lo.controller ? 1 : pts.n;
        for (int i = 0; i < nrun; ++i) {
            ert_load_options l = o.lo;
            if (!o.lo.controller) l.point = i;
            if (o.shift_at >= 0 && shifted) l.shift_at_s = o.shift_at;
            if (o.step_at > 0 && l.step_qps > 0) l.step_at_s = o.step_at;
            ert_load_result *r = NULL;
            cli_check(ert_loadtest_run(srv, &l, &r));
            run_rec *rr = &runs[nruns++];
            snprintf(rr->label, sizeof rr->label, "%s", o.lo.controller ? "controller slo" : pts.spec[i]);
            rr->controller = o.lo.controller ? "slo" : "off";
            rr->r = r;
            cJSON *one = result_json(r, &pts);
            cJSON_AddStringToObject(one, "policy", o.lo.controller ? pts.spec[l.point] : pts.spec[i]);
            cJSON_AddStringToObject(one, "controller", rr->controller);
            cJSON_AddItemToArray(rj, one);
            if (table) {
                char label[160];
                snprintf(label, sizeof label, "%s%s", o.lo.controller ? "controller slo, starting at " : "policy ",
                         pts.spec[l.point]);
                print_result(label, r, &pts);
                fflush(stdout);
            }
        }
        if (table && nrun > 1) {
            printf("\n%-24s %9s %9s %9s %9s %9s %9s %10s %9s %9s\n", "policy", "thruput", "p50 ms", "p99 ms", "p99.9 ms",
                   "queue p99", "comp p99", "within SLO", "accuracy", "mean exit");
            for (int i = 0; i < nruns; ++i) {
                const ert_load_result *r = runs[i].r;
                printf("%-24s %9.0f %9.3f %9.3f %9.3f %9.3f %9.3f %9.2f%% %8.2f%% %9.3f\n", runs[i].label, r->throughput,
                       r->latency.p50, r->latency.p99, r->latency.p999, r->queue.p99, r->compute.p99,
                       100 * r->slo_attainment, 100 * r->accuracy, r->mean_exit);
            }
        }
    }

    if (o.json) {
        char *text = cJSON_PrintUnformatted(root);
        printf("%s\n", text);
        free(text);
    }
    if (o.output) write_json_file(o.output, root);
    if (o.timeline) {
        if (!nruns) cli_fail("--timeline: a peak search has no timeline (its trials are in --output)");
        write_timeline(o.timeline, runs, nruns, &pts);
    }
    if (o.requests_csv) {
        if (!nruns) cli_fail("--requests-csv: a peak search keeps no requests");
        write_requests(o.requests_csv, runs, nruns);
    }
    cJSON_Delete(root);
    for (int i = 0; i < nruns; ++i) ert_load_result_free(runs[i].r);
    ert_load_server_free(srv);
    for (int i = 0; i < pts.n; ++i) {
        ert_policy_free(pol[i]);
        free(pts.spec[i]);
    }
    ert_dataset_free(shifted);
    ert_dataset_free(data);
    ert_model_free(model);
    return 0;
}
