/*
 * Compaction of the survivors after an exit.
 *
 *   keep (rows) u8;  x (rows, width) activations, idx_in (rows), state_in (rows)
 *   -> y (count, width), idx_out (count), state_out (count) in row order;  *count (device).
 *
 * Rows past the device count (rows.dev_count) count as not kept. Rows of the outputs past
 * the survivor count are left untouched (gather: as they were in y; fill: the moved rows'
 * old copies stay where they were, at or past the count).
 *
 * gather (y != x): the survivors are copied in row order. Two paths with identical results:
 *
 *  - CUB: cub::DeviceScan::ExclusiveSum over the flags (as int, through a transform
 *    iterator that also applies the device count) into be->scan_offsets, then one gather
 *    kernel, one thread per (row, 16-byte vector), whose thread 0 also writes the count
 *    (a separate one-thread kernel would only add a launch). Temp storage is allocated
 *    at backend create for max_rows.
 *  - fused: one kernel. Block b owns rows [64b, 64b + 64): it counts the kept flags before
 *    its rows (cub::BlockReduce; the flags are bytes in L2, so this redundant prefix costs
 *    less than a second launch for small batches), scans its own flags (cub::BlockScan),
 *    scatters indices and states, then its warps copy the kept rows. A single block would
 *    also work but would copy every activation through one SM; this spreads the copy over
 *    rows / 64 SMs and still needs no temp storage and no second launch.
 *
 * ERT_COMPACT_PATH=cub|fused|auto (read at backend create) forces a gather path; auto takes the
 * fused one up to ERT_CUDA_COMPACT_FUSED_MAX_ROWS rows of at most
 * ERT_CUDA_COMPACT_FUSED_MAX_ROW_BYTES bytes (cuda_common.cuh has the measurements).
 *
 * fill (y == x, in place; backend.h has the contract): a warp takes each kept row r at
 * or past the new count n': its rank among those rows (offsets[r] - offsets[n']) is the
 * rank of the hole it fills below n', found by a binary search over holes_before(q) =
 * q - offsets[q] (ert_fill_destination in backend.h, also checked on the host by
 * test_exec). Only those rows move: about as many as left, instead of about all of them.
 * Up to kFillBlockRows rows one launch does it all: every block scans all the flags into
 * its shared memory (at most 1 KiB from L2, as the fused gather re-counts its prefix) and
 * its warps take their share of the rows, so the copy still spreads over several SMs.
 * Above, the CUB scan of the gather path, then a kernel over the rows.
 *
 * In graph mode the thread that writes the count also picks the row bucket of the SWITCH
 * nodes that read it (graph.cu), so routing costs no extra launch.
 *
 * Activations are copied as opaque bytes, in the widest of 16/8/4/2/1-byte words that
 * divides the row size and both base addresses.
 */
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_scan.cuh>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include "cuda_common.cuh"

static const int kGatherThreads = 256;
static const int kFusedThreads = 256;
static const int kFusedRows = 64; /* rows per block of the fused kernel */

/* keep[r] as 0/1 int, 0 past the device count: what the scan sums. */
struct keep_flag {
    const uint8_t *keep;
    const int32_t *dev_count;
    int n;
    __host__ __device__ int operator()(int r) const {
        const int lim = dev_count && *dev_count < n ? *dev_count : n;
        return r < lim && keep[r] ? 1 : 0;
    }
};

typedef thrust::transform_iterator<keep_flag, thrust::counting_iterator<int> > flag_iter;

struct compact_kernel_args {
    ert_compact_args c;
    const int32_t *offsets;      /* CUB path: exclusive prefix sums of the flags */
    int vecs;                    /* words of type V per row */
    const ert_cuda_route *route; /* graph mode: the SWITCH nodes the count feeds (graph.cu) */
};

/* ---------------------------------------------------------------- CUB path: gather */

template <typename V>
static __global__ void gather_kernel(const __grid_constant__ compact_kernel_args k) {
    const ert_compact_args &a = k.c;
    const int n = ert_cuda_rows(a.rows.n, a.rows.dev_count);
    const long long total = (long long)n * k.vecs;
    const long long stride = (long long)gridDim.x * blockDim.x;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (tid == 0) {
        const int count = n > 0 ? k.offsets[n - 1] + (a.keep[n - 1] ? 1 : 0) : 0;
        *a.count = count;
        ert_cuda_route_set(k.route, count);
    }
    for (long long i = tid; i < total; i += stride) {
        const int r = (int)(i / k.vecs), v = (int)(i % k.vecs);
        if (!a.keep[r]) continue;
        const int d = k.offsets[r];
        ((V *)a.y)[(size_t)d * k.vecs + v] = ((const V *)a.x)[(size_t)r * k.vecs + v];
        if (v == 0) {
            a.idx_out[d] = a.idx_in[r];
            a.state_out[d] = a.state_in[r];
        }
    }
}

template <typename V>
static ert_status launch_gather(cudaStream_t stream, const compact_kernel_args &k) {
    long long blocks = ert_ceil_div_ll((long long)k.c.rows.n * k.vecs, kGatherThreads);
    blocks = blocks < 1 ? 1 : (blocks > 65535 ? 65535 : blocks); /* >= 1: thread 0 writes the count */
    gather_kernel<V><<<(unsigned)blocks, kGatherThreads, 0, stream>>>(k);
    return ERT_CUDA_CHECK(cudaGetLastError());
}

/* One warp copies one row of `vecs` words. Four loads are issued before their stores:
 * with one pointer that might alias, the compiler alternated load and store, one 512-byte
 * load in flight per warp (a review of the PTX, bench/NOTES.md "Fill compaction").
 * Callers guarantee the rows do not overlap (fused: two buffers; fill: a source at or
 * past the new count, a destination below it), hence __restrict__. */
template <typename V>
static __device__ __forceinline__ void copy_row(const V *__restrict__ src, V *__restrict__ dst, int vecs, int lane) {
    int v = lane;
    for (; v + 96 < vecs; v += 128) {
        const V a0 = src[v], a1 = src[v + 32], a2 = src[v + 64], a3 = src[v + 96];
        dst[v] = a0;
        dst[v + 32] = a1;
        dst[v + 64] = a2;
        dst[v + 96] = a3;
    }
    for (; v < vecs; v += 32) dst[v] = src[v];
}

/* ---------------------------------------------------------------- fused path */

template <typename V>
static __global__ void compact_fused_kernel(const __grid_constant__ compact_kernel_args k) {
    typedef cub::BlockReduce<int, kFusedThreads> reduce_t;
    typedef cub::BlockScan<int, kFusedThreads> scan_t;
    __shared__ union {
        typename reduce_t::TempStorage reduce;
        typename scan_t::TempStorage scan;
    } tmp;
    __shared__ int s_dst[kFusedRows]; /* output row of each of the block's rows, or -1 */
    __shared__ int s_base;

    const ert_compact_args &a = k.c;
    const int n = ert_cuda_rows(a.rows.n, a.rows.dev_count);
    const int start = blockIdx.x * kFusedRows;
    const int last_block = n > 0 ? (n - 1) / kFusedRows : 0; /* writes the count */
    if ((int)blockIdx.x > last_block) return;                /* uniform over the block */

    int before = 0;
    for (int r = threadIdx.x; r < start; r += kFusedThreads) before += a.keep[r] ? 1 : 0;
    before = reduce_t(tmp.reduce).Sum(before); /* valid in thread 0 */
    if (threadIdx.x == 0) s_base = before;
    __syncthreads(); /* s_base visible; tmp free for the scan */
    const int base = s_base;

    const int r = start + (int)threadIdx.x;
    const int flag = (int)threadIdx.x < kFusedRows && r < n && a.keep[r] ? 1 : 0;
    int off = 0, kept = 0;
    scan_t(tmp.scan).ExclusiveSum(flag, off, kept);
    if ((int)threadIdx.x < kFusedRows) s_dst[threadIdx.x] = flag ? base + off : -1;
    if (flag) {
        a.idx_out[base + off] = a.idx_in[r];
        a.state_out[base + off] = a.state_in[r];
    }
    if ((int)blockIdx.x == last_block && threadIdx.x == 0) {
        *a.count = base + kept;
        ert_cuda_route_set(k.route, base + kept);
    }
    __syncthreads();

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int lr = warp; lr < kFusedRows; lr += kFusedThreads / 32) {
        const int d = s_dst[lr];
        if (d < 0) continue;
        copy_row((const V *)a.x + (size_t)(start + lr) * k.vecs, (V *)a.y + (size_t)d * k.vecs, k.vecs, lane);
    }
}

template <typename V>
static ert_status launch_fused(cudaStream_t stream, const compact_kernel_args &k) {
    const int blocks = k.c.rows.n > 0 ? ert_ceil_div(k.c.rows.n, kFusedRows) : 1;
    compact_fused_kernel<V><<<(unsigned)blocks, kFusedThreads, 0, stream>>>(k);
    return ERT_CUDA_CHECK(cudaGetLastError());
}

/* ---------------------------------------------------------------- fill path (in place) */

static const int kFillThreads = 256;                          /* 8 warps: one row each at a time */
static const int kFillBlockRows = 1024;                       /* the one-launch path's limit */
static const int kFillItems = kFillBlockRows / kFillThreads; /* flags per thread there */
static const int kFillRowsPerBlock = 64;                      /* its blocks: one per 64 rows */
static_assert(kFillBlockRows % kFillThreads == 0, "each thread of the one-launch path scans whole flags");

/* Writes the count (and the route), then moves the kept rows at or past it: the warps of
 * the grid stride over those rows. `offsets` are the exclusive sums of the flags. */
template <typename V>
static __device__ void fill_rows(const compact_kernel_args &k, const int32_t *offsets, int n) {
    const ert_compact_args &a = k.c;
    const int kept = n > 0 ? offsets[n - 1] + (a.keep[n - 1] ? 1 : 0) : 0;
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        *a.count = kept;
        ert_cuda_route_set(k.route, kept);
    }
    if (kept == n) return; /* nothing left below n': no holes */
    const int below = offsets[kept]; /* kept rows below n' */
    const int warps = (int)(gridDim.x * (blockDim.x / 32));
    const int lane = threadIdx.x % 32;
    for (int r = kept + (int)(blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32); r < n; r += warps) {
        if (!a.keep[r]) continue;
        /* The warp searches in step, so its loads are broadcasts. */
        const int d = ert_fill_destination(offsets, kept, offsets[r] - below);
        copy_row((const V *)a.x + (size_t)r * k.vecs, (V *)a.y + (size_t)d * k.vecs, k.vecs, lane);
        if (lane == 0) {
            a.idx_out[d] = a.idx_in[r];
            a.state_out[d] = a.state_in[r];
        }
    }
}

/* After the CUB scan into k.offsets. */
template <typename V>
static __global__ void fill_kernel(const __grid_constant__ compact_kernel_args k) {
    fill_rows<V>(k, k.offsets, ert_cuda_rows(k.c.rows.n, k.c.rows.dev_count));
}

/* At most kFillBlockRows rows: each block scans every flag into shared memory (no CUB
 * launch), then the grid's warps share the rows. */
template <typename V>
static __global__ void fill_block_kernel(const __grid_constant__ compact_kernel_args k) {
    typedef cub::BlockScan<int, kFillThreads> scan_t;
    __shared__ typename scan_t::TempStorage tmp;
    __shared__ int32_t s_offsets[kFillBlockRows];
    const ert_compact_args &a = k.c;
    const int n = ert_cuda_rows(a.rows.n, a.rows.dev_count);
    int flags[kFillItems]; /* blocked: thread t holds rows t * kFillItems + i */
    for (int i = 0; i < kFillItems; ++i) {
        const int r = (int)threadIdx.x * kFillItems + i;
        flags[i] = r < n && a.keep[r] ? 1 : 0;
    }
    scan_t(tmp).ExclusiveSum(flags, flags);
    for (int i = 0; i < kFillItems; ++i) s_offsets[threadIdx.x * kFillItems + i] = flags[i];
    __syncthreads();
    fill_rows<V>(k, s_offsets, n);
}

template <typename V>
static ert_status launch_fill(cudaStream_t stream, const compact_kernel_args &k) {
    if (k.c.rows.n <= kFillBlockRows) {
        const int blocks = k.c.rows.n > 0 ? ert_ceil_div(k.c.rows.n, kFillRowsPerBlock) : 1; /* >= 1: the count */
        fill_block_kernel<V><<<(unsigned)blocks, kFillThreads, 0, stream>>>(k);
        return ERT_CUDA_CHECK(cudaGetLastError());
    }
    const int warps_per_block = kFillThreads / 32;
    int blocks = ert_ceil_div(k.c.rows.n, warps_per_block);
    blocks = blocks > 4096 ? 4096 : blocks; /* the loop strides */
    fill_kernel<V><<<(unsigned)blocks, kFillThreads, 0, stream>>>(k);
    return ERT_CUDA_CHECK(cudaGetLastError());
}

/* ---------------------------------------------------------------- entry points */

ert_status ert_cuda_compact_temp_bytes(ert_backend *be, int max_rows, size_t *bytes) {
    keep_flag f = {NULL, NULL, max_rows};
    const flag_iter it(thrust::counting_iterator<int>(0), f);
    *bytes = 0;
    return ERT_CUDA_CHECK(
        cub::DeviceScan::ExclusiveSum(NULL, *bytes, it, (int32_t *)NULL, max_rows, be->stream));
}

enum compact_path { PATH_GATHER, PATH_FUSED, PATH_FILL };

template <typename V>
static ert_status launch_compact(cudaStream_t stream, compact_path path, const compact_kernel_args &k) {
    return path == PATH_FILL ? launch_fill<V>(stream, k) : path == PATH_FUSED ? launch_fused<V>(stream, k)
                                                                              : launch_gather<V>(stream, k);
}

ert_status ert_cuda_compact(ert_backend *be, const ert_compact_args *args) {
    const char *why = ert_compact_refusal(args);
    if (why) return ert_error(ERT_ERR_INVALID_ARGUMENT, "cuda backend: %s", why);
    const int kind = ert_compact_kind(args);
    const size_t row_bytes = (size_t)args->width * ert_cuda_elem_size(be->dtype);
    const int fused = kind == ERT_COMPACT_GATHER &&
                      (be->compact_path == ERT_CUDA_COMPACT_FUSED ||
                       (be->compact_path == ERT_CUDA_COMPACT_AUTO && args->rows.n <= ERT_CUDA_COMPACT_FUSED_MAX_ROWS &&
                        row_bytes <= ERT_CUDA_COMPACT_FUSED_MAX_ROW_BYTES));
    const compact_path path = kind == ERT_COMPACT_FILL ? PATH_FILL : fused ? PATH_FUSED : PATH_GATHER;
    const uintptr_t align = (uintptr_t)args->x | (uintptr_t)args->y | (uintptr_t)row_bytes;
    const size_t word = (align & 15u) == 0 ? 16 : (align & 7u) == 0 ? 8 : (align & 3u) == 0 ? 4 : (align & 1u) == 0 ? 2 : 1;
    compact_kernel_args k;
    k.c = *args;
    k.offsets = be->scan_offsets;
    k.vecs = (int)(row_bytes / word);
    ert_status rst = ert_cuda_route_of(be, args->count, &k.route);
    if (rst != ERT_OK) return rst;

    /* the CUB scan: gather's CUB path, and fill above kFillBlockRows rows */
    const int scan = path == PATH_GATHER || (path == PATH_FILL && args->rows.n > kFillBlockRows);
    if (scan && args->rows.n > 0) {
        const keep_flag f = {args->keep, args->rows.dev_count, args->rows.n};
        const flag_iter it(thrust::counting_iterator<int>(0), f);
        size_t bytes = be->scan_temp_bytes;
        const ert_status st = ERT_CUDA_CHECK(
            cub::DeviceScan::ExclusiveSum(be->scan_temp, bytes, it, be->scan_offsets, args->rows.n, be->stream));
        if (st != ERT_OK) return st;
    }
    switch (word) {
    case 16: return launch_compact<uint4>(be->stream, path, k);
    case 8: return launch_compact<uint2>(be->stream, path, k);
    case 4: return launch_compact<uint32_t>(be->stream, path, k);
    case 2: return launch_compact<uint16_t>(be->stream, path, k);
    default: return launch_compact<uint8_t>(be->stream, path, k);
    }
}
