/* Graph mode through the backend seam, on the CPU backend's recording (kernels/cpu:
 * replayed with the CUDA graph's semantics, row buckets and padding included): every
 * policy and mode gives exactly the eager answers, one captured graph serves every batch
 * size and policy, empty tails cost nothing, the profile reads survivors, padded rows,
 * padding waste and 0 host syncs; in-place fill compaction gives the answers of gather;
 * row buckets parse as documented; bad options are refused by message. The same comparisons on a GPU are in test_cuda_session. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "backend_testutil.h"
#include "exitrt/exitrt.h"
#include "testutil.h"

enum { N = 203, MAXB = 64, IN = 24 };

static ert_model *model;
static float x[N * IN];
static int32_t labels[N];

static void setup(void) { model = tu_tiny_model(23, x, labels, N); }

static void teardown(void) { ert_model_free(model); }

typedef struct outs {
    int32_t pred[N], exit[N];
    float conf[N];
    float logits[N * 5];
    ert_profile prof[N];
    int batches;
} outs;

static ert_session *open_session_with(ert_exec exec, ert_mode mode, const char *buckets, ert_compaction c) {
    ert_session_options opt = ert_session_options_default();
    opt.max_batch = MAXB;
    opt.mode = mode;
    opt.exec = exec;
    opt.buckets = buckets;
    opt.compaction = c;
    ert_session *s = NULL;
    ck_assert_msg(ert_session_new(model, &opt, &s) == ERT_OK, "%s", ert_last_error());
    return s;
}

static ert_session *open_session(ert_exec exec, ert_mode mode, const char *buckets) {
    return open_session_with(exec, mode, buckets, ERT_COMPACTION_GATHER);
}

/* All N samples in batches of `batch` through session s with policy `spec`. */
static void run_all(ert_session *s, const char *spec, int batch, outs *o) {
    ert_policy *p = NULL;
    ck_assert_msg(ert_policy_parse(spec, &p) == ERT_OK, "%s", ert_last_error());
    memset(o, 0, sizeof *o);
    for (int i = 0; i < N; ++i) o->pred[i] = o->exit[i] = -7; /* poison */
    for (int first = 0; first < N; first += batch) {
        const int n = N - first < batch ? N - first : batch;
        ert_batch bt = {.input = x + first * IN, .n = n, .labels = labels + first, .first_index = first};
        ert_outputs out = {o->pred + first, o->exit + first, o->conf + first, o->logits + first * 5};
        ck_assert_msg(ert_session_run(s, p, &bt, &out) == ERT_OK, "%s: %s", spec, ert_last_error());
        ck_assert_int_eq(ert_session_profile(s, &o->prof[o->batches++]), ERT_OK);
    }
    ert_policy_free(p);
}

static const char *specs[] = {"none",    "confidence:0.5", "confidence:0.3,0.45;temp=2,1,1", "entropy:0.8",
                              "margin:0.2", "patience:2",  "fixed:0",  "fixed:1", "oracle",
                              "scheduled:hazard=0.3,seed=5"};

static void assert_same_answers(const outs *a, const outs *b, const char *what) {
    ck_assert_msg(memcmp(a->pred, b->pred, sizeof a->pred) == 0, "%s: predictions differ", what);
    ck_assert_msg(memcmp(a->exit, b->exit, sizeof a->exit) == 0, "%s: exits differ", what);
    ck_assert_msg(memcmp(a->conf, b->conf, sizeof a->conf) == 0, "%s: confidences differ", what);
    ck_assert_msg(memcmp(a->logits, b->logits, sizeof a->logits) == 0, "%s: logits differ", what);
}

static void assert_same(const outs *a, const outs *b, const char *what) {
    assert_same_answers(a, b, what);
    ck_assert_int_eq(a->batches, b->batches);
    for (int i = 0; i < a->batches; ++i)
        for (int k = 0; k < a->prof[i].num_stages; ++k)
            ck_assert_msg(a->prof[i].stage[k].rows == b->prof[i].stage[k].rows, "%s: batch %d stage %d rows %d vs %d",
                          what, i, k, a->prof[i].stage[k].rows, b->prof[i].stage[k].rows);
}

/* One graph per session serves every policy and batch size (the policy travels with the
 * batch), with the default buckets and with coarse ones that pad a lot. */
START_TEST(graph_matches_eager_for_every_policy_and_mode) {
    static const ert_mode modes[] = {ERT_MODE_COMPACT, ERT_MODE_MASKED, ERT_MODE_FULL};
    static const char *buckets[] = {NULL, "3,40"};
    static const int batches[] = {MAXB, 37, 1};
    for (int m = 0; m < 3; ++m)
        for (int bk = 0; bk < 2; ++bk) {
            ert_session *e = open_session(ERT_EXEC_EAGER, modes[m], NULL);
            ert_session *g = open_session(ERT_EXEC_GRAPH, modes[m], buckets[bk]);
            ck_assert_int_eq(ert_session_get_options(g).exec, ERT_EXEC_GRAPH);
            ck_assert_str_eq(ert_session_exec_note(g), "");
            for (size_t k = 0; k < sizeof specs / sizeof *specs; ++k)
                for (int b = 0; b < 3; ++b) {
                    static outs a, c;
                    char what[160];
                    snprintf(what, sizeof what, "mode %d, buckets %s, %s, batch %d", m,
                             buckets[bk] ? buckets[bk] : "default", specs[k], batches[b]);
                    run_all(e, specs[k], batches[b], &a);
                    run_all(g, specs[k], batches[b], &c);
                    assert_same(&a, &c, what);
                    ck_assert_int_eq(c.prof[0].graph, 1);
                    ck_assert_int_eq(c.prof[0].host_syncs, 0);
                    ck_assert_int_eq(a.prof[0].graph, 0);
                }
            ert_session_free(e);
            ert_session_free(g);
        }
}
END_TEST

/* The CPU backend's answers do not depend on the batch a sample runs in (its GEMMs run on
 * fixed blocks of rows: cpu.h), for every policy and mode: so one CPU reference serves the
 * GPU comparisons at every batch size (test_cuda_session). */
START_TEST(cpu_answers_do_not_depend_on_the_batch) {
    static const ert_mode modes[] = {ERT_MODE_COMPACT, ERT_MODE_MASKED, ERT_MODE_FULL};
    static const int batches[] = {37, 1, 5};
    for (int m = 0; m < 3; ++m) {
        ert_session *e = open_session(ERT_EXEC_EAGER, modes[m], NULL);
        for (size_t k = 0; k < sizeof specs / sizeof *specs; ++k) {
            static outs a, c;
            run_all(e, specs[k], MAXB, &a);
            for (int b = 0; b < 3; ++b) {
                char what[160];
                snprintf(what, sizeof what, "mode %d, %s, batch %d vs %d", m, specs[k], batches[b], MAXB);
                run_all(e, specs[k], batches[b], &c);
                assert_same_answers(&a, &c, what);
            }
        }
        ert_session_free(e);
    }
}
END_TEST

/* In-place fill compaction reorders the survivors but changes no answer: against gather
 * (eager), in eager and graph execution, every policy, several batch sizes. */
START_TEST(fill_matches_gather_for_every_policy) {
    static const int batches[] = {MAXB, 37, 1};
    ert_session *ref = open_session(ERT_EXEC_EAGER, ERT_MODE_COMPACT, NULL);
    ert_session *fe = open_session_with(ERT_EXEC_EAGER, ERT_MODE_COMPACT, NULL, ERT_COMPACTION_FILL);
    ert_session *fg = open_session_with(ERT_EXEC_GRAPH, ERT_MODE_COMPACT, "3,40", ERT_COMPACTION_FILL);
    ck_assert_int_eq(ert_session_get_options(fg).compaction, ERT_COMPACTION_FILL);
    /* auto, the default, is fill on the cpu and says so */
    ert_session *fa = open_session_with(ERT_EXEC_EAGER, ERT_MODE_COMPACT, NULL, ERT_COMPACTION_AUTO);
    ck_assert_int_eq(ert_session_options_default().compaction, ERT_COMPACTION_AUTO);
    ck_assert_int_eq(ert_session_get_options(fa).compaction, ERT_COMPACTION_FILL);
    ck_assert_int_eq(ert_session_get_options(ref).compaction, ERT_COMPACTION_GATHER);
    ert_session_free(fa);
    int moved = 0;
    for (size_t k = 0; k < sizeof specs / sizeof *specs; ++k)
        for (int b = 0; b < 3; ++b) {
            static outs a, c, d;
            char what[160];
            snprintf(what, sizeof what, "fill, %s, batch %d", specs[k], batches[b]);
            run_all(ref, specs[k], batches[b], &a);
            run_all(fe, specs[k], batches[b], &c);
            run_all(fg, specs[k], batches[b], &d);
            assert_same(&a, &c, what);
            assert_same(&a, &d, what);
            /* a sample that left at exit 0 below a later survivor: fill moved a row */
            for (int i = 0; i + 1 < N && !moved; ++i) moved = a.exit[i] == 0 && a.exit[i + 1] > 0;
        }
    ck_assert_msg(moved, "no policy made fill move a row: the comparison proves nothing");
    ert_session_free(ref);
    ert_session_free(fe);
    ert_session_free(fg);
}
END_TEST

/* Stage times come from events recorded only where work was enqueued (3 per exit stage
 * in a graph, instead of 5): the intervals still tile the forward, each stage ending
 * where the next starts, and an interval with nothing in it is exactly 0 (one event
 * read twice), in every mode and execution, the ideal included. */
START_TEST(stage_times_tile_the_forward) {
    static const ert_mode modes[] = {ERT_MODE_COMPACT, ERT_MODE_MASKED, ERT_MODE_FULL};
    for (int m = 0; m < 3; ++m)
        for (int g = 0; g < 2; ++g) {
            ert_session *s = open_session(g ? ERT_EXEC_GRAPH : ERT_EXEC_EAGER, modes[m], NULL);
            static outs a;
            run_all(s, "confidence:0.5", MAXB, &a);
            ert_profile p[2];
            p[0] = a.prof[0];
            int rows[ERT_MAX_STAGES] = {0};
            for (int k = 0; k < p[0].num_stages; ++k) rows[k] = p[0].stage[k].rows;
            ck_assert_msg(ert_session_run_rows(s, rows) == ERT_OK, "%s", ert_last_error());
            ck_assert_int_eq(ert_session_profile(s, &p[1]), ERT_OK);
            for (int v = 0; v < 2; ++v) { /* the forward, then the ideal */
                const ert_profile *q = &p[v];
                char what[96];
                snprintf(what, sizeof what, "mode %d, %s, %s", m, g ? "graph" : "eager", v ? "ideal" : "forward");
                int timed = 0;
                for (int k = 0; k < q->num_stages; ++k) {
                    const ert_stage_profile *st = &q->stage[k];
                    if (st->rows <= 0 && !(g && !v)) continue; /* a graph forward times every stage */
                    ++timed;
                    const double end = st->start_ms + st->compute_ms + st->decide_ms + st->compact_ms + st->sync_ms;
                    ck_assert_msg(st->compute_ms > 0.0, "%s stage %d: compute %g", what, k, st->compute_ms);
                    /* nothing ran there: the same event, exactly 0 */
                    const int decided = !v && (modes[m] != ERT_MODE_FULL || k == q->num_stages - 1);
                    const int compacted = decided && modes[m] == ERT_MODE_COMPACT && k < q->num_stages - 1;
                    /* (after an eager compaction the host reads the count back: host time, which the
                     * cpu reports as 0 sync, so the tiling holds everywhere else) */
                    if (k + 1 < q->num_stages && (q->stage[k + 1].rows > 0 || (g && !v)) && (g || !compacted))
                        ck_assert_msg(fabs(end - q->stage[k + 1].start_ms) <= 1e-9 * (1.0 + end),
                                      "%s: stage %d ends at %.9f, stage %d starts at %.9f", what, k, end, k + 1,
                                      q->stage[k + 1].start_ms);
                    if (!decided) ck_assert_msg(st->decide_ms == 0.0, "%s stage %d: decide %g", what, k, st->decide_ms);
                    if (!compacted)
                        ck_assert_msg(st->compact_ms == 0.0, "%s stage %d: compact %g", what, k, st->compact_ms);
                    if (g || !compacted) ck_assert_msg(st->sync_ms == 0.0, "%s stage %d: sync %g", what, k, st->sync_ms);
                }
                ck_assert_int_gt(timed, 0);
            }
            ert_session_free(s);
        }
}
END_TEST

/* Both compactions on the CPU backend against the host references of backend.h's
 * contract (the same check runs on the GPU in test_cuda_ops). */
START_TEST(cpu_compaction_matches_reference) {
    const ert_backend_ops *o = ert_backend_cpu();
    ert_backend *be = make(o, ERT_DTYPE_F32, COMPACT_MAX_ROWS);
    const char *gl = "cpu gather", *fl = "cpu fill";
    check_compaction(&o, &be, &gl, 1, ERT_DTYPE_F32, ERT_COMPACT_GATHER, 11);
    check_compaction(&o, &be, &fl, 1, ERT_DTYPE_F32, ERT_COMPACT_FILL, 12);
    /* some buffers in place, some not: refused by message */
    int32_t idx[2] = {0, 1}, idx2[2], count = -1;
    float xs[2] = {1, 2}, ys[2];
    ert_sample_state st[2] = {{0}};
    const uint8_t keep[2] = {1, 0};
    const ert_compact_args a = {.rows = {2, NULL}, .width = 1, .x = xs, .y = ys, .idx_in = idx, .idx_out = idx2,
                                .state_in = st, .state_out = st, .keep = keep, .count = &count};
    ck_assert_int_eq(o->compact(be, &a), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("compaction with some buffers in place, some not"));
    ck_assert_int_eq(count, -1);
    check_backend_refusals(o, be, COMPACT_MAX_ROWS);
    o->destroy(be);
}
END_TEST

/* The CUDA fill kernel's hole search (ert_fill_destination, shared through backend.h),
 * run here on the host: for random flags of every density, each kept row at or past the
 * survivor count lands in the hole the CPU backend's pairing gives it. */
START_TEST(fill_destination_pairs_like_the_cpu) {
    enum { R = 300 };
    uint8_t keep[R];
    int32_t offsets[R];
    uint64_t seed = 7;
    for (int trial = 0; trial < 400; ++trial) {
        const int rows = 1 + trial % R, density = trial % 11; /* 0/10 .. 10/10 kept */
        int kept = 0;
        for (int r = 0; r < rows; ++r) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            keep[r] = (uint8_t)((int)((seed >> 33) % 10) < density);
            offsets[r] = kept;
            kept += keep[r];
        }
        if (kept == rows) continue; /* no holes: the kernel returns before searching */
        int hole = 0;
        for (int r = kept; r < rows; ++r) {
            if (!keep[r]) continue;
            while (keep[hole]) ++hole;
            const int d = ert_fill_destination(offsets, kept, offsets[r] - offsets[kept]);
            ck_assert_msg(d == hole, "rows %d, kept %d: row %d goes to %d, expected %d", rows, kept, r, d, hole);
            ck_assert(d < kept && !keep[d]);
            ++hole;
        }
    }
}
END_TEST

/* Buckets 3,40 with max_batch 64: a stage with n rows computes 3 (n <= 3), 40 (n <= 40)
 * or 64 rows, and none when no sample is left. */
START_TEST(profile_reports_padded_rows_and_waste) {
    ert_session *g = open_session(ERT_EXEC_GRAPH, ERT_MODE_COMPACT, "3,40");
    static outs o;
    run_all(g, "confidence:0.45", MAXB, &o);
    int padded_seen = 0;
    for (int i = 0; i < o.batches; ++i) {
        const ert_profile *p = &o.prof[i];
        double pad = 0, real = 0;
        for (int k = 0; k < p->num_stages; ++k) {
            const ert_stage_profile *s = &p->stage[k];
            const int want = s->rows == 0 ? 0 : s->rows <= 3 ? 3 : s->rows <= 40 ? 40 : 64;
            ck_assert_msg(s->padded_rows == want, "batch %d stage %d: %d rows padded to %d, want %d", i, k, s->rows,
                          s->padded_rows, want);
            padded_seen += s->padded_rows > s->rows;
            if (s->rows) {
                real += s->flops;
                pad += s->flops / s->rows * (s->padded_rows - s->rows);
            }
        }
        ck_assert_double_eq_tol(p->padding_waste, real > 0 ? pad / real : 0.0, 1e-12);
        ck_assert_int_eq(p->host_syncs, 0);
    }
    ck_assert_int_gt(padded_seen, 0); /* the test exercised padding */
    ert_session_free(g);

    ert_session *e = open_session(ERT_EXEC_EAGER, ERT_MODE_COMPACT, NULL);
    run_all(e, "confidence:0.45", MAXB, &o);
    for (int k = 0; k < o.prof[0].num_stages; ++k)
        ck_assert_int_eq(o.prof[0].stage[k].padded_rows, o.prof[0].stage[k].rows);
    ck_assert_double_eq(o.prof[0].padding_waste, 0.0);
    ert_session_free(e);
}
END_TEST

/* fixed:0 sends every sample out at exit 0: the later stages see 0 rows and compute
 * nothing (no padded rows), and the results still match eager. */
START_TEST(empty_tail_costs_no_rows) {
    ert_session *g = open_session(ERT_EXEC_GRAPH, ERT_MODE_COMPACT, NULL);
    static outs o;
    run_all(g, "fixed:0", MAXB, &o);
    for (int i = 0; i < o.batches; ++i)
        for (int k = 1; k < o.prof[i].num_stages; ++k) {
            ck_assert_int_eq(o.prof[i].stage[k].rows, 0);
            ck_assert_int_eq(o.prof[i].stage[k].padded_rows, 0);
            ck_assert_double_eq(o.prof[i].stage[k].flops, 0.0);
        }
    for (int i = 0; i < N; ++i) ck_assert_int_eq(o.exit[i], 0);
    ert_session_free(g);
}
END_TEST

/* Without stage events the graph still answers the same; only the batch is timed. */
START_TEST(stage_events_off_keeps_answers) {
    ert_session_options opt = ert_session_options_default();
    opt.max_batch = MAXB;
    opt.exec = ERT_EXEC_GRAPH;
    opt.stage_events = 0;
    ert_session *g = NULL, *e = open_session(ERT_EXEC_EAGER, ERT_MODE_COMPACT, NULL);
    ck_assert_int_eq(ert_session_new(model, &opt, &g), ERT_OK);
    static outs a, b;
    run_all(e, "patience:2", 50, &a);
    run_all(g, "patience:2", 50, &b);
    assert_same(&a, &b, "stage events off");
    ck_assert(b.prof[0].batch_ms > 0.0);
    for (int k = 0; k < b.prof[0].num_stages; ++k) ck_assert_double_eq(b.prof[0].stage[k].compute_ms, 0.0);
    ert_session_free(g);
    ert_session_free(e);
}
END_TEST

/* The ideal (run_rows) in a graph session: a plain graph, recaptured when the rows change. */
START_TEST(run_rows_in_a_graph_session) {
    ert_session *g = open_session(ERT_EXEC_GRAPH, ERT_MODE_COMPACT, NULL);
    static outs o;
    run_all(g, "none", MAXB, &o); /* fills the input buffer */
    int r1[ERT_MAX_STAGES] = {64, 30, 0}, r2[ERT_MAX_STAGES] = {0};
    for (int k = 0; k < ert_model_num_stages(model); ++k) r2[k] = 20;
    ert_profile p;
    for (int rep = 0; rep < 4; ++rep) {
        const int *r = rep / 2 ? r2 : r1; /* each rows twice: captured, then replayed */
        ck_assert_msg(ert_session_run_rows(g, r) == ERT_OK, "%s", ert_last_error());
        ck_assert_int_eq(ert_session_profile(g, &p), ERT_OK);
        ck_assert_int_eq(p.graph, 1);
        for (int k = 0; k < ert_model_num_stages(model); ++k) {
            ck_assert_int_eq(p.stage[k].rows, r[k]);
            ck_assert_int_eq(p.stage[k].padded_rows, r[k]);
            if (r[k]) ck_assert_msg(p.stage[k].compute_ms > 0.0, "rep %d stage %d: not timed", rep, k);
        }
    }
    ert_session_free(g);
}
END_TEST

START_TEST(auto_runs_the_graph_where_it_can) {
    ert_session *s = open_session(ERT_EXEC_AUTO, ERT_MODE_COMPACT, NULL);
    ck_assert_int_eq(ert_session_get_options(s).exec, ERT_EXEC_GRAPH); /* the cpu records */
    ck_assert_str_eq(ert_session_exec_note(s), "");
    ert_session_free(s);
}
END_TEST

/* The calls the CPU recording of the forward graph holds: the first fault injection
 * past them lets the capture through. */
static int recorded_calls(ert_mode mode, int stage_events) {
    ert_session_options opt = ert_session_options_default();
    opt.max_batch = MAXB;
    opt.exec = ERT_EXEC_GRAPH;
    opt.mode = mode;
    opt.stage_events = stage_events;
    for (int n = 1; n < 1000; ++n) {
        char v[16];
        snprintf(v, sizeof v, "%d", n);
        ck_assert_int_eq(setenv("ERT_CPU_GRAPH_FAIL_AT", v, 1), 0);
        ert_session *s = NULL;
        if (ert_session_new(model, &opt, &s) == ERT_OK) {
            ert_session_free(s);
            ck_assert_int_eq(unsetenv("ERT_CPU_GRAPH_FAIL_AT"), 0);
            return n - 1;
        }
    }
    ck_abort_msg("the capture never got through");
    return -1;
}

/* The event nodes a graph holds: a COMPUTE per stage, a DECIDE per decision, a COMPACT
 * per compaction, one END; none between points where nothing runs. Counted as the calls
 * the CPU recording holds with stage events on, minus those with them off. */
START_TEST(graph_events_only_where_work_runs) {
    const int S = ert_model_num_stages(model), E = ert_model_num_exits(model);
    ck_assert_int_eq(ert_model_exit_stage(model, E - 1), S - 1); /* the last exit ends the model */
    const int compact = recorded_calls(ERT_MODE_COMPACT, 1) - recorded_calls(ERT_MODE_COMPACT, 0);
    const int masked = recorded_calls(ERT_MODE_MASKED, 1) - recorded_calls(ERT_MODE_MASKED, 0);
    const int full = recorded_calls(ERT_MODE_FULL, 1) - recorded_calls(ERT_MODE_FULL, 0);
    printf("graph event nodes (%d stages, %d exits): compact %d, masked %d, full %d\n", S, E, compact, masked, full);
    ck_assert_int_eq(compact, S + E + (E - 1) + 1);
    ck_assert_int_eq(masked, S + E + 1);
    ck_assert_int_eq(full, S + 1 + 1);
}
END_TEST

/* A capture that fails (here the CPU recording's fault injection, at its 1st, 5th and
 * last call): exec graph fails the session with the failing call's message; exec auto
 * runs eager, says why, and gives the eager answers. */
START_TEST(a_failed_capture_fails_graph_and_falls_back_under_auto) {
    char at[3][16] = {"1", "5", ""};
    snprintf(at[2], sizeof at[2], "%d", recorded_calls(ERT_MODE_COMPACT, 1));
    ert_session *e = open_session(ERT_EXEC_EAGER, ERT_MODE_COMPACT, NULL);
    static outs a, c;
    run_all(e, "confidence:0.5", 37, &a);
    for (int i = 0; i < 3; ++i) {
        ck_assert_int_eq(setenv("ERT_CPU_GRAPH_FAIL_AT", at[i], 1), 0);
        ert_session_options opt = ert_session_options_default();
        opt.max_batch = MAXB;
        opt.exec = ERT_EXEC_GRAPH;
        ert_session *s = NULL;
        ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_ERR_BACKEND);
        ck_assert_ptr_null(s);
        char want[192];
        snprintf(want, sizeof want, "exec graph: capturing the forward pass: cpu backend: recorded call %s refused",
                 at[i]);
        ck_assert_msg(tu_error_has(want), "%s", ert_last_error());

        opt.exec = ERT_EXEC_AUTO;
        ck_assert_msg(ert_session_new(model, &opt, &s) == ERT_OK, "%s", ert_last_error());
        ck_assert_int_eq(ert_session_get_options(s).exec, ERT_EXEC_EAGER);
        snprintf(want, sizeof want, "graph mode unavailable, running eager: exec graph: capturing the forward pass: "
                 "cpu backend: recorded call %s refused", at[i]);
        ck_assert_msg(strstr(ert_session_exec_note(s), want) != NULL, "%s", ert_session_exec_note(s));
        ck_assert_str_eq(ert_last_error(), ""); /* the fallback is not an error */
        run_all(s, "confidence:0.5", 37, &c);
        assert_same(&a, &c, "auto after a failed capture");
        ck_assert_int_eq(c.prof[0].graph, 0);
        ert_session_free(s);
    }
    ck_assert_int_eq(unsetenv("ERT_CPU_GRAPH_FAIL_AT"), 0);
    ert_session_free(e);
}
END_TEST

START_TEST(bad_exec_options_are_refused) {
    ert_session_options opt = ert_session_options_default();
    opt.max_batch = MAXB;
    opt.exec = ERT_EXEC_GRAPH;
    opt.buckets = "8,4";
    ert_session *s = NULL;
    ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("4 does not increase on 8"));
    ck_assert_ptr_null(s);
    opt.buckets = "100";
    ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("100 is outside 1..64 (max_batch)"));
    opt.buckets = NULL;
    opt.exec = (ert_exec)7;
    ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("exec 7: unknown"));
    /* names and values round-trip */
    static const char *exec_names[] = {"eager", "graph", "auto"}, *compaction_names[] = {"auto", "gather", "fill"};
    for (int i = 0; i < 3; ++i) {
        ert_exec e = (ert_exec)-1;
        ck_assert_int_eq(ert_exec_parse(exec_names[i], &e), ERT_OK);
        ck_assert_int_eq(e, i);
        ck_assert_str_eq(ert_exec_name(e), exec_names[i]);
    }
    for (int i = 0; i < 3; ++i) {
        ert_compaction c = (ert_compaction)-1;
        ck_assert_int_eq(ert_compaction_parse(compaction_names[i], &c), ERT_OK);
        ck_assert_int_eq(c, i);
        ck_assert_str_eq(ert_compaction_name(c), compaction_names[i]);
    }
    ert_exec e;
    ck_assert_int_eq(ert_exec_parse("fast", &e), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("exec 'fast': expected eager, graph or auto"));
    ert_compaction c;
    ck_assert_int_eq(ert_compaction_parse("sort", &c), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("compaction 'sort': expected auto, gather or fill"));
    opt.exec = ERT_EXEC_EAGER;
    opt.compaction = (ert_compaction)5;
    ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("compaction 5: unknown"));
    ck_assert_ptr_null(s);
}
END_TEST

/* Convolutions take the bucketed path too (cuDNN's SWITCH nodes on a GPU). */
START_TEST(cnn_graph_matches_eager) {
    ert_model *cnn = NULL;
    ck_assert_int_eq(ert_model_load(tu_path("test/fixtures/tiny-cnn"), &cnn), ERT_OK);
    const int in = ert_model_input_size(cnn), n = 45, classes = ert_model_num_classes(cnn);
    float *xs = malloc(sizeof(float) * (size_t)(n * in));
    ck_assert_ptr_nonnull(xs);
    for (int i = 0; i < n * in; ++i) xs[i] = (float)((i * 37) % 101) / 100.0f;
    int32_t pred[2][45], ex[2][45];
    float conf[2][45];
    float *lg = malloc(sizeof(float) * 2 * (size_t)(n * classes));
    ck_assert_ptr_nonnull(lg);
    static const char *pol[] = {"confidence:0.4", "none", "oracle"};
    int32_t lab[45];
    for (int i = 0; i < n; ++i) lab[i] = i % classes;
    for (int p = 0; p < 3; ++p) {
        ert_policy *policy = NULL;
        ck_assert_int_eq(ert_policy_parse(pol[p], &policy), ERT_OK);
        for (int g = 0; g < 2; ++g) {
            ert_session_options opt = ert_session_options_default();
            opt.max_batch = 64;
            opt.exec = g ? ERT_EXEC_GRAPH : ERT_EXEC_EAGER;
            opt.buckets = "3,40";
            ert_session *s = NULL;
            ck_assert_msg(ert_session_new(cnn, &opt, &s) == ERT_OK, "%s", ert_last_error());
            ert_batch bt = {.input = xs, .n = n, .labels = lab};
            ert_outputs out = {pred[g], ex[g], conf[g], lg + (size_t)g * (size_t)(n * classes)};
            ck_assert_msg(ert_session_run(s, policy, &bt, &out) == ERT_OK, "%s", ert_last_error());
            ert_session_free(s);
        }
        ck_assert_msg(memcmp(pred[0], pred[1], sizeof pred[0]) == 0, "%s: predictions differ", pol[p]);
        ck_assert_msg(memcmp(ex[0], ex[1], sizeof ex[0]) == 0, "%s: exits differ", pol[p]);
        ck_assert_msg(memcmp(conf[0], conf[1], sizeof conf[0]) == 0, "%s: confidences differ", pol[p]);
        ck_assert_msg(memcmp(lg, lg + n * classes, sizeof(float) * (size_t)(n * classes)) == 0, "%s: logits differ",
                      pol[p]);
        ert_policy_free(policy);
    }
    free(lg);
    free(xs);
    ert_model_free(cnn);
}
END_TEST

/* ---------------------------------------------------------------- buckets */

/* One op captured into a graph and launched for many device counts, against the eager op
 * (the check GPU tests run on cuBLASLt and cuDNN): here the CPU recording, for a linear
 * and a conv2d op with bias and relu. */
START_TEST(one_op_graph_matches_eager) {
    enum { ROWS = 300 };
    static const int counts[] = {0, 1, 3, 17, 64, 100, 129, 257, ROWS, 0, ROWS + 9};
    const ert_backend_ops *o = ert_backend_cpu();
    ert_backend *be = make(o, ERT_DTYPE_F32, ROWS);
    rng_seed(5);
    float w[48 * 20], b[20];
    fill_uniform(w, 48 * 20, -0.3f, 0.3f);
    fill_uniform(b, 20, -0.5f, 0.5f);
    const ert_conv_geom g = {.in_c = 3, .in_h = 4, .in_w = 4, .out_c = 5, .out_h = 2, .out_w = 2, .kh = 3, .kw = 3,
                             .sh = 2, .sw = 2, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1};
    const ert_op_desc descs[2] = {
        {.type = ERT_OP_LINEAR, .name = "linear", .in = 48, .out = 20, .act = ERT_ACT_RELU, .weight = w, .bias = b,
         .max_rows = ROWS},
        {.type = ERT_OP_CONV2D, .name = "conv", .in = 48, .out = 20, .act = ERT_ACT_RELU, .weight = w, .bias = b,
         .conv = g, .max_rows = ROWS}};
    float *hx = malloc(sizeof(float) * ROWS * 48);
    fill_uniform(hx, (size_t)ROWS * 48, -1.0f, 1.0f);
    void *dx = balloc(o, be, sizeof(float) * ROWS * 48);
    bup(o, be, dx, hx, sizeof(float) * ROWS * 48);
    for (int k = 0; k < 2; ++k) {
        ert_op *op = NULL;
        ck_assert_msg(o->op_new(be, &descs[k], &op) == ERT_OK, "%s", ert_last_error());
        check_graph_vs_eager(o, be, op, dx, 20 * sizeof(float), ROWS, counts, (int)(sizeof counts / sizeof *counts),
                             descs[k].name);
        o->op_free(be, op);
    }
    o->release(be, dx);
    free(hx);
    o->destroy(be);
}
END_TEST

START_TEST(default_buckets_by_hand) {
    int b[ERT_MAX_BUCKETS], n;
    ck_assert_int_eq(ert_buckets_parse(NULL, 256, b, &n), ERT_OK);
    /* 128 * 2^(1/8) = 139.6 -> 192; every later step rounds to 192 or reaches 256. */
    static const int want[] = {1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128, 192, 256};
    ck_assert_int_eq(n, (int)(sizeof want / sizeof *want));
    for (int i = 0; i < n; ++i) ck_assert_int_eq(b[i], want[i]);
    ck_assert_int_eq(ert_buckets_parse("default", 5, b, &n), ERT_OK);
    ck_assert_int_eq(n, 4); /* 1, 2, 4, 5 */
    ck_assert_int_eq(b[3], 5);
    ck_assert_int_eq(ert_buckets_parse("", 1, b, &n), ERT_OK);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(b[0], 1);
    ck_assert_int_eq(ert_buckets_parse("1,3,5", 5, b, &n), ERT_OK);
    ck_assert_int_eq(n, 3);
    ck_assert(b[0] == 1 && b[1] == 3 && b[2] == 5);
    ck_assert_int_eq(ert_buckets_parse("0,5", 5, b, &n), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("0 is outside 1..5"));
    ck_assert_int_eq(ert_buckets_parse("2,6", 5, b, &n), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("6 is outside 1..5"));
}
END_TEST

/* The promise of the default: above 128 rows a bucket wastes at most ~9% (2^(1/8) - 1)
 * plus the rounding to 64 rows while eighth-octave steps fit in ERT_MAX_BUCKETS (max_batch
 * <= 8192), ~19% with quarter-octave steps above; it always ends at max_batch. */
START_TEST(default_buckets_bound_the_padding) {
    static const int maxes[] = {8192, 1000, 65536, 1 << 24};
    for (int m = 0; m < 4; ++m) {
        int b[ERT_MAX_BUCKETS], n;
        ck_assert_int_eq(ert_buckets_parse(NULL, maxes[m], b, &n), ERT_OK);
        ck_assert_int_le(n, ERT_MAX_BUCKETS);
        ck_assert_int_eq(b[n - 1], maxes[m]);
        for (int i = 1; i < n; ++i) ck_assert_int_gt(b[i], b[i - 1]);
        /* every power of two below max_batch is a bucket (graph and eager GEMMs then pick
         * the same algorithm, kernels/cuda/linear.cu) */
        for (int p2 = 1, i = 0; p2 < maxes[m]; p2 *= 2) {
            while (b[i] < p2) ++i;
            ck_assert_msg(b[i] == p2, "max %d: %d is not a bucket", maxes[m], p2);
        }
        if (maxes[m] > 65536) continue;
        /* Eighth-octave steps fit up to 8192 rows; 65536 needs quarter-octave steps. */
        const double step = pow(2.0, maxes[m] <= 8192 ? 1.0 / 8 : 1.0 / 4);
        for (int c = 129, i = 0; c <= maxes[m]; ++c) {
            while (b[i] < c) ++i;
            ck_assert_msg(b[i] <= ceil(c * step / 64.0) * 64.0 || b[i] == maxes[m], "max %d: %d rows padded to %d",
                          maxes[m], c, b[i]);
        }
    }
}
END_TEST

START_TEST(bucket_lists_parse_and_refuse_by_message) {
    int b[ERT_MAX_BUCKETS], n;
    ck_assert_int_eq(ert_buckets_parse("64,256", 1024, b, &n), ERT_OK);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(b[0], 64);
    ck_assert_int_eq(b[1], 256);
    ck_assert_int_eq(b[2], 1024); /* max_batch added */
    ck_assert_int_eq(ert_buckets_parse("64,1024", 1024, b, &n), ERT_OK);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(ert_buckets_parse("64,,128", 1024, b, &n), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("expected increasing row counts like 64,256,1024"));
    ck_assert_int_eq(ert_buckets_parse("0,8", 1024, b, &n), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("0 is outside 1..1024"));
    ck_assert_int_eq(ert_buckets_parse("abc", 1024, b, &n), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(ert_buckets_parse("16,16", 1024, b, &n), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("16 does not increase on 16"));
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("exec");
    TCase *t = tcase_create("graph");
    tcase_add_checked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, graph_matches_eager_for_every_policy_and_mode);
    tcase_add_test(t, profile_reports_padded_rows_and_waste);
    tcase_add_test(t, empty_tail_costs_no_rows);
    tcase_add_test(t, stage_events_off_keeps_answers);
    tcase_add_test(t, run_rows_in_a_graph_session);
    tcase_add_test(t, auto_runs_the_graph_where_it_can);
    tcase_add_test(t, a_failed_capture_fails_graph_and_falls_back_under_auto);
    tcase_add_test(t, bad_exec_options_are_refused);
    tcase_add_test(t, cnn_graph_matches_eager);
    tcase_add_test(t, fill_matches_gather_for_every_policy);
    tcase_add_test(t, cpu_answers_do_not_depend_on_the_batch);
    tcase_add_test(t, cpu_compaction_matches_reference);
    tcase_add_test(t, fill_destination_pairs_like_the_cpu);
    tcase_add_test(t, stage_times_tile_the_forward);
    tcase_add_test(t, graph_events_only_where_work_runs);
    tcase_add_test(t, one_op_graph_matches_eager);
    suite_add_tcase(s, t);
    TCase *b = tcase_create("buckets");
    tcase_add_test(b, default_buckets_by_hand);
    tcase_add_test(b, default_buckets_bound_the_padding);
    tcase_add_test(b, bucket_lists_parse_and_refuse_by_message);
    suite_add_tcase(s, b);
    return s;
}

int main(void) { return tu_run(suite()); }
