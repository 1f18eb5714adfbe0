/* Exit tables (every exit's logits of every sample), exact simulation of exit policies
 * from them, reliability bins, the linear latency model, and the per-exit threshold
 * search. The simulation calls the runtime's own exit math (kernels/exit_math.h), so
 * what it predicts is what the CPU backend decides, bit for bit. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "exit_math.h"
#include "sweep_internal.h"

/* ---------------------------------------------------------------- exit tables */

static const char *kind_name(ert_policy_kind k) {
    switch (k) {
    case ERT_POLICY_CONFIDENCE: return "confidence";
    case ERT_POLICY_ENTROPY: return "entropy";
    case ERT_POLICY_MARGIN: return "margin";
    default: return "none";
    }
}

void ert_exit_table_free(ert_exit_table *t) {
    if (!t) return;
    free(t->logits);
    free(t->labels);
    free(t);
}

int64_t ert_exit_table_samples(const ert_exit_table *t) { return t ? t->n : 0; }
int ert_exit_table_num_exits(const ert_exit_table *t) { return t ? t->num_exits : 0; }

ert_status ert_exit_table_build_progress(ert_session *s, const ert_dataset *data, int batch,
                                         void (*progress)(void *user, int exit), void *user, ert_exit_table **out) {
    if (!s || !data || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_exit_table_build: NULL argument");
    *out = NULL;
    const ert_model *m = ert_session_model(s);
    const int max_batch = ert_session_get_options(s).max_batch;
    const int bs = batch > 0 ? batch : max_batch;
    ert_status st = ert_dataset_check(s, data, bs, 0);
    if (st) return st;
    const int E = m->num_exits, C = m->num_classes;
    const int64_t n = data->n;
    ert_policy *pol = NULL;
    int32_t *pred = malloc(sizeof *pred * (size_t)bs), *ex = malloc(sizeof *ex * (size_t)bs);
    float *conf = malloc(sizeof *conf * (size_t)bs), *lg = malloc(sizeof *lg * (size_t)bs * (size_t)C);
    ert_exit_table *t = calloc(1, sizeof *t);
    if (!pred || !ex || !conf || !lg || !t ||
        !(t->logits = malloc(sizeof *t->logits * (size_t)n * (size_t)E * (size_t)C)) ||
        (data->labels && !(t->labels = malloc(sizeof *t->labels * (size_t)n)))) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "exit table of '%s': out of memory (%lld samples x %d exits x %d classes)",
                       data->name, (long long)n, E, C);
        goto done;
    }
    t->model = m;
    t->n = n;
    t->num_exits = E;
    t->classes = C;
    snprintf(t->name, sizeof t->name, "%s", data->name);
    if (data->labels) memcpy(t->labels, data->labels, sizeof *t->labels * (size_t)n);
    for (int k = 0; k < E; ++k) {
        char spec[32];
        snprintf(spec, sizeof spec, "fixed:%d", k);
        if (progress) progress(user, k);
        ert_policy_free(pol);
        pol = NULL;
        if ((st = ert_policy_parse(spec, &pol))) goto done;
        for (int64_t first = 0; first < n; first += bs) {
            const int bn = (int)(n - first < bs ? n - first : bs);
            ert_batch b = {.input = data->x + first * data->sample_size, .n = bn,
                           .labels = data->labels ? data->labels + first : NULL, .first_index = first};
            ert_outputs o = {.pred = pred, .exit_index = ex, .confidence = conf, .logits = lg};
            if ((st = ert_session_run(s, pol, &b, &o))) goto done;
            for (int i = 0; i < bn; ++i) {
                if (ex[i] != k) {
                    st = ert_error(ERT_ERR_BACKEND, "exit table: sample %lld left at exit %d under fixed:%d",
                                   (long long)(first + i), ex[i], k);
                    goto done;
                }
                memcpy(t->logits + ((size_t)(first + i) * E + k) * C, lg + (size_t)i * C, sizeof(float) * (size_t)C);
            }
        }
    }
    *out = t;
    t = NULL;
done:
    ert_policy_free(pol);
    ert_exit_table_free(t);
    free(pred);
    free(ex);
    free(conf);
    free(lg);
    return st;
}

ert_status ert_exit_table_build(ert_session *s, const ert_dataset *data, int batch, ert_exit_table **out) {
    return ert_exit_table_build_progress(s, data, batch, NULL, NULL, out);
}

static const float *table_logits(const ert_exit_table *t, int64_t i, int e) {
    return t->logits + ((size_t)i * t->num_exits + e) * t->classes;
}

ert_status ert_exit_table_simulate(const ert_exit_table *t, const ert_policy *policy, ert_sim_result *out,
                                   int32_t *pred, int32_t *exit_index) {
    if (!t || !policy || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_exit_table_simulate: NULL argument");
    if (ert_policy_get_kind(policy) == ERT_POLICY_SCHEDULED)
        return ert_error(ERT_ERR_UNSUPPORTED, "exit table: the scheduled policy's exits do not follow from the scores");
    ert_exit_params prm;
    ert_status st = ert_policy_exit_params(policy, t->model, &prm);
    if (st) return st;
    const int E = t->num_exits;
    memset(out, 0, sizeof *out);
    out->samples = t->n;
    double exit_sum = 0.0, flops = 0.0;
    int64_t correct = 0;
    for (int64_t i = 0; i < t->n; ++i) {
        ert_sample_state ss = {.label = t->labels ? t->labels[i] : -1, .target_exit = E - 1, .last_pred = -1};
        int e = 0;
        ert_softmax_stats s;
        for (;; ++e) {
            s = ert_softmax_stats_compute(table_logits(t, i, e), t->classes, prm.inv_temp[e]);
            if (ert_exit_decide(&prm, e, e == E - 1, &s, &ss)) break;
        }
        if (pred) pred[i] = s.top1;
        if (exit_index) exit_index[i] = e;
        out->exit_histogram[e]++;
        exit_sum += e;
        flops += ert_model_flops_to_exit(t->model, e);
        if (t->labels && s.top1 == t->labels[i]) {
            correct++;
            out->exit_correct[e]++;
        }
    }
    out->accuracy = t->labels ? (double)correct / (double)t->n : -1.0;
    out->mean_exit = exit_sum / (double)t->n;
    out->flops_fraction = flops / ((double)t->n * ert_model_flops_full(t->model));
    return ERT_OK;
}

ert_status ert_exit_table_calibration(const ert_exit_table *t, int uncalibrated, ert_calibration_stats *out) {
    if (!t || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_exit_table_calibration: NULL argument");
    if (!t->labels) return ert_error(ERT_ERR_INVALID_ARGUMENT, "exit table '%s': calibration needs labels", t->name);
    float *conf = malloc(sizeof *conf * (size_t)t->n);
    uint8_t *correct = malloc((size_t)t->n);
    if (!conf || !correct) {
        free(conf);
        free(correct);
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "calibration of the exit table: out of memory");
    }
    for (int e = 0; e < t->num_exits; ++e) {
        const float temp = uncalibrated ? 1.0f : ert_model_temperature(t->model, e);
        int64_t right = 0;
        for (int64_t i = 0; i < t->n; ++i) {
            const ert_softmax_stats s = ert_softmax_stats_compute(table_logits(t, i, e), t->classes, 1.0f / temp);
            conf[i] = s.p1;
            correct[i] = (uint8_t)(s.top1 == t->labels[i]);
            right += correct[i];
        }
        memset(&out[e], 0, sizeof out[e]);
        out[e].nll = NAN;
        out[e].ece = ert_ece(conf, correct, t->n, out[e].bins);
        out[e].accuracy = (double)right / (double)t->n;
    }
    free(conf);
    free(correct);
    return ERT_OK;
}

/* ---------------------------------------------------------------- latency model */

void ert_latency_model_init(ert_latency_model *lm) {
    if (lm) memset(lm, 0, sizeof *lm);
}

static double stage_ms(const ert_stage_profile *s) { return s->compute_ms + s->decide_ms + s->compact_ms + s->sync_ms; }

void ert_latency_model_add(ert_latency_model *lm, const ert_profile *p) {
    if (!lm || !p) return;
    if (p->num_stages > lm->num_stages) lm->num_stages = p->num_stages;
    double inside = 0.0;
    for (int k = 0; k < p->num_stages && k < ERT_MAX_STAGES; ++k) {
        const ert_stage_profile *s = &p->stage[k];
        if (s->rows <= 0) continue;
        const double x = s->rows, y = stage_ms(s);
        inside += y;
        lm->acc_n[k] += 1;
        lm->acc_x[k] += x;
        lm->acc_y[k] += y;
        lm->acc_xx[k] += x * x;
        lm->acc_xy[k] += x * y;
    }
    lm->acc_overhead += p->batch_ms - inside > 0 ? p->batch_ms - inside : 0.0;
    lm->batches++;
}

ert_status ert_latency_model_finish(ert_latency_model *lm) {
    if (!lm) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_latency_model_finish: NULL argument");
    if (lm->batches == 0) return ert_error(ERT_ERR_INVALID_ARGUMENT, "latency model: no profile was added");
    lm->overhead_ms = lm->acc_overhead / (double)lm->batches;
    for (int k = 0; k < lm->num_stages; ++k) {
        const double n = lm->acc_n[k], sx = lm->acc_x[k], sy = lm->acc_y[k];
        lm->fixed_ms[k] = lm->per_row_ms[k] = 0.0;
        if (n <= 0) continue;
        const double den = n * lm->acc_xx[k] - sx * sx;
        double a, b;
        if (den > 1e-9 * n * lm->acc_xx[k]) {
            b = (n * lm->acc_xy[k] - sx * sy) / den;
            a = (sy - b * sx) / n;
        } else { /* one row count only: nothing tells fixed from per-row cost */
            a = 0.0;
            b = sx > 0 ? sy / sx : 0.0;
        }
        if (b < 0) {
            b = 0.0;
            a = sy / n;
        } else if (a < 0) {
            a = 0.0;
            b = lm->acc_xx[k] > 0 ? lm->acc_xy[k] / lm->acc_xx[k] : 0.0;
        }
        lm->fixed_ms[k] = a;
        lm->per_row_ms[k] = b;
    }
    return ERT_OK;
}

double ert_latency_model_batch_ms(const ert_latency_model *lm, const int *rows) {
    if (!lm || !rows) return NAN;
    double t = lm->overhead_ms;
    for (int k = 0; k < lm->num_stages; ++k)
        if (rows[k] > 0) t += lm->fixed_ms[k] + lm->per_row_ms[k] * rows[k];
    return t;
}

double ert_latency_model_predict(const ert_latency_model *lm, const ert_model *m, const int32_t *exit_index,
                                 int64_t n, int batch) {
    if (!lm || !m || !exit_index || n <= 0 || batch <= 0) return NAN;
    const int S = m->num_stages < ERT_MAX_STAGES ? m->num_stages : ERT_MAX_STAGES;
    double total = 0.0;
    int batches = 0;
    for (int64_t first = 0; first < n; first += batch, ++batches) {
        const int64_t end = first + batch < n ? first + batch : n;
        int reach[ERT_MAX_STAGES + 1] = {0}, rows[ERT_MAX_STAGES] = {0};
        for (int64_t i = first; i < end; ++i) {
            const int k = ert_model_exit_stage(m, exit_index[i]);
            reach[k >= 0 && k < S ? k : S - 1]++;
        }
        /* rows entering stage k = samples whose exit stage is k or later */
        for (int k = S - 1, acc = 0; k >= 0; --k) rows[k] = (acc += reach[k]);
        total += ert_latency_model_batch_ms(lm, rows);
    }
    return total / batches;
}

/* ---------------------------------------------------------------- threshold search */

float ert_threshold_round(double value) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.6g", value);
    return (float)strtod(buf, NULL);
}

/* Softmax statistics of every (sample, exit) under one temperature setting, and the
 * policy parameters the decide math reads; thresholds are set per evaluation. */
typedef struct scorer {
    const ert_exit_table *t;
    ert_exit_params prm;
    ert_softmax_stats *stats; /* n x exits */
    double flops_to_exit[ERT_MAX_EXITS], flops_full;
    /* the budget */
    double budget_flops, budget_ms;
    const ert_latency_model *lm;
    int batch;
    int32_t *exits; /* n: scratch for one evaluation */
} scorer;

static void scorer_free(scorer *s) {
    free(s->stats);
    free(s->exits);
}

static ert_status scorer_init(scorer *s, const ert_exit_table *t, ert_policy_kind kind, int uncalibrated) {
    memset(s, 0, sizeof *s);
    s->t = t;
    s->budget_flops = s->budget_ms = NAN;
    if (kind != ERT_POLICY_CONFIDENCE && kind != ERT_POLICY_ENTROPY && kind != ERT_POLICY_MARGIN)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "threshold search: the policy must be confidence, entropy or margin");
    if (t->num_exits < 2)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "threshold search: model '%s' has one exit, nothing to choose",
                         t->model->name);
    char spec[64];
    snprintf(spec, sizeof spec, "%s:0.5%s", kind_name(kind), uncalibrated ? ";temp=1" : "");
    ert_policy *p = NULL;
    ert_status st = ert_policy_parse(spec, &p);
    if (!st) st = ert_policy_exit_params(p, t->model, &s->prm);
    ert_policy_free(p);
    if (st) return st;
    const int E = t->num_exits;
    s->stats = malloc(sizeof *s->stats * (size_t)t->n * (size_t)E);
    s->exits = malloc(sizeof *s->exits * (size_t)t->n);
    if (!s->stats || !s->exits) {
        scorer_free(s);
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "threshold search: out of memory");
    }
    for (int64_t i = 0; i < t->n; ++i)
        for (int e = 0; e < E; ++e)
            s->stats[(size_t)i * E + e] = ert_softmax_stats_compute(table_logits(t, i, e), t->classes, s->prm.inv_temp[e]);
    for (int e = 0; e < E; ++e) s->flops_to_exit[e] = ert_model_flops_to_exit(t->model, e);
    s->flops_full = ert_model_flops_full(t->model);
    return ERT_OK;
}

/* 1 when sample i leaves at exit e (not the last) under the threshold in prm. */
static int fires(const scorer *s, int64_t i, int e) {
    ert_sample_state ss = {.label = -1, .target_exit = -1, .last_pred = -1};
    return ert_exit_decide(&s->prm, e, 0, &s->stats[(size_t)i * s->t->num_exits + e], &ss);
}

typedef struct outcome {
    int64_t correct;
    double flops;  /* fraction */
    double ms;     /* predicted mean batch ms, NaN without a model */
} outcome;

/* Accuracy and cost of the exits in s->exits. */
static outcome score_exits(const scorer *s) {
    const ert_exit_table *t = s->t;
    const int E = t->num_exits;
    outcome o = {0, 0.0, NAN};
    double flops = 0.0;
    for (int64_t i = 0; i < t->n; ++i) {
        const int e = s->exits[i];
        flops += s->flops_to_exit[e];
        if (t->labels && s->stats[(size_t)i * E + e].top1 == t->labels[i]) o.correct++;
    }
    o.flops = flops / ((double)t->n * s->flops_full);
    if (s->lm) o.ms = ert_latency_model_predict(s->lm, t->model, s->exits, t->n, s->batch);
    return o;
}

/* The exits of the thresholds currently in prm. */
static outcome evaluate(scorer *s) {
    const int E = s->t->num_exits;
    for (int64_t i = 0; i < s->t->n; ++i) {
        int e = 0;
        while (e < E - 1 && !fires(s, i, e)) ++e;
        s->exits[i] = e;
    }
    return score_exits(s);
}

static int feasible(const scorer *s, const outcome *o) {
    return (isnan(s->budget_flops) || o->flops <= s->budget_flops) && (isnan(s->budget_ms) || o->ms <= s->budget_ms);
}

/* The cost ties are broken on: predicted ms under a latency budget, else FLOPs. */
static double cost(const scorer *s, const outcome *o) { return isnan(s->budget_ms) ? o->flops : o->ms; }

static int better(const scorer *s, const outcome *a, const outcome *b) {
    return a->correct > b->correct || (a->correct == b->correct && cost(s, a) < cost(s, b));
}

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The score the threshold is compared with, as the decide math computes it. */
static float score_of(const ert_softmax_stats *st, int32_t kind) { return ert_exit_score(kind, st); }

/* Up to k thresholds at quantiles of the finite scores of exit `exit` (-1: every exit
 * but the last), plus 0 and 1, rounded like a spec, sorted and distinct. out holds k + 2. */
static int candidates(const scorer *s, int exit, int k, float *out) {
    const ert_exit_table *t = s->t;
    const int E = t->num_exits;
    const int lo = exit < 0 ? 0 : exit, hi = exit < 0 ? E - 2 : exit;
    float *v = malloc(sizeof *v * (size_t)t->n * (size_t)(hi - lo + 1));
    int64_t m = 0;
    int c = 0;
    if (v) {
        for (int64_t i = 0; i < t->n; ++i)
            for (int e = lo; e <= hi; ++e) {
                const ert_softmax_stats *st = &s->stats[(size_t)i * E + e];
                const float sc = score_of(st, s->prm.kind);
                if (st->finite && !isnan(sc)) v[m++] = sc;
            }
        qsort(v, (size_t)m, sizeof *v, cmp_float);
        for (int j = 0; m > 0 && j < k; ++j) {
            const int64_t at = k > 1 ? (int64_t)((double)j * (double)(m - 1) / (double)(k - 1) + 0.5) : m / 2;
            float q = ert_threshold_round(v[at]);
            out[c++] = q < 0.0f ? 0.0f : q > 1.0f ? 1.0f : q;
        }
    }
    free(v);
    out[c++] = 0.0f;
    out[c++] = 1.0f;
    qsort(out, (size_t)c, sizeof *out, cmp_float);
    int d = 0;
    for (int j = 0; j < c; ++j)
        if (d == 0 || out[j] != out[d - 1]) out[d++] = out[j];
    return d;
}

static void set_shared(scorer *s, float thr) {
    for (int e = 0; e < s->t->num_exits; ++e) s->prm.threshold[e] = thr;
}

static void spec_of(const scorer *s, const float *thr, int count, int uncalibrated, char *buf, size_t len) {
    size_t at = (size_t)snprintf(buf, len, "%s:", kind_name((ert_policy_kind)s->prm.kind));
    for (int e = 0; e < count && at < len; ++e) at += (size_t)snprintf(buf + at, len - at, "%s%.6g", e ? "," : "", thr[e]);
    if (uncalibrated && at < len) snprintf(buf + at, len - at, ";temp=1");
}

ert_status ert_thresholds_grid(const ert_exit_table *t, ert_policy_kind kind, int uncalibrated, int grid, float *out,
                               int *count) {
    if (!t || !out || !count || grid < 1) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_thresholds_grid: bad argument");
    *count = 0;
    scorer s;
    ert_status st = scorer_init(&s, t, kind, uncalibrated);
    if (st) return st;
    enum { K = 255 };
    float cand[K + 2];
    outcome res[K + 2];
    const int nc = candidates(&s, -1, K, cand);
    double fmin = INFINITY, fmax = -INFINITY;
    for (int j = 0; j < nc; ++j) {
        set_shared(&s, cand[j]);
        res[j] = evaluate(&s);
        if (res[j].flops < fmin) fmin = res[j].flops;
        if (res[j].flops > fmax) fmax = res[j].flops;
    }
    /* Targets at the middles of `grid` equal slices of the FLOPs range: the ends are
     * fixed:0 and none, which the sweep runs anyway. */
    int used[K + 2] = {0};
    for (int g = 0; g < grid; ++g) {
        const double target = fmin + (fmax - fmin) * (g + 0.5) / grid;
        int best = -1;
        /* The first of equally near candidates: of candidates with the same FLOPs only the
         * first is ever taken, so the points taken are distinct operating points. */
        for (int j = 0; j < nc; ++j)
            if (best < 0 || fabs(res[j].flops - target) < fabs(res[best].flops - target)) best = j;
        if (best >= 0) used[best] = 1;
    }
    for (int j = 0; j < nc; ++j)
        if (used[j]) out[(*count)++] = cand[j];
    /* ascending FLOPs: confidence and margin thresholds rise with cost, entropy falls */
    if (kind == ERT_POLICY_ENTROPY)
        for (int a = 0, b = *count - 1; a < b; ++a, --b) {
            const float x = out[a];
            out[a] = out[b];
            out[b] = x;
        }
    scorer_free(&s);
    return ERT_OK;
}

ert_threshold_search_options ert_threshold_search_options_default(void) {
    ert_threshold_search_options o = {.kind = ERT_POLICY_CONFIDENCE, .budget_flops = NAN, .budget_ms = NAN,
                                      .batch = 256, .candidates = 64, .max_rounds = 20};
    return o;
}

static void fill_result(const scorer *s, const outcome *o, ert_sim_result *r) {
    const ert_exit_table *t = s->t;
    memset(r, 0, sizeof *r);
    r->samples = t->n;
    double exit_sum = 0.0;
    for (int64_t i = 0; i < t->n; ++i) {
        const int e = s->exits[i];
        r->exit_histogram[e]++;
        exit_sum += e;
        if (t->labels && s->stats[(size_t)i * t->num_exits + e].top1 == t->labels[i]) r->exit_correct[e]++;
    }
    r->accuracy = t->labels ? (double)o->correct / (double)t->n : -1.0;
    r->mean_exit = exit_sum / (double)t->n;
    r->flops_fraction = o->flops;
}

ert_status ert_threshold_search(const ert_exit_table *t, const ert_threshold_search_options *opt,
                                ert_threshold_search_result *out) {
    if (!t || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_threshold_search: NULL argument");
    memset(out, 0, sizeof *out);
    const ert_threshold_search_options o = opt ? *opt : ert_threshold_search_options_default();
    if (!t->labels) return ert_error(ERT_ERR_INVALID_ARGUMENT, "threshold search on '%s': needs labels", t->name);
    if (!isnan(o.budget_ms) && !o.latency)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "threshold search: a latency budget needs a latency model");
    if (isnan(o.budget_flops) && isnan(o.budget_ms))
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "threshold search: give a FLOPs or a latency budget");
    scorer s;
    ert_status st = scorer_init(&s, t, o.kind, o.uncalibrated);
    if (st) return st;
    s.budget_flops = o.budget_flops;
    s.budget_ms = o.budget_ms;
    s.lm = o.latency;
    s.batch = o.batch > 0 ? o.batch : 256;
    const int E = t->num_exits, K = o.candidates > 1 ? o.candidates : 64;
    float *cand = malloc(sizeof *cand * (size_t)(2 * K + 2));
    float thr[ERT_MAX_EXITS];
    if (!cand) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "threshold search: out of memory");
        goto done;
    }

    /* 1. The best shared threshold: the baseline, and the starting point. */
    outcome best = {0};
    int have = 0;
    float shared = 0.0f;
    const int nc = candidates(&s, -1, 2 * K, cand);
    for (int j = 0; j < nc; ++j) {
        set_shared(&s, cand[j]);
        const outcome r = evaluate(&s);
        out->evaluations++;
        if (feasible(&s, &r) && (!have || better(&s, &r, &best))) {
            best = r;
            shared = cand[j];
            have = 1;
        }
    }
    if (!have) {
        /* The candidates include 0 and 1, so the cheapest vector (0, or 1 for entropy:
         * every finite score leaves at exit 0) was tried: nothing is within the budget. */
        set_shared(&s, o.kind == ERT_POLICY_ENTROPY ? 1.0f : 0.0f);
        const outcome cheapest = evaluate(&s);
        st = ert_error(ERT_ERR_INVALID_ARGUMENT,
                       "threshold search: the budget is below the cheapest operating point (FLOPs fraction %.4f, "
                       "predicted %.4f ms per batch)",
                       cheapest.flops, cheapest.ms);
        goto done;
    }
    spec_of(&s, &shared, 1, o.uncalibrated, out->shared_policy, sizeof out->shared_policy);
    set_shared(&s, shared);
    evaluate(&s);
    fill_result(&s, &best, &out->shared);
    out->shared_predicted_ms = best.ms;
    for (int e = 0; e < E; ++e) thr[e] = shared;

    /* 2. Coordinate ascent: each exit's threshold in turn, the others fixed. Only
     * samples that reach exit e can change; for them the exit is e if it fires, else
     * wherever they would have gone on (their exit without e). */
    int32_t *next = malloc(sizeof *next * (size_t)t->n);
    int32_t *base = malloc(sizeof *base * (size_t)t->n);
    if (!next || !base) {
        free(next);
        free(base);
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "threshold search: out of memory");
        goto done;
    }
    for (int round = 0; round < (o.max_rounds > 0 ? o.max_rounds : 20); ++round) {
        int changed = 0;
        out->rounds = round + 1;
        for (int e = 0; e < E - 1; ++e) {
            for (int x = 0; x < E; ++x) s.prm.threshold[x] = thr[x];
            for (int64_t i = 0; i < t->n; ++i) {
                int f = 0;
                while (f < e && !fires(&s, i, f)) ++f;
                if (f < e) {
                    base[i] = f; /* left before e: unaffected */
                    next[i] = -1;
                    continue;
                }
                int g = e + 1;
                while (g < E - 1 && !fires(&s, i, g)) ++g;
                next[i] = g;
            }
            const int ncand = candidates(&s, e, K, cand);
            for (int j = 0; j < ncand; ++j) {
                if (cand[j] == thr[e]) continue;
                s.prm.threshold[e] = cand[j];
                for (int64_t i = 0; i < t->n; ++i)
                    s.exits[i] = next[i] < 0 ? base[i] : fires(&s, i, e) ? e : next[i];
                const outcome r = score_exits(&s);
                out->evaluations++;
                if (feasible(&s, &r) && better(&s, &r, &best)) {
                    best = r;
                    thr[e] = cand[j];
                    changed = 1;
                }
            }
        }
        if (!changed) break;
    }
    free(next);
    free(base);

    /* 3. The answer, through the parser and the simulation, as `eval` will run it. */
    out->num_thresholds = E - 1;
    memcpy(out->threshold, thr, sizeof(float) * (size_t)(E - 1));
    spec_of(&s, thr, E - 1, o.uncalibrated, out->policy, sizeof out->policy);
    ert_policy *p = NULL;
    if ((st = ert_policy_parse(out->policy, &p))) goto done;
    st = ert_exit_table_simulate(t, p, &out->search, NULL, s.exits);
    ert_policy_free(p);
    if (st) goto done;
    out->predicted_ms = s.lm ? ert_latency_model_predict(s.lm, t->model, s.exits, t->n, s.batch) : NAN;
    if ((int64_t)llround(out->search.accuracy * (double)t->n) != best.correct)
        st = ert_error(ERT_ERR_NUMERIC, "threshold search: the parsed policy '%s' simulates to %lld correct, the search "
                                        "found %lld",
                       out->policy, (long long)llround(out->search.accuracy * (double)t->n), (long long)best.correct);
done:
    free(cand);
    scorer_free(&s);
    return st;
}
