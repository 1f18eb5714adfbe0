/*
 * Graph mode: the session's whole forward pass captured once into one CUDA graph, with
 * the survivor counts left on the device (DESIGN.md, "The GPU path without host syncs").
 *
 *   graph_begin   starts capturing the backend's stream (thread-local mode: an
 *                 allocation or another unsafe call during capture is an error, so a
 *                 graph never hides one);
 *   op_run        for a GEMM or convolution given rows.dev_count: a SWITCH node whose
 *                 body b is the op captured for bucket_rows[b] rows (on body_stream, the
 *                 stream swapped into be->stream while a body is captured, into a graph
 *                 of its own that the body holds as a child graph); other ops
 *                 are captured as they are and read the count on the device;
 *   compact       its count-writing thread picks the bucket of the next stage's SWITCH
 *                 nodes (ert_cuda_route_set: the route the compaction opened); a count no
 *                 compaction writes (the batch's own, uploaded before the launch) gets a
 *                 one-thread selector kernel in front of its first SWITCH node, and so
 *                 does a count whose route is full (ERT_CUDA_MAX_SWITCH nodes, or fewer:
 *                 ERT_CUDA_GRAPH_ROUTE_SWITCHES=N, read at backend create, for tests);
 *   graph_end     ends the capture, writes the routes (the SWITCH handles each route
 *                 sets) to device memory in stream order, instantiates and uploads the
 *                 graph (a refusal names its reason and the failing node's type).
 *
 * Fault injection, for tests of the capture error path on a device:
 * ERT_CUDA_GRAPH_FAIL_AT=N (read at backend create) fails the first body of the Nth SWITCH
 * node of every capture, inside the body's capture, as a refused library call would: it
 * makes a call no capture allows (cudaMalloc), so CUDA's own invalidation path runs, then
 * fails the op.
 *
 * Limits honoured (CUDA headers; DESIGN.md): one conditional handle per SWITCH node,
 * set by one thread; bodies hold only child graphs of kernels and memsets/copies (no events: the
 * session's timing events stay at the top level); handles default to "no body" at every
 * launch, so a count of 0 skips the op's work.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

struct ert_graph {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ert_cuda_route *routes; /* device; NULL for a graph without SWITCH nodes */
    int live;               /* counted in be->live_graphs */
};

/* The count, read within 0..the backend's max_rows (ert_cuda_rows), picks the bucket of
 * every SWITCH on the route. Each body runs at most its own op's rows, so an op runs
 * min(bucket, its rows) >= min(count, its rows), the rows eager mode runs. (Clamped to
 * the first op's rows instead, a later op on the route with more rows would get a bucket
 * below its count: a review, 2026-11-29; every op of a forward has the same bound today.) */
static __global__ void select_kernel(const ert_cuda_route *route, const int32_t *count, int bound) {
    ert_cuda_route_set(route, ert_cuda_rows(bound, count));
}

static void capture_reset(ert_backend *be) {
    free(be->cap);
    be->cap = NULL;
}

ert_status ert_cuda_graph_begin(ert_backend *be, const int *bucket_rows, int num_buckets) {
    ert_status st = ERT_OK;
    ert_cuda_capture *c = NULL;
    if (be->cap) return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: a graph capture is already in progress", be->name);
    int at;
    const char *why = ert_buckets_refusal(bucket_rows, num_buckets, be->max_rows, &at);
    if (why)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: %d row buckets, at bucket %d: %s (%d)", be->name, num_buckets,
                         at, why, be->max_rows);
    if ((st = ert_cuda_use(be)) != ERT_OK) return st;
    c = (ert_cuda_capture *)calloc(1, sizeof *c);
    if (!c) return ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: out of host memory", be->name);
    c->num_buckets = num_buckets;
    if (num_buckets) memcpy(c->bucket_rows, bucket_rows, sizeof(int) * (size_t)num_buckets);
    if (!be->body_stream) ERT_CUDA_TRY(cudaStreamCreateWithFlags(&be->body_stream, cudaStreamNonBlocking));
    if (num_buckets) {
        ERT_CUDA_TRY(cudaMalloc((void **)&c->routes, sizeof(ert_cuda_route) * ERT_CUDA_MAX_ROUTES));
        ERT_CUDA_TRY(cudaMemsetAsync(c->routes, 0, sizeof(ert_cuda_route) * ERT_CUDA_MAX_ROUTES, be->stream));
    }
    /* Work queued before the capture (allocations' memsets, weight uploads) is done. */
    ERT_CUDA_TRY(cudaStreamSynchronize(be->stream));
    ERT_CUDA_TRY(cudaStreamBeginCapture(be->stream, cudaStreamCaptureModeThreadLocal));
    c->active = 1;
    be->cap = c;
    return ERT_OK;
fail:
    if (c) (void)cudaFree(c->routes);
    free(c);
    return ert_error_context(st, "%s: starting the graph capture: ", be->name);
}

/* Opens a route following the device count `count`. */
static ert_status new_route(ert_backend *be, const int32_t *count, int *out) {
    ert_cuda_capture *c = be->cap;
    if (!c->routes)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: an op reads a device row count, but the capture has no row "
                                                   "buckets", be->name);
    if (c->num_routes == ERT_CUDA_MAX_ROUTES)
        return ert_error(ERT_ERR_UNSUPPORTED, "%s: more than %d routes (%d SWITCH nodes each) in one graph", be->name,
                         ERT_CUDA_MAX_ROUTES, be->route_switches);
    c->route_count[c->num_routes] = count;
    c->route_handles[c->num_routes] = 0;
    *out = c->num_routes++;
    return ERT_OK;
}

/* The latest route following `count`, or -1. */
static int latest_route(const ert_cuda_capture *c, const int32_t *count) {
    for (int i = c->num_routes - 1; i >= 0; --i)
        if (c->route_count[i] == count) return i;
    return -1;
}

ert_status ert_cuda_route_of(ert_backend *be, const int32_t *count, const ert_cuda_route **out) {
    *out = NULL;
    /* eager, or a graph without row buckets (no SWITCH node to pick for): nothing to route */
    if (!be->cap || !be->cap->routes) return ERT_OK;
    int r = 0;
    const ert_status st = new_route(be, count, &r);
    if (st != ERT_OK) return st;
    *out = be->cap->routes + r;
    return ERT_OK;
}

ert_status ert_cuda_capture_switch(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y,
                                   ert_cuda_run_fn run) {
    ert_status st = ERT_OK;
    ert_cuda_capture *c = be->cap;
    cudaStreamCaptureStatus status;
    cudaGraph_t graph = NULL;
    const cudaGraphNode_t *deps = NULL;
    const cudaGraphEdgeData *edges = NULL;
    size_t num_deps = 0;
    cudaGraphConditionalHandle handle;
    cudaGraphNodeParams p = {}; /* zeroed: reserved fields must be 0 */
    cudaGraphNode_t node;

    int r = latest_route(c, rows.dev_count);
    if (r < 0 || c->route_handles[r] == be->route_switches) {
        /* no compaction writes this count, or its route is full: select right here */
        if ((st = new_route(be, rows.dev_count, &r)) != ERT_OK) goto fail;
        select_kernel<<<1, 1, 0, be->stream>>>(c->routes + r, rows.dev_count, be->max_rows);
        ERT_CUDA_TRY(cudaGetLastError());
    }
    ERT_CUDA_TRY(cudaStreamGetCaptureInfo(be->stream, &status, NULL, &graph, &deps, &edges, &num_deps));
    if (status != cudaStreamCaptureStatusActive) {
        st = ert_error(ERT_ERR_BACKEND, "the stream is not capturing (status %d)", (int)status);
        goto fail;
    }
    /* defaults to "no body" at every launch, until a kernel picks one */
    ERT_CUDA_TRY(
        cudaGraphConditionalHandleCreate(&handle, graph, (unsigned)c->num_buckets, cudaGraphCondAssignDefault));
    p.type = cudaGraphNodeTypeConditional;
    p.conditional.handle = handle;
    p.conditional.type = cudaGraphCondTypeSwitch;
    p.conditional.size = (unsigned)c->num_buckets;
    ERT_CUDA_TRY(cudaGraphAddNode(&node, graph, deps, edges, num_deps, &p));

    /* Each body is captured into a graph of its own, then added to the node's body graph
     * as a child, so no capture ever runs INTO a conditional body (ending a top-level
     * capture after an invalidated capture into a body crashes inside libcuda:
     * NVIDIA/cuda-python#2918). An unsafe call in a body (both captures are thread-local
     * on this thread) may invalidate the top-level capture too: the first failing body
     * stops the capture, the body's graph is destroyed, and graph_end discards the rest.
     * A body runs at most the op's rows (a bucket above them is picked for counts between
     * the bucket below and the rows). */
    for (int b = 0; b < c->num_buckets && st == ERT_OK; ++b) {
        cudaGraph_t body = NULL;
        cudaGraphNode_t child;
        const cudaStream_t top = be->stream;
        ERT_CUDA_TRY(cudaStreamBeginCapture(be->body_stream, cudaStreamCaptureModeThreadLocal));
        be->stream = be->body_stream;
        const ert_rows br = {c->bucket_rows[b] < rows.n ? c->bucket_rows[b] : rows.n, rows.dev_count};
        void *injected = NULL;
        if (b == 0 && be->fail_switch == c->switches + 1) {
            const cudaError_t e = cudaMalloc(&injected, 1); /* refused while capturing */
            st = ert_error(ERT_ERR_BACKEND, "refused (ERT_CUDA_GRAPH_FAIL_AT=%ld; cudaMalloc in the capture: %s)",
                           be->fail_switch, cudaGetErrorName(e));
        } else {
            st = run(be, op, br, x, y);
        }
        be->stream = top;
        if (st == ERT_OK) {
            st = ERT_CUDA_CHECK(cudaStreamEndCapture(be->body_stream, &body));
        } else { /* end the body's capture but keep the first error's message */
            (void)cudaStreamEndCapture(be->body_stream, &body);
            (void)cudaGetLastError();
        }
        if (st == ERT_OK) /* the child is a copy: the body's own graph is destroyed below */
            st = ERT_CUDA_CHECK(cudaGraphAddChildGraphNode(&child, p.conditional.phGraph_out[b], NULL, 0, body));
        if (body) (void)cudaGraphDestroy(body);
        if (injected) (void)cudaFree(injected); /* an allocation CUDA let through */
        if (st != ERT_OK) st = ert_error_context(st, "body for %d rows: ", br.n);
    }
    if (st != ERT_OK) goto fail;
    ERT_CUDA_TRY(cudaStreamUpdateCaptureDependencies(be->stream, &node, NULL, 1, cudaStreamSetCaptureDependencies));
    c->handles[r][c->route_handles[r]++] = handle;
    c->switches++;
    return ERT_OK;
fail:
    return ert_error_context(st, "capturing '%s' as SWITCH node %d: ", op->name, c->switches + 1);
}

void ert_cuda_graph_free(ert_backend *be, ert_graph *g) {
    if (!g) return;
    (void)cudaSetDevice(be->device);
    if (g->live) be->live_graphs--;
    if (g->exec) (void)cudaGraphExecDestroy(g->exec);
    if (g->graph) (void)cudaGraphDestroy(g->graph);
    (void)cudaFree(g->routes); /* waits for the device: no launch still reads it */
    free(g);
}

/* ERT_CUDA_GRAPH_DOT=PREFIX writes each captured graph of the process, before it is
 * instantiated (so a refused one too), as Graphviz DOT to PREFIX.1, PREFIX.2, ... with the
 * conditional nodes' parameters: what the node counts per stage are, for reading the
 * launch cost of a graph. A debugging aid: a file that cannot be written is no error. */
static void dot_print(cudaGraph_t graph) {
    static int seq; /* shared by sessions captured on several threads: added atomically */
    const char *prefix = getenv("ERT_CUDA_GRAPH_DOT");
    if (!prefix || !*prefix) return;
    char path[4096];
    snprintf(path, sizeof path, "%s.%d", prefix, __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED));
    if (cudaGraphDebugDotPrint(graph, path, cudaGraphDebugDotFlagsConditionalNodeParams) != cudaSuccess)
        (void)cudaGetLastError();
}

ert_status ert_cuda_graph_end(ert_backend *be, ert_graph **out) {
    ert_status st = ERT_OK;
    ert_cuda_capture *c = be->cap;
    ert_graph *g = NULL;
    ert_cuda_route *host = NULL;
    cudaGraph_t graph = NULL;

    if (out) *out = NULL;
    if (!c) return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: no graph capture in progress", be->name);
    (void)cudaSetDevice(be->device);
    const cudaError_t end = cudaStreamEndCapture(be->stream, &graph);
    if (!out) { /* discard, after an error the caller reports */
        (void)cudaGetLastError();
        if (graph) (void)cudaGraphDestroy(graph);
        (void)cudaFree(c->routes);
        capture_reset(be);
        return ERT_OK;
    }
    g = (ert_graph *)calloc(1, sizeof *g);
    if (!g) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "out of host memory");
        if (graph) (void)cudaGraphDestroy(graph);
        (void)cudaFree(c->routes);
        goto fail;
    }
    g->graph = graph;
    g->routes = c->routes;
    ERT_CUDA_TRY(end);
    dot_print(graph);
    if (c->routes && c->num_routes) {
        host = (ert_cuda_route *)calloc((size_t)c->num_routes, sizeof *host);
        if (!host) {
            st = ert_error(ERT_ERR_OUT_OF_MEMORY, "out of host memory");
            goto fail;
        }
        for (int r = 0; r < c->num_routes; ++r) {
            host[r].num_buckets = c->num_buckets;
            memcpy(host[r].bucket_rows, c->bucket_rows, sizeof(int) * (size_t)c->num_buckets);
            host[r].num_handles = c->route_handles[r];
            memcpy(host[r].handles, c->handles[r], sizeof(cudaGraphConditionalHandle) * (size_t)c->route_handles[r]);
        }
        /* in the stream's order: the launches on this (non-blocking) stream come after it */
        ERT_CUDA_TRY(cudaMemcpyAsync(c->routes, host, sizeof *host * (size_t)c->num_routes, cudaMemcpyHostToDevice,
                                     be->stream));
    }
    {
        cudaGraphInstantiateParams ip = {};
        ip.flags = cudaGraphInstantiateFlagUpload;
        ip.uploadStream = be->stream;
        const cudaError_t err = cudaGraphInstantiateWithParams(&g->exec, g->graph, &ip);
        if (err != cudaSuccess) {
            static const char *why[] = {"success", "an unexpected error", "an invalid structure",
                                        "an operation the graph cannot hold", "nodes on several devices",
                                        "a conditional handle without its node"};
            cudaGraphNodeType type = cudaGraphNodeTypeEmpty;
            const int has_node = ip.errNode_out && cudaGraphNodeGetType(ip.errNode_out, &type) == cudaSuccess;
            const unsigned res = (unsigned)ip.result_out;
            const char *res_why = res < 6 ? why[res] : "an unknown result";
            char reason[128] = ""; /* a failure before the instantiation proper has no result or node */
            if (res && has_node) snprintf(reason, sizeof reason, " (%s, at a node of type %d)", res_why, (int)type);
            else if (res) snprintf(reason, sizeof reason, " (%s)", res_why);
            else if (has_node) snprintf(reason, sizeof reason, " (at a node of type %d)", (int)type);
            st = ert_cuda_status(err, "cudaGraphInstantiateWithParams", __FILE__, __LINE__);
            (void)ert_error_context(st, "instantiating%s: ", reason);
            goto fail;
        }
    }
    ERT_CUDA_TRY(cudaStreamSynchronize(be->stream)); /* the routes and the upload are done */
    free(host);
    capture_reset(be);
    g->live = 1;
    be->live_graphs++;
    *out = g;
    return ERT_OK;
fail:
    free(host);
    capture_reset(be);
    ert_cuda_graph_free(be, g);
    return ert_error_context(st, "%s: finishing the graph: ", be->name);
}

ert_status ert_cuda_graph_launch(ert_backend *be, ert_graph *g) {
    ert_status st = ert_cuda_use(be);
    if (st == ERT_OK) st = ERT_CUDA_CHECK(cudaGraphLaunch(g->exec, be->stream));
    return st == ERT_OK ? st : ert_error_context(st, "%s: graph launch: ", be->name);
}
