/* The CPU backend's ops: the plain reference every other backend is tested against. */
#ifndef ERT_CPU_H
#define ERT_CPU_H

#include "backend.h"

/* Linear ops run their GEMM on blocks of exactly this many rows (the last block padded),
 * so a row's result never depends on how many rows run with it: OpenBLAS picks kernels
 * (and summation orders) by matrix size, and `masked` and `compact` must agree exactly. */
#define ERT_CPU_GEMM_ROWS 64
/* ... and on ranges of this many output columns (the last range shorter), so that a
 * small batch still gives every thread work (parallel.c); the shapes depend on the op
 * alone, never on the batch or the thread count. */
#define ERT_CPU_LINEAR_COLS 256

/* Convolutions run one GEMM per group on blocks of a fixed number of samples (the last
 * block padded), for the same reason and because one sample's GEMM of H'W' columns (49
 * at 7x7) is too narrow to run near the GEMM's peak: samples = 512 / (H'W'), at least
 * 1 and at most ERT_CPU_GEMM_ROWS, side by side in the GEMM's columns. The GEMM's width
 * is rounded up to a multiple of ERT_CPU_CONV_ALIGN (the padding columns stay 0):
 * OpenBLAS computes the last columns of a width that is not a multiple of its unroll
 * with an edge kernel that rounds differently, which would make the block's last sample
 * differ from the others (test_conv checks). bench/NOTES.md ("CPU convolutions") has
 * the measurements. */
#define ERT_CPU_CONV_COLUMNS 512
#define ERT_CPU_CONV_ALIGN 64
/* Each block's GEMM runs as ranges of this many columns, side by side on the backend's
 * threads, so that a batch of one block (one 28x28 sample: 832 columns) still gives
 * every thread work. A block of one sample may end in a shorter range (its columns are
 * always in the same range); in a block of several every range is this wide (the width
 * rounded up to a multiple of it), because a sample's columns land in one range or
 * another by its place in the block, and OpenBLAS picks kernels by the GEMM's size (its
 * small-matrix kernel rounds differently: 256 and 192 columns gave other bits). */
#define ERT_CPU_CONV_RANGE 256

static inline void ert_cpu_conv_block(int hw, int *samples, int *cols) {
    int n = hw > 0 ? ERT_CPU_CONV_COLUMNS / hw : 1;
    n = n < 1 ? 1 : n > ERT_CPU_GEMM_ROWS ? ERT_CPU_GEMM_ROWS : n;
    const int align = n > 1 && n * hw > ERT_CPU_CONV_RANGE ? ERT_CPU_CONV_RANGE : ERT_CPU_CONV_ALIGN;
    *samples = n;
    *cols = (n * hw + align - 1) / align * align;
}

/* A linear op's GEMMs on oneDNN, weights packed once (onednn.c). */
typedef struct ert_cpu_mm ert_cpu_mm;
/* The op's oneDNN GEMMs for `threads` threads in *out, or NULL and why not in `why` (the
 * op then runs on OpenBLAS); an error only for what should stop the op: no memory, a bad
 * ERT_CPU_GEMM, or ERT_CPU_GEMM=onednn where oneDNN cannot be used. */
ert_status ert_cpu_mm_new(ert_backend *be, const ert_op_desc *d, int threads, ert_cpu_mm **out, char *why,
                          size_t why_len);
void ert_cpu_mm_free(ert_backend *be, ert_cpu_mm *m);
/* x's rows (at most ERT_CPU_GEMM_ROWS, `in` wide) times the transposed weights of column
 * range `part`, without bias (unless fused): into `thread`'s dense rows x width buffer,
 * returned (NULL if oneDNN failed to run it). */
float *ert_cpu_mm_run(const ert_cpu_mm *m, int thread, int part, int rows, const float *x);
/* 1 when ert_cpu_mm_run's rows are final: a GELU op, whose primitives add the bias and
 * apply GELU (oneDNN's vectorised erf; glibc's erff, one value at a time, was a fifth of
 * fmnist-mlp's time). */
int ert_cpu_mm_fused(const ert_cpu_mm *m);

/* The smallest primitive m runs: a block's last rows below it run padded to it (1 unless
 * oneDNN's smaller primitives give other bits; onednn.c). */
int ert_cpu_mm_min_rows(const ert_cpu_mm *m);

/* A convolution on oneDNN: its primitive for one sample, weights packed once (onednn.c).
 * The op's oneDNN convolution for `threads` threads in *out, or NULL and why not (the op
 * then runs on OpenBLAS); errors as ert_cpu_mm_new's. */
typedef struct ert_cpu_conv ert_cpu_conv;
ert_status ert_cpu_conv_new(ert_backend *be, const ert_op_desc *d, int threads, ert_cpu_conv **out, char *why,
                            size_t why_len);
void ert_cpu_conv_free(ert_backend *be, ert_cpu_conv *c);
/* One sample x (C, H, W) -> y (K, H', W'), bias added, GELU applied (a GELU op; relu is
 * the caller's), on `thread`'s buffers; 0, or -1 if oneDNN refused to run it. */
int ert_cpu_conv_run(const ert_cpu_conv *c, int thread, const float *x, float *y);
/* The channel block of the primitive's output layout when a pool can read it as it is
 * (ert_cpu_pool_blocked: NHWC, nChw16c/8c/4c or NCHW), else 0 (also for NULL). */
int ert_cpu_conv_dst_block(const ert_cpu_conv *c);
/* As ert_cpu_conv_run, but the result stays in the primitive's layout, in `thread`'s
 * buffer (valid until its next call), returned; NULL if oneDNN refused to run it or the
 * layout has no block (ert_cpu_conv_dst_block 0). */
const float *ert_cpu_conv_run_blocked(const ert_cpu_conv *c, int thread, const float *x);

/* "oneDNN 2.6.3 (built against 2.6)", as loaded, or "oneDNN not built in". */
void ert_cpu_onednn_version(char *buf, size_t len);

/* A block of the backend's memory (64-byte aligned, zeroed), counted against its limit;
 * `change` says what to change when the limit refuses it. */
ert_status ert_cpu_hold(ert_backend *be, size_t bytes, const char *change, void **out);
void ert_cpu_release(ert_backend *be, void *ptr);

struct ert_op {
    ert_op_desc desc;
    ert_cpu_mm *mm; /* LINEAR on oneDNN (then weight is NULL), else NULL: OpenBLAS */
    ert_cpu_conv *conv; /* CONV2D on oneDNN (then weight is NULL), else NULL: OpenBLAS */
    char gemm[160]; /* LINEAR, CONV2D: "onednn", or "openblas (why)" */
    float *weight; /* owned copies of the descriptor's host arrays */
    float *bias;
    int samples;   /* CONV2D on OpenBLAS: samples per GEMM, and the GEMM's columns (ert_cpu_conv_block) */
    int cols;
    int threads;   /* the backend's: tasks run on up to this many threads (parallel.c) */
    size_t pad_floats; /* scratch per thread: thread t's starts at pad + t * pad_floats */
    float *pad;    /* the op's own (never shared: its zeros are kept), a block of the
                      backend's (counted against its memory limit):
                      LINEAR on OpenBLAS: ERT_CPU_GEMM_ROWS x (in + out) for the last,
                      partial block (on oneDNN: its own scratch, in mm);
                      CONV2D on OpenBLAS: the im2col columns of a block of samples,
                      one group, then the GEMM's output (on oneDNN: in conv);
                      a padded pool: the padded plane (ert_cpu_pool_scratch) */
    const ert_op *then; /* CONV2D on oneDNN: the pool it runs on each sample's output
                           (backend op_fuse; ert_cpu_conv_fusable), else NULL */
};

/* Runs fn(ctx, task, thread) for every task in [0, tasks) on up to `threads` threads
 * (thread in [0, threads): the index of its scratch); returns when all have run. */
typedef void (*ert_cpu_task)(void *ctx, int task, int thread);
/* What an op's tasks share: task t is part t % parts of row block t / parts (a linear's
 * column range, a convolution's GEMM column range; pooling: one part, one sample). */
typedef struct ert_cpu_job {
    const ert_op *op;
    int rows, parts;
    const float *x;
    float *y;
    _Atomic int failed; /* set by a task that could not run (a oneDNN call refused) */
} ert_cpu_job;
void ert_cpu_parallel(int threads, int tasks, ert_cpu_task fn, void *ctx);
/* Sets OpenBLAS to one thread, once per process: the backend's own threads run GEMMs
 * side by side (parallel.c); and has a forked child run its tasks on one thread. */
void ert_cpu_blas_setup(void);
/* The CPUs a cgroup CPU quota allows (ceil(quota / period), at most ERT_MAX_THREADS), from
 * the text of its quota and period (cgroup v2's cpu.max holds both, v1 has two files); 0
 * when there is none ("max", -1) or the text is not a number. */
int ert_cpu_quota_parse(const char *quota, const char *period);
/* The tightest limits the process's cgroup and its ancestors put on it (cgroup.c). */
typedef struct ert_cgroup_limits {
    size_t memory; /* bytes; SIZE_MAX: none */
    int cpus;      /* ceil(quota / period) of the tightest CPU quota; 0: none */
} ert_cgroup_limits;
/* From `self`, the text of /proc/self/cgroup ("ID:CONTROLLERS:PATH" lines; v2's ID 0 and
 * no controllers), and `mountinfo`, the text of /proc/self/mountinfo (where each hierarchy
 * is mounted, and the cgroup the mount shows as its root): v2's memory.max and cpu.max,
 * v1's memory.limit_in_bytes and cpu.cfs_quota_us / cpu.cfs_period_us, in the process's
 * cgroup and each ancestor up to the mount's root; a level without the file counts for
 * nothing. */
ert_cgroup_limits ert_cgroup_read(const char *self, const char *mountinfo);
/* ert_cgroup_read of this process's /proc/self/cgroup and /proc/self/mountinfo. */
ert_cgroup_limits ert_cgroup_limits_of_process(void);
/* A whole decimal number > 0 and nothing else (a byte count); 0 if `text` is not one. */
int ert_cpu_parse_bytes(const char *text, size_t *out);
/* The most threads any op of this process has run on (1: every task ran on its caller),
 * so that tests can tell that their ops really ran in parallel. */
int ert_cpu_widest_team(void);
/* How many conv2d + pool pairs the CPU backends of this process have fused (op_fuse),
 * so that tests can tell that a fused path ran. */
int ert_cpu_fused_ops(void);

/* The rows an op must process: the host count, clamped to 0..n by the count in memory
 * (as ert_cuda_rows). */
static inline int ert_cpu_rows(ert_rows rows) {
    if (rows.dev_count && *rows.dev_count < rows.n) return *rows.dev_count > 0 ? *rows.dev_count : 0;
    return rows.n;
}

/* 0, or -1 if a oneDNN call refused to run (the outputs are then incomplete). */
int ert_cpu_linear(const ert_op *op, int rows, const float *x, float *y);
void ert_cpu_layernorm(const ert_op *op, int rows, const float *x, float *y);
void ert_cpu_normalize(const ert_op *op, int rows, const float *x, float *y);
void ert_cpu_add(int threads, int rows, int width, const float *x, float *y);
int ert_cpu_conv2d(const ert_op *op, int rows, const float *x, float *y);
void ert_cpu_pool(const ert_op *op, int rows, const float *x, float *y);
/* Whether conv2d `op` can run `pool` on its output sample by sample (op->then): a
 * convolution on oneDNN (one sample at a time) whose output layout a pool can read
 * (ert_cpu_conv_dst_block), and a pool of exactly its output. */
int ert_cpu_conv_fusable(const ert_op *op, const ert_op *pool);
/* One sample of pool `op`'s input in a channel-blocked layout (block B: channel c of
 * pixel p at (c / B * H * W + p) * B + c % B; B = C is NHWC, B = 1 NCHW), relu applied to
 * each value first when `relu`, pooled into y (NCHW): the bits of relu, then the pool op
 * on the NCHW sample. */
void ert_cpu_pool_blocked(const ert_op *op, const float *x, int block, int relu, float *y);
/* A pool's scratch per thread (floats): its padded plane, or 0 when every window lies in
 * the input; ert_cpu_pool_prepare fills the op's scratch with the padding's value. */
size_t ert_cpu_pool_scratch(const ert_conv_geom *g);
void ert_cpu_pool_prepare(const ert_op *op);
void ert_cpu_relu(const ert_op *op, int rows, const float *x, float *y);
void ert_cpu_decide(const ert_decide_args *a);
void ert_cpu_compact(const ert_compact_args *a);

#endif
