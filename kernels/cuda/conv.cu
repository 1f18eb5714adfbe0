/*
 * ERT_OP_CONV2D through cuDNN's descriptor API, y = act(conv(x, W) + b).
 *
 *   x (rows, C, H, W), W (K, C/g, kh, kw), b (K), y (rows, K, H', W'): NCHW per sample;
 *   cross-correlation with PyTorch's stride, zero padding, dilation and groups.
 *
 * Types of x, W and y as cuDNN sees them (the convolution's compute type is f32 always):
 *   f32   FLOAT     CUDNN_FMA_MATH: no TF32, f32 means f32;
 *   tf32  FLOAT     CUDNN_DEFAULT_MATH, which permits TF32 tensor cores (Ampere and later);
 *   bf16  BFLOAT16  CUDNN_TENSOR_OP_MATH (cuDNN's PSEUDO_BFLOAT16_CONFIG);
 *   f16   HALF      CUDNN_TENSOR_OP_MATH (PSEUDO_HALF_CONFIG).
 *   f32_out after 16-bit activations (an exit head's logits): cuDNN has no 16-bit-in,
 *   f32-out configuration, so x is widened into be->scratch and the convolution runs in
 *   FLOAT on weights rounded to the 16-bit type, with CUDNN_DEFAULT_MATH: TF32 is exact on
 *   such values (10 mantissa bits and f32's exponent hold every bf16 and f16 value), so
 *   the products are exact and the sums f32, as in a 16-bit tensor-core convolution.
 *
 * Plans, chosen once at op_new:
 *  - fused: cudnnConvolutionBiasActivationForward, y = act(1 * conv(x) + 0 * z + b) with
 *    z = y, for RELU (a zero bias when the op has none) and for NONE with a bias, where
 *    cuDNN's identity activation takes only IMPLICIT_PRECOMP_GEMM. The bias is in y's
 *    type (cuDNN's configuration tables give bias the type of y outside INT8), or in f32
 *    when cuDNN refuses that.
 *  - unfused: cudnnConvolutionForward, then conv_post_kernel adds the f32 bias and applies
 *    op_math's ert_activate in place: always for GELU (cuDNN has no exact-erf GELU, the
 *    CPU reference's and PyTorch's), and whenever the fused plan fails its probe. A 16-bit
 *    y is then rounded twice (after the convolution, after the activation), as PyTorch's
 *    conv2d followed by F.gelu is. NONE without a bias is the convolution alone.
 *  ERT_CONV_FUSE (read at op_new): 0 = never fuse; 1 or unset = fuse where possible;
 *  "require" = fuse or fail op_new with the reason (for the GPU tests to report it).
 *
 * Algorithms: cudnnGetConvolutionForwardAlgorithm_v7's candidates for the largest batch
 * (best first), then IMPLICIT_PRECOMP_GEMM and IMPLICIT_GEMM, each run at op_new on
 * probes of 1 row and of the largest batch (within kProbeMaxBytes): x = 0 and y poisoned
 * with NaN, every output must come back as act(b); and x = NaN on the same counts, every
 * output that sees the input must come back NaN. That checks that cuDNN takes the
 * configuration, that z is not read when alpha2 = 0 (the fused call gets z = y, as XLA's
 * legacy fused convolution passes its output as the side input when its scale is 0), that
 * the bias lands per channel and that the fused relu keeps NaN as op_math's does, at both
 * ends of the counts (cuDNN may pick another kernel per N). The first candidate that passes is
 * kept, as PyTorch's AlgoIterator::try_all keeps the first that runs. Its workspace (sized
 * over the powers of two, the largest batch and the graph's row buckets, at most
 * kWorkspaceMax) is the backend's cuDNN workspace, grown at op_new, never in a run.
 *
 * A run sets N of the x and y descriptors to the host row count (host-only calls) and
 * enqueues on the backend's stream; cuDNN cannot read rows.dev_count, so it computes all
 * rows.n rows, as the GEMMs do. Batches whose tensors would pass 2^31 elements (cuDNN's
 * 32-bit indexing) run in chunks of rows.
 *
 * The descriptor API is deprecated in cuDNN 9 but present and documented; cudnn_*_v9.h
 * mark it only when CUDNN_WARN_DEPRECATED is defined, which this build does not do. Should
 * a build define it, -Wdeprecated-declarations alone is silenced, in this file only, so
 * that -Werror builds keep compiling the one API this file is written against.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"

#ifdef ERT_WITH_CUDNN

#include <limits.h>

#include "op_math.h"

#if defined(CUDNN_WARN_DEPRECATED) && defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#endif

/* The largest cuDNN workspace an algorithm may have; faster ones needing more are skipped.
 * Shared by the backend's convolutions (they run in stream order). */
static const size_t kWorkspaceMax = (size_t)256 << 20;
/* The probe at the largest batch uses at most this many bytes per tensor (fewer rows
 * when the batch is larger). */
static const size_t kProbeMaxBytes = (size_t)64 << 20;
/* x and y must be this aligned (cudaMalloc gives 256): cuDNN's vectorised kernels. */
static const uintptr_t kRunAlign = 16;
static const int kThreads = 256;
static const unsigned kMaxBlocks = 65535; /* grid-stride loops cover the rest */

struct ert_cuda_conv {
    cudnnTensorDescriptor_t x_desc, y_desc, b_desc;
    cudnnFilterDescriptor_t w_desc;
    cudnnConvolutionDescriptor_t conv_desc;
    cudnnActivationDescriptor_t act_desc;
    cudnnDataType_t type;          /* of x, W and y in cuDNN */
    cudnnDataType_t bias_type;     /* of the fused call's bias */
    cudnnMathType_t math;          /* asked for */
    cudnnConvolutionFwdAlgo_t algo;
    int fused;                     /* 1: cudnnConvolutionBiasActivationForward */
    int post;                      /* 1: conv_post_kernel adds the f32 bias, applies op->act */
    int x_to_f32;                  /* f32_out after 16-bit activations: x widened first */
    int chunk;                     /* most rows per cuDNN call (tensors under 2^31 elements),
                                      a multiple of step where it can be */
    int step;                      /* rows whose x and y both span a multiple of kRunAlign
                                      bytes: a call that ends there starts the next aligned */
    ert_dtype x_dt, y_dt;          /* storage of the op's x and y */
    unsigned char *fits;           /* eager calls, per row count 0..max_rows: 0 not yet asked,
                                      1 the reserved workspace suffices, 2 it does not */
};

static unsigned grid_for(long long work, int per_block) {
    const long long blocks = ert_ceil_div_ll(work, per_block);
    return blocks < 1 ? 1u : (blocks > kMaxBlocks ? kMaxBlocks : (unsigned)blocks);
}

/* ---------------------------------------------------------------- kernels */

struct conv_post_args {
    void *y;           /* (rows, K, hw), in place */
    const float *bias; /* K, or NULL */
    int rows, k, hw;
    int act;           /* ert_activation */
};

/* y = act(y + b[k]) over (rows, K, hw) in Act's storage, f32 math. Planes (sample,
 * channel) go over blockIdx.y, so the channel is one modulo per plane, not per element. */
template <typename Act>
static __global__ void conv_post_kernel(conv_post_args a) {
    typedef typename Act::storage T;
    const long long planes = (long long)a.rows * a.k;
    for (long long p = blockIdx.y; p < planes; p += gridDim.y) {
        T *y = (T *)a.y + p * a.hw;
        const float b = a.bias ? a.bias[p % a.k] : 0.0f;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < a.hw; i += gridDim.x * blockDim.x)
            y[i] = Act::store(ert_activate(Act::load(y[i]) + b, a.act));
    }
}

template <typename Act>
static ert_status launch_conv_post(cudaStream_t stream, const conv_post_args &a) {
    const long long planes = (long long)a.rows * a.k;
    const dim3 grid(grid_for(a.hw, kThreads), (unsigned)(planes < (long long)kMaxBlocks ? planes : kMaxBlocks));
    conv_post_kernel<Act><<<grid, kThreads, 0, stream>>>(a);
    return ERT_CUDA_CHECK(cudaGetLastError());
}

/* dst (f32) = src (16-bit activations), n elements. */
template <typename Act>
static __global__ void widen_kernel(const void *src, float *dst, long long n) {
    const typename Act::storage *s = (const typename Act::storage *)src;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = Act::load(s[i]);
}

template <typename Act>
static ert_status launch_widen(cudaStream_t stream, const void *src, float *dst, long long n) {
    widen_kernel<Act><<<grid_for(n, kThreads), kThreads, 0, stream>>>(src, dst, n);
    return ERT_CUDA_CHECK(cudaGetLastError());
}

/* ---------------------------------------------------------------- running */

static cudnnDataType_t cudnn_type_of(ert_dtype dt) {
    switch (dt) {
    case ERT_DTYPE_BF16: return CUDNN_DATA_BFLOAT16;
    case ERT_DTYPE_F16: return CUDNN_DATA_HALF;
    default: return CUDNN_DATA_FLOAT;
    }
}

static cudaDataType_t cuda_type_of(cudnnDataType_t t) {
    return t == CUDNN_DATA_BFLOAT16 ? CUDA_R_16BF : (t == CUDNN_DATA_HALF ? CUDA_R_16F : CUDA_R_32F);
}

static ert_status set_rows(const ert_op *op, int n) {
    const ert_cuda_conv *c = op->conv;
    const ert_conv_geom *g = &op->geom;
    ert_status st = ERT_CUDA_CHECK(
        cudnnSetTensor4dDescriptor(c->x_desc, CUDNN_TENSOR_NCHW, c->type, n, g->in_c, g->in_h, g->in_w));
    if (st == ERT_OK)
        st = ERT_CUDA_CHECK(
            cudnnSetTensor4dDescriptor(c->y_desc, CUDNN_TENSOR_NCHW, c->type, n, g->out_c, g->out_h, g->out_w));
    return st;
}

/* One cuDNN call (and its widening and post passes) on n <= c->chunk rows. */
static ert_status conv_exec(ert_backend *be, const ert_op *op, int n, const void *x, void *y) {
    ert_status st = ERT_OK;
    const ert_cuda_conv *c = op->conv;
    const float one = 1.0f, zero = 0.0f; /* alpha and beta are float for every non-double type */
    const void *xin = x;
    /* be->stream is the capture stream of a graph body while one is captured (graph.cu),
     * and the probes at op_new run after any capture: set it on every call. */
    if ((st = ERT_CUDA_CHECK(cudnnSetStream(be->cudnn, be->stream))) != ERT_OK) return st;
    if (c->x_to_f32) {
        const long long count = (long long)n * op->in;
        st = ert_cuda_dispatch_dtype(c->x_dt, [&](auto tag) {
            return launch_widen<decltype(tag)>(be->stream, x, be->scratch, count);
        });
        if (st != ERT_OK) return st;
        xin = be->scratch;
    }
    if ((st = set_rows(op, n)) != ERT_OK) return st;
    if (be->cap) {
        /* In a graph, a refused cuDNN call would invalidate the capture: check its
         * workspace first, with a host-only query. The op was sized for the row buckets
         * the backend was created with; a capture at other counts (the ideal's exact
         * counts, a graph with other buckets) may need more, and fails cleanly here. */
        size_t need = 0;
        if ((st = ERT_CUDA_CHECK(cudnnGetConvolutionForwardWorkspaceSize(be->cudnn, c->x_desc, c->w_desc, c->conv_desc,
                                                                         c->y_desc, c->algo, &need))) != ERT_OK)
            return st;
        if (need > be->cudnn_workspace_bytes)
            return ert_error(ERT_ERR_UNSUPPORTED,
                             "cuDNN algorithm %d needs a %zu-byte workspace for %d rows; %zu bytes were reserved",
                             (int)c->algo, need, n, be->cudnn_workspace_bytes);
    }
    if (c->fused)
        st = ERT_CUDA_CHECK(cudnnConvolutionBiasActivationForward(
            be->cudnn, &one, c->x_desc, xin, c->w_desc, op->weight, c->conv_desc, c->algo, be->cudnn_workspace,
            be->cudnn_workspace_bytes, &zero, c->y_desc, y, c->b_desc, op->bias, c->act_desc, c->y_desc, y));
    else
        st = ERT_CUDA_CHECK(cudnnConvolutionForward(be->cudnn, &one, c->x_desc, xin, c->w_desc, op->weight,
                                                    c->conv_desc, c->algo, be->cudnn_workspace,
                                                    be->cudnn_workspace_bytes, &zero, c->y_desc, y));
    if (st != ERT_OK || !c->post) return st;
    conv_post_args a;
    a.y = y;
    a.bias = (const float *)op->bias;
    a.rows = n;
    a.k = op->geom.out_c;
    a.hw = op->geom.out_h * op->geom.out_w;
    a.act = op->act;
    return ert_cuda_dispatch_dtype(c->y_dt, [&](auto tag) { return launch_conv_post<decltype(tag)>(be->stream, a); });
}

/* The rows an eager call may run of the n <= the op's sized top it was asked for: all n,
 * or, where cuDNN's workspace need at n exceeds what was reserved (its need is not
 * monotonic in N, and the op was sized at the powers of two and the row buckets only),
 * the largest power of two below n, which was sized. The answer per n is kept (a
 * host-only query each; the workspace only grows, so a "suffices" stays true). */
static ert_status eager_rows(ert_backend *be, const ert_op *op, int n, int *out) {
    ert_cuda_conv *c = op->conv;
    *out = n;
    if (!c->fits[n]) {
        size_t need = 0;
        ert_status st = set_rows(op, n);
        if (st == ERT_OK)
            st = ERT_CUDA_CHECK(cudnnGetConvolutionForwardWorkspaceSize(be->cudnn, c->x_desc, c->w_desc, c->conv_desc,
                                                                        c->y_desc, c->algo, &need));
        if (st != ERT_OK) return st;
        c->fits[n] = need <= be->cudnn_workspace_bytes ? 1 : 2;
    }
    if (c->fits[n] == 2)
        for (*out = 1; *out <= n / 2;) *out *= 2;
    return ERT_OK;
}

ert_status ert_cuda_conv_run(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y) {
    const ert_cuda_conv *c = op->conv;
    const size_t xs = ert_cuda_elem_size(c->x_dt) * (size_t)op->in, ys = ert_cuda_elem_size(c->y_dt) * (size_t)op->out;
    if (rows.n == 0) return ERT_OK;
    if (((uintptr_t)x | (uintptr_t)y) % kRunAlign != 0)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "x (%p) and y (%p) must be %u-byte aligned", x, y,
                         (unsigned)kRunAlign);
    if (x == y) return ert_error(ERT_ERR_INVALID_ARGUMENT, "conv2d cannot run in place (x == y)");
    /* graph.cu calls this directly, with its buckets' row counts: the workspace, the
     * scratch and the probes were sized for op->max_rows */
    if (rows.n > op->max_rows)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "%d rows, more than the op's %d", rows.n, op->max_rows);
    for (int done = 0; done < rows.n;) {
        int n = rows.n - done < c->chunk ? rows.n - done : c->chunk;
        ert_status st = be->cap ? ERT_OK : eager_rows(be, op, n, &n); /* a capture checks in conv_exec */
        /* a call split off before the last starts the next one n rows on */
        if (st == ERT_OK && done + n < rows.n && n % c->step != 0)
            return ert_error(ERT_ERR_UNSUPPORTED,
                             "conv2d: %d rows split into a call of %d (cuDNN's workspace need at %d rows exceeds the "
                             "%zu bytes reserved, or its tensors 2^31 elements), which would misalign the next "
                             "(rows of %d and %d elements need multiples of %d)",
                             rows.n, n, rows.n - done, be->cudnn_workspace_bytes, op->in, op->out, c->step);
        if (st == ERT_OK)
            st = conv_exec(be, op, n, (const char *)x + (size_t)done * xs, (char *)y + (size_t)done * ys);
        if (st != ERT_OK) return st;
        done += n;
    }
    return ERT_OK;
}

/* ---------------------------------------------------------------- preparation */

void ert_cuda_cudnn_destroy(ert_backend *be) {
    if (!be) return;
    (void)cudaFree(be->cudnn_workspace);
    be->cudnn_workspace = NULL;
    be->cudnn_workspace_bytes = 0;
    if (be->cudnn) (void)cudnnDestroy(be->cudnn);
    be->cudnn = NULL;
}

void ert_cuda_conv_free(ert_backend *be, ert_op *op) {
    (void)be;
    ert_cuda_conv *c = op ? op->conv : NULL;
    if (!c) return;
    if (c->x_desc) (void)cudnnDestroyTensorDescriptor(c->x_desc);
    if (c->y_desc) (void)cudnnDestroyTensorDescriptor(c->y_desc);
    if (c->b_desc) (void)cudnnDestroyTensorDescriptor(c->b_desc);
    if (c->w_desc) (void)cudnnDestroyFilterDescriptor(c->w_desc);
    if (c->conv_desc) (void)cudnnDestroyConvolutionDescriptor(c->conv_desc);
    if (c->act_desc) (void)cudnnDestroyActivationDescriptor(c->act_desc);
    free(c->fits);
    free(c);
    op->conv = NULL;
}

/* The backend's cuDNN handle, made at the first convolution: backends of models without
 * one never load cuDNN's sub-libraries, so a machine where they cannot load still runs
 * every other model. */
static ert_status ensure_handle(ert_backend *be) {
    ert_status st = ERT_OK;
    if (be->cudnn) return ERT_OK;
    ERT_CUDA_TRY(cudnnCreate(&be->cudnn));
    ERT_CUDA_TRY(cudnnSetStream(be->cudnn, be->stream));
    return ERT_OK;
fail:
    if (be->cudnn) (void)cudnnDestroy(be->cudnn);
    be->cudnn = NULL;
    return ert_error_context(st, "creating the cuDNN handle: ");
}

/* The shared workspace grows at op creation only: never during a run. */
static ert_status reserve_workspace(ert_backend *be, size_t bytes) {
    return ert_cuda_grow_buffer(be, &be->cudnn_workspace, &be->cudnn_workspace_bytes, bytes, "cuDNN workspace");
}

/* The row counts a workspace is sized for: 1, 2, 4, ... below `top`, `top`, and the
 * graph's row buckets below `top` (the backend config's), in increasing order. */
static int sizing_rows(const ert_backend *be, int top, int *out) {
    int n = 0, b = 0;
    for (int p = 1;; p = p < top - p ? 2 * p : top) {
        for (; b < be->num_buckets && be->bucket_rows[b] <= p; ++b)
            if (be->bucket_rows[b] < p && (!n || be->bucket_rows[b] > out[n - 1])) out[n++] = be->bucket_rows[b];
        out[n++] = p;
        if (p == top) break;
    }
    return n;
}

static ert_status check_geometry(const ert_op_desc *d) {
    const ert_conv_geom *g = &d->conv;
    if (g->in_c < 1 || g->in_h < 1 || g->in_w < 1 || g->out_c < 1 || g->kh < 1 || g->kw < 1 || g->sh < 1 ||
        g->sw < 1 || g->ph < 0 || g->pw < 0 || g->dh < 1 || g->dw < 1 || g->groups < 1)
        return ert_error(ERT_ERR_SHAPE,
                         "conv2d geometry: C %d, %dx%d, K %d, kernel %dx%d, stride %dx%d, padding %dx%d, "
                         "dilation %dx%d, groups %d",
                         g->in_c, g->in_h, g->in_w, g->out_c, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw,
                         g->groups);
    if (g->in_c % g->groups || g->out_c % g->groups)
        return ert_error(ERT_ERR_SHAPE, "groups %d must divide in_c %d and out_c %d", g->groups, g->in_c, g->out_c);
    const long long eh = (long long)g->in_h + 2LL * g->ph - (long long)g->dh * (g->kh - 1) - 1;
    const long long ew = (long long)g->in_w + 2LL * g->pw - (long long)g->dw * (g->kw - 1) - 1;
    if (eh < 0 || ew < 0 || eh / g->sh + 1 != g->out_h || ew / g->sw + 1 != g->out_w)
        return ert_error(ERT_ERR_SHAPE, "conv2d output %dx%d does not follow from the %dx%d input and the window",
                         g->out_h, g->out_w, g->in_h, g->in_w);
    if ((long long)g->in_c * g->in_h * g->in_w != d->in || (long long)g->out_c * g->out_h * g->out_w != d->out)
        return ert_error(ERT_ERR_SHAPE, "widths in %d, out %d do not match [%d, %d, %d] -> [%d, %d, %d]", d->in,
                         d->out, g->in_c, g->in_h, g->in_w, g->out_c, g->out_h, g->out_w);
    return ERT_OK;
}

/* W rounded to the activation type and kept as f32 (the widened plan), or converted. */
static ert_status upload_weights(ert_backend *be, const ert_op_desc *d, ert_op *op) {
    const ert_conv_geom *g = &d->conv;
    const ert_cuda_conv *c = op->conv;
    const size_t n = (size_t)g->out_c * (size_t)(g->in_c / g->groups) * (size_t)g->kh * (size_t)g->kw;
    if (!c->x_to_f32) return ert_cuda_upload_params(be, d->weight, n, cuda_type_of(c->type), &op->weight);
    float *r = (float *)malloc(n * sizeof(float));
    if (!r) return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of host memory rounding %zu weights", n);
    for (size_t i = 0; i < n; ++i)
        r[i] = c->x_dt == ERT_DTYPE_BF16 ? ert_bf16_to_f32(ert_f32_to_bf16(d->weight[i]))
                                         : ert_f16_to_f32(ert_f32_to_f16(d->weight[i]));
    const ert_status st = ert_cuda_upload_params(be, r, n, CUDA_R_32F, &op->weight);
    free(r);
    return st;
}

/* The bias a plan reads: c->bias_type for the fused call (zeros when the op has none), f32
 * for conv_post_kernel, none for a bare convolution. Replaces what an earlier plan uploaded. */
static ert_status upload_bias(ert_backend *be, const ert_op_desc *d, ert_op *op) {
    const ert_cuda_conv *c = op->conv;
    const size_t k = (size_t)d->conv.out_c;
    ert_status st = ERT_OK;
    (void)cudaFree(op->bias);
    op->bias = NULL;
    if (c->fused) {
        float *zeros = d->bias ? NULL : (float *)calloc(k, sizeof(float));
        if (!d->bias && !zeros) return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of host memory for a zero bias");
        st = ert_cuda_upload_params(be, d->bias ? d->bias : zeros, k, cuda_type_of(c->bias_type), &op->bias);
        free(zeros);
        if (st == ERT_OK)
            st = ERT_CUDA_CHECK(
                cudnnSetTensor4dDescriptor(c->b_desc, CUDNN_TENSOR_NCHW, c->bias_type, 1, (int)k, 1, 1));
    } else if (d->bias) {
        st = ert_cuda_upload_params(be, d->bias, k, CUDA_R_32F, &op->bias);
    }
    return st;
}

static float load_host(ert_dtype dt, const void *p, size_t i) {
    switch (dt) {
    case ERT_DTYPE_BF16: return ert_bf16_to_f32(((const uint16_t *)p)[i]);
    case ERT_DTYPE_F16: return ert_f16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

/* Whether output position o sees at least one input element (not only padding). */
static int sees_input(int o, int stride, int pad, int dil, int k, int size) {
    for (int i = 0; i < k; ++i) {
        const int p = o * stride - pad + i * dil;
        if (p >= 0 && p < size) return 1;
    }
    return 0;
}

/* Runs the prepared plan on n rows of x = 0 (or all NaN) into y poisoned with NaN and
 * checks every output: act(b[k]) (to 1%, for 16-bit rounding on the way), or NaN where a
 * NaN input reaches it (relu keeps NaN: op_math.h, PyTorch). *ok = 0 with the reason as
 * the current error message when cuDNN refuses or the values are wrong; a failing CUDA
 * call (not cuDNN's refusal) is returned as an error. */
static ert_status probe(ert_backend *be, const ert_op_desc *d, ert_op *op, int n, int nan_input, int *ok) {
    ert_status st = ERT_OK;
    const ert_conv_geom *g = &d->conv;
    const ert_cuda_conv *c = op->conv;
    const size_t xb = (size_t)n * (size_t)op->in * ert_cuda_elem_size(c->x_dt);
    const size_t nout = (size_t)n * (size_t)op->out, yb = nout * ert_cuda_elem_size(c->y_dt);
    const size_t hw = (size_t)d->conv.out_h * (size_t)d->conv.out_w;
    void *x = NULL, *y = NULL, *h = malloc(yb);
    *ok = 0;
    if (!h) return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of host memory for the probe");
    ERT_CUDA_TRY(cudaMalloc(&x, xb));
    ERT_CUDA_TRY(cudaMalloc(&y, yb));
    /* 0xFF bytes: NaN in f32, bf16 and f16 */
    ERT_CUDA_TRY(cudaMemsetAsync(x, nan_input ? 0xFF : 0, xb, be->stream));
    ERT_CUDA_TRY(cudaMemsetAsync(y, 0xFF, yb, be->stream));
    if (conv_exec(be, op, n, x, y) != ERT_OK) {
        /* cuDNN refused before launching anything, or a launch failed: a failure that is
         * not sticky is cleared here so that later launch checks do not report it. */
        (void)cudaGetLastError();
        ERT_CUDA_TRY(cudaStreamSynchronize(be->stream));
        goto fail; /* st is ERT_OK: not ok, and the message says why */
    }
    ERT_CUDA_TRY(cudaMemcpyAsync(h, y, yb, cudaMemcpyDeviceToHost, be->stream));
    ERT_CUDA_TRY(cudaStreamSynchronize(be->stream));
    for (size_t i = 0; i < nout; ++i) {
        const size_t k = (i / hw) % (size_t)g->out_c, p = i % hw;
        const int oy = (int)(p / (size_t)g->out_w), ox = (int)(p % (size_t)g->out_w);
        const int nan = nan_input && sees_input(oy, g->sh, g->ph, g->dh, g->kh, g->in_h) &&
                        sees_input(ox, g->sw, g->pw, g->dw, g->kw, g->in_w);
        const float want = nan ? NAN : ert_activate(d->bias ? d->bias[k] : 0.0f, op->act);
        const float got = load_host(c->y_dt, h, i);
        if (nan ? !isnan(got) : !(fabsf(got - want) <= 1e-2f * fabsf(want) + 1e-6f)) {
            (void)ert_error(ERT_ERR_BACKEND, "probe on %d rows of %s: y[%zu] = %g where %g is due", n,
                            nan_input ? "NaN" : "zeros", i, (double)got, (double)want);
            goto fail;
        }
    }
    *ok = 1;
fail:
    (void)cudaFree(x);
    (void)cudaFree(y);
    free(h);
    return st;
}

/* The math type a candidate runs with: the heuristics' (cuDNN picks tensor-core kernels
 * from the algorithm and the descriptor's math type together, as PyTorch notes), except
 * where that would loosen the session's precision: TF32 where it asked for f32, and the
 * down-converting mode wherever the data is f32 (it may go through f16). Then the one
 * asked for, and the probe says whether the algorithm runs under it. */
static cudnnMathType_t math_for(const ert_cuda_conv *c, cudnnMathType_t m) {
    if (c->type != CUDNN_DATA_FLOAT) return m;
    if (c->math == CUDNN_FMA_MATH) return CUDNN_FMA_MATH;
    return m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION ? c->math : m;
}

/* One algorithm to try, with the math type it runs under. */
struct candidate {
    cudnnConvolutionFwdAlgo_t algo;
    cudnnMathType_t math;
};

/* The heuristics' usable entries in their order, then IMPLICIT_PRECOMP_GEMM and
 * IMPLICIT_GEMM under the math type asked for (cuDNN's general algorithms, for when the
 * heuristics' all fail), each pair once. The identity activation of the fused call takes
 * IMPLICIT_PRECOMP_GEMM only. Returns the count (at most nperf + 2). */
static int candidates(const ert_cuda_conv *c, int identity, const cudnnConvolutionFwdAlgoPerf_t *perf, int nperf,
                      candidate *out) {
    int n = 0;
    for (int i = 0; i < nperf + 2; ++i) {
        candidate k;
        if (i < nperf) {
            /* graph == eager and masked == compact compare bits: deterministic kernels only */
            if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].determinism != CUDNN_DETERMINISTIC) continue;
            k.algo = perf[i].algo;
            k.math = math_for(c, perf[i].mathType);
        } else {
            k.algo = i == nperf ? CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM
                                : CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
            k.math = c->math;
        }
        if (identity && k.algo != CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM) continue;
        int seen = 0;
        for (int j = 0; j < n; ++j) seen |= out[j].algo == k.algo && out[j].math == k.math;
        if (!seen) out[n++] = k;
    }
    return n;
}

/* Runs each sized row count up to `big` once, on zeros; *all_ran says whether every one
 * ran. A backend that captures graphs does this for every convolution: cuDNN's first call
 * at an N builds its plan for that shape (and may load its kernels), which is safest
 * outside a capture, where the graph's SWITCH bodies will call it at the buckets' counts
 * (PyTorch warms up before capturing for the same reason). Counts above `big` (past the
 * probe's memory budget) are first run in their capture. A fused plan does it on every
 * backend: cuDNN 9's fused call builds a plan of its own and checks the workspace against
 * that plan's need, which no legacy query reports (the sizing asks for the plain
 * convolution's), so the counts the workspace was sized for are run before it is kept. */
static ert_status warm_up(ert_backend *be, ert_op *op, int top, int big, int *all_ran) {
    ert_status st = ERT_OK;
    const ert_cuda_conv *c = op->conv;
    int rows[2 * 32 + ERT_MAX_BUCKETS];
    const int nrows = sizing_rows(be, top, rows);
    const size_t xb = (size_t)big * (size_t)op->in * ert_cuda_elem_size(c->x_dt);
    const size_t yb = (size_t)big * (size_t)op->out * ert_cuda_elem_size(c->y_dt);
    void *x = NULL, *y = NULL;
    ERT_CUDA_TRY(cudaMalloc(&x, xb));
    ERT_CUDA_TRY(cudaMalloc(&y, yb));
    ERT_CUDA_TRY(cudaMemsetAsync(x, 0, xb, be->stream));
    /* an unfused plan takes this as best effort: a count cuDNN refuses here is refused
     * again, cleanly, where the capture (or an eager call) runs it, so that `--exec auto`
     * still falls back as before */
    *all_ran = 1;
    for (int j = 0; j < nrows && rows[j] <= big; ++j)
        if (conv_exec(be, op, rows[j], x, y) != ERT_OK) {
            (void)cudaGetLastError();
            (void)ert_error_context(ERT_ERR_UNSUPPORTED, "%d rows: ", rows[j]);
            *all_ran = 0;
            break;
        }
    ERT_CUDA_TRY(cudaStreamSynchronize(be->stream));
fail:
    (void)cudaFree(x);
    (void)cudaFree(y);
    return st;
}

/* Tries the candidates of the current plan (c->fused, c->post) in order; *found = 1 with
 * c->algo and the descriptor's math type set when one passes the probes (zeros and NaN, on
 * 1 row and on `big` rows; its workspace is sized for `top` rows, the largest call). Returns an error
 * only for failures that are no candidate's (CUDA, memory); when none passes, the last
 * candidate's reason is the current message. */
static ert_status try_plan(ert_backend *be, const ert_op_desc *d, ert_op *op, const cudnnConvolutionFwdAlgoPerf_t *perf,
                           int nperf, int top, int big, int *found) {
    ert_status st = ERT_OK;
    ert_cuda_conv *c = op->conv;
    const int identity = c->fused && op->act == ERT_ACT_NONE;
    candidate cand[CUDNN_CONVOLUTION_FWD_ALGO_COUNT + 2];
    const int listed = nperf < CUDNN_CONVOLUTION_FWD_ALGO_COUNT ? nperf : CUDNN_CONVOLUTION_FWD_ALGO_COUNT;
    const int ncand = candidates(c, identity, perf, listed, cand);
    int rows[2 * 32 + ERT_MAX_BUCKETS];
    const int nrows = sizing_rows(be, top, rows);
    *found = 0;
    if ((st = upload_bias(be, d, op)) != ERT_OK) return st;
    if (c->fused) {
        const cudnnActivationMode_t mode = identity ? CUDNN_ACTIVATION_IDENTITY : CUDNN_ACTIVATION_RELU;
        /* NaN stays NaN through relu, as on the CPU. cuDNN 9 passes the option through to
         * its fused kernels (a review read it in libcudnn_engines_precompiled.so.9: its
         * launchers take reluNanOpt == CUDNN_PROPAGATE_NAN); older cuDNN documents the
         * fused call as refusing it. A refusal, or a relu that drops NaN anyway, fails
         * the probes below, and the op runs unfused. */
        ERT_CUDA_TRY(cudnnSetActivationDescriptor(c->act_desc, mode, CUDNN_PROPAGATE_NAN, 0.0));
    }
    for (int i = 0; i < ncand; ++i) {
        const candidate k = cand[i];
        /* set before the candidate is sized and run: the workspace depends on it */
        ERT_CUDA_TRY(cudnnSetConvolutionMathType(c->conv_desc, k.math));
        /* cuDNN picks its kernels per shape, N included, so the workspace need is not
         * monotonic in N: the largest over 1, 2, 4, ..., `top` and the graph's row buckets
         * (the counts its bodies run at; a compacted eager stage runs any N in between,
         * and a capture checks its count's need before the call, in conv_exec). */
        size_t ws = 0;
        int sized = 1;
        for (int j = 0; j < nrows && sized; ++j) {
            size_t need = 0;
            sized = set_rows(op, rows[j]) == ERT_OK &&
                    ERT_CUDA_CHECK(cudnnGetConvolutionForwardWorkspaceSize(be->cudnn, c->x_desc, c->w_desc,
                                                                           c->conv_desc, c->y_desc, k.algo,
                                                                           &need)) == ERT_OK;
            ws = need > ws ? need : ws;
        }
        if (!sized) {
            (void)ert_error_context(ERT_ERR_UNSUPPORTED, "algorithm %d, math type %d: ", (int)k.algo, (int)k.math);
            continue;
        }
        if (ws > kWorkspaceMax) {
            (void)ert_error(ERT_ERR_UNSUPPORTED, "algorithm %d needs a %zu-byte workspace (at most %zu)", (int)k.algo,
                            ws, kWorkspaceMax);
            continue;
        }
        if ((st = reserve_workspace(be, ws)) != ERT_OK) return st;
        c->algo = k.algo;
        int ok = 0;
        if ((st = probe(be, d, op, 1, 0, &ok)) != ERT_OK) return st;
        if (ok && (st = probe(be, d, op, 1, 1, &ok)) != ERT_OK) return st;
        if (ok && big > 1 && (st = probe(be, d, op, big, 0, &ok)) != ERT_OK) return st;
        if (ok && big > 1 && (st = probe(be, d, op, big, 1, &ok)) != ERT_OK) return st;
        if (ok) {
            *found = 1;
            return ERT_OK;
        }
        (void)ert_error_context(ERT_ERR_UNSUPPORTED, "algorithm %d, math type %d: ", (int)k.algo, (int)k.math);
    }
    if (!ncand) (void)ert_error(ERT_ERR_UNSUPPORTED, "no candidate algorithm");
    return ERT_OK;
fail:
    return st;
}

/* ERT_CONV_FUSE: 0 never, 1 (default) where possible, 2 ("require") or fail. */
static ert_status read_fuse(int *out) {
    const char *v = getenv("ERT_CONV_FUSE");
    if (!v || !*v || strcmp(v, "1") == 0) *out = 1;
    else if (strcmp(v, "0") == 0) *out = 0;
    else if (strcmp(v, "require") == 0) *out = 2;
    else return ert_error(ERT_ERR_INVALID_ARGUMENT, "ERT_CONV_FUSE='%s': expected 0, 1 or require", v);
    return ERT_OK;
}

ert_status ert_cuda_conv_new(ert_backend *be, const ert_op_desc *d, ert_op *op) {
    ert_status st = ERT_OK;
    const ert_conv_geom *g = &d->conv;
    const int wide = d->f32_out && (be->dtype == ERT_DTYPE_BF16 || be->dtype == ERT_DTYPE_F16);
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int nperf = 0, fuse = 1, found = 0;
    ert_cuda_conv *c;

    if (!d->weight) return ert_error(ERT_ERR_INVALID_ARGUMENT, "conv2d op without weights");
    if (d->act != ERT_ACT_NONE && d->act != ERT_ACT_RELU && d->act != ERT_ACT_GELU)
        return ert_error(ERT_ERR_UNSUPPORTED, "activation %d", (int)d->act);
    if ((st = check_geometry(d)) != ERT_OK || (st = read_fuse(&fuse)) != ERT_OK) return st;
    op->geom = *g;
    if (!(c = op->conv = (ert_cuda_conv *)calloc(1, sizeof *c)) ||
        !(c->fits = (unsigned char *)calloc((size_t)op->max_rows + 1, 1))) {
        ert_cuda_conv_free(be, op);
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    c->x_dt = be->dtype;
    c->y_dt = d->f32_out ? ERT_DTYPE_F32 : be->dtype;
    c->x_to_f32 = wide;
    c->type = wide ? CUDNN_DATA_FLOAT : cudnn_type_of(be->dtype);
    c->math = be->dtype == ERT_DTYPE_F32    ? CUDNN_FMA_MATH
              : c->type == CUDNN_DATA_FLOAT ? CUDNN_DEFAULT_MATH /* tf32, or widened 16-bit values */
                                            : CUDNN_TENSOR_OP_MATH;
    {
        const size_t xs = ert_cuda_elem_size(c->x_dt) * (size_t)op->in, ys = ert_cuda_elem_size(c->y_dt) * (size_t)op->out;
        const int widest = op->in > op->out ? op->in : op->out;
        const int chunk = INT_MAX / widest;
        for (c->step = 1; ((size_t)c->step * xs | (size_t)c->step * ys) % kRunAlign != 0;) c->step *= 2;
        c->chunk = chunk < c->step ? (chunk < 1 ? 1 : chunk) : chunk - chunk % c->step; /* else refused */
    }
    if ((st = ensure_handle(be)) != ERT_OK) return st;
    if (wide && (st = ert_cuda_reserve_scratch(be, (size_t)op->max_rows * (size_t)op->in * sizeof(float))) != ERT_OK)
        return st;

    ERT_CUDA_TRY(cudnnCreateTensorDescriptor(&c->x_desc));
    ERT_CUDA_TRY(cudnnCreateTensorDescriptor(&c->y_desc));
    ERT_CUDA_TRY(cudnnCreateTensorDescriptor(&c->b_desc));
    ERT_CUDA_TRY(cudnnCreateFilterDescriptor(&c->w_desc));
    ERT_CUDA_TRY(cudnnCreateConvolutionDescriptor(&c->conv_desc));
    ERT_CUDA_TRY(cudnnCreateActivationDescriptor(&c->act_desc));
    ERT_CUDA_TRY(cudnnSetFilter4dDescriptor(c->w_desc, c->type, CUDNN_TENSOR_NCHW, g->out_c, g->in_c / g->groups, g->kh,
                                            g->kw));
    ERT_CUDA_TRY(cudnnSetConvolution2dDescriptor(c->conv_desc, g->ph, g->pw, g->sh, g->sw, g->dh, g->dw,
                                                 CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    ERT_CUDA_TRY(cudnnSetConvolutionGroupCount(c->conv_desc, g->groups));
    ERT_CUDA_TRY(cudnnSetConvolutionMathType(c->conv_desc, c->math));
    if ((st = upload_weights(be, d, op)) != ERT_OK) goto fail;

    {
        /* The largest batch a probe runs: the session's, within a chunk and the probe's
         * memory budget. The heuristics are asked for the session's largest call. */
        const int top = op->max_rows < c->chunk ? op->max_rows : c->chunk;
        const size_t per_row = (size_t)(op->in > op->out ? op->in : op->out) * 4;
        const size_t fit = kProbeMaxBytes / per_row;
        /* top, or a power of two below it: counts the workspace was sized for */
        int big = 1;
        if ((size_t)top <= fit) big = top;
        else
            while ((size_t)big * 2 <= fit) big *= 2;
        int on, oc, oh, ow;
        if ((st = set_rows(op, top)) != ERT_OK) goto fail;
        ERT_CUDA_TRY(cudnnGetConvolution2dForwardOutputDim(c->conv_desc, c->x_desc, c->w_desc, &on, &oc, &oh, &ow));
        if (on != top || oc != g->out_c || oh != g->out_h || ow != g->out_w) {
            st = ert_error(ERT_ERR_SHAPE, "cuDNN computes a [%d, %d, %d] output, the op says [%d, %d, %d]", oc, oh, ow,
                           g->out_c, g->out_h, g->out_w);
            goto fail;
        }
        /* without the heuristics' list, the general algorithms are still tried */
        if (ERT_CUDA_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(be->cudnn, c->x_desc, c->w_desc, c->conv_desc,
                                                                  c->y_desc, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &nperf,
                                                                  perf)) != ERT_OK)
            nperf = 0;

        /* what cuDNN can fuse: RELU, and the identity with a bias to add */
        const int fusable = d->act == ERT_ACT_RELU || (d->act == ERT_ACT_NONE && d->bias);
        char why[512] = "";
        if (fuse && fusable) {
            /* the bias in y's type (cuDNN's tables), else in f32 (as for its INT8 types) */
            const cudnnDataType_t bias_types[2] = {c->type, CUDNN_DATA_FLOAT};
            c->fused = 1;
            c->post = 0;
            for (int b = 0; b < (c->type == CUDNN_DATA_FLOAT ? 1 : 2) && !found; ++b) {
                c->bias_type = bias_types[b];
                if ((st = try_plan(be, d, op, perf, nperf, top, big, &found)) != ERT_OK) goto fail;
                if (found && (st = warm_up(be, op, top, big, &found)) != ERT_OK) goto fail;
                if (!found) {
                    const size_t at = strlen(why);
                    snprintf(why + at, sizeof why - at, "%s%s bias: %s", at ? "; " : "",
                             bias_types[b] == CUDNN_DATA_FLOAT ? "f32" : "16-bit", ert_last_error());
                }
            }
            if (!found && fuse == 2) {
                (void)ert_error(ERT_ERR_UNSUPPORTED, "%s", why);
                st = ert_error_context(ERT_ERR_UNSUPPORTED, "ERT_CONV_FUSE=require: no fused plan: ");
                goto fail;
            }
        }
        if (!found) {
            c->fused = 0;
            c->post = d->bias || d->act != ERT_ACT_NONE;
            if ((st = try_plan(be, d, op, perf, nperf, top, big, &found)) != ERT_OK) goto fail;
            if (!found) {
                char last[512];
                snprintf(last, sizeof last, "%s", ert_last_error()); /* ert_error writes that buffer */
                st = ert_error(ERT_ERR_UNSUPPORTED,
                               "no cuDNN algorithm runs this convolution (%d from the heuristics): %s%s%s", nperf,
                               last, why[0] ? "; fused plan: " : "", why);
                goto fail;
            }
        }
        int unused;
        if (!c->fused && be->num_buckets && (st = warm_up(be, op, top, big, &unused)) != ERT_OK) goto fail;
    }
    return ERT_OK;
fail:
    return st; /* backend_cuda.cu's op_free releases the descriptors and memory */
}

#else /* no cuDNN */

ert_status ert_cuda_conv_new(ert_backend *be, const ert_op_desc *d, ert_op *op) {
    (void)be, (void)d, (void)op;
    return ert_error(ERT_ERR_UNSUPPORTED, "conv2d on CUDA needs cuDNN (not found at build time)");
}

ert_status ert_cuda_conv_run(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y) {
    (void)be, (void)op, (void)rows, (void)x, (void)y;
    return ert_error(ERT_ERR_UNSUPPORTED, "conv2d on CUDA needs cuDNN (not found at build time)");
}

void ert_cuda_conv_free(ert_backend *be, ert_op *op) { (void)be, (void)op; }

void ert_cuda_cudnn_destroy(ert_backend *be) { (void)be; }

#endif
