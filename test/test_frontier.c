/* Pareto frontiers and budget queries on hand-built rows: ties, duplicates, NaN,
 * references, both latency metrics; select's answer is optimal and on the frontier;
 * the latency model recovers a known linear cost. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exitrt/exitrt.h"
#include "testutil.h"

/* The definition itself, O(n^2): the reference every fast path is checked against. */
static void brute_frontier(const double *acc, const double *lat, const int *ok, int n, int *on) {
    for (int i = 0; i < n; ++i) {
        on[i] = (!ok || ok[i]) && !isnan(acc[i]) && !isnan(lat[i]);
        for (int j = 0; j < n && on[i]; ++j) {
            if (j == i || (ok && !ok[j]) || isnan(acc[j]) || isnan(lat[j])) continue;
            if (acc[j] >= acc[i] && lat[j] <= lat[i] && (acc[j] > acc[i] || lat[j] < lat[i])) on[i] = 0;
        }
    }
}

START_TEST(frontier_by_hand) {
    /*            0     1     2     3     4     5     6     7     8    9 */
    double acc[] = {0.80, 0.90, 0.90, 0.85, 0.90, 0.80, 0.79, 0.95, NAN, 0.99};
    double lat[] = {5.0, 10.0, 10.0, 12.0, 11.0, 5.0, 5.0, 20.0, 1.0, 1.0};
    int ok[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 0};
    int on[10];
    /* 0 and 5 are duplicates (both on), 1 and 2 too; 3 is beaten by 1, 4 by 1 at the same
     * accuracy, 6 by 0 at the same latency; 8 has no accuracy; 9 is not eligible and must
     * not hide anything even though it would dominate everything. */
    ck_assert_int_eq(ert_pareto_mark(acc, lat, ok, 10, on), 5);
    const int want[] = {1, 1, 1, 0, 0, 1, 0, 1, 0, 0};
    for (int i = 0; i < 10; ++i) ck_assert_msg(on[i] == want[i], "point %d: on=%d want %d", i, on[i], want[i]);
    /* Without the eligibility list point 9 dominates all but itself. */
    ck_assert_int_eq(ert_pareto_mark(acc, lat, NULL, 10, on), 1);
    ck_assert_int_eq(on[9], 1);
    /* Empty and single inputs. */
    ck_assert_int_eq(ert_pareto_mark(acc, lat, NULL, 0, on), 0);
    ck_assert_int_eq(ert_pareto_mark(acc, lat, NULL, 1, on), 1);
    ck_assert_int_eq(ert_pareto_mark(NULL, lat, NULL, 3, on), -1);
}
END_TEST

START_TEST(frontier_matches_definition) {
    srand(11);
    for (int trial = 0; trial < 400; ++trial) {
        const int n = 1 + rand() % 40;
        double acc[40], lat[40];
        int ok[40], on[40], ref[40];
        for (int i = 0; i < n; ++i) {
            /* a coarse grid, so ties and duplicates are common */
            acc[i] = (rand() % 6) / 10.0;
            lat[i] = (rand() % 7) * 1.5;
            ok[i] = rand() % 8 != 0;
            if (rand() % 25 == 0) lat[i] = NAN;
        }
        brute_frontier(acc, lat, ok, n, ref);
        int count = 0;
        for (int i = 0; i < n; ++i) count += ref[i];
        ck_assert_int_eq(ert_pareto_mark(acc, lat, ok, n, on), count);
        for (int i = 0; i < n; ++i) ck_assert_int_eq(on[i], ref[i]);
    }
}
END_TEST

static ert_sweep_row mkrow(const char *policy, double acc, double mean, double p99, int reference) {
    ert_sweep_row r;
    memset(&r, 0, sizeof r);
    snprintf(r.policy, sizeof r.policy, "%s", policy);
    snprintf(r.family, sizeof r.family, "test");
    r.accuracy = acc;
    r.batch_ms.mean = mean;
    r.batch_ms.p50 = mean;
    r.batch_ms.p95 = p99;
    r.batch_ms.p99 = p99;
    r.sample_ms.mean = mean / 2;
    r.sample_ms.p99 = p99 / 2;
    r.reference = reference;
    r.calibrated = -1;
    r.param = NAN;
    return r;
}

START_TEST(frontier_on_rows_two_metrics) {
    ert_sweep_row rows[] = {
        mkrow("a", 0.80, 5.0, 9.0, 0),  /* fastest on the mean */
        mkrow("b", 0.80, 6.0, 7.0, 0),  /* same accuracy, slower mean, faster p99 */
        mkrow("c", 0.90, 10.0, 30.0, 0), /* accurate but a long tail */
        mkrow("d", 0.88, 12.0, 14.0, 0), /* on the p99 frontier only */
        mkrow("oracle", 0.99, 1.0, 1.0, 1),
        mkrow("nolabels", -1.0, 0.5, 0.5, 0),
    };
    const int n = 6;
    int on[6];
    ck_assert_int_eq(ert_sweep_frontier(rows, n, ERT_LATENCY_BATCH_MEAN, on), 2);
    ck_assert(on[0] && !on[1] && on[2] && !on[3] && !on[4] && !on[5]);
    ck_assert_int_eq(ert_sweep_frontier(rows, n, ERT_LATENCY_BATCH_P99, on), 3);
    ck_assert(!on[0] && on[1] && on[2] && on[3] && !on[4] && !on[5]);
    ck_assert_int_eq(ert_sweep_mark_frontiers(rows, n), ERT_OK);
    ck_assert(rows[0].frontier_mean && !rows[0].frontier_p99);
    ck_assert(!rows[3].frontier_mean && rows[3].frontier_p99);
    ck_assert(!rows[4].frontier_mean && !rows[4].frontier_p99);
    ck_assert_double_eq(ert_sweep_row_latency(&rows[2], ERT_LATENCY_SAMPLE_P99), 15.0);
}
END_TEST

/* The edges: no rows, one row, no eligible row (only references: no frontier, and that is
 * not an error), bad arguments. */
START_TEST(frontier_edges) {
    ert_sweep_row rows[] = {mkrow("a", 0.80, 5.0, 9.0, 0), mkrow("oracle", 0.99, 1.0, 1.0, 1)};
    int on[2] = {7, 7};
    ck_assert_int_eq(ert_sweep_frontier(rows, 0, ERT_LATENCY_BATCH_MEAN, on), 0);
    ck_assert_int_eq(ert_sweep_frontier(NULL, 0, ERT_LATENCY_BATCH_MEAN, NULL), 0);
    ck_assert_int_eq(ert_sweep_frontier(NULL, 1, ERT_LATENCY_BATCH_MEAN, on), -1);
    ck_assert_int_eq(ert_sweep_frontier(rows, 1, ERT_LATENCY_BATCH_MEAN, NULL), -1);
    ck_assert_int_eq(ert_sweep_frontier(rows, -1, ERT_LATENCY_BATCH_MEAN, on), -1);
    ck_assert_int_eq(ert_sweep_mark_frontiers(rows, 1), ERT_OK);
    ck_assert(rows[0].frontier_mean && rows[0].frontier_p99);
    ck_assert_int_eq(ert_sweep_mark_frontiers(&rows[1], 1), ERT_OK);
    ck_assert(!rows[1].frontier_mean && !rows[1].frontier_p99);
    ck_assert_int_eq(ert_sweep_mark_frontiers(NULL, 0), ERT_OK);
    ck_assert_int_eq(ert_sweep_mark_frontiers(NULL, 2), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("rows is NULL"));
}
END_TEST

/* Percentiles as numpy's default (linear between order statistics), by hand: sorted
 * 1..5, p95 sits at position 0.95 * 4 = 3.8, between 4 and 5. NaN sorts last, so it
 * reaches only the top percentiles; q is clamped to [0, 100]. */
START_TEST(percentiles_by_hand) {
    const double v[] = {5, 1, 4, 2, 3};
    ck_assert_double_eq(ert_percentile(v, 5, 0), 1.0);
    ck_assert_double_eq(ert_percentile(v, 5, 50), 3.0);
    ck_assert_double_eq_tol(ert_percentile(v, 5, 95), 4.8, 1e-12);
    ck_assert_double_eq_tol(ert_percentile(v, 5, 99), 4.96, 1e-12);
    ck_assert_double_eq(ert_percentile(v, 5, 100), 5.0);
    ck_assert_double_eq(ert_percentile(v, 5, -5), 1.0);
    ck_assert_double_eq(ert_percentile(v, 5, 150), 5.0);
    ck_assert(isnan(ert_percentile(v, 0, 50)) && isnan(ert_percentile(NULL, 5, 50)));
    ck_assert_double_eq(v[0], 5.0); /* not modified */
    const double w[] = {NAN, 2, 1, NAN, 3}; /* sorted: 1 2 3 NaN NaN, at positions 0..4 */
    ck_assert_double_eq(ert_percentile(w, 5, 0), 1.0);
    ck_assert_double_eq(ert_percentile(w, 5, 25), 2.0);
    ck_assert_double_eq(ert_percentile(w, 5, 50), 3.0); /* next to a NaN, but an order statistic */
    ck_assert(isnan(ert_percentile(w, 5, 60)) && isnan(ert_percentile(w, 5, 100)));
    ck_assert(isnan(ert_percentile(v, 5, NAN)));
    const double inf[] = {1, INFINITY, INFINITY};
    ck_assert(ert_percentile(inf, 3, 90) == INFINITY); /* between two infinities: not inf - inf = NaN */
    ck_assert(ert_percentile(inf, 3, 25) == INFINITY); /* between 1 and inf */
    const double minf[] = {-INFINITY, 1, INFINITY};
    ck_assert(ert_percentile(minf, 3, 25) == -INFINITY); /* between -inf and 1 */
    ck_assert(isnan(ert_percentile((const double[]){-INFINITY, INFINITY}, 2, 50))); /* undefined */
    const ert_latency l = ert_latency_summary(v, 5);
    ck_assert(l.mean == 3.0 && l.p50 == 3.0 && l.max == 5.0);
    ck_assert_double_eq_tol(l.p95, 4.8, 1e-12);
    ck_assert_double_eq_tol(l.p99, 4.96, 1e-12);
    const ert_latency ln = ert_latency_summary(w, 5);
    ck_assert(isnan(ln.max) && isnan(ln.p99) && ln.p50 == 3.0); /* NaN sorts last: it is the max */
}
END_TEST

START_TEST(select_by_hand) {
    ert_sweep_row rows[] = {
        mkrow("fast", 0.80, 5.0, 9.0, 0),     mkrow("mid", 0.90, 10.0, 20.0, 0),
        mkrow("mid-dup", 0.90, 10.0, 20.0, 0), mkrow("mid-slow", 0.90, 11.0, 12.0, 0),
        mkrow("best", 0.95, 20.0, 25.0, 0),   mkrow("oracle", 0.99, 1.0, 1.0, 1),
        mkrow("worse-same-lat", 0.85, 10.0, 10.0, 0),
    };
    const int n = 7;
    ert_select_query q = ert_select_query_default();
    ck_assert_int_eq(q.metric, ERT_LATENCY_BATCH_MEAN);
    q.latency_budget_ms = 10.0; /* 0.90 at 10 ms, the duplicate loses to the earlier row */
    ck_assert_int_eq(ert_select(rows, n, &q), 1);
    q.latency_budget_ms = 10.5;
    ck_assert_int_eq(ert_select(rows, n, &q), 1);
    q.latency_budget_ms = 100.0; /* the oracle is never chosen */
    ck_assert_int_eq(ert_select(rows, n, &q), 4);
    q.latency_budget_ms = 4.99;
    ck_assert_int_eq(ert_select(rows, n, &q), -1);
    q.latency_budget_ms = 5.0; /* <= is inclusive */
    ck_assert_int_eq(ert_select(rows, n, &q), 0);
    /* On the p99: mid-slow (12 ms) is the fastest way to 0.90. */
    q.metric = ERT_LATENCY_BATCH_P99;
    q.latency_budget_ms = 19.0;
    ck_assert_int_eq(ert_select(rows, n, &q), 3);
    /* Minimum accuracy: the fastest reaching it; at equal latency the more accurate. */
    q = ert_select_query_default();
    q.min_accuracy = 0.85;
    ck_assert_int_eq(ert_select(rows, n, &q), 1);
    q.min_accuracy = 0.93;
    ck_assert_int_eq(ert_select(rows, n, &q), 4);
    q.min_accuracy = 0.999;
    ck_assert_int_eq(ert_select(rows, n, &q), -1);
    /* Both constraints. */
    q.min_accuracy = 0.85;
    q.latency_budget_ms = 30.0;
    ck_assert_int_eq(ert_select(rows, n, &q), 4);
    /* Calibration filter: rows with calibrated 0 are left out when asking for 1. */
    rows[4].calibrated = 0;
    q = ert_select_query_default();
    q.latency_budget_ms = 100.0;
    q.calibrated = 1;
    ck_assert_int_eq(ert_select(rows, n, &q), 1);
    q.calibrated = 0;
    ck_assert_int_eq(ert_select(rows, n, &q), 4);
    ck_assert_int_eq(ert_select(NULL, n, &q), -1);
}
END_TEST

/* Whatever the rows and the budget, the answer is optimal and on the frontier. */
START_TEST(select_is_on_the_frontier) {
    srand(7);
    const ert_latency_metric metrics[] = {ERT_LATENCY_BATCH_MEAN, ERT_LATENCY_BATCH_P99, ERT_LATENCY_SAMPLE_P99};
    for (int trial = 0; trial < 500; ++trial) {
        ert_sweep_row rows[30];
        const int n = 1 + rand() % 30;
        for (int i = 0; i < n; ++i) {
            rows[i] = mkrow("p", (rand() % 8) / 10.0, 1.0 + rand() % 6, 2.0 + rand() % 9, rand() % 10 == 0);
            rows[i].calibrated = rand() % 3 - 1;
        }
        ert_select_query q = ert_select_query_default();
        q.metric = metrics[rand() % 3];
        if (rand() % 2) q.latency_budget_ms = 1.0 + rand() % 12;
        if (isnan(q.latency_budget_ms) || rand() % 3 == 0) q.min_accuracy = (rand() % 8) / 10.0;
        if (rand() % 3 == 0) q.calibrated = rand() % 2;
        const int best = ert_select(rows, n, &q);
        /* the rows the query keeps, and the brute-force optimum among those that fit */
        ert_sweep_row kept[30];
        int nk = 0, at = -1, fits = 0;
        double top_acc = -1, top_lat = INFINITY;
        for (int i = 0; i < n; ++i) {
            if (q.calibrated != -2 && rows[i].calibrated != -1 && rows[i].calibrated != q.calibrated) continue;
            if (i == best) at = nk;
            kept[nk++] = rows[i];
            const double l = ert_sweep_row_latency(&rows[i], q.metric), a = rows[i].accuracy;
            if (rows[i].reference || (!isnan(q.latency_budget_ms) && l > q.latency_budget_ms) ||
                (!isnan(q.min_accuracy) && a < q.min_accuracy))
                continue;
            fits = 1;
            if (!isnan(q.latency_budget_ms)) {
                if (a > top_acc || (a == top_acc && l < top_lat)) top_acc = a, top_lat = l;
            } else if (l < top_lat || (l == top_lat && a > top_acc)) {
                top_acc = a, top_lat = l;
            }
        }
        if (!fits) {
            ck_assert_int_eq(best, -1);
            continue;
        }
        ck_assert_int_ge(best, 0);
        ck_assert_double_eq(rows[best].accuracy, top_acc);
        ck_assert_double_eq(ert_sweep_row_latency(&rows[best], q.metric), top_lat);
        int on[30];
        ert_sweep_frontier(kept, nk, q.metric, on);
        ck_assert_msg(at >= 0 && on[at], "trial %d: the answer (row %d) is not on the frontier", trial, best);
    }
}
END_TEST

START_TEST(metric_names) {
    const char *names[] = {"batch-mean",  "batch-p50",  "batch-p95",  "batch-p99",
                           "sample-mean", "sample-p50", "sample-p95", "sample-p99"};
    for (int i = 0; i < 8; ++i) {
        ert_latency_metric m;
        ck_assert_int_eq(ert_latency_metric_parse(names[i], &m), ERT_OK);
        ck_assert_int_eq((int)m, i);
        ck_assert_str_eq(ert_latency_metric_name(m), names[i]);
    }
    ert_latency_metric m;
    ck_assert_int_eq(ert_latency_metric_parse("batch-p90", &m), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("batch-p90"));
    ck_assert_int_eq(ert_latency_metric_parse(NULL, &m), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("NULL argument"));
    ck_assert_int_eq(ert_latency_metric_parse("batch-mean", NULL), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("NULL argument"));
    ck_assert_str_eq(ert_latency_metric_name((ert_latency_metric)8), "unknown");
}
END_TEST

START_TEST(latency_model_recovers_a_line) {
    /* stage k costs (k + 1) * 0.1 ms + 0.01 ms per row; 0.5 ms outside the stages */
    ert_latency_model lm;
    ert_latency_model_init(&lm);
    ck_assert_int_eq(ert_latency_model_finish(&lm), ERT_ERR_INVALID_ARGUMENT);
    for (int b = 0; b < 50; ++b) {
        ert_profile p;
        memset(&p, 0, sizeof p);
        p.num_stages = 3;
        double inside = 0.0;
        for (int k = 0; k < 3; ++k) {
            p.stage[k].rows = k == 0 ? 256 : (b * 37 + k * 11) % 257;
            if (p.stage[k].rows == 0) continue;
            p.stage[k].compute_ms = (k + 1) * 0.1 + 0.01 * p.stage[k].rows - 0.002;
            p.stage[k].decide_ms = 0.002;
            inside += p.stage[k].compute_ms + p.stage[k].decide_ms;
        }
        p.batch_ms = inside + 0.5;
        ert_latency_model_add(&lm, &p);
    }
    ck_assert_int_eq(ert_latency_model_finish(&lm), ERT_OK);
    ck_assert_double_eq_tol(lm.overhead_ms, 0.5, 1e-9);
    /* stage 0 always ran 256 rows: fixed and per-row cost cannot be told apart, but the
     * prediction at 256 rows is exact */
    ck_assert_double_eq_tol(lm.fixed_ms[0] + 256 * lm.per_row_ms[0], 0.1 + 2.56, 1e-9);
    for (int k = 1; k < 3; ++k) {
        ck_assert_double_eq_tol(lm.fixed_ms[k], (k + 1) * 0.1, 1e-9);
        ck_assert_double_eq_tol(lm.per_row_ms[k], 0.01, 1e-10);
    }
    const int rows[3] = {256, 100, 0};
    ck_assert_double_eq_tol(ert_latency_model_batch_ms(&lm, rows), 0.5 + 2.66 + 0.2 + 1.0, 1e-9);

    /* A fitted line with a negative intercept (10 rows 1 ms, 20 rows 3 ms: 0.2 ms a row
     * from -1 ms) is refitted through the origin: 0.14 ms a row, least squares. */
    ert_latency_model_init(&lm);
    for (int b = 0; b < 2; ++b) {
        ert_profile p;
        memset(&p, 0, sizeof p);
        p.num_stages = 1;
        p.stage[0].rows = 10 * (b + 1);
        p.stage[0].compute_ms = 1.0 + 2.0 * b;
        p.batch_ms = p.stage[0].compute_ms;
        ert_latency_model_add(&lm, &p);
    }
    ck_assert_int_eq(ert_latency_model_finish(&lm), ERT_OK);
    ck_assert_double_eq_tol(lm.fixed_ms[0], 0.0, 1e-12);
    ck_assert_double_eq_tol(lm.per_row_ms[0], 0.14, 1e-12);
}
END_TEST

int main(void) {
    Suite *s = suite_create("frontier");
    TCase *tc = tcase_create("frontier");
    tcase_add_test(tc, frontier_by_hand);
    tcase_add_test(tc, frontier_matches_definition);
    tcase_add_test(tc, frontier_on_rows_two_metrics);
    tcase_add_test(tc, frontier_edges);
    tcase_add_test(tc, select_by_hand);
    tcase_add_test(tc, percentiles_by_hand);
    tcase_add_test(tc, select_is_on_the_frontier);
    tcase_add_test(tc, metric_names);
    tcase_add_test(tc, latency_model_recovers_a_line);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
