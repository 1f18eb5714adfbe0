/* The CPU backend: host memory, OpenBLAS GEMM, plain loops. Every op is synchronous,
 * so events are wall-clock timestamps.
 *
 * Graph mode here is a recording: between graph_begin and graph_end the calls are kept,
 * not run, and graph_launch replays them with the CUDA graph's semantics: ops read row
 * counts from memory when they run, and a GEMM or convolution whose count is in memory
 * computes the smallest bucket holding it (nothing for 0, at most the op's rows), padding
 * rows included, as the SWITCH nodes of kernels/cuda/graph.cu do. It saves no time on a
 * CPU; it lets the runtime's graph path be tested against eager runs on every machine.
 *
 * Fault injection, for tests of the capture error path (a CUDA capture can fail; this
 * recording never does on its own): ERT_CPU_GRAPH_FAIL_AT=N makes the Nth recorded call
 * of every recording fail, read once at create.
 *
 * Memory: every block alloc hands out carries a 64-byte header (its size, how it was made).
 * Blocks of 1 MiB or more are mmap'ed: the kernel supplies zero pages when they are first
 * touched, so a session's batch-sized buffers take memory as rows use them, not at
 * creation. All CPU backends of the process together refuse to hold more of these blocks
 * than the memory the process may use: the machine's physical memory or the tightest
 * limit of its cgroups (cgroup.c), whichever is lower, or ERT_CPU_MEMORY_LIMIT bytes (read at create; for tests).
 * Past it Linux would overcommit and its OOM killer would end the process later, where
 * an error at session creation says what to change. An op's weights and its scratch
 * (which grows with the thread count) are such blocks too. (A session with the default
 * thread count that does not fit is made again on fewer threads: session.c.) */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "cpu.h"
#include "sanitizer.h"

struct ert_backend {
    int max_rows;
    int threads;    /* the ops' (parallel.c) */
    char name[48];  /* "cpu (N threads)", then the library of its linear and conv ops: ", oneDNN" */
    int libs[2];    /* linear and conv ops made on oneDNN, on OpenBLAS */
    ert_graph *rec; /* the graph being recorded, or NULL */
    long fail_at;   /* ERT_CPU_GRAPH_FAIL_AT, 0 = never */
    size_t limit;   /* most bytes all CPU backends may hold in blocks at once */
    int limit_set;  /* 1: from ERT_CPU_MEMORY_LIMIT */
    int fuse;       /* 0: ERT_CPU_FUSE=0, every op runs apart (op_fuse refuses) */
};

/* Bytes of the blocks every CPU backend of the process has handed out and not released. */
static _Atomic size_t held_all;

typedef enum { CMD_OP, CMD_ADD, CMD_DECIDE, CMD_COMPACT, CMD_EVENT } cmd_kind;

typedef struct cmd {
    cmd_kind kind;
    const ert_op *op;
    ert_rows rows;
    int width;
    const void *x;
    void *y;
    ert_decide_args decide;
    ert_compact_args compact;
    ert_event *ev;
} cmd;

struct ert_graph {
    cmd *cmds;
    int count, cap;
    int buckets[ERT_MAX_BUCKETS], num_buckets;
};

/* Keeps one call of the recording. */
static ert_status rec_add(ert_backend *be, cmd c) {
    ert_graph *g = be->rec;
    if (be->fail_at && g->count + 1 == be->fail_at)
        return ert_error(ERT_ERR_BACKEND, "cpu backend: recorded call %ld refused (ERT_CPU_GRAPH_FAIL_AT)", be->fail_at);
    if (g->count == g->cap) {
        const int cap = g->cap ? 2 * g->cap : 64;
        cmd *m = realloc(g->cmds, sizeof *m * (size_t)cap);
        if (!m) return ert_error(ERT_ERR_OUT_OF_MEMORY, "cpu backend: out of memory recording a graph");
        g->cmds = m;
        g->cap = cap;
    }
    g->cmds[g->count++] = c;
    return ERT_OK;
}

struct ert_event {
    struct timespec t;
};

/* Physical memory, or the cgroups' limit when lower. */
static size_t usable_memory(void) {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    const size_t physical = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : SIZE_MAX;
    const size_t cgroup = ert_cgroup_limits_of_process().memory;
    return cgroup < physical ? cgroup : physical;
}

/* "cpu (2 threads)", with the library of the linear and conv ops made so far, if any:
 * "cpu (2 threads, oneDNN)", "cpu (1 thread, OpenBLAS)", or both ("oneDNN + OpenBLAS").
 * A CPU benchmark's numbers depend on it as much as on the thread count. */
static void name_backend(ert_backend *be) {
    const int t = be->threads, d = be->libs[0], o = be->libs[1];
    snprintf(be->name, sizeof be->name, "cpu (%d thread%s%s%s)", t, t == 1 ? "" : "s",
             d && o ? ", oneDNN + OpenBLAS" : d ? ", oneDNN" : "", o && !d ? ", OpenBLAS" : "");
}

static ert_status cpu_create(const ert_backend_config *cfg, ert_backend **out) {
    if (cfg->device != 0) return ert_error(ERT_ERR_INVALID_ARGUMENT, "device 'cpu:%d': only cpu:0 exists", cfg->device);
    if (cfg->dtype != ERT_DTYPE_F32)
        return ert_error(ERT_ERR_UNSUPPORTED, "dtype '%s': the cpu backend computes in f32 only",
                         ert_dtype_name(cfg->dtype));
    ert_backend *be = calloc(1, sizeof *be);
    if (!be) return ert_error(ERT_ERR_OUT_OF_MEMORY, "cpu backend: out of memory");
    be->max_rows = cfg->max_rows;
    const char *fail_at = getenv("ERT_CPU_GRAPH_FAIL_AT");
    be->fail_at = fail_at ? strtol(fail_at, NULL, 10) : 0;
    const char *limit = getenv("ERT_CPU_MEMORY_LIMIT");
    be->limit_set = limit && *limit;
    if (be->limit_set && !ert_cpu_parse_bytes(limit, &be->limit)) {
        free(be);
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "ERT_CPU_MEMORY_LIMIT '%s': expected a whole number of bytes > 0",
                         limit);
    }
    if (!be->limit_set) be->limit = usable_memory();
    const char *fuse = getenv("ERT_CPU_FUSE");
    if (fuse && *fuse && strcmp(fuse, "0") != 0 && strcmp(fuse, "1") != 0) {
        free(be);
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "ERT_CPU_FUSE '%s': expected 0 or 1", fuse);
    }
    be->fuse = !(fuse && strcmp(fuse, "0") == 0);
    ert_status st = ert_threads_check(cfg->threads);
    if (!st && cfg->threads) be->threads = cfg->threads;
    else if (!st) st = ert_cpu_threads_default(&be->threads);
    if (st) {
        free(be);
        return st;
    }
    name_backend(be);
    ert_cpu_blas_setup();
    *out = be;
    return ERT_OK;
}

static void cpu_graph_free(ert_backend *be, ert_graph *g) {
    (void)be;
    if (!g) return;
    free(g->cmds);
    free(g);
}

static void cpu_destroy(ert_backend *be) {
    if (be) cpu_graph_free(be, be->rec);
    free(be);
}

static const char *cpu_device_name(const ert_backend *be) { return be->name; }

static size_t cpu_act_elem_size(const ert_backend *be) {
    (void)be;
    return sizeof(float);
}

/* Under AddressSanitizer every block comes from the heap (sanitizer.h). */
#ifdef ERT_ASAN
#define MAP_FROM SIZE_MAX
#else
#define MAP_FROM ((size_t)1 << 20)
#endif
enum { BLOCK_HEADER = 64 };

typedef struct block_header {
    size_t total; /* bytes allocated, header included */
    int mapped;   /* 1: mmap'ed */
} block_header;

/* "1.50 GB" or "12.3 MB". */
static const char *show_bytes(char *buf, size_t len, double bytes) {
    if (bytes >= (double)(1 << 30)) snprintf(buf, len, "%.2f GB", bytes / (1 << 30));
    else snprintf(buf, len, "%.1f MB", bytes / (1 << 20));
    return buf;
}

/* A block: 64-byte aligned for the GEMM, zeroed so no op ever reads garbage, counted
 * against the limit; `change` says what to change when the limit refuses it. */
ert_status ert_cpu_hold(ert_backend *be, size_t bytes, const char *change, void **out) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    /* past a quarter of the address space: no arithmetic below can wrap */
    size_t total = bytes > SIZE_MAX / 4 ? SIZE_MAX : ((bytes ? bytes : 1) + BLOCK_HEADER + 63) & ~(size_t)63;
    const int mapped = total != SIZE_MAX && total >= MAP_FROM;
    if (mapped) total = (total + page - 1) / page * page;
    const size_t before = total == SIZE_MAX ? 0 : atomic_fetch_add(&held_all, total);
    if (total == SIZE_MAX || before > be->limit || total > be->limit - before) {
        if (total != SIZE_MAX) atomic_fetch_sub(&held_all, total);
        char a[32], b[32], c[32];
        return ert_error(ERT_ERR_OUT_OF_MEMORY,
                         "cpu backend: %s more would make this process's CPU sessions hold %s, more than %s %s "
                         "(%s)",
                         show_bytes(a, sizeof a, (double)bytes), show_bytes(b, sizeof b, (double)before + (double)bytes),
                         be->limit_set ? "ERT_CPU_MEMORY_LIMIT's" : "the memory it may use,",
                         show_bytes(c, sizeof c, (double)be->limit), change);
    }
    char *p;
    if (mapped) {
        void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        p = m == MAP_FAILED ? NULL : m;
    } else {
        p = aligned_alloc(64, total);
        if (p) memset(p, 0, total);
    }
    if (!p) {
        atomic_fetch_sub(&held_all, total);
        char a[32];
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "cpu backend: cannot allocate %s", show_bytes(a, sizeof a, (double)bytes));
    }
    *(block_header *)p = (block_header){total, mapped};
    *out = p + BLOCK_HEADER;
    return ERT_OK;
}

void ert_cpu_release(ert_backend *be, void *ptr) {
    (void)be;
    if (!ptr) return;
    char *p = (char *)ptr - BLOCK_HEADER;
    const block_header h = *(const block_header *)p;
    atomic_fetch_sub(&held_all, h.total);
    if (h.mapped) munmap(p, h.total);
    else free(p);
}

/* Memory, transfers and syncs are not part of a graph (backend.h): refused while one is
 * recorded, as the CUDA backend refuses them during a capture (where a transfer would be
 * recorded as a node replaying stale host data at every launch). */
static ert_status not_recording(const ert_backend *be, const char *what) {
    if (!be->rec) return ERT_OK;
    return ert_error(ERT_ERR_INVALID_ARGUMENT, "cpu backend: %s while a graph is being recorded", what);
}

static ert_status cpu_alloc(ert_backend *be, size_t bytes, void **out) {
    const ert_status st = not_recording(be, "an allocation");
    return st ? st : ert_cpu_hold(be, bytes, "lower the batch size", out);
}

static ert_status cpu_copy(ert_backend *be, void *dst, const void *src, size_t bytes) {
    const ert_status st = not_recording(be, "a transfer");
    if (st) return st;
    if (bytes) memmove(dst, src, bytes);
    return ERT_OK;
}

static ert_status cpu_sync(ert_backend *be) { return not_recording(be, "a sync"); }

/* A counted copy of n floats of the model's parameters. */
static ert_status hold_floats(ert_backend *be, const float *src, size_t n, float **out) {
    void *p = NULL;
    const ert_status st =
        ert_cpu_hold(be, n * sizeof(float), "the weights: close other sessions or give the process more memory", &p);
    if (st) return st;
    memcpy(p, src, n * sizeof(float));
    *out = p;
    return ERT_OK;
}

static ert_status cpu_op_new(ert_backend *be, const ert_op_desc *d, ert_op **out) {
    size_t nw = 0, nb = 0;
    switch (d->type) {
    case ERT_OP_LINEAR: nw = (size_t)d->out * (size_t)d->in; nb = (size_t)d->out; break;
    case ERT_OP_LAYERNORM: nw = nb = (size_t)d->in; break;
    case ERT_OP_NORMALIZE: nw = nb = (size_t)d->channels; break;
    case ERT_OP_CONV2D:
        nw = (size_t)d->conv.out_c * (size_t)(d->conv.in_c / d->conv.groups) * (size_t)d->conv.kh * (size_t)d->conv.kw;
        nb = (size_t)d->conv.out_c;
        break;
    case ERT_OP_MAXPOOL:
    case ERT_OP_AVGPOOL:
    case ERT_OP_RELU: break;
    default: return ert_error(ERT_ERR_UNSUPPORTED, "cpu backend: op type %d", (int)d->type);
    }
    ert_op *op = calloc(1, sizeof *op);
    if (!op)
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "cpu backend: out of memory preparing '%s'", d->name ? d->name : "op");
    ert_status st = ERT_OK;
    if (d->type == ERT_OP_LINEAR || d->type == ERT_OP_CONV2D) {
        char why[128];
        if (d->type == ERT_OP_LINEAR) st = ert_cpu_mm_new(be, d, be->threads, &op->mm, why, sizeof why);
        else st = ert_cpu_conv_new(be, d, be->threads, &op->conv, why, sizeof why);
        snprintf(op->gemm, sizeof op->gemm, op->mm || op->conv ? "onednn" : "openblas (%s)", why);
    }
    if (!st && d->weight && !op->mm && !op->conv) st = hold_floats(be, d->weight, nw, &op->weight);
    if (!st && d->bias) st = hold_floats(be, d->bias, nb, &op->bias);
    if (st) goto fail;
    op->desc = *d;
    /* scratch per thread on OpenBLAS (oneDNN's is its own), zeroed: a conv's im2col
     * writes only the places its input covers, so the padding's stay 0; a linear's last
     * block computes rows past the batch on whatever an earlier block left there, and
     * drops them; a padded pool's padding holds -inf or 0 (ert_cpu_pool_prepare) */
    if (d->type == ERT_OP_LINEAR && !op->mm)
        op->pad_floats = (size_t)ERT_CPU_GEMM_ROWS * ((size_t)d->in + (size_t)d->out);
    if (d->type == ERT_OP_CONV2D && !op->conv) {
        ert_cpu_conv_block(d->conv.out_h * d->conv.out_w, &op->samples, &op->cols);
        const size_t kdim = (size_t)(d->conv.in_c / d->conv.groups) * d->conv.kh * d->conv.kw;
        /* im2col (kdim x cols), then the GEMM's output (K/g x cols) */
        op->pad_floats = (kdim + (size_t)(d->conv.out_c / d->conv.groups)) * (size_t)op->cols;
    }
    if (d->type == ERT_OP_MAXPOOL || d->type == ERT_OP_AVGPOOL) op->pad_floats = ert_cpu_pool_scratch(&d->conv);
    op->threads = be->threads;
    if (op->pad_floats) {
        if (op->pad_floats > SIZE_MAX / 4 / sizeof(float) / ERT_MAX_THREADS) { /* no arithmetic can wrap */
            st = ert_error(ERT_ERR_OUT_OF_MEMORY, "cpu backend: '%s' needs %zu floats of scratch per thread",
                           d->name ? d->name : "op", op->pad_floats);
            goto fail;
        }
        const size_t per_thread = op->pad_floats * sizeof(float);
        void *p = NULL;
        st = ert_cpu_hold(be, per_thread * (size_t)op->threads,
                  op->threads > 1 ? "use fewer threads: --threads, ERT_CPU_THREADS or the session option threads"
                      : "one thread's scratch: close other sessions or give the process more memory",
                  &p);
        if (st) {
            st = ert_error_context(st, "scratch for %d thread%s: ", op->threads, op->threads == 1 ? "" : "s");
            goto fail;
        }
        op->pad = p;
        if (d->type == ERT_OP_MAXPOOL || d->type == ERT_OP_AVGPOOL) ert_cpu_pool_prepare(op);
    }
    if (d->type == ERT_OP_LINEAR || d->type == ERT_OP_CONV2D) {
        be->libs[op->mm || op->conv ? 0 : 1]++;
        name_backend(be);
    }
    *out = op;
    return ERT_OK;
fail:
    ert_cpu_mm_free(be, op->mm);
    ert_cpu_conv_free(be, op->conv);
    ert_cpu_release(be, op->weight);
    ert_cpu_release(be, op->bias);
    free(op);
    return st;
}

static void cpu_op_free(ert_backend *be, ert_op *op) {
    if (!op) return;
    ert_cpu_mm_free(be, op->mm);
    ert_cpu_conv_free(be, op->conv);
    ert_cpu_release(be, op->weight);
    ert_cpu_release(be, op->bias);
    ert_cpu_release(be, op->pad);
    free(op);
}

/* A convolution on oneDNN runs the pool after it on each sample's output (conv.c), read
 * in the primitive's own layout: that output never leaves the cache nor is reordered,
 * and the answers are the two ops' run apart (the same primitive, relu and pool steps on
 * the same values). Refused (the ops run apart) under ERT_CPU_FUSE=0 and for other pairs. */
static _Atomic int fused_ops;

int ert_cpu_fused_ops(void) { return fused_ops; }

static ert_status cpu_op_fuse(ert_backend *be, ert_op *op, const ert_op *next) {
    if (!be->fuse || !ert_cpu_conv_fusable(op, next)) return ERT_ERR_UNSUPPORTED;
    op->then = next;
    fused_ops++;
    return ERT_OK;
}

static ert_status cpu_op_run(ert_backend *be, const ert_op *op, ert_rows rows, const void *x, void *y) {
    if (be->rec) return rec_add(be, (cmd){.kind = CMD_OP, .op = op, .rows = rows, .x = x, .y = y});
    const int n = ert_cpu_rows(rows);
    switch (op->desc.type) {
    case ERT_OP_LINEAR:
        if (ert_cpu_linear(op, n, x, y))
            return ert_error(ERT_ERR_BACKEND, "cpu backend: '%s': a oneDNN matmul refused to run (%d rows)",
                             op->desc.name ? op->desc.name : "linear", n);
        break;
    case ERT_OP_LAYERNORM: ert_cpu_layernorm(op, n, x, y); break;
    case ERT_OP_NORMALIZE: ert_cpu_normalize(op, n, x, y); break;
    case ERT_OP_CONV2D:
        if (ert_cpu_conv2d(op, n, x, y))
            return ert_error(ERT_ERR_BACKEND, "cpu backend: '%s': a oneDNN convolution refused to run (%d samples)",
                             op->desc.name ? op->desc.name : "conv2d", n);
        break;
    case ERT_OP_MAXPOOL:
    case ERT_OP_AVGPOOL: ert_cpu_pool(op, n, x, y); break;
    case ERT_OP_RELU: ert_cpu_relu(op, n, x, y); break;
    }
    return ERT_OK;
}

static ert_status cpu_add(ert_backend *be, ert_rows rows, int width, const void *x, void *y) {
    if (be->rec) return rec_add(be, (cmd){.kind = CMD_ADD, .rows = rows, .width = width, .x = x, .y = y});
    ert_cpu_add(be->threads, ert_cpu_rows(rows), width, x, y);
    return ERT_OK;
}

static ert_status cpu_decide(ert_backend *be, const ert_decide_args *a) {
    if (be->rec) return rec_add(be, (cmd){.kind = CMD_DECIDE, .decide = *a});
    ert_cpu_decide(a);
    return ERT_OK;
}

static ert_status cpu_compact(ert_backend *be, const ert_compact_args *a) {
    const char *why = ert_compact_refusal(a);
    if (why) return ert_error(ERT_ERR_INVALID_ARGUMENT, "cpu backend: %s", why);
    if (be->rec) return rec_add(be, (cmd){.kind = CMD_COMPACT, .compact = *a});
    ert_cpu_compact(a);
    return ERT_OK;
}

static ert_status cpu_event_new(ert_backend *be, ert_event **out) {
    *out = NULL;
    const ert_status st = not_recording(be, "an event's creation"); /* as on cuda */
    if (st) return st;
    *out = calloc(1, sizeof **out);
    return *out ? ERT_OK : ert_error(ERT_ERR_OUT_OF_MEMORY, "cpu backend: out of memory");
}

static void cpu_event_free(ert_backend *be, ert_event *ev) {
    (void)be;
    free(ev);
}

static ert_status cpu_event_record(ert_backend *be, ert_event *ev) {
    if (be->rec) return rec_add(be, (cmd){.kind = CMD_EVENT, .ev = ev});
    clock_gettime(CLOCK_MONOTONIC, &ev->t);
    return ERT_OK;
}

static ert_status cpu_event_elapsed_ms(ert_backend *be, const ert_event *a, const ert_event *b, double *ms) {
    (void)be;
    *ms = (double)(b->t.tv_sec - a->t.tv_sec) * 1e3 + (double)(b->t.tv_nsec - a->t.tv_nsec) * 1e-6;
    return ERT_OK;
}

static ert_status cpu_graph_begin(ert_backend *be, const int *bucket_rows, int num_buckets) {
    if (be->rec) return ert_error(ERT_ERR_INVALID_ARGUMENT, "cpu backend: a graph is already being recorded");
    int at;
    const char *why = ert_buckets_refusal(bucket_rows, num_buckets, be->max_rows, &at);
    if (why)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "cpu backend: %d row buckets, at bucket %d: %s (%d)", num_buckets,
                         at, why, be->max_rows);
    if (!(be->rec = calloc(1, sizeof *be->rec))) return ert_error(ERT_ERR_OUT_OF_MEMORY, "cpu backend: out of memory");
    be->rec->num_buckets = num_buckets;
    if (num_buckets) memcpy(be->rec->buckets, bucket_rows, sizeof(int) * (size_t)num_buckets);
    return ERT_OK;
}

static ert_status cpu_graph_end(ert_backend *be, ert_graph **out) {
    ert_graph *g = be->rec;
    be->rec = NULL;
    if (!g) return ert_error(ERT_ERR_INVALID_ARGUMENT, "cpu backend: no graph is being recorded");
    for (int i = 0; out && i < g->count; ++i) {
        const cmd *c = &g->cmds[i];
        const int bucketed = c->kind == CMD_OP && c->rows.dev_count &&
                             (c->op->desc.type == ERT_OP_LINEAR || c->op->desc.type == ERT_OP_CONV2D);
        if (bucketed && !g->num_buckets) {
            cpu_graph_free(be, g);
            return ert_error(ERT_ERR_INVALID_ARGUMENT,
                             "cpu backend: an op reads a row count from memory, but the graph has no row buckets");
        }
    }
    if (!out) {
        cpu_graph_free(be, g);
        return ERT_OK;
    }
    *out = g;
    return ERT_OK;
}


static ert_status cpu_graph_launch(ert_backend *be, ert_graph *g) {
    for (int i = 0; i < g->count; ++i) {
        const cmd *c = &g->cmds[i];
        ert_status st = ERT_OK;
        switch (c->kind) {
        case CMD_OP: {
            ert_rows r = c->rows;
            if (r.dev_count && (c->op->desc.type == ERT_OP_LINEAR || c->op->desc.type == ERT_OP_CONV2D)) {
                /* the padded rows, as the SWITCH body on a GPU computes them: the bucket of
                 * the count (read within the op's rows), at most the op's rows */
                const int b = ert_bucket_rows(g->buckets, g->num_buckets, ert_cpu_rows(r));
                r = (ert_rows){b < r.n ? b : r.n, NULL};
            }
            st = cpu_op_run(be, c->op, r, c->x, c->y);
            break;
        }
        case CMD_ADD: st = cpu_add(be, c->rows, c->width, c->x, c->y); break;
        case CMD_DECIDE: st = cpu_decide(be, &c->decide); break;
        case CMD_COMPACT: st = cpu_compact(be, &c->compact); break;
        case CMD_EVENT: st = cpu_event_record(be, c->ev); break;
        }
        if (st) return st;
    }
    return ERT_OK;
}

static const ert_backend_ops cpu_ops = {
    .name = "cpu",
    .host_memory = 1,
    .create = cpu_create,
    .destroy = cpu_destroy,
    .device_name = cpu_device_name,
    .act_elem_size = cpu_act_elem_size,
    .alloc = cpu_alloc,
    .release = ert_cpu_release,
    .host_alloc = cpu_alloc,
    .host_release = ert_cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .download_async = cpu_copy,
    .sync = cpu_sync,
    .op_new = cpu_op_new,
    .op_free = cpu_op_free,
    .op_run = cpu_op_run,
    .op_fuse = cpu_op_fuse,
    .add = cpu_add,
    .decide = cpu_decide,
    .compact = cpu_compact,
    .event_new = cpu_event_new,
    .event_free = cpu_event_free,
    .event_record = cpu_event_record,
    .event_elapsed_ms = cpu_event_elapsed_ms,
    .graph_begin = cpu_graph_begin,
    .graph_end = cpu_graph_end,
    .graph_launch = cpu_graph_launch,
    .graph_free = cpu_graph_free,
};

const ert_backend_ops *ert_backend_cpu(void) { return &cpu_ops; }

#ifndef ERT_WITH_CUDA
const ert_backend_ops *ert_backend_cuda(void) { return NULL; }

void ert_cuda_libraries(char *buf, size_t len) { snprintf(buf, len, "not built in (no CUDA toolkit at build time)"); }
#endif
