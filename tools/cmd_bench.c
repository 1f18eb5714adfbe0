/* exitrt bench: the headline benchmark grid of BENCHMARKS.md ("does early exit pay?").
 *
 * For each width D a residual MLP is synthesised (exitrt synth's model) into a temporary
 * directory, loaded, and the directory removed. For each batch B, three sessions (full,
 * masked, compact) run the same seeded inputs with the policy scheduled:hazard=H,seed=S
 * (every sample's exit drawn; the real decide kernel still runs), and right after each
 * compact run the compact session runs the "ideal": the stage bodies alone at the row
 * counts the compact run measured (ert_session_run_rows). Variants are interleaved
 * run by run, so a drift of clocks or temperature hits them alike.
 *
 * Times come from the session profile (device events on a GPU, the wall clock on the
 * CPU). The figure compared is the forward span: from stage 0's first kernel to the end
 * of the last stage that ran. It leaves out the input upload and the result download,
 * which every variant but the ideal would otherwise carry (at D=4096, B=8192 the f32
 * input alone is 128 MiB over PCIe); the whole run, transfers included (the profile's
 * batch_ms), is in the JSON too. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "exitrt/exitrt.h"

#define MAX_GRID 16
/* An exit after every block: the depth is bounded by both limits. */
#define MAX_DEPTH (ERT_MAX_EXITS < ERT_MAX_STAGES ? ERT_MAX_EXITS : ERT_MAX_STAGES)

/* ---------------------------------------------------------------- errors */


/* ---------------------------------------------------------------- options */

typedef struct bench_opts {
    const char *device, *json, *tmp;
    int widths[MAX_GRID], num_widths;
    int batches[MAX_GRID], num_batches;
    int depth, classes, reps, warmup, threads;
    int eager, graph; /* which executions run (--exec) */
    const char *buckets;
    ert_compaction compaction; /* of the compact sessions */
    ert_dtype dtype;
    int dtype_set;
    double hazard;
    long long seed;
} bench_opts;

static void bench_usage(FILE *f) {
    fprintf(f,
            "usage: exitrt bench [--device cpu|cuda:N] [--widths 1024,4096] [--batches 64,1024,8192]\n"
            "                    [--depth 12] [--classes 10] [--dtype bf16] [--hazard 0.15] [--seed 1]\n"
            "                    [--reps 50] [--warmup 5] [--exec both] [--buckets LIST]\n"
            "                    [--compaction auto|gather|fill] [--json FILE] [--tmp DIR]\n"
            "\n"
            "The headline benchmark: a residual MLP (blocks x = x + relu(W x + b), an exit head\n"
            "after each) with seeded weights and inputs; every sample's exit drawn by the policy\n"
            "scheduled:hazard=H,seed=S. Per width D and batch B it times, from ONE run, the\n"
            "variants full (every block for every row, last head only), masked (every row\n"
            "computed, every head decided), compact (survivors compacted, eager) and ideal (the\n"
            "blocks alone at the survivor counts the compact run measured). With graph\n"
            "execution also full-graph, compact-graph and ideal-graph (each one graph launch)\n"
            "and compact-graph without stage events (the timing's own cost). Times are medians\n"
            "of --reps runs on the device timeline (p99 in the JSON). Ends with the graph\n"
            "mode's targets (issue 4) beside the measured values.\n"
            "\n"
            "  -D, --device DEV     cpu (default) | cuda:N\n"
            "  -w, --widths LIST    widths D (default: 1024,4096 on cuda, 256 on cpu)\n"
            "  -b, --batches LIST   batch sizes B (default: 64,1024,8192 on cuda, 64,256 on cpu)\n"
            "  -L, --depth L        blocks, an exit after each (default 12)\n"
            "  -c, --classes C      classes of the exit heads (default 10)\n"
            "      --dtype T        f32 | tf32 | bf16 | f16 (default: bf16 on cuda, f32 on cpu)\n"
            "      --hazard H       per-exit probability that a sample leaves (default 0.15)\n"
            "      --seed S         seeds weights, inputs and exit draws (default 1)\n"
            "      --reps N         timed runs of each variant (default 50)\n"
            "      --warmup N       untimed runs of each variant first (default 5)\n"
            "      --exec E         eager | graph | both (default: both on cuda, eager on cpu)\n"
            "      --buckets LIST   graph mode's row buckets (default: see exitrt eval --help)\n"
            "      --compaction C   auto (default: fill on cpu, gather on cuda) | gather | fill:\n"
            "                       how the compact variants move the survivors (see exitrt\n"
            "                       eval --help)\n"
            CLI_THREADS_HELP("")
            "  -j, --json FILE      also write every figure and the metadata to FILE\n"
            "      --tmp DIR        where the models are synthesised (default $TMPDIR or /tmp)\n"
            "  -h, --help           this text\n");
}

static int parse_list(const char *flag, const char *text, int lo, int hi, int *out) {
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s", text) >= (int)sizeof buf) cli_fail("%s: list too long", flag);
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == MAX_GRID) cli_fail("%s '%s': at most %d values", flag, text, MAX_GRID);
        out[n++] = (int)cli_int(flag, tok, lo, hi);
    }
    if (n == 0) cli_fail("%s '%s': expected a comma-separated list of integers", flag, text);
    return n;
}

enum { OPT_DTYPE = 1000, OPT_HAZARD, OPT_SEED, OPT_REPS, OPT_WARMUP, OPT_TMP, OPT_EXEC, OPT_BUCKETS, OPT_COMPACTION,
       OPT_THREADS };

static void parse_opts(int argc, char **argv, bench_opts *o) {
    static const struct option lo[] = {
        {"device", required_argument, 0, 'D'},    {"widths", required_argument, 0, 'w'},
        {"batches", required_argument, 0, 'b'},   {"depth", required_argument, 0, 'L'},
        {"classes", required_argument, 0, 'c'},   {"dtype", required_argument, 0, OPT_DTYPE},
        {"hazard", required_argument, 0, OPT_HAZARD}, {"seed", required_argument, 0, OPT_SEED},
        {"reps", required_argument, 0, OPT_REPS}, {"warmup", required_argument, 0, OPT_WARMUP},
        {"json", required_argument, 0, 'j'},      {"tmp", required_argument, 0, OPT_TMP},
        {"exec", required_argument, 0, OPT_EXEC}, {"buckets", required_argument, 0, OPT_BUCKETS},
        {"compaction", required_argument, 0, OPT_COMPACTION}, {"threads", required_argument, 0, OPT_THREADS},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    *o = (bench_opts){.device = "cpu", .depth = 12, .classes = 10, .reps = 50, .warmup = 5, .hazard = 0.15, .seed = 1};
    optind = 1;
    int c;
    const char *exec = NULL;
    while ((c = getopt_long(argc, argv, "D:w:b:L:c:j:h", lo, NULL)) != -1) {
        switch (c) {
        case 'D': o->device = optarg; break;
        case 'w': o->num_widths = parse_list("--widths", optarg, 1, 65536, o->widths); break;
        case 'b': o->num_batches = parse_list("--batches", optarg, 1, 1 << 24, o->batches); break;
        case 'L': o->depth = (int)cli_int("--depth", optarg, 1, MAX_DEPTH); break;
        case 'c': o->classes = (int)cli_int("--classes", optarg, 2, 100000); break;
        case OPT_DTYPE:
            if (ert_dtype_parse(optarg, &o->dtype) != ERT_OK)
                cli_fail("--dtype '%s': expected f32, tf32, bf16 or f16", optarg);
            o->dtype_set = 1;
            break;
        case OPT_HAZARD: o->hazard = cli_real("--hazard", optarg, 0.0, 1.0); break;
        case OPT_SEED: o->seed = cli_int("--seed", optarg, 0, 0x7fffffffffffffffll); break;
        case OPT_REPS: o->reps = (int)cli_int("--reps", optarg, 1, 1000000); break;
        case OPT_WARMUP: o->warmup = (int)cli_int("--warmup", optarg, 0, 1000000); break;
        case 'j': o->json = optarg; break;
        case OPT_TMP: o->tmp = optarg; break;
        case OPT_EXEC: exec = optarg; break;
        case OPT_BUCKETS: o->buckets = optarg; break;
        case OPT_COMPACTION: cli_check_in(ert_compaction_parse(optarg, &o->compaction), "--compaction"); break;
        case OPT_THREADS: o->threads = cli_threads(optarg); break;
        case 'h': bench_usage(stdout); exit(0);
        default: bench_usage(stderr); exit(1);
        }
    }
    cli_no_extra_args(argc, argv, bench_usage);
    const int cpu = cli_is_cpu(o->device);
    cli_device_threads(o->device, o->threads); /* refused before any model is written */
    if (!exec) exec = cpu ? "eager" : "both";
    if (strcmp(exec, "eager") == 0) o->eager = 1;
    else if (strcmp(exec, "graph") == 0) o->graph = 1;
    else if (strcmp(exec, "both") == 0) o->eager = o->graph = 1;
    else cli_fail("--exec '%s': expected eager, graph or both", exec);
    if (!o->num_widths) {
        static const int gpu_w[] = {1024, 4096}, cpu_w[] = {256};
        o->num_widths = cpu ? 1 : 2;
        memcpy(o->widths, cpu ? cpu_w : gpu_w, sizeof(int) * (size_t)o->num_widths);
    }
    if (!o->num_batches) {
        static const int gpu_b[] = {64, 1024, 8192}, cpu_b[] = {64, 256};
        o->num_batches = cpu ? 2 : 3;
        memcpy(o->batches, cpu ? cpu_b : gpu_b, sizeof(int) * (size_t)o->num_batches);
    }
    if (!o->dtype_set) o->dtype = cpu ? ERT_DTYPE_F32 : ERT_DTYPE_BF16;
    const char *tmpdir = getenv("TMPDIR");
    if (!o->tmp) o->tmp = tmpdir && *tmpdir ? tmpdir : "/tmp";
}

/* ---------------------------------------------------------------- numbers */

/* Sessions run the variants before V_IDEAL; the ideals run on the compact sessions. */
enum {
    V_FULL = 0, V_MASKED, V_COMPACT, V_FULL_GRAPH, V_COMPACT_GRAPH, V_COMPACT_GRAPH_UNTIMED,
    V_IDEAL, V_IDEAL_GRAPH, V_COUNT
};
#define V_SESSIONS V_IDEAL
static const char *const variant_names[V_COUNT] = {"full",  "masked",      "compact", "full-graph", "compact-graph",
                                                   "compact-graph-untimed", "ideal", "ideal-graph"};
static int variant_graph(int v) {
    return v == V_FULL_GRAPH || v == V_COMPACT_GRAPH || v == V_COMPACT_GRAPH_UNTIMED || v == V_IDEAL_GRAPH;
}
static int variant_on(const bench_opts *o, int v) { return variant_graph(v) ? o->graph : o->eager; }

/* The figures of one variant over the timed runs. */
typedef struct vstats {
    double *fwd, *batch, *routing, *sync; /* per rep */
    double *stage;                        /* per rep x stage x {compute, decide, compact, sync} */
    double flops;                         /* of one run */
    double padding;                       /* padding_waste of the last run */
    int host_syncs;
    int rows[ERT_MAX_STAGES];
} vstats;

/* From stage 0's first event to the end of the last stage that ran. A forward graph
 * (graph set, rows from the device) runs every stage's nodes, empty stages too, so its
 * span ends at the last stage; the ideal's graph holds only the stages with rows. */
static double forward_ms(const ert_profile *p, int forward_graph) {
    int first = -1, last = -1;
    for (int k = 0; k < p->num_stages; ++k)
        if (p->stage[k].rows > 0 || (forward_graph && first >= 0)) {
            if (first < 0) first = k;
            last = k;
        }
    if (first < 0) return 0.0;
    const ert_stage_profile *l = &p->stage[last];
    return l->start_ms + l->compute_ms + l->decide_ms + l->compact_ms + l->sync_ms - p->stage[first].start_ms;
}

static void record(vstats *v, int rep, int S, const ert_profile *p, int forward_graph) {
    v->fwd[rep] = forward_ms(p, forward_graph);
    v->batch[rep] = p->batch_ms;
    v->routing[rep] = p->routing_ms;
    v->sync[rep] = p->sync_ms;
    double flops = 0.0;
    for (int k = 0; k < S; ++k) {
        const ert_stage_profile *s = &p->stage[k];
        double *d = &v->stage[((size_t)rep * (size_t)S + (size_t)k) * 4];
        d[0] = s->compute_ms;
        d[1] = s->decide_ms;
        d[2] = s->compact_ms;
        d[3] = s->sync_ms;
        flops += s->flops;
        v->rows[k] = s->rows;
    }
    v->flops = flops;
    v->padding = p->padding_waste;
    v->host_syncs = p->host_syncs;
}

static double median(const double *x, int n) { return ert_percentile(x, n, 50.0); }

/* The median over reps of field f of stage k. */
static double stage_median(const vstats *v, int reps, int S, int k, int f, double *tmp) {
    for (int r = 0; r < reps; ++r) tmp[r] = v->stage[((size_t)r * (size_t)S + (size_t)k) * 4 + (size_t)f];
    return median(tmp, reps);
}

/* Uniform in (0, 1]: seeded, never zero (zeros hide unwritten outputs and can run fast). */
static float input_value(uint64_t seed, uint64_t i) {
    uint64_t x = (seed ^ 0xD1B54A32D192ED03ull) + (i + 1) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return (float)((x >> 40) + 1) * (1.0f / 16777216.0f);
}

/* ---------------------------------------------------------------- one grid point */

typedef struct point {
    int width, batch;
    vstats v[V_COUNT];
    int exits_match;       /* masked, compact and compact-graph: the scheduled exit for every sample */
    double pred_agreement; /* share of samples with the same prediction in masked and compact */
    double graph_agreement; /* ... in compact and compact-graph (both run: must be 1) */
    double survivor_fraction, survivor_expected;
    ert_compaction compaction; /* the compact sessions' (auto resolved) */
} point;

static void vstats_alloc(vstats *v, int reps, int S) {
    memset(v, 0, sizeof *v);
    v->fwd = calloc((size_t)reps, sizeof(double));
    v->batch = calloc((size_t)reps, sizeof(double));
    v->routing = calloc((size_t)reps, sizeof(double));
    v->sync = calloc((size_t)reps, sizeof(double));
    v->stage = calloc((size_t)reps * (size_t)S * 4, sizeof(double));
    if (!v->fwd || !v->batch || !v->routing || !v->sync || !v->stage) cli_fail("out of memory");
}

static void vstats_free(vstats *v) {
    free(v->fwd);
    free(v->batch);
    free(v->routing);
    free(v->sync);
    free(v->stage);
}

static void run_point(const bench_opts *o, const ert_model *model, const ert_policy *policy, int B, point *pt,
                      char *device_name, size_t device_len) {
    const int D = ert_model_input_size(model), S = ert_model_num_stages(model), E = ert_model_num_exits(model);
    char where[96];
    snprintf(where, sizeof where, "D=%d B=%d", D, B);
    pt->width = D;
    pt->batch = B;
    for (int v = 0; v < V_COUNT; ++v) vstats_alloc(&pt->v[v], o->reps, S);

    ert_session *sess[V_SESSIONS] = {NULL};
    const ert_mode modes[V_SESSIONS] = {ERT_MODE_FULL, ERT_MODE_MASKED, ERT_MODE_COMPACT,
                                        ERT_MODE_FULL, ERT_MODE_COMPACT, ERT_MODE_COMPACT};
    for (int v = 0; v < V_SESSIONS; ++v) {
        if (!variant_on(o, v)) continue;
        ert_session_options so = ert_session_options_default();
        so.device = o->device;
        so.max_batch = B;
        so.mode = modes[v];
        so.dtype = o->dtype;
        if (variant_graph(v)) {
            so.exec = ERT_EXEC_GRAPH;
            so.buckets = o->buckets;
        }
        so.stage_events = v != V_COMPACT_GRAPH_UNTIMED;
        so.compaction = o->compaction;
        so.threads = o->threads;
        cli_check_in(ert_session_new(model, &so, &sess[v]), where);
        cli_note_exec(sess[v]);
        if (modes[v] == ERT_MODE_COMPACT) pt->compaction = ert_session_get_options(sess[v]).compaction;
        snprintf(device_name, device_len, "%s", ert_session_device(sess[v]));
    }

    float *x = malloc(sizeof(float) * (size_t)B * (size_t)D);
    int32_t *pred = calloc((size_t)V_SESSIONS * (size_t)B, sizeof(int32_t));
    int32_t *ex = calloc((size_t)V_SESSIONS * (size_t)B, sizeof(int32_t));
    float *conf = malloc(sizeof(float) * V_SESSIONS * (size_t)B);
    if (!x || !pred || !ex || !conf) cli_fail("%s: out of memory", where);
    for (size_t i = 0; i < (size_t)B * (size_t)D; ++i) x[i] = input_value((uint64_t)o->seed, i);
    const ert_batch batch = {.input = x, .n = B, .first_index = 0};

    int rows[ERT_MAX_STAGES] = {0};
    ert_profile prof;
    for (int it = 0; it < o->warmup + o->reps; ++it) {
        const int rep = it - o->warmup;
        for (int v = 0; v < V_SESSIONS; ++v) {
            if (!sess[v]) continue;
            ert_outputs out = {.pred = pred + (size_t)v * B, .exit_index = ex + (size_t)v * B,
                               .confidence = conf + (size_t)v * B};
            cli_check_in(ert_session_run(sess[v], policy, &batch, &out), where);
            cli_check_in(ert_session_profile(sess[v], &prof), where);
            if (rep >= 0) record(&pt->v[v], rep, S, &prof, variant_graph(v));
            if (v != V_COMPACT && v != V_COMPACT_GRAPH) continue;
            /* The ideal right after the compact run: its stage 0 re-reads the input that run
             * uploaded, so it computes on the same data. */
            for (int k = 0; k < S; ++k) rows[k] = prof.stage[k].rows;
            const int iv = v == V_COMPACT ? V_IDEAL : V_IDEAL_GRAPH;
            cli_check_in(ert_session_run_rows(sess[v], rows), where);
            cli_check_in(ert_session_profile(sess[v], &prof), where);
            if (rep >= 0) record(&pt->v[iv], rep, S, &prof, 0);
        }
    }

    /* Every adaptive variant must have done the same thing: the scheduled exit for every
     * sample, and predictions equal up to rounding between GEMM shapes (masked vs
     * compact; identical on the CPU). Graph and eager compact run the same GEMMs on the
     * same rows (padding rows are never read back): identical predictions. */
    int agree = 0, gagree = 0;
    pt->exits_match = 1;
    for (int i = 0; i < B; ++i) {
        const int32_t want = ert_policy_scheduled_exit(policy, i, E);
        for (int v = V_MASKED; v <= V_COMPACT_GRAPH_UNTIMED; ++v)
            if (sess[v] && v != V_FULL_GRAPH) pt->exits_match &= ex[(size_t)v * B + i] == want;
        agree += pred[(size_t)V_MASKED * B + i] == pred[(size_t)V_COMPACT * B + i];
        gagree += pred[(size_t)V_COMPACT * B + i] == pred[(size_t)V_COMPACT_GRAPH * B + i];
    }
    pt->pred_agreement = (double)agree / B;
    pt->graph_agreement = o->eager && o->graph ? (double)gagree / B : 1.0;
    double work = 0.0;
    const int cv = o->eager ? V_COMPACT : V_COMPACT_GRAPH;
    for (int k = 0; k < S; ++k) work += pt->v[cv].rows[k];
    pt->survivor_fraction = work / ((double)S * B);
    /* Each block k runs for a sample with probability (1-H)^k. */
    double expect = 0.0;
    for (int k = 0; k < S; ++k) expect += pow(1.0 - o->hazard, k);
    pt->survivor_expected = expect / S;

    free(x);
    free(pred);
    free(ex);
    free(conf);
    for (int v = 0; v < V_SESSIONS; ++v) ert_session_free(sess[v]);
}

/* ---------------------------------------------------------------- output */

static double tflops(const vstats *v, double ms) { return ms > 0 ? v->flops / (ms * 1e-3) / 1e12 : 0.0; }

static void print_header(const bench_opts *o, const char *device, const char *policy, ert_compaction compaction) {
    printf("exitrt bench | %s | %s | %d blocks, exit after each, %d classes | %s | %s compaction | median of %d "
           "runs after %d warm-up\n",
           device, ert_dtype_name(o->dtype), o->depth, o->classes, policy, ert_compaction_name(compaction), o->reps,
           o->warmup);
    printf("%6s %6s %5s %9s %9s %9s %9s %8s %8s %8s %8s %7s %5s %9s %9s %6s %6s %7s\n", "D", "B", "exec", "full ms",
           "masked", "compact", "ideal", "speedup", "of_ideal", "ideal_x", "routing", "sync", "syncs", "TF/s full",
           "TF/s cmp", "surv", "pad", "ev_us");
    fflush(stdout);
}

/* The timing's own cost in graph mode: batch time with stage events minus without. */
static double event_overhead_ms(const point *p, int reps) {
    return median(p->v[V_COMPACT_GRAPH].batch, reps) - median(p->v[V_COMPACT_GRAPH_UNTIMED].batch, reps);
}

static void print_exec_row(const point *p, int reps, int graph) {
    const vstats *F = &p->v[graph ? V_FULL_GRAPH : V_FULL], *C = &p->v[graph ? V_COMPACT_GRAPH : V_COMPACT];
    const vstats *I = &p->v[graph ? V_IDEAL_GRAPH : V_IDEAL];
    const double f = median(F->fwd, reps), c = median(C->fwd, reps), i = median(I->fwd, reps);
    const double r = median(C->routing, reps), s = median(C->sync, reps);
    char masked[16] = "-", pad[16] = "-", ev[16] = "-";
    if (!graph) snprintf(masked, sizeof masked, "%.4f", median(p->v[V_MASKED].fwd, reps));
    if (graph) snprintf(pad, sizeof pad, "%.1f%%", 100.0 * C->padding);
    if (graph) snprintf(ev, sizeof ev, "%.1f", 1e3 * event_overhead_ms(p, reps));
    printf("%6d %6d %5s %9.4f %9s %9.4f %9.4f %7.2fx %8.2f %7.2fx %7.1f%% %6.1f%% %5d %9.4g %9.4g %6.3f %6s %7s%s\n",
           p->width, p->batch, graph ? "graph" : "eager", f, masked, c, i, f / c, i / c, f / i, 100.0 * r / c,
           100.0 * s / c, C->host_syncs, tflops(F, f), tflops(C, c), p->survivor_fraction, pad, ev,
           !p->exits_match ? "  EXITS DIFFER" : (graph && p->graph_agreement < 1.0 ? "  GRAPH != EAGER" : ""));
}

static void print_row(const bench_opts *o, const point *p) {
    if (o->eager) print_exec_row(p, o->reps, 0);
    if (o->graph) print_exec_row(p, o->reps, 1);
    fflush(stdout);
}

static void print_footer(void) {
    printf("\nms: forward span on the device timeline (stage 0's first kernel to the last stage's end;\n"
           "input upload and result download excluded). speedup = full/compact; of_ideal = ideal/compact;\n"
           "ideal_x = full/ideal; routing = (decide + compaction kernels)/compact; sync = device idle\n"
           "waiting for host round trips/compact; syncs = host synchronisations inside a compact forward;\n"
           "TF/s = useful FLOPs (survivors' rows; padding rows not counted)/time; surv = rows entering\n"
           "blocks / (blocks x B), the block work left; graph rows: full, compact and ideal each one\n"
           "graph launch; pad = FLOPs on rows past the survivors (row buckets); ev_us = stage events'\n"
           "own cost (median batch time with - without them; within noise it may read below 0).\n");
    fflush(stdout);
}

/* Issue 4's targets for graph mode, each beside the value measured in this run. */
static int print_targets(const bench_opts *o, const char *device, const point *pts, int n) {
    int missed = 0;
    printf("\ngraph-mode targets (issue 4, set for the H200; this run: %s):\n", device);
    for (int i = 0; i < n; ++i) {
        const point *p = &pts[i];
        const double f = median(p->v[V_FULL_GRAPH].fwd, o->reps), c = median(p->v[V_COMPACT_GRAPH].fwd, o->reps);
        const double id = median(p->v[V_IDEAL_GRAPH].fwd, o->reps);
        const double route = median(p->v[V_COMPACT_GRAPH].routing, o->reps) / c;
        const int syncs = p->v[V_COMPACT_GRAPH].host_syncs;
        char at[32];
        snprintf(at, sizeof at, "D=%d B=%d", p->width, p->batch);
#define TARGET(ok, ...)                                                                                                \
    do {                                                                                                               \
        printf("  %-14s %-4s ", at, (ok) ? "met" : "MISS");                                                            \
        printf(__VA_ARGS__);                                                                                           \
        printf("\n");                                                                                                  \
        missed += !(ok);                                                                                               \
    } while (0)
        if (p->batch >= 1024) {
            TARGET(id / c >= 0.9, "ideal/compact-graph %.3f (target >= 0.9)", id / c);
            TARGET(c < f, "compact-graph %.4f ms vs full-graph %.4f ms (target: faster)", c, f);
            TARGET(route < 0.05, "routing share %.1f%% (target < 5%%)", 100.0 * route);
        } else if (p->batch <= 64) {
            TARGET(c / f <= 1.15, "compact-graph/full-graph %.3f (target <= 1.15)", c / f);
        }
        TARGET(syncs == 0, "host syncs per forward %d (target 0)", syncs);
#undef TARGET
    }
    return missed;
}

static cJSON *vstats_json(const vstats *v, int reps, int S, int with_stages) {
    cJSON *j = cJSON_CreateObject();
    const double ms = median(v->fwd, reps);
    cJSON_AddNumberToObject(j, "median_ms", ms);
    cJSON_AddNumberToObject(j, "p99_ms", ert_percentile(v->fwd, reps, 99.0));
    cJSON_AddNumberToObject(j, "min_ms", ert_percentile(v->fwd, reps, 0.0));
    cJSON_AddNumberToObject(j, "batch_median_ms", median(v->batch, reps));
    cJSON_AddNumberToObject(j, "batch_p99_ms", ert_percentile(v->batch, reps, 99.0));
    cJSON_AddNumberToObject(j, "routing_median_ms", median(v->routing, reps));
    cJSON_AddNumberToObject(j, "sync_median_ms", median(v->sync, reps));
    cJSON_AddNumberToObject(j, "host_syncs", v->host_syncs);
    cJSON_AddNumberToObject(j, "flops", v->flops);
    cJSON_AddNumberToObject(j, "tflops", tflops(v, ms));
    cJSON *rows = cJSON_AddArrayToObject(j, "rows");
    for (int k = 0; k < S; ++k) cJSON_AddItemToArray(rows, cJSON_CreateNumber(v->rows[k]));
    if (with_stages) {
        double *tmp = malloc(sizeof(double) * (size_t)reps);
        if (!tmp) cli_fail("out of memory");
        cJSON *st = cJSON_AddArrayToObject(j, "stages");
        static const char *const fields[4] = {"compute_ms", "decide_ms", "compact_ms", "sync_ms"};
        for (int k = 0; k < S && v->rows[k] > 0; ++k) {
            cJSON *s = cJSON_CreateObject();
            cJSON_AddNumberToObject(s, "rows", v->rows[k]);
            for (int f = 0; f < 4; ++f) cJSON_AddNumberToObject(s, fields[f], stage_median(v, reps, S, k, f, tmp));
            cJSON_AddItemToArray(st, s);
        }
        free(tmp);
    }
    return j;
}

static cJSON *point_json(const bench_opts *o, const point *p, int S) {
    const int reps = o->reps;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "width", p->width);
    cJSON_AddNumberToObject(j, "batch", p->batch);
    for (int v = 0; v < V_COUNT; ++v)
        if (variant_on(o, v))
            cJSON_AddItemToObject(j, variant_names[v], vstats_json(&p->v[v], reps, S, v != V_FULL));
    if (o->graph) {
        const double fg = median(p->v[V_FULL_GRAPH].fwd, reps), cg = median(p->v[V_COMPACT_GRAPH].fwd, reps);
        cJSON *g = cJSON_AddObjectToObject(j, "graph");
        cJSON_AddNumberToObject(g, "speedup", fg / cg);
        cJSON_AddNumberToObject(g, "of_ideal", median(p->v[V_IDEAL_GRAPH].fwd, reps) / cg);
        cJSON_AddNumberToObject(g, "routing_share", median(p->v[V_COMPACT_GRAPH].routing, reps) / cg);
        cJSON_AddNumberToObject(g, "host_syncs", p->v[V_COMPACT_GRAPH].host_syncs);
        cJSON_AddNumberToObject(g, "padding_waste", p->v[V_COMPACT_GRAPH].padding);
        cJSON_AddNumberToObject(g, "stage_event_overhead_ms", event_overhead_ms(p, reps));
        cJSON_AddNumberToObject(g, "pred_agreement_with_eager", p->graph_agreement);
    }
    if (!o->eager) return j;
    const double f = median(p->v[V_FULL].fwd, reps), c = median(p->v[V_COMPACT].fwd, reps);
    const double i = median(p->v[V_IDEAL].fwd, reps);
    cJSON_AddNumberToObject(j, "speedup", f / c);
    cJSON_AddNumberToObject(j, "of_ideal", i / c);
    cJSON_AddNumberToObject(j, "ideal_speedup", f / i);
    cJSON_AddNumberToObject(j, "routing_share", median(p->v[V_COMPACT].routing, reps) / c);
    cJSON_AddNumberToObject(j, "sync_share", median(p->v[V_COMPACT].sync, reps) / c);
    cJSON_AddNumberToObject(j, "host_syncs", p->v[V_COMPACT].host_syncs);
    cJSON_AddNumberToObject(j, "survivor_fraction", p->survivor_fraction);
    cJSON_AddNumberToObject(j, "survivor_fraction_expected", p->survivor_expected);
    cJSON_AddBoolToObject(j, "exits_match", p->exits_match);
    cJSON_AddNumberToObject(j, "pred_agreement", p->pred_agreement);
    return j;
}

/* Writes FILE.tmp.PID, then renames it over FILE: a reader never sees half a file. Done
 * after every point, so a run that dies later keeps what it measured. */
static void write_json(const char *path, const cJSON *root) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    char *text = cJSON_Print(root);
    if (!text) cli_fail("--json '%s': out of memory", path);
    FILE *f = fopen(tmp, "w");
    if (!f) cli_fail("--json '%s': cannot write", path);
    const int ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    cJSON_free(text);
    if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
        remove(tmp);
        cli_fail("--json '%s': write failed", path);
    }
}

/* ---------------------------------------------------------------- the model */

/* Synthesises and loads the model of width D; its temporary directory is gone on return. */
static ert_model *load_synth(const bench_opts *o, int D) {
    char dir[4096], cfg[4200], wts[4200];
    if (snprintf(dir, sizeof dir, "%s/exitrt-bench-XXXXXX", o->tmp) >= (int)sizeof dir)
        cli_fail("--tmp '%s': path too long", o->tmp);
    if (!mkdtemp(dir)) cli_fail("--tmp '%s': cannot create a directory there: %s", o->tmp, strerror(errno));
    const ert_synth_options so = {.width = D,
                                  .depth = o->depth,
                                  .classes = o->classes,
                                  .dtype = o->dtype == ERT_DTYPE_BF16  ? ERT_DTYPE_BF16
                                           : o->dtype == ERT_DTYPE_F16 ? ERT_DTYPE_F16
                                                                       : ERT_DTYPE_F32,
                                  .seed = (uint64_t)o->seed};
    ert_model *model = NULL;
    ert_status st = ert_synth_write(&so, dir);
    if (st == ERT_OK) st = ert_model_load(dir, &model);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    snprintf(wts, sizeof wts, "%s/model.safetensors", dir);
    remove(cfg);
    remove(wts);
    rmdir(dir);
    char what[64];
    snprintf(what, sizeof what, "model D=%d", D);
    cli_check_in(st, what);
    return model;
}

/* ---------------------------------------------------------------- main */

int cmd_bench(int argc, char **argv) {
    bench_opts o;
    parse_opts(argc, argv, &o);

    char spec[128], device[320] = "";
    snprintf(spec, sizeof spec, "scheduled:hazard=%.9g,seed=%lld", o.hazard, o.seed);
    ert_policy *policy = NULL;
    cli_check_in(ert_policy_parse(spec, &policy), "policy");

    char date[64];
    const time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    char command[4096] = "exitrt";
    for (int i = 0; i < argc; ++i) {
        const size_t len = strlen(command);
        snprintf(command + len, sizeof command - len, " %s", argv[i]);
    }

    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "meta");
    cJSON *points = cJSON_AddArrayToObject(root, "points");
    cJSON_AddStringToObject(meta, "tool", "exitrt bench");
    cJSON_AddStringToObject(meta, "date", date);
    cJSON_AddStringToObject(meta, "command", command);
    cJSON_AddStringToObject(meta, "dtype", ert_dtype_name(o.dtype));
    cJSON_AddStringToObject(meta, "policy", spec);
    cJSON_AddNumberToObject(meta, "hazard", o.hazard);
    cJSON_AddNumberToObject(meta, "seed", (double)o.seed);
    cJSON_AddNumberToObject(meta, "depth", o.depth);
    cJSON_AddNumberToObject(meta, "classes", o.classes);
    cJSON_AddNumberToObject(meta, "reps", o.reps);
    cJSON_AddNumberToObject(meta, "warmup", o.warmup);
    cJSON_AddStringToObject(meta, "timing",
                            "median_ms/p99_ms: forward span on the device timeline (stage 0's first kernel to the end "
                            "of the last stage that ran; upload and download excluded); batch_*: the whole run, "
                            "transfers included");
    cJSON *dev = cJSON_AddStringToObject(meta, "device", o.device);

    cJSON_AddStringToObject(meta, "exec", o.eager && o.graph ? "both" : o.graph ? "graph" : "eager");
    int failed = 0, header = 0, n = 0;
    point *pts = calloc((size_t)(o.num_widths * o.num_batches), sizeof *pts);
    if (!pts) cli_fail("out of memory");
    for (int wi = 0; wi < o.num_widths; ++wi) {
        ert_model *model = load_synth(&o, o.widths[wi]);
        for (int bi = 0; bi < o.num_batches; ++bi) {
            point *p = &pts[n++];
            point pt;
            memset(&pt, 0, sizeof pt);
            run_point(&o, model, policy, o.batches[bi], &pt, device, sizeof device);
            if (!header) {
                cJSON_SetValuestring(dev, device);
                cJSON_AddStringToObject(meta, "compaction", ert_compaction_name(pt.compaction));
                print_header(&o, device, spec, pt.compaction);
                header = 1;
            }
            print_row(&o, &pt);
            if (!pt.exits_match) {
                fprintf(stderr, "exitrt bench: D=%d B=%d: a run left at other exits than scheduled (a runtime bug)\n",
                        pt.width, pt.batch);
                failed = 1;
            }
            if (pt.graph_agreement < 1.0) {
                /* With the default buckets (every power of two among them) a graph GEMM runs
                 * the eager GEMM's algorithm, so any difference is a bug; other buckets may
                 * pick another algorithm for a bucket than for the count it holds. */
                const int same_algorithms = !o.buckets || strcmp(o.buckets, "default") == 0;
                fprintf(stderr, "exitrt bench: D=%d B=%d: graph and eager compact predict differently for %.2f%% of "
                                "the samples (%s)\n",
                        pt.width, pt.batch, 100.0 * (1.0 - pt.graph_agreement),
                        same_algorithms ? "a runtime bug" : "--buckets without every power of two may run other "
                                                            "GEMM algorithms in a graph");
                failed |= same_algorithms;
            }
            cJSON_AddItemToArray(points, point_json(&o, &pt, o.depth));
            if (o.json) write_json(o.json, root);
            *p = pt; /* keeps the medians' inputs for the targets */
        }
        ert_model_free(model);
    }
    print_footer();
    if (o.graph) print_targets(&o, device, pts, n);
    for (int i = 0; i < n; ++i)
        for (int v = 0; v < V_COUNT; ++v) vstats_free(&pts[i].v[v]);
    free(pts);
    cJSON_Delete(root);
    ert_policy_free(policy);
    return failed;
}
