/* exitrt load generator: open- and closed-loop arrivals, dynamic batching, early answers,
 * SLO peak search and an adaptive operating point. Included by exitrt/exitrt.h.
 *
 * Offline evaluation runs a dataset in fixed batches; a deployed model sees requests
 * arriving at random, batched while they wait, and its users feel the tail. This part of
 * the API measures that:
 *
 *     ert_load_server *srv = NULL;                      // sessions on worker threads
 *     const ert_policy *points[] = {pol};
 *     ert_load_server_options so = ert_load_server_options_default();   // cpu, 1 stream
 *     ert_load_server_new(model, data, NULL, points, 1, &so, &srv);
 *
 *     ert_load_options lo = ert_load_options_default();  // Poisson, batch 64, 2 ms delay
 *     lo.qps = 5000; lo.requests = 20000; lo.slo_ms = 20;
 *     ert_load_result *r = NULL;
 *     ert_loadtest_run(srv, &lo, &r);                   // r->latency.p99, r->slo_attainment
 *     ert_load_result_free(r); ert_load_server_free(srv);
 *
 * Time. The generator owns its clock: arrival i is scheduled at t0 + the sum of i gaps
 * (exponential for Poisson, 1/qps for constant rate), whatever the server is doing, and a
 * request's latency is counted from that intended arrival. A slow server therefore shows
 * up as queueing, never as a generator that slowed down (no coordinated omission).
 * All times are milliseconds from the start of the run.
 *
 * Batching. Requests wait in one FIFO queue. A batch leaves for a free stream when it
 * holds max_batch requests or when its oldest request has waited max_delay_ms; a stream
 * runs one batch at a time; with every stream busy, the queue grows.
 *
 * Early answers. A request that leaves at exit k is answered when exit k's results are
 * ready, not when its batch ends: batch start + ert_profile_exit_ready_ms(exit k) (host
 * time on the CPU, the device timeline on a GPU). `late_answers` answers every request at
 * the end of its batch instead, for comparison.
 *
 * Servers. A real server drives `streams` sessions of one model, each on its own worker
 * thread, in real time. A simulated server computes service times from a linear model
 * (per stage a + b * rows) with the exit of every sample given, in virtual time: the same
 * generator, batcher and bookkeeping run against it, fast and deterministically (tests,
 * capacity planning).
 *
 * Operating points. A server holds an ordered list of policies, from the strictest
 * (accurate, slow) to the loosest (fast). A run uses one (`point`), or lets the SLO
 * controller move along the list.
 *
 * Threads: a server and a run are used from one thread; the real server starts its own
 * worker threads and joins them in ert_load_server_free.
 */
#ifndef EXITRT_LOADTEST_H
#define EXITRT_LOADTEST_H

#include <stddef.h>
#include <stdint.h>

#include "exitrt/exitrt.h" /* guarded: the types below come from there */

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- servers */

typedef struct ert_load_server ert_load_server;

typedef struct ert_load_server_options {
    ert_session_options session; /* each stream's session (ert_session_options; default: its
                           defaults in compact mode with max_batch 64, the largest batch a run
                           may form). threads 0 on the cpu: the session default with one
                           stream, the CPUs divided among the streams with more */
    int streams;        /* sessions, one worker thread each (default 1) */
    int warmup;         /* untimed full batches per session at creation (default 3), then every
                           point at each batch size up to max_batch (at most 64 sizes); 0: none */
} ert_load_server_options;

ert_load_server_options ert_load_server_options_default(void);

/* A server of `streams` sessions of `model` (each session its own buffers; on a GPU each
 * session also uploads its own copy of the weights today: device weights are not shared
 * across sessions yet). Requests draw their inputs from `data` (samples 0..n-1) and, when
 * `shifted` is not NULL, from `shifted` (same sample size; request samples n.. refer to
 * shifted sample index - n). Labels, when the data has them, give accuracy.
 * `points` are the operating points, strictest first (num_points >= 1). The model, the
 * datasets and the policies are borrowed: they must outlive the server. */
ert_status ert_load_server_new(const ert_model *model, const ert_dataset *data, const ert_dataset *shifted,
                               const ert_policy *const *points, int num_points, const ert_load_server_options *opt,
                               ert_load_server **out);

/* A simulated server. A batch of n requests started at t takes
 *     batch_ms + sum over the stages k that run of (stage_ms[k] + row_ms[k] * rows_k)
 * where rows_k = requests whose exit is >= k (compact mode: a stage runs while a row is
 * left), and a request leaving at exit k is ready at t + batch_ms + the sum of stages 0..k.
 * Exit k follows stage k. */
typedef struct ert_sim_server_options {
    int streams;                        /* default 1 */
    int max_batch;                      /* default 64 */
    int num_stages;                     /* 1..ERT_MAX_EXITS; exit k after stage k */
    double batch_ms;                    /* fixed cost per batch (upload, launches, download) */
    double stage_ms[ERT_MAX_EXITS];     /* fixed cost of a stage that runs */
    double row_ms[ERT_MAX_EXITS];       /* cost per row entering it */
    int num_points;                     /* operating points (>= 1) */
    int64_t num_samples;                /* clean samples */
    int64_t num_shifted;                /* shifted samples, numbered after the clean ones (may be 0) */
    const int32_t *exits;               /* [num_points][num_samples + num_shifted]: exit per sample and point */
    const uint8_t *correct;             /* the same shape: 1 if answered right; NULL: accuracy unknown */
} ert_sim_server_options;

/* Copies the tables; the options may be released after the call. */
ert_status ert_load_server_new_sim(const ert_sim_server_options *opt, ert_load_server **out);
void ert_load_server_free(ert_load_server *server);

int ert_load_server_streams(const ert_load_server *server);
int ert_load_server_num_points(const ert_load_server *server);
int ert_load_server_max_batch(const ert_load_server *server);
/* A real server's session of stream `stream` (its device name, options in force and note:
 * ert_session_device, ert_session_get_options, ert_session_exec_note); NULL for a
 * simulated server or a stream out of range. */
const ert_session *ert_load_server_session(const ert_load_server *server, int stream);

/* ---------------------------------------------------------------- a run */

typedef enum ert_arrival {
    ERT_ARRIVAL_POISSON = 0, /* open loop: exponential gaps, mean 1/qps */
    ERT_ARRIVAL_CONSTANT,    /* open loop: every 1/qps */
    ERT_ARRIVAL_CLOSED,      /* closed loop: `concurrency` clients, each sending its next request
                                when its answer arrives (no think time) */
    ERT_ARRIVAL_TRACE        /* open loop: the arrival times given in trace_ms */
} ert_arrival;

typedef enum ert_controller {
    ERT_CONTROLLER_NONE = 0, /* the operating point stays at `point` */
    ERT_CONTROLLER_SLO       /* moves along the points to hold the percentile under slo_ms */
} ert_controller;

typedef struct ert_load_options {
    ert_arrival arrival;
    double qps;              /* open loop: requests per second */
    int concurrency;         /* closed loop: clients */
    const double *trace_ms;  /* ERT_ARRIVAL_TRACE: arrival times, non-decreasing (borrowed) */
    const int64_t *trace_samples; /* ... and optionally each request's sample (NULL: drawn) */
    int64_t trace_len;
    int64_t requests;        /* stop generating after this many requests (0: no count limit) */
    double duration_s;       /* ... or after this long (0: no time limit); one limit is required */
    uint64_t seed;           /* arrivals and sample choice */

    int max_batch;           /* a batch leaves when full (default 64; <= the server's) */
    double max_delay_ms;     /* ... or when its oldest request has waited this long (default 2) */
    int late_answers;        /* 1: answer at the end of the batch, not at the request's exit */

    double slo_ms;           /* the latency objective (0: none): attainment, controller target */
    double percentile;       /* held under slo_ms by the controller and the peak search (default 99) */
    int point;               /* the operating point used (the controller's start; default 0) */

    /* Scenarios: a load step and a distribution shift, both from a point in time. */
    double step_at_s;        /* from this time on (0: never) ... */
    double step_qps;         /* ... arrivals come at this rate instead of qps */
    double shift_at_s;       /* from this time on (< 0: never; 0: from the start) ... */
    double shift_fraction;   /* ... this share of requests draws a shifted sample (needs shifted data) */

    ert_controller controller;
    double window_ms;        /* controller period and timeline resolution (default 200) */
    double slack;            /* move stricter when the window's percentile < slack * slo_ms (default 0.7) */
    int patience;            /* ... for this many windows in a row (default 3; doubled, up to 64, for
                                a point each time it overloaded after a move stricter to it, until
                                the arrival rate falls below 0.8x the rate it failed at). Looser moves
                                come at every window whose percentile is over slo_ms: one point, plus
                                one per doubling of the percentile over slo_ms. */
} ert_load_options;

ert_load_options ert_load_options_default(void);

/* Latency statistics (milliseconds); percentiles interpolate as ert_percentile does. */
typedef struct ert_load_stats {
    double mean, p50, p90, p95, p99, p999, max;
} ert_load_stats;

/* Statistics of n values (NaN in every field when n == 0). The values are not modified. */
ert_load_stats ert_load_stats_of(const double *values, int64_t n);

/* One request, in the order the generator made them. */
typedef struct ert_load_request {
    double arrival_ms; /* intended arrival on the generator's clock */
    double start_ms;   /* its batch started on a stream */
    double done_ms;    /* its answer was ready (latency = done_ms - arrival_ms) */
    int64_t sample;    /* input sample (>= the clean count: a shifted sample) */
    int64_t batch;     /* batch number, in dispatch order */
    int32_t exit;      /* the exit it left at */
    int32_t pred;      /* predicted class */
    int8_t correct;    /* 1 or 0; -1 without labels */
    int8_t shifted;    /* 1 if drawn from the shifted data */
    int16_t point;     /* the operating point of its batch */
    int16_t stream;    /* the stream that ran it */
    int16_t batch_size;
} ert_load_request;

/* One controller / timeline window: requests answered in [t_ms - window_ms, t_ms). */
typedef struct ert_load_window {
    double t_ms;            /* end of the window */
    int64_t arrivals;       /* requests whose intended arrival falls in the window */
    int64_t completed;      /* requests answered in the window */
    double offered_qps, throughput_qps;
    double p50_ms, p99_ms;  /* of the answered requests (p99_ms: the options' percentile); NaN if none */
    double accuracy;        /* -1 when none answered or no labels */
    double mean_exit;       /* NaN if none answered */
    double shifted_share;   /* share of answered requests with shifted inputs */
    int point;              /* the operating point in force at the window's end */
} ert_load_window;

/* A change of operating point by the controller. */
typedef struct ert_load_change {
    double t_ms;         /* when it was made */
    int from, to;
    double observed_ms;  /* the window's percentile that caused it */
    int64_t observed_n;  /* requests it was computed on (answered + still queued) */
} ert_load_change;

typedef struct ert_load_result {
    int64_t requests;        /* answered (every generated request is answered) */
    double duration_s;       /* from the start to the last answer */
    double offered_qps;      /* requests / the span of the arrivals */
    double throughput;       /* requests / duration_s */
    ert_load_stats latency;  /* done - arrival */
    ert_load_stats queue;    /* start - arrival: waiting for a batch and a free stream */
    ert_load_stats compute;  /* done - start: the batch's compute until this request's exit */
    double slo_ms;
    double slo_attainment;   /* share answered within slo_ms (-1 without an objective) */
    double accuracy;         /* -1 without labels */
    double mean_exit;
    int num_exits;
    int64_t exit_histogram[ERT_MAX_EXITS];
    int64_t batches;
    double mean_batch;       /* requests per batch */
    int num_points;
    int64_t point_requests[64];  /* requests answered at each operating point (first 64) */
    ert_load_request *req;   /* [requests] */
    ert_load_window *windows;
    int num_windows;
    ert_load_change *changes;
    int num_changes;
} ert_load_result;

/* Runs one load test: generates the requests, batches them, runs the batches on the
 * server and answers every request (arrivals stop at the limit; the queue drains). */
ert_status ert_loadtest_run(ert_load_server *server, const ert_load_options *opt, ert_load_result **out);
void ert_load_result_free(ert_load_result *result);

/* Latency percentile q of the requests whose intended arrival is in [from_ms, to_ms), and
 * their accuracy (-1 without labels) and count; for the phases of a scenario. */
typedef struct ert_load_phase {
    int64_t requests;
    double latency_q;    /* percentile q of latency (NaN if none) */
    double p50;
    double accuracy;
    double mean_exit;
    double slo_attainment;
} ert_load_phase;
ert_load_phase ert_load_result_phase(const ert_load_result *result, double from_ms, double to_ms, double q);

/* ---------------------------------------------------------------- peak search */

typedef struct ert_peak_options {
    double slo_ms;      /* the bound (required) */
    double percentile;  /* default 99 */
    double qps_lo;      /* the search starts here (0: a tenth of the measured capacity) */
    double qps_hi;      /* and here (0: 1.25 x the capacity measured by a closed-loop run) */
    double tolerance;   /* stop when (hi - lo) / hi < tolerance (default 0.03) */
    int max_trials;     /* default 24; at most ERT_PEAK_MAX_TRIALS */
} ert_peak_options;

#define ERT_PEAK_MAX_TRIALS 64

typedef struct ert_peak_trial {
    double qps;
    double latency_q;     /* the percentile over the whole trial */
    double latency_q_tail;/* the same over its second half (a growing queue shows here) */
    double throughput;
    double accuracy;
    double mean_exit;
    int pass;             /* both under the bound */
} ert_peak_trial;

typedef struct ert_peak_result {
    int found;            /* 0 if even qps_lo missed the bound */
    double capacity_qps;  /* the closed-loop throughput, if measured (else 0) */
    double peak_qps;      /* the highest passing rate */
    double max_qps;       /* the highest rate a trial of `requests` may test (ERT_PEAK_MIN_SPAN);
                             0: no limit (trials of a duration) */
    int limited;          /* 1: max_qps itself passed, so longer trials may find a higher peak */
    ert_peak_trial at_peak;
    int num_trials;
    ert_peak_trial trials[ERT_PEAK_MAX_TRIALS];
} ert_peak_result;

/* A trial's arrivals must span at least this many times slo_ms. A rate above what the
 * server sustains builds a backlog only as fast as the excess arrives: over a span T an
 * overload of x (a fraction of the rate) leaves about x T of work queued, so a burst of
 * requests shorter than the bound drains within it at any rate and would pass. With 20
 * bounds, any overload of 5% or more outgrows the bound before the trial ends. */
#define ERT_PEAK_MIN_SPAN 20

/* Binary search, as MLPerf's Server scenario does, for the highest Poisson arrival rate
 * whose latency percentile stays under slo_ms. Each trial is one run with `trial`'s
 * options (its limit: requests or duration; its batching and operating point), its
 * arrival process replaced by Poisson at the trial rate and its controller off. Trials
 * of a number of requests test rates up to requests / (ERT_PEAK_MIN_SPAN x slo_ms) only
 * (out->max_qps; a bracket starting past it is an error); trials of a duration must last
 * ERT_PEAK_MIN_SPAN x slo_ms. */
ert_status ert_loadtest_find_peak(ert_load_server *server, const ert_load_options *trial, const ert_peak_options *opt,
                                  ert_peak_result *out);

#ifdef __cplusplus
}
#endif
#endif
