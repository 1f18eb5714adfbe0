/* exitrt evaluation suite: accuracy-latency sweeps, Pareto frontiers, latency budgets,
 * per-exit threshold search and distribution shift. Included by exitrt/exitrt.h.
 *
 * A sweep runs a grid of operating points (a policy with its thresholds, patience or
 * exit) over a labelled dataset and keeps one row per point: accuracy, exits, the FLOPs
 * executed, batch latency and per-sample latency (the time until the exit a sample left
 * at was decided). Latency is always MEASURED by running the point; FLOPs are not time.
 *
 *     ert_sweep_options so = ert_sweep_options_default();     // the five families, grid 8
 *     ert_sweep_result *res = NULL;
 *     ert_sweep_run(session, data, &so, &res);                  // runs every point
 *     ert_sweep_write(res, "results/sweep");                    // sweep.csv + sweep.json
 *     ert_select_query q = ert_select_query_default();          // batch-mean latency
 *     q.latency_budget_ms = 10.0;
 *     int best = ert_select(res->rows, res->num_rows, &q);      // -1 if nothing fits
 *     ert_sweep_result_free(res);
 *
 * Where the exits do not depend on the clock (every policy but `scheduled`), what a
 * policy decides for each sample is computed exactly, without running the network again,
 * from an exit table: every exit's logits of every sample, recorded once (one pass per
 * exit). The sweep uses it to place the threshold grid where the operating points
 * spread out, to check that every measured run decided what the table predicts, and the
 * per-exit threshold search uses it to try thousands of threshold vectors.
 *
 * Ownership as everywhere in exitrt: `_new`/`_run`/`_build`/`_read` hand over one object
 * to release with the matching `_free`; `_free(NULL)` does nothing. Nothing here prints.
 */
#ifndef EXITRT_EVALUATE_H
#define EXITRT_EVALUATE_H

#include <stdint.h>

#include "exitrt/exitrt.h" /* which includes this file at its end: either order works */

#ifdef __cplusplus
extern "C" {
#endif

/* The longest policy spec a row holds: one threshold and one temperature per exit. */
#define ERT_SPEC_MAX 768

/* ---------------------------------------------------------------- latency metrics */

/* Which latency a frontier or a budget is about. `batch` = the whole run of a batch
 * (upload and download included); `sample` = from the start of its batch until the exit
 * a sample left at was decided (ert_profile_exit_ready_ms). */
typedef enum ert_latency_metric {
    ERT_LATENCY_BATCH_MEAN = 0,
    ERT_LATENCY_BATCH_P50,
    ERT_LATENCY_BATCH_P95,
    ERT_LATENCY_BATCH_P99,
    ERT_LATENCY_SAMPLE_MEAN,
    ERT_LATENCY_SAMPLE_P50,
    ERT_LATENCY_SAMPLE_P95,
    ERT_LATENCY_SAMPLE_P99
} ert_latency_metric;

/* "batch-mean", "batch-p50", "batch-p95", "batch-p99", "sample-mean", ..., "sample-p99". */
ert_status ert_latency_metric_parse(const char *text, ert_latency_metric *out);
const char *ert_latency_metric_name(ert_latency_metric metric);

/* ---------------------------------------------------------------- rows */

/* One operating point, measured. */
typedef struct ert_sweep_row {
    char policy[ERT_SPEC_MAX]; /* canonical spec: ert_policy_parse accepts it */
    char family[16];           /* none, confidence, entropy, margin, patience, fixed, oracle,
                                  per-exit, shared (the per-exit search's shared baseline) */
    double param;              /* threshold, patience N or exit K; NaN where none */
    int calibrated;            /* 1: the model's calibration.json temperatures; 0: every
                                  temperature 1; -1: the exits do not depend on temperature
                                  (none, fixed, patience, oracle) */
    int reference;             /* 1: a reference that needs labels to run (oracle): never on
                                  a frontier, never selected */
    int64_t samples;
    double accuracy;           /* -1 without labels */
    double mean_exit;
    double flops_fraction;     /* executed FLOPs / the full model's, from the profile */
    double throughput;         /* samples per second of batch time */
    int num_batches;           /* timed batches (all repetitions) */
    ert_latency batch_ms;      /* per batch */
    ert_latency sample_ms;     /* per sample: until its exit was decided */
    int num_exits;
    int64_t exit_histogram[ERT_MAX_EXITS];
    int64_t exit_correct[ERT_MAX_EXITS];
    int64_t sim_mismatch;      /* samples whose exit or prediction differ from the exit
                                  table's prediction; -1 when not checked */
    int frontier_mean;         /* on the frontier of accuracy vs batch mean latency */
    int frontier_p99;          /* on the frontier of accuracy vs batch p99 latency */
} ert_sweep_row;

/* The row's latency under `metric` (NaN for an unknown metric). */
double ert_sweep_row_latency(const ert_sweep_row *row, ert_latency_metric metric);

/* ---------------------------------------------------------------- Pareto frontier */

/* Marks on[i] = 1 when point i is Pareto-optimal (higher accuracy and lower latency are
 * better): no other eligible point has accuracy >= and latency <= with at least one of
 * them strict. Points with eligible[i] == 0 (eligible may be NULL: all are), or with a
 * NaN accuracy or latency, are never on it and never dominate. Equal points are all on
 * it. Returns how many are on it (-1 on a NULL argument or without memory). O(n log n). */
int ert_pareto_mark(const double *accuracy, const double *latency, const int *eligible, int n, int *on);
/* The same over rows (references and rows without labels are not eligible). */
int ert_sweep_frontier(const ert_sweep_row *rows, int n, ert_latency_metric metric, int *on);
/* Sets every row's frontier_mean (batch-mean) and frontier_p99 (batch-p99); an error
 * (out of memory) leaves the marks as they were. */
ert_status ert_sweep_mark_frontiers(ert_sweep_row *rows, int n);

/* ---------------------------------------------------------------- budgets */

typedef struct ert_select_query {
    ert_latency_metric metric;  /* the latency the budget is about */
    double latency_budget_ms;   /* keep rows with latency <= this; NaN: no budget */
    double min_accuracy;        /* keep rows with accuracy >= this (a fraction); NaN: none */
    int calibrated;             /* -2: any row; else only rows with this `calibrated` or -1 */
} ert_select_query;

ert_select_query ert_select_query_default(void); /* batch-mean, no budget, any row */

/* The answer to a budget query, as an index into rows, or -1 when no row qualifies.
 * With a latency budget: the best accuracy within it, ties broken by lower latency, then
 * by the earlier row. With only a minimum accuracy: the lowest latency reaching it, ties
 * broken by higher accuracy, then the earlier row. Either way the answer is on the
 * frontier of `metric` over the rows the query keeps (by construction: a point that
 * dominated it would meet the same constraints and win the same tie-break). References
 * and rows without accuracy or latency are never chosen. */
int ert_select(const ert_sweep_row *rows, int n, const ert_select_query *query);

/* ---------------------------------------------------------------- exit tables */

/* Every exit's logits for every sample of a dataset: samples x exits x classes floats,
 * with the labels. Borrows the session's model (keep the model alive). */
typedef struct ert_exit_table ert_exit_table;

/* Runs `data` through the session once per exit (policy fixed:k, batches of `batch`,
 * <= 0: the session's max_batch) and records each exit's logits. */
ert_status ert_exit_table_build(ert_session *session, const ert_dataset *data, int batch, ert_exit_table **out);
void ert_exit_table_free(ert_exit_table *table);
int64_t ert_exit_table_samples(const ert_exit_table *table);
int ert_exit_table_num_exits(const ert_exit_table *table);

/* What a run of `policy` decides, computed from the table with the runtime's own exit
 * math (bit-identical to the CPU backend). */
typedef struct ert_sim_result {
    int64_t samples;
    double accuracy;       /* -1 without labels */
    double mean_exit;
    double flops_fraction; /* from ert_model_flops_to_exit: what compact mode executes */
    int64_t exit_histogram[ERT_MAX_EXITS];
    int64_t exit_correct[ERT_MAX_EXITS];
} ert_sim_result;

/* Simulates `policy` on the table. pred and exit_index (n each) may be NULL. The
 * `scheduled` policy is refused (its exits come with the batch, not from the scores). */
ert_status ert_exit_table_simulate(const ert_exit_table *table, const ert_policy *policy, ert_sim_result *out,
                                   int32_t *pred, int32_t *exit_index);

/* Calibration statistics of every exit over all samples of the table: per exit the
 * accuracy, ECE and ERT_ECE_BINS reliability bins of the top-1 softmax probability,
 * computed by ert_ece (nll is left NaN). `uncalibrated` = 1 uses temperature 1, else the
 * model's calibration. out holds one entry per exit. Needs labels. */
ert_status ert_exit_table_calibration(const ert_exit_table *table, int uncalibrated, ert_calibration_stats *out);

/* ---------------------------------------------------------------- latency model */

/* A linear model of batch time fitted from measured profiles: each stage that runs
 * costs fixed_ms + per_row_ms * rows (body, head, decide, compaction and host sync), and
 * every batch overhead_ms besides (upload, normalisation, download). Fit it from the
 * profiles of runs whose survivor counts vary (a sweep's), then predict the batch time
 * of exits that were only simulated. The acc_* fields are the fit's running sums. */
typedef struct ert_latency_model {
    int num_stages;
    double overhead_ms;
    double fixed_ms[ERT_MAX_STAGES];
    double per_row_ms[ERT_MAX_STAGES];
    int64_t batches;  /* profiles added */
    double acc_n[ERT_MAX_STAGES], acc_x[ERT_MAX_STAGES], acc_y[ERT_MAX_STAGES];
    double acc_xx[ERT_MAX_STAGES], acc_xy[ERT_MAX_STAGES], acc_overhead;
} ert_latency_model;

void ert_latency_model_init(ert_latency_model *lm);
void ert_latency_model_add(ert_latency_model *lm, const ert_profile *profile);
/* Least squares per stage (a negative slope or intercept is clamped to 0 and the other
 * refitted). ERT_ERR_INVALID_ARGUMENT when no profile was added. */
ert_status ert_latency_model_finish(ert_latency_model *lm);
/* Predicted batch time for rows[k] rows entering stage k (0: the stage does not run). */
double ert_latency_model_batch_ms(const ert_latency_model *lm, const int *rows);
/* Predicted mean batch time when the samples leave at exit_index[0..n) and run in
 * consecutive batches of `batch` in compact mode. */
double ert_latency_model_predict(const ert_latency_model *lm, const ert_model *model, const int32_t *exit_index,
                                 int64_t n, int batch);

/* ---------------------------------------------------------------- per-exit thresholds */

typedef struct ert_threshold_search_options {
    ert_policy_kind kind;            /* CONFIDENCE (default), ENTROPY or MARGIN */
    int uncalibrated;                /* 1: every temperature 1 (the spec gets ;temp=1) */
    double budget_flops;             /* FLOPs fraction <= this; NaN: no compute budget */
    double budget_ms;                /* predicted mean batch ms <= this; NaN: none */
    const ert_latency_model *latency; /* needed for budget_ms */
    int batch;                       /* batch size of the latency prediction (default 256) */
    int candidates;                  /* thresholds tried per exit (default 64) */
    int max_rounds;                  /* coordinate-descent rounds (default 20) */
} ert_threshold_search_options;

ert_threshold_search_options ert_threshold_search_options_default(void);

typedef struct ert_threshold_search_result {
    char policy[ERT_SPEC_MAX];       /* the chosen per-exit spec, e.g. confidence:0.93,0.88,0.9,0.95 */
    int num_thresholds;              /* exits - 1: the last exit always exits */
    float threshold[ERT_MAX_EXITS];
    ert_sim_result search;           /* on the search data (the table) */
    double predicted_ms;             /* predicted mean batch ms; NaN without a latency model */
    int rounds;                      /* coordinate-descent rounds run */
    int evaluations;                 /* threshold vectors tried */
    char shared_policy[ERT_SPEC_MAX]; /* the best single shared threshold under the budget */
    ert_sim_result shared;
    double shared_predicted_ms;
} ert_threshold_search_result;

/* Chooses one threshold per exit that maximises the table's accuracy under the budget(s)
 * (ties: the lower cost, FLOPs or predicted ms): starts from the best shared threshold,
 * then coordinate ascent: each exit in turn tries `candidates` thresholds (quantiles of
 * its scores) with the others fixed, until a round changes nothing. Run it on a
 * validation table and measure the answer on the test data. ERT_ERR_INVALID_ARGUMENT
 * when even the cheapest thresholds exceed the budget. */
ert_status ert_threshold_search(const ert_exit_table *table, const ert_threshold_search_options *opt,
                                ert_threshold_search_result *out);

/* ---------------------------------------------------------------- sweeps */

typedef enum ert_calibration_use {
    ERT_CALIBRATION_ON = 0, /* the model's calibration.json (temperature 1 without one) */
    ERT_CALIBRATION_OFF,    /* every temperature 1 (threshold specs get ;temp=1) */
    ERT_CALIBRATION_BOTH    /* both, for the policies whose exits depend on temperature */
} ert_calibration_use;

typedef struct ert_sweep_progress {
    int done, total;  /* steps finished (exit-table passes, then rounds of one batch of
                         every point) and planned */
    const char *what; /* the run starting now */
} ert_sweep_progress;

/* A point the caller adds to a sweep's plan (e.g. the per-exit search's answers). */
typedef struct ert_sweep_point {
    const char *spec;   /* a policy spec */
    const char *family; /* its row's family name, e.g. "per-exit" */
    double param;       /* its row's param */
} ert_sweep_point;

typedef struct ert_sweep_options {
    /* Families (confidence, entropy, margin, patience, fixed; none and oracle are always
     * added as references) or explicit specs (anything with ':' or a .json file), each run
     * as given. NULL / 0: the five families. */
    const char *const *policies;
    int num_policies;
    int grid;          /* points per threshold family, at most per patience/fixed (default 8) */
    int batch;         /* samples per run (<= max_batch; default max_batch) */
    int warmup;        /* untimed batches of each point before each pass (default 1) */
    int reps;          /* timed passes over the data per point (default 1); the points
                          run interleaved, batch by batch, within each pass */
    ert_calibration_use calibration;
    int no_oracle;     /* 1: leave the oracle out */
    const ert_sweep_point *extra; /* points added after the families, measured with them,
                                     each kept even if a family planned the same spec */
    int num_extra;
    const ert_exit_table *table; /* the data's exit table if already built (NULL: built here) */
    void (*progress)(void *user, const ert_sweep_progress *p); /* may be NULL */
    void *progress_user;
} ert_sweep_options;

ert_sweep_options ert_sweep_options_default(void);

typedef struct ert_sweep_result {
    char model[128], data[256], device[128], mode[16], dtype[8], date[32];
    char exec[8];       /* eager | graph: how the session ran */
    char compaction[8]; /* gather | fill: compact mode's survivor moves */
    char calibration[8];       /* on | off | both as asked, or "none" when the model has no
                                  calibration (every temperature 1: one setting only) */
    int model_calibrated;      /* 1 if the model has temperatures other than 1 */
    int batch, warmup, reps;
    int64_t samples;
    int num_exits;
    double flops_full;
    double exit_flops_fraction[ERT_MAX_EXITS]; /* FLOPs to each exit / the full model's */
    char shift[32];            /* the corruption applied to the data ("" for none) */
    int shift_severity;
    uint64_t shift_seed;
    int num_rows, cap_rows;
    ert_sweep_row *rows;
    ert_latency_model latency;  /* fitted from every timed batch */
    int64_t sim_mismatch;       /* summed over the checked rows; -1 if none checked */
    int has_search;
    ert_threshold_search_result search;
    char search_data[256];
    char search_kind[16];
    double search_budget_flops, search_budget_ms;
} ert_sweep_result;

/* Runs the sweep: builds the exit table of `data` (one pass per exit), chooses each
 * threshold family's grid from it (points spread evenly over the FLOPs range the
 * thresholds reach), runs every point on the session and marks the frontiers. `data`
 * must have labels. */
ert_status ert_sweep_run(ert_session *session, const ert_dataset *data, const ert_sweep_options *opt,
                         ert_sweep_result **out);
void ert_sweep_result_free(ert_sweep_result *result);

/* Measures one operating point: `warmup` untimed batches, then `reps` passes over the
 * data in batches of `batch`; per-batch profiles give batch latency and, through
 * ert_profile_exit_ready_ms, each sample's latency. Fills the measured fields of `row`
 * (policy, family, param, calibrated and reference are the caller's). If `lm` is not
 * NULL every timed profile is added to it; if `table` is not NULL the run's exits and
 * predictions are compared with its simulation (row->sim_mismatch). */
ert_status ert_sweep_measure(ert_session *session, const ert_policy *policy, const ert_dataset *data, int batch,
                             int warmup, int reps, ert_latency_model *lm, const ert_exit_table *table,
                             ert_sweep_row *row);

/* One operating point of ert_sweep_measure_jobs: a policy on a dataset, with the data's
 * exit table for the simulation check (NULL: none). Jobs may share or differ in data. */
typedef struct ert_measure_job {
    const ert_policy *policy;
    const ert_dataset *data;
    const ert_exit_table *table;
} ert_measure_job;

/* Measures several operating points as ert_sweep_measure does each, but interleaved:
 * per pass, each job's warm-up, then batch b of every job that has one, then batch
 * b + 1, ..., so that a drift of the machine (clocks, other load on a shared host)
 * touches every point alike instead of the last ones; ert_sweep_run does the same with
 * its grid. opt gives batch, warmup, reps and progress (one step per round of batches);
 * NULL: the defaults. rows[i] gets job i's measured fields. Keeps every job's outputs
 * (12 bytes per sample) while it runs. */
ert_status ert_sweep_measure_jobs(ert_session *session, const ert_measure_job *jobs, int num_jobs,
                                  const ert_sweep_options *opt, ert_latency_model *lm, ert_sweep_row *rows);

/* Appends a row (copied) and marks the frontiers again. */
ert_status ert_sweep_result_add(ert_sweep_result *result, const ert_sweep_row *row);

/* Writes DIR/sweep.csv and DIR/sweep.json (each to a temporary name, then renamed; DIR
 * is created if needed). The JSON has the metadata, every row with its frontier flags,
 * the latency model and the per-exit search; sweep.csv one line per row. */
ert_status ert_sweep_write(const ert_sweep_result *result, const char *dir);
/* Reads a sweep.json (a file, or a directory holding one) back. */
ert_status ert_sweep_read(const char *path, ert_sweep_result **out);

/* ---------------------------------------------------------------- distribution shift */

typedef enum ert_shift_kind {
    ERT_SHIFT_NONE = 0,
    ERT_SHIFT_GAUSSIAN_NOISE, /* + N(0, sigma^2) per pixel, sigma 0.08 0.12 0.18 0.26 0.38 */
    ERT_SHIFT_BLUR,           /* Gaussian blur, sigma 0.5 0.75 1 1.5 2 px (edges replicated) */
    ERT_SHIFT_CONTRAST,       /* toward the image's mean per channel: factor 0.5 0.4 0.3 0.2 0.1 */
    ERT_SHIFT_TRANSLATE,      /* 1 2 3 4 5 px in a per-sample direction, zero fill */
    ERT_SHIFT_ROTATE          /* 8 16 24 32 40 degrees, per-sample sign, bilinear, zero fill */
} ert_shift_kind;

#define ERT_SHIFT_MAX_SEVERITY 5

/* "none", "gaussian-noise", "blur", "contrast", "translate", "rotate". */
ert_status ert_shift_parse(const char *text, ert_shift_kind *out);
const char *ert_shift_name(ert_shift_kind kind);
/* The corruption's strength at a severity 1..5 (sigma, factor, pixels or degrees). */
double ert_shift_strength(ert_shift_kind kind, int severity);

/* Corrupts every sample of `data` in place, deterministically from (seed, sample index):
 * the same seed gives the same images whatever the order or batch. Samples are read as
 * [C,H,W] (ndim 3), [H,W] (ndim 2: C = 1) or, for noise and contrast only, flat vectors
 * (ndim 1). Values are clamped to [0, 1] afterwards. Severity 0 or kind NONE: unchanged. */
ert_status ert_shift_apply(ert_dataset *data, ert_shift_kind kind, int severity, uint64_t seed);
/* A deep copy (x and labels); free with ert_dataset_free. */
ert_status ert_dataset_copy(const ert_dataset *data, ert_dataset **out);

/* The image operations themselves, on one [C,H,W] image, out-of-place (in != out):
 * results are clamped to [0, 1]. */
/* out(y, x) = in(y - dy, x - dx): content moves right by dx and down by dy; zero fill. */
void ert_image_translate(const float *in, float *out, int C, int H, int W, int dx, int dy);
/* Rotates the content counter-clockwise (as displayed, row 0 at the top) by `degrees`
 * about the centre ((W-1)/2, (H-1)/2); bilinear, zero outside. */
void ert_image_rotate(const float *in, float *out, int C, int H, int W, double degrees);
/* Separable Gaussian blur, radius ceil(3 sigma) (at most 3x the longest side), edge
 * pixels replicated; sigma <= 0 or NaN copies (clamped to [0, 1]). Fails only when its
 * kernel and line buffer cannot be allocated (out is then unchanged). */
ert_status ert_image_blur(const float *in, float *out, int C, int H, int W, double sigma);
/* Each channel moved toward its mean: m + factor * (x - m). */
void ert_image_contrast(const float *in, float *out, int C, int H, int W, double factor);
/* + sigma * N(0,1) per value from the counter-based generator (seed, index). */
void ert_image_noise(const float *in, float *out, int64_t size, double sigma, uint64_t seed, uint64_t index);

#ifdef __cplusplus
}
#endif
#endif
