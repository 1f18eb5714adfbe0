/* Accuracy-latency sweeps: every operating point of every exit policy is RUN on the
 * session (latency is measured, not derived from FLOPs); the exit table only places the
 * threshold grids and checks that each run decided what the simulation predicts. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "exit_math.h"
#include "nvtx.h"
#include "sweep_internal.h"

ert_sweep_options ert_sweep_options_default(void) {
    ert_sweep_options o = {.grid = 8, .warmup = 1, .reps = 1, .calibration = ERT_CALIBRATION_ON};
    return o;
}

void ert_sweep_result_free(ert_sweep_result *r) {
    if (!r) return;
    free(r->rows);
    free(r);
}

ert_status ert_sweep_result_add(ert_sweep_result *r, const ert_sweep_row *row) {
    if (!r || !row) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_sweep_result_add: NULL argument");
    if (r->num_rows == r->cap_rows) {
        const int cap = r->cap_rows ? 2 * r->cap_rows : 32;
        ert_sweep_row *rows = realloc(r->rows, sizeof *rows * (size_t)cap);
        if (!rows) return ert_error(ERT_ERR_OUT_OF_MEMORY, "sweep: out of memory");
        r->rows = rows;
        r->cap_rows = cap;
    }
    r->rows[r->num_rows++] = *row;
    const ert_status st = ert_sweep_mark_frontiers(r->rows, r->num_rows);
    if (st) --r->num_rows; /* not added: the marks are still those of the rows before */
    return st;
}

/* ---------------------------------------------------------------- one operating point */

/* What one operating point gathers while it is measured: the outputs of the pass in
 * progress, the timings of every pass, and its name in Nsight Systems (each batch is a
 * "sweep point" range: `label` for the warm-ups, label + WARM for the timed batches). */
typedef struct point_run {
    double *bms, *sms; /* per batch, per sample: room for `reps` passes */
    int nb, passes;
    double total_ms, flops;
    int32_t *pred, *ex;
    float *conf;
    char label[ERT_SPEC_MAX + sizeof ((ert_dataset *)0)->name + 16]; /* "warm-up SPEC on DATA" */
} point_run;

#define WARM (sizeof "warm-up " - 1)

static ert_status point_run_new(point_run *pr, const ert_measure_job *job, int nb, int reps) {
    const int64_t n = job->data->n;
    memset(pr, 0, sizeof *pr);
    pr->nb = nb;
    pr->bms = malloc(sizeof *pr->bms * (size_t)nb * (size_t)reps);
    pr->sms = malloc(sizeof *pr->sms * (size_t)n * (size_t)reps);
    pr->pred = malloc(sizeof *pr->pred * (size_t)n);
    pr->ex = malloc(sizeof *pr->ex * (size_t)n);
    pr->conf = malloc(sizeof *pr->conf * (size_t)n);
    char spec[ERT_SPEC_MAX];
    ert_policy_to_string(job->policy, spec, sizeof spec);
    snprintf(pr->label, sizeof pr->label, "warm-up %s on %s", spec, job->data->name);
    return pr->bms && pr->sms && pr->pred && pr->ex && pr->conf
               ? ERT_OK
               : ert_error(ERT_ERR_OUT_OF_MEMORY, "sweep: out of memory");
}

static void point_run_free(point_run *pr) {
    free(pr->bms);
    free(pr->sms);
    free(pr->pred);
    free(pr->ex);
    free(pr->conf);
    memset(pr, 0, sizeof *pr);
}

static ert_status check_inputs(ert_session *s, const ert_dataset *data, int bs, int reps) {
    ert_status st = ert_dataset_check(s, data, bs, 0);
    if (st) return st;
    if (data->n * (int64_t)reps > 0x7fffffff)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "dataset '%s': too many samples x repetitions", data->name);
    return ERT_OK;
}

/* `warmup` untimed runs of the data's first batch. */
static ert_status warm_up(ert_session *s, const ert_measure_job *job, point_run *pr, int bs, int warmup) {
    const ert_dataset *data = job->data;
    for (int w = 0; w < warmup; ++w) {
        ert_batch b = {.input = data->x, .n = (int)(data->n < bs ? data->n : bs), .labels = data->labels};
        ert_outputs o = {.pred = pr->pred, .exit_index = pr->ex, .confidence = pr->conf};
        ert_nvtx_push_text(ERT_NVTX_POINT, pr->label, b.n);
        ert_status st = ert_session_run(s, job->policy, &b, &o);
        ert_nvtx_pop();
        if (st) return st;
    }
    return ERT_OK;
}

/* Batch i of the pass in progress (pr->passes), timed from its profile; its outputs go
 * to the pass's arrays at the batch's place. */
static ert_status run_batch(ert_session *s, const ert_measure_job *job, point_run *pr, int bs, int i,
                            ert_latency_model *lm) {
    const ert_model *m = ert_session_model(s);
    const ert_dataset *data = job->data;
    const int64_t n = data->n, first = (int64_t)i * bs;
    const int bn = (int)(n - first < bs ? n - first : bs);
    ert_batch b = {.input = data->x + first * data->sample_size, .n = bn,
                   .labels = data->labels ? data->labels + first : NULL, .first_index = first};
    ert_outputs o = {.pred = pr->pred + first, .exit_index = pr->ex + first, .confidence = pr->conf + first};
    ert_profile p;
    ert_nvtx_push_text(ERT_NVTX_POINT, pr->label + WARM, bn);
    ert_status st = ert_session_run(s, job->policy, &b, &o);
    ert_nvtx_pop();
    if (st || (st = ert_session_profile(s, &p))) return st;
    pr->bms[(size_t)pr->passes * pr->nb + i] = p.batch_ms;
    pr->total_ms += p.batch_ms;
    for (int k = 0; k < p.num_stages; ++k) pr->flops += p.stage[k].flops;
    /* a sample is answered when the exit it left at was decided */
    double *sms = pr->sms + (size_t)pr->passes * n;
    for (int j = 0; j < bn; ++j) sms[first + j] = ert_profile_exit_ready_ms(m, &p, pr->ex[first + j]);
    if (lm) ert_latency_model_add(lm, &p);
    return ERT_OK;
}

/* Accuracy, exits and the exit-table check, from one pass's outputs. */
static ert_status fill_outcome(ert_sweep_row *row, const ert_model *m, const ert_policy *policy,
                               const ert_dataset *data, const int32_t *pred, const int32_t *ex,
                               const ert_exit_table *table) {
    const int64_t n = data->n;
    row->samples = n;
    row->num_exits = m->num_exits;
    memset(row->exit_histogram, 0, sizeof row->exit_histogram);
    memset(row->exit_correct, 0, sizeof row->exit_correct);
    int64_t correct = 0;
    double exit_sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        row->exit_histogram[ex[i]]++;
        exit_sum += ex[i];
        if (data->labels && pred[i] == data->labels[i]) {
            correct++;
            row->exit_correct[ex[i]]++;
        }
    }
    row->accuracy = data->labels ? (double)correct / (double)n : -1.0;
    row->mean_exit = exit_sum / (double)n;
    row->sim_mismatch = -1;
    if (!table || table->n != n || table->model->num_exits != m->num_exits || table->classes != m->num_classes ||
        ert_policy_get_kind(policy) == ERT_POLICY_SCHEDULED)
        return ERT_OK;
    ert_sim_result sim;
    int32_t *spred = malloc(sizeof *spred * (size_t)n), *sex = malloc(sizeof *sex * (size_t)n);
    ert_status st = spred && sex ? ert_exit_table_simulate(table, policy, &sim, spred, sex)
                                 : ert_error(ERT_ERR_OUT_OF_MEMORY, "sweep: out of memory");
    if (!st) {
        row->sim_mismatch = 0;
        for (int64_t i = 0; i < n; ++i) row->sim_mismatch += spred[i] != pred[i] || sex[i] != ex[i];
    }
    free(spred);
    free(sex);
    return st;
}

static void fill_timing(ert_sweep_row *row, const ert_model *m, const point_run *pr, int64_t n) {
    row->num_batches = pr->nb * pr->passes;
    row->flops_fraction = pr->flops / ((double)n * pr->passes * ert_model_flops_full(m));
    row->throughput = pr->total_ms > 0 ? (double)n * pr->passes / (pr->total_ms * 1e-3) : 0.0;
    row->batch_ms = ert_latency_summary(pr->bms, pr->nb * pr->passes);
    row->sample_ms = ert_latency_summary(pr->sms, (int)(n * pr->passes));
}

/* How the jobs are measured: batch size, untimed batches before each pass, passes, the
 * latency model fed (NULL: none), and progress (NULL: none) in steps counted from done0
 * of total. */
typedef struct pass_plan {
    int batch, warmup, reps;
    ert_latency_model *lm;
    const ert_sweep_options *progress;
    int done0, total;
} pass_plan;

/* The jobs' timed passes, interleaved batch by batch: batch b of every job (that has a
 * batch b), then batch b + 1, so that a drift of the machine (clocks, other load on a
 * shared host) touches every point alike instead of the last few. Progress steps are
 * rounds. Fills the measured fields of rows[i]. */
static ert_status measure_jobs(ert_session *s, const ert_measure_job *jobs, int num_jobs, const pass_plan *pp,
                               ert_sweep_row *rows) {
    const ert_model *m = ert_session_model(s);
    const int bs = pp->batch, reps = pp->reps;
    point_run *runs = calloc((size_t)num_jobs, sizeof *runs);
    ert_status st = runs ? ERT_OK : ert_error(ERT_ERR_OUT_OF_MEMORY, "sweep: out of memory");
    int rounds = 0, failed = -1; /* the job whose run failed */
    for (int j = 0; j < num_jobs && !st; ++j) {
        const int nb = (int)((jobs[j].data->n + bs - 1) / bs);
        if (nb > rounds) rounds = nb;
        if (!(st = check_inputs(s, jobs[j].data, bs, reps))) st = point_run_new(&runs[j], &jobs[j], nb, reps);
    }
    for (int rep = 0; rep < reps && !st; ++rep) {
        for (int j = 0; j < num_jobs && !st; ++j)
            if ((st = warm_up(s, &jobs[j], &runs[j], bs, pp->warmup))) failed = j;
        for (int b = 0; b < rounds && !st; ++b) {
            if (pp->progress && pp->progress->progress) {
                char what[64];
                snprintf(what, sizeof what, "pass %d of %d, batch %d of %d", rep + 1, reps, b + 1, rounds);
                const ert_sweep_progress pr = {pp->done0 + rep * rounds + b, pp->total, what};
                pp->progress->progress(pp->progress->progress_user, &pr);
            }
            for (int j = 0; j < num_jobs && !st; ++j)
                if (b < runs[j].nb && (st = run_batch(s, &jobs[j], &runs[j], bs, b, pp->lm))) failed = j;
        }
        for (int j = 0; j < num_jobs && !st; ++j) {
            runs[j].passes++;
            if (rep == 0 && (st = fill_outcome(&rows[j], m, jobs[j].policy, jobs[j].data, runs[j].pred, runs[j].ex,
                                               jobs[j].table)))
                failed = j;
        }
    }
    for (int j = 0; j < num_jobs && !st; ++j) fill_timing(&rows[j], m, &runs[j], jobs[j].data->n);
    if (st && failed >= 0) { /* a run failed (the checks above name the data themselves) */
        char spec[ERT_SPEC_MAX];
        ert_policy_to_string(jobs[failed].policy, spec, sizeof spec);
        ert_error_context(st, "sweep point '%s' on '%s': ", spec, jobs[failed].data->name);
    }
    for (int j = 0; runs && j < num_jobs; ++j) point_run_free(&runs[j]);
    free(runs);
    return st;
}

static int steps_of(const ert_measure_job *jobs, int num_jobs, int bs, int reps) {
    int64_t rounds = 0;
    for (int j = 0; j < num_jobs; ++j)
        if ((jobs[j].data->n + bs - 1) / bs > rounds) rounds = (jobs[j].data->n + bs - 1) / bs;
    return (int)(rounds * reps);
}

ert_status ert_sweep_measure_jobs(ert_session *s, const ert_measure_job *jobs, int num_jobs,
                                  const ert_sweep_options *opt, ert_latency_model *lm, ert_sweep_row *rows) {
    if (!s || (!jobs && num_jobs > 0) || !rows || num_jobs < 0)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_sweep_measure_jobs: NULL argument");
    for (int j = 0; j < num_jobs; ++j)
        if (!jobs[j].policy || !jobs[j].data)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_sweep_measure_jobs: job %d has no policy or data", j);
    const ert_sweep_options o = opt ? *opt : ert_sweep_options_default();
    pass_plan pp = {.batch = o.batch > 0 ? o.batch : ert_session_get_options(s).max_batch,
                    .warmup = o.warmup < 0 ? 0 : o.warmup,
                    .reps = o.reps < 1 ? 1 : o.reps,
                    .lm = lm,
                    .progress = &o};
    pp.total = steps_of(jobs, num_jobs, pp.batch, pp.reps);
    ert_status st = measure_jobs(s, jobs, num_jobs, &pp, rows);
    if (!st && o.progress) {
        const ert_sweep_progress pr = {pp.total, pp.total, "done"};
        o.progress(o.progress_user, &pr);
    }
    return st;
}

ert_status ert_sweep_measure(ert_session *s, const ert_policy *policy, const ert_dataset *data, int batch,
                             int warmup, int reps, ert_latency_model *lm, const ert_exit_table *table,
                             ert_sweep_row *row) {
    if (!s || !policy || !data || !row) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_sweep_measure: NULL argument");
    const ert_measure_job job = {policy, data, table};
    const pass_plan pp = {.batch = batch > 0 ? batch : ert_session_get_options(s).max_batch,
                          .warmup = warmup < 0 ? 0 : warmup,
                          .reps = reps < 1 ? 1 : reps,
                          .lm = lm};
    return measure_jobs(s, &job, 1, &pp, row);
}

/* ---------------------------------------------------------------- the sweep */

typedef struct planned {
    char spec[ERT_SPEC_MAX];
    char family[16];
    double param;
    int reference;
} planned;

typedef struct plan {
    planned *items;
    int count, cap;
} plan;

static ert_status plan_push(plan *p, const char *spec, const char *family, double param, int reference) {
    if (p->count == p->cap) {
        const int cap = p->cap ? 2 * p->cap : 32;
        planned *items = realloc(p->items, sizeof *items * (size_t)cap);
        if (!items) return ert_error(ERT_ERR_OUT_OF_MEMORY, "sweep: out of memory");
        p->items = items;
        p->cap = cap;
    }
    planned *it = &p->items[p->count++];
    snprintf(it->spec, sizeof it->spec, "%s", spec);
    snprintf(it->family, sizeof it->family, "%s", family);
    it->param = param;
    it->reference = reference;
    return ERT_OK;
}

static ert_status plan_add(plan *p, const char *spec, const char *family, double param, int reference) {
    for (int i = 0; i < p->count; ++i)
        if (strcmp(p->items[i].spec, spec) == 0) return ERT_OK; /* already planned */
    return plan_push(p, spec, family, param, reference);
}

static int is_family(const char *s) {
    static const char *const fam[] = {"confidence", "entropy", "margin", "patience", "fixed", "none", "oracle"};
    for (size_t i = 0; i < sizeof fam / sizeof *fam; ++i)
        if (strcmp(s, fam[i]) == 0) return 1;
    return 0;
}

/* `grid` values of lo..hi (inclusive) spread evenly, all of them when there are fewer. */
static int spread(int lo, int hi, int grid, int *out) {
    const int count = hi - lo + 1;
    if (count <= 0) return 0;
    if (count <= grid) {
        for (int i = 0; i < count; ++i) out[i] = lo + i;
        return count;
    }
    int m = 0;
    for (int j = 0; j < grid; ++j) {
        const int v = lo + (int)lround((double)j * (count - 1) / (grid > 1 ? grid - 1 : 1));
        if (m == 0 || out[m - 1] != v) out[m++] = v;
    }
    return m;
}

static ert_status plan_family(plan *p, const char *fam, const ert_exit_table *t, int E, int grid,
                              const int *uncal, int num_uncal, int temp_suffix) {
    char spec[ERT_SPEC_MAX];
    ert_status st = ERT_OK;
    int vals[ERT_MAX_EXITS];
    if (strcmp(fam, "none") == 0) return plan_add(p, "none", "none", NAN, 0);
    if (strcmp(fam, "oracle") == 0) return plan_add(p, "oracle", "oracle", NAN, 1);
    if (strcmp(fam, "patience") == 0) { /* patience:1 is fixed:0 and patience:E is none */
        const int m = spread(2, E - 1, grid, vals);
        for (int i = 0; i < m && !st; ++i) {
            snprintf(spec, sizeof spec, "patience:%d", vals[i]);
            st = plan_add(p, spec, "patience", vals[i], 0);
        }
        return st;
    }
    if (strcmp(fam, "fixed") == 0) { /* fixed:E-1 is none */
        const int m = spread(0, E - 2, grid, vals);
        for (int i = 0; i < m && !st; ++i) {
            snprintf(spec, sizeof spec, "fixed:%d", vals[i]);
            st = plan_add(p, spec, "fixed", vals[i], 0);
        }
        return st;
    }
    const ert_policy_kind kind = strcmp(fam, "confidence") == 0 ? ERT_POLICY_CONFIDENCE
                                 : strcmp(fam, "entropy") == 0  ? ERT_POLICY_ENTROPY
                                                                : ERT_POLICY_MARGIN;
    if (E < 2) return ERT_OK;
    for (int c = 0; c < num_uncal && !st; ++c) {
        float thr[256];
        int count = 0;
        if ((st = ert_thresholds_grid(t, kind, uncal[c], grid < 256 ? grid : 256, thr, &count))) return st;
        for (int i = 0; i < count && !st; ++i) {
            snprintf(spec, sizeof spec, "%s:%.6g%s", fam, thr[i], uncal[c] && temp_suffix ? ";temp=1" : "");
            st = plan_add(p, spec, fam, thr[i], 0);
        }
    }
    return st;
}

/* 1, 0 or -1: see ert_sweep_row.calibrated. */
static int calibrated_of(const ert_policy *pol, const ert_model *m) {
    const ert_policy_kind k = ert_policy_get_kind(pol);
    if (k != ERT_POLICY_CONFIDENCE && k != ERT_POLICY_ENTROPY && k != ERT_POLICY_MARGIN) return -1;
    ert_exit_params prm;
    if (ert_policy_exit_params(pol, m, &prm)) return 0;
    for (int e = 0; e < m->num_exits; ++e)
        if (prm.inv_temp[e] != 1.0f) return 1;
    return 0;
}

typedef struct table_progress {
    const ert_sweep_options *opt;
    int total;
    char what[64];
} table_progress;

static void on_table_exit(void *user, int exit) {
    table_progress *tp = user;
    snprintf(tp->what, sizeof tp->what, "exit table: pass %d", exit);
    const ert_sweep_progress pr = {exit, tp->total, tp->what};
    tp->opt->progress(tp->opt->progress_user, &pr);
}

ert_status ert_sweep_run(ert_session *s, const ert_dataset *data, const ert_sweep_options *opt_in,
                         ert_sweep_result **out) {
    if (!s || !data || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_sweep_run: NULL argument");
    *out = NULL;
    ert_sweep_options opt = opt_in ? *opt_in : ert_sweep_options_default();
    if (opt.grid < 1) opt.grid = 8;
    if (opt.reps < 1) opt.reps = 1;
    if (!data->labels)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "sweep: dataset '%s' has no labels (accuracy needs them)",
                         data->name);
    const ert_model *m = ert_session_model(s);
    const ert_session_options so = ert_session_get_options(s);
    const int E = m->num_exits;
    const int batch = opt.batch > 0 ? opt.batch : so.max_batch;
    ert_status st = ERT_OK;
    plan p = {0};
    ert_exit_table *own = NULL;
    ert_sweep_result *r = calloc(1, sizeof *r);
    if (!r) return ert_error(ERT_ERR_OUT_OF_MEMORY, "sweep: out of memory");

    /* metadata */
    snprintf(r->model, sizeof r->model, "%s", m->name);
    snprintf(r->data, sizeof r->data, "%s", data->name);
    snprintf(r->device, sizeof r->device, "%s", ert_session_device(s));
    snprintf(r->mode, sizeof r->mode, "%s", ert_mode_name(so.mode));
    snprintf(r->exec, sizeof r->exec, "%s", ert_exec_name(so.exec));
    snprintf(r->compaction, sizeof r->compaction, "%s", ert_compaction_name(so.compaction));
    snprintf(r->dtype, sizeof r->dtype, "%s", ert_dtype_name(so.dtype));
    const time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(r->date, sizeof r->date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    for (int e = 0; e < E; ++e)
        if (m->temperature[e] != 1.0f) r->model_calibrated = 1;
    static const char *const cal_names[] = {"on", "off", "both"};
    snprintf(r->calibration, sizeof r->calibration, "%s", r->model_calibrated ? cal_names[opt.calibration] : "none");
    r->batch = batch;
    r->warmup = opt.warmup;
    r->reps = opt.reps;
    r->samples = data->n;
    r->num_exits = E;
    r->flops_full = ert_model_flops_full(m);
    for (int e = 0; e < E; ++e) r->exit_flops_fraction[e] = ert_model_flops_to_exit(m, e) / r->flops_full;
    r->sim_mismatch = -1;
    ert_latency_model_init(&r->latency);

    /* Which temperature settings the threshold families run under. Without a
     * calibration.json every setting is temperature 1: run them once. */
    int uncal[2], num_uncal = 0;
    if (!r->model_calibrated || opt.calibration == ERT_CALIBRATION_ON) uncal[num_uncal++] = 0;
    else if (opt.calibration == ERT_CALIBRATION_OFF) uncal[num_uncal++] = 1;
    else uncal[0] = 0, uncal[1] = 1, num_uncal = 2;

    /* The exit table: given, or built here (one pass per exit). */
    const ert_exit_table *table = opt.table;
    if (table && (table->n != data->n || table->model != m)) table = NULL;
    const int build = table == NULL;
    static const char *const default_families[] = {"confidence", "entropy", "margin", "patience", "fixed"};
    const int given = opt.policies && opt.num_policies > 0;
    const char *const *fams = given ? opt.policies : default_families;
    const int nfam = given ? opt.num_policies : 5;
    table_progress tp = {.opt = &opt};
    if (build) {
        tp.total = E + 1; /* refined once the plan is known */
        if ((st = ert_exit_table_build_progress(s, data, batch, opt.progress ? on_table_exit : NULL, &tp, &own)))
            goto fail;
        table = own;
    }

    /* The plan: none first, then the families and specs as given, the extra points, oracle last. */
    if ((st = plan_add(&p, "none", "none", NAN, 0))) goto fail;
    for (int i = 0; i < nfam && !st; ++i) {
        const char *f = fams[i];
        if (!f || !*f) continue;
        if (is_family(f)) {
            if (strcmp(f, "oracle") == 0) continue;
            st = plan_family(&p, f, table, E, opt.grid, uncal, num_uncal, r->model_calibrated);
        } else {
            ert_policy *pol = NULL;
            if ((st = ert_policy_parse(f, &pol))) break;
            char spec[ERT_SPEC_MAX], family[16];
            ert_policy_to_string(pol, spec, sizeof spec);
            const size_t flen = strcspn(spec, ":;");
            memcpy(family, spec, flen < sizeof family ? flen : sizeof family - 1);
            family[flen < sizeof family ? flen : sizeof family - 1] = '\0';
            const int ref = ert_policy_get_kind(pol) == ERT_POLICY_ORACLE;
            ert_policy_free(pol);
            st = plan_add(&p, spec, family, NAN, ref);
        }
    }
    for (int i = 0; i < opt.num_extra && !st; ++i) {
        const ert_sweep_point *x = &opt.extra[i];
        if (!x->spec || !x->family) st = ert_error(ERT_ERR_INVALID_ARGUMENT, "sweep: extra point %d has no spec or family", i);
        else st = plan_push(&p, x->spec, x->family, x->param, 0);
    }
    if (st) goto fail;
    if (!opt.no_oracle && (st = plan_add(&p, "oracle", "oracle", NAN, 1))) goto fail;

    /* Every point's row: the plan's fields here, the measured ones from the timed passes
     * (interleaved, batch by batch: measure_jobs). */
    ert_sweep_row *rows = calloc((size_t)p.count, sizeof *rows);
    ert_policy **pols = calloc((size_t)p.count, sizeof *pols);
    ert_measure_job *jobs = calloc((size_t)p.count, sizeof *jobs);
    if (!rows || !pols || !jobs) st = ert_error(ERT_ERR_OUT_OF_MEMORY, "sweep: out of memory");
    for (int i = 0; i < p.count && !st; ++i) {
        const planned *pl = &p.items[i];
        if ((st = ert_policy_parse(pl->spec, &pols[i]))) break;
        ert_policy_to_string(pols[i], rows[i].policy, sizeof rows[i].policy);
        snprintf(rows[i].family, sizeof rows[i].family, "%s", pl->family);
        rows[i].param = pl->param;
        rows[i].reference = pl->reference;
        rows[i].calibrated = calibrated_of(pols[i], m);
        jobs[i] = (ert_measure_job){pols[i], data, table};
    }
    const int done0 = build ? E : 0;
    const pass_plan pp = {.batch = batch,
                          .warmup = opt.warmup < 0 ? 0 : opt.warmup,
                          .reps = opt.reps,
                          .lm = &r->latency,
                          .progress = &opt,
                          .done0 = done0,
                          .total = st ? 0 : done0 + steps_of(jobs, p.count, batch, opt.reps)};
    if (!st) st = measure_jobs(s, jobs, p.count, &pp, rows);
    for (int i = 0; i < p.count && !st; ++i) {
        if ((st = ert_sweep_result_add(r, &rows[i]))) break;
        if (rows[i].sim_mismatch >= 0)
            r->sim_mismatch = (r->sim_mismatch < 0 ? 0 : r->sim_mismatch) + rows[i].sim_mismatch;
    }
    for (int i = 0; pols && i < p.count; ++i) ert_policy_free(pols[i]);
    free(rows);
    free(pols);
    free(jobs);
    if (st) goto fail;
    if (opt.progress) {
        const ert_sweep_progress pr = {pp.total, pp.total, "done"};
        opt.progress(opt.progress_user, &pr);
    }
    if (r->latency.batches > 0 && (st = ert_latency_model_finish(&r->latency))) goto fail;
    free(p.items);
    ert_exit_table_free(own);
    *out = r;
    return ERT_OK;
fail:
    free(p.items);
    ert_exit_table_free(own);
    ert_sweep_result_free(r);
    return st;
}
