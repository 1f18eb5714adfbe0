/*
 * ERT_OP_LINEAR through cuBLASLt, y = act(x W^T + b).
 *
 *   x (rows, in), W (out, in), b (out), y (rows, out), all row-major.
 *
 * cuBLASLt is column-major, and a row-major (r, c) matrix is a column-major (c x r) one,
 * so the op is   D (out x rows) = op_T(A) * B   with
 *   A = W as column-major (in x out, ld in), transposed;   B = x as (in x rows, ld in);
 *   D = y as (out x rows, ld out);   m = out, n = rows, k = in.
 * The bias has one entry per row of D (per output feature), as cuBLASLt's epilogue wants.
 *
 * Types: f32 (CUBLAS_COMPUTE_32F), tf32 (CUBLAS_COMPUTE_32F_FAST_TF32 on f32 storage),
 * bf16 and f16 storage with f32 accumulation. With desc->f32_out, D is f32 whatever the
 * activation type (the logits of an exit head). Weights are converted on the host with
 * dtype.h and uploaded once.
 *
 * Epilogues. Exactness against the CPU reference (op_math.h) matters more than one fused
 * epilogue, so only the bias is always fused (CUBLASLT_EPILOGUE_BIAS):
 *  - GELU: cublasLt.h (CUDA 13.0) documents CUBLASLT_EPILOGUE_GELU only as "x := GELU(x)",
 *    without saying which. It is the tanh approximation: measured on the H200 (cuBLASLt
 *    13.1) over [-6, 6] it stays within 5e-6 of tanh-GELU and 4.7e-4 from op_math's exact
 *    erf GELU (the CPU reference's and PyTorch's default). So GELU is a plain GEMM into
 *    f32 (y, or be->scratch when y is 16-bit), then linear_post_kernel adds the bias and
 *    applies ert_activate, rounding 16-bit results once, as the CPU rounds nothing.
 *  - RELU: fused (CUBLASLT_EPILOGUE_RELU_BIAS). The epilogue keeps a NaN input NaN
 *    (seen on the H200, cuBLASLt 13.1), as PyTorch's relu does; op_math.h's relu was
 *    made to do the same, so the fused epilogue is exact against the CPU. Setting
 *    ERT_LINEAR_FUSE_RELU to 0 applies relu in a separate in-place pass instead (one more
 *    elementwise pass over y: 10.8 vs 7.9 us at 16 rows, 34.9 vs 25.4 us at 8192 rows,
 *    bf16 1024 -> 1024 on the H200).
 *
 * Algorithms are chosen at op_new, never per call: one cuBLASLt heuristic query per row
 * bucket (1, 2, 4, ... below max_rows, then max_rows). A run uses the algorithm of the
 * smallest bucket >= rows, on layouts built on the stack for the exact row count (the
 * Init variants of the descriptors allocate nothing). Each chosen algorithm is also
 * checked (cublasLtMatmulAlgoCheck) at the low end of its bucket.
 */
#include <stdint.h>
#include <stdlib.h>

#include "cuda_common.cuh"
#include "op_math.h"

/* 1: RELU through cuBLASLt's RELU(_BIAS) epilogue; 0: a separate in-place pass. */
#define ERT_LINEAR_FUSE_RELU 1

/* Every x and y a linear op runs on must be this aligned: the heuristics were asked for
 * algorithms that need no more (cudaMalloc gives 256). */
static const uint32_t kRunAlign = 16;
static const int kHeuristicResults = 8;
static const int kPostThreads = 128;

/* ---------------------------------------------------------------- bias + activation */

struct linear_post_args {
    const void *src;   /* (rows, cols) GEMM output in In's type; may alias dst */
    const float *bias; /* cols, or NULL (none, or the epilogue added it) */
    void *dst;         /* (rows, cols) in Out's type */
    int rows, cols;
    int act;           /* ert_activation */
};

/* dst = act(src + bias), element by element in f32 (op_math's ert_activate).
 * Rows go over blockIdx.y (grid-stride), VEC-element words of a row over x: no division
 * per element, and 16-byte loads and stores when the row width allows (the host picks
 * VEC = 1 otherwise). */
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC < 16 ? sizeof(T) * VEC : 16) post_pack {
    T v[VEC];
};

template <typename In, typename Out, int VEC>
static __global__ void linear_post_kernel(linear_post_args a) {
    typedef post_pack<typename In::storage, VEC> in_pack;
    typedef post_pack<typename Out::storage, VEC> out_pack;
    const int words = a.cols / VEC;
    for (int row = blockIdx.y; row < a.rows; row += gridDim.y) {
        const in_pack *src = (const in_pack *)((const typename In::storage *)a.src + (size_t)row * a.cols);
        out_pack *dst = (out_pack *)((typename Out::storage *)a.dst + (size_t)row * a.cols);
        for (int w = blockIdx.x * blockDim.x + threadIdx.x; w < words; w += gridDim.x * blockDim.x) {
            const in_pack p = src[w];
            out_pack q;
#pragma unroll
            for (int k = 0; k < VEC; ++k) {
                float v = In::load(p.v[k]);
                if (a.bias) v += a.bias[w * VEC + k];
                q.v[k] = Out::store(ert_activate(v, a.act));
            }
            dst[w] = q;
        }
    }
}

template <typename In, typename Out>
static ert_status launch_linear_post(cudaStream_t stream, const linear_post_args &a) {
    constexpr int vec = (int)(16 / sizeof(typename Out::storage)); /* 16-byte stores */
    const int aligned = a.cols % vec == 0 && (((uintptr_t)a.src | (uintptr_t)a.dst) & 15u) == 0;
    const int words = aligned ? a.cols / vec : a.cols;
    const dim3 grid((unsigned)ert_ceil_div(words, kPostThreads), (unsigned)(a.rows < 65535 ? a.rows : 65535));
    if (aligned) linear_post_kernel<In, Out, vec><<<grid, kPostThreads, 0, stream>>>(a);
    else linear_post_kernel<In, Out, 1><<<grid, kPostThreads, 0, stream>>>(a);
    return ERT_CUDA_CHECK(cudaGetLastError());
}

/* ---------------------------------------------------------------- preparation */

static cudaDataType_t cuda_type_of(ert_dtype dtype) {
    switch (dtype) {
    case ERT_DTYPE_BF16: return CUDA_R_16BF;
    case ERT_DTYPE_F16: return CUDA_R_16F;
    default: return CUDA_R_32F;
    }
}

template <typename T>
static ert_status set_desc(ert_op *op, cublasLtMatmulDescAttributes_t attr, const T &value) {
    return ERT_CUDA_CHECK(cublasLtMatmulDescSetAttribute(&op->matmul, attr, &value, sizeof value));
}

template <typename T>
static ert_status set_pref(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const T &value) {
    return ERT_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof value));
}

/* The fastest algorithm (by cuBLASLt's estimate) for `hi` rows that also passes the
 * check at `lo` rows and fits the workspace. */
static ert_status pick_algo(ert_backend *be, ert_op *op, cublasLtMatmulPreference_t pref, int lo, int hi,
                            cublasLtMatmulAlgo_t *algo) {
    ert_status st = ERT_OK;
    cublasLtMatrixLayoutOpaque_t b_hi, d_hi, b_lo, d_lo;
    cublasLtMatmulHeuristicResult_t res[kHeuristicResults];
    int found = 0;

    ERT_CUDA_TRY(cublasLtMatrixLayoutInit(&b_hi, op->ab_type, (uint64_t)op->in, (uint64_t)hi, op->in));
    ERT_CUDA_TRY(cublasLtMatrixLayoutInit(&d_hi, op->gemm_type, (uint64_t)op->out, (uint64_t)hi, op->out));
    ERT_CUDA_TRY(cublasLtMatrixLayoutInit(&b_lo, op->ab_type, (uint64_t)op->in, (uint64_t)lo, op->in));
    ERT_CUDA_TRY(cublasLtMatrixLayoutInit(&d_lo, op->gemm_type, (uint64_t)op->out, (uint64_t)lo, op->out));
    ERT_CUDA_TRY(cublasLtMatmulAlgoGetHeuristic(be->lt, &op->matmul, &op->a_layout, &b_hi, &d_hi, &d_hi, pref,
                                                kHeuristicResults, res, &found));
    for (int i = 0; i < found; ++i) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > be->workspace_bytes) continue;
        if (lo != hi) {
            cublasLtMatmulHeuristicResult_t check;
            if (cublasLtMatmulAlgoCheck(be->lt, &op->matmul, &op->a_layout, &b_lo, &d_lo, &d_lo, &res[i].algo,
                                        &check) != CUBLAS_STATUS_SUCCESS ||
                check.workspaceSize > be->workspace_bytes)
                continue;
        }
        *algo = res[i].algo;
        return ERT_OK;
    }
    return ert_error(ERT_ERR_UNSUPPORTED, "cuBLASLt offers no algorithm for %d..%d rows (in %d, out %d; %d candidates)",
                     lo, hi, op->in, op->out, found);
fail:
    return ert_error_context(st, "choosing the GEMM for %d..%d rows: ", lo, hi);
}

ert_status ert_cuda_linear_new(ert_backend *be, const ert_op_desc *d, ert_op *op) {
    ert_status st = ERT_OK;
    cublasLtMatmulPreferenceOpaque_t pref;
    /* GELU: GEMM into f32, our kernel adds the bias; otherwise the epilogue adds it */
    const int gelu = d->act == ERT_ACT_GELU;
    const cublasComputeType_t compute =
        be->dtype == ERT_DTYPE_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const uint64_t ws = be->workspace_bytes;
    const uint32_t align_a = 256; /* the weights come from cudaMalloc */
    cudaDataType_t out_type;
    uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;

    if (!d->weight) return ert_error(ERT_ERR_INVALID_ARGUMENT, "linear op without weights");
    if (d->act != ERT_ACT_NONE && d->act != ERT_ACT_RELU && d->act != ERT_ACT_GELU)
        return ert_error(ERT_ERR_UNSUPPORTED, "activation %d", (int)d->act);

    op->ab_type = cuda_type_of(be->dtype);
    out_type = d->f32_out ? CUDA_R_32F : op->ab_type;
    if (gelu) {
        op->post_act = ERT_ACT_GELU;
        op->post_from_f32 = 1;
        op->gemm_type = CUDA_R_32F;
        op->use_scratch = out_type != CUDA_R_32F;
        /* The f32 GEMM output of a 16-bit op is the backend's scratch, shared by all its
         * ops (they run in stream order); it only grows, and only at op_new. */
        if (op->use_scratch && (st = ert_cuda_reserve_scratch(be, (size_t)op->max_rows * (size_t)op->out * sizeof(float))))
            goto fail;
    } else {
        const int fuse_relu = d->act == ERT_ACT_RELU && ERT_LINEAR_FUSE_RELU;
        op->gemm_type = out_type;
        if (d->act == ERT_ACT_RELU && !fuse_relu) op->post_act = ERT_ACT_RELU; /* in place, after the GEMM */
        if (d->bias) epilogue = fuse_relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
        else epilogue = fuse_relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT;
    }

    if ((st = ert_cuda_upload_params(be, d->weight, (size_t)d->out * (size_t)d->in, op->ab_type, &op->weight)) != ERT_OK)
        goto fail;
    /* The epilogue reads the bias in D's type (cublasLt.h, BIAS_DATA_TYPE); our post
     * kernel reads it in f32. */
    if (d->bias && (st = ert_cuda_upload_params(be, d->bias, (size_t)d->out, gelu ? CUDA_R_32F : op->gemm_type,
                                                &op->bias)) != ERT_OK)
        goto fail;

    ERT_CUDA_TRY(cublasLtMatmulDescInit(&op->matmul, compute, CUDA_R_32F));
    if ((st = set_desc(op, CUBLASLT_MATMUL_DESC_TRANSA, (int32_t)CUBLAS_OP_T)) != ERT_OK) goto fail;
    if ((st = set_desc(op, CUBLASLT_MATMUL_DESC_TRANSB, (int32_t)CUBLAS_OP_N)) != ERT_OK) goto fail;
    if ((st = set_desc(op, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue)) != ERT_OK) goto fail;
    if (!gelu && op->bias) {
        if ((st = set_desc(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, (const void *)op->bias)) != ERT_OK) goto fail;
        if ((st = set_desc(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, (int32_t)op->gemm_type)) != ERT_OK) goto fail;
    }
    ERT_CUDA_TRY(cublasLtMatrixLayoutInit(&op->a_layout, op->ab_type, (uint64_t)op->in, (uint64_t)op->out, op->in));

    ERT_CUDA_TRY(cublasLtMatmulPreferenceInit(&pref));
    if ((st = set_pref(&pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, ws)) != ERT_OK) goto fail;
    if ((st = set_pref(&pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a)) != ERT_OK) goto fail;
    if ((st = set_pref(&pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, kRunAlign)) != ERT_OK) goto fail;
    if ((st = set_pref(&pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, kRunAlign)) != ERT_OK) goto fail;
    if ((st = set_pref(&pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, kRunAlign)) != ERT_OK) goto fail;

    for (int lo = 0; lo < op->max_rows && op->num_ranges < ERT_CUDA_MAX_ALGO_RANGES;) {
        const int hi = lo == 0 ? 1 : (lo > op->max_rows / 2 ? op->max_rows : lo * 2);
        if ((st = pick_algo(be, op, &pref, lo + 1, hi, &op->algo[op->num_ranges])) != ERT_OK) goto fail;
        op->range_rows[op->num_ranges++] = hi;
        lo = hi;
    }
    return ERT_OK;
fail:
    return st; /* backend_cuda.cu's op_free releases what was allocated */
}

/* ---------------------------------------------------------------- run */

ert_status ert_cuda_linear_run(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y) {
    ert_status st = ERT_OK;
    /* cuBLASLt takes the row count on the host: rows.n (exact in eager mode, the bucket
     * in graph mode); a device count cannot shrink the GEMM. */
    const int n = rows.n;
    const float alpha = 1.0f, beta = 0.0f;
    cublasLtMatrixLayoutOpaque_t b_layout, d_layout;
    void *d = op->use_scratch ? (void *)be->scratch : y;
    int b = 0;

    if (n == 0) return ERT_OK;
    if (((uintptr_t)x | (uintptr_t)y) % kRunAlign != 0)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "x (%p) and y (%p) must be %u-byte aligned", x, y, kRunAlign);
    /* graph.cu calls this directly, with its buckets' row counts */
    if (n > op->max_rows) return ert_error(ERT_ERR_INVALID_ARGUMENT, "%d rows, more than the op's %d", n, op->max_rows);
    while (op->range_rows[b] < n) ++b; /* n <= max_rows = the last range's */

    ERT_CUDA_TRY(cublasLtMatrixLayoutInit(&b_layout, op->ab_type, (uint64_t)op->in, (uint64_t)n, op->in));
    ERT_CUDA_TRY(cublasLtMatrixLayoutInit(&d_layout, op->gemm_type, (uint64_t)op->out, (uint64_t)n, op->out));
    /* cublasLtMatmul takes non-const descriptors but only reads them. */
    ERT_CUDA_TRY(cublasLtMatmul(be->lt, const_cast<cublasLtMatmulDescOpaque_t *>(&op->matmul), &alpha, op->weight,
                                const_cast<cublasLtMatrixLayoutOpaque_t *>(&op->a_layout), x, &b_layout, &beta, d,
                                &d_layout, d, &d_layout, &op->algo[b], be->workspace, be->workspace_bytes,
                                be->stream));
    if (op->post_act >= 0) {
        const ert_dtype out_dt = op->f32_out ? ERT_DTYPE_F32 : be->dtype;
        linear_post_args a;
        a.src = d;
        a.bias = op->post_from_f32 ? (const float *)op->bias : NULL;
        a.dst = y;
        a.rows = n;
        a.cols = op->out;
        a.act = op->post_act;
        if (op->post_from_f32)
            st = ert_cuda_dispatch_dtype(out_dt, [&](auto tag) {
                return launch_linear_post<ert_act_f32, decltype(tag)>(be->stream, a);
            });
        else
            st = ert_cuda_dispatch_dtype(out_dt, [&](auto tag) {
                return launch_linear_post<decltype(tag), decltype(tag)>(be->stream, a);
            });
    }
fail:
    return st;
}
