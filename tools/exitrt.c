/* exitrt — the command-line program. It uses the public API only; it is the one place
 * that prints and exits. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "exitrt/evaluate.h"
#include "exitrt/exitrt.h"

#define MAX_POLICIES 64

/* Options shared by the subcommands that run a model. */
typedef struct run_opts {
    const char *model, *data, *output;
    cli_session_flags session; /* --device, --dtype, --exec, --buckets, --compaction, --threads */
    const char *policies[MAX_POLICIES];
    int num_policies;
    ert_mode mode;
    const char *trace;
    int batch, warmup, limit, json, profile, no_calibration;
    ert_shift_kind shift; /* ERT_SHIFT_NONE: the data as it is */
    int severity;
    long long seed;
} run_opts;

enum {
    OPT_WARMUP = 1000, OPT_LIMIT, OPT_PROFILE, OPT_TRACE, OPT_NO_CALIBRATION, OPT_SHIFT, OPT_SEVERITY, OPT_SEED
};

static const struct option run_long[] = {
    {"model", required_argument, 0, 'm'},   {"data", required_argument, 0, 'd'},
    {"policy", required_argument, 0, 'p'},  {"mode", required_argument, 0, 'M'},
    {"batch", required_argument, 0, 'b'},   CLI_SESSION_LONG_OPTIONS,
    {"json", no_argument, 0, 'j'},          {"output", required_argument, 0, 'o'},
    {"warmup", required_argument, 0, OPT_WARMUP}, {"limit", required_argument, 0, OPT_LIMIT},
    {"help", no_argument, 0, 'h'},
    {"profile", no_argument, 0, OPT_PROFILE}, {"trace", required_argument, 0, OPT_TRACE},
    {"no-calibration", no_argument, 0, OPT_NO_CALIBRATION},
    {"shift", required_argument, 0, OPT_SHIFT}, {"severity", required_argument, 0, OPT_SEVERITY},
    {"seed", required_argument, 0, OPT_SEED},
    {0, 0, 0, 0}};

static void parse_run_opts(int argc, char **argv, run_opts *o, void (*usage)(FILE *)) {
    o->warmup = 1;
    o->severity = 3;
    o->seed = 1;
    const char *shift_opts = NULL; /* --severity or --seed, which mean nothing without --shift */
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "m:d:p:M:b:D:jo:h", run_long, NULL)) != -1) {
        if (cli_session_flag(&o->session, c, optarg)) continue;
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'd': o->data = optarg; break;
        case 'p':
            if (o->num_policies == MAX_POLICIES) cli_fail("too many --policy options");
            o->policies[o->num_policies++] = optarg;
            break;
        case 'M': o->mode = cli_mode(optarg); break;
        case 'b': o->batch = (int)cli_int("--batch", optarg, 1, 1 << 20); break;
        case 'j': o->json = 1; break;
        case 'o': o->output = optarg; break;
        case OPT_WARMUP: o->warmup = (int)cli_int("--warmup", optarg, 0, 1000); break;
        case OPT_LIMIT: o->limit = (int)cli_int("--limit", optarg, 1, 1 << 30); break;
        case OPT_PROFILE: o->profile = 1; break;
        case OPT_TRACE: o->trace = optarg; break;
        case OPT_NO_CALIBRATION: o->no_calibration = 1; break;
        case OPT_SHIFT: cli_shift(optarg, &o->shift, &o->severity); break;
        case OPT_SEVERITY:
            o->severity = (int)cli_int("--severity", optarg, 1, ERT_SHIFT_MAX_SEVERITY);
            shift_opts = "--severity";
            break;
        case OPT_SEED:
            o->seed = cli_int("--seed", optarg, 0, CLI_MAX_SEED);
            shift_opts = "--seed";
            break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(1);
        }
    }
    cli_no_extra_args(argc, argv, usage);
    if (shift_opts && o->shift == ERT_SHIFT_NONE) cli_fail("%s describes a corruption: give --shift KIND too", shift_opts);
}

/* The loaded pieces every run needs. */
typedef struct setup {
    ert_model *model;
    ert_dataset *data;
    ert_session *session;
    int batch; /* --batch (default 256), at most the data's size */
} setup;

static void setup_open(const run_opts *o, setup *su) {
    cli_load(o->model, o->data, o->no_calibration, o->limit, &su->model, &su->data);
    cli_shift_data(su->data, o->shift, o->severity, (uint64_t)o->seed);
    ert_session_options so = ert_session_options_default();
    so.mode = o->mode;
    /* no batch is larger than the data: a session sized for more would hold memory unused
     * (kept when --buckets are given: they are checked against the batch asked for) */
    su->batch = o->batch ? o->batch : 256;
    if (!o->session.buckets && su->data->n > 0 && su->data->n < su->batch) su->batch = (int)su->data->n;
    so.max_batch = su->batch;
    cli_session_apply(&o->session, &so);
    cli_check(ert_session_new(su->model, &so, &su->session));
    cli_note_exec(su->session);
}

static void setup_close(setup *su) {
    ert_session_free(su->session);
    ert_dataset_free(su->data);
    ert_model_free(su->model);
}

/* Writes index,label,pred,exit,confidence to a temporary file, then renames it over
 * FILE, so a failure never leaves a half-written file. */
static void write_csv(const char *path, const ert_dataset *data, const ert_eval_result *r) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) cli_fail("--output '%s': cannot write", path);
    int ok = fprintf(f, "index,label,pred,exit,confidence\n") > 0;
    for (int64_t i = 0; ok && i < r->samples; ++i)
        ok = fprintf(f, "%lld,%d,%d,%d,%.6f\n", (long long)i, data->labels ? data->labels[i] : -1, r->pred[i],
                     r->exit_index[i], r->confidence[i]) > 0;
    if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
        remove(tmp);
        cli_fail("--output '%s': write failed", path);
    }
}

/* ---------------------------------------------------------------- eval */

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: exitrt eval --model DIR --data SPLIT --policy SPEC [options]\n"
            "\n"
            "Runs a dataset through the model with an exit policy and reports accuracy, exits,\n"
            "the share of the full model's FLOPs executed, throughput and batch latency.\n"
            "\n"
            "  -m, --model DIR      model directory (config.json + model.safetensors)\n"
            "  -d, --data SPLIT     fashion-mnist:test | fashion-mnist:val | fashion-mnist:train |\n"
            "                       FILE.npy[:LABELS.npy]\n"
            "  -p, --policy SPEC    none | confidence:T[,T..] | entropy:T[,T..] | margin:T[,T..] |\n"
            "                       patience:N | fixed:K | oracle | scheduled:hazard=H[,seed=S]\n"
            "                       [;temp=T[,T..]] | FILE.json   (default: none)\n"
            "  -M, --mode MODE      compact (default) | masked | full\n"
            "  -b, --batch N        samples per batch (default 256)\n"
            "  -D, --device DEV     cpu (default) | cuda:N\n"
            "      --dtype T        f32 (default) | tf32 | bf16 | f16 (CUDA only)\n"
            CLI_EXEC_HELP("")
            CLI_THREADS_HELP("")
            "  -j, --json           print one JSON object instead of the table\n"
            "  -o, --output FILE    write one CSV row per sample: index,label,pred,exit,confidence\n"
            "      --warmup N       untimed batches before measuring (default 1)\n"
            "      --limit N        only the first N samples\n"
            "      --shift KIND[:S] corrupt the data first (exitrt shift-report --help):\n"
            "                       gaussian-noise | blur | contrast | translate | rotate;\n"
            "                       the data is then named 'SPLIT, KIND S'\n"
            "      --severity S     1..5 (default 3; KIND:S sets it too)\n"
            "      --seed S         seed of the corruption (default 1)\n"
            "      --no-calibration ignore the model's calibration.json (temperatures 1)\n"
            "      --profile        per stage: rows entering, compute / decide / compaction /\n"
            "                       host-sync time, FLOPs, bytes, achieved TFLOP/s and GB/s,\n"
            "                       routing share and host synchronisations per forward\n"
            "      --trace FILE     write a Chrome/Perfetto trace (JSON) of every timed batch\n"
            "  -h, --help           this text\n");
}

/* Per-stage measurement summed over the timed batches. Times come from the backend's
 * timeline (CUDA events on a GPU); bytes and FLOPs are what each stage must move and
 * compute for the rows it ran, so GB/s and TFLOP/s are achieved rates. */
static void print_profile(const ert_eval_result *r) {
    const ert_profile *p = &r->profile_sum;
    printf("\nprofile (summed over %d batches)\n", r->num_batches);
    printf("%5s %10s %10s %11s %10s %11s %10s %12s %10s %9s %8s\n", "stage", "rows", "padded", "compute ms",
           "decide ms", "compact ms", "sync ms", "GFLOP", "MB", "TFLOP/s", "GB/s");
    for (int k = 0; k < p->num_stages; ++k) {
        const ert_stage_profile *s = &p->stage[k];
        const double sec = s->compute_ms * 1e-3;
        printf("%5d %10d %10d %11.3f %10.3f %11.3f %10.3f %12.4f %10.2f %9.3f %8.1f\n", k, s->rows, s->padded_rows,
               s->compute_ms,
               s->decide_ms, s->compact_ms, s->sync_ms, s->flops * 1e-9, s->bytes * 1e-6,
               sec > 0 ? s->flops / sec * 1e-12 : 0.0, sec > 0 ? s->bytes / sec * 1e-9 : 0.0);
    }
    printf("batch time %.3f ms; routing (decide + compaction) %.1f%%; device idle on host round trips %.1f%%; "
           "host syncs per forward %.1f; %s",
           p->batch_ms, p->batch_ms > 0 ? 100.0 * p->routing_ms / p->batch_ms : 0.0,
           p->batch_ms > 0 ? 100.0 * p->sync_ms / p->batch_ms : 0.0, (double)p->host_syncs / r->num_batches,
           p->graph ? "one graph launch per batch" : "eager launches");
    if (p->graph) printf("; padding (FLOPs on rows past the survivors) %.1f%%", 100.0 * p->padding_waste);
    printf("\n");
}

static cJSON *result_json(const run_opts *o, const setup *su, const char *policy, const ert_eval_result *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model", ert_model_name(su->model));
    cJSON_AddStringToObject(j, "data", su->data->name);
    if (o->shift != ERT_SHIFT_NONE) {
        cJSON_AddStringToObject(j, "shift", ert_shift_name(o->shift));
        cJSON_AddNumberToObject(j, "severity", o->severity);
        cJSON_AddNumberToObject(j, "seed", (double)o->seed);
    }
    cJSON_AddStringToObject(j, "device", ert_session_device(su->session));
    cJSON_AddStringToObject(j, "mode", ert_mode_name(o->mode));
    cJSON_AddStringToObject(j, "exec", ert_exec_name(ert_session_get_options(su->session).exec));
    cJSON_AddStringToObject(j, "compaction", ert_compaction_name(ert_session_get_options(su->session).compaction));
    cJSON_AddStringToObject(j, "policy", policy);
    cJSON_AddNumberToObject(j, "batch", su->batch);
    cJSON_AddNumberToObject(j, "samples", (double)r->samples);
    if (r->accuracy >= 0) cJSON_AddNumberToObject(j, "accuracy", r->accuracy);
    else cJSON_AddNullToObject(j, "accuracy");
    cJSON_AddNumberToObject(j, "mean_exit", r->mean_exit);
    cJSON *h = cJSON_AddArrayToObject(j, "exit_histogram");
    cJSON *ea = cJSON_AddArrayToObject(j, "exit_accuracy");
    for (int e = 0; e < r->num_exits; ++e) {
        cJSON_AddItemToArray(h, cJSON_CreateNumber((double)r->exit_histogram[e]));
        cJSON_AddItemToArray(ea, r->exit_histogram[e] && r->accuracy >= 0
                                     ? cJSON_CreateNumber((double)r->exit_correct[e] / (double)r->exit_histogram[e])
                                     : cJSON_CreateNull());
    }
    cJSON_AddNumberToObject(j, "flops_fraction", r->flops_fraction);
    cJSON_AddNumberToObject(j, "throughput", r->throughput);
    cJSON *l = cJSON_AddObjectToObject(j, "latency_ms");
    cJSON_AddNumberToObject(l, "mean", r->latency.mean);
    cJSON_AddNumberToObject(l, "p50", r->latency.p50);
    cJSON_AddNumberToObject(l, "p95", r->latency.p95);
    cJSON_AddNumberToObject(l, "p99", r->latency.p99);
    cJSON_AddNumberToObject(l, "max", r->latency.max);
    return j;
}

static int cmd_eval(int argc, char **argv) {
    run_opts o = {0};
    parse_run_opts(argc, argv, &o, eval_usage);
    if (o.num_policies > 1) cli_fail("eval takes one --policy (compare takes several)");
    const char *spec = o.num_policies ? o.policies[0] : "none";
    ert_policy *policy = NULL;
    cli_check(ert_policy_parse(spec, &policy));
    setup su = {0};
    setup_open(&o, &su);
    ert_eval_result *r = NULL;
    ert_eval_options eo = {.batch = su.batch, .warmup = o.warmup};
    if (o.trace) cli_check(ert_trace_open(o.trace, &eo.trace));
    ert_status es = ert_evaluate(su.session, policy, su.data, &eo, &r);
    if (es != ERT_OK) {
        ert_trace_discard(eo.trace); /* the old trace file, if any, stays as it was */
        cli_check(es);
    }
    if (eo.trace) cli_check(ert_trace_close(eo.trace));
    char pbuf[512];
    ert_policy_to_string(policy, pbuf, sizeof pbuf);
    if (o.output) write_csv(o.output, su.data, r);
    if (o.json) {
        cJSON *j = result_json(&o, &su, pbuf, r);
        char *text = cJSON_PrintUnformatted(j);
        printf("%s\n", text);
        free(text);
        cJSON_Delete(j);
    } else {
        printf("model %s | data %s (%lld samples) | device %s | mode %s | exec %s | policy %s | batch %d\n",
               ert_model_name(su.model), su.data->name, (long long)r->samples, ert_session_device(su.session),
               ert_mode_name(o.mode), ert_exec_name(ert_session_get_options(su.session).exec), pbuf, eo.batch);
        if (r->accuracy >= 0) printf("accuracy         %.2f%%\n", 100.0 * r->accuracy);
        printf("mean exit        %.3f (of exits 0..%d)\n", r->mean_exit, r->num_exits - 1);
        printf("FLOPs fraction   %.3f of the full model\n", r->flops_fraction);
        printf("throughput       %.0f samples/s\n", r->throughput);
        printf("batch latency    mean %.3f  p50 %.3f  p95 %.3f  p99 %.3f  max %.3f ms (%d batches)\n",
               r->latency.mean, r->latency.p50, r->latency.p95, r->latency.p99, r->latency.max, r->num_batches);
        printf("exit  samples   share   accuracy\n");
        for (int e = 0; e < r->num_exits; ++e) {
            printf("%4d  %7lld  %5.1f%%", e, (long long)r->exit_histogram[e],
                   100.0 * (double)r->exit_histogram[e] / (double)r->samples);
            if (r->accuracy >= 0 && r->exit_histogram[e])
                printf("   %6.2f%%", 100.0 * (double)r->exit_correct[e] / (double)r->exit_histogram[e]);
            printf("\n");
        }
        if (o.profile) print_profile(r);
    }
    ert_eval_result_free(r);
    ert_policy_free(policy);
    setup_close(&su);
    return 0;
}

/* ---------------------------------------------------------------- compare */

static void compare_usage(FILE *f) {
    fprintf(f,
            "usage: exitrt compare --model DIR --data SPLIT [--policy SPEC]... [options]\n"
            "\n"
            "Evaluates several exit policies on one session and prints one row each:\n"
            "accuracy, mean exit, FLOPs fraction, throughput and batch latency. The policies\n"
            "run interleaved, batch by batch, so that a drift of the machine touches them alike.\n"
            "Without --policy: none, confidence, entropy, margin, patience, fixed:K for every\n"
            "exit, and oracle (the upper bound).\n"
            "\n"
            "Options as for `exitrt eval` (--model, --data, --mode, --batch, --device, --dtype,\n"
            "--exec, --buckets, --compaction, --threads, --warmup, --limit, --shift, --severity,\n"
            "--seed, --no-calibration); --json prints a JSON array of the rows.\n");
}

static int cmd_compare(int argc, char **argv) {
    run_opts o = {0};
    parse_run_opts(argc, argv, &o, compare_usage);
    if (o.output) cli_fail("compare does not take --output (use eval for per-sample rows)");
    setup su = {0};
    setup_open(&o, &su);
    static char fixed[ERT_MAX_EXITS][32];
    if (o.num_policies == 0) {
        static const char *defaults[] = {"none",         "confidence:0.8", "confidence:0.9", "confidence:0.95",
                                         "confidence:0.99", "entropy:0.3", "entropy:0.15",   "entropy:0.05",
                                         "margin:0.6",   "margin:0.9",     "patience:2",     "patience:3"};
        for (size_t i = 0; i < sizeof defaults / sizeof *defaults; ++i) o.policies[o.num_policies++] = defaults[i];
        for (int e = 0; e < ert_model_num_exits(su.model) - 1 && o.num_policies < MAX_POLICIES - 1; ++e) {
            snprintf(fixed[e], sizeof fixed[e], "fixed:%d", e);
            o.policies[o.num_policies++] = fixed[e];
        }
        if (su.data->labels) o.policies[o.num_policies++] = "oracle";
    }
    cJSON *rows = cJSON_CreateArray();
    if (!o.json)
        printf("model %s | data %s (%lld samples) | device %s | mode %s | batch %d\n\n"
               "%-22s %9s %9s %7s %11s %9s %9s %9s\n",
               ert_model_name(su.model), su.data->name, (long long)su.data->n, ert_session_device(su.session),
               ert_mode_name(o.mode), su.batch, "policy", "accuracy", "mean exit", "FLOPs", "samples/s",
               "mean ms", "p50 ms", "p99 ms");
    ert_policy *pols[MAX_POLICIES];
    ert_measure_job jobs[MAX_POLICIES];
    ert_sweep_row measured[MAX_POLICIES];
    for (int i = 0; i < o.num_policies; ++i) {
        cli_check(ert_policy_parse(o.policies[i], &pols[i]));
        jobs[i] = (ert_measure_job){pols[i], su.data, NULL};
    }
    ert_sweep_options mo = ert_sweep_options_default();
    mo.batch = su.batch;
    mo.warmup = o.warmup;
    cli_check(ert_sweep_measure_jobs(su.session, jobs, o.num_policies, &mo, NULL, measured));
    for (int i = 0; i < o.num_policies; ++i) {
        const ert_sweep_row *w = &measured[i];
        ert_eval_result r = {.samples = w->samples, .num_exits = w->num_exits, .accuracy = w->accuracy,
                             .mean_exit = w->mean_exit, .flops_fraction = w->flops_fraction,
                             .throughput = w->throughput, .latency = w->batch_ms, .num_batches = w->num_batches};
        memcpy(r.exit_histogram, w->exit_histogram, sizeof r.exit_histogram);
        memcpy(r.exit_correct, w->exit_correct, sizeof r.exit_correct);
        char pbuf[512];
        ert_policy_to_string(pols[i], pbuf, sizeof pbuf);
        if (o.json) {
            cJSON_AddItemToArray(rows, result_json(&o, &su, pbuf, &r));
        } else {
            printf("%-22s %8.2f%% %9.3f %7.3f %11.0f %9.3f %9.3f %9.3f\n", pbuf, 100.0 * r.accuracy, r.mean_exit,
                   r.flops_fraction, r.throughput, r.latency.mean, r.latency.p50, r.latency.p99);
        }
        ert_policy_free(pols[i]);
    }
    if (o.json) {
        char *text = cJSON_Print(rows);
        printf("%s\n", text);
        free(text);
    } else {
        printf("\nFLOPs = executed share of the full model's FLOPs (exit heads included); latency per batch.\n");
    }
    cJSON_Delete(rows);
    setup_close(&su);
    return 0;
}

/* ---------------------------------------------------------------- info */

static void info_usage(FILE *f) {
    fprintf(f,
            "usage: exitrt info --model DIR [--json]\n"
            "\n"
            "Prints the model's input, classes and, per stage, widths, parameters, FLOPs per\n"
            "sample and weight bytes, with the cumulative FLOPs of leaving at each exit.\n");
}

static int cmd_info(int argc, char **argv) {
    const char *dir = NULL;
    int json = 0, c;
    static const struct option lo[] = {{"model", required_argument, 0, 'm'}, {"json", no_argument, 0, 'j'},
                                       {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:jh", lo, NULL)) != -1) {
        if (c == 'm') dir = optarg;
        else if (c == 'j') json = 1;
        else if (c == 'h') {
            info_usage(stdout);
            return 0;
        } else {
            info_usage(stderr);
            return 1;
        }
    }
    if (!dir) cli_fail("--model DIR is required");
    ert_model *m = NULL;
    cli_check(ert_model_load(dir, &m));
    const double full = ert_model_flops_full(m);
    cJSON *j = cJSON_CreateObject(), *stages = NULL;
    if (json) {
        cJSON_AddStringToObject(j, "model", ert_model_name(m));
        cJSON_AddNumberToObject(j, "input_size", ert_model_input_size(m));
        cJSON_AddNumberToObject(j, "classes", ert_model_num_classes(m));
        cJSON_AddNumberToObject(j, "exits", ert_model_num_exits(m));
        cJSON_AddNumberToObject(j, "flops_full", full);
        stages = cJSON_AddArrayToObject(j, "stages");
    } else {
        printf("model %s: input %d values, %d classes, %d stages, %d exits\n", ert_model_name(m),
               ert_model_input_size(m), ert_model_num_classes(m), ert_model_num_stages(m), ert_model_num_exits(m));
        printf("classes:");
        for (int i = 0; i < ert_model_num_classes(m); ++i) printf("%s %s", i ? "," : "", ert_model_class_label(m, i));
        printf("\n\n%-10s %11s %10s %12s %10s %9s %5s %14s %8s\n", "stage", "width", "params", "FLOPs/sample",
               "head FLOPs", "weights", "exit", "FLOPs to exit", "of full");
    }
    int64_t total_params = 0;
    for (int k = 0; k < ert_model_num_stages(m); ++k) {
        ert_stage_info si;
        cli_check(ert_model_stage_info(m, k, &si));
        total_params += si.params + si.head_params;
        const double to_exit = si.has_exit ? ert_model_flops_to_exit(m, si.exit_index) : 0.0;
        if (json) {
            cJSON *s = cJSON_CreateObject();
            cJSON_AddStringToObject(s, "name", si.name);
            cJSON_AddNumberToObject(s, "width_in", si.width_in);
            cJSON_AddNumberToObject(s, "width_out", si.width_out);
            cJSON_AddNumberToObject(s, "params", (double)si.params);
            cJSON_AddNumberToObject(s, "head_params", (double)si.head_params);
            cJSON_AddNumberToObject(s, "flops", si.flops);
            cJSON_AddNumberToObject(s, "head_flops", si.head_flops);
            cJSON_AddNumberToObject(s, "weight_bytes_f32", si.bytes);
            cJSON_AddNumberToObject(s, "exit", si.exit_index);
            if (si.has_exit) cJSON_AddNumberToObject(s, "flops_to_exit", to_exit);
            cJSON_AddItemToArray(stages, s);
        } else {
            char width[32], ex[16] = "-", te[32] = "-", frac[16] = "-";
            snprintf(width, sizeof width, "%d->%d", si.width_in, si.width_out);
            if (si.has_exit) {
                snprintf(ex, sizeof ex, "%d", si.exit_index);
                snprintf(te, sizeof te, "%.0f", to_exit);
                snprintf(frac, sizeof frac, "%.3f", to_exit / full);
            }
            printf("%-10s %11s %10lld %12.0f %10.0f %8.2fM %5s %14s %8s\n", si.name, width,
                   (long long)(si.params + si.head_params), si.flops, si.head_flops, si.bytes / 1e6, ex, te, frac);
        }
    }
    if (json) {
        cJSON_AddNumberToObject(j, "params", (double)total_params);
        char *text = cJSON_Print(j);
        printf("%s\n", text);
        free(text);
    } else {
        printf("\ntotal parameters %lld; full model (all stages, last head only) %.0f FLOPs per sample\n",
               (long long)total_params, full);
        printf("FLOPs count 2 per multiply-add; weights in f32 bytes.\n");
    }
    cJSON_Delete(j);
    ert_model_free(m);
    return 0;
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f) {
    fprintf(f,
            "usage: exitrt <command> [options]     (exitrt <command> --help for its options)\n"
            "\n"
            "Runs early-exit neural networks: each sample leaves at an exit head once the exit\n"
            "policy is confident; the survivors are compacted and computed alone.\n"
            "\n"
            "commands:\n"
            "  info      stages, parameters, FLOPs and bytes of a model\n"
            "  eval      run a dataset with one exit policy: accuracy, exits, FLOPs, latency\n"
            "  compare   run a dataset with several policies, one row each\n"
            "  synth     write a residual-MLP model with seeded weights (for scale benchmarks)\n"
            "  bench     the headline benchmark grid: full, masked, compact and ideal side by side\n"
            "  calibrate fit one softmax temperature per exit on a validation split\n"
            "  sweep     accuracy-latency curves of exit policies, with the Pareto frontier\n"
            "  select    the best operating point under a latency budget or accuracy target\n"
            "  shift-report  policies under input corruptions of growing severity\n"
            "  loadtest  tail latency under load: arrivals, dynamic batching, SLO peak search\n"
            "  version   the version, the commit and the libraries this build uses (also --version)\n"
            "\n"
            "environment:\n"
            "  ERT_CPU_THREADS=N        threads of the CPU backend's ops (default: the CPUs this\n"
            "                           process may run on, within its cgroups' CPU quota, halved\n"
            "                           while a session would not fit the memory); a command's\n"
            "                           --threads N wins\n"
            "  ERT_CPU_MEMORY_LIMIT=B   bytes the process's CPU sessions may hold (default: physical\n"
            "                           memory or its cgroups' limit, whichever is lower)\n"
            "  ERT_CPU_GEMM=LIB         the CPU's linear and conv ops: onednn (refused, with the\n"
            "                           reason, where it cannot run) | openblas (default: oneDNN where\n"
            "                           built in and it runs, else OpenBLAS; the device's name says\n"
            "                           which)\n"
            "  ERT_FASHION_MNIST_DIR=D  where the Fashion-MNIST files are (default\n"
            "                           /usr/share/datasets/fashion-mnist)\n");
}

int main(int argc, char **argv) {
    ert_cpu_blas_pool_stop(); /* this process's OpenBLAS is ours: its idle workers would take a core */
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        char info[1024];
        ert_build_info(info, sizeof info);
        printf("exitrt %s (commit %s)\n%s\n", ert_version(), ert_commit(), info);
        return 0;
    }
    char name[64];
    snprintf(name, sizeof name, "exitrt %s", cmd);
    cli_set_prog(name);
    if (strcmp(cmd, "info") == 0) return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "compare") == 0) return cmd_compare(argc - 1, argv + 1);
    if (strcmp(cmd, "synth") == 0) return cmd_synth(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "calibrate") == 0) return cmd_calibrate(argc - 1, argv + 1);
    if (strcmp(cmd, "sweep") == 0) return cmd_sweep(argc - 1, argv + 1);
    if (strcmp(cmd, "select") == 0) return cmd_select(argc - 1, argv + 1);
    if (strcmp(cmd, "shift-report") == 0) return cmd_shift_report(argc - 1, argv + 1);
    if (strcmp(cmd, "loadtest") == 0) return cmd_loadtest(argc - 1, argv + 1);
    fprintf(stderr, "exitrt: unknown command '%s'\n", cmd);
    usage(stderr);
    return 1;
}
