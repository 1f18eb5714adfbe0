/*
 * The backend seam. A backend (cpu, cuda) fills one ert_backend_ops table; the session
 * code in runtime/ is written once above it. This header includes nothing from runtime/.
 *
 * Memory: `alloc` returns backend memory (host memory for cpu, device memory for cuda);
 * the runtime never dereferences it. Activations are stored as rows of `act_elem_size`
 * byte elements (f32 on the CPU); logits, inputs and results are always f32/int32.
 *
 * Row counts: every op takes an ert_rows. `n` is the row count known on the host: the
 * exact count in eager mode, an upper bound (a bucket) in graph mode. `dev_count`, when
 * not NULL, points to the exact count in backend memory; kernels that can read it skip
 * the rows past it, so they work unchanged once no host read-back is made.
 */
#ifndef ERT_KERNELS_BACKEND_H
#define ERT_KERNELS_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "exit_math.h"
#include "hd.h"
#include "exitrt/exitrt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ert_backend ert_backend; /* one per session: device, stream, handles */
typedef struct ert_op ert_op;           /* an op prepared at session creation */
typedef struct ert_event ert_event;     /* a point on the backend's timeline */
typedef struct ert_graph ert_graph;     /* a captured forward pass, instantiated */

typedef enum ert_op_type {
    ERT_OP_LINEAR = 0, /* y = act(x W^T + b):  x (rows, in), W (out, in), y (rows, out) */
    ERT_OP_LAYERNORM,  /* y = (x - mean) / sqrt(var + eps) * w + b over each row of width in */
    ERT_OP_NORMALIZE,  /* y = x * scale[c] + shift[c], c = j / (in / channels); x is f32 input */
    ERT_OP_CONV2D,     /* per sample, NCHW: y (K, H', W') = act(conv(x (C, H, W), W (K, C/g, kh, kw)) + b) */
    ERT_OP_MAXPOOL,    /* per sample and channel: max over the window; padding counts as -inf */
    ERT_OP_AVGPOOL,    /* mean over the window, padding included in the divisor (PyTorch default) */
    ERT_OP_RELU        /* y = x < 0 ? 0 : x over rows x in (NaN stays NaN) */
} ert_op_type;

/* Geometry of a convolution or pooling window over one [C, H, W] sample. Output sizes
 * follow PyTorch: H' = (H + 2 ph - dh (kh - 1) - 1) / sh + 1 (floor), likewise W'. For
 * pools in_c == out_c and groups, dilation are 1. A global average pool is an avgpool
 * whose window is the whole image. */
typedef struct ert_conv_geom {
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    int kh, kw, sh, sw, ph, pw, dh, dw;
    int groups;
} ert_conv_geom;

typedef enum ert_activation { ERT_ACT_NONE = 0, ERT_ACT_RELU, ERT_ACT_GELU } ert_activation;

/* Everything a backend needs to prepare one op. Host pointers, borrowed for the call. */
typedef struct ert_op_desc {
    ert_op_type type;
    const char *name;     /* tensor name, for error messages */
    int in, out;          /* widths (out == in for layernorm and normalize) */
    int channels;         /* NORMALIZE: number of channels */
    ert_activation act;   /* LINEAR, CONV2D */
    float eps;            /* LAYERNORM */
    const float *weight;  /* LINEAR: out x in; LAYERNORM: in (NULL = 1); NORMALIZE: scale[channels];
                             CONV2D: out_c x in_c/groups x kh x kw */
    const float *bias;    /* LINEAR: out (may be NULL); LAYERNORM: in (NULL = 0); NORMALIZE: shift;
                             CONV2D: out_c (may be NULL) */
    int f32_out;          /* write f32 (logits) rather than the activation type */
    int max_rows;
    ert_conv_geom conv;   /* CONV2D, MAXPOOL, AVGPOOL; `in`/`out` are then C*H*W before/after */
} ert_op_desc;

typedef struct ert_rows {
    int n;
    const int32_t *dev_count;
} ert_rows;

/* One exit decision over `rows` rows of logits. Rows whose state says `done` (masked
 * mode) are skipped. Leaving rows write pred/exit/conf at their original index. */
typedef struct ert_decide_args {
    ert_exit_params params;
    const ert_exit_params *dev_params; /* optional: the policy in backend memory, read at run
                                          time instead of `params` (graph mode: the policy
                                          changes between launches of one graph) */
    int exit_index;
    int is_last;
    int classes;
    ert_rows rows;
    const float *logits;        /* rows x classes, f32 */
    const int32_t *orig_index;  /* rows: the sample's index in the batch */
    ert_sample_state *state;    /* rows, updated */
    uint8_t *keep;              /* rows, out: 1 = still active after this exit */
    int32_t *pred;              /* batch-sized, written at orig_index */
    int32_t *exit_at;
    float *conf;
    float *logits_out;          /* optional (NULL): batch x classes, the leaving row's logits */
} ert_decide_args;

/* Moves the rows with keep[r] = 1 (r below the row count) to dense rows and writes their
 * number, n', to *count (backend memory); each row's index and state move with it.
 *  - gather (y != x): every kept row is copied into the outputs, in row order. Inputs
 *    and outputs do not overlap.
 *  - fill (y == x, idx_out == idx_in, state_out == state_in: in place): kept rows below
 *    n' stay; the k-th row below n' that is not kept receives the k-th kept row at or
 *    past n' (k counted in row order). At most as many rows move as rows were dropped. */
typedef struct ert_compact_args {
    ert_rows rows;
    int width;                       /* activation elements per row */
    const void *x;                   /* rows x width activations */
    void *y;
    const int32_t *idx_in;
    int32_t *idx_out;
    const ert_sample_state *state_in;
    ert_sample_state *state_out;
    const uint8_t *keep;
    int32_t *count;
} ert_compact_args;

/* Which compaction the arguments ask for: ERT_COMPACT_MIXED (some buffers in place, some
 * not) is refused by the backends. */
enum { ERT_COMPACT_GATHER = 0, ERT_COMPACT_FILL = 1, ERT_COMPACT_MIXED = -1 };
static inline int ert_compact_kind(const ert_compact_args *a) {
    const int same = (a->y == a->x) + ((const void *)a->idx_out == (const void *)a->idx_in) +
                     ((const void *)a->state_out == (const void *)a->state_in);
    return same == 3 ? ERT_COMPACT_FILL : same == 0 ? ERT_COMPACT_GATHER : ERT_COMPACT_MIXED;
}

/* Why the backends refuse these arguments (NULL: they do not). The new count must not
 * overwrite the row count it is computed from: on a GPU, the block that writes it would
 * race the blocks still reading the old one. */
static inline const char *ert_compact_refusal(const ert_compact_args *a) {
    if (ert_compact_kind(a) == ERT_COMPACT_MIXED) return "compaction with some buffers in place, some not";
    if (a->rows.dev_count && (const void *)a->count == (const void *)a->rows.dev_count)
        return "compaction writing its count over the row count it reads";
    return NULL;
}

/* Fill compaction's destination, from the exclusive prefix sums of the keep flags
 * (offsets[q] = kept rows in [0, q), for q below the row count) and the survivor count
 * `kept` (below the row count, so there are holes): the row below `kept` that receives the
 * kept row whose rank among the kept rows at or past `kept` is `rank`, i.e. the hole of
 * that rank. holes_before(q) = q - offsets[q] never decreases, so a binary search finds
 * the smallest q in [1, kept] with more than `rank` holes in [0, q); row q - 1 is that
 * hole (q = kept qualifies: below `kept` there are as many holes as kept rows past it).
 * One copy for the CUDA kernel and the CPU test that checks it. */
ERT_HD int ert_fill_destination(const int32_t *offsets, int kept, int rank) {
    int lo = 1, hi = kept;
    while (lo < hi) {
        const int mid = lo + (hi - lo) / 2;
        if (mid - offsets[mid] > rank) hi = mid;
        else lo = mid + 1;
    }
    return lo - 1;
}

/* Why graph_begin refuses these row buckets (NULL: it takes them), for both backends.
 * They increase within 1..max_rows and end at max_rows: a count above the last bucket
 * would run in it, its rows past the bucket never computed. *at: the bucket in question. */
static inline const char *ert_buckets_refusal(const int *bucket_rows, int num_buckets, int max_rows, int *at) {
    *at = num_buckets - 1;
    if (num_buckets < 0 || num_buckets > ERT_MAX_BUCKETS || (num_buckets && !bucket_rows))
        return "expected 0 to ERT_MAX_BUCKETS buckets";
    for (int b = 0; b < num_buckets; ++b) {
        *at = b;
        if (bucket_rows[b] < 1 || bucket_rows[b] > max_rows || (b && bucket_rows[b] <= bucket_rows[b - 1]))
            return "buckets must increase within 1..max_rows";
    }
    if (num_buckets && bucket_rows[num_buckets - 1] != max_rows) return "the last bucket must be max_rows";
    return NULL;
}

/* Graph mode's choice of row bucket for `count` rows: the index of the smallest of the
 * increasing `bucket_rows` holding it (the last one at most), or num_buckets (no bucket:
 * no body runs) for 0 rows. One copy for the host (profile, CPU recording) and the
 * device (kernels/cuda/graph.cu's SWITCH selection). */
ERT_HD int ert_bucket_index(const int *bucket_rows, int num_buckets, int count) {
    if (count <= 0) return num_buckets;
    int b = 0;
    while (b + 1 < num_buckets && bucket_rows[b] < count) ++b;
    return b;
}

/* The rows that bucket computes (0 when none runs). */
ERT_HD int ert_bucket_rows(const int *bucket_rows, int num_buckets, int count) {
    const int b = ert_bucket_index(bucket_rows, num_buckets, count);
    return b < num_buckets ? bucket_rows[b] : 0;
}

typedef struct ert_backend_config {
    int device;     /* N of cuda:N; 0 for cpu */
    int max_rows;   /* the session's maximum batch */
    ert_dtype dtype;
    /* optional: the row buckets a graph will run ops at (graph_begin's), so that ops
     * that reserve per row count (cuDNN's workspace) cover them before any capture */
    const int *bucket_rows;
    int num_buckets;
    int threads; /* cpu: threads for the ops, 1..ERT_MAX_THREADS; 0 = ert_cpu_threads_default */
} ert_backend_config;

/* The threads a CPU session's ops run on when its options leave it open: ERT_CPU_THREADS
 * if set (a whole number 1..ERT_MAX_THREADS, else an error), else the CPUs this process
 * may run on (its affinity mask, fewer under a cgroup CPU quota), at most
 * ERT_MAX_THREADS. */
ert_status ert_cpu_threads_default(int *out);
/* 1 when ERT_CPU_THREADS is set (not empty): the default count was chosen by the user. */
int ert_cpu_threads_given(void);
/* ERT_OK for a thread count the options may hold (0: the default, or 1..ERT_MAX_THREADS). */
ert_status ert_threads_check(int threads);

typedef struct ert_backend_ops {
    const char *name;
    int host_memory; /* 1 if backend memory is host memory (no syncs to count) */

    ert_status (*create)(const ert_backend_config *cfg, ert_backend **out);
    void (*destroy)(ert_backend *be);
    const char *(*device_name)(const ert_backend *be);
    size_t (*act_elem_size)(const ert_backend *be); /* bytes per activation element */

    /* Backend memory (zeroed), never dereferenced by the runtime. */
    ert_status (*alloc)(ert_backend *be, size_t bytes, void **out);
    void (*release)(ert_backend *be, void *ptr);
    /* Host staging memory the device copies from and to without a bounce (pinned on
     * CUDA, plain on the CPU). */
    ert_status (*host_alloc)(ert_backend *be, size_t bytes, void **out);
    void (*host_release)(ert_backend *be, void *ptr);
    /* Host to backend, in stream order: `src` (staging memory) must stay unchanged until
     * the next download or sync returns. */
    ert_status (*upload)(ert_backend *be, void *dst, const void *src, size_t bytes);
    /* Backend to host; returns when the data is there (a host synchronisation on a
     * device). */
    ert_status (*download)(ert_backend *be, void *dst, const void *src, size_t bytes);
    /* Backend to host staging memory in stream order, without waiting: the data is there
     * once the next download or sync returns (results: several copies, one wait). */
    ert_status (*download_async)(ert_backend *be, void *dst, const void *src, size_t bytes);
    ert_status (*sync)(ert_backend *be);

    ert_status (*op_new)(ert_backend *be, const ert_op_desc *desc, ert_op **out);
    void (*op_free)(ert_backend *be, ert_op *op);
    ert_status (*op_run)(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y);
    /* Optional (NULL: never). Asks the backend to run `next`, the op that reads `op`'s
     * output, inside `op`: on ERT_OK, op_run(op) reads op's input and writes next's output
     * with the answers of the two run apart, and next is not run (both are freed as
     * usual, op first); ERT_ERR_UNSUPPORTED (no message): run them apart. Called at
     * session creation, before any run or capture. */
    ert_status (*op_fuse)(ert_backend *be, ert_op *op, const ert_op *next);
    /* y += x over rows x width activations (the residual connection). */
    ert_status (*add)(ert_backend *be, ert_rows rows, int width, const void *x, void *y);
    ert_status (*decide)(ert_backend *be, const ert_decide_args *args);
    ert_status (*compact)(ert_backend *be, const ert_compact_args *args);

    ert_status (*event_new)(ert_backend *be, ert_event **out);
    void (*event_free)(ert_backend *be, ert_event *ev);
    ert_status (*event_record)(ert_backend *be, ert_event *ev);
    /* Milliseconds between two recorded events; waits for the later one. */
    ert_status (*event_elapsed_ms)(ert_backend *be, const ert_event *a, const ert_event *b, double *ms);

    /* Graph mode (the CPU backend records the calls and replays them with these semantics,
     * so the runtime's graph path is tested everywhere). Between graph_begin and
     * graph_end, op_run, add, decide, compact and event_record are captured, not run;
     * upload, download, sync, alloc, host_alloc and event_new are refused (by message;
     * check_backend_refusals in test/backend_testutil.c). An op given rows.dev_count
     * whose library needs the row count on the host (GEMM, convolution) is captured once
     * per bucket (bucket_rows, increasing, the last >= every count) into a SWITCH node;
     * on the device, the kernel that writes the count (compact) or a selector before the
     * first such op picks the smallest bucket >= the count, and a count of 0 picks none.
     * Ops given rows without dev_count are captured as they are (host-known counts).
     * graph_end(be, NULL) ends and discards the capture (after an error). */
    ert_status (*graph_begin)(ert_backend *be, const int *bucket_rows, int num_buckets);
    ert_status (*graph_end)(ert_backend *be, ert_graph **out);
    ert_status (*graph_launch)(ert_backend *be, ert_graph *g);
    void (*graph_free)(ert_backend *be, ert_graph *g);
} ert_backend_ops;

/* The backends compiled into this build. ert_backend_cuda() is NULL without CUDA. */
const ert_backend_ops *ert_backend_cpu(void);
const ert_backend_ops *ert_backend_cuda(void);

/* A backend's libraries, their versions as loaded, one line without its newline
 * (ert_build_info). ert_cuda_libraries says "not built in" without CUDA. */
void ert_cpu_libraries(char *buf, size_t len);
void ert_cuda_libraries(char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
