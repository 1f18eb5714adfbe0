/* Running a dataset through a session: accuracy, exits, executed FLOPs, batch latency. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "internal.h"

/* Ascending, NaN last: a total order, as qsort needs. */
static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    if (isnan(x) || isnan(y)) return isnan(x) - isnan(y);
    return (x > y) - (x < y);
}

/* Percentile q of n sorted values. */
static double sorted_percentile(const double *v, int n, double q) {
    if (isnan(q)) return NAN;
    const double pos = (q < 0 ? 0 : q > 100 ? 100 : q) / 100.0 * (n - 1);
    const int lo = (int)floor(pos);
    if (pos == lo) return v[lo]; /* an order statistic itself (even next to a NaN) */
    const double a = v[lo], b = v[lo + 1]; /* pos is not whole: lo + 1 < n */
    if (a == b) return a;               /* between equal ones (two infinities included) */
    if (isinf(a)) return isinf(b) ? NAN : a; /* -inf and a finite value: -inf; -inf and inf: undefined */
    if (isinf(b)) return b;
    return a + (b - a) * (pos - lo);
}

/* A sorted copy of n values, or NULL without memory. */
static double *sorted_copy(const double *values, int n) {
    double *v = malloc(sizeof *v * (size_t)n);
    if (!v) return NULL;
    memcpy(v, values, sizeof *v * (size_t)n);
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v;
}

double ert_percentile(const double *values, int n, double q) {
    if (!values || n <= 0) return NAN;
    double *v = sorted_copy(values, n);
    if (!v) return NAN;
    const double r = sorted_percentile(v, n, q);
    free(v);
    return r;
}

ert_latency ert_latency_summary(const double *values, int n) {
    ert_latency l = {NAN, NAN, NAN, NAN, NAN};
    if (!values || n <= 0) return l;
    double sum = 0.0, mx = values[0];
    for (int i = 0; i < n; ++i) {
        sum += values[i];
        if (values[i] > mx || isnan(values[i])) mx = values[i]; /* NaN sorts last: it is the max */
    }
    l.mean = sum / n;
    l.max = mx;
    double *v = sorted_copy(values, n);
    if (v) {
        l.p50 = sorted_percentile(v, n, 50);
        l.p95 = sorted_percentile(v, n, 95);
        l.p99 = sorted_percentile(v, n, 99);
    }
    free(v);
    return l;
}

void ert_eval_result_free(ert_eval_result *r) {
    if (!r) return;
    free(r->batch_ms);
    free(r->pred);
    free(r->exit_index);
    free(r->confidence);
    free(r);
}

static void add_profile(ert_profile *sum, const ert_profile *p) {
    sum->num_stages = p->num_stages;
    for (int k = 0; k < p->num_stages; ++k) {
        sum->stage[k].rows += p->stage[k].rows;
        sum->stage[k].padded_rows += p->stage[k].padded_rows;
        sum->stage[k].compute_ms += p->stage[k].compute_ms;
        sum->stage[k].decide_ms += p->stage[k].decide_ms;
        sum->stage[k].compact_ms += p->stage[k].compact_ms;
        sum->stage[k].sync_ms += p->stage[k].sync_ms;
        sum->stage[k].flops += p->stage[k].flops;
        sum->stage[k].bytes += p->stage[k].bytes;
    }
    sum->batch_ms += p->batch_ms;
    sum->routing_ms += p->routing_ms;
    sum->sync_ms += p->sync_ms;
    sum->host_syncs += p->host_syncs;
    sum->graph = p->graph;
    ert_profile_padding_waste(sum);
}

ert_status ert_dataset_check(const ert_session *s, const ert_dataset *data, int batch, int need_labels) {
    const ert_model *m = ert_session_model(s);
    const int max_batch = ert_session_get_options(s).max_batch;
    if (!data) return ert_error(ERT_ERR_INVALID_ARGUMENT, "dataset is NULL");
    if (batch < 1 || batch > max_batch)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "batch %d: the session takes 1..%d (max_batch)", batch, max_batch);
    if (data->sample_size != m->input_size)
        return ert_error(ERT_ERR_SHAPE, "dataset '%s': %d values per sample, model '%s' expects %d", data->name,
                         data->sample_size, m->name, m->input_size);
    if (data->n < 1) return ert_error(ERT_ERR_INVALID_ARGUMENT, "dataset '%s' is empty", data->name);
    if (need_labels && !data->labels)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "dataset '%s' has no labels, which this needs", data->name);
    for (int64_t i = 0; data->labels && i < data->n; ++i)
        if (data->labels[i] < 0 || data->labels[i] >= m->num_classes)
            return ert_error(ERT_ERR_SHAPE, "dataset '%s': label %d of sample %lld is not a class of model '%s' (0..%d)",
                             data->name, data->labels[i], (long long)i, m->name, m->num_classes - 1);
    return ERT_OK;
}

ert_status ert_evaluate(ert_session *s, const ert_policy *policy, const ert_dataset *data, const ert_eval_options *opt,
                        ert_eval_result **out) {
    if (!s || !policy || !data || !out)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_evaluate: session, policy, data and out must not be NULL");
    *out = NULL;
    const ert_model *m = ert_session_model(s);
    const int max_batch = ert_session_get_options(s).max_batch;
    const int batch = opt && opt->batch > 0 ? opt->batch : max_batch;
    const int warmup = opt ? opt->warmup : 0;
    ert_status st = ert_dataset_check(s, data, batch, 0);
    if (st) return st;

    ert_eval_result *r = calloc(1, sizeof *r);
    const int64_t n = data->n;
    const int nb = (int)((n + batch - 1) / batch);
    if (!r || !(r->batch_ms = calloc((size_t)nb, sizeof *r->batch_ms)) ||
        !(r->pred = malloc(sizeof *r->pred * (size_t)n)) || !(r->exit_index = malloc(sizeof *r->exit_index * (size_t)n)) ||
        !(r->confidence = malloc(sizeof *r->confidence * (size_t)n))) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "ert_evaluate: out of memory");
        goto fail;
    }
    r->samples = n;
    r->num_exits = m->num_exits;
    r->num_batches = nb;

    for (int w = 0; w < warmup; ++w) {
        const int bn = (int)(n < batch ? n : batch);
        ert_batch b = {.input = data->x, .n = bn, .labels = data->labels};
        ert_outputs o = {.pred = r->pred, .exit_index = r->exit_index, .confidence = r->confidence};
        if ((st = ert_session_run(s, policy, &b, &o))) goto fail;
    }
    double total_ms = 0.0;
    for (int i = 0; i < nb; ++i) {
        const int64_t first = (int64_t)i * batch;
        const int bn = (int)(n - first < batch ? n - first : batch);
        ert_batch b = {.input = data->x + first * data->sample_size, .n = bn,
                       .labels = data->labels ? data->labels + first : NULL, .first_index = first};
        ert_outputs o = {.pred = r->pred + first, .exit_index = r->exit_index + first, .confidence = r->confidence + first};
        if ((st = ert_session_run(s, policy, &b, &o))) goto fail;
        ert_profile p;
        ert_session_profile(s, &p);
        r->batch_ms[i] = p.batch_ms;
        total_ms += p.batch_ms;
        add_profile(&r->profile_sum, &p);
        if (opt && opt->trace && (st = ert_trace_add(opt->trace, ert_session_device(s), &p))) goto fail;
    }

    int64_t correct = 0;
    double exit_sum = 0.0, flops = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const int e = r->exit_index[i];
        r->exit_histogram[e]++;
        exit_sum += e;
        if (data->labels && r->pred[i] == data->labels[i]) {
            correct++;
            r->exit_correct[e]++;
        }
    }
    for (int k = 0; k < r->profile_sum.num_stages; ++k) flops += r->profile_sum.stage[k].flops;
    r->accuracy = data->labels ? (double)correct / (double)n : -1.0;
    r->mean_exit = exit_sum / (double)n;
    r->flops_fraction = flops / ((double)n * ert_model_flops_full(m));
    r->throughput = total_ms > 0 ? (double)n / (total_ms * 1e-3) : 0.0;
    r->latency = ert_latency_summary(r->batch_ms, nb);
    *out = r;
    return ERT_OK;
fail:
    ert_eval_result_free(r);
    return st;
}
