/*
 * exitrt — a runtime for early-exit neural networks.
 *
 * A model is a stack of stages; some stages end in an exit head (a small classifier).
 * For every sample of a batch an exit policy decides, at each exit, whether the sample
 * is done. Samples that leave have their result written at their own index; the rest
 * are compacted into dense rows, so later stages compute only for them.
 *
 * Usage (error handling shortened; every call returns an ert_status):
 *
 *     ert_model *model = NULL;
 *     if (ert_model_load("models/fmnist-mlp", &model) != ERT_OK)
 *         fprintf(stderr, "%s\n", ert_last_error());
 *
 *     ert_session_options opt = ert_session_options_default();   // cpu, compact mode
 *     opt.max_batch = 256;
 *     ert_session *sess = NULL;
 *     ert_session_new(model, &opt, &sess);          // allocates every buffer now
 *
 *     ert_policy *pol = NULL;
 *     ert_policy_parse("confidence:0.9", &pol);    // or entropy:0.2,0.3 / patience:2 / ...
 *
 *     ert_batch batch = { .input = pixels, .n = 256 };   // n x ert_model_input_size floats
 *     int32_t pred[256], exit_at[256]; float conf[256];
 *     ert_outputs out = { .pred = pred, .exit_index = exit_at, .confidence = conf };
 *     ert_session_run(sess, pol, &batch, &out);
 *
 *     ert_policy_free(pol); ert_session_free(sess); ert_model_free(model);
 *
 * Ownership: every `_new`/`_load`/`_parse` call hands the caller one object to release
 * with the matching `_free`; `_free(NULL)` does nothing. A session borrows its model:
 * free sessions before their model. Pointers returned by getters stay valid as long as
 * the object they came from. Objects are not thread-safe; use one session per thread.
 *
 * Errors: a failing call returns a status other than ERT_OK and leaves a message in
 * ert_last_error() (per thread) naming the file, tensor or argument at fault. The
 * library never prints and never exits.
 */
#ifndef EXITRT_H
#define EXITRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ERT_VERSION_MAJOR 0
#define ERT_VERSION_MINOR 1

/* The most exits and stages a model may have (per-exit policy parameters travel by value
 * to the decide kernel, so they live in fixed arrays). */
#define ERT_MAX_EXITS 32
#define ERT_MAX_STAGES 64

/* ---------------------------------------------------------------- status and errors */

typedef enum ert_status {
    ERT_OK = 0,
    ERT_ERR_INVALID_ARGUMENT, /* a bad argument: NULL, out of range, malformed spec */
    ERT_ERR_IO,               /* a file could not be opened or read */
    ERT_ERR_FORMAT,           /* a file is malformed (JSON, safetensors, IDX, npy) */
    ERT_ERR_SHAPE,            /* a tensor or input has the wrong shape */
    ERT_ERR_DTYPE,            /* an unsupported or unexpected element type */
    ERT_ERR_OUT_OF_MEMORY,    /* host or device allocation failed */
    ERT_ERR_UNSUPPORTED,      /* a feature this build or device does not offer */
    ERT_ERR_BACKEND,          /* the backend (CUDA, cuBLAS, ...) reported an error */
    ERT_ERR_NUMERIC           /* NaN or Inf where a finite value is required */
} ert_status;

/* A short constant text for a status ("invalid argument"); never NULL. */
const char *ert_status_to_string(ert_status status);

/* The message of the last failed call on this thread ("" if none). Valid until the
 * next failing call on the same thread. */
const char *ert_last_error(void);

/* exitrt's version ("0.1") and the commit it was built from ("1fd032e8d2f4", with
 * "-dirty" for uncommitted changes, "unknown" outside a git checkout). */
const char *ert_version(void);
const char *ert_commit(void);

/* What this build uses, as found when called: one line per backend, e.g.
 * "cpu: OpenBLAS 0.3.21 (...); oneDNN 2.6.3 (built against 2.6)" and
 * "cuda: built for sm_90; runtime 13.0, driver 13.0; cuBLASLt 13.0.0; cuDNN 9.19.0" (or
 * "cuda: not built in"), written into buf (at most len bytes, always terminated). For
 * `exitrt --version` and bug reports: a result depends on these libraries. */
void ert_build_info(char *buf, size_t len);

/* ---------------------------------------------------------------- model */

typedef struct ert_model ert_model;

typedef struct ert_stage_info {
    const char *name;
    int has_exit;          /* 1 if an exit head follows this stage */
    int exit_index;        /* its exit number, or -1 */
    int width_in;          /* activation width entering the stage */
    int width_out;         /* activation width leaving the stage */
    int64_t params;        /* parameters of the stage body */
    int64_t head_params;   /* parameters of the exit head (0 if none) */
    double flops;          /* FLOPs per sample of the body (2 per multiply-add) */
    double head_flops;     /* FLOPs per sample of the exit head */
    double bytes;          /* bytes the body must move per batch: weights, once */
    double act_bytes;      /* plus per sample: activations read and written (f32) */
} ert_stage_info;

/* Loads `dir`/config.json and `dir`/model.safetensors (and calibration.json if
 * present). Every tensor's dtype, shape and byte range is checked. */
ert_status ert_model_load(const char *dir, ert_model **out);

typedef struct ert_model_load_options {
    int no_calibration; /* ignore calibration.json: every temperature 1 */
} ert_model_load_options;
ert_status ert_model_load_ex(const char *dir, const ert_model_load_options *opt, ert_model **out);
void ert_model_free(ert_model *model);

const char *ert_model_name(const ert_model *model);
int ert_model_input_size(const ert_model *model);   /* floats per sample */
int ert_model_num_classes(const ert_model *model);
int ert_model_num_stages(const ert_model *model);
int ert_model_num_exits(const ert_model *model);
const char *ert_model_class_label(const ert_model *model, int cls); /* NULL if out of range */
ert_status ert_model_stage_info(const ert_model *model, int stage, ert_stage_info *out);
/* FLOPs per sample of a sample that leaves at exit `exit` in compact mode (every stage up
 * to that exit and every exit head on the way), and of the full model (all stages and
 * the last head only): the yardstick for the FLOPs fraction. */
double ert_model_flops_to_exit(const ert_model *model, int exit);
double ert_model_flops_full(const ert_model *model);
/* The temperature per exit from calibration.json, or 1 when there is none. */
float ert_model_temperature(const ert_model *model, int exit);
/* The stage whose exit head is exit `exit` (-1 if out of range). */
int ert_model_exit_stage(const ert_model *model, int exit);

/* ---------------------------------------------------------------- policy */

typedef enum ert_policy_kind {
    ERT_POLICY_NONE = 0,   /* no early exit: every sample runs to the last exit */
    ERT_POLICY_CONFIDENCE, /* exit when max softmax >= t */
    ERT_POLICY_ENTROPY,    /* exit when entropy / log(C) <= t */
    ERT_POLICY_MARGIN,     /* exit when top1 - top2 probability >= t */
    ERT_POLICY_PATIENCE,   /* exit when the prediction was the same at N consecutive exits */
    ERT_POLICY_FIXED,      /* every sample exits at exit K */
    ERT_POLICY_ORACLE,     /* earliest exit whose prediction is right (needs labels) */
    ERT_POLICY_SCHEDULED   /* each sample exits at an exit given per sample */
} ert_policy_kind;

typedef struct ert_policy ert_policy;

/* Parses a policy spec:
 *   none | confidence:T[,T...] | entropy:T[,T...] | margin:T[,T...] | patience:N |
 *   fixed:K | oracle | scheduled | scheduled:hazard=H[,seed=S]
 * followed by optional options separated by ';':  `;temp=T[,T...]` (per-exit softmax
 * temperatures, overriding the model's calibration).
 * A list gives one value per exit; one value applies to every exit. Exits are numbered
 * from 0. Or a path to a JSON file {"policy": "<spec>"} or
 * {"kind": "...", "thresholds": [...], "temperatures": [...], "patience": N, "exit": K}. */
ert_status ert_policy_parse(const char *spec, ert_policy **out);
void ert_policy_free(ert_policy *policy);
ert_policy_kind ert_policy_get_kind(const ert_policy *policy);
/* Writes the canonical spec ("confidence:0.9") into buf; returns buf. */
const char *ert_policy_to_string(const ert_policy *policy, char *buf, size_t len);
/* For scheduled:hazard=H — the exit of sample `index` (global index, seeded), for a
 * model with `num_exits` exits: the first exit at which a draw with probability H
 * fires, the last exit if none fires. */
int ert_policy_scheduled_exit(const ert_policy *policy, int64_t index, int num_exits);

/* ---------------------------------------------------------------- datasets */

typedef struct ert_dataset {
    int64_t n;           /* samples */
    int sample_size;     /* floats per sample */
    int ndim;            /* dims of one sample (1..3) */
    int shape[3];
    float *x;            /* n x sample_size, pixels scaled to [0, 1] */
    int32_t *labels;     /* n labels, or NULL when the data has none */
    char name[256];
} ert_dataset;

/* Loads a named split or a file:
 *   fashion-mnist:train (first 50k of train), fashion-mnist:val (last 10k of train),
 *   fashion-mnist:test (10k), fashion-mnist:train-all (60k);
 *   PATH.npy (float32, C order, first dimension = samples) with optional labels as
 *   PATH.npy:LABELS.npy (int32 or int64, one dimension).
 * Fashion-MNIST is read from $ERT_FASHION_MNIST_DIR, else
 * /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist), as
 * gzip-compressed or plain IDX files. */
ert_status ert_dataset_load(const char *spec, ert_dataset **out);
void ert_dataset_free(ert_dataset *data);

/* Reads one IDX file (gzip or plain, via zlib). u8 data is returned as floats scaled by
 * 1/255 (images) or in `labels` (one-dimensional files). */
ert_status ert_idx_read(const char *path, ert_dataset **out);
/* Reads a float32 .npy file (C order, little-endian; '<f4'). */
ert_status ert_npy_read_f32(const char *path, ert_dataset **out);

/* ---------------------------------------------------------------- session */

typedef enum ert_mode {
    ERT_MODE_COMPACT = 0, /* decide at each exit, compute only the survivors */
    ERT_MODE_MASKED,      /* decide at each exit, keep computing every row */
    ERT_MODE_FULL         /* no exits: every row through every stage, last head only */
} ert_mode;

/* Parses "compact", "masked", "full". */
ert_status ert_mode_parse(const char *text, ert_mode *out);
const char *ert_mode_name(ert_mode mode);

/* The element type of activations and weights on the device. Logits, softmax and every
 * accumulation are f32 in all of them. The CPU backend computes in f32 only. */
typedef enum ert_dtype {
    ERT_DTYPE_F32 = 0, /* f32 storage and math */
    ERT_DTYPE_TF32,    /* f32 storage, TF32 tensor-core GEMMs */
    ERT_DTYPE_BF16,    /* bf16 storage, f32 accumulation */
    ERT_DTYPE_F16      /* f16 storage, f32 accumulation */
} ert_dtype;

/* Parses "f32", "tf32", "bf16", "f16". */
ert_status ert_dtype_parse(const char *text, ert_dtype *out);
const char *ert_dtype_name(ert_dtype dtype);

/* How a session drives the device (see DESIGN.md, "The GPU path without host syncs"). */
typedef enum ert_exec {
    ERT_EXEC_EAGER = 0, /* the host launches each op and reads each exit's survivor count
                           back to size the next stage (one round trip per exit) */
    ERT_EXEC_GRAPH,     /* the whole forward is one CUDA graph captured at session creation:
                           survivor counts stay on the device, each GEMM / convolution sits
                           in a SWITCH node over row buckets chosen on the device; no host
                           synchronisation inside the forward. On the CPU a recording of the
                           forward replayed with the same semantics (row buckets included):
                           no faster there, but the same answers, so it is tested anywhere. */
    ERT_EXEC_AUTO       /* graph where the backend can capture it, else eager (the reason is
                           kept: ert_session_exec_note) */
} ert_exec;

/* Parses "eager", "graph", "auto". */
ert_status ert_exec_parse(const char *text, ert_exec *out);
const char *ert_exec_name(ert_exec exec);

/* How compact mode moves the survivors after an exit. All give the same answers (each
 * sample's result is written at its own index); they differ in the bytes they move. */
typedef enum ert_compaction {
    ERT_COMPACTION_AUTO = 0, /* the default: fill where the backend's memory is host memory
                                (the cpu: it never moves more rows than gather), gather on
                                cuda (fill's kernels have not yet run on a GPU); a session's
                                options hold the choice made */
    ERT_COMPACTION_GATHER,   /* every survivor is copied, in order, into a second buffer:
                                moves the survivors' rows (about all of them when few leave) */
    ERT_COMPACTION_FILL      /* in place: the survivors at or past the new count move into the
                                rows left by leaving samples below it, so at most as many rows
                                move as samples left; survivors change order */
} ert_compaction;

/* Parses "auto", "gather", "fill". */
ert_status ert_compaction_parse(const char *text, ert_compaction *out);
const char *ert_compaction_name(ert_compaction compaction);

/* Row buckets of graph mode: the row counts a GEMM is captured for. The default (text
 * NULL or "" or "default") is 1, 2, 4, 8, then multiples of 16 up to 128, then steps
 * of 2^(1/8) rounded up to a multiple of 64, and always max_batch last: at most ~9%
 * of rows computed beyond the survivors above 128 rows. Eighth-octave steps fit up to
 * max_batch 8192; above, the steps double (2^(1/4), 2^(1/2), ...) until the list fits.
 * Every power of two below max_batch is in it, so graph and eager GEMMs pick the same
 * algorithm for a count (the CUDA backend picks one per power-of-two range of rows):
 * graph == eager bit for bit is promised for such lists only. Otherwise `text` is a
 * comma-separated increasing list of positive counts; max_batch is appended when missing
 * and larger values are refused.
 * Writes at most ERT_MAX_BUCKETS values. */
#define ERT_MAX_BUCKETS 64
ert_status ert_buckets_parse(const char *text, int max_batch, int *out, int *count);

typedef struct ert_session_options {
    const char *device;  /* "cpu" (default) or "cuda:N" */
    int max_batch;       /* the largest batch `run` accepts; buffers are sized for it */
    ert_mode mode;
    ert_dtype dtype;     /* default f32 */
    ert_exec exec;       /* default eager */
    const char *buckets; /* graph mode's row buckets (ert_buckets_parse); NULL = default */
    int stage_events;    /* 1 (default): events between stages, for the per-stage profile;
                            0: only the batch's begin and end (graph mode: no event nodes) */
    ert_compaction compaction; /* compact mode's survivor moves; default auto */
    int threads;         /* cpu: threads the ops run on, 1..ERT_MAX_THREADS; 0 (default):
                            ERT_CPU_THREADS if set, else every CPU the process may run on
                            (its affinity mask, fewer under a cgroup CPU quota), halved
                            while the session does not fit the memory limit (the note
                            says so; the options then hold the count used;
                            ert_session_device names the count in force).
                            Sessions that run side by side should divide the CPUs (a load
                            server's streams do). Ignored on cuda. */
} ert_session_options;

#define ERT_MAX_THREADS 256

typedef struct ert_session ert_session;

ert_session_options ert_session_options_default(void);
/* Binds a model to a backend and allocates every buffer, handle and workspace the
 * session needs; `run` allocates nothing. */
ert_status ert_session_new(const ert_model *model, const ert_session_options *opt,
                           ert_session **out);
void ert_session_free(ert_session *session);
/* What the session runs on, for reports: "cpu (2 threads)" (the thread count in force),
 * "cuda:0 (NVIDIA H200)". The options' `device` stays "cpu" or "cuda:N". */
const char *ert_session_device(const ert_session *session);
const ert_model *ert_session_model(const ert_session *session);
/* The options in force: `exec` is what the session runs (eager or graph, never auto);
 * `device` is "cpu" or "cuda:N", a string of the session's (valid while it lives). */
ert_session_options ert_session_get_options(const ert_session *session);
/* Why an ERT_EXEC_AUTO session runs eager, or why a CPU session runs on fewer threads than
 * its default ("" when neither). */
const char *ert_session_exec_note(const ert_session *session);

/* For a program that owns its process's OpenBLAS (exitrt's CLI calls it first): sets
 * OpenBLAS to one thread, as the first CPU session does, and stops the worker pool its
 * pthread build starts when it is loaded. Those workers spin for ~0.1 s before they
 * sleep, taking a core from the first batches (bench/NOTES.md, "OpenBLAS's idle
 * workers"). Not while another thread of the process runs a threaded OpenBLAS call:
 * OpenBLAS's shutdown joins its workers, and such a call can hang it. A later
 * openblas_set_num_threads or threaded call by the program starts the pool again. */
void ert_cpu_blas_pool_stop(void);

typedef struct ert_batch {
    const float *input;       /* n x ert_model_input_size, row-major, values in [0,1] scale */
    int n;                    /* 1 <= n <= max_batch */
    const int32_t *labels;    /* n labels, or NULL (the oracle policy needs them) */
    const int32_t *schedule;  /* n exit numbers for the scheduled policy, or NULL */
    int64_t first_index;      /* global index of sample 0 (seeds scheduled:hazard draws) */
} ert_batch;

typedef struct ert_outputs {
    int32_t *pred;       /* n predicted classes */
    int32_t *exit_index; /* n exit numbers at which each sample left */
    float *confidence;   /* n max softmax probabilities at that exit (temperature-scaled) */
    float *logits;       /* optional: n x classes logits of the exit each sample left at */
} ert_outputs;

/* Runs one batch. Inputs with NaN or Inf are refused (ERT_ERR_NUMERIC, naming the
 * sample) before anything runs. */
ert_status ert_session_run(ert_session *session, const ert_policy *policy,
                           const ert_batch *batch, ert_outputs *out);

/* ---------------------------------------------------------------- profile */

/* Times come from the backend's timeline: CUDA events on the GPU, the wall clock on the
 * CPU. Every stage interval is measured between events recorded in stream order. */
typedef struct ert_stage_profile {
    int rows;            /* rows that entered the stage */
    int padded_rows;     /* rows its GEMMs and convolutions computed: rows in eager mode,
                            the row bucket in graph mode (0 when the stage was skipped) */
    double start_ms;     /* from the start of the batch to the start of the stage */
    double compute_ms;   /* stage body (and exit head) */
    double decide_ms;    /* the exit decision */
    double compact_ms;   /* gathering the survivors (the kernels only) */
    double sync_ms;      /* the device idle while the host reads the survivor count back
                            and launches the next stage (0 on the CPU) */
    double flops;        /* FLOPs executed by the body and head on those rows */
    double bytes;        /* bytes the body and head must move (weights + activations) */
} ert_stage_profile;

typedef struct ert_profile {
    int num_stages;
    ert_stage_profile stage[ERT_MAX_STAGES];
    double batch_ms;       /* the whole run, upload and download included */
    double routing_ms;     /* decide + compact (kernels) */
    double sync_ms;        /* device idle waiting for host round trips, summed over stages */
    int host_syncs;        /* host synchronisations inside the forward pass, between the
                              input upload and the result download (which every run has):
                              one per exit in eager compact mode on a GPU, 0 in graph mode
                              and on the CPU */
    int graph;             /* 1 if the run was one graph launch */
    double padding_waste;  /* FLOPs on rows beyond the survivors (graph mode's buckets) over
                              the FLOPs on the survivors */
    double host_start_us;  /* host clock (CLOCK_MONOTONIC) when the run began, for traces */
} ert_profile;

/* The profile of the last `run` (or `run_rows`) of this session. */
ert_status ert_session_profile(const ert_session *session, ert_profile *out);

/* The time from the start of a batch until exit `exit`'s results were decided, from the
 * batch's profile: when a sample that left there was answered (-1 if its stage did not
 * run). On the CPU, host time; on a GPU, the device timeline. */
double ert_profile_exit_ready_ms(const ert_model *model, const ert_profile *profile, int exit);

/* For benchmarks, the "ideal" an adaptive forward is judged against: runs only the stage
 * bodies, stage k on rows[k] rows (rows[k] <= max_batch; 0 skips it), with static shapes
 * and nothing else: no exit heads, no decisions, no compaction, no host read-back. The
 * activations are whatever the buffers hold; only the time (in the profile) matters.
 * In a graph-mode session the bodies are captured (with these host-known row counts, no
 * conditional nodes) into a plain graph, kept until rows change, so the ideal pays one
 * launch like the adaptive forward it is judged against. */
ert_status ert_session_run_rows(ert_session *session, const int *rows);

/* Writes a Chrome / Perfetto trace (chrome://tracing, ui.perfetto.dev) of batch profiles:
 * one track per session, a slice per batch and, inside it, per stage its compute, decide,
 * compaction and host-sync intervals with the active row count. */
typedef struct ert_trace ert_trace;
ert_status ert_trace_open(const char *path, ert_trace **out);
ert_status ert_trace_add(ert_trace *trace, const char *track, const ert_profile *profile);
/* Finishes the file (written to PATH.tmp, then renamed); frees the trace. */
ert_status ert_trace_close(ert_trace *trace);
/* Frees the trace and removes its temporary file: PATH is left as it was. */
void ert_trace_discard(ert_trace *trace);

/* ---------------------------------------------------------------- synthetic models */

typedef struct ert_synth_options {
    int width;       /* D: the residual width (and the input width) */
    int depth;       /* L: blocks x = x + relu(W x + b), each followed by an exit head */
    int classes;     /* C: exit head D -> C */
    ert_dtype dtype; /* weights stored as f32, bf16 or f16 */
    uint64_t seed;
} ert_synth_options;

/* Writes DIR/config.json and DIR/model.safetensors of a residual MLP with seeded weights
 * (the headline benchmark's model); DIR is created if needed. */
ert_status ert_synth_write(const ert_synth_options *opt, const char *dir);

/* ---------------------------------------------------------------- evaluation */

typedef struct ert_latency {
    double mean, p50, p95, p99, max; /* milliseconds */
} ert_latency;

/* Percentile q in [0, 100] of n values, linear interpolation between order statistics
 * (numpy's default; NaN values sort last). The values are not modified. NaN for n <= 0,
 * for q NaN, or when the memory for a sorted copy (8n bytes) cannot be had. */
double ert_percentile(const double *values, int n, double q);
/* Mean, p50, p95, p99 and max of n values (one sorted copy; its percentiles NaN when that
 * memory cannot be had). */
ert_latency ert_latency_summary(const double *values, int n);

typedef struct ert_eval_options {
    int batch;         /* samples per run (<= the session's max_batch) */
    int warmup;        /* untimed batches first */
    ert_trace *trace;  /* if not NULL, every timed batch is added to it */
} ert_eval_options;

/* The result of running a whole dataset. Arrays are owned by the result. */
typedef struct ert_eval_result {
    int64_t samples;
    int num_exits;
    double accuracy;                        /* -1 without labels */
    double mean_exit;
    int64_t exit_histogram[ERT_MAX_EXITS];  /* samples leaving at each exit */
    int64_t exit_correct[ERT_MAX_EXITS];    /* of those, correctly classified */
    double flops_fraction;                  /* executed FLOPs / the full model's */
    double throughput;                      /* samples per second of batch time */
    ert_latency latency;                    /* per batch */
    int num_batches;
    double *batch_ms;
    int32_t *pred, *exit_index;             /* per sample */
    float *confidence;
    ert_profile profile_sum;                /* stage profiles summed over batches */
} ert_eval_result;

/* Runs every sample of `data` through the session in batches. */
ert_status ert_evaluate(ert_session *session, const ert_policy *policy, const ert_dataset *data,
                        const ert_eval_options *opt, ert_eval_result **out);
void ert_eval_result_free(ert_eval_result *result);

/* ---------------------------------------------------------------- calibration */

#define ERT_ECE_BINS 15

/* One bin of a reliability diagram: samples whose confidence (max softmax) falls in
 * [lo, hi), their mean confidence and their accuracy. */
typedef struct ert_reliability_bin {
    double lo, hi;
    double confidence, accuracy;
    int64_t count;
} ert_reliability_bin;

typedef struct ert_calibration_stats {
    double nll;                              /* mean negative log-likelihood */
    double ece;                              /* expected calibration error, ERT_ECE_BINS bins */
    double accuracy;
    ert_reliability_bin bins[ERT_ECE_BINS];
} ert_calibration_stats;

typedef struct ert_calibration {
    int num_exits;
    int64_t samples;
    float temperature[ERT_MAX_EXITS];        /* the fitted temperature per exit */
    ert_calibration_stats before[ERT_MAX_EXITS]; /* at temperature 1 */
    ert_calibration_stats after[ERT_MAX_EXITS];  /* at the fitted temperature */
} ert_calibration;

/* Expected calibration error over n samples (equal-width confidence bins), filling
 * `bins` (ERT_ECE_BINS entries) when not NULL. */
double ert_ece(const float *confidence, const uint8_t *correct, int64_t n, ert_reliability_bin *bins);

/* Fits one temperature per exit on `data` (labels needed) by minimising the negative
 * log-likelihood of every sample at every exit (the logits do not depend on the policy),
 * and reports NLL, ECE and reliability bins before and after. */
ert_status ert_calibrate(ert_session *session, const ert_dataset *data, int batch, ert_calibration *out);
/* The same statistics for given temperatures (e.g. fitted on val, measured on test). */
ert_status ert_calibration_measure(ert_session *session, const ert_dataset *data, int batch, const float *temperature,
                                   ert_calibration_stats *out);
/* Writes {"temperatures": [...], ...} (the file ert_model_load reads), via a temporary file. */
ert_status ert_calibration_write(const ert_calibration *cal, const char *path);

#ifdef __cplusplus
}
#endif

/* The evaluation suite (sweeps, frontiers, budgets, distribution shift) and the load
 * generator build on the API above; they are part of the one API, in their own files. */
#include "exitrt/evaluate.h"
#include "exitrt/loadtest.h"

#endif
