/* The CUDA backend gives the CPU backend's answers: predictions, exit indices, confidences
 * and logits, for every policy and mode, several batch sizes (1 and sizes that are no
 * multiple of any tile), on the shipped model, the tiny fixtures and random synthetic
 * models. Graph mode (one CUDA graph per session, row buckets) gives exactly the eager
 * GPU answers, bit for bit, with 0 host syncs per forward; fill compaction gives exactly
 * the gather answers. f32: identical except where a score lies within 1e-5 of its
 * threshold (or two logits within 1e-5 for the prediction-based policies); bf16:
 * agreement rate reported.
 * Without a GPU (or without the CUDA backend in this build) the test is skipped (77). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_testutil.h"
#include "exit_math.h"
#include "exitrt/exitrt.h"
#include "testutil.h"

#define BORDER 1e-5

typedef struct policy_case {
    const char *spec;
    int kind;
    float t; /* the threshold, for the score-based policies */
} policy_case;

static const policy_case policies[] = {
    {"none", ERT_POLICY_NONE, 0},           {"confidence:0.9", ERT_POLICY_CONFIDENCE, 0.9f},
    {"entropy:0.3", ERT_POLICY_ENTROPY, 0.3f}, {"margin:0.5", ERT_POLICY_MARGIN, 0.5f},
    {"patience:2", ERT_POLICY_PATIENCE, 0}, {"fixed:1", ERT_POLICY_FIXED, 0},
    {"oracle", ERT_POLICY_ORACLE, 0},       {"scheduled:hazard=0.3,seed=3", ERT_POLICY_SCHEDULED, 0},
};
static const ert_mode modes[] = {ERT_MODE_COMPACT, ERT_MODE_MASKED, ERT_MODE_FULL};
static const char *mode_names[] = {"compact", "masked", "full"};

/* Everything one run of n samples produced. */
typedef struct run_out {
    int32_t *pred, *exit;
    float *conf, *logits;
    int host_syncs;
} run_out;

static void run_out_alloc(run_out *r, int n, int classes) {
    r->pred = malloc(sizeof(int32_t) * (size_t)n);
    r->exit = malloc(sizeof(int32_t) * (size_t)n);
    r->conf = malloc(sizeof(float) * (size_t)n);
    r->logits = malloc(sizeof(float) * (size_t)n * (size_t)classes);
}

static void run_out_free(run_out *r) {
    free(r->pred), free(r->exit), free(r->conf), free(r->logits);
}

static ert_session *open_sess(const ert_model *m, const char *device, ert_exec exec, ert_compaction compaction,
                              ert_dtype dtype, ert_mode mode, int batch) {
    ert_session_options o = ert_session_options_default();
    o.device = device;
    o.exec = exec;
    o.compaction = compaction;
    o.dtype = dtype;
    o.mode = mode;
    o.max_batch = batch;
    ert_session *s = NULL;
    ck_assert_msg(ert_session_new(m, &o, &s) == ERT_OK, "%s: %s", device, ert_last_error());
    ck_assert_int_eq(ert_session_get_options(s).exec, exec);
    return s;
}

/* All n samples through session s in batches of `batch` (at most its max_batch). */
static void run_sess(ert_session *s, const ert_model *m, const char *spec, int batch, const float *x,
                     const int32_t *labels, int n, run_out *r) {
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse(spec, &p), ERT_OK);
    const int C = ert_model_num_classes(m), D = ert_model_input_size(m);
    r->host_syncs = 0;
    for (int first = 0; first < n; first += batch) {
        const int bn = n - first < batch ? n - first : batch;
        ert_batch b = {.input = x + (size_t)first * D, .n = bn, .labels = labels + first, .first_index = first};
        ert_outputs out = {r->pred + first, r->exit + first, r->conf + first, r->logits + (size_t)first * C};
        ck_assert_msg(ert_session_run(s, p, &b, &out) == ERT_OK, "%s: %s", spec, ert_last_error());
        ert_profile prof;
        ert_session_profile(s, &prof);
        r->host_syncs += prof.host_syncs;
    }
    ert_policy_free(p);
}

static void run_exec(const ert_model *m, const char *device, ert_exec exec, ert_compaction compaction, ert_dtype dtype,
                     ert_mode mode, const char *spec, int batch, const float *x, const int32_t *labels, int n,
                     run_out *r) {
    ert_session *s = open_sess(m, device, exec, compaction, dtype, mode, batch);
    run_sess(s, m, spec, batch, x, labels, n, r);
    ert_session_free(s);
}

static void run(const ert_model *m, const char *device, ert_dtype dtype, ert_mode mode, const char *spec, int batch,
                const float *x, const int32_t *labels, int n, run_out *r) {
    run_exec(m, device, ERT_EXEC_EAGER, ERT_COMPACTION_GATHER, dtype, mode, spec, batch, x, labels, n, r);
}

/* The first element where two arrays of 4-byte values differ bitwise, or -1. */
/* A synthetic model written to a fresh directory and loaded. */
static ert_model *synth_model(ert_synth_options so) {
    const char *dir = tu_tmpdir();
    ck_assert_msg(ert_synth_write(&so, dir) == ERT_OK, "%s", ert_last_error());
    ert_model *m = NULL;
    ck_assert_msg(ert_model_load(dir, &m) == ERT_OK, "%s", ert_last_error());
    return m;
}

static long first_diff(const void *a, const void *b, size_t count) {
    const uint32_t *x = a, *y = b;
    for (size_t i = 0; i < count; ++i)
        if (x[i] != y[i]) return (long)i;
    return -1;
}

/* Bit for bit; a difference names its first sample (and class) with both values, so a
 * device run's log says what differs without a rerun. */
static void assert_same_bits(const run_out *a, const run_out *b, int n, int C, const char *what) {
    long i = first_diff(a->pred, b->pred, (size_t)n);
    ck_assert_msg(i < 0, "%s: predictions differ, first at sample %ld: %d vs %d", what, i, i < 0 ? 0 : a->pred[i],
                  i < 0 ? 0 : b->pred[i]);
    i = first_diff(a->exit, b->exit, (size_t)n);
    ck_assert_msg(i < 0, "%s: exits differ, first at sample %ld: %d vs %d", what, i, i < 0 ? 0 : a->exit[i],
                  i < 0 ? 0 : b->exit[i]);
    i = first_diff(a->conf, b->conf, (size_t)n);
    ck_assert_msg(i < 0, "%s: confidences differ, first at sample %ld: %.9g vs %.9g", what, i,
                  i < 0 ? 0.0 : (double)a->conf[i], i < 0 ? 0.0 : (double)b->conf[i]);
    i = first_diff(a->logits, b->logits, (size_t)n * (size_t)C);
    ck_assert_msg(i < 0, "%s: logits differ, first at sample %ld class %ld: %.9g vs %.9g", what, i < 0 ? 0 : i / C,
                  i < 0 ? 0 : i % C, i < 0 ? 0.0 : (double)a->logits[i], i < 0 ? 0.0 : (double)b->logits[i]);
}

/* Graph and eager on the GPU: the same kernels and GEMM algorithms on the same rows
 * (padding rows are never read back), so the same bits. */
static void assert_graph_is_eager(const run_out *eager, const run_out *graph, int n, int C, const char *what) {
    assert_same_bits(eager, graph, n, C, what);
    ck_assert_msg(graph->host_syncs == 0, "%s: %d host syncs in graph mode", what, graph->host_syncs);
}

/* Whether sample i may legitimately differ: the score the policy compares at some exit up
 * to `upto` (from the CPU's per-exit logits, at the model's calibrated temperature, as
 * the policy scores it) lies within BORDER of the threshold, or two top logits tie. */
static int borderline(const ert_model *m, const policy_case *pc, const float *const *exit_logits, int num_exits,
                      int C, int i, int upto) {
    for (int e = 0; e <= upto && e < num_exits; ++e) {
        const float *z = exit_logits[e] + (size_t)i * C;
        const ert_softmax_stats s = ert_softmax_stats_compute(z, C, 1.0f / ert_model_temperature(m, e));
        const float score = ert_exit_score(pc->kind, &s);
        if (!isnan(score) && fabs(score - pc->t) <= BORDER) return 1;
        /* a prediction that may flip: the top two logits nearly equal */
        float top = -INFINITY, second = -INFINITY;
        for (int k = 0; k < C; ++k) {
            if (z[k] > top) second = top, top = z[k];
            else if (z[k] > second) second = z[k];
        }
        if (top - second <= BORDER * (1.0f + fabsf(top))) return 1;
    }
    return 0;
}

typedef struct model_case {
    const char *name;
    ert_model *model;
    float *x;
    int32_t *labels;
    int n;
    int batches[3];
} model_case;

static void compare_model(const model_case *mc) {
    const ert_model *m = mc->model;
    const int C = ert_model_num_classes(m), E = ert_model_num_exits(m), n = mc->n;
    /* The CPU's logits at every exit, to find borderline samples. */
    float *exit_logits[ERT_MAX_EXITS];
    for (int e = 0; e < E; ++e) {
        char spec[32];
        snprintf(spec, sizeof spec, "fixed:%d", e);
        run_out r;
        run_out_alloc(&r, n, C);
        run(m, "cpu", ERT_DTYPE_F32, ERT_MODE_COMPACT, spec, 256, mc->x, mc->labels, n, &r);
        exit_logits[e] = r.logits;
        r.logits = NULL;
        run_out_free(&r);
    }
    int compared = 0, border = 0, graphs_equal = 0, fills_equal = 0;
    double worst_conf = 0, worst_logit = 0;
    enum { P = sizeof policies / sizeof *policies };
    /* Sessions serve every policy (it travels with the batch): one per mode, batch size
     * and execution. The CPU's answers do not depend on the batch (test_exec pins that):
     * one CPU reference per policy and mode serves every batch size. */
    for (size_t md = 0; md < sizeof modes / sizeof *modes; ++md) {
        run_out cpu_ref[P];
        ert_session *cs = open_sess(m, "cpu", ERT_EXEC_EAGER, ERT_COMPACTION_GATHER, ERT_DTYPE_F32, modes[md], 256);
        for (size_t p = 0; p < P; ++p) {
            run_out_alloc(&cpu_ref[p], n, C);
            run_sess(cs, m, policies[p].spec, 256, mc->x, mc->labels, n, &cpu_ref[p]);
        }
        ert_session_free(cs);
        for (int bi = 0; bi < 3 && mc->batches[bi]; ++bi) {
            const int batch = mc->batches[bi], compact = modes[md] == ERT_MODE_COMPACT;
            ert_session *ge = open_sess(m, "cuda:0", ERT_EXEC_EAGER, ERT_COMPACTION_GATHER, ERT_DTYPE_F32, modes[md],
                                        batch);
            ert_session *gg = open_sess(m, "cuda:0", ERT_EXEC_GRAPH, ERT_COMPACTION_GATHER, ERT_DTYPE_F32, modes[md],
                                        batch);
            ert_session *gf = compact ? open_sess(m, "cuda:0", ERT_EXEC_EAGER, ERT_COMPACTION_FILL, ERT_DTYPE_F32,
                                                  modes[md], batch)
                                      : NULL;
            for (size_t p = 0; p < P; ++p) {
                const run_out cpu = cpu_ref[p];
                run_out gpu, graph;
                run_out_alloc(&gpu, n, C);
                run_out_alloc(&graph, n, C);
                run_sess(ge, m, policies[p].spec, batch, mc->x, mc->labels, n, &gpu);
                run_sess(gg, m, policies[p].spec, batch, mc->x, mc->labels, n, &graph);
                char what[160];
                snprintf(what, sizeof what, "%s %s %s batch %d graph vs eager", mc->name, policies[p].spec,
                         mode_names[md], batch);
                assert_graph_is_eager(&gpu, &graph, n, C, what);
                graphs_equal++;
                if (gf) {
                    /* fill compaction (in place, survivors reordered): the same bits as gather */
                    run_out fill;
                    run_out_alloc(&fill, n, C);
                    run_sess(gf, m, policies[p].spec, batch, mc->x, mc->labels, n, &fill);
                    snprintf(what, sizeof what, "%s %s batch %d fill vs gather", mc->name, policies[p].spec, batch);
                    assert_same_bits(&gpu, &fill, n, C, what);
                    run_out_free(&fill);
                    fills_equal++;
                }
                ck_assert_int_eq(cpu.host_syncs, 0);
                /* eager compact reads each exit's count back; masked and full have none */
                if (modes[md] == ERT_MODE_COMPACT && ert_model_num_exits(m) > 1 && policies[p].kind != ERT_POLICY_NONE)
                    ck_assert_int_gt(gpu.host_syncs, 0);
                for (int i = 0; i < n; ++i) {
                    const int upto = cpu.exit[i] > gpu.exit[i] ? cpu.exit[i] : gpu.exit[i];
                    if (cpu.exit[i] != gpu.exit[i] || cpu.pred[i] != gpu.pred[i]) {
                        ck_assert_msg(borderline(m, &policies[p], (const float *const *)exit_logits, E, C, i, upto),
                                      "%s %s %s batch %d sample %d: cpu pred %d exit %d, gpu pred %d exit %d",
                                      mc->name, policies[p].spec, mode_names[md], batch, i, cpu.pred[i], cpu.exit[i],
                                      gpu.pred[i], gpu.exit[i]);
                        ++border;
                        continue;
                    }
                    const double dc = fabs(cpu.conf[i] - gpu.conf[i]);
                    if (dc > worst_conf) worst_conf = dc;
                    const double dl = tu_rel_err(gpu.logits + (size_t)i * C, cpu.logits + (size_t)i * C, C, 1e-4, 1e-4);
                    if (dl > worst_logit) worst_logit = dl;
                    ++compared;
                }
                run_out_free(&gpu);
                run_out_free(&graph);
            }
            ert_session_free(ge);
            ert_session_free(gg);
            ert_session_free(gf);
        }
        for (size_t p = 0; p < P; ++p) run_out_free(&cpu_ref[p]);
    }
    printf("%s f32: %d sample results identical, %d borderline; max |conf cpu-gpu| %.3g, logits err ratio %.3g; "
           "%d runs graph == eager and %d runs fill == gather bit for bit\n",
           mc->name, compared, border, worst_conf, worst_logit, graphs_equal, fills_equal);
    ck_assert_double_le(worst_conf, 2e-5);
    ck_assert_double_le(worst_logit, 1.0);
    ck_assert_int_le(border, compared / 100 + 2);
    for (int e = 0; e < E; ++e) free(exit_logits[e]);
}

/* 16-bit storage: report how often bf16 / f16 agree with the f32 CPU. */
static void agreement_16bit(const model_case *mc, ert_dtype dtype) {
    const ert_model *m = mc->model;
    const int C = ert_model_num_classes(m), n = mc->n;
    run_out cpu, gpu;
    run_out_alloc(&cpu, n, C);
    run_out_alloc(&gpu, n, C);
    int same_pred = 0, same_exit = 0;
    const char *spec = "confidence:0.9";
    run(m, "cpu", ERT_DTYPE_F32, ERT_MODE_COMPACT, spec, 128, mc->x, mc->labels, n, &cpu);
    run(m, "cuda:0", dtype, ERT_MODE_COMPACT, spec, 128, mc->x, mc->labels, n, &gpu);
    for (int i = 0; i < n; ++i) {
        same_pred += cpu.pred[i] == gpu.pred[i];
        same_exit += cpu.exit[i] == gpu.exit[i];
    }
    printf("%s %s vs cpu f32 (%s): predictions agree %.2f%%, exits agree %.2f%%\n", mc->name, ert_dtype_name(dtype),
           spec, 100.0 * same_pred / n, 100.0 * same_exit / n);
    ck_assert_int_ge(same_pred, (int)(0.9 * n));
    run_out_free(&cpu);
    run_out_free(&gpu);
}

static model_case cases[5];
static int num_cases;

static void add_random_case(const char *name, const char *dir, int n, int b0, int b1, int b2) {
    model_case *mc = &cases[num_cases++];
    mc->name = name;
    ck_assert_msg(ert_model_load(dir, &mc->model) == ERT_OK, "%s", ert_last_error());
    const int D = ert_model_input_size(mc->model), C = ert_model_num_classes(mc->model);
    mc->n = n;
    mc->x = malloc(sizeof(float) * (size_t)n * D);
    mc->labels = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n * D; ++i) mc->x[i] = (float)rand() / (float)RAND_MAX;
    for (int i = 0; i < n; ++i) mc->labels[i] = rand() % C;
    mc->batches[0] = b0, mc->batches[1] = b1, mc->batches[2] = b2;
}

static void setup(void) {
    srand(17);
    /* the shipped model on real test images */
    model_case *mc = &cases[num_cases++];
    mc->name = "fmnist-mlp";
    ck_assert_int_eq(ert_model_load(tu_path("models/fmnist-mlp"), &mc->model), ERT_OK);
    ert_dataset *d = NULL;
    ck_assert_msg(ert_dataset_load("fashion-mnist:test", &d) == ERT_OK, "%s", ert_last_error());
    mc->n = 600;
    mc->x = malloc(sizeof(float) * 600 * 784);
    mc->labels = malloc(sizeof(int32_t) * 600);
    memcpy(mc->x, d->x, sizeof(float) * 600 * 784);
    memcpy(mc->labels, d->labels, sizeof(int32_t) * 600);
    mc->batches[0] = 1, mc->batches[1] = 129, mc->batches[2] = 300;
    /* the shipped CNN (cuDNN convolutions, pools) on the first 300 of the same images */
    model_case *cnn = &cases[num_cases++];
    *cnn = *mc;
    cnn->name = "fmnist-cnn";
    cnn->n = 300;
    cnn->x = malloc(sizeof(float) * 300 * 784);
    cnn->labels = malloc(sizeof(int32_t) * 300);
    memcpy(cnn->x, d->x, sizeof(float) * 300 * 784);
    memcpy(cnn->labels, d->labels, sizeof(int32_t) * 300);
    cnn->batches[0] = 7, cnn->batches[1] = 300, cnn->batches[2] = 0;
    ck_assert_int_eq(ert_model_load(tu_path("models/fmnist-cnn"), &cnn->model), ERT_OK);
    ert_dataset_free(d);
    add_random_case("tiny-f16", tu_path("test/fixtures/tiny-f16"), 50, 1, 7, 0);
    /* a random synthetic model with widths no tile divides */
    const char *dir = tu_tmpdir();
    ert_synth_options so = {.width = 96 + 5, .depth = 6, .classes = 7, .dtype = ERT_DTYPE_F32, .seed = 9};
    ck_assert_msg(ert_synth_write(&so, dir) == ERT_OK, "%s", ert_last_error());
    add_random_case("synth-D101-L6", dir, 400, 7, 64, 257);
}

START_TEST(cuda_matches_cpu) {
    for (int i = 0; i < num_cases; ++i) compare_model(&cases[i]);
}
END_TEST

START_TEST(bf16_and_f16_agreement) {
    agreement_16bit(&cases[0], ERT_DTYPE_BF16);
    agreement_16bit(&cases[0], ERT_DTYPE_F16);
    agreement_16bit(&cases[0], ERT_DTYPE_TF32);
}
END_TEST

START_TEST(cuda_refuses_bad_input) {
    ert_session_options o = ert_session_options_default();
    o.device = "cuda:0";
    o.max_batch = 4;
    ert_session *s = NULL;
    ck_assert_int_eq(ert_session_new(cases[0].model, &o, &s), ERT_OK);
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("none", &p), ERT_OK);
    int32_t pred[8], ex[8];
    float conf[8];
    ert_outputs out = {pred, ex, conf, NULL};
    ert_batch b = {.input = cases[0].x, .n = 5};
    ck_assert_int_eq(ert_session_run(s, p, &b, &out), ERT_ERR_INVALID_ARGUMENT);
    float bad[784 * 2];
    memcpy(bad, cases[0].x, sizeof bad);
    bad[800] = NAN;
    b = (ert_batch){.input = bad, .n = 2};
    ck_assert_int_eq(ert_session_run(s, p, &b, &out), ERT_ERR_NUMERIC);
    b.input = cases[0].x;
    ck_assert_int_eq(ert_session_run(s, p, &b, &out), ERT_OK); /* still usable */
    ert_policy_free(p);
    ert_session_free(s);
    o.device = "cuda:99";
    ck_assert_int_eq(ert_session_new(cases[0].model, &o, &s), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_msg(tu_error_has("this machine has"), "%s", ert_last_error());
    printf("cuda:99 refused: %s\n", ert_last_error());
}
END_TEST

/* One bf16 graph session (12 exits, default buckets) answers batches of any size and a
 * new policy each run exactly as eager does, profiles 0 host syncs and the eager row
 * counts, and still refuses bad input by message afterwards. Fill compaction (in place,
 * survivors reordered), eager and graph, gives the same bits too. */
START_TEST(graph_bf16_any_batch_any_policy) {
    ert_model *m =
        synth_model((ert_synth_options){.width = 512, .depth = 12, .classes = 10, .dtype = ERT_DTYPE_BF16, .seed = 4});
    enum { B = 1000, V = 4 }; /* sessions: bit 0 graph, bit 1 fill; 0 is the reference */
    static const char *vname[V] = {"eager", "graph", "eager fill", "graph fill"};
    ert_session *sess[V];
    for (int g = 0; g < V; ++g) {
        ert_session_options o = ert_session_options_default();
        o.device = "cuda:0";
        o.dtype = ERT_DTYPE_BF16;
        o.max_batch = B;
        o.exec = g & 1 ? ERT_EXEC_GRAPH : ERT_EXEC_EAGER;
        o.compaction = g & 2 ? ERT_COMPACTION_FILL : ERT_COMPACTION_GATHER;
        ck_assert_msg(ert_session_new(m, &o, &sess[g]) == ERT_OK, "%s", ert_last_error());
    }
    ck_assert_int_eq(ert_session_get_options(sess[1]).exec, ERT_EXEC_GRAPH);
    float *x = malloc(sizeof(float) * B * 512);
    for (int i = 0; i < B * 512; ++i) x[i] = (float)(((long long)i * 7919) % 1000) / 1000.0f;
    static const char *specs[] = {"scheduled:hazard=0.15,seed=1", "confidence:0.3", "fixed:0", "none",
                                  "entropy:0.9", "scheduled:hazard=0.5,seed=2"};
    static const int sizes[] = {B, 333, 1, 64};
    for (int k = 0; k < 6; ++k) {
        ert_policy *p = NULL;
        ck_assert_int_eq(ert_policy_parse(specs[k], &p), ERT_OK);
        const int n = sizes[k % 4];
        static int32_t pred[V][B], ex[V][B];
        static float conf[V][B];
        ert_profile prof[V];
        for (int g = 0; g < V; ++g) {
            ert_batch b = {.input = x, .n = n, .first_index = k};
            ert_outputs out = {pred[g], ex[g], conf[g], NULL};
            ck_assert_msg(ert_session_run(sess[g], p, &b, &out) == ERT_OK, "%s", ert_last_error());
            ert_session_profile(sess[g], &prof[g]);
        }
        for (int g = 1; g < V; ++g) {
            const char *v = vname[g];
            ck_assert_msg(memcmp(pred[0], pred[g], sizeof(int32_t) * n) == 0, "%s %s n=%d: predictions differ", v,
                          specs[k], n);
            ck_assert_msg(memcmp(ex[0], ex[g], sizeof(int32_t) * n) == 0, "%s %s n=%d: exits differ", v, specs[k], n);
            ck_assert_msg(memcmp(conf[0], conf[g], sizeof(float) * n) == 0, "%s %s n=%d: confidences differ", v,
                          specs[k], n);
            ck_assert_int_eq(prof[g].host_syncs, (g & 1) ? 0 : prof[0].host_syncs);
            ck_assert_int_eq(prof[g].graph, g & 1);
            for (int s = 0; s < prof[0].num_stages; ++s) {
                ck_assert_int_eq(prof[g].stage[s].rows, prof[0].stage[s].rows);
                ck_assert_int_ge(prof[g].stage[s].padded_rows, prof[g].stage[s].rows);
            }
        }
        printf("graph bf16 %s n=%d: same as eager (gather and fill); padding %.1f%%, batch %.3f ms (eager %.3f ms, "
               "fill %.3f / %.3f ms)\n",
               specs[k], n, 100.0 * prof[1].padding_waste, prof[1].batch_ms, prof[0].batch_ms, prof[3].batch_ms,
               prof[2].batch_ms);
        ert_policy_free(p);
    }
    x[5] = NAN;
    int32_t pred[4], ex[4];
    float conf[4];
    ert_outputs out = {pred, ex, conf, NULL};
    ert_batch b = {.input = x, .n = 4};
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("none", &p), ERT_OK);
    ck_assert_int_eq(ert_session_run(sess[1], p, &b, &out), ERT_ERR_NUMERIC);
    x[5] = 0.5f;
    ck_assert_int_eq(ert_session_run(sess[1], p, &b, &out), ERT_OK);
    ert_policy_free(p);
    free(x);
    for (int g = 0; g < V; ++g) ert_session_free(sess[g]);
    ert_model_free(m);
}
END_TEST

/* Masked and full modes compact nothing, so every GEMM reads the batch's count: with 5
 * SWITCH nodes per route (ERT_CUDA_GRAPH_ROUTE_SWITCHES; 64 by default), the 24 of a
 * 12-block model in masked mode take 5 routes on one count and the 13 in full mode 3,
 * each further route with its own selector kernel (graph.cu). The graph must still give
 * the eager answers. */
START_TEST(graph_deep_model_more_switch_nodes_than_a_route) {
    ert_model *m =
        synth_model((ert_synth_options){.width = 64, .depth = 12, .classes = 5, .dtype = ERT_DTYPE_F32, .seed = 11});
    enum { B = 300 };
    static float x[B * 64];
    for (int i = 0; i < B * 64; ++i) x[i] = (float)(((long long)i * 104729) % 1000) / 1000.0f;
    static const ert_mode deep_modes[] = {ERT_MODE_MASKED, ERT_MODE_FULL};
    for (int md = 0; md < 2; ++md) {
        ert_session *sess[2];
        for (int g = 0; g < 2; ++g) {
            ert_session_options o = ert_session_options_default();
            o.device = "cuda:0";
            o.max_batch = B;
            o.mode = deep_modes[md];
            o.exec = g ? ERT_EXEC_GRAPH : ERT_EXEC_EAGER;
            ck_assert_int_eq(setenv("ERT_CUDA_GRAPH_ROUTE_SWITCHES", "5", 1), 0);
            const ert_status st = ert_session_new(m, &o, &sess[g]);
            ck_assert_int_eq(unsetenv("ERT_CUDA_GRAPH_ROUTE_SWITCHES"), 0);
            ck_assert_msg(st == ERT_OK, "%s", ert_last_error());
        }
        ert_policy *p = NULL;
        ck_assert_int_eq(ert_policy_parse("scheduled:hazard=0.05,seed=3", &p), ERT_OK);
        static const int sizes[] = {B, 77, 1};
        for (int k = 0; k < 3; ++k) {
            static int32_t pred[2][B], ex[2][B];
            static float conf[2][B];
            for (int g = 0; g < 2; ++g) {
                ert_batch b = {.input = x, .n = sizes[k]};
                ert_outputs out = {pred[g], ex[g], conf[g], NULL};
                ck_assert_msg(ert_session_run(sess[g], p, &b, &out) == ERT_OK, "%s", ert_last_error());
            }
            ck_assert_msg(memcmp(pred[0], pred[1], sizeof(int32_t) * sizes[k]) == 0, "mode %d n=%d: predictions",
                          md, sizes[k]);
            ck_assert_msg(memcmp(ex[0], ex[1], sizeof(int32_t) * sizes[k]) == 0, "mode %d n=%d: exits", md,
                          sizes[k]);
            ck_assert_msg(memcmp(conf[0], conf[1], sizeof(float) * sizes[k]) == 0, "mode %d n=%d: confidences", md,
                          sizes[k]);
        }
        printf("graph, 12 blocks, 5 SWITCH nodes per route, mode %s: same as eager at n = %d, 77, 1\n",
               md ? "full" : "masked", B);
        ert_policy_free(p);
        for (int g = 0; g < 2; ++g) ert_session_free(sess[g]);
    }
    ert_model_free(m);
}
END_TEST

/* A capture that fails inside a SWITCH body (fault injection: the 2nd SWITCH node's first
 * body makes a call no capture allows, as a refusing library would): exec graph fails the
 * session by message, exec auto runs eager and says why, and a graph session made
 * afterwards works (NVIDIA/cuda-python#2918 crashed there with captures into bodies). */
START_TEST(graph_capture_failure_and_auto_fallback) {
    ert_model *m =
        synth_model((ert_synth_options){.width = 128, .depth = 4, .classes = 6, .dtype = ERT_DTYPE_F32, .seed = 21});
    enum { B = 200 };
    static float x[B * 128];
    for (int i = 0; i < B * 128; ++i) x[i] = (float)(((long long)i * 7717) % 1000) / 1000.0f;
    ert_session_options o = ert_session_options_default();
    o.device = "cuda:0";
    o.max_batch = B;
    ert_session *s[3] = {NULL, NULL, NULL};
    ck_assert_msg(ert_session_new(m, &o, &s[0]) == ERT_OK, "%s", ert_last_error()); /* eager */

    ck_assert_int_eq(setenv("ERT_CUDA_GRAPH_FAIL_AT", "2", 1), 0);
    o.exec = ERT_EXEC_GRAPH;
    ert_session *bad = NULL;
    ck_assert_int_eq(ert_session_new(m, &o, &bad), ERT_ERR_BACKEND);
    ck_assert_ptr_null(bad);
    ck_assert_msg(tu_error_has("as SWITCH node 2: body for 1 rows: refused (ERT_CUDA_GRAPH_FAIL_AT=2; cudaMalloc in "
                               "the capture: "),
                  "%s", ert_last_error());
    /* CUDA refused the allocation: its invalidation path ran, and the backend lives on */
    ck_assert_msg(!tu_error_has("cudaSuccess"), "%s", ert_last_error());
    printf("injected capture failure: %s\n", ert_last_error());
    o.exec = ERT_EXEC_AUTO;
    ck_assert_msg(ert_session_new(m, &o, &s[1]) == ERT_OK, "%s", ert_last_error());
    ck_assert_int_eq(ert_session_get_options(s[1]).exec, ERT_EXEC_EAGER);
    ck_assert_msg(strstr(ert_session_exec_note(s[1]), "graph mode unavailable, running eager") != NULL, "%s",
                  ert_session_exec_note(s[1]));
    ck_assert_int_eq(unsetenv("ERT_CUDA_GRAPH_FAIL_AT"), 0);
    o.exec = ERT_EXEC_GRAPH;
    ck_assert_msg(ert_session_new(m, &o, &s[2]) == ERT_OK, "%s", ert_last_error());

    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("confidence:0.4", &p), ERT_OK);
    static int32_t pred[3][B], ex[3][B];
    static float conf[3][B];
    for (int k = 0; k < 3; ++k) {
        ert_batch b = {.input = x, .n = B - 13};
        ert_outputs out = {pred[k], ex[k], conf[k], NULL};
        ck_assert_msg(ert_session_run(s[k], p, &b, &out) == ERT_OK, "%s", ert_last_error());
    }
    for (int k = 1; k < 3; ++k) {
        ck_assert_msg(memcmp(pred[0], pred[k], sizeof(int32_t) * (B - 13)) == 0, "session %d: predictions", k);
        ck_assert_msg(memcmp(ex[0], ex[k], sizeof(int32_t) * (B - 13)) == 0, "session %d: exits", k);
        ck_assert_msg(memcmp(conf[0], conf[k], sizeof(float) * (B - 13)) == 0, "session %d: confidences", k);
    }
    printf("graph capture failure: exec graph refused, exec auto ran eager, a later graph session agrees\n");
    ert_policy_free(p);
    for (int k = 0; k < 3; ++k) ert_session_free(s[k]);
    ert_model_free(m);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("cuda-session");
    TCase *tc = tcase_create("cuda");
    tcase_add_unchecked_fixture(tc, setup, NULL);
    tcase_add_checked_fixture(tc, cuda_env_clear, NULL);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, cuda_matches_cpu);
    tcase_add_test(tc, bf16_and_f16_agreement);
    tcase_add_test(tc, cuda_refuses_bad_input);
    tcase_add_test(tc, graph_bf16_any_batch_any_policy);
    tcase_add_test(tc, graph_deep_model_more_switch_nodes_than_a_route);
    tcase_add_test(tc, graph_capture_failure_and_auto_fallback);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    /* Skip, visibly, when this build or this machine cannot run CUDA; where it can, a
     * session that cannot start is a failure. */
    const ert_backend_ops *cpu_ops, *gpu_ops;
    const int skip = cuda_backends_or_skip(&cpu_ops, &gpu_ops);
    if (skip >= 0) return skip;
    ert_model *m = NULL;
    if (ert_model_load(tu_path("test/fixtures/tiny-f32"), &m) != ERT_OK) {
        fprintf(stderr, "test_cuda_session: %s\n", ert_last_error());
        return 1;
    }
    ert_session_options o = ert_session_options_default();
    o.device = "cuda:0";
    ert_session *s = NULL;
    const ert_status st = ert_session_new(m, &o, &s);
    ert_session_free(s);
    ert_model_free(m);
    if (st != ERT_OK) {
        fprintf(stderr, "test_cuda_session: cuda:0: %s\n", ert_last_error());
        return 1;
    }
    return tu_run_nofork(suite());
}
