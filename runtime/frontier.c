/* Pareto frontiers of accuracy against latency, and answers to budget queries. Exact
 * comparisons only: a point is dominated when another has accuracy >= and latency <=
 * with one strict, so ties and duplicates stay on the frontier together. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "internal.h"

static const char *const metric_names[] = {"batch-mean",  "batch-p50",  "batch-p95",  "batch-p99",
                                           "sample-mean", "sample-p50", "sample-p95", "sample-p99"};
#define NUM_METRICS ((int)(sizeof metric_names / sizeof *metric_names))

ert_status ert_latency_metric_parse(const char *text, ert_latency_metric *out) {
    if (!text || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_latency_metric_parse: NULL argument");
    for (int i = 0; i < NUM_METRICS; ++i)
        if (strcmp(text, metric_names[i]) == 0) {
            *out = (ert_latency_metric)i;
            return ERT_OK;
        }
    return ert_error(ERT_ERR_INVALID_ARGUMENT,
                     "latency metric '%s': expected batch-mean, batch-p50, batch-p95, batch-p99, sample-mean, "
                     "sample-p50, sample-p95 or sample-p99",
                     text);
}

const char *ert_latency_metric_name(ert_latency_metric m) {
    return (int)m >= 0 && (int)m < NUM_METRICS ? metric_names[m] : "unknown";
}

double ert_sweep_row_latency(const ert_sweep_row *r, ert_latency_metric m) {
    if (!r) return NAN;
    switch (m) {
    case ERT_LATENCY_BATCH_MEAN: return r->batch_ms.mean;
    case ERT_LATENCY_BATCH_P50: return r->batch_ms.p50;
    case ERT_LATENCY_BATCH_P95: return r->batch_ms.p95;
    case ERT_LATENCY_BATCH_P99: return r->batch_ms.p99;
    case ERT_LATENCY_SAMPLE_MEAN: return r->sample_ms.mean;
    case ERT_LATENCY_SAMPLE_P50: return r->sample_ms.p50;
    case ERT_LATENCY_SAMPLE_P95: return r->sample_ms.p95;
    case ERT_LATENCY_SAMPLE_P99: return r->sample_ms.p99;
    }
    return NAN;
}

typedef struct pt {
    double acc, lat;
    int index;
} pt;

/* Latency ascending, then accuracy descending. */
static int cmp_pt(const void *a, const void *b) {
    const pt *x = a, *y = b;
    if (x->lat != y->lat) return x->lat < y->lat ? -1 : 1;
    if (x->acc != y->acc) return x->acc > y->acc ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

int ert_pareto_mark(const double *accuracy, const double *latency, const int *eligible, int n, int *on) {
    if (n < 0 || (n > 0 && (!accuracy || !latency || !on))) return -1;
    pt *p = malloc(sizeof *p * (size_t)(n > 0 ? n : 1));
    if (!p) return -1;
    int m = 0;
    for (int i = 0; i < n; ++i) {
        on[i] = 0;
        if ((eligible && !eligible[i]) || isnan(accuracy[i]) || isnan(latency[i])) continue;
        p[m++] = (pt){accuracy[i], latency[i], i};
    }
    qsort(p, (size_t)m, sizeof *p, cmp_pt);
    /* Walk groups of equal latency. In a group only the most accurate points can survive
     * (the others are beaten at the same latency); they survive when every faster point
     * is strictly less accurate. */
    int count = 0;
    double best_faster = -INFINITY;
    for (int g = 0; g < m;) {
        int end = g;
        while (end < m && p[end].lat == p[g].lat) ++end;
        const double top = p[g].acc; /* sorted: the group's first is its most accurate */
        for (int j = g; j < end; ++j)
            if (p[j].acc == top && top > best_faster) {
                on[p[j].index] = 1;
                ++count;
            }
        if (top > best_faster) best_faster = top;
        g = end;
    }
    free(p);
    return count;
}

static int row_eligible(const ert_sweep_row *r) { return !r->reference && r->accuracy >= 0.0; }

int ert_sweep_frontier(const ert_sweep_row *rows, int n, ert_latency_metric metric, int *on) {
    if (n < 0 || (n > 0 && (!rows || !on))) return -1;
    double *acc = malloc(sizeof *acc * (size_t)(n > 0 ? n : 1));
    double *lat = malloc(sizeof *lat * (size_t)(n > 0 ? n : 1));
    int *ok = malloc(sizeof *ok * (size_t)(n > 0 ? n : 1));
    int count = -1;
    if (acc && lat && ok) {
        for (int i = 0; i < n; ++i) {
            acc[i] = rows[i].accuracy;
            lat[i] = ert_sweep_row_latency(&rows[i], metric);
            ok[i] = row_eligible(&rows[i]);
        }
        count = ert_pareto_mark(acc, lat, ok, n, on);
    }
    free(acc);
    free(lat);
    free(ok);
    return count;
}

ert_status ert_sweep_mark_frontiers(ert_sweep_row *rows, int n) {
    if (n <= 0) return ERT_OK;
    if (!rows) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_sweep_mark_frontiers: rows is NULL");
    int *mean = malloc(sizeof *mean * (size_t)n), *p99 = malloc(sizeof *p99 * (size_t)n);
    const int ok = mean && p99 && ert_sweep_frontier(rows, n, ERT_LATENCY_BATCH_MEAN, mean) >= 0 &&
                   ert_sweep_frontier(rows, n, ERT_LATENCY_BATCH_P99, p99) >= 0;
    for (int i = 0; ok && i < n; ++i) {
        rows[i].frontier_mean = mean[i];
        rows[i].frontier_p99 = p99[i];
    }
    free(mean);
    free(p99);
    return ok ? ERT_OK : ert_error(ERT_ERR_OUT_OF_MEMORY, "Pareto frontier of %d rows: out of memory", n);
}

ert_select_query ert_select_query_default(void) {
    ert_select_query q = {.metric = ERT_LATENCY_BATCH_MEAN, .latency_budget_ms = NAN, .min_accuracy = NAN,
                          .calibrated = -2};
    return q;
}

int ert_select(const ert_sweep_row *rows, int n, const ert_select_query *q) {
    if (!rows || !q || n <= 0) return -1;
    const int by_budget = !isnan(q->latency_budget_ms);
    int best = -1;
    double best_acc = 0.0, best_lat = 0.0;
    for (int i = 0; i < n; ++i) {
        const ert_sweep_row *r = &rows[i];
        const double acc = r->accuracy, lat = ert_sweep_row_latency(r, q->metric);
        if (!row_eligible(r) || isnan(acc) || isnan(lat)) continue;
        if (q->calibrated != -2 && r->calibrated != -1 && r->calibrated != q->calibrated) continue;
        if (by_budget && !(lat <= q->latency_budget_ms)) continue;
        if (!isnan(q->min_accuracy) && !(acc >= q->min_accuracy)) continue;
        int better;
        if (best < 0) better = 1;
        else if (by_budget) better = acc > best_acc || (acc == best_acc && lat < best_lat);
        else better = lat < best_lat || (lat == best_lat && acc > best_acc);
        if (better) {
            best = i;
            best_acc = acc;
            best_lat = lat;
        }
    }
    return best;
}
