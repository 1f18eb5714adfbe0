/*
 * Row-wise normalisation and the residual add, in the activation type with f32 math.
 *
 *   layernorm:  x, y (rows, in);  y = (x - mean) / sqrt(var + eps) * w + b per row
 *               (biased variance, as PyTorch and the CPU reference). w, b (in), f32.
 *   normalize:  x (rows, in) f32 input, y (rows, in) activations;
 *               y = x * scale[c] + shift[c],  c = j / (in / channels).
 *   add:        x, y (rows, width);  y += x.
 *
 * Every kernel reads the exact row count from rows.dev_count when given, so rows past it
 * are left untouched (graph mode launches for a bucket of rows).
 */
#include <stdint.h>

#include "cuda_common.cuh"

static const int kThreads = 256;
static const unsigned kMaxBlocks = 65535; /* grid-stride loops cover the rest */

static unsigned grid_for(long long work, int per_block) {
    const long long blocks = ert_ceil_div_ll(work, per_block);
    return blocks < 1 ? 1u : (blocks > kMaxBlocks ? kMaxBlocks : (unsigned)blocks);
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---------------------------------------------------------------- layernorm */

struct layernorm_args {
    const void *x;
    void *y; /* may equal x */
    const float *w, *b; /* in, or NULL (1 and 0) */
    int rows, dim;
    float eps;
    const int32_t *dev_count;
};

/* One warp per row, two passes (mean, then the squared deviations) in f32: a row fits
 * L1 for any realistic width, and two passes do not lose precision to cancellation as
 * the one-pass E[x^2] - E[x]^2 does on rows with a large mean. */
template <typename Act>
static __global__ void layernorm_kernel(layernorm_args a) {
    typedef typename Act::storage T;
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= ert_cuda_rows(a.rows, a.dev_count)) return; /* uniform over the warp */
    const T *x = (const T *)a.x + (size_t)row * a.dim;
    T *y = (T *)a.y + (size_t)row * a.dim;

    float sum = 0.0f;
    for (int j = lane; j < a.dim; j += 32) sum += Act::load(x[j]);
    const float mean = warp_sum(sum) / (float)a.dim;
    float sq = 0.0f;
    for (int j = lane; j < a.dim; j += 32) {
        const float d = Act::load(x[j]) - mean;
        sq += d * d;
    }
    const float var = warp_sum(sq) / (float)a.dim;
    const float rstd = 1.0f / sqrtf(var + a.eps);
    for (int j = lane; j < a.dim; j += 32) {
        const float v = (Act::load(x[j]) - mean) * rstd;
        y[j] = Act::store(v * (a.w ? a.w[j] : 1.0f) + (a.b ? a.b[j] : 0.0f));
    }
}

template <typename Act>
static ert_status launch_layernorm(cudaStream_t stream, const layernorm_args &a) {
    const int rows_per_block = kThreads / 32;
    layernorm_kernel<Act><<<(unsigned)ert_ceil_div(a.rows, rows_per_block), kThreads, 0, stream>>>(a);
    return ERT_CUDA_CHECK(cudaGetLastError());
}

/* ---------------------------------------------------------------- normalize */

struct normalize_args {
    const float *x;
    void *y;
    const float *scale, *shift; /* channels */
    int rows, in, per;          /* per = in / channels */
    const int32_t *dev_count;
};

template <typename Act>
static __global__ void normalize_kernel(normalize_args a) {
    typedef typename Act::storage T;
    T *y = (T *)a.y;
    const long long total = (long long)ert_cuda_rows(a.rows, a.dev_count) * a.in;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int c = (int)(i % a.in) / a.per;
        y[i] = Act::store(a.x[i] * a.scale[c] + a.shift[c]);
    }
}

template <typename Act>
static ert_status launch_normalize(cudaStream_t stream, const normalize_args &a) {
    normalize_kernel<Act><<<grid_for((long long)a.rows * a.in, kThreads), kThreads, 0, stream>>>(a);
    return ERT_CUDA_CHECK(cudaGetLastError());
}

/* ---------------------------------------------------------------- add */

struct add_args {
    const void *x;
    void *y;
    int rows, width;
    const int32_t *dev_count;
};

/* The rows are dense, so y += x is one flat range: VEC elements (16 bytes when both
 * pointers allow it) per load, the remainder one by one. */
template <typename Act, int VEC>
static __global__ void add_kernel(add_args a) {
    typedef typename Act::storage T;
    struct alignas(sizeof(T) * VEC) pack {
        T v[VEC];
    };
    const long long total = (long long)ert_cuda_rows(a.rows, a.dev_count) * a.width;
    const long long packs = total / VEC;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const pack *xp = (const pack *)a.x;
    pack *yp = (pack *)a.y;
    for (long long i = tid; i < packs; i += stride) {
        const pack xv = xp[i];
        pack yv = yp[i];
#pragma unroll
        for (int k = 0; k < VEC; ++k) yv.v[k] = Act::store(Act::load(yv.v[k]) + Act::load(xv.v[k]));
        yp[i] = yv;
    }
    const T *x = (const T *)a.x;
    T *y = (T *)a.y;
    for (long long i = packs * VEC + tid; i < total; i += stride) y[i] = Act::store(Act::load(y[i]) + Act::load(x[i]));
}

template <typename Act>
static ert_status launch_add(cudaStream_t stream, const add_args &a) {
    constexpr int vec = (int)(16 / sizeof(typename Act::storage));
    const long long total = (long long)a.rows * a.width;
    if ((((uintptr_t)a.x | (uintptr_t)a.y) & 15u) == 0) {
        add_kernel<Act, vec><<<grid_for(total / vec, kThreads), kThreads, 0, stream>>>(a);
    } else {
        add_kernel<Act, 1><<<grid_for(total, kThreads), kThreads, 0, stream>>>(a);
    }
    return ERT_CUDA_CHECK(cudaGetLastError());
}

/* ---------------------------------------------------------------- entry points */

ert_status ert_cuda_norm_new(ert_backend *be, const ert_op_desc *d, ert_op *op) {
    ert_status st = ERT_OK;
    if (d->out != d->in) return ert_error(ERT_ERR_SHAPE, "out %d must equal in %d", d->out, d->in);
    if (d->type == ERT_OP_NORMALIZE) {
        if (d->channels <= 0 || d->in % d->channels != 0)
            return ert_error(ERT_ERR_SHAPE, "%d channels do not divide width %d", d->channels, d->in);
        if (!d->weight || !d->bias) return ert_error(ERT_ERR_INVALID_ARGUMENT, "normalize needs scale and shift");
        if ((st = ert_cuda_upload_params(be, d->weight, (size_t)d->channels, CUDA_R_32F, &op->weight)) != ERT_OK)
            return st;
        return ert_cuda_upload_params(be, d->bias, (size_t)d->channels, CUDA_R_32F, &op->bias);
    }
    if (!(d->eps >= 0.0f)) return ert_error(ERT_ERR_INVALID_ARGUMENT, "layernorm eps %g", (double)d->eps);
    if (d->weight && (st = ert_cuda_upload_params(be, d->weight, (size_t)d->in, CUDA_R_32F, &op->weight)) != ERT_OK)
        return st;
    if (d->bias && (st = ert_cuda_upload_params(be, d->bias, (size_t)d->in, CUDA_R_32F, &op->bias)) != ERT_OK)
        return st;
    return ERT_OK;
}

ert_status ert_cuda_norm_run(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y) {
    if (rows.n == 0) return ERT_OK;
    if (op->type == ERT_OP_LAYERNORM) {
        layernorm_args a;
        a.x = x;
        a.y = y;
        a.w = (const float *)op->weight;
        a.b = (const float *)op->bias;
        a.rows = rows.n;
        a.dim = op->in;
        a.eps = op->eps;
        a.dev_count = rows.dev_count;
        return ert_cuda_dispatch_dtype(be->dtype, [&](auto tag) { return launch_layernorm<decltype(tag)>(be->stream, a); });
    }
    normalize_args a;
    a.x = (const float *)x;
    a.y = y;
    a.scale = (const float *)op->weight;
    a.shift = (const float *)op->bias;
    a.rows = rows.n;
    a.in = op->in;
    a.per = op->in / op->channels;
    a.dev_count = rows.dev_count;
    return ert_cuda_dispatch_dtype(be->dtype, [&](auto tag) { return launch_normalize<decltype(tag)>(be->stream, a); });
}

ert_status ert_cuda_add(ert_backend *be, ert_rows rows, int width, const void *x, void *y) {
    if (rows.n == 0) return ERT_OK;
    add_args a;
    a.x = x;
    a.y = y;
    a.rows = rows.n;
    a.width = width;
    a.dev_count = rows.dev_count;
    return ert_cuda_dispatch_dtype(be->dtype, [&](auto tag) { return launch_add<decltype(tag)>(be->stream, a); });
}
