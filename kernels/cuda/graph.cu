/*
 * Graph mode: the session's whole forward pass captured once into one CUDA graph, with
 * the survivor counts left on the device (DESIGN.md, "The GPU path without host syncs").
 *
 *   graph_begin   starts capturing the backend's stream (thread-local mode: an
 *                 allocation or another unsafe call during capture is an error, so a
 *                 graph never hides one);
 *   op_run        for a GEMM or convolution given rows.dev_count: a SWITCH node whose
 *                 body b is the op captured for bucket_rows[b] rows (on body_stream, the
 *                 stream swapped into be->stream while a body is captured); other ops
 *                 are captured as they are and read the count on the device;
 *   compact       its count-writing thread picks the bucket of the next stage's SWITCH
 *                 nodes (ert_cuda_route_set); a count no compaction writes (the batch's
 *                 own, uploaded before the launch) gets a one-thread selector kernel in
 *                 front of its first SWITCH node;
 *   graph_end     ends the capture, writes the routes (every SWITCH handle of every
 *                 count) to device memory, instantiates and uploads the graph.
 *
 * Limits honoured (CUDA headers; DESIGN.md): one conditional handle per SWITCH node,
 * set by one thread; bodies hold only kernels and memsets/copies (no events: the
 * session's timing events stay at the top level); handles default to "no body" at every
 * launch, so a count of 0 skips the op's work.
 */
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

struct ert_graph {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ert_cuda_route *routes; /* device; NULL for a graph without SWITCH nodes */
};

static __global__ void select_kernel(const ert_cuda_route *route, const int32_t *count) {
    ert_cuda_route_set(route, *count);
}

static void capture_reset(ert_backend *be) {
    free(be->cap);
    be->cap = NULL;
}

ert_status ert_cuda_graph_begin(ert_backend *be, const int *bucket_rows, int num_buckets) {
    ert_status st = ERT_OK;
    ert_cuda_capture *c = NULL;
    if (be->cap) return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: a graph capture is already in progress", be->name);
    if (num_buckets < 0 || num_buckets > ERT_MAX_BUCKETS || (num_buckets && !bucket_rows))
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: %d row buckets (expected 0..%d)", be->name, num_buckets,
                         ERT_MAX_BUCKETS);
    for (int b = 0; b < num_buckets; ++b)
        if (bucket_rows[b] < 1 || bucket_rows[b] > be->max_rows || (b && bucket_rows[b] <= bucket_rows[b - 1]))
            return ert_error(ERT_ERR_INVALID_ARGUMENT,
                             "%s: row bucket %d = %d: buckets must increase within 1..%d (max_rows)", be->name, b,
                             bucket_rows[b], be->max_rows);
    if ((st = ert_cuda_use(be)) != ERT_OK) return st;
    c = (ert_cuda_capture *)calloc(1, sizeof *c);
    if (!c) return ert_error(ERT_ERR_OUT_OF_MEMORY, "%s: out of host memory", be->name);
    c->num_buckets = num_buckets;
    memcpy(c->bucket_rows, bucket_rows, sizeof(int) * (size_t)num_buckets);
    if (!be->body_stream) ERT_CUDA_TRY(cudaStreamCreateWithFlags(&be->body_stream, cudaStreamNonBlocking));
    if (num_buckets) {
        ERT_CUDA_TRY(cudaMalloc((void **)&c->routes, sizeof(ert_cuda_route) * ERT_CUDA_MAX_SLOTS));
        ERT_CUDA_TRY(cudaMemset(c->routes, 0, sizeof(ert_cuda_route) * ERT_CUDA_MAX_SLOTS));
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

/* The slot of the count `count` in the capture, registered at its first use. */
static ert_status slot_of(ert_backend *be, const int32_t *count, int *out) {
    ert_cuda_capture *c = be->cap;
    if (!c->routes)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s: an op reads a device row count, but the capture has no row "
                                                   "buckets", be->name);
    for (int i = 0; i < c->num_slots; ++i)
        if (c->slot_count[i] == count) return (*out = i, ERT_OK);
    if (c->num_slots == ERT_CUDA_MAX_SLOTS)
        return ert_error(ERT_ERR_UNSUPPORTED, "%s: more than %d device row counts in one graph", be->name,
                         ERT_CUDA_MAX_SLOTS);
    c->slot_count[c->num_slots] = count;
    *out = c->num_slots++;
    return ERT_OK;
}

ert_status ert_cuda_route_of(ert_backend *be, const int32_t *count, const ert_cuda_route **out) {
    *out = NULL;
    if (!be->cap) return ERT_OK; /* eager: nothing to route */
    int slot;
    const ert_status st = slot_of(be, count, &slot);
    if (st != ERT_OK) return st;
    be->cap->slot_set[slot] = 1;
    *out = be->cap->routes + slot;
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
    int slot;

    if ((st = slot_of(be, rows.dev_count, &slot)) != ERT_OK) return st;
    if (c->slot_handles[slot] == ERT_CUDA_MAX_SWITCH)
        return ert_error(ERT_ERR_UNSUPPORTED, "more than %d row-bucketed ops read one row count", ERT_CUDA_MAX_SWITCH);
    if (!c->slot_set[slot]) { /* no compaction writes this count: select right here */
        select_kernel<<<1, 1, 0, be->stream>>>(c->routes + slot, rows.dev_count);
        ERT_CUDA_TRY(cudaGetLastError());
        c->slot_set[slot] = 1;
    }
    ERT_CUDA_TRY(cudaStreamGetCaptureInfo(be->stream, &status, NULL, &graph, &deps, &edges, &num_deps));
    if (status != cudaStreamCaptureStatusActive)
        return ert_error(ERT_ERR_BACKEND, "the stream is not capturing (status %d)", (int)status);
    /* defaults to "no body" at every launch, until a kernel picks one */
    ERT_CUDA_TRY(
        cudaGraphConditionalHandleCreate(&handle, graph, (unsigned)c->num_buckets, cudaGraphCondAssignDefault));
    p.type = cudaGraphNodeTypeConditional;
    p.conditional.handle = handle;
    p.conditional.type = cudaGraphCondTypeSwitch;
    p.conditional.size = (unsigned)c->num_buckets;
    ERT_CUDA_TRY(cudaGraphAddNode(&node, graph, deps, edges, num_deps, &p));

    for (int b = 0; b < c->num_buckets && st == ERT_OK; ++b) {
        cudaGraph_t body = NULL;
        const cudaStream_t top = be->stream;
        ERT_CUDA_TRY(cudaStreamBeginCaptureToGraph(be->body_stream, p.conditional.phGraph_out[b], NULL, NULL, 0,
                                                   cudaStreamCaptureModeThreadLocal));
        be->stream = be->body_stream;
        const ert_rows br = {c->bucket_rows[b], rows.dev_count};
        st = run(be, op, br, x, y);
        be->stream = top;
        if (st == ERT_OK) {
            st = ERT_CUDA_CHECK(cudaStreamEndCapture(be->body_stream, &body));
        } else { /* end the body's capture but keep the first error's message */
            (void)cudaStreamEndCapture(be->body_stream, &body);
            (void)cudaGetLastError();
        }
        if (st != ERT_OK) st = ert_error_context(st, "body for %d rows: ", c->bucket_rows[b]);
    }
    if (st != ERT_OK) goto fail;
    ERT_CUDA_TRY(cudaStreamUpdateCaptureDependencies(be->stream, &node, NULL, 1, cudaStreamSetCaptureDependencies));
    c->handles[slot][c->slot_handles[slot]++] = handle;
    c->switches++;
    return ERT_OK;
fail:
    return ert_error_context(st, "capturing '%s' as SWITCH node %d: ", op->name, c->switches);
}

void ert_cuda_graph_free(ert_backend *be, ert_graph *g) {
    if (!g) return;
    (void)cudaSetDevice(be->device);
    if (g->exec) (void)cudaGraphExecDestroy(g->exec);
    if (g->graph) (void)cudaGraphDestroy(g->graph);
    (void)cudaFree(g->routes); /* waits for the device: no launch still reads it */
    free(g);
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
    if (c->routes) {
        host = (ert_cuda_route *)calloc(ERT_CUDA_MAX_SLOTS, sizeof *host);
        if (!host) {
            st = ert_error(ERT_ERR_OUT_OF_MEMORY, "out of host memory");
            goto fail;
        }
        for (int s = 0; s < c->num_slots; ++s) {
            host[s].num_buckets = c->num_buckets;
            memcpy(host[s].bucket_rows, c->bucket_rows, sizeof(int) * (size_t)c->num_buckets);
            host[s].num_handles = c->slot_handles[s];
            memcpy(host[s].handles, c->handles[s], sizeof(cudaGraphConditionalHandle) * (size_t)c->slot_handles[s]);
        }
        ERT_CUDA_TRY(cudaMemcpy(c->routes, host, sizeof *host * ERT_CUDA_MAX_SLOTS, cudaMemcpyHostToDevice));
    }
    ERT_CUDA_TRY(cudaGraphInstantiate(&g->exec, g->graph, 0));
    ERT_CUDA_TRY(cudaGraphUpload(g->exec, be->stream));
    ERT_CUDA_TRY(cudaStreamSynchronize(be->stream));
    free(host);
    capture_reset(be);
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
