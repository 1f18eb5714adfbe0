/* The load generator: batching rules on hand-computed arrivals, latency bookkeeping with
 * known service times (early and late answers), no coordinated omission, the arrival
 * processes, the peak search against a simulated server of known capacity, the SLO
 * controller's direction, the scenarios, a real CPU server, and the CLI. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "exitrt/exitrt.h"
#include "testutil.h"

/* ---------------------------------------------------------------- helpers */

/* A simulated server: `points` x `samples` exits (and correctness) tables. */
typedef struct sim_spec {
    int streams, max_batch, stages, points;
    double batch_ms, stage_ms[4], row_ms[4];
    int64_t samples, shifted;
    const int32_t *exits;
    const uint8_t *correct;
} sim_spec;

static ert_load_server *sim_new(const sim_spec *p) {
    ert_sim_server_options o = {.streams = p->streams, .max_batch = p->max_batch, .num_stages = p->stages,
                                .batch_ms = p->batch_ms, .num_points = p->points, .num_samples = p->samples,
                                .num_shifted = p->shifted, .exits = p->exits, .correct = p->correct};
    for (int k = 0; k < p->stages; ++k) o.stage_ms[k] = p->stage_ms[k], o.row_ms[k] = p->row_ms[k];
    ert_load_server *s = NULL;
    ck_assert_msg(ert_load_server_new_sim(&o, &s) == ERT_OK, "%s", ert_last_error());
    ck_assert_ptr_null(ert_load_server_session(s, 0)); /* a simulated server has no sessions */
    return s;
}

static ert_load_result *run(ert_load_server *s, const ert_load_options *o) {
    ert_load_result *r = NULL;
    ck_assert_msg(ert_loadtest_run(s, o, &r) == ERT_OK, "%s", ert_last_error());
    ck_assert_ptr_nonnull(r);
    return r;
}

#define NEAR(a, b) ck_assert_msg(fabs((a) - (b)) < 1e-9, "%s = %.12g, expected %.12g", #a, (double)(a), (double)(b))

/* One stage of fixed 10 ms per batch: every batch takes 10 ms whatever its size. */
static ert_load_server *fixed_10ms(int streams, int max_batch) {
    static const int32_t exits[1] = {0};
    sim_spec p = {.streams = streams, .max_batch = max_batch, .stages = 1, .points = 1, .batch_ms = 10.0,
                  .samples = 1, .exits = exits};
    return sim_new(&p);
}

/* ---------------------------------------------------------------- batching rules */

START_TEST(batch_leaves_when_full_or_when_the_oldest_waited) {
    /* max_batch 3, max_delay 5 ms, 10 ms per batch, one stream:
     *   t=2   requests 0,1,2 fill a batch                       -> starts at 2 (ends 12)
     *   3, 4  arrive while the stream is busy; at 12 the oldest
     *         has waited 9 >= 5                                  -> 3,4 start at 12 (ends 22)
     *   30    alone; its delay runs out at 35 (the next is at 40) -> starts at 35 (ends 45)
     *   40,41 wait for the stream; at 45 the oldest waited 5     -> start at 45 */
    static const double trace[] = {0, 1, 2, 3, 4, 30, 40, 41};
    static const double start1[] = {2, 2, 2, 12, 12, 35, 45, 45};
    static const int size1[] = {3, 3, 3, 2, 2, 1, 2, 2};
    /* Two streams: 3 and 4 go to the second stream when 3's delay runs out at 8. */
    static const double start2[] = {2, 2, 2, 8, 8, 35, 45, 45};
    for (int streams = 1; streams <= 2; ++streams) {
        ert_load_server *s = fixed_10ms(streams, 3);
        ert_load_options o = ert_load_options_default();
        o.arrival = ERT_ARRIVAL_TRACE;
        o.trace_ms = trace;
        o.trace_len = 8;
        o.max_batch = 3;
        o.max_delay_ms = 5;
        ert_load_result *r = run(s, &o);
        ck_assert_int_eq(r->requests, 8);
        for (int i = 0; i < 8; ++i) {
            const ert_load_request *q = &r->req[i];
            NEAR(q->arrival_ms, trace[i]);
            NEAR(q->start_ms, streams == 1 ? start1[i] : start2[i]);
            NEAR(q->done_ms, q->start_ms + 10.0);
            if (streams == 1) ck_assert_int_eq(q->batch_size, size1[i]);
        }
        ck_assert_int_eq(r->batches, 4);
        if (streams == 2) {
            ck_assert_int_eq(r->req[3].stream, 1);
            ck_assert_int_eq(r->req[0].stream, 0);
        }
        NEAR(r->queue.max, streams == 1 ? 9.0 : 5.0); /* request 3: arrived 3, started 12 (8) */
        NEAR(r->latency.max, streams == 1 ? 19.0 : 15.0);
        ert_load_result_free(r);
        ert_load_server_free(s);
    }
}
END_TEST

START_TEST(zero_delay_and_batch_of_one) {
    /* max_delay 0: a batch leaves as soon as a stream is free; max_batch 1: one each. */
    static const double trace[] = {0, 0, 0, 25};
    ert_load_server *s = fixed_10ms(1, 4);
    ert_load_options o = ert_load_options_default();
    o.arrival = ERT_ARRIVAL_TRACE;
    o.trace_ms = trace;
    o.trace_len = 4;
    o.max_batch = 1;
    o.max_delay_ms = 0;
    ert_load_result *r = run(s, &o);
    static const double start[] = {0, 10, 20, 30};
    for (int i = 0; i < 4; ++i) NEAR(r->req[i].start_ms, start[i]);
    ert_load_result_free(r);
    o.max_batch = 4;
    r = run(s, &o);
    for (int i = 0; i < 3; ++i) NEAR(r->req[i].start_ms, 0.0); /* all three at 0 */
    NEAR(r->req[3].start_ms, 25.0);
    ert_load_result_free(r);
    ert_load_server_free(s);
}
END_TEST

/* ---------------------------------------------------------------- latency bookkeeping */

START_TEST(early_answers_at_the_exit) {
    /* Three stages; samples 0..3 leave at exits 0, 1, 2, 0. One batch of all four at t=0:
     * rows 4, 2, 1; stage times 2 + 0.1*4 = 2.4, 3 + 0.2*2 = 3.4, 4 + 0.3*1 = 4.3 after a
     * batch cost of 1: exits ready at 3.4, 6.8 and 11.1 ms. */
    static const int32_t exits[4] = {0, 1, 2, 0};
    sim_spec p = {.streams = 1, .max_batch = 4, .stages = 3, .points = 1, .batch_ms = 1.0,
                  .stage_ms = {2, 3, 4}, .row_ms = {0.1, 0.2, 0.3}, .samples = 4, .exits = exits};
    ert_load_server *s = sim_new(&p);
    static const double trace[] = {0, 0, 0, 0};
    static const int64_t samples[] = {0, 1, 2, 3};
    ert_load_options o = ert_load_options_default();
    o.arrival = ERT_ARRIVAL_TRACE;
    o.trace_ms = trace;
    o.trace_samples = samples;
    o.trace_len = 4;
    o.max_batch = 4;
    o.slo_ms = 5.0;
    ert_load_result *r = run(s, &o);
    static const double lat[] = {3.4, 6.8, 11.1, 3.4};
    for (int i = 0; i < 4; ++i) {
        NEAR(r->req[i].done_ms - r->req[i].arrival_ms, lat[i]);
        NEAR(r->req[i].start_ms, 0.0);
        ck_assert_int_eq(r->req[i].exit, exits[i]);
    }
    NEAR(r->latency.p50, (3.4 + 6.8) / 2);
    NEAR(r->latency.mean, (3.4 + 6.8 + 11.1 + 3.4) / 4);
    NEAR(r->latency.max, 11.1);
    NEAR(r->queue.max, 0.0);
    NEAR(r->compute.p50, r->latency.p50);
    NEAR(r->slo_attainment, 0.5);
    NEAR(r->mean_exit, 0.75);
    ck_assert_int_eq(r->exit_histogram[0], 2);
    ck_assert_int_eq(r->exit_histogram[1], 1);
    ck_assert_int_eq(r->exit_histogram[2], 1);
    ck_assert(r->accuracy < 0); /* no correctness table */
    ert_load_result_free(r);

    /* Late answers: everyone at the batch's end. */
    o.late_answers = 1;
    r = run(s, &o);
    for (int i = 0; i < 4; ++i) NEAR(r->req[i].done_ms, 11.1);
    ert_load_result_free(r);

    /* A stage no row reaches does not run: samples 0 and 3 only (both exit 0). */
    o.late_answers = 0;
    o.max_delay_ms = 0;
    o.trace_len = 2;
    static const int64_t two[] = {0, 3};
    o.trace_samples = two;
    r = run(s, &o);
    NEAR(r->req[0].done_ms, 1 + 2 + 0.1 * 2);
    NEAR(r->req[1].done_ms, 1 + 2 + 0.1 * 2);
    ert_load_result_free(r);
    ert_load_server_free(s);
}
END_TEST

START_TEST(no_coordinated_omission) {
    /* Arrivals every 5 ms, 10 ms of service each, one at a time: the server keeps half
     * the pace. Request i still arrives at 5i (the generator does not wait for the
     * server), starts at 10i and is answered at 10i + 10: latency 10 + 5i. */
    ert_load_server *s = fixed_10ms(1, 1);
    ert_load_options o = ert_load_options_default();
    o.arrival = ERT_ARRIVAL_CONSTANT;
    o.qps = 200;
    o.requests = 100;
    o.max_batch = 1;
    o.max_delay_ms = 0;
    ert_load_result *r = run(s, &o);
    ck_assert_int_eq(r->requests, 100);
    for (int i = 0; i < 100; ++i) {
        NEAR(r->req[i].arrival_ms, 5.0 * i);
        NEAR(r->req[i].start_ms, 10.0 * i);
        NEAR(r->req[i].done_ms - r->req[i].arrival_ms, 10.0 + 5.0 * i);
    }
    NEAR(r->latency.max, 10.0 + 5.0 * 99);
    NEAR(r->queue.max, 5.0 * 99);
    NEAR(r->compute.max, 10.0);
    ck_assert(fabs(r->offered_qps - 200) < 1e-6);
    ck_assert(fabs(r->throughput - 100.0 / 1.0) < 1e-6); /* 100 answers by 1000 ms */
    ert_load_result_free(r);

    /* A closed loop, by contrast, only ever sees the service time. */
    o.arrival = ERT_ARRIVAL_CLOSED;
    o.concurrency = 1;
    r = run(s, &o);
    NEAR(r->latency.max, 10.0);
    NEAR(r->latency.p50, 10.0);
    NEAR(r->req[99].arrival_ms, 990.0);
    ert_load_result_free(r);
    ert_load_server_free(s);
}
END_TEST

START_TEST(arrival_processes) {
    static const int32_t exits[1] = {0};
    sim_spec p = {.streams = 1, .max_batch = 64, .stages = 1, .points = 1, .batch_ms = 0.001, .samples = 1,
                  .exits = exits};
    ert_load_server *s = sim_new(&p);
    ert_load_options o = ert_load_options_default();
    o.qps = 1000;
    o.requests = 40000;
    ert_load_result *r = run(s, &o);
    /* Poisson: exponential gaps of mean 1 ms (coefficient of variation 1). */
    double sum = 0, sq = 0;
    for (int i = 1; i < 40000; ++i) {
        const double g = r->req[i].arrival_ms - r->req[i - 1].arrival_ms;
        ck_assert(g >= 0);
        sum += g;
        sq += g * g;
    }
    const double mean = sum / 39999, cv = sqrt(sq / 39999 - mean * mean) / mean;
    ck_assert_msg(fabs(mean - 1.0) < 0.02, "mean gap %g", mean);
    ck_assert_msg(fabs(cv - 1.0) < 0.03, "cv %g", cv);
    ert_load_result_free(r);
    /* The same seed, the same schedule. */
    ert_load_result *a = run(s, &o), *b = run(s, &o);
    for (int i = 0; i < 1000; ++i) NEAR(a->req[i].arrival_ms, b->req[i].arrival_ms);
    ert_load_result_free(a);
    ert_load_result_free(b);

    /* Duration limit and a load step: 1000/s for 1 s, then 3000/s until 2 s. */
    o.requests = 0;
    o.duration_s = 2.0;
    o.step_at_s = 1.0;
    o.step_qps = 3000;
    o.window_ms = 1000;
    r = run(s, &o);
    ck_assert(r->num_windows >= 2);
    ck_assert_msg(fabs(r->windows[0].arrivals - 1000.0) < 120, "%lld", (long long)r->windows[0].arrivals);
    ck_assert_msg(fabs(r->windows[1].arrivals - 3000.0) < 200, "%lld", (long long)r->windows[1].arrivals);
    for (int64_t i = 0; i < r->requests; ++i) ck_assert(r->req[i].arrival_ms < 2000.0);
    int64_t done = 0;
    for (int w = 0; w < r->num_windows; ++w) done += r->windows[w].completed;
    ck_assert_int_eq(done, r->requests);
    ert_load_result_free(r);

    /* Closed loop with N clients: never more than N requests outstanding. */
    ert_load_options c = ert_load_options_default();
    c.arrival = ERT_ARRIVAL_CLOSED;
    c.concurrency = 8;
    c.requests = 200;
    c.max_delay_ms = 0.5;
    r = run(s, &c);
    ck_assert_int_eq(r->requests, 200);
    for (int64_t i = 0; i < r->requests; ++i) {
        int outstanding = 0;
        for (int64_t k = 0; k < r->requests; ++k)
            outstanding += r->req[k].arrival_ms <= r->req[i].arrival_ms && r->req[k].done_ms > r->req[i].arrival_ms;
        ck_assert_int_le(outstanding, 8);
    }
    ert_load_result_free(r);
    ert_load_server_free(s);
}
END_TEST

START_TEST(stats_and_phases) {
    const double v[] = {5, 1, 4, 2, 3};
    ert_load_stats st = ert_load_stats_of(v, 5);
    NEAR(st.mean, 3.0);
    NEAR(st.p50, 3.0);
    NEAR(st.p90, 4.6);
    NEAR(st.p99, 4.96);
    NEAR(st.max, 5.0);
    ck_assert_double_eq_tol(st.p99, ert_percentile(v, 5, 99), 1e-12);
    ck_assert(isnan(ert_load_stats_of(v, 0).p50));
}
END_TEST

START_TEST(bad_options_are_refused) {
    ert_load_server *s = fixed_10ms(1, 8);
    ert_load_result *r = NULL;
    ert_load_options o = ert_load_options_default();
    o.requests = 10;
    o.qps = 0;
    ck_assert_int_eq(ert_loadtest_run(s, &o, &r), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("qps"));
    o.qps = 100;
    o.max_batch = 9;
    ck_assert_int_eq(ert_loadtest_run(s, &o, &r), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("max_batch 9"));
    o.max_batch = 8;
    o.requests = 0;
    ck_assert_int_eq(ert_loadtest_run(s, &o, &r), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("bounded"));
    o.requests = 10;
    o.point = 1;
    ck_assert_int_eq(ert_loadtest_run(s, &o, &r), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("operating point 1"));
    o.point = 0;
    o.controller = ERT_CONTROLLER_SLO;
    o.slo_ms = 0;
    ck_assert_int_eq(ert_loadtest_run(s, &o, &r), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("slo_ms"));
    o.controller = ERT_CONTROLLER_NONE;
    o.shift_at_s = 0;
    o.shift_fraction = 0.5;
    ck_assert_int_eq(ert_loadtest_run(s, &o, &r), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("shifted data"));
    ck_assert_ptr_null(r);
    ert_load_server_free(s);
    ert_load_server_free(NULL);
    ert_load_result_free(NULL);
    /* The simulated server checks its tables. */
    static const int32_t bad[2] = {0, 3};
    sim_spec p = {.streams = 1, .max_batch = 4, .stages = 2, .points = 1, .samples = 2, .exits = bad};
    ert_sim_server_options so = {.streams = 1, .max_batch = 4, .num_stages = p.stages, .num_points = 1,
                                 .num_samples = 2, .exits = bad};
    ert_load_server *x = NULL;
    ck_assert_int_eq(ert_load_server_new_sim(&so, &x), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("exits[1] = 3"));
}
END_TEST

/* ---------------------------------------------------------------- peak search */

START_TEST(peak_search_finds_the_known_capacity) {
    /* Batches of up to 32 take 1 + 0.05 * rows ms: full ones 2.6 ms, so the server answers
     * at most 32 / 2.6 ms = 12307.7 requests/s. */
    static const int32_t exits[1] = {0};
    sim_spec p = {.streams = 1, .max_batch = 32, .stages = 1, .points = 1, .batch_ms = 1.0, .row_ms = {0.05},
                  .samples = 1, .exits = exits};
    ert_load_server *s = sim_new(&p);
    const double capacity = 32 / 2.6e-3;
    ert_load_options t = ert_load_options_default();
    t.requests = 20000;
    t.max_batch = 32;
    ert_peak_options po = {.slo_ms = 30, .percentile = 99, .tolerance = 0.01};
    ert_peak_result pk;
    ck_assert_msg(ert_loadtest_find_peak(s, &t, &po, &pk) == ERT_OK, "%s", ert_last_error());
    ck_assert_msg(fabs(pk.capacity_qps / capacity - 1) < 0.01, "capacity %g, expected %g", pk.capacity_qps, capacity);
    ck_assert(pk.found);
    ck_assert_msg(pk.peak_qps > 0.85 * capacity && pk.peak_qps <= capacity, "peak %g of capacity %g", pk.peak_qps,
                  capacity);
    ck_assert(pk.at_peak.pass && pk.at_peak.latency_q <= 30);
    ck_assert(pk.num_trials >= 5);
    for (int i = 0; i < pk.num_trials; ++i)
        if (pk.trials[i].qps > 1.02 * capacity) ck_assert_msg(!pk.trials[i].pass, "%g qps passed", pk.trials[i].qps);

    /* A tighter bound gives a lower peak; an impossible one, none. */
    ert_peak_result tight;
    po.slo_ms = 6;
    ck_assert_int_eq(ert_loadtest_find_peak(s, &t, &po, &tight), ERT_OK);
    ck_assert(tight.found && tight.peak_qps < pk.peak_qps);
    po.slo_ms = 1.5; /* a batch takes at least 1.05 ms, plus waiting for it to fill */
    po.qps_lo = 5000;
    po.qps_hi = 10000;
    ck_assert_int_eq(ert_loadtest_find_peak(s, &t, &po, &tight), ERT_OK);
    ck_assert(!tight.found);
    ck_assert(!pk.limited && pk.max_qps == 20000 / (ERT_PEAK_MIN_SPAN * 0.030));
    ert_load_server_free(s);
}
END_TEST

/* 200 requests drain in 16 ms at any arrival rate (the server answers 12,308 a second),
 * under a 30 ms bound: a search whose trials are bursts that short would pass every rate
 * it tries and double without end. Trials test rates up to 200 / (20 x 30 ms) only, and
 * a peak at that limit says so; a bracket past it, or trials of too short a duration,
 * are refused with the reason. */
START_TEST(peak_search_stays_within_what_its_trials_can_show) {
    static const int32_t exits[1] = {0};
    sim_spec p = {.streams = 1, .max_batch = 32, .stages = 1, .points = 1, .batch_ms = 1.0, .row_ms = {0.05},
                  .samples = 1, .exits = exits};
    ert_load_server *s = sim_new(&p);
    ert_load_options t = ert_load_options_default();
    t.requests = 200;
    t.max_batch = 32;
    ert_peak_options po = {.slo_ms = 30, .percentile = 99};
    ert_peak_result pk;
    ck_assert_msg(ert_loadtest_find_peak(s, &t, &po, &pk) == ERT_OK, "%s", ert_last_error());
    const double max_qps = 200 / (ERT_PEAK_MIN_SPAN * 0.030);
    ck_assert(pk.found && pk.limited);
    ck_assert_msg(fabs(pk.max_qps - max_qps) < 1e-9 && fabs(pk.peak_qps - max_qps) < 1e-9, "peak %g, limit %g",
                  pk.peak_qps, pk.max_qps);
    for (int i = 0; i < pk.num_trials; ++i)
        ck_assert_msg(pk.trials[i].qps <= max_qps * (1 + 1e-12), "trial at %g qps", pk.trials[i].qps);
    po.qps_lo = 400;
    po.qps_hi = 800;
    ck_assert_int_eq(ert_loadtest_find_peak(s, &t, &po, &pk), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_msg(tu_error_has("peak search: 400 qps is past what trials of 200 requests can test, 333 qps"), "%s",
                  ert_last_error());
    po.qps_lo = po.qps_hi = 0;
    for (int both = 0; both < 2; ++both) { /* a duration alone, or as a second limit */
        t.requests = both ? 100000 : 0;
        t.duration_s = 0.5;
        ck_assert_int_eq(ert_loadtest_find_peak(s, &t, &po, &pk), ERT_ERR_INVALID_ARGUMENT);
        ck_assert_msg(tu_error_has("trials of 0.5 s cannot show an overload"), "%s", ert_last_error());
    }
    ert_load_server_free(s);
}
END_TEST

/* ---------------------------------------------------------------- the controller */

/* Three points over two stages (batch 0.5 ms, stage 0 0.5 + 0.02/row, stage 1 1 + 0.1/row).
 * Clean samples 0..3: point 0 (strict) sends sample 3 through stage 1, points 1 and 2
 * nobody. Shifted samples 4..7 need stage 1 at points 0 and 1. Full batches of 32:
 *   point 0: clean 3.44 ms (9302/s), half shifted 4.64 ms (6897/s)
 *   point 1: clean 1.64 ms (19512/s), half shifted 4.24 ms (7547/s)
 *   point 2: 1.64 ms (19512/s) always.
 * Accuracy 100%, 75% (sample 3 wrong) and 50% (odd samples wrong). */
enum { NS = 4, NSH = 4 };

static ert_load_server *ctl_server(int with_shift) {
    const int per = NS + (with_shift ? NSH : 0);
    static int32_t ex[3 * (NS + NSH)];
    static uint8_t co[3 * (NS + NSH)];
    for (int pt = 0; pt < 3; ++pt)
        for (int i = 0; i < per; ++i) {
            const int shifted = i >= NS, base = i % NS;
            ex[pt * per + i] = pt == 2 ? 0 : shifted ? 1 : pt == 0 && base == 3;
            co[pt * per + i] = pt == 0 ? 1 : pt == 1 ? base != 3 : base % 2 == 0;
        }
    sim_spec p = {.streams = 1, .max_batch = 32, .stages = 2, .points = 3, .batch_ms = 0.5, .stage_ms = {0.5, 1.0},
                  .row_ms = {0.02, 0.1}, .samples = NS, .shifted = with_shift ? NSH : 0, .exits = ex, .correct = co};
    return sim_new(&p);
}

START_TEST(controller_loosens_under_overload) {
    ert_load_server *s = ctl_server(0);
    ert_load_options o = ert_load_options_default();
    o.qps = 12000; /* over point 0, under points 1 and 2 */
    o.duration_s = 3;
    o.max_batch = 32;
    o.slo_ms = 20;
    o.window_ms = 100;
    o.controller = ERT_CONTROLLER_SLO;
    ert_load_result *r = run(s, &o);
    ck_assert_msg(r->num_changes >= 1, "%d changes", r->num_changes);
    ck_assert_int_eq(r->changes[0].from, 0);
    ck_assert_int_eq(r->changes[0].to, 1);
    ck_assert(r->changes[0].observed_ms > 20);
    /* It probes the strict point again now and then, each failed probe doubling the wait
     * before the next (3, 6, 12 windows): most of the time it serves at a point that holds. */
    int held = 0, windows = 0;
    for (int w = 0; w < r->num_windows; ++w)
        if (r->windows[w].t_ms > 500) windows++, held += r->windows[w].point >= 1;
    ck_assert_msg(held >= 0.7 * windows, "%d of %d windows at a point that holds", held, windows);
    double last_probe = -1, last_gap = 0;
    int probes = 0;
    for (int c = 0; c < r->num_changes; ++c) {
        ck_assert(c == 0 || r->changes[c].t_ms > r->changes[c - 1].t_ms); /* logged in order */
        if (r->changes[c].to != 0) continue;
        probes++;
        if (last_probe >= 0) {
            ck_assert_msg(r->changes[c].t_ms - last_probe > last_gap, "probe gaps must grow");
            last_gap = r->changes[c].t_ms - last_probe;
        }
        last_probe = r->changes[c].t_ms;
    }
    ck_assert_int_ge(probes, 2);
    /* Off: the strict point drowns. */
    o.controller = ERT_CONTROLLER_NONE;
    ert_load_result *off = run(s, &o);
    ck_assert_int_eq(off->num_changes, 0);
    ck_assert(off->latency.p99 > 10 * r->latency.p99);
    ert_load_result_free(off);
    ert_load_result_free(r);
    ert_load_server_free(s);
}
END_TEST

START_TEST(controller_tightens_with_slack) {
    ert_load_server *s = ctl_server(0);
    ert_load_options o = ert_load_options_default();
    o.qps = 1000; /* every point is fast enough */
    o.duration_s = 3;
    o.max_batch = 32;
    o.slo_ms = 20;
    o.window_ms = 100;
    o.point = 2;
    o.controller = ERT_CONTROLLER_SLO;
    ert_load_result *r = run(s, &o);
    ck_assert_int_eq(r->num_changes, 2);
    ck_assert_int_eq(r->changes[0].from, 2);
    ck_assert_int_eq(r->changes[0].to, 1);
    ck_assert_int_eq(r->changes[1].to, 0);
    ck_assert(r->changes[0].observed_ms < 0.7 * 20);
    ck_assert_int_eq(r->windows[r->num_windows - 1].point, 0);
    /* Stricter means more accurate: 100% at the end versus 50% at the start. */
    const ert_load_phase late = ert_load_result_phase(r, 2000, INFINITY, 99);
    ck_assert(late.accuracy > 0.99);
    const ert_load_phase early = ert_load_result_phase(r, 0, 200, 99);
    ck_assert(early.accuracy < 0.8);
    ert_load_result_free(r);
    ert_load_server_free(s);
}
END_TEST

START_TEST(controller_holds_through_load_step_and_shift) {
    ert_load_server *s = ctl_server(1);
    ert_load_options o = ert_load_options_default();
    o.max_batch = 32;
    o.slo_ms = 20;
    o.window_ms = 100;
    o.duration_s = 4;
    /* Load step: 3000/s (point 0 holds), then 12000/s (point 0 does not). */
    o.qps = 3000;
    o.step_at_s = 2;
    o.step_qps = 12000;
    ert_load_result *res[2];
    for (int c = 0; c < 2; ++c) {
        o.controller = c ? ERT_CONTROLLER_SLO : ERT_CONTROLLER_NONE;
        res[c] = run(s, &o);
    }
    ert_load_phase off = ert_load_result_phase(res[0], 2000, INFINITY, 99);
    ert_load_phase on = ert_load_result_phase(res[1], 2000, INFINITY, 99);
    ert_load_phase on_before = ert_load_result_phase(res[1], 0, 2000, 99);
    ck_assert_msg(on.latency_q < off.latency_q / 5, "after the step: on %g, off %g", on.latency_q, off.latency_q);
    ck_assert(on_before.accuracy > 0.99); /* stays strict while it can */
    for (int c = 0; c < 2; ++c) ert_load_result_free(res[c]);

    /* Shift: 7500/s; point 0 holds clean inputs (9302/s) but not half shifted (6897/s). */
    o.step_at_s = 0;
    o.qps = 7500;
    o.shift_at_s = 2;
    o.shift_fraction = 0.5;
    for (int c = 0; c < 2; ++c) {
        o.controller = c ? ERT_CONTROLLER_SLO : ERT_CONTROLLER_NONE;
        res[c] = run(s, &o);
    }
    off = ert_load_result_phase(res[0], 2000, INFINITY, 99);
    on = ert_load_result_phase(res[1], 2000, INFINITY, 99);
    ck_assert_msg(on.latency_q < off.latency_q / 3, "after the shift: on %g, off %g", on.latency_q, off.latency_q);
    int looser_after = 0;
    for (int c = 0; c < res[1]->num_changes; ++c)
        looser_after |= res[1]->changes[c].t_ms >= 2000 && res[1]->changes[c].to > res[1]->changes[c].from;
    ck_assert(looser_after);
    int64_t shifted = 0;
    for (int64_t i = 0; i < res[1]->requests; ++i) {
        ck_assert(!res[1]->req[i].shifted || res[1]->req[i].arrival_ms >= 2000);
        shifted += res[1]->req[i].shifted;
    }
    ck_assert(shifted > 0.2 * res[1]->requests);
    for (int c = 0; c < 2; ++c) ert_load_result_free(res[c]);
    ert_load_server_free(s);
}
END_TEST

/* ---------------------------------------------------------------- a real CPU server */

enum { RN = 60, RIN = 24 }; /* samples, inputs per sample */
static char data_spec[1024];

static void real_setup(void) { tu_write_tiny_npy(7, RN, data_spec, sizeof data_spec); }

START_TEST(real_cpu_server) {
    ert_model *m = NULL;
    ck_assert_int_eq(ert_model_load(tu_path("test/fixtures/tiny-f32"), &m), ERT_OK);
    ert_dataset *d = NULL, *sh = NULL;
    ck_assert_msg(ert_dataset_load(data_spec, &d) == ERT_OK, "%s", ert_last_error());
    ck_assert_int_eq(ert_dataset_copy(d, &sh), ERT_OK);
    ck_assert_msg(ert_shift_apply(sh, ERT_SHIFT_GAUSSIAN_NOISE, 5, 5) == ERT_OK, "%s", ert_last_error());
    int changed = 0;
    for (int i = 0; i < RN * RIN; ++i) {
        ck_assert(sh->x[i] >= 0 && sh->x[i] <= 1);
        changed += sh->x[i] != d->x[i];
    }
    ck_assert(changed > RN * RIN / 2);
    ert_policy *pol[2] = {NULL, NULL};
    ck_assert_int_eq(ert_policy_parse("none", &pol[0]), ERT_OK);
    ck_assert_int_eq(ert_policy_parse("confidence:0.3", &pol[1]), ERT_OK);
    ert_load_server_options so = ert_load_server_options_default();
    so.streams = 2;
    so.session.max_batch = 16;
    ert_load_server *s = NULL;
    ck_assert_msg(ert_load_server_new(m, d, sh, (const ert_policy *const *)pol, 2, &so, &s) == ERT_OK, "%s",
                  ert_last_error());
    ck_assert_int_eq(ert_load_server_streams(s), 2);
    ck_assert_int_eq(ert_load_server_num_points(s), 2);
    ck_assert_ptr_nonnull(ert_load_server_session(s, 1));
    ck_assert_ptr_null(ert_load_server_session(s, 2));
    ck_assert_str_eq(ert_session_get_options(ert_load_server_session(s, 0)).device, "cpu");
    ert_load_options o = ert_load_options_default();
    o.qps = 3000;
    o.requests = 600;
    o.max_batch = 16;
    o.max_delay_ms = 1;
    o.slo_ms = 50;
    o.point = 1;
    o.shift_at_s = 0.05;
    o.shift_fraction = 0.5;
    ert_load_result *r = run(s, &o);
    ck_assert_int_eq(r->requests, 600);
    int64_t hist = 0, shifted = 0;
    for (int e = 0; e < r->num_exits; ++e) hist += r->exit_histogram[e];
    ck_assert_int_eq(hist, 600);
    ck_assert(r->accuracy >= 0 && r->accuracy <= 1);
    for (int64_t i = 0; i < r->requests; ++i) {
        const ert_load_request *q = &r->req[i];
        ck_assert(q->start_ms >= q->arrival_ms - 1e-9);
        ck_assert(q->done_ms >= q->start_ms);
        ck_assert(q->exit >= 0 && q->exit < 3 && q->pred >= 0 && q->pred < 5);
        ck_assert(q->stream == 0 || q->stream == 1);
        ck_assert(q->batch_size >= 1 && q->batch_size <= 16);
        shifted += q->shifted;
        /* Early answers: within a batch, an earlier exit is answered no later. */
        for (int64_t k = i + 1; k < r->requests && k < i + 32; ++k)
            if (r->req[k].batch == q->batch && r->req[k].exit > q->exit) ck_assert(r->req[k].done_ms >= q->done_ms);
    }
    ck_assert(shifted > 100);
    ck_assert(r->latency.p99 >= r->compute.p50);
    ert_load_result_free(r);
    /* The strict point in a closed loop. */
    o.point = 0;
    o.arrival = ERT_ARRIVAL_CLOSED;
    o.concurrency = 4;
    o.requests = 200;
    r = run(s, &o);
    ck_assert_int_eq(r->exit_histogram[2], 200);
    ert_load_result_free(r);
    ert_load_server_free(s);
    ert_policy_free(pol[0]);
    ert_policy_free(pol[1]);
    ert_dataset_free(sh);
    ert_dataset_free(d);
    ert_model_free(m);
}
END_TEST

/* ---------------------------------------------------------------- the CLI */

static char out_text[1 << 20], err_text[1 << 12];

static int cli(const char *args) { return tu_cli(args, out_text, sizeof out_text, err_text, sizeof err_text); }

START_TEST(cli_loadtest_json) {
    char a[4096];
    snprintf(a, sizeof a,
             "loadtest --model test/fixtures/tiny-f32 --data %s --policy confidence:0.4 --policy none --qps 2000 "
             "--requests 400 --max-batch 16 --streams 2 --slo-ms 50 --json --compaction fill",
             data_spec);
    ck_assert_msg(cli(a) == 0, "%s", err_text);
    cJSON *j = cJSON_Parse(out_text);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "kind")->valuestring, "loadtest");
    ck_assert_str_eq(cJSON_GetObjectItem(j, "compaction")->valuestring, "fill");
    const cJSON *runs = cJSON_GetObjectItem(j, "runs");
    ck_assert_int_eq(cJSON_GetArraySize(runs), 2);
    const cJSON *r0;
    cJSON_ArrayForEach(r0, runs) {
        const char *keys[] = {"requests", "throughput", "offered_qps", "latency_ms", "queue_ms", "compute_ms",
                              "slo_attainment", "accuracy", "exit_histogram", "timeline", "changes", "mean_batch"};
        for (int i = 0; i < 12; ++i) ck_assert_msg(cJSON_GetObjectItem(r0, keys[i]), "missing %s", keys[i]);
        ck_assert_int_eq(cJSON_GetObjectItem(r0, "requests")->valueint, 400);
        const cJSON *lat = cJSON_GetObjectItem(r0, "latency_ms");
        const char *lk[] = {"mean", "p50", "p90", "p95", "p99", "p99.9", "max"};
        double prev = 0;
        for (int i = 1; i < 7; ++i) {
            const double v = cJSON_GetObjectItem(lat, lk[i])->valuedouble;
            ck_assert_msg(v >= prev && v > 0, "%s = %g", lk[i], v);
            prev = v;
        }
        const double acc = cJSON_GetObjectItem(r0, "accuracy")->valuedouble;
        ck_assert(acc >= 0 && acc <= 1);
        const double att = cJSON_GetObjectItem(r0, "slo_attainment")->valuedouble;
        ck_assert(att >= 0 && att <= 1);
        int total = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, cJSON_GetObjectItem(r0, "exit_histogram")) total += v->valueint;
        ck_assert_int_eq(total, 400);
    }
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(runs, 1), "policy")->valuestring, "none");
    cJSON_Delete(j);

    /* --threads: each stream's count, which the device's name says; --exec auto records
     * what the sessions run (the cpu records a graph), or says why it runs eager. */
    snprintf(a, sizeof a,
             "loadtest --model test/fixtures/tiny-f32 --data %s --requests 50 --max-batch 8 --streams 2 --threads 3 "
             "--exec auto --json",
             data_spec);
    ck_assert_msg(cli(a) == 0, "%s", err_text);
    ck_assert_str_eq(err_text, "");
    j = cJSON_Parse(out_text);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "device")->valuestring, tu_cpu_name(3));
    ck_assert_str_eq(cJSON_GetObjectItem(j, "exec")->valuestring, "graph");
    cJSON_Delete(j);
    ck_assert_int_eq(setenv("ERT_CPU_GRAPH_FAIL_AT", "3", 1), 0);
    ck_assert_msg(cli(a) == 0, "%s", err_text);
    ck_assert_int_eq(unsetenv("ERT_CPU_GRAPH_FAIL_AT"), 0);
    ck_assert_msg(strstr(err_text, "exitrt loadtest: graph mode unavailable, running eager: ") == err_text, "%s",
                  err_text);
    j = cJSON_Parse(out_text);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "exec")->valuestring, "eager");
    cJSON_Delete(j);

    /* Closed loop and the table output. */
    snprintf(a, sizeof a, "loadtest --model test/fixtures/tiny-f32 --data %s --concurrency 4 --requests 100", data_spec);
    ck_assert_msg(cli(a) == 0, "%s", err_text);
    ck_assert_ptr_nonnull(strstr(out_text, "closed loop, 4 clients"));
    ck_assert_ptr_nonnull(strstr(out_text, "queueing"));
}
END_TEST

START_TEST(cli_peak_and_scenario_files) {
    const char *dir = tu_tmpdir();
    char a[4096], out[600], tl[600];
    snprintf(out, sizeof out, "%s/peak.json", dir);
    snprintf(a, sizeof a,
             "loadtest --model test/fixtures/tiny-f32 --data %s --policy fixed:0 --find-peak --slo-ms 10 "
             "--qps-lo 200 --qps-hi 1500 --requests 300 --tolerance 0.3 --max-batch 16 --output %s",
             data_spec, out);
    ck_assert_msg(cli(a) == 0, "%s", err_text);
    ck_assert_ptr_nonnull(strstr(out_text, "peak under p99"));
    cJSON *j = tu_json_load(out);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "kind")->valuestring, "peak");
    const cJSON *pk = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "peaks"), 0);
    ck_assert_str_eq(cJSON_GetObjectItem(pk, "policy")->valuestring, "fixed:0");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(pk, "found")));
    ck_assert(cJSON_GetObjectItem(pk, "peak_qps")->valuedouble >= 200);
    /* 300 requests span 20 x 10 ms at 1500 qps: the bracket's top is the trials' limit */
    ck_assert_double_eq_tol(cJSON_GetObjectItem(pk, "max_qps")->valuedouble, 1500, 1e-9);
    ck_assert(cJSON_IsBool(cJSON_GetObjectItem(pk, "limited")));
    ck_assert(cJSON_GetArraySize(cJSON_GetObjectItem(pk, "trials")) >= 2);
    cJSON_Delete(j);

    snprintf(out, sizeof out, "%s/shift.json", dir);
    snprintf(tl, sizeof tl, "%s/shift.csv", dir);
    snprintf(a, sizeof a,
             "loadtest --model test/fixtures/tiny-f32 --data %s --scenario shift --points none,confidence:0.3 "
             "--qps 1000 --duration 0.6 --window-ms 100 --max-batch 16 --output %s --timeline %s",
             data_spec, out, tl);
    ck_assert_msg(cli(a) == 0, "%s", err_text);
    ck_assert_ptr_nonnull(strstr(out_text, "before"));
    j = tu_json_load(out);
    ck_assert_str_eq(cJSON_GetObjectItem(j, "scenario")->valuestring, "shift");
    const cJSON *runs = cJSON_GetObjectItem(j, "runs");
    ck_assert_int_eq(cJSON_GetArraySize(runs), 2);
    ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(runs, 1), "controller")->valuestring, "slo");
    ck_assert_ptr_nonnull(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(runs, 0), "phases"), "after"));
    cJSON_Delete(j);
    FILE *f = fopen(tl, "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
    ck_assert_ptr_nonnull(strstr(line, "t_s,offered_qps"));
    int rows = 0;
    while (fgets(line, sizeof line, f)) rows++;
    fclose(f);
    ck_assert_int_ge(rows, 2 * 6);
}
END_TEST

START_TEST(cli_errors_are_one_line) {
    char a[4096];
    struct {
        const char *args, *needle;
    } cases[] = {
        {"loadtest --model test/fixtures/tiny-f32 --data DATA --qps 0", "--qps '0'"},
        {"loadtest --model test/fixtures/tiny-f32 --data DATA --controller slo", "needs operating points"},
        {"loadtest --model test/fixtures/tiny-f32 --data DATA --arrival bursty", "--arrival 'bursty'"},
        {"loadtest --model test/fixtures/tiny-f32 --data DATA --points none,bogus:1 --controller slo",
         "unknown kind 'bogus'"},
        {"loadtest --model test/fixtures/tiny-f32 --data DATA --find-peak --concurrency 3", "drop --concurrency"},
        {"loadtest --model test/fixtures/tiny-f32 --data DATA --requests 10 --output /nonexistent/x.json",
         "--output '/nonexistent/x.json': cannot write"},
        {"loadtest --model test/fixtures/tiny-f32", "--data SPLIT is required"},
        {"loadtest --model test/fixtures/tiny-f32 --data DATA stray", "unexpected argument 'stray'"},
        {"loadtest --model test/fixtures/tiny-f32 --data DATA --device cuda:0 --threads 2",
         "exitrt loadtest: --threads 2: sets the cpu device's threads; 'cuda:0' is not the cpu"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; ++i) {
        const char *d = strstr(cases[i].args, "DATA");
        if (d) snprintf(a, sizeof a, "%.*s%s%s", (int)(d - cases[i].args), cases[i].args, data_spec, d + 4);
        else snprintf(a, sizeof a, "%s", cases[i].args);
        ck_assert_msg(cli(a) == 1, "%s: expected exit 1", a);
        ck_assert_msg(strstr(err_text, cases[i].needle) != NULL, "%s: stderr '%s' lacks '%s'", a, err_text,
                      cases[i].needle);
        int lines = 0;
        for (const char *c = err_text; *c; ++c) lines += *c == '\n';
        ck_assert_msg(lines == 1 || strstr(err_text, "usage:"), "%s: not one line: %s", a, err_text);
    }
    ck_assert_int_eq(cli("loadtest --help"), 0);
    ck_assert_ptr_nonnull(strstr(out_text, "usage: exitrt loadtest"));
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("loadtest");
    TCase *sim = tcase_create("simulated");
    tcase_set_timeout(sim, 60);
    tcase_add_test(sim, batch_leaves_when_full_or_when_the_oldest_waited);
    tcase_add_test(sim, zero_delay_and_batch_of_one);
    tcase_add_test(sim, early_answers_at_the_exit);
    tcase_add_test(sim, no_coordinated_omission);
    tcase_add_test(sim, arrival_processes);
    tcase_add_test(sim, stats_and_phases);
    tcase_add_test(sim, bad_options_are_refused);
    tcase_add_test(sim, peak_search_finds_the_known_capacity);
    tcase_add_test(sim, peak_search_stays_within_what_its_trials_can_show);
    tcase_add_test(sim, controller_loosens_under_overload);
    tcase_add_test(sim, controller_tightens_with_slack);
    tcase_add_test(sim, controller_holds_through_load_step_and_shift);
    suite_add_tcase(s, sim);
    TCase *real = tcase_create("real");
    tcase_add_unchecked_fixture(real, real_setup, NULL);
    tcase_set_timeout(real, 60);
    tcase_add_test(real, real_cpu_server);
    if (getenv("ERT_CLI")) {
        tcase_add_test(real, cli_loadtest_json);
        tcase_add_test(real, cli_peak_and_scenario_files);
        tcase_add_test(real, cli_errors_are_one_line);
    }
    suite_add_tcase(s, real);
    return s;
}

int main(void) { return tu_run(suite()); }
