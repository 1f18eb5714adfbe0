/*
 * Private to the CUDA backend: the backend and op structs, the one error check for CUDA,
 * cuBLASLt and cuDNN calls, activation storage types usable from kernels, and the entry points
 * of each op family (one .cu per family, dispatched from backend_cuda.cu).
 *
 * Everything here runs on the backend's own non-blocking stream; nothing synchronises
 * the host except download, sync, event_elapsed_ms and setup (create, op_new).
 */
#ifndef ERT_CUDA_COMMON_CUH
#define ERT_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#ifdef ERT_WITH_CUDNN
#include <cudnn.h>
#endif

#include "backend.h"
#include "dtype.h"

/* cuBLASLt workspace per backend: NVIDIA recommends 32 MiB on Hopper so that heuristics
 * may pick split-K and stream-K kernels. Allocated once at create; GEMMs never allocate. */
#define ERT_CUDA_WORKSPACE_BYTES ((size_t)32 << 20)

/* Row ranges of a linear op, one GEMM algorithm each (not graph mode's row buckets,
 * ERT_MAX_BUCKETS): up to 1, 2, 4, ... below max_rows, then max_rows. 32 covers any int
 * row count. */
#define ERT_CUDA_MAX_ALGO_RANGES 32

/* Compaction uses the fused single-kernel path for at most this many rows when
 * ERT_COMPACT_PATH is auto (or unset), and CUB's device scan above it. The fused kernel
 * recomputes each block's prefix from the keep flags (an O(rows^2 / 64) byte read from
 * L2) but saves the scan's launches. Measured on the H200 (bf16, half the rows kept,
 * back-to-back, microseconds, cub / fused):
 *   width   64:  n=1024 13.0 / 5.6   n=4096 12.9 / 6.4   n=16384 12.4 / 7.9   n=65536 14.8 / 17.2
 *   width 2048:  n=1024 13.1 / 14.4  n=4096 17.2 / 15.9  n=16384 38.1 / 42.3
 * (the prefix recount costs little below ~16k rows; the row width decides, below). */
#define ERT_CUDA_COMPACT_FUSED_MAX_ROWS 8192
/* ... and only for rows of at most this many bytes: each fused block copies its 64 rows
 * through one SM, which wide rows make slower than CUB's grid-wide gather. Measured on
 * the H200 (ert_micro, bf16, bench/results/2026-11-28-h200-eager.md), fused vs CUB in us:
 * 2 KiB rows: 15.3 vs 19.2 (B 64), 15.5 vs 22.4 (1024), 16.3 vs 27.0 (8192);
 * 8 KiB rows: 32.2 vs 18.9, 32.4 vs 22.4, 79.5 vs 55.6. */
#define ERT_CUDA_COMPACT_FUSED_MAX_ROW_BYTES 4096

typedef enum ert_cuda_compact_path {
    ERT_CUDA_COMPACT_AUTO = 0,
    ERT_CUDA_COMPACT_CUB,
    ERT_CUDA_COMPACT_FUSED
} ert_cuda_compact_path;

/* ---------------------------------------------------------------- graph mode (graph.cu) */

/* A route: the SWITCH nodes (captured row-dependent ops) whose bucket one kernel picks
 * from one device count; at most ERT_CUDA_MAX_SWITCH nodes each. A count read by more
 * nodes than that gets further routes, each with its own selector kernel, so the only
 * limit is ERT_CUDA_MAX_ROUTES per graph (16,640 SWITCH nodes). */
#define ERT_CUDA_MAX_SWITCH 64
#define ERT_CUDA_MAX_ROUTES (4 * (ERT_MAX_STAGES + 1))

/* In device memory, one per route of a graph: what the kernel that finishes a count
 * needs to pick the row bucket of every SWITCH node of the route. */
typedef struct ert_cuda_route {
    int num_buckets;
    int bucket_rows[ERT_MAX_BUCKETS];
    int num_handles;
    cudaGraphConditionalHandle handles[ERT_CUDA_MAX_SWITCH];
} ert_cuda_route;

/* The capture in progress (host side). */
typedef struct ert_cuda_capture {
    int active;
    int num_buckets;
    int bucket_rows[ERT_MAX_BUCKETS];
    ert_cuda_route *routes;                         /* device, ERT_CUDA_MAX_ROUTES (NULL: no buckets) */
    int num_routes;
    const int32_t *route_count[ERT_CUDA_MAX_ROUTES]; /* the device count each route follows */
    int route_handles[ERT_CUDA_MAX_ROUTES];
    cudaGraphConditionalHandle handles[ERT_CUDA_MAX_ROUTES][ERT_CUDA_MAX_SWITCH];
    int switches;                                    /* SWITCH nodes captured, for messages */
} ert_cuda_capture;

struct ert_backend {
    int device;
    int max_rows;
    int bucket_rows[ERT_MAX_BUCKETS], num_buckets; /* the config's: conv.cu sizes for them */
    ert_dtype dtype;
    ert_cuda_compact_path compact_path; /* from ERT_COMPACT_PATH, read once at create */
    cudaStream_t stream;                /* non-blocking: no implicit sync with stream 0 */
    cublasLtHandle_t lt;                /* one per backend (per session), never global */
    void *workspace;                    /* cuBLASLt workspace, ERT_CUDA_WORKSPACE_BYTES */
    size_t workspace_bytes;
    float *scratch;                     /* f32 GEMM output of ops whose epilogue runs in
                                           our kernel and whose output is 16-bit; shared by
                                           all ops (they run in stream order) */
    size_t scratch_bytes;
    void *scan_temp;                    /* CUB device-scan temp storage for max_rows */
    size_t scan_temp_bytes;
    int32_t *scan_offsets;              /* max_rows exclusive prefix sums of keep flags */
    char name[320];                     /* "cuda:0 (NVIDIA H200)" */
    cudaStream_t body_stream;           /* graph.cu: SWITCH bodies are captured on it */
    ert_cuda_capture *cap;              /* graph.cu: non-NULL while a graph is captured */
    int live_graphs;                    /* graph.cu: instantiated and not yet freed; they
                                           hold the shared buffers' addresses, which may
                                           not move (ert_cuda_grow_buffer) */
    long fail_switch;                   /* graph.cu: ERT_CUDA_GRAPH_FAIL_AT, 0 = never */
    int route_switches;                 /* graph.cu: SWITCH nodes per route, at most
                                           ERT_CUDA_MAX_SWITCH (ERT_CUDA_GRAPH_ROUTE_SWITCHES
                                           lowers it, for tests of the overflow) */
#ifdef ERT_WITH_CUDNN
    cudnnHandle_t cudnn;                /* conv.cu: created at the first conv op, on `stream` */
    void *cudnn_workspace;              /* conv.cu: grown at op_new only, never in a run */
    size_t cudnn_workspace_bytes;
#endif
};

struct ert_op {
    ert_op_type type;
    char name[128]; /* copy of desc->name, for messages at run time */
    int in, out, channels, max_rows;
    int act;        /* ert_activation */
    int f32_out;
    float eps;
    void *weight;   /* device. LINEAR: out x in in the activation type; NORMALIZE: scale;
                       LAYERNORM: in (NULL = 1). Norm parameters stay f32. */
    void *bias;     /* device. LINEAR: out, in the type the epilogue reads (see linear.cu);
                       LAYERNORM: in (NULL = 0); NORMALIZE: shift */

    /* LINEAR only (linear.cu). The descriptors live inside the op (cuBLASLt's Init
     * variants), so preparing an op allocates no host memory and freeing it is trivial. */
    cublasLtMatmulDescOpaque_t matmul;
    cublasLtMatrixLayoutOpaque_t a_layout;
    cudaDataType_t ab_type;   /* A (weights) and B (x) element type */
    cudaDataType_t gemm_type; /* C/D element type of the GEMM itself */
    int post_act;             /* -1: the epilogue did everything; else our kernel
                                 applies this ert_activation after the GEMM */
    int post_from_f32;        /* 1: it reads the f32 GEMM output and adds the f32 bias;
                                 0: it works in place on y (the epilogue added the bias) */
    int use_scratch;          /* the GEMM writes be->scratch, our kernel writes y */
    int num_ranges;           /* the GEMM's algorithm per range of rows: range b holds up to
                                 range_rows[b] rows (powers of two, then max_rows) */
    int range_rows[ERT_CUDA_MAX_ALGO_RANGES];
    cublasLtMatmulAlgo_t algo[ERT_CUDA_MAX_ALGO_RANGES];

    /* CONV2D, MAXPOOL, AVGPOOL: the window over one [C, H, W] sample. */
    ert_conv_geom geom;
    struct ert_cuda_conv *conv; /* CONV2D: cuDNN descriptors and the chosen plan (conv.cu) */
};

struct ert_event {
    cudaEvent_t ev;
};

/* ---------------------------------------------------------------- errors */

/* The one check for CUDA runtime and cuBLAS(Lt) status codes: ERT_OK on success, else
 * an ert_error naming the expression, file and line (cudaErrorMemoryAllocation and
 * CUBLAS_STATUS_ALLOC_FAILED map to ERT_ERR_OUT_OF_MEMORY, the rest to ERT_ERR_BACKEND). */
ert_status ert_cuda_status(cudaError_t err, const char *expr, const char *file, int line);
ert_status ert_cuda_status(cublasStatus_t err, const char *expr, const char *file, int line);
#ifdef ERT_WITH_CUDNN
/* cuDNN: allocation failures map to ERT_ERR_OUT_OF_MEMORY, the NOT_SUPPORTED family to
 * ERT_ERR_UNSUPPORTED, the rest to ERT_ERR_BACKEND; cuDNN's own last message is appended. */
ert_status ert_cuda_status(cudnnStatus_t err, const char *expr, const char *file, int line);
#endif

#define ERT_CUDA_CHECK(expr) ert_cuda_status((expr), #expr, __FILE__, __LINE__)

/* For functions with one cleanup path: needs `ert_status st` and a `fail:` label. */
#define ERT_CUDA_TRY(expr)                                   \
    do {                                                     \
        st = ERT_CUDA_CHECK(expr);                           \
        if (st != ERT_OK) goto fail;                         \
    } while (0)

/* Makes the backend's device current for this host thread: a stream may only take work
 * while its own device is current, and several sessions (devices) may share a thread. */
ert_status ert_cuda_use(const ert_backend *be);

/* ---------------------------------------------------------------- kernels' helpers */

static inline __host__ __device__ int ert_ceil_div(int a, int b) { return (a + b - 1) / b; }
static inline __host__ __device__ long long ert_ceil_div_ll(long long a, long long b) { return (a + b - 1) / b; }

/* The rows a kernel must process: the host count, clamped on the device by the exact
 * count in device memory when there is one (see ert_rows in backend.h). */
static __device__ __forceinline__ int ert_cuda_rows(int n, const int32_t *dev_count) {
    if (dev_count) {
        const int c = *dev_count;
        return c < n ? (c > 0 ? c : 0) : n;
    }
    return n;
}

/* Activation storage: f32 as float; bf16 and f16 as their raw 16 bits, converted with
 * dtype.h's shared round-to-nearest-even functions, so device results round exactly like
 * the host conversions of weights and test data. */
struct ert_act_f32 {
    typedef float storage;
    static __device__ __forceinline__ float load(float v) { return v; }
    static __device__ __forceinline__ float store(float v) { return v; }
};
struct ert_act_bf16 {
    typedef uint16_t storage;
    static __device__ __forceinline__ float load(uint16_t v) { return ert_bf16_to_f32(v); }
    static __device__ __forceinline__ uint16_t store(float v) { return ert_f32_to_bf16(v); }
};
struct ert_act_f16 {
    typedef uint16_t storage;
    static __device__ __forceinline__ float load(uint16_t v) { return ert_f16_to_f32(v); }
    static __device__ __forceinline__ uint16_t store(float v) { return ert_f32_to_f16(v); }
};

/* Calls f(tag) with the storage tag of `dtype` (tf32 stores f32). */
template <typename F>
static ert_status ert_cuda_dispatch_dtype(ert_dtype dtype, F &&f) {
    switch (dtype) {
    case ERT_DTYPE_F32:
    case ERT_DTYPE_TF32: return f(ert_act_f32());
    case ERT_DTYPE_BF16: return f(ert_act_bf16());
    case ERT_DTYPE_F16: return f(ert_act_f16());
    }
    return ert_error(ERT_ERR_DTYPE, "cuda backend: unknown dtype %d", (int)dtype);
}

size_t ert_cuda_elem_size(ert_dtype dtype);

/* ---------------------------------------------------------------- op families */

/* linear.cu: prepares (weights, heuristics) / runs an ERT_OP_LINEAR op. */
ert_status ert_cuda_linear_new(ert_backend *be, const ert_op_desc *desc, ert_op *op);
ert_status ert_cuda_linear_run(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y);

/* norm.cu: ERT_OP_LAYERNORM and ERT_OP_NORMALIZE, and the residual add. */
ert_status ert_cuda_norm_new(ert_backend *be, const ert_op_desc *desc, ert_op *op);
ert_status ert_cuda_norm_run(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y);
ert_status ert_cuda_add(ert_backend *be, ert_rows rows, int width, const void *x, void *y);

/* conv.cu: ERT_OP_CONV2D through cuDNN; without cuDNN (not found at build time) op_new
 * says ERT_ERR_UNSUPPORTED. conv_free releases op->conv (NULL-safe); cudnn_destroy the
 * backend's cuDNN handle and workspace (at backend destroy). */
ert_status ert_cuda_conv_new(ert_backend *be, const ert_op_desc *desc, ert_op *op);
ert_status ert_cuda_conv_run(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y);
void ert_cuda_conv_free(ert_backend *be, ert_op *op);
void ert_cuda_cudnn_destroy(ert_backend *be);

/* pool.cu: ERT_OP_MAXPOOL, ERT_OP_AVGPOOL and ERT_OP_RELU (plain kernels, no cuDNN). */
ert_status ert_cuda_pool_new(ert_backend *be, const ert_op_desc *desc, ert_op *op);
ert_status ert_cuda_pool_run(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y);

/* graph.cu. capture_switch captures `run` (an op family's run) once per row bucket into a
 * SWITCH node on the capture in progress; route_of opens a route following `count` and
 * returns it (device memory) for the kernel that writes that count (compact), which then
 * sets its handles: ert_cuda_route_set. */
typedef ert_status (*ert_cuda_run_fn)(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y);
ert_status ert_cuda_capture_switch(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y,
                                   ert_cuda_run_fn run);
ert_status ert_cuda_route_of(ert_backend *be, const int32_t *count, const ert_cuda_route **out);
ert_status ert_cuda_graph_begin(ert_backend *be, const int *bucket_rows, int num_buckets);
ert_status ert_cuda_graph_end(ert_backend *be, ert_graph **out);
ert_status ert_cuda_graph_launch(ert_backend *be, ert_graph *g);
void ert_cuda_graph_free(ert_backend *be, ert_graph *g);

/* Picks the bucket of `count` (the smallest bucket >= count; none for 0) for every SWITCH
 * node the route feeds. One thread calls it (concurrent calls are undefined). */
static __device__ __forceinline__ void ert_cuda_route_set(const ert_cuda_route *r, int count) {
    if (!r) return;
    const unsigned b = (unsigned)ert_bucket_index(r->bucket_rows, r->num_buckets, count);
    for (int i = 0; i < r->num_handles; ++i) cudaGraphSetConditional(r->handles[i], b);
}

/* decide.cu */
ert_status ert_cuda_decide(ert_backend *be, const ert_decide_args *args);

/* compact.cu. temp_bytes: CUB scan temp storage needed for max_rows rows. */
ert_status ert_cuda_compact_temp_bytes(ert_backend *be, int max_rows, size_t *bytes);
ert_status ert_cuda_compact(ert_backend *be, const ert_compact_args *args);

/* Copies host memory to the device in stream order and waits, so `src` may be freed on
 * return (setup only: op_new). */
ert_status ert_cuda_upload_sync(ert_backend *be, void *dst, const void *src, size_t bytes);

/* Op parameters: n host floats converted to `t` (CUDA_R_32F, _16BF or _16F) and uploaded
 * into fresh device memory *out (released with cudaFree; *out stays NULL on failure of
 * the allocation). Setup only. */
ert_status ert_cuda_upload_params(ert_backend *be, const float *src, size_t n, cudaDataType_t t, void **out);

/* Grows be->scratch (f32, shared by the ops of the backend: they run in stream order) to
 * at least `bytes` (ert_cuda_grow_buffer). Setup only (op_new). */
ert_status ert_cuda_reserve_scratch(ert_backend *be, size_t bytes);
/* Grows *buf to `bytes` (if smaller): the new buffer first, so a failure keeps the old one;
 * refused while a graph is captured or instantiated (it holds the old address). */
ert_status ert_cuda_grow_buffer(ert_backend *be, void **buf, size_t *size, size_t bytes, const char *what);

#endif
