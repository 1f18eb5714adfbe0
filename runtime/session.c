/* A session: a model bound to a backend for a maximum batch size. Every buffer, op and
 * event is made in ert_session_new; ert_session_run only launches work and copies.
 *
 * One run (compact mode):
 *   input -> normalize -> stage 0 body -> head 0 -> decide -> compact -> n1 rows
 *         -> stage 1 body on n1 rows -> ... -> last head: every remaining row exits.
 * Exiting rows write their result at their original index; survivors' activations,
 * original indices and policy state move to dense rows: into ping-pong buffers in order
 * (gather), or in place, the last survivors filling the rows of leaving samples (fill). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "internal.h"
#include "nvtx.h"

/* A model op bound to its prepared backend op. */
typedef struct sop {
    const ert_node *node;
    ert_op *op; /* NULL for flatten and residual */
    struct sop *sub;
    int num_sub;
    int fused; /* the op before it runs it (backend op_fuse): skipped */
} sop;

typedef struct sseq {
    sop *ops;
    int count;
    double flops, weight_elems, act_elems; /* per sample; weights per batch */
} sseq;

/* The points of a stage, in stream order: compute (body and head) | decide | compact |
 * host read-back | end. Each is recorded as an event only where its work follows
 * (ev_marks): DECIDE where a decision runs, COMPACT where a compaction does, SYNC where
 * the host reads a count back (eager), END only where no later stage's COMPUTE closes the
 * stage. An unrecorded point is the next recorded one in stream order: nothing ran between
 * them, so its interval is exactly 0. In a graph each recorded point is an event node:
 * 3 per compacting exit, 1 per stage without a decision, instead of 5 each. */
enum { EV_COMPUTE = 0, EV_DECIDE, EV_COMPACT, EV_SYNC, EV_END, EV_PER_STAGE };

struct ert_session {
    const ert_model *model;
    const ert_backend_ops *ops;
    ert_backend *be;
    ert_session_options opt;
    char device[128];   /* the backend's name of it: "cpu (2 threads)", "cuda:0 (NVIDIA H200)" */
    char device_id[16]; /* opt.device: "cpu" or "cuda:N", which a new session accepts */
    size_t elem;

    ert_op *normalize;
    sseq *body, *head; /* per stage */

    /* backend memory */
    float *input;
    void **pool;
    int pool_size;
    float *logits;
    int32_t *idx[2];
    ert_sample_state *state[2];
    uint8_t *keep;
    int32_t *counts; /* S + 1 row counts: the batch's, then each compaction's survivors */
    ert_exit_params *dev_params; /* graph mode: the run's policy */
    int32_t *pred, *exit_at;
    float *conf, *logits_out;

    /* host staging memory */
    float *h_input;
    int32_t *h_iota;
    ert_sample_state *h_state;
    int32_t *h_pred, *h_exit, *h_counts;
    float *h_conf, *h_logits;
    ert_exit_params *h_params;

    /* graph mode */
    ert_graph *graph;                /* the forward, captured at creation (NULL: eager) */
    ert_graph *ideal;                /* run_rows' graph, for ideal_rows */
    int ideal_rows[ERT_MAX_STAGES];
    int buckets[ERT_MAX_BUCKETS], num_buckets;
    int stage_slot[ERT_MAX_STAGES];  /* the count slot each stage reads */
    char exec_note[512];

    ert_event *ev_begin, *ev_end;
    ert_event **ev; /* EV_PER_STAGE per stage */
    unsigned ev_marks[ERT_MAX_STAGES];    /* the points (1 << EV_*) the last run recorded; 0: untimed */
    unsigned graph_marks[ERT_MAX_STAGES]; /* ... that the forward graph records */
    unsigned ideal_marks[ERT_MAX_STAGES]; /* ... that the ideal's graph records */
    ert_profile profile;
};

ert_session_options ert_session_options_default(void) {
    ert_session_options o = {.device = "cpu", .max_batch = 256, .mode = ERT_MODE_COMPACT, .dtype = ERT_DTYPE_F32,
                             .exec = ERT_EXEC_EAGER, .buckets = NULL, .stage_events = 1,
                             .compaction = ERT_COMPACTION_AUTO};
    return o;
}

const char *ert_session_exec_note(const ert_session *s) { return s ? s->exec_note : ""; }

const char *ert_session_device(const ert_session *s) { return s ? s->device : NULL; }
const ert_model *ert_session_model(const ert_session *s) { return s ? s->model : NULL; }
ert_session_options ert_session_get_options(const ert_session *s) { return s->opt; }

static ert_status parse_device(const char *device, const ert_backend_ops **ops, int *index) {
    const char *d = device ? device : "cpu";
    char *end = NULL;
    if (strcmp(d, "cpu") == 0 || strcmp(d, "cpu:0") == 0) {
        *ops = ert_backend_cpu();
        *index = 0;
        return ERT_OK;
    }
    if (strncmp(d, "cuda", 4) == 0) {
        long n = 0;
        if (d[4] == ':') n = strtol(d + 5, &end, 10);
        if ((d[4] != '\0' && d[4] != ':') || (end && (*end != '\0' || end == d + 5)) || n < 0)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "device '%s': expected cpu or cuda:N", d);
        if (!(*ops = ert_backend_cuda()))
            return ert_error(ERT_ERR_UNSUPPORTED, "device '%s': this build has no CUDA backend", d);
        *index = (int)n;
        return ERT_OK;
    }
    return ert_error(ERT_ERR_INVALID_ARGUMENT, "device '%s': expected cpu or cuda:N", d);
}

/* ---------------------------------------------------------------- preparing ops */

static ert_status prepare_seq(ert_session *s, const ert_node *nodes, int count, int f32_last, sop **out);

static ert_status prepare_node(ert_session *s, const ert_node *n, int f32_out, sop *o) {
    o->node = n;
    if (n->type == ERT_NODE_RESIDUAL) {
        o->num_sub = n->num_sub;
        return prepare_seq(s, n->sub, n->num_sub, 0, &o->sub);
    }
    if (n->type == ERT_NODE_FLATTEN) return ERT_OK;
    static const ert_op_type op_of[] = {
        [ERT_NODE_LINEAR] = ERT_OP_LINEAR,   [ERT_NODE_LAYERNORM] = ERT_OP_LAYERNORM,
        [ERT_NODE_CONV2D] = ERT_OP_CONV2D,   [ERT_NODE_RELU] = ERT_OP_RELU,
        [ERT_NODE_MAXPOOL] = ERT_OP_MAXPOOL, [ERT_NODE_AVGPOOL] = ERT_OP_AVGPOOL,
    };
    ert_op_desc d = {
        .type = op_of[n->type],
        .conv = n->geom,
        .name = n->weight_name,
        .in = n->in,
        .out = n->out,
        .act = n->act,
        .eps = n->eps,
        .weight = n->weight,
        .bias = n->bias,
        .f32_out = f32_out,
        .max_rows = s->opt.max_batch,
    };
    ert_status st = s->ops->op_new(s->be, &d, &o->op);
    if (st) ert_error_context(st, "preparing '%s': ", n->weight_name ? n->weight_name : "an op without weights");
    return st;
}

/* A convolution followed by a pool of its output: the backend may run the pool inside
 * the convolution (op_fuse), which keeps the convolution's output in its cache. */
static int fusable(const ert_node *a, const ert_node *b) {
    return a->type == ERT_NODE_CONV2D && (b->type == ERT_NODE_MAXPOOL || b->type == ERT_NODE_AVGPOOL);
}

static ert_status prepare_seq(ert_session *s, const ert_node *nodes, int count, int f32_last, sop **out) {
    if (!(*out = calloc((size_t)(count ? count : 1), sizeof **out))) return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
    for (int i = 0; i < count; ++i) {
        ert_status st = prepare_node(s, &nodes[i], f32_last && i == count - 1, &(*out)[i]);
        if (st) return st;
    }
    for (int i = 0; s->ops->op_fuse && i + 1 < count; ++i) {
        if (!fusable(&nodes[i], &nodes[i + 1])) continue;
        const ert_status st = s->ops->op_fuse(s->be, (*out)[i].op, (*out)[i + 1].op);
        if (st == ERT_OK) (*out)[++i].fused = 1;
        else if (st != ERT_ERR_UNSUPPORTED) return ert_error_context(st, "fusing '%s' with the pool after it: ",
                                                                     nodes[i].weight_name ? nodes[i].weight_name : "conv2d");
    }
    return ERT_OK;
}

static void free_sops(ert_session *s, sop *ops, int count) {
    if (!ops) return;
    for (int i = 0; i < count; ++i) {
        if (ops[i].op) s->ops->op_free(s->be, ops[i].op);
        free_sops(s, ops[i].sub, ops[i].num_sub);
    }
    free(ops);
}

/* Per-sample FLOPs, weights and activation elements each op reads and writes. */
static void node_cost(const ert_node *n, double *flops, double *weights, double *acts) {
    *flops += n->flops;
    *weights += (double)n->params;
    if (n->type == ERT_NODE_RESIDUAL) {
        /* its flops and params already hold the sub-ops' (model.c): only their
         * activations are added here */
        for (int i = 0; i < n->num_sub; ++i) {
            double f = 0, w = 0;
            node_cost(&n->sub[i], &f, &w, acts);
        }
        *acts += 3.0 * n->in; /* y += x: read two, write one */
    } else if (n->type != ERT_NODE_FLATTEN) {
        *acts += (double)n->in + n->out;
    }
}

static ert_status prepare_stage_seq(ert_session *s, const ert_seq *seq, int is_head, sseq *out) {
    out->count = seq->count;
    for (int i = 0; i < seq->count; ++i) node_cost(&seq->nodes[i], &out->flops, &out->weight_elems, &out->act_elems);
    return prepare_seq(s, seq->nodes, seq->count, is_head, &out->ops);
}

/* ---------------------------------------------------------------- create / free */

static ert_status capture_forward(ert_session *s);

/* The session's buffers, sized for max_batch rows: a failure says for how many. */
static ert_status alloc_be(ert_session *s, size_t bytes, void **p) {
    const ert_status st = s->ops->alloc(s->be, bytes, p);
    return st ? ert_error_context(st, "buffers for %d rows: ", s->opt.max_batch) : ERT_OK;
}
static ert_status alloc_host(ert_session *s, size_t bytes, void **p) {
    const ert_status st = s->ops->host_alloc(s->be, bytes, p);
    return st ? ert_error_context(st, "host buffers for %d rows: ", s->opt.max_batch) : ERT_OK;
}

static ert_status session_new(const ert_model *model, const ert_session_options *opt, ert_session **out) {
    if (!model || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_session_new: model and out must not be NULL");
    *out = NULL;
    ert_session_options o = opt ? *opt : ert_session_options_default();
    if (o.max_batch < 1 || o.max_batch > (1 << 24))
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "max_batch %d: expected 1..%d", o.max_batch, 1 << 24);
    if ((unsigned)o.mode > ERT_MODE_FULL) return ert_error(ERT_ERR_INVALID_ARGUMENT, "mode %d: unknown", (int)o.mode);
    if ((unsigned)o.exec > ERT_EXEC_AUTO) return ert_error(ERT_ERR_INVALID_ARGUMENT, "exec %d: unknown", (int)o.exec);
    if ((unsigned)o.compaction > ERT_COMPACTION_FILL)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "compaction %d: unknown", (int)o.compaction);
    ert_status tst = ert_threads_check(o.threads);
    if (tst) return tst;
    int buckets[ERT_MAX_BUCKETS], num_buckets = 0;
    ert_status bst = ert_buckets_parse(o.buckets, o.max_batch, buckets, &num_buckets);
    if (bst) return bst;
    const ert_backend_ops *ops = NULL;
    int index = 0;
    ert_status st = parse_device(o.device, &ops, &index);
    if (st) return st;
    if (o.compaction == ERT_COMPACTION_AUTO) /* exitrt.h says why */
        o.compaction = ops->host_memory ? ERT_COMPACTION_FILL : ERT_COMPACTION_GATHER;

    ert_session *s = calloc(1, sizeof *s);
    if (!s) return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
    s->model = model;
    s->ops = ops;
    s->opt = o;
    const ert_backend_config cfg = {.device = index,
                                    .max_rows = o.max_batch,
                                    .dtype = o.dtype,
                                    .bucket_rows = o.exec == ERT_EXEC_EAGER ? NULL : buckets,
                                    .num_buckets = o.exec == ERT_EXEC_EAGER ? 0 : num_buckets,
                                    .threads = o.threads};
    if ((st = ops->create(&cfg, &s->be))) goto fail;
    if (ops == ert_backend_cpu()) snprintf(s->device_id, sizeof s->device_id, "cpu");
    else snprintf(s->device_id, sizeof s->device_id, "cuda:%d", index);
    s->opt.device = s->device_id;
    s->elem = ops->act_elem_size(s->be);

    const int B = o.max_batch, S = model->num_stages;
    const ert_op_desc nd = {.type = ERT_OP_NORMALIZE, .name = "input normalisation", .in = model->input_size,
                            .out = model->input_size, .channels = model->channels, .weight = model->scale,
                            .bias = model->shift, .max_rows = B};
    if ((st = ops->op_new(s->be, &nd, &s->normalize))) goto fail;
    if (!(s->body = calloc((size_t)S, sizeof *s->body)) || !(s->head = calloc((size_t)S, sizeof *s->head))) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
        goto fail;
    }
    for (int i = 0; i < S; ++i)
        if ((st = prepare_stage_seq(s, &model->stages[i].body, 0, &s->body[i])) ||
            (st = prepare_stage_seq(s, &model->stages[i].head, 1, &s->head[i])))
            goto fail;
    /* after the ops: the cpu's name says the GEMM library its linear ops run on */
    snprintf(s->device, sizeof s->device, "%s", ops->device_name(s->be));

    /* Live buffers at once: the stage output (kept while its head runs), one per
     * residual level, the op's input and its output. */
    s->pool_size = model->max_depth + 4;
    if (!(s->pool = calloc((size_t)s->pool_size, sizeof *s->pool))) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
        goto fail;
    }
    const size_t act_bytes = (size_t)B * (size_t)model->max_width * s->elem;
    for (int i = 0; i < s->pool_size; ++i)
        if ((st = alloc_be(s, act_bytes, &s->pool[i]))) goto fail;
    const size_t nB = (size_t)B;
    if ((st = alloc_be(s, nB * (size_t)model->input_size * sizeof(float), (void **)&s->input)) ||
        (st = alloc_be(s, nB * (size_t)model->num_classes * sizeof(float), (void **)&s->logits)) ||
        (st = alloc_be(s, nB * sizeof(int32_t), (void **)&s->idx[0])) ||
        (st = alloc_be(s, nB * sizeof(int32_t), (void **)&s->idx[1])) ||
        (st = alloc_be(s, nB * sizeof(ert_sample_state), (void **)&s->state[0])) ||
        (st = alloc_be(s, nB * sizeof(ert_sample_state), (void **)&s->state[1])) ||
        (st = alloc_be(s, nB, (void **)&s->keep)) ||
        (st = alloc_be(s, sizeof(int32_t) * (size_t)(S + 1), (void **)&s->counts)) ||
        (st = alloc_be(s, sizeof(ert_exit_params), (void **)&s->dev_params)) ||
        (st = alloc_host(s, sizeof(ert_exit_params), (void **)&s->h_params)) ||
        (st = alloc_be(s, nB * sizeof(int32_t), (void **)&s->pred)) ||
        (st = alloc_be(s, nB * sizeof(int32_t), (void **)&s->exit_at)) ||
        (st = alloc_be(s, nB * sizeof(float), (void **)&s->conf)) ||
        (st = alloc_be(s, nB * (size_t)model->num_classes * sizeof(float), (void **)&s->logits_out)) ||
        (st = alloc_host(s, nB * (size_t)model->num_classes * sizeof(float), (void **)&s->h_logits)) ||
        (st = alloc_host(s, nB * (size_t)model->input_size * sizeof(float), (void **)&s->h_input)) ||
        (st = alloc_host(s, nB * sizeof(int32_t), (void **)&s->h_iota)) ||
        (st = alloc_host(s, nB * sizeof(ert_sample_state), (void **)&s->h_state)) ||
        (st = alloc_host(s, nB * sizeof(int32_t), (void **)&s->h_pred)) ||
        (st = alloc_host(s, nB * sizeof(int32_t), (void **)&s->h_exit)) ||
        (st = alloc_host(s, nB * sizeof(float), (void **)&s->h_conf)) ||
        (st = alloc_host(s, sizeof(int32_t) * (size_t)(S + 1), (void **)&s->h_counts)))
        goto fail;
    for (int i = 0; i < B; ++i) s->h_iota[i] = i;

    if (!(s->ev = calloc((size_t)S * EV_PER_STAGE, sizeof *s->ev))) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
        goto fail;
    }
    if ((st = ops->event_new(s->be, &s->ev_begin)) || (st = ops->event_new(s->be, &s->ev_end))) goto fail;
    for (int i = 0; i < S * EV_PER_STAGE; ++i)
        if ((st = ops->event_new(s->be, &s->ev[i]))) goto fail;

    memcpy(s->buckets, buckets, sizeof buckets);
    s->num_buckets = num_buckets;
    s->opt.buckets = NULL; /* the caller's string is not kept; the buckets are */
    s->opt.exec = ERT_EXEC_EAGER;
    if (o.exec != ERT_EXEC_EAGER) {
        if (!ops->graph_begin)
            st = ert_error(ERT_ERR_UNSUPPORTED, "exec graph: the %s backend has no graph mode (it needs cuda:N)",
                           ops->name);
        else if ((st = capture_forward(s)))
            ert_error_context(st, "exec graph: capturing the forward pass: ");
        if (st == ERT_OK) {
            s->opt.exec = ERT_EXEC_GRAPH;
        } else if (o.exec == ERT_EXEC_AUTO) { /* the caller asked for a fallback: eager */
            snprintf(s->exec_note, sizeof s->exec_note, "graph mode unavailable, running eager: %s", ert_last_error());
            ert_error_clear();
            st = ERT_OK;
        } else {
            goto fail; /* exec auto would have fallen back to eager */
        }
    }
    *out = s;
    return ERT_OK;
fail:
    ert_error_context(st, "session on '%s': ", o.device ? o.device : "cpu");
    ert_session_free(s);
    return st;
}

/* A CPU session left to the default thread count (every CPU the process may run on)
 * that does not fit the memory limit is made again on half as many threads, down to one:
 * the ops' scratch grows with the thread count (kernels/cpu/backend_cpu.c), so a host
 * with many CPUs and little memory (a container with a memory limit and no CPU quota)
 * still gets a session, and its answers do not change (they never depend on the thread
 * count). A count that was set (the option, ERT_CPU_THREADS) is kept, or refused. */
ert_status ert_session_new(const ert_model *model, const ert_session_options *opt, ert_session **out) {
    ert_status st = session_new(model, opt, out);
    ert_session_options o = opt ? *opt : ert_session_options_default();
    const ert_backend_ops *ops = NULL;
    int index = 0, threads = 0;
    if (st != ERT_ERR_OUT_OF_MEMORY || o.threads != 0 || ert_cpu_threads_given() ||
        parse_device(o.device, &ops, &index) != ERT_OK || ops != ert_backend_cpu() ||
        ert_cpu_threads_default(&threads) != ERT_OK)
        return st;
    char first[512];
    snprintf(first, sizeof first, "%s", ert_last_error());
    for (o.threads = threads / 2; st == ERT_ERR_OUT_OF_MEMORY && o.threads >= 1; o.threads /= 2)
        st = session_new(model, &o, out);
    if (st == ERT_OK) { /* after an exec auto note, if any */
        char *note = (*out)->exec_note;
        const size_t used = strlen(note);
        snprintf(note + used, sizeof (*out)->exec_note - used,
                 "%sCPU threads lowered from %d to %d to fit the memory limit (with %d: %.300s)", used ? "; " : "",
                 threads, (*out)->opt.threads, threads, first);
    }
    return st;
}

/* Waits for what the session had queued, keeping the current message: after a failed
 * run (copies from and into the pinned buffers the next run writes may still be in
 * flight) and before its buffers are freed. A failing wait says nothing new. */
static void quiet_sync(ert_session *s) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", ert_last_error());
    (void)s->ops->sync(s->be);
    (void)ert_error(ERT_OK, "%s", msg);
}

void ert_session_free(ert_session *s) {
    if (!s) return;
    if (s->be) {
        const ert_backend_ops *o = s->ops;
        const int S = s->model->num_stages;
        quiet_sync(s);
        /* the graphs first: their event nodes name the events */
        if (s->graph) o->graph_free(s->be, s->graph);
        if (s->ideal) o->graph_free(s->be, s->ideal);
        if (s->ev) {
            for (int i = 0; i < S * EV_PER_STAGE; ++i)
                if (s->ev[i]) o->event_free(s->be, s->ev[i]);
        }
        if (s->ev_begin) o->event_free(s->be, s->ev_begin);
        if (s->ev_end) o->event_free(s->be, s->ev_end);
        for (int i = 0; s->body && i < S; ++i) free_sops(s, s->body[i].ops, s->body[i].count);
        for (int i = 0; s->head && i < S; ++i) free_sops(s, s->head[i].ops, s->head[i].count);
        if (s->normalize) o->op_free(s->be, s->normalize);
        for (int i = 0; s->pool && i < s->pool_size; ++i)
            if (s->pool[i]) o->release(s->be, s->pool[i]);
        void *dev[] = {s->input, s->logits, s->idx[0], s->idx[1], s->state[0], s->state[1],
                       s->keep,  s->counts, s->pred,   s->exit_at, s->conf, s->logits_out, s->dev_params};
        for (size_t i = 0; i < sizeof dev / sizeof *dev; ++i)
            if (dev[i]) o->release(s->be, dev[i]);
        void *host[] = {s->h_input, s->h_iota, s->h_state, s->h_pred,
                        s->h_exit,  s->h_conf, s->h_counts, s->h_logits, s->h_params};
        for (size_t i = 0; i < sizeof host / sizeof *host; ++i)
            if (host[i]) o->host_release(s->be, host[i]);
        o->destroy(s->be);
    }
    free(s->ev);
    free(s->body);
    free(s->head);
    free(s->pool);
    free(s);
}

/* ---------------------------------------------------------------- running */

static int pick_buffer(const ert_session *s, unsigned busy) {
    for (int i = 0; i < s->pool_size; ++i)
        if (!(busy & (1u << i))) return i;
    return -1;
}

/* Runs ops on pool buffer `in`; buffers in `busy` stay untouched. The result lands in
 * a pool buffer (*out) or, for a head's last op, in `final_out` (*out = -1). */
static ert_status run_seq(ert_session *s, const sop *ops, int count, int in, unsigned busy, ert_rows rows,
                          void *final_out, int *out) {
    ert_status st = ERT_OK;
    int cur = in;
    for (int i = 0; i < count && st == ERT_OK; ++i) {
        const ert_node *n = ops[i].node;
        if (n->type == ERT_NODE_FLATTEN || ops[i].fused) continue;
        if (n->type == ERT_NODE_RESIDUAL) {
            int t;
            if ((st = run_seq(s, ops[i].sub, ops[i].num_sub, cur, busy | (1u << cur), rows, NULL, &t))) break;
            st = s->ops->add(s->be, rows, n->in, s->pool[cur], s->pool[t]);
            cur = t;
            continue;
        }
        if (final_out && i == count - 1) { /* a head's linear op (model.c): never fused */
            *out = -1;
            return s->ops->op_run(s->be, ops[i].op, rows, s->pool[cur], final_out);
        }
        const int dst = pick_buffer(s, busy | (1u << cur));
        if (dst < 0) return ert_error(ERT_ERR_BACKEND, "internal: activation buffers exhausted");
        st = s->ops->op_run(s->be, ops[i].op, rows, s->pool[cur], s->pool[dst]);
        cur = dst;
    }
    *out = cur;
    return st;
}

static ert_status check_batch(const ert_session *s, const ert_policy *policy, const ert_batch *b,
                              const ert_outputs *out) {
    const ert_model *m = s->model;
    if (!policy || !b || !out || !b->input || !out->pred || !out->exit_index || !out->confidence)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_session_run: policy, batch, input and outputs must not be NULL");
    if (b->n < 1 || b->n > s->opt.max_batch)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "batch of %d samples: the session takes 1..%d (max_batch)", b->n,
                         s->opt.max_batch);
    const size_t total = (size_t)b->n * (size_t)m->input_size;
    for (size_t i = 0; i < total; ++i)
        if (!isfinite(b->input[i]))
            return ert_error(ERT_ERR_NUMERIC, "input sample %zu, element %zu: %s", i / (size_t)m->input_size,
                             i % (size_t)m->input_size, isnan(b->input[i]) ? "NaN" : "Inf");
    const ert_policy_kind kind = ert_policy_get_kind(policy);
    if (s->opt.mode != ERT_MODE_FULL && kind == ERT_POLICY_ORACLE && !b->labels)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy 'oracle' needs labels with the batch");
    if (s->opt.mode != ERT_MODE_FULL && kind == ERT_POLICY_SCHEDULED && !b->schedule && !ert_policy_has_hazard(policy))
        return ert_error(ERT_ERR_INVALID_ARGUMENT,
                         "policy 'scheduled' needs a per-sample schedule with the batch, or scheduled:hazard=H");
    for (int i = 0; b->labels && i < b->n; ++i)
        if (b->labels[i] < 0 || b->labels[i] >= m->num_classes)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "labels[%d] = %d: expected 0..%d", i, b->labels[i],
                             m->num_classes - 1);
    for (int i = 0; b->schedule && i < b->n; ++i)
        if (b->schedule[i] < 0 || b->schedule[i] >= m->num_exits)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "schedule[%d] = %d: expected an exit 0..%d", i, b->schedule[i],
                             m->num_exits - 1);
    return ERT_OK;
}

static double host_clock_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

/* The event at point e of stage k: the first recorded point at or after it in stream
 * order (NULL past the last: a run records END where no later stage starts). */
static ert_event *point(const ert_session *s, int k, int e) {
    for (; k < s->model->num_stages; ++k, e = EV_COMPUTE)
        for (; e < EV_PER_STAGE; ++e)
            if (s->ev_marks[k] & (1u << e)) return s->ev[k * EV_PER_STAGE + e];
    return NULL;
}

/* Milliseconds between points (a, b) of stage k; 0 when both are one recorded event. */
static ert_status between(const ert_session *s, int k, int a, int b, double *ms) {
    ert_event *ea = point(s, k, a), *eb = point(s, k, b);
    if (!ea || !eb) return ert_error(ERT_ERR_BACKEND, "profile: stage %d: no event recorded after point %d", k, a);
    if (ea == eb) return (*ms = 0.0, ERT_OK);
    return s->ops->event_elapsed_ms(s->be, ea, eb, ms);
}

/* Reads the events of the last run into the profile. The device is idle (sync_ms) from
 * the end of a stage's compaction until the next stage's first kernel: the host reads
 * the survivor count back and launches again (in graph mode nothing waits: 0). */
static ert_status collect_profile(ert_session *s) {
    const ert_backend_ops *o = s->ops;
    ert_profile *prof = &s->profile;
    ert_status st;
    if ((st = o->event_elapsed_ms(s->be, s->ev_begin, s->ev_end, &prof->batch_ms))) return st;
    for (int k = 0; k < prof->num_stages; ++k) {
        if (!s->ev_marks[k]) continue;
        ert_stage_profile *sp = &prof->stage[k];
        if ((st = o->event_elapsed_ms(s->be, s->ev_begin, point(s, k, EV_COMPUTE), &sp->start_ms)) ||
            (st = between(s, k, EV_COMPUTE, EV_DECIDE, &sp->compute_ms)) ||
            (st = between(s, k, EV_DECIDE, EV_COMPACT, &sp->decide_ms)) ||
            (st = between(s, k, EV_COMPACT, EV_SYNC, &sp->compact_ms)) ||
            (st = between(s, k, EV_SYNC, EV_END, &sp->sync_ms)))
            return st;
        if (o->host_memory) sp->sync_ms = 0.0; /* no device to idle: it is host time */
        prof->routing_ms += sp->decide_ms + sp->compact_ms;
        prof->sync_ms += sp->sync_ms;
    }
    return ERT_OK;
}

/* The work of stage k on `rows` rows of which its GEMMs computed `padded`. */
static void stage_cost(const ert_session *s, int k, int rows, int padded, ert_stage_profile *sp) {
    const int last = k == s->model->num_stages - 1;
    const int run_head = s->model->stages[k].exit_index >= 0 && (s->opt.mode != ERT_MODE_FULL || last);
    const sseq *b = &s->body[k], *h = &s->head[k];
    sp->rows = rows;
    sp->padded_rows = padded;
    sp->flops = rows * (b->flops + (run_head ? h->flops : 0.0));
    sp->bytes = (double)s->elem * (b->weight_elems + rows * b->act_elems +
                                   (run_head ? h->weight_elems + rows * h->act_elems : 0));
}

void ert_profile_padding_waste(ert_profile *prof) {
    double pad = 0.0, real = 0.0;
    for (int k = 0; k < prof->num_stages; ++k) {
        const ert_stage_profile *sp = &prof->stage[k];
        if (sp->rows <= 0) continue;
        real += sp->flops;
        pad += sp->flops / sp->rows * (sp->padded_rows - sp->rows);
    }
    prof->padding_waste = real > 0 ? pad / real : 0.0;
}

#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        if ((st = (expr)) != ERT_OK) goto fail;                                                                        \
    } while (0)

/* Records point `which` of stage k (with stage events on) and marks it recorded. */
static ert_status record(ert_session *s, int k, int which) {
    if (!s->opt.stage_events) return ERT_OK;
    const ert_status st = s->ops->event_record(s->be, s->ev[k * EV_PER_STAGE + which]);
    if (st == ERT_OK) s->ev_marks[k] |= 1u << which;
    return st;
}

/* Enqueues the forward pass after the upload: normalisation, then per stage its body,
 * head, decision and compaction. Eager (graph = 0): n rows, and after each compaction
 * the host reads the survivor count back to size the next stage (one sync per exit).
 * Graph (graph = 1, while the backend captures): every op gets the session's max_batch
 * as the bound and the count in device memory (slot j of s->counts: the batch's n, then
 * each compaction's survivors), so one capture serves every batch and no count comes
 * back. Buffer choices depend on the stage only, never on the counts, so both modes
 * move the same data through the same buffers. */
static ert_status enqueue_forward(ert_session *s, ert_decide_args *da, int n, int graph) {
    const ert_model *m = s->model;
    const ert_backend_ops *o = s->ops;
    const ert_mode mode = s->opt.mode;
    ert_profile *prof = &s->profile;
    const int S = m->num_stages, bound = s->opt.max_batch;
    int cur = 0, pp = 0, rows = n, slot = 0, open_ranges = 0;
    ert_status st;

    TRY(o->op_run(s->be, s->normalize, graph ? (ert_rows){bound, s->counts} : (ert_rows){n, NULL}, s->input,
                  s->pool[cur]));
    for (int k = 0; k < S && (graph || rows > 0); ++k) {
        const ert_stage *stage = &m->stages[k];
        const ert_rows r = graph ? (ert_rows){bound, s->counts + slot} : (ert_rows){rows, NULL};
        const int is_last = k == S - 1, e = stage->exit_index;
        const int run_head = e >= 0 && (mode != ERT_MODE_FULL || is_last);
        s->stage_slot[k] = slot;
        if (!graph) {
            stage_cost(s, k, rows, rows, &prof->stage[k]);
            ert_nvtx_push(ERT_NVTX_STAGE, k, rows);
            open_ranges++;
        }
        TRY(record(s, k, EV_COMPUTE));
        TRY(run_seq(s, s->body[k].ops, s->body[k].count, cur, 0u, r, NULL, &cur));
        if (run_head) {
            int unused;
            if (!graph) ert_nvtx_push(ERT_NVTX_HEAD, e, rows);
            st = run_seq(s, s->head[k].ops, s->head[k].count, cur, 1u << cur, r, s->logits, &unused);
            if (!graph) ert_nvtx_pop();
            if (st) goto fail;
        }
        if (run_head) {
            TRY(record(s, k, EV_DECIDE));
            da->exit_index = e;
            da->is_last = is_last;
            da->rows = r;
            da->orig_index = s->idx[pp];
            da->state = s->state[pp];
            if (!graph) ert_nvtx_push(ERT_NVTX_DECIDE, e, rows);
            st = o->decide(s->be, da);
            if (!graph) ert_nvtx_pop();
            if (st) goto fail;
        }
        if (run_head && mode == ERT_MODE_COMPACT && !is_last) {
            TRY(record(s, k, EV_COMPACT));
            /* fill works in place; gather copies into a free buffer and the other idx/state. */
            const int fill = s->opt.compaction == ERT_COMPACTION_FILL;
            const int dst = fill ? cur : pick_buffer(s, 1u << cur), npp = fill ? pp : !pp;
            const ert_compact_args ca = {.rows = r, .width = stage->width_out, .x = s->pool[cur], .y = s->pool[dst],
                                         .idx_in = s->idx[pp], .idx_out = s->idx[npp], .state_in = s->state[pp],
                                         .state_out = s->state[npp], .keep = s->keep, .count = s->counts + slot + 1};
            if (!graph) ert_nvtx_push(ERT_NVTX_COMPACT, e, rows);
            st = o->compact(s->be, &ca);
            if (!graph) ert_nvtx_pop();
            if (st) goto fail;
            slot++;
            if (!graph) {
                /* Eager mode: the host reads the survivor count to size the next GEMMs. */
                TRY(record(s, k, EV_SYNC));
                ert_nvtx_push(ERT_NVTX_SYNC, e, rows);
                st = o->download(s->be, s->h_counts + slot, s->counts + slot, sizeof(int32_t));
                ert_nvtx_pop();
                if (st) goto fail;
                prof->host_syncs += !o->host_memory;
                /* a compaction keeps at most the rows it was given: anything else is a
                 * backend fault, stopped here rather than sizing the next GEMMs from it */
                if (s->h_counts[slot] < 0 || s->h_counts[slot] > rows) {
                    st = ert_error(ERT_ERR_BACKEND, "%s: compaction after stage %d kept %d of %d rows", s->device, k,
                                   (int)s->h_counts[slot], rows);
                    goto fail;
                }
                rows = s->h_counts[slot];
            }
            cur = dst;
            pp = npp;
        }
        /* END only where no later stage's COMPUTE closes this stage */
        if (is_last || (!graph && rows == 0)) TRY(record(s, k, EV_END));
        if (!graph) {
            ert_nvtx_pop();
            open_ranges--;
        }
    }
    return ERT_OK;
fail:
    while (open_ranges-- > 0) ert_nvtx_pop();
    return st;
}

/* The decide arguments that do not change between stages. */
static ert_decide_args decide_args(const ert_session *s, int want_logits) {
    const ert_decide_args da = {.classes = s->model->num_classes, .logits = s->logits, .keep = s->keep,
                                .pred = s->pred, .exit_at = s->exit_at, .conf = s->conf,
                                .logits_out = want_logits ? s->logits_out : NULL};
    return da;
}

/* Captures the forward pass into s->graph (session creation, graph mode). */
static ert_status capture_forward(ert_session *s) {
    const ert_backend_ops *o = s->ops;
    ert_decide_args da = decide_args(s, 1); /* the graph always keeps the logits: a run may ask */
    da.dev_params = s->dev_params;
    ert_status st = o->graph_begin(s->be, s->buckets, s->num_buckets);
    if (st) return st;
    memset(s->ev_marks, 0, sizeof s->ev_marks);
    st = enqueue_forward(s, &da, s->opt.max_batch, 1);
    if (st) {
        (void)o->graph_end(s->be, NULL);
        return st;
    }
    memcpy(s->graph_marks, s->ev_marks, sizeof s->graph_marks); /* every launch records these */
    return o->graph_end(s->be, &s->graph);
}

ert_status ert_session_run(ert_session *s, const ert_policy *policy, const ert_batch *b, ert_outputs *out) {
    if (!s) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_session_run: session is NULL");
    ert_status st = check_batch(s, policy, b, out);
    if (st) return st;
    const ert_model *m = s->model;
    const ert_backend_ops *o = s->ops;
    const int n = b->n, S = m->num_stages;
    ert_decide_args da = decide_args(s, out->logits != NULL);
    if ((st = ert_policy_exit_params(policy, m, &da.params))) return st;
    if (s->opt.mode == ERT_MODE_FULL) da.params.kind = ERT_POLICY_NONE;

    /* Stage the batch in host memory the device copies from. */
    memcpy(s->h_input, b->input, (size_t)n * (size_t)m->input_size * sizeof(float));
    for (int i = 0; i < n; ++i) {
        int target = m->num_exits - 1;
        if (b->schedule) target = b->schedule[i];
        else if (ert_policy_has_hazard(policy)) target = ert_policy_scheduled_exit(policy, b->first_index + i, m->num_exits);
        s->h_state[i] = (ert_sample_state){.label = b->labels ? b->labels[i] : -1, .target_exit = target,
                                           .last_pred = -1, .streak = 0, .done = 0};
    }
    *s->h_params = da.params;
    s->h_counts[0] = n;
    ert_profile *prof = &s->profile;
    memset(prof, 0, sizeof *prof);
    if (s->graph) memcpy(s->ev_marks, s->graph_marks, sizeof s->ev_marks); /* every stage is in the graph */
    else memset(s->ev_marks, 0, sizeof s->ev_marks);                          /* enqueue_forward marks them */
    prof->num_stages = S;
    prof->graph = s->graph != NULL;
    prof->host_start_us = host_clock_us();

    ert_nvtx_push(ERT_NVTX_BATCH, 0, n);
    int batch_open = 1; /* its range is closed on every path out */
    TRY(o->event_record(s->be, s->ev_begin));
    ert_nvtx_push(ERT_NVTX_UPLOAD, 0, n);
    st = o->upload(s->be, s->input, s->h_input, (size_t)n * (size_t)m->input_size * sizeof(float));
    if (!st) st = o->upload(s->be, s->idx[0], s->h_iota, (size_t)n * sizeof(int32_t));
    if (!st) st = o->upload(s->be, s->state[0], s->h_state, (size_t)n * sizeof(ert_sample_state));
    if (!st && s->graph) st = o->upload(s->be, s->dev_params, s->h_params, sizeof *s->h_params);
    if (!st && s->graph) st = o->upload(s->be, s->counts, s->h_counts, sizeof(int32_t));
    ert_nvtx_pop();
    if (st) goto fail;
    if (s->graph) {
        ert_nvtx_push(ERT_NVTX_GRAPH, 0, n); /* one range for the launch: its stages run on the device */
        st = o->graph_launch(s->be, s->graph);
        ert_nvtx_pop();
    } else {
        st = enqueue_forward(s, &da, n, 0);
    }
    if (st) goto fail;
    ert_nvtx_push(ERT_NVTX_DOWNLOAD, 0, n);
    /* every result copy queued, then one wait */
    st = o->download_async(s->be, s->h_pred, s->pred, (size_t)n * sizeof(int32_t));
    if (!st) st = o->download_async(s->be, s->h_exit, s->exit_at, (size_t)n * sizeof(int32_t));
    if (!st) st = o->download_async(s->be, s->h_conf, s->conf, (size_t)n * sizeof(float));
    const size_t logit_bytes = (size_t)n * (size_t)m->num_classes * sizeof(float);
    if (!st && out->logits) st = o->download_async(s->be, s->h_logits, s->logits_out, logit_bytes);
    if (!st && s->graph) st = o->download_async(s->be, s->h_counts, s->counts, sizeof(int32_t) * (size_t)(S + 1));
    if (!st) st = o->sync(s->be);
    ert_nvtx_pop();
    if (st) goto fail;
    TRY(o->event_record(s->be, s->ev_end));
    memcpy(out->pred, s->h_pred, (size_t)n * sizeof(int32_t));
    memcpy(out->exit_index, s->h_exit, (size_t)n * sizeof(int32_t));
    memcpy(out->confidence, s->h_conf, (size_t)n * sizeof(float));
    if (out->logits) memcpy(out->logits, s->h_logits, logit_bytes);
    if (s->graph)
        for (int k = 0; k < S; ++k) {
            const int rows = s->h_counts[s->stage_slot[k]];
            stage_cost(s, k, rows, ert_bucket_rows(s->buckets, s->num_buckets, rows), &prof->stage[k]);
        }
    ert_profile_padding_waste(prof);
    ert_nvtx_pop();
    batch_open = 0;
    TRY(collect_profile(s));
    return ERT_OK;
fail:
    if (batch_open) ert_nvtx_pop();
    quiet_sync(s);
    return ert_error_context(st, "run on '%s': ", s->device);
}

/* Stage bodies at host-known row counts (the ideal): one event per stage, and the end. */
static ert_status enqueue_rows(ert_session *s, const int *rows) {
    ert_status st;
    int cur = 0;
    TRY(s->ops->op_run(s->be, s->normalize, (ert_rows){rows[0], NULL}, s->input, s->pool[cur]));
    const int S = s->model->num_stages;
    for (int k = 0; k < S && rows[k] > 0; ++k) {
        TRY(record(s, k, EV_COMPUTE));
        TRY(run_seq(s, s->body[k].ops, s->body[k].count, cur, 0u, (ert_rows){rows[k], NULL}, NULL, &cur));
        if (k + 1 == S || rows[k + 1] == 0) TRY(record(s, k, EV_END)); /* else the next COMPUTE ends it */
    }
    return ERT_OK;
fail:
    return st;
}

ert_status ert_session_run_rows(ert_session *s, const int *rows) {
    if (!s || !rows) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_session_run_rows: NULL argument");
    const ert_model *m = s->model;
    const ert_backend_ops *o = s->ops;
    const int S = m->num_stages;
    for (int k = 0; k < S; ++k)
        if (rows[k] < 0 || rows[k] > s->opt.max_batch)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "rows[%d] = %d: expected 0..%d", k, rows[k], s->opt.max_batch);
    ert_status st;
    ert_profile *prof = &s->profile;
    memset(prof, 0, sizeof *prof);
    memset(s->ev_marks, 0, sizeof s->ev_marks); /* enqueue_rows marks them (or its cached graph's) */
    prof->num_stages = S;
    prof->graph = s->graph != NULL;
    prof->host_start_us = host_clock_us();
    for (int k = 0; k < S && rows[k] > 0; ++k) {
        prof->stage[k].rows = prof->stage[k].padded_rows = rows[k];
        prof->stage[k].flops = rows[k] * s->body[k].flops;
        prof->stage[k].bytes = (double)s->elem * (s->body[k].weight_elems + rows[k] * s->body[k].act_elems);
    }
    /* A graph session judges its forward against an ideal that also pays one launch. */
    if (s->graph && (!s->ideal || memcmp(s->ideal_rows, rows, sizeof(int) * (size_t)S) != 0)) {
        if (s->ideal) o->graph_free(s->be, s->ideal);
        s->ideal = NULL;
        TRY(o->graph_begin(s->be, NULL, 0));
        if ((st = enqueue_rows(s, rows))) {
            (void)o->graph_end(s->be, NULL);
            goto fail;
        }
        TRY(o->graph_end(s->be, &s->ideal));
        memcpy(s->ideal_rows, rows, sizeof(int) * (size_t)S);
        memcpy(s->ideal_marks, s->ev_marks, sizeof s->ideal_marks);
    }
    if (s->graph) memcpy(s->ev_marks, s->ideal_marks, sizeof s->ev_marks); /* what its launch records */
    TRY(o->event_record(s->be, s->ev_begin));
    /* The input buffer still holds the last run's batch: real data, not zeros. */
    TRY(s->graph ? o->graph_launch(s->be, s->ideal) : enqueue_rows(s, rows));
    TRY(o->event_record(s->be, s->ev_end));
    TRY(o->sync(s->be));
    TRY(collect_profile(s));
    return ERT_OK;
fail:
    quiet_sync(s);
    return ert_error_context(st, "run_rows on '%s': ", s->device);
}

ert_status ert_session_profile(const ert_session *s, ert_profile *out) {
    if (!s || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_session_profile: NULL argument");
    *out = s->profile;
    return ERT_OK;
}
