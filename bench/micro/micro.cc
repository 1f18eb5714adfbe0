// ert_micro: Google Benchmark micro-benchmarks of the routing kernels, `decide` and
// `compact`, called through the backend table (kernels/backend.h) on every backend of the
// build: cpu always, cuda when ert_backend_cuda() is non-NULL and a device starts (both
// compaction paths, forced with ERT_COMPACT_PATH=cub|fused at backend creation).
//
//   decide:  logits (B, C=10) f32, orig_index (B), state (B) -> keep (B), results at the
//            leaving rows' indices. Bytes it must move: logits, indices and keep flags
//            once, the state read and written, 12 bytes per leaving row.
//   compact: x (B, D) activations, keep (B), idx_in (B), state_in (B) -> y (kept, D),
//            idx_out, state_out, count. Bytes it must move: the flags, and per kept row its
//            activations, index and state read and written, plus the count.
//   compact-fill: the same in place (y = x): only the kept rows at or past the new count
//            move, into the rows of leaving samples below it; bytes as above for those
//            rows only. Each call makes the same moves (they depend on the flags alone).
//
//   linear:  y = relu(x W^T + b), x (M, D) -> y (M, D), W (D, D): the GEMM every stage runs,
//            at the row counts a batch leaves after its exits. FLOP/s counts 2 M D D. On the
//            cpu twice: its linear ops on oneDNN and on OpenBLAS (ERT_CPU_GEMM at the op's
//            creation; OpenBLAS computes 64-row blocks, so M < 64 costs 64 rows there).
//   conv:    a 3x3 convolution (padding 1, bias, relu) of N samples, fmnist-cnn's heaviest
//            shapes; FLOP/s counts 2 N K C 9 H W. On the cpu on oneDNN (a primitive per
//            sample) and on OpenBLAS (im2col, blocks of 512 / (H W) samples); on CUDA cuDNN.
//   pool:    fmnist-cnn's pools over N samples of C x H x H (cpu only): 2x2 stride 2 max
//            (kind 0), the same with padding 1 (kind 1), 2x2 stride 2 average (kind 2) and
//            a global average (kind 3); FLOP/s counts one operation per input value.
//   conv-pool: fmnist-cnn's three conv2d -> max pool pairs (cpu only; the convolution on
//            oneDNN) over N samples, apart (fused:0: the convolution's whole output, then
//            the pool) and fused (fused:1: backend op_fuse, the pool on each sample's
//            output while it is in cache); FLOP/s counts the convolution's.
//
// Keep flags follow the headline benchmark (hazard 0.15: 85% of the rows stay).
// Timing is manual, between two backend events around the one call (CUDA events on the
// GPU timeline, the wall clock on the CPU), so per-iteration set-up (resetting the state
// that decide updates) stays out of it. Every benchmark makes one untimed call first.
//
//   ert_micro --benchmark_repetitions=10 --benchmark_report_aggregates_only=true
// gives medians; --benchmark_filter=compact/cuda selects.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend.h"  // C declarations inside extern "C"
#include "dtype.h"

namespace {

const int kBatches[] = {64, 1024, 8192};
const int kWidths[] = {1024, 4096};
const int kMaxRows = 8192;
const int kClasses = 10;
const int kNumExits = 12;
const float kHazard = 0.15f;

// One backend instance, made once per process: creating a CUDA backend (stream,
// cuBLASLt handle, 32 MiB workspace, scan storage) costs far more than any kernel here.
struct Backend {
    const ert_backend_ops *ops;
    ert_backend *be;
    std::string label;  // "cpu", "cuda:0 (NVIDIA H200) cub"
};

// Backend memory (and its host staging copy) released on scope exit.
struct Buffer {
    const Backend *b = nullptr;
    void *dev = nullptr, *host = nullptr;
    size_t bytes = 0;
    Buffer() = default;
    Buffer(const Buffer &) = delete;
    Buffer &operator=(const Buffer &) = delete;
    ~Buffer() {
        if (dev) b->ops->release(b->be, dev);
        if (host) b->ops->host_release(b->be, host);
    }
    bool make(const Backend *backend, size_t n) {
        b = backend;
        bytes = n;
        return b->ops->alloc(b->be, n, &dev) == ERT_OK && b->ops->host_alloc(b->be, n, &host) == ERT_OK;
    }
    bool upload() { return b->ops->upload(b->be, dev, host, bytes) == ERT_OK; }
};

// Uniform in [0, 1), counter-based: the same data on every backend.
float uniform(uint64_t stream, uint64_t i) {
    return (float)(ert_mix64(ert_mix64(stream) + (i + 1) * 0x9E3779B97F4A7C15ull) >> 40) * (1.0f / 16777216.0f);
}

// The exit a sample leaves at under a per-exit hazard (first exit whose draw fires).
int target_exit(uint64_t i) {
    for (int e = 0; e < kNumExits - 1; ++e)
        if (uniform(7, i * kNumExits + (uint64_t)e) < kHazard) return e;
    return kNumExits - 1;
}

bool fail(benchmark::State &state, const char *what) {
    std::string msg = std::string(what) + ": " + ert_last_error();
    state.SkipWithError(msg.c_str());
    return false;
}

// Times one call between two backend events; seconds.
template <typename Call>
bool timed(benchmark::State &state, const Backend &b, ert_event *e0, ert_event *e1, Call call, double *seconds) {
    double ms = 0.0;
    if (b.ops->event_record(b.be, e0) != ERT_OK || call() != ERT_OK || b.ops->event_record(b.be, e1) != ERT_OK ||
        b.ops->event_elapsed_ms(b.be, e0, e1, &ms) != ERT_OK)
        return fail(state, "run");
    *seconds = ms * 1e-3;
    return true;
}

// The timing loop of an op benchmark: one untimed call, then one timed call per iteration.
template <typename Call>
void timed_loop(benchmark::State &state, const Backend &b, ert_event *e0, ert_event *e1, Call call) {
    double s = 0.0;
    if (!timed(state, b, e0, e1, call, &s)) return;
    for (auto _ : state) {
        if (!timed(state, b, e0, e1, call, &s)) return;
        state.SetIterationTime(s);
    }
}

struct Events {
    const Backend &b;
    ert_event *e0 = nullptr, *e1 = nullptr;
    explicit Events(const Backend &backend) : b(backend) {}
    ~Events() {
        if (e0) b.ops->event_free(b.be, e0);
        if (e1) b.ops->event_free(b.be, e1);
    }
    bool make() { return b.ops->event_new(b.be, &e0) == ERT_OK && b.ops->event_new(b.be, &e1) == ERT_OK; }
};

// ---------------------------------------------------------------- decide

void bench_decide(benchmark::State &state, const Backend *b) {
    const int B = (int)state.range(0);
    Buffer logits, index, st, keep, pred, exit_at, conf;
    Events ev(*b);
    if (!logits.make(b, sizeof(float) * B * kClasses) || !index.make(b, sizeof(int32_t) * B) ||
        !st.make(b, sizeof(ert_sample_state) * B) || !keep.make(b, (size_t)B) || !pred.make(b, sizeof(int32_t) * B) ||
        !exit_at.make(b, sizeof(int32_t) * B) || !conf.make(b, sizeof(float) * B) || !ev.make()) {
        fail(state, "setup");
        return;
    }
    int leaving = 0;
    for (int i = 0; i < B * kClasses; ++i) ((float *)logits.host)[i] = 4.0f * uniform(1, (uint64_t)i) - 2.0f;
    for (int i = 0; i < B; ++i) {
        ((int32_t *)index.host)[i] = i;
        const int t = target_exit((uint64_t)i);
        leaving += t == 0;
        ((ert_sample_state *)st.host)[i] = ert_sample_state{-1, t, -1, 0, 0};
    }
    if (!logits.upload() || !index.upload()) {
        fail(state, "upload");
        return;
    }
    ert_decide_args a;
    memset(&a, 0, sizeof a);
    a.params.kind = ERT_POLICY_SCHEDULED;
    a.params.num_exits = kNumExits;
    for (int e = 0; e < ERT_MAX_EXITS; ++e) a.params.inv_temp[e] = 1.0f;
    a.exit_index = 0;
    a.is_last = 0;
    a.classes = kClasses;
    a.rows = ert_rows{B, nullptr};
    a.logits = (const float *)logits.dev;
    a.orig_index = (const int32_t *)index.dev;
    a.state = (ert_sample_state *)st.dev;
    a.keep = (uint8_t *)keep.dev;
    a.pred = (int32_t *)pred.dev;
    a.exit_at = (int32_t *)exit_at.dev;
    a.conf = (float *)conf.dev;
    auto call = [&] { return b->ops->decide(b->be, &a); };
    double s = 0.0;
    // decide marks leaving rows done in their state: every timed call starts from the
    // original state (the upload is stream-ordered before the first event).
    if (!st.upload() || !timed(state, *b, ev.e0, ev.e1, call, &s)) return;
    for (auto _ : state) {
        if (!st.upload() || !timed(state, *b, ev.e0, ev.e1, call, &s)) return;
        state.SetIterationTime(s);
    }
    const double bytes = (double)B * (kClasses * 4.0 + 4.0 + 2.0 * sizeof(ert_sample_state) + 1.0) + leaving * 12.0;
    state.SetBytesProcessed((int64_t)(bytes * (double)state.iterations()));
    state.counters["leaving"] = leaving;
    state.SetLabel(b->label);
}

// ---------------------------------------------------------------- compact

void bench_compact(benchmark::State &state, const Backend *b, bool fill) {
    const int B = (int)state.range(0), D = (int)state.range(1);
    const size_t elem = b->ops->act_elem_size(b->be);
    Buffer x, y, keep, idx_in, idx_out, st_in, st_out, count;
    Events ev(*b);
    const size_t act = (size_t)B * (size_t)D * elem;
    if (!x.make(b, act) || !y.make(b, act) || !keep.make(b, (size_t)B) || !idx_in.make(b, sizeof(int32_t) * B) ||
        !idx_out.make(b, sizeof(int32_t) * B) || !st_in.make(b, sizeof(ert_sample_state) * B) ||
        !st_out.make(b, sizeof(ert_sample_state) * B) || !count.make(b, sizeof(int32_t)) || !ev.make()) {
        fail(state, "setup");
        return;
    }
    // Activations: real values in the backend's element type (never zeros).
    for (size_t i = 0; i < (size_t)B * (size_t)D; ++i) {
        const float v = 2.0f * uniform(2, i) - 1.0f;
        if (elem == 2) ((uint16_t *)x.host)[i] = ert_f32_to_bf16(v);
        else ((float *)x.host)[i] = v;
    }
    int kept = 0;
    for (int i = 0; i < B; ++i) {
        const uint8_t k = uniform(3, (uint64_t)i) >= kHazard;
        ((uint8_t *)keep.host)[i] = k;
        kept += k;
        ((int32_t *)idx_in.host)[i] = i;
        ((ert_sample_state *)st_in.host)[i] = ert_sample_state{-1, target_exit((uint64_t)i), i % kClasses, 1, 0};
    }
    const uint8_t *kh = (const uint8_t *)keep.host;
    // The row checked after one call, and the index it must then hold: gather, the first
    // kept row at row 0; fill, the first kept row at or past `kept` in the first hole.
    int check_row = 0, want_first = 0, moved = kept;
    while (want_first < B && !kh[want_first]) ++want_first;
    if (fill) {
        moved = 0;
        for (int i = kept; i < B; ++i) moved += kh[i];
        while (check_row < kept && kh[check_row]) ++check_row;
        want_first = kept;
        while (want_first < B && !kh[want_first]) ++want_first;
    }
    if (!x.upload() || !keep.upload() || !idx_in.upload() || !st_in.upload() || b->ops->sync(b->be) != ERT_OK) {
        fail(state, "upload");
        return;
    }
    ert_compact_args a;
    memset(&a, 0, sizeof a);
    a.rows = ert_rows{B, nullptr};
    a.width = D;
    a.x = x.dev;
    a.y = fill ? x.dev : y.dev;
    a.idx_in = (const int32_t *)idx_in.dev;
    a.idx_out = (int32_t *)(fill ? idx_in.dev : idx_out.dev);
    a.state_in = (const ert_sample_state *)st_in.dev;
    a.state_out = (ert_sample_state *)(fill ? st_in.dev : st_out.dev);
    a.keep = (const uint8_t *)keep.dev;
    a.count = (int32_t *)count.dev;
    auto call = [&] { return b->ops->compact(b->be, &a); };
    double s = 0.0;
    if (!timed(state, *b, ev.e0, ev.e1, call, &s)) return;
    // The count and a moved row must be right, or the figure means nothing.
    int32_t n = -1;
    int32_t first = -1;
    if (b->ops->download(b->be, &n, count.dev, sizeof n) != ERT_OK ||
        b->ops->download(b->be, &first, (const int32_t *)a.idx_out + check_row, sizeof first) != ERT_OK) {
        fail(state, "download");
        return;
    }
    if (n != kept || (moved > 0 && first != want_first)) {
        char msg[128];
        snprintf(msg, sizeof msg, "wrong result: count %d (want %d), index %d at row %d (want %d)", n, kept, first,
                 check_row, want_first);
        state.SkipWithError(msg);
        return;
    }
    for (auto _ : state) {
        if (!timed(state, *b, ev.e0, ev.e1, call, &s)) return;
        state.SetIterationTime(s);
    }
    const double bytes =
        (double)B + (double)moved * (2.0 * D * (double)elem + 2.0 * 4.0 + 2.0 * sizeof(ert_sample_state)) + 4.0;
    state.SetBytesProcessed((int64_t)(bytes * (double)state.iterations()));
    state.counters["kept"] = kept;
    state.counters["moved"] = moved;
    state.SetLabel(b->label);
}

// ---------------------------------------------------------------- linear, conv

// Times one op, made from `d` (ERT_CPU_GEMM set to `gemm` while it is made; nullptr: the
// backend's own), on `rows` rows of d.in values; `flops` per call.
void bench_op(benchmark::State &state, const Backend *b, const char *gemm, const ert_op_desc &d, int rows,
              double flops) {
    const size_t elem = b->ops->act_elem_size(b->be);
    if (gemm) setenv("ERT_CPU_GEMM", gemm, 1);
    ert_op *op = nullptr;
    const ert_status st = b->ops->op_new(b->be, &d, &op);
    if (gemm) unsetenv("ERT_CPU_GEMM");
    if (st != ERT_OK) {
        fail(state, "op_new");
        return;
    }
    Buffer x, y;
    Events ev(*b);
    if (!x.make(b, elem * (size_t)rows * d.in) || !y.make(b, elem * (size_t)rows * d.out) || !ev.make()) {
        b->ops->op_free(b->be, op);
        fail(state, "alloc");
        return;
    }
    for (size_t i = 0; i < (size_t)rows * d.in; ++i) {
        const float v = 2.0f * uniform(6, i) - 1.0f;
        if (elem == 2) ((uint16_t *)x.host)[i] = ert_f32_to_bf16(v);
        else ((float *)x.host)[i] = v;
    }
    auto call = [&] { return b->ops->op_run(b->be, op, ert_rows{rows, nullptr}, x.dev, y.dev); };
    if (x.upload()) timed_loop(state, *b, ev.e0, ev.e1, call);
    else fail(state, "upload");
    b->ops->op_free(b->be, op);
    state.counters["FLOP/s"] = benchmark::Counter(flops * (double)state.iterations(), benchmark::Counter::kIsRate);
    state.SetLabel(b->label + (gemm ? std::string(" ") + gemm : std::string()));
}

// y = relu(x W^T + b), x (M, D), W (D, D).
void bench_linear(benchmark::State &state, const Backend *b, const char *gemm) {
    const int M = (int)state.range(0), D = (int)state.range(1);
    std::vector<float> w((size_t)D * D), bias((size_t)D);
    for (size_t i = 0; i < w.size(); ++i) w[i] = (uniform(4, i) - 0.5f) / 16.0f;
    for (int i = 0; i < D; ++i) bias[(size_t)i] = uniform(5, (uint64_t)i) - 0.5f;
    ert_op_desc d;
    memset(&d, 0, sizeof d);
    d.type = ERT_OP_LINEAR;
    d.name = "linear";
    d.in = d.out = D;
    d.act = ERT_ACT_RELU;
    d.weight = w.data();
    d.bias = bias.data();
    d.max_rows = M;
    bench_op(state, b, gemm, d, M, 2.0 * M * (double)D * D);
}

// A 3x3 convolution, padding 1, with bias and relu, for N samples of C x H x H -> K x H x H,
// with seeded weights (held here; d points at them) and its FLOPs.
struct Conv3x3 {
    std::vector<float> w, bias;
    ert_op_desc d;
    double flops;
    Conv3x3(int N, int C, int H, int K) : w((size_t)K * C * 9), bias((size_t)K) {
        for (size_t i = 0; i < w.size(); ++i) w[i] = (uniform(7, i) - 0.5f) / 8.0f;
        for (int i = 0; i < K; ++i) bias[(size_t)i] = uniform(8, (uint64_t)i) - 0.5f;
        memset(&d, 0, sizeof d);
        d.type = ERT_OP_CONV2D;
        d.name = "conv";
        d.conv = ert_conv_geom{C, H, H, K, H, H, 3, 3, 1, 1, 1, 1, 1, 1, 1};
        d.in = C * H * H;
        d.out = K * H * H;
        d.act = ERT_ACT_RELU;
        d.weight = w.data();
        d.bias = bias.data();
        d.max_rows = N;
        flops = 2.0 * N * (double)K * C * 9 * H * H;
    }
    Conv3x3(const Conv3x3 &) = delete;
    Conv3x3 &operator=(const Conv3x3 &) = delete;
};

void bench_conv(benchmark::State &state, const Backend *b, const char *gemm) {
    const int N = (int)state.range(0);
    const Conv3x3 c(N, (int)state.range(1), (int)state.range(2), (int)state.range(3));
    bench_op(state, b, gemm, c.d, N, c.flops);
}

// One of fmnist-cnn's pools (kind: see the top of this file) over N samples of C x H x H.
void bench_pool(benchmark::State &state, const Backend *b) {
    const int N = (int)state.range(0), C = (int)state.range(1), H = (int)state.range(2), kind = (int)state.range(3);
    const int k = kind == 3 ? H : 2, s = kind == 3 ? 1 : 2, p = kind == 1 ? 1 : 0, O = (H + 2 * p - k) / s + 1;
    ert_op_desc d;
    memset(&d, 0, sizeof d);
    d.type = kind == 2 || kind == 3 ? ERT_OP_AVGPOOL : ERT_OP_MAXPOOL;
    d.name = "pool";
    d.conv = ert_conv_geom{C, H, H, C, O, O, k, k, s, s, p, p, 1, 1, 1};
    d.in = C * H * H;
    d.out = C * O * O;
    d.max_rows = N;
    bench_op(state, b, nullptr, d, N, (double)N * d.in);
}

// A conv2d (3x3, padding 1, bias, relu; C x H x H -> K x H x H) on oneDNN, then a 2x2
// stride-2 max pool (padding 1 where H is odd, as fmnist-cnn's last), apart or fused.
void bench_conv_pool(benchmark::State &state, const Backend *b) {
    const int N = (int)state.range(0), C = (int)state.range(1), H = (int)state.range(2), K = (int)state.range(3);
    const bool fuse = state.range(4) != 0;
    const int p = H % 2, O = (H + 2 * p - 2) / 2 + 1;
    const Conv3x3 c(N, C, H, K);
    const ert_op_desc &cd = c.d;
    ert_op_desc pd;
    memset(&pd, 0, sizeof pd);
    pd.type = ERT_OP_MAXPOOL;
    pd.name = "pool";
    pd.conv = ert_conv_geom{K, H, H, K, O, O, 2, 2, 2, 2, p, p, 1, 1, 1};
    pd.in = K * H * H;
    pd.out = K * O * O;
    pd.max_rows = N;
    setenv("ERT_CPU_GEMM", "onednn", 1);
    ert_op *conv = nullptr, *pool = nullptr;
    const bool made = b->ops->op_new(b->be, &cd, &conv) == ERT_OK && b->ops->op_new(b->be, &pd, &pool) == ERT_OK;
    unsetenv("ERT_CPU_GEMM");
    Buffer x, mid, y;
    Events ev(*b);
    if (!made || (fuse && b->ops->op_fuse(b->be, conv, pool) != ERT_OK) || !x.make(b, sizeof(float) * (size_t)N * cd.in) ||
        !mid.make(b, sizeof(float) * (size_t)N * cd.out) || !y.make(b, sizeof(float) * (size_t)N * pd.out) || !ev.make()) {
        if (conv) b->ops->op_free(b->be, conv);
        if (pool) b->ops->op_free(b->be, pool);
        fail(state, made ? "fuse or alloc" : "op_new (oneDNN)");
        return;
    }
    for (size_t i = 0; i < (size_t)N * cd.in; ++i) ((float *)x.host)[i] = 2.0f * uniform(6, i) - 1.0f;
    const ert_rows rows{N, nullptr};
    auto call = [&] {
        if (fuse) return b->ops->op_run(b->be, conv, rows, x.dev, y.dev);
        const ert_status st = b->ops->op_run(b->be, conv, rows, x.dev, mid.dev);
        return st != ERT_OK ? st : b->ops->op_run(b->be, pool, rows, mid.dev, y.dev);
    };
    if (x.upload()) timed_loop(state, *b, ev.e0, ev.e1, call);
    else fail(state, "upload");
    b->ops->op_free(b->be, conv);
    b->ops->op_free(b->be, pool);
    state.counters["FLOP/s"] = benchmark::Counter(c.flops * (double)state.iterations(), benchmark::Counter::kIsRate);
    state.SetLabel(b->label);
}

// ---------------------------------------------------------------- registration

// Makes a backend; a CUDA one with ERT_COMPACT_PATH set to `path` while it is created.
bool make_backend(const ert_backend_ops *ops, const char *path, ert_dtype dtype, Backend *out) {
    std::string saved;
    const char *old = getenv("ERT_COMPACT_PATH");
    if (old) saved = old;
    if (path) setenv("ERT_COMPACT_PATH", path, 1);
    const ert_backend_config cfg = {0, kMaxRows, dtype, NULL, 0, 0};
    ert_backend *be = nullptr;
    const ert_status st = ops->create(&cfg, &be);
    if (path) {
        if (old) setenv("ERT_COMPACT_PATH", saved.c_str(), 1);
        else unsetenv("ERT_COMPACT_PATH");
    }
    if (st != ERT_OK) {
        fprintf(stderr, "ert_micro: %s backend%s%s skipped: %s\n", ops->name, path ? " path " : "", path ? path : "",
                ert_last_error());
        return false;
    }
    out->ops = ops;
    out->be = be;
    out->label = std::string(ops->device_name(be)) + (path ? std::string(" ") + path : std::string());
    return true;
}

void register_linear(const std::string &name, const Backend *b, const char *gemm, std::vector<int> rows,
                     std::vector<int> widths) {
    auto *bm = benchmark::RegisterBenchmark(("linear/" + name).c_str(),
                                            [b, gemm](benchmark::State &st) { bench_linear(st, b, gemm); });
    for (int D : widths)
        for (int M : rows) bm->Args({M, D});
    bm->ArgNames({"M", "D"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}

// fmnist-cnn's three heaviest convolutions (32 -> 32 and 32 -> 64 at 14x14, 64 -> 128 at
// 7x7) at batches of 1, 16 and 256 samples.
void register_conv(const std::string &name, const Backend *b, const char *gemm) {
    auto *bm = benchmark::RegisterBenchmark(("conv/" + name).c_str(),
                                            [b, gemm](benchmark::State &st) { bench_conv(st, b, gemm); });
    const int shapes[][3] = {{32, 14, 32}, {32, 14, 64}, {64, 7, 128}};
    for (const auto &sh : shapes)
        for (int N : {1, 16, 256}) bm->Args({N, sh[0], sh[1], sh[2]});
    bm->ArgNames({"N", "C", "H", "K"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}

// fmnist-cnn's pools, in the model's order, at batches of 16 and 256 samples.
void register_pool(const std::string &name, const Backend *b) {
    auto *bm = benchmark::RegisterBenchmark(("pool/" + name).c_str(),
                                            [b](benchmark::State &st) { bench_pool(st, b); });
    const int pools[][3] = {{32, 28, 0}, {32, 14, 2}, {64, 14, 0}, {64, 7, 3}, {128, 7, 1}};
    for (const auto &pl : pools)
        for (int N : {16, 256}) bm->Args({N, pl[0], pl[1], pl[2]});
    bm->ArgNames({"N", "C", "H", "kind"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}

// fmnist-cnn's conv2d -> max pool pairs at batches of 16 and 256, apart then fused.
void register_conv_pool(const std::string &name, const Backend *b) {
    auto *bm = benchmark::RegisterBenchmark(("conv-pool/" + name).c_str(),
                                            [b](benchmark::State &st) { bench_conv_pool(st, b); });
    const int pairs[][3] = {{1, 28, 32}, {32, 14, 64}, {64, 7, 128}};
    for (const auto &pr : pairs)
        for (int N : {16, 256})
            for (int f : {0, 1}) bm->Args({N, pr[0], pr[1], pr[2], f});
    bm->ArgNames({"N", "C", "H", "K", "fused"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}

void register_decide(const std::string &name, const Backend *b) {
    auto *bm = benchmark::RegisterBenchmark(("decide/" + name).c_str(), bench_decide, b);
    for (int B : kBatches) bm->Arg(B);
    bm->ArgNames({"B"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}

void register_compact(const std::string &name, const Backend *b, bool fill) {
    auto *bm = benchmark::RegisterBenchmark((std::string(fill ? "compact-fill/" : "compact/") + name).c_str(),
                                            [b, fill](benchmark::State &st) { bench_compact(st, b, fill); });
    for (int B : kBatches)
        for (int D : kWidths) bm->Args({B, D});
    bm->ArgNames({"B", "D"})->UseManualTime()->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char **argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    std::vector<Backend *> backends;
    Backend *cpu = new Backend;
    if (make_backend(ert_backend_cpu(), nullptr, ERT_DTYPE_F32, cpu)) {
        backends.push_back(cpu);
        register_decide("cpu", cpu);
        register_compact("cpu", cpu, false);
        register_compact("cpu", cpu, true);
        register_pool("cpu", cpu);
        register_conv_pool("cpu", cpu);
        for (const char *gemm : {"onednn", "openblas"}) {
            register_linear(std::string("cpu-") + gemm, cpu, gemm, {1, 8, 64, 256, 1024}, {1024});
            register_conv(std::string("cpu-") + gemm, cpu, gemm);
        }
    } else {
        delete cpu;
    }
    if (const ert_backend_ops *cuda = ert_backend_cuda()) {
        // bf16 activations, as in the headline benchmark.
        const char *paths[] = {"cub", "fused"};
        for (const char *p : paths) {
            Backend *b = new Backend;
            if (!make_backend(cuda, p, ERT_DTYPE_BF16, b)) {
                delete b;
                continue;
            }
            backends.push_back(b);
            if (p == paths[0]) register_decide("cuda", b);
            register_compact(std::string("cuda-") + p, b, false);
            if (p == paths[0]) register_compact("cuda", b, true); // one fill path (after a CUB scan)
            if (p == paths[0]) register_linear("cuda", b, nullptr, {1, 64, 1024, 8192}, {1024, 4096});
            if (p == paths[0]) register_conv("cuda", b, nullptr);
        }
    } else {
        fprintf(stderr, "ert_micro: this build has no CUDA backend; cpu only\n");
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    for (Backend *b : backends) {
        b->ops->destroy(b->be);
        delete b;
    }
    return 0;
}
