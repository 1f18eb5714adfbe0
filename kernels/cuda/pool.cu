/*
 * Pooling and relu over [C, H, W] samples, in the activation type with f32 math.
 *
 *   maxpool:  x (rows, C, H, W) -> y (rows, C, H', W'); max over each window, padding
 *             counting as -inf (it never wins: padding is at most half the window, so
 *             every window holds a real element); NaN wins, as in PyTorch.
 *   avgpool:  the window's sum over kh * kw, padding counted as zeros in the divisor
 *             (PyTorch's count_include_pad=True); floor output sizes.
 *   relu:     x, y (rows, in); y = x < 0 ? 0 : x, NaN stays NaN (op_math.h); may run in place.
 * With desc->f32_out the output is f32 whatever the activation type (an exit head ending
 * in a global average pool gives its logits so).
 *
 * cuDNN's pooling is not used: one thread per output element is as fast for these
 * memory-bound windows, and exactness against the CPU reference (NaN handling, the
 * divisor, the order of the sum) is then ours to keep. Windows that cover a whole image
 * (global pooling) take one warp per (sample, channel) plane instead, with coalesced
 * reads of the plane.
 *
 * Every kernel reads the exact row count from rows.dev_count when given, so rows past it
 * are left untouched (graph mode launches for a bucket of rows).
 */
#include <math.h>
#include <stdint.h>

#include "cuda_common.cuh"
#include "op_math.h"

static const int kThreads = 256;
static const unsigned kMaxBlocks = 65535; /* grid-stride loops cover the rest */

static unsigned grid_for(long long work, int per_block) {
    const long long blocks = ert_ceil_div_ll(work, per_block);
    return blocks < 1 ? 1u : (blocks > kMaxBlocks ? kMaxBlocks : (unsigned)blocks);
}

/* The max step of the CPU reference: v replaces acc if larger or NaN, and a NaN acc stays. */

/* ---------------------------------------------------------------- windows */

struct pool_args {
    const void *x;
    void *y;
    int rows;
    const int32_t *dev_count;
    int c, h, w, oh, ow, kh, kw, sh, sw, ph, pw;
};

/* One thread per output element (sample, channel, oy, ox), in y's order so that the
 * stores coalesce; the window is read in the CPU reference's order. */
template <typename In, typename Out, bool MAX>
static __global__ void pool_kernel(pool_args a) {
    const typename In::storage *x = (const typename In::storage *)a.x;
    typename Out::storage *y = (typename Out::storage *)a.y;
    const long long total = (long long)ert_cuda_rows(a.rows, a.dev_count) * a.c * a.oh * a.ow;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const float area = (float)(a.kh * a.kw);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long t = i / a.ow;
        const int ox = (int)(i - t * a.ow);
        const long long plane = t / a.oh;
        const int oy = (int)(t - plane * a.oh);
        const typename In::storage *xp = x + plane * a.h * a.w;
        const int y0 = oy * a.sh - a.ph, x0 = ox * a.sw - a.pw;
        float acc = MAX ? -INFINITY : 0.0f;
        for (int i2 = 0; i2 < a.kh; ++i2) {
            const int iy = y0 + i2;
            if (iy < 0 || iy >= a.h) continue;
            for (int j = 0; j < a.kw; ++j) {
                const int ix = x0 + j;
                if (ix < 0 || ix >= a.w) continue;
                const float v = In::load(xp[iy * a.w + ix]);
                acc = MAX ? ert_max_step(acc, v) : acc + v;
            }
        }
        y[i] = Out::store(MAX ? acc : acc / area);
    }
}

static __device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = ert_max_step(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Global pooling: one warp per (sample, channel) plane of hw = H * W contiguous values,
 * each lane over a strided part, then a shuffle reduction (ert_max_step keeps NaN whichever
 * lane holds it). The sum's order differs from the CPU's sequential one: f32 rounding. */
template <typename In, typename Out, bool MAX>
static __global__ void global_pool_kernel(pool_args a) {
    const int lane = threadIdx.x % 32;
    const long long planes = (long long)ert_cuda_rows(a.rows, a.dev_count) * a.c;
    const long long warps = (long long)gridDim.x * (blockDim.x / 32);
    const int hw = a.h * a.w;
    const float area = (float)hw;
    for (long long p = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; p < planes; p += warps) {
        const typename In::storage *xp = (const typename In::storage *)a.x + p * hw;
        float acc = MAX ? -INFINITY : 0.0f;
        for (int j = lane; j < hw; j += 32) {
            const float v = In::load(xp[j]);
            acc = MAX ? ert_max_step(acc, v) : acc + v;
        }
        acc = MAX ? warp_max(acc) : warp_sum(acc);
        if (lane == 0) ((typename Out::storage *)a.y)[p] = Out::store(MAX ? acc : acc / area);
    }
}

template <typename In, typename Out, bool MAX>
static ert_status launch_pool(cudaStream_t stream, const pool_args &a) {
    const int global = a.oh == 1 && a.ow == 1 && a.kh == a.h && a.kw == a.w && a.ph == 0 && a.pw == 0;
    if (global) {
        global_pool_kernel<In, Out, MAX>
            <<<grid_for((long long)a.rows * a.c, kThreads / 32), kThreads, 0, stream>>>(a);
    } else {
        pool_kernel<In, Out, MAX>
            <<<grid_for((long long)a.rows * a.c * a.oh * a.ow, kThreads), kThreads, 0, stream>>>(a);
    }
    return ERT_CUDA_CHECK(cudaGetLastError());
}

/* ---------------------------------------------------------------- relu */

struct relu_args {
    const void *x;
    void *y; /* may equal x */
    long long width;
    int rows;
    const int32_t *dev_count;
};

/* VEC elements per load and store when both pointers allow it, the remainder one by one
 * (the rows are dense, so rows x width is one flat range). */
template <typename In, typename Out, int VEC>
static __global__ void relu_kernel(relu_args a) {
    struct alignas(sizeof(typename In::storage) * VEC) in_pack {
        typename In::storage v[VEC];
    };
    struct alignas(sizeof(typename Out::storage) * VEC) out_pack {
        typename Out::storage v[VEC];
    };
    const long long total = (long long)ert_cuda_rows(a.rows, a.dev_count) * a.width;
    const long long packs = total / VEC;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (long long i = tid; i < packs; i += stride) {
        const in_pack p = ((const in_pack *)a.x)[i];
        out_pack q;
#pragma unroll
        for (int k = 0; k < VEC; ++k) q.v[k] = Out::store(ert_activate(In::load(p.v[k]), ERT_ACT_RELU));
        ((out_pack *)a.y)[i] = q;
    }
    const typename In::storage *x = (const typename In::storage *)a.x;
    typename Out::storage *y = (typename Out::storage *)a.y;
    for (long long i = packs * VEC + tid; i < total; i += stride)
        y[i] = Out::store(ert_activate(In::load(x[i]), ERT_ACT_RELU));
}

template <typename In, typename Out>
static ert_status launch_relu(cudaStream_t stream, const relu_args &a) {
    constexpr size_t in_size = sizeof(typename In::storage), out_size = sizeof(typename Out::storage);
    constexpr int vec = (int)(16 / (in_size > out_size ? in_size : out_size)); /* 16 bytes on the wider side */
    const long long total = (long long)a.rows * a.width;
    const int aligned = (uintptr_t)a.x % (vec * in_size) == 0 && (uintptr_t)a.y % (vec * out_size) == 0;
    if (aligned) relu_kernel<In, Out, vec><<<grid_for(total / vec, kThreads), kThreads, 0, stream>>>(a);
    else relu_kernel<In, Out, 1><<<grid_for(total, kThreads), kThreads, 0, stream>>>(a);
    return ERT_CUDA_CHECK(cudaGetLastError());
}

/* ---------------------------------------------------------------- entry points */

ert_status ert_cuda_pool_new(ert_backend *be, const ert_op_desc *d, ert_op *op) {
    (void)be;
    if (d->type == ERT_OP_RELU) {
        if (d->out != d->in) return ert_error(ERT_ERR_SHAPE, "relu: out %d must equal in %d", d->out, d->in);
        return ERT_OK;
    }
    const ert_conv_geom *g = &d->conv;
    if (g->in_c < 1 || g->in_h < 1 || g->in_w < 1 || g->out_c != g->in_c || g->kh < 1 || g->kw < 1 || g->sh < 1 ||
        g->sw < 1 || g->ph < 0 || g->pw < 0 || g->dh != 1 || g->dw != 1 || g->groups != 1)
        return ert_error(ERT_ERR_SHAPE,
                         "pooling geometry: C %d -> %d, %dx%d, kernel %dx%d, stride %dx%d, padding %dx%d, "
                         "dilation %dx%d, groups %d (pools keep C and take no dilation or groups)",
                         g->in_c, g->out_c, g->in_h, g->in_w, g->kh, g->kw, g->sh, g->sw, g->ph, g->pw, g->dh, g->dw,
                         g->groups);
    /* PyTorch's rule; it also keeps every window on at least one real element */
    if (2 * g->ph > g->kh || 2 * g->pw > g->kw)
        return ert_error(ERT_ERR_SHAPE, "padding %dx%d must be at most half the %dx%d window", g->ph, g->pw, g->kh,
                         g->kw);
    const long long eh = (long long)g->in_h + 2LL * g->ph - g->kh, ew = (long long)g->in_w + 2LL * g->pw - g->kw;
    if (eh < 0 || ew < 0 || eh / g->sh + 1 != g->out_h || ew / g->sw + 1 != g->out_w)
        return ert_error(ERT_ERR_SHAPE, "pooling output %dx%d does not follow from the %dx%d input and the window",
                         g->out_h, g->out_w, g->in_h, g->in_w);
    if ((long long)g->in_c * g->in_h * g->in_w != d->in || (long long)g->out_c * g->out_h * g->out_w != d->out)
        return ert_error(ERT_ERR_SHAPE, "widths in %d, out %d do not match [%d, %d, %d] -> [%d, %d, %d]", d->in,
                         d->out, g->in_c, g->in_h, g->in_w, g->out_c, g->out_h, g->out_w);
    op->geom = *g;
    return ERT_OK;
}

ert_status ert_cuda_pool_run(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y) {
    const ert_dtype out_dt = op->f32_out ? ERT_DTYPE_F32 : be->dtype;
    if (rows.n == 0) return ERT_OK;
    if (op->type == ERT_OP_RELU) {
        /* in place only where an element's output overwrites just that element */
        if (x == y && ert_cuda_elem_size(out_dt) != ert_cuda_elem_size(be->dtype))
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "relu with an f32 output cannot run in place (x == y)");
        relu_args a;
        a.x = x;
        a.y = y;
        a.width = op->in;
        a.rows = rows.n;
        a.dev_count = rows.dev_count;
        return ert_cuda_dispatch_dtype(be->dtype, [&](auto in) {
            return ert_cuda_dispatch_dtype(out_dt, [&](auto out) {
                return launch_relu<decltype(in), decltype(out)>(be->stream, a);
            });
        });
    }
    if (x == y) return ert_error(ERT_ERR_INVALID_ARGUMENT, "pooling cannot run in place (x == y)");
    const ert_conv_geom *g = &op->geom;
    pool_args a;
    a.x = x;
    a.y = y;
    a.rows = rows.n;
    a.dev_count = rows.dev_count;
    a.c = g->in_c, a.h = g->in_h, a.w = g->in_w, a.oh = g->out_h, a.ow = g->out_w;
    a.kh = g->kh, a.kw = g->kw, a.sh = g->sh, a.sw = g->sw, a.ph = g->ph, a.pw = g->pw;
    const bool is_max = op->type == ERT_OP_MAXPOOL;
    return ert_cuda_dispatch_dtype(be->dtype, [&](auto in) {
        return ert_cuda_dispatch_dtype(out_dt, [&](auto out) {
            return is_max ? launch_pool<decltype(in), decltype(out), true>(be->stream, a)
                          : launch_pool<decltype(in), decltype(out), false>(be->stream, a);
        });
    });
}
