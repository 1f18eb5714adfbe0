/* The CUDA backend's table: device, stream, cuBLASLt handle and workspace per backend
 * (and a cuDNN handle once a convolution needs one, conv.cu),
 * memory, transfers, events, and the dispatch of ops to their family's file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

/* ---------------------------------------------------------------- errors */

/* __FILE__ is an absolute path under CMake; keep the part from "kernels/" on. */
static const char *short_path(const char *file) {
    const char *k = strstr(file, "kernels/");
    return k ? k : file;
}

ert_status ert_cuda_status(cudaError_t err, const char *expr, const char *file, int line) {
    if (err == cudaSuccess) return ERT_OK;
    /* Reported here, so cleared: the runtime keeps a failed call's error as the thread's
     * last error, and the next launch check (cudaGetLastError) would report it again for
     * an unrelated kernel. A sticky error (a faulted kernel) stays: the context is lost. */
    (void)cudaGetLastError();
    const ert_status st = err == cudaErrorMemoryAllocation ? ERT_ERR_OUT_OF_MEMORY : ERT_ERR_BACKEND;
    return ert_error(st, "CUDA error %s (%s) in %s at %s:%d", cudaGetErrorName(err), cudaGetErrorString(err), expr,
                     short_path(file), line);
}

ert_status ert_cuda_status(cublasStatus_t err, const char *expr, const char *file, int line) {
    if (err == CUBLAS_STATUS_SUCCESS) return ERT_OK;
    const ert_status st = err == CUBLAS_STATUS_ALLOC_FAILED ? ERT_ERR_OUT_OF_MEMORY : ERT_ERR_BACKEND;
    return ert_error(st, "cuBLASLt error %s (%s) in %s at %s:%d", cublasLtGetStatusName(err),
                     cublasLtGetStatusString(err), expr, short_path(file), line);
}

#ifdef ERT_WITH_CUDNN
ert_status ert_cuda_status(cudnnStatus_t err, const char *expr, const char *file, int line) {
    if (err == CUDNN_STATUS_SUCCESS) return ERT_OK;
    char detail[256] = "";
    cudnnGetLastErrorString(detail, sizeof detail);
    ert_status st = ERT_ERR_BACKEND;
    if (err == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
        err == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED)
        st = ERT_ERR_OUT_OF_MEMORY;
    else if (CUDNN_STATUS_CATEGORY(err) == CUDNN_STATUS_NOT_SUPPORTED)
        st = ERT_ERR_UNSUPPORTED;
    return ert_error(st, "cuDNN error %s in %s at %s:%d%s%s", cudnnGetErrorString(err), expr, short_path(file), line,
                     detail[0] ? ": " : "", detail);
}
#endif

ert_status ert_cuda_use(const ert_backend *be) {
    int cur = -1;
    /* Only switch when needed: the common case is a query, which is also safe while a
     * graph is being captured. */
    if (cudaGetDevice(&cur) == cudaSuccess && cur == be->device) return ERT_OK;
    return ERT_CUDA_CHECK(cudaSetDevice(be->device));
}

size_t ert_cuda_elem_size(ert_dtype dtype) {
    return (dtype == ERT_DTYPE_BF16 || dtype == ERT_DTYPE_F16) ? 2 : 4;
}

ert_status ert_cuda_upload_sync(ert_backend *be, void *dst, const void *src, size_t bytes) {
    ert_status st = ERT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, be->stream));
    if (st == ERT_OK) st = ERT_CUDA_CHECK(cudaStreamSynchronize(be->stream));
    return st;
}

/* n f32 values converted to `t` (f32, bf16 or f16) into dst, rounding as dtype.h does. */
static void convert_host(const float *src, size_t n, cudaDataType_t t, void *dst) {
    for (size_t i = 0; i < n; ++i) {
        if (t == CUDA_R_16BF) ((uint16_t *)dst)[i] = ert_f32_to_bf16(src[i]);
        else if (t == CUDA_R_16F) ((uint16_t *)dst)[i] = ert_f32_to_f16(src[i]);
        else ((float *)dst)[i] = src[i];
    }
}

ert_status ert_cuda_upload_params(ert_backend *be, const float *src, size_t n, cudaDataType_t t, void **out) {
    ert_status st = ERT_OK;
    const size_t bytes = (n ? n : 1) * (t == CUDA_R_32F ? 4 : 2);
    void *host = malloc(bytes);
    *out = NULL;
    if (!host) return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of host memory converting %zu values", n);
    convert_host(src, n, t, host);
    ERT_CUDA_TRY(cudaMalloc(out, bytes));
    st = ert_cuda_upload_sync(be, *out, host, bytes);
fail:
    free(host);
    return st;
}

ert_status ert_cuda_grow_buffer(ert_backend *be, void **buf, size_t *size, size_t bytes, const char *what) {
    ert_status st = ERT_OK;
    void *grown = NULL;
    if (bytes <= *size) return ERT_OK;
    if (be->cap || be->live_graphs)
        return ert_error(ERT_ERR_INVALID_ARGUMENT,
                         "%s: the %s would grow to %zu bytes while %s: create every op before capturing", be->name,
                         what, bytes, be->cap ? "a graph is captured" : "an instantiated graph uses it");
    ERT_CUDA_TRY(cudaMalloc(&grown, bytes));
    ERT_CUDA_TRY(cudaStreamSynchronize(be->stream)); /* nothing queued still uses the old one */
    (void)cudaFree(*buf);
    *buf = grown;
    *size = bytes;
    return ERT_OK;
fail:
    (void)cudaFree(grown);
    return st;
}

ert_status ert_cuda_reserve_scratch(ert_backend *be, size_t bytes) {
    return ert_cuda_grow_buffer(be, (void **)&be->scratch, &be->scratch_bytes, bytes, "f32 scratch buffer");
}

/* ---------------------------------------------------------------- create / destroy */

static void cuda_destroy(ert_backend *be) {
    if (!be) return;
    /* Errors are ignored here: destroy cannot report them, and each release below is
     * still worth attempting after a failure of the previous one. */
    (void)cudaSetDevice(be->device);
    if (be->cap) (void)ert_cuda_graph_end(be, NULL);
    if (be->stream) (void)cudaStreamSynchronize(be->stream);
    ert_cuda_cudnn_destroy(be);
    (void)cudaFree(be->scratch);
    (void)cudaFree(be->scan_offsets);
    (void)cudaFree(be->scan_temp);
    (void)cudaFree(be->workspace);
    if (be->lt) (void)cublasLtDestroy(be->lt);
    if (be->body_stream) (void)cudaStreamDestroy(be->body_stream);
    if (be->stream) (void)cudaStreamDestroy(be->stream);
    free(be);
}

/* ERT_COMPACT_PATH=cub|fused|auto forces a compaction path (benchmarks compare them). */
static ert_status read_compact_path(ert_cuda_compact_path *out) {
    const char *v = getenv("ERT_COMPACT_PATH");
    if (!v || !*v || strcmp(v, "auto") == 0) *out = ERT_CUDA_COMPACT_AUTO;
    else if (strcmp(v, "cub") == 0) *out = ERT_CUDA_COMPACT_CUB;
    else if (strcmp(v, "fused") == 0) *out = ERT_CUDA_COMPACT_FUSED;
    else return ert_error(ERT_ERR_INVALID_ARGUMENT, "ERT_COMPACT_PATH='%s': expected cub, fused or auto", v);
    return ERT_OK;
}

static ert_status cuda_create(const ert_backend_config *cfg, ert_backend **out) {
    ert_status st = ERT_OK;
    ert_backend *be = NULL;
    int count = 0;
    cudaDeviceProp prop;

    if (!cfg || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "cuda backend: NULL config or output");
    *out = NULL;
    if (cfg->max_rows <= 0)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "cuda:%d: max_rows %d must be positive", cfg->device, cfg->max_rows);
    if ((unsigned)cfg->dtype > (unsigned)ERT_DTYPE_F16)
        return ert_error(ERT_ERR_DTYPE, "cuda:%d: unknown dtype %d", cfg->device, (int)cfg->dtype);

    /* No driver, or a driver without devices, is "unsupported here", not a failure: the
     * caller (and the GPU tests) fall back or skip with this message. */
    const cudaError_t cerr = cudaGetDeviceCount(&count);
    if (cerr != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        return ert_error(ERT_ERR_UNSUPPORTED, "cuda:%d: no CUDA device (cudaGetDeviceCount: %s)", cfg->device,
                         cerr != cudaSuccess ? cudaGetErrorString(cerr) : "0 devices");
    }
    if (cfg->device < 0 || cfg->device >= count)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "cuda:%d: this machine has %d CUDA device(s)", cfg->device, count);

    be = (ert_backend *)calloc(1, sizeof *be);
    if (!be) return ert_error(ERT_ERR_OUT_OF_MEMORY, "cuda:%d: out of host memory", cfg->device);
    be->device = cfg->device;
    be->max_rows = cfg->max_rows;
    be->dtype = cfg->dtype;
    {
        int at;
        const char *why = ert_buckets_refusal(cfg->bucket_rows, cfg->num_buckets, cfg->max_rows, &at);
        if (why) {
            st = ert_error(ERT_ERR_INVALID_ARGUMENT, "cuda:%d: %d row buckets, at bucket %d: %s (%d)", cfg->device,
                           cfg->num_buckets, at, why, cfg->max_rows);
            goto fail;
        }
    }
    be->num_buckets = cfg->num_buckets;
    if (cfg->num_buckets) memcpy(be->bucket_rows, cfg->bucket_rows, sizeof(int) * (size_t)cfg->num_buckets);
    if ((st = read_compact_path(&be->compact_path)) != ERT_OK) goto fail;
    {
        const char *fail_at = getenv("ERT_CUDA_GRAPH_FAIL_AT"); /* graph.cu: fault injection for tests */
        be->fail_switch = fail_at ? strtol(fail_at, NULL, 10) : 0;
        /* graph.cu: fewer SWITCH nodes per route, so that tests reach further routes */
        const char *per_route = getenv("ERT_CUDA_GRAPH_ROUTE_SWITCHES");
        char *end = NULL;
        const long v = per_route && *per_route ? strtol(per_route, &end, 10) : ERT_CUDA_MAX_SWITCH;
        if ((end && *end) || v < 1 || v > ERT_CUDA_MAX_SWITCH) {
            st = ert_error(ERT_ERR_INVALID_ARGUMENT, "ERT_CUDA_GRAPH_ROUTE_SWITCHES='%s': expected 1..%d", per_route,
                           ERT_CUDA_MAX_SWITCH);
            goto fail;
        }
        be->route_switches = (int)v;
    }

    ERT_CUDA_TRY(cudaSetDevice(be->device));
    ERT_CUDA_TRY(cudaGetDeviceProperties(&prop, be->device));
    snprintf(be->name, sizeof be->name, "cuda:%d (%s)", be->device, prop.name);
    ERT_CUDA_TRY(cudaStreamCreateWithFlags(&be->stream, cudaStreamNonBlocking));
    ERT_CUDA_TRY(cublasLtCreate(&be->lt));
    be->workspace_bytes = ERT_CUDA_WORKSPACE_BYTES;
    ERT_CUDA_TRY(cudaMalloc(&be->workspace, be->workspace_bytes));
    ERT_CUDA_TRY(cudaMalloc((void **)&be->scan_offsets, (size_t)be->max_rows * sizeof(int32_t)));
    if ((st = ert_cuda_compact_temp_bytes(be, be->max_rows, &be->scan_temp_bytes)) != ERT_OK) goto fail;
    ERT_CUDA_TRY(cudaMalloc(&be->scan_temp, be->scan_temp_bytes ? be->scan_temp_bytes : 1));
    *out = be;
    return ERT_OK;
fail:
    cuda_destroy(be);
    return ert_error_context(st, "cuda:%d: ", cfg->device);
}

static const char *cuda_device_name(const ert_backend *be) { return be->name; }

static size_t cuda_act_elem_size(const ert_backend *be) { return ert_cuda_elem_size(be->dtype); }

/* ---------------------------------------------------------------- memory and transfers */

/* Memory, transfers and syncs are not part of a graph (backend.h): refused during a
 * capture, where a transfer would be recorded as a node that replays stale host data at
 * every launch, and a sync or an allocation would invalidate it. The CPU recording
 * refuses them alike. */
static ert_status not_capturing(const ert_backend *be, const char *what) {
    if (!be->cap) return ERT_OK;
    return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: %s while a graph is being captured", be->name, what);
}

static ert_status cuda_alloc(ert_backend *be, size_t bytes, void **out) {
    ert_status st = ERT_OK;
    void *p = NULL;
    *out = NULL;
    if ((st = not_capturing(be, "an allocation")) != ERT_OK) return st;
    ERT_CUDA_TRY(cudaSetDevice(be->device));
    ERT_CUDA_TRY(cudaMalloc(&p, bytes ? bytes : 1));
    /* Zeroed in stream order, so every later use on the stream sees zeros. */
    ERT_CUDA_TRY(cudaMemsetAsync(p, 0, bytes ? bytes : 1, be->stream));
    *out = p;
    return ERT_OK;
fail:
    (void)cudaFree(p);
    return ert_error_context(st, "%s: allocating %zu bytes: ", be->name, bytes);
}

static void cuda_release(ert_backend *be, void *ptr) {
    if (!ptr) return;
    (void)cudaSetDevice(be->device);
    /* cudaFree waits for the device, so pending kernels that use ptr finish first. */
    (void)cudaFree(ptr);
}

static ert_status cuda_host_alloc(ert_backend *be, size_t bytes, void **out) {
    ert_status st = ERT_OK;
    void *p = NULL;
    *out = NULL;
    if ((st = not_capturing(be, "an allocation")) != ERT_OK) return st;
    ERT_CUDA_TRY(cudaSetDevice(be->device));
    ERT_CUDA_TRY(cudaMallocHost(&p, bytes ? bytes : 1));
    memset(p, 0, bytes ? bytes : 1);
    *out = p;
    return ERT_OK;
fail:
    return ert_error_context(st, "%s: allocating %zu bytes of pinned host memory: ", be->name, bytes);
}

static void cuda_host_release(ert_backend *be, void *ptr) {
    if (!ptr) return;
    (void)cudaSetDevice(be->device);
    (void)cudaFreeHost(ptr);
}

static ert_status cuda_upload(ert_backend *be, void *dst, const void *src, size_t bytes) {
    ert_status st = not_capturing(be, "a transfer");
    if (st != ERT_OK || !bytes) return st;
    ERT_CUDA_TRY(cudaSetDevice(be->device));
    ERT_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, be->stream));
    return ERT_OK;
fail:
    return ert_error_context(st, "%s: upload of %zu bytes: ", be->name, bytes);
}

static ert_status cuda_download(ert_backend *be, void *dst, const void *src, size_t bytes) {
    ert_status st = not_capturing(be, "a transfer");
    if (st != ERT_OK) return st;
    ERT_CUDA_TRY(cudaSetDevice(be->device));
    if (bytes) ERT_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, be->stream));
    /* The contract: the data is on the host when download returns. This sync is also
     * where errors of earlier asynchronous kernels surface. */
    ERT_CUDA_TRY(cudaStreamSynchronize(be->stream));
    return ERT_OK;
fail:
    return ert_error_context(st, "%s: download of %zu bytes: ", be->name, bytes);
}

static ert_status cuda_download_async(ert_backend *be, void *dst, const void *src, size_t bytes) {
    ert_status st = not_capturing(be, "a transfer");
    if (st != ERT_OK || !bytes) return st;
    ERT_CUDA_TRY(cudaSetDevice(be->device));
    ERT_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, be->stream));
    return ERT_OK;
fail:
    return ert_error_context(st, "%s: download of %zu bytes: ", be->name, bytes);
}

static ert_status cuda_sync(ert_backend *be) {
    ert_status st = not_capturing(be, "a sync");
    if (st != ERT_OK) return st;
    ERT_CUDA_TRY(cudaSetDevice(be->device));
    ERT_CUDA_TRY(cudaStreamSynchronize(be->stream));
    return ERT_OK;
fail:
    return ert_error_context(st, "%s: ", be->name);
}

/* ---------------------------------------------------------------- ops */

static void cuda_op_free(ert_backend *be, ert_op *op) {
    if (!op) return;
    (void)cudaSetDevice(be->device);
    ert_cuda_conv_free(be, op);
    /* cudaFree waits for the device: no pending GEMM still reads these weights. */
    (void)cudaFree(op->weight);
    (void)cudaFree(op->bias);
    free(op);
}

static ert_status cuda_op_new(ert_backend *be, const ert_op_desc *d, ert_op **out) {
    ert_status st = ERT_OK;
    ert_op *op = NULL;
    const char *name = d && d->name ? d->name : "op";

    if (!d || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: NULL op descriptor or output", be->name);
    *out = NULL;
    /* preparing an op allocates and synchronises, which a capture forbids */
    if (be->cap)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: op '%s': ops cannot be prepared while a graph is captured",
                         be->name, name);
    if (d->in <= 0 || d->out <= 0)
        return ert_error(ERT_ERR_SHAPE, "%s: op '%s': widths in=%d out=%d must be positive", be->name, name, d->in,
                         d->out);
    if (d->max_rows > be->max_rows)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: op '%s': max_rows %d exceeds the backend's %d", be->name,
                         name, d->max_rows, be->max_rows);
    if ((st = ert_cuda_use(be)) != ERT_OK) return st;

    op = (ert_op *)calloc(1, sizeof *op);
    if (!op) return ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: op '%s': out of host memory", be->name, name);
    op->type = d->type;
    snprintf(op->name, sizeof op->name, "%s", name);
    op->in = d->in;
    op->out = d->out;
    op->channels = d->channels;
    op->max_rows = d->max_rows > 0 ? d->max_rows : be->max_rows;
    op->act = (int)d->act;
    op->f32_out = d->f32_out;
    op->eps = d->eps;
    op->post_act = -1;

    switch (d->type) {
    case ERT_OP_LINEAR: st = ert_cuda_linear_new(be, d, op); break;
    case ERT_OP_LAYERNORM:
    case ERT_OP_NORMALIZE: st = ert_cuda_norm_new(be, d, op); break;
    case ERT_OP_CONV2D: st = ert_cuda_conv_new(be, d, op); break;
    case ERT_OP_MAXPOOL:
    case ERT_OP_AVGPOOL:
    case ERT_OP_RELU: st = ert_cuda_pool_new(be, d, op); break;
    default: st = ert_error(ERT_ERR_UNSUPPORTED, "op type %d", (int)d->type); break;
    }
    if (st != ERT_OK) goto fail;
    *out = op;
    return ERT_OK;
fail:
    cuda_op_free(be, op);
    return ert_error_context(st, "%s: op '%s': ", be->name, name);
}

/* The op family's run; rows.n is the exact count, or a bound the kernels clamp with
 * rows.dev_count. */
static ert_status run_family(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y) {
    ert_status st;
    switch (op->type) {
    case ERT_OP_LINEAR: st = ert_cuda_linear_run(be, op, rows, x, y); break;
    case ERT_OP_LAYERNORM:
    case ERT_OP_NORMALIZE: st = ert_cuda_norm_run(be, op, rows, x, y); break;
    case ERT_OP_CONV2D: st = ert_cuda_conv_run(be, op, rows, x, y); break;
    case ERT_OP_MAXPOOL:
    case ERT_OP_AVGPOOL:
    case ERT_OP_RELU: st = ert_cuda_pool_run(be, op, rows, x, y); break;
    default: st = ert_error(ERT_ERR_UNSUPPORTED, "op type %d", (int)op->type); break;
    }
    return st;
}

static ert_status cuda_op_run(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y) {
    ert_status st = ert_cuda_use(be);
    if (st != ERT_OK) return st;
    if (rows.n < 0 || rows.n > op->max_rows)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: op '%s': %d rows, the op was prepared for at most %d",
                         be->name, op->name, rows.n, op->max_rows);
    /* cuBLASLt and cuDNN take the row count on the host: while a graph is captured, an op
     * whose count is on the device becomes a SWITCH over row buckets. */
    if (be->cap && rows.dev_count && (op->type == ERT_OP_LINEAR || op->type == ERT_OP_CONV2D))
        st = ert_cuda_capture_switch(be, op, rows, x, y, run_family);
    else
        st = run_family(be, op, rows, x, y);
    return st == ERT_OK ? st : ert_error_context(st, "%s: op '%s': ", be->name, op->name);
}

static ert_status cuda_add(ert_backend *be, ert_rows rows, int width, const void *x, void *y) {
    ert_status st = ert_cuda_use(be);
    if (st != ERT_OK) return st;
    if (rows.n < 0 || rows.n > be->max_rows || width <= 0)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: add: %d rows of width %d (max_rows %d)", be->name, rows.n,
                         width, be->max_rows);
    st = ert_cuda_add(be, rows, width, x, y);
    return st == ERT_OK ? st : ert_error_context(st, "%s: add: ", be->name);
}

static ert_status cuda_decide(ert_backend *be, const ert_decide_args *a) {
    ert_status st = ert_cuda_use(be);
    if (st != ERT_OK) return st;
    if (a->rows.n < 0 || a->rows.n > be->max_rows || a->classes <= 0 || a->exit_index < 0 ||
        a->exit_index >= ERT_MAX_EXITS)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: decide: %d rows (max %d), %d classes, exit %d", be->name,
                         a->rows.n, be->max_rows, a->classes, a->exit_index);
    st = ert_cuda_decide(be, a);
    return st == ERT_OK ? st : ert_error_context(st, "%s: decide at exit %d: ", be->name, a->exit_index);
}

static ert_status cuda_compact(ert_backend *be, const ert_compact_args *a) {
    ert_status st = ert_cuda_use(be);
    if (st != ERT_OK) return st;
    if (a->rows.n < 0 || a->rows.n > be->max_rows || a->width <= 0)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: compact: %d rows (max %d) of width %d", be->name, a->rows.n,
                         be->max_rows, a->width);
    st = ert_cuda_compact(be, a);
    return st == ERT_OK ? st : ert_error_context(st, "%s: compact: ", be->name);
}

/* ---------------------------------------------------------------- events */

static void cuda_event_free(ert_backend *be, ert_event *ev) {
    if (!ev) return;
    (void)cudaSetDevice(be->device);
    if (ev->ev) (void)cudaEventDestroy(ev->ev);
    free(ev);
}

static ert_status cuda_event_new(ert_backend *be, ert_event **out) {
    ert_status st = ERT_OK;
    ert_event *ev = (ert_event *)calloc(1, sizeof *ev);
    *out = NULL;
    if (!ev) return ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: out of host memory", be->name);
    if ((st = not_capturing(be, "an event's creation")) != ERT_OK) {
        free(ev);
        return st;
    }
    ERT_CUDA_TRY(cudaSetDevice(be->device));
    ERT_CUDA_TRY(cudaEventCreate(&ev->ev)); /* with timing: these events are for timing */
    *out = ev;
    return ERT_OK;
fail:
    cuda_event_free(be, ev);
    return ert_error_context(st, "%s: ", be->name);
}

static ert_status cuda_event_record(ert_backend *be, ert_event *ev) {
    ert_status st = ert_cuda_use(be);
    if (st != ERT_OK) goto fail;
    /* In a capture, an external event node: it records when the graph runs (a plain
     * record would only order streams within the capture). */
    if (be->cap) ERT_CUDA_TRY(cudaEventRecordWithFlags(ev->ev, be->stream, cudaEventRecordExternal));
    else ERT_CUDA_TRY(cudaEventRecord(ev->ev, be->stream));
    return ERT_OK;
fail:
    return ert_error_context(st, "%s: ", be->name);
}

static ert_status cuda_event_elapsed_ms(ert_backend *be, const ert_event *a, const ert_event *b, double *ms) {
    ert_status st = ERT_OK;
    float f = 0.0f;
    ERT_CUDA_TRY(cudaSetDevice(be->device));
    /* Both events are on the backend's one stream, so once the later one has completed
     * the earlier one has too. */
    ERT_CUDA_TRY(cudaEventSynchronize(b->ev));
    ERT_CUDA_TRY(cudaEventElapsedTime(&f, a->ev, b->ev));
    *ms = (double)f;
    return ERT_OK;
fail:
    return ert_error_context(st, "%s: ", be->name);
}

/* ---------------------------------------------------------------- the table */

static ert_backend_ops make_ops(void) {
    ert_backend_ops ops;
    memset(&ops, 0, sizeof ops);
    ops.name = "cuda";
    ops.host_memory = 0;
    ops.create = cuda_create;
    ops.destroy = cuda_destroy;
    ops.device_name = cuda_device_name;
    ops.act_elem_size = cuda_act_elem_size;
    ops.alloc = cuda_alloc;
    ops.release = cuda_release;
    ops.host_alloc = cuda_host_alloc;
    ops.host_release = cuda_host_release;
    ops.upload = cuda_upload;
    ops.download = cuda_download;
    ops.download_async = cuda_download_async;
    ops.sync = cuda_sync;
    ops.op_new = cuda_op_new;
    ops.op_free = cuda_op_free;
    ops.op_run = cuda_op_run;
    ops.add = cuda_add;
    ops.decide = cuda_decide;
    ops.compact = cuda_compact;
    ops.event_new = cuda_event_new;
    ops.event_free = cuda_event_free;
    ops.event_record = cuda_event_record;
    ops.event_elapsed_ms = cuda_event_elapsed_ms;
    ops.graph_begin = ert_cuda_graph_begin;
    ops.graph_end = ert_cuda_graph_end;
    ops.graph_launch = ert_cuda_graph_launch;
    ops.graph_free = ert_cuda_graph_free;
    return ops;
}

#define ERT_STR2(x) #x
#define ERT_STR(x) ERT_STR2(x)

/* "built for sm_90; runtime 13.0, driver 13.0; cuBLASLt 13.1.0; cuDNN 9.19.0": the
 * architectures nvcc compiled for (__CUDA_ARCH_LIST__, "900,1000"), and each library's
 * version as loaded (a driver of 0 is none). */
extern "C" void ert_cuda_libraries(char *buf, size_t len) {
    char archs[64] = "";
#ifdef __CUDA_ARCH_LIST__
    const char *list = ERT_STR(__CUDA_ARCH_LIST__);
    for (const char *p = list; *p;) { /* "900,1000" -> "sm_90, sm_100" */
        const long a = strtol(p, (char **)&p, 10);
        const size_t at = strlen(archs);
        snprintf(archs + at, sizeof archs - at, "%ssm_%ld", at ? ", " : "", a / 10);
        while (*p == ',' || *p == ' ') ++p;
    }
#endif
    int rt = 0, drv = 0;
    (void)cudaRuntimeGetVersion(&rt);
    if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
    (void)cudaGetLastError();
    char driver[32] = "none";
    if (drv) snprintf(driver, sizeof driver, "%d.%d", drv / 1000, drv % 1000 / 10);
    const size_t lt = cublasLtGetVersion();
    char dnn[64] = "; cuDNN not built in (conv2d on CUDA unsupported)";
#ifdef ERT_WITH_CUDNN
    const size_t dv = cudnnGetVersion();
    snprintf(dnn, sizeof dnn, "; cuDNN %zu.%zu.%zu", dv / 10000, dv % 10000 / 100, dv % 100);
#endif
    snprintf(buf, len, "built for %s; runtime %d.%d, driver %s; cuBLASLt %zu.%zu.%zu%s", archs[0] ? archs : "?",
             rt / 1000, rt % 1000 / 10, driver, lt / 10000, lt % 10000 / 100, lt % 100, dnn);
}

/* Filled on first use (C++ guarantees a thread-safe one-time initialisation); C++17 has
 * no designated initialisers to write it as a constant like the CPU table. */
extern "C" const ert_backend_ops *ert_backend_cuda(void) {
    static const ert_backend_ops ops = make_ops();
    return &ops;
}
