/* Sessions: compaction invariants (one result per sample, at its own index), masked and
 * compact agreeing exactly, full ignoring exits, the oracle and scheduled policies, the
 * profile's row counts, bad input refused with a clear message, and a session too large
 * for memory refused at creation. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "exitrt/exitrt.h"
#include "sanitizer.h"
#include "testutil.h"

enum { N = 203, MAXB = 64, IN = 24 };

static ert_model *model;
static float x[N * IN];
static int32_t labels[N];

static void setup(void) { model = tu_tiny_model(11, x, labels, N); }

static void teardown(void) { ert_model_free(model); }

typedef struct outs {
    int32_t pred[N], exit[N];
    float conf[N];
    ert_profile prof[N]; /* one per batch: at most N batches */
} outs;

/* Runs all N samples in batches of `batch` with `spec` in `mode`. */
static void run_all(const char *spec, ert_mode mode, int batch, const int32_t *schedule, outs *o) {
    ert_session_options opt = ert_session_options_default();
    opt.max_batch = MAXB;
    opt.mode = mode;
    ert_session *s = NULL;
    ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_OK);
    ert_policy *p = NULL;
    ck_assert_msg(ert_policy_parse(spec, &p) == ERT_OK, "%s", ert_last_error());
    for (int i = 0; i < N; ++i) o->pred[i] = o->exit[i] = -7, o->conf[i] = -7.0f; /* poison */
    for (int first = 0, b = 0; first < N; first += batch, ++b) {
        const int n = N - first < batch ? N - first : batch;
        ert_batch bt = {.input = x + first * IN, .n = n, .labels = labels + first,
                        .schedule = schedule ? schedule + first : NULL, .first_index = first};
        ert_outputs out = {o->pred + first, o->exit + first, o->conf + first, NULL};
        ck_assert_msg(ert_session_run(s, p, &bt, &out) == ERT_OK, "%s: %s", spec, ert_last_error());
        ck_assert_int_eq(ert_session_profile(s, &o->prof[b]), ERT_OK);
    }
    ert_policy_free(p);
    ert_session_free(s);
}

static const char *specs[] = {"none",       "confidence:0.5", "confidence:0.3,0.45", "entropy:0.8", "margin:0.2",
                              "patience:2", "fixed:1",        "oracle",              "scheduled:hazard=0.3,seed=5"};

START_TEST(every_sample_gets_one_result) {
    for (size_t k = 0; k < sizeof specs / sizeof *specs; ++k) {
        static outs o;
        run_all(specs[k], ERT_MODE_COMPACT, MAXB, NULL, &o);
        for (int i = 0; i < N; ++i) {
            ck_assert_msg(o.exit[i] >= 0 && o.exit[i] < 3, "%s: sample %d exit %d", specs[k], i, o.exit[i]);
            ck_assert_int_ge(o.pred[i], 0);
            ck_assert_int_lt(o.pred[i], 5);
            ck_assert(o.conf[i] > 0.2f && o.conf[i] <= 1.0f);
        }
    }
}
END_TEST

START_TEST(masked_and_compact_agree_exactly) {
    int moved = 0;
    for (size_t k = 0; k < sizeof specs / sizeof *specs; ++k) {
        static outs a, b;
        run_all(specs[k], ERT_MODE_COMPACT, MAXB, NULL, &a);
        run_all(specs[k], ERT_MODE_MASKED, 37, NULL, &b); /* other batch boundaries too */
        ck_assert_msg(memcmp(a.pred, b.pred, sizeof a.pred) == 0, "%s: predictions differ", specs[k]);
        ck_assert_msg(memcmp(a.exit, b.exit, sizeof a.exit) == 0, "%s: exits differ", specs[k]);
        ck_assert_msg(memcmp(a.conf, b.conf, sizeof a.conf) == 0, "%s: confidences differ", specs[k]);
        for (int i = 0; i < N; ++i) moved += a.exit[i] < 2;
    }
    ck_assert_int_gt(moved, N); /* the policies above really exit early */
}
END_TEST

START_TEST(full_ignores_exits) {
    static outs full, none;
    run_all("confidence:0.3", ERT_MODE_FULL, MAXB, NULL, &full);
    run_all("none", ERT_MODE_COMPACT, MAXB, NULL, &none);
    for (int i = 0; i < N; ++i) ck_assert_int_eq(full.exit[i], 2);
    ck_assert(memcmp(full.pred, none.pred, sizeof full.pred) == 0);
    ck_assert(memcmp(full.conf, none.conf, sizeof full.conf) == 0);
    /* every row went through every stage */
    for (int k = 0; k < 4; ++k) ck_assert_int_eq(full.prof[0].stage[k].rows, MAXB);
}
END_TEST

START_TEST(oracle_is_earliest_correct_exit) {
    static outs oracle, at[3];
    run_all("oracle", ERT_MODE_COMPACT, MAXB, NULL, &oracle);
    for (int e = 0; e < 3; ++e) {
        char spec[16];
        snprintf(spec, sizeof spec, "fixed:%d", e);
        run_all(spec, ERT_MODE_COMPACT, MAXB, NULL, &at[e]);
    }
    for (int i = 0; i < N; ++i) {
        int want = 2;
        for (int e = 2; e >= 0; --e)
            if (at[e].pred[i] == labels[i]) want = e;
        ck_assert_int_eq(oracle.exit[i], want);
        ck_assert_int_eq(oracle.pred[i], at[want].pred[i]);
    }
}
END_TEST

START_TEST(scheduled_exits_where_told) {
    int32_t sched[N];
    for (int i = 0; i < N; ++i) sched[i] = (i * 7) % 3;
    static outs o;
    run_all("scheduled", ERT_MODE_COMPACT, MAXB, sched, &o);
    for (int i = 0; i < N; ++i) ck_assert_int_eq(o.exit[i], sched[i]);
}
END_TEST

START_TEST(profile_counts_rows) {
    static outs o;
    run_all("confidence:0.45", ERT_MODE_COMPACT, MAXB, NULL, &o);
    /* stage0 (exit 0), stage1 (exit 1), stage2 (no exit), stage3 (exit 2) */
    int want[4] = {MAXB, 0, 0, 0};
    for (int i = 0; i < MAXB; ++i) {
        want[1] += o.exit[i] >= 1;
        want[2] += o.exit[i] >= 2;
    }
    want[3] = want[2];
    ck_assert_int_gt(want[1], 0);
    ck_assert_int_lt(want[2], MAXB);
    for (int k = 0; k < 4; ++k) ck_assert_int_eq(o.prof[0].stage[k].rows, want[k]);
    ck_assert_int_eq(o.prof[0].num_stages, 4);
    ck_assert_int_eq(o.prof[0].host_syncs, 0); /* the CPU has none */
    ck_assert(o.prof[0].batch_ms > 0);
}
END_TEST

/* ---------------------------------------------------------------- bad input */

static ert_session *session(int max_batch) {
    ert_session_options opt = ert_session_options_default();
    opt.max_batch = max_batch;
    ert_session *s = NULL;
    ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_OK);
    return s;
}

static void run_fails(ert_session *s, const char *spec, const ert_batch *b, ert_status status, const char *needle) {
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse(spec, &p), ERT_OK);
    int32_t pred[N], ex[N];
    float conf[N];
    ert_outputs out = {pred, ex, conf, NULL};
    ert_status st = ert_session_run(s, p, b, &out);
    ck_assert_msg(st == status, "%s: got %s (%s)", spec, ert_status_to_string(st), ert_last_error());
    ck_assert(tu_error_has(needle));
    ert_policy_free(p);
}

START_TEST(bad_input_is_refused) {
    ert_session *s = session(8);
    ert_batch b = {.input = x, .n = 9};
    run_fails(s, "none", &b, ERT_ERR_INVALID_ARGUMENT, "batch of 9 samples: the session takes 1..8");
    b.n = 0;
    run_fails(s, "none", &b, ERT_ERR_INVALID_ARGUMENT, "batch of 0 samples");
    float bad[4 * IN];
    memcpy(bad, x, sizeof bad);
    bad[3 * IN + 5] = NAN;
    b = (ert_batch){.input = bad, .n = 4};
    run_fails(s, "none", &b, ERT_ERR_NUMERIC, "input sample 3, element 5: NaN");
    bad[3 * IN + 5] = INFINITY;
    run_fails(s, "none", &b, ERT_ERR_NUMERIC, "Inf");
    b.input = x;
    run_fails(s, "oracle", &b, ERT_ERR_INVALID_ARGUMENT, "needs labels");
    run_fails(s, "scheduled", &b, ERT_ERR_INVALID_ARGUMENT, "needs a per-sample schedule");
    int32_t badl[4] = {0, 1, 5, 2};
    b.labels = badl;
    run_fails(s, "none", &b, ERT_ERR_INVALID_ARGUMENT, "labels[2] = 5: expected 0..4");
    b.labels = NULL;
    run_fails(s, "confidence:0.9,0.8,0.7,0.6", &b, ERT_ERR_INVALID_ARGUMENT, "4 thresholds for a model with 3 exits");
    run_fails(s, "fixed:3", &b, ERT_ERR_INVALID_ARGUMENT, "exit 3 does not exist");
    run_fails(s, "margin:0.1;temp=1,2", &b, ERT_ERR_INVALID_ARGUMENT, "2 temperatures");
    /* after all that the session still works */
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("none", &p), ERT_OK);
    int32_t pred[4], ex[4];
    float conf[4];
    ert_outputs out = {pred, ex, conf, NULL};
    ck_assert_int_eq(ert_session_run(s, p, &b, &out), ERT_OK);
    ck_assert_int_eq(ert_session_run(s, p, &b, NULL), ERT_ERR_INVALID_ARGUMENT);
    ert_policy_free(p);
    ert_session_free(s);
    ert_session_free(NULL);
}
END_TEST

START_TEST(bad_session_options) {
    ert_session_options opt = ert_session_options_default();
    ert_session *s = NULL;
    opt.max_batch = 0;
    ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("max_batch 0"));
    opt = ert_session_options_default();
    opt.device = "gpu";
    ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("device 'gpu': expected cpu or cuda:N"));
    const char *bad_devices[] = {"cuda:x", "cuda:-1", "cuda:", "cuda0", "cuda:1x"};
    for (int k = 0; k < 5; ++k) {
        opt.device = bad_devices[k];
        ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_ERR_INVALID_ARGUMENT);
        ck_assert(tu_error_has("expected cpu or cuda:N"));
    }
    /* cuda:0 is well formed: refused (no GPU here, or no CUDA backend) for another reason */
    opt.device = "cuda:0";
    if (ert_session_new(model, &opt, &s) == ERT_OK) ert_session_free(s);
    else ck_assert_ptr_null(strstr(ert_last_error(), "expected cpu or cuda:N"));
    opt.device = "cpu";
    opt.dtype = ERT_DTYPE_BF16;
    ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_ERR_UNSUPPORTED);
    ck_assert(tu_error_has("f32 only"));
    opt = ert_session_options_default();
    opt.threads = ERT_MAX_THREADS + 1;
    ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("threads 257: expected 1..256, or 0 for the default"));
    opt.threads = -1;
    ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("threads -1: expected 1..256"));
    opt.threads = 0;
    const char *bad[] = {"0", "two", "257", "4x", "-3"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; ++i) {
        setenv("ERT_CPU_THREADS", bad[i], 1);
        const ert_status st = ert_session_new(model, &opt, &s);
        unsetenv("ERT_CPU_THREADS");
        ck_assert_int_eq(st, ERT_ERR_INVALID_ARGUMENT);
        char want[96];
        snprintf(want, sizeof want, "ERT_CPU_THREADS '%s': expected a whole number 1..256", bad[i]);
        ck_assert_msg(tu_error_has(want), "%s", ert_last_error());
    }
    ck_assert_ptr_null(s);
    /* a valid setting, and an explicit option, are taken */
    setenv("ERT_CPU_THREADS", "3", 1);
    ck_assert_msg(ert_session_new(model, &opt, &s) == ERT_OK, "%s", ert_last_error());
    unsetenv("ERT_CPU_THREADS");
    ert_session_free(s);
}
END_TEST

START_TEST(batch_of_one) {
    static outs a, b;
    run_all("entropy:0.8", ERT_MODE_COMPACT, 1, NULL, &a);
    run_all("entropy:0.8", ERT_MODE_COMPACT, MAXB, NULL, &b);
    ck_assert(memcmp(a.pred, b.pred, sizeof a.pred) == 0);
    ck_assert(memcmp(a.exit, b.exit, sizeof a.exit) == 0);
    for (int i = 0; i < N; ++i) ck_assert_float_eq_tol(a.conf[i], b.conf[i], 1e-6f);
}
END_TEST

/* Resident memory of this process, from /proc/self/statm. */
static double resident_mb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    long size = 0, resident = 0;
    ck_assert_int_eq(fscanf(f, "%ld %ld", &size, &resident), 2);
    fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE) / (1 << 20);
}

/* Creates a session with ERT_CPU_MEMORY_LIMIT set to `limit` (NULL: unset) for that
 * call only; the message goes to msg. */
static ert_status session_with_limit(const char *limit, const ert_session_options *opt, ert_session **s, char *msg,
                                     size_t len) {
    if (limit) setenv("ERT_CPU_MEMORY_LIMIT", limit, 1);
    const ert_status st = ert_session_new(model, opt, s);
    snprintf(msg, len, "%s", st ? ert_last_error() : "");
    unsetenv("ERT_CPU_MEMORY_LIMIT");
    return st;
}

/* Sessions sized past what the CPU sessions of a process may hold are refused at
 * creation with a message that says what to change (not killed later by the kernel's
 * OOM killer); the limit counts every session of the process; a session within it takes
 * memory as its rows are used, not at creation, and answers as a small one does. */
START_TEST(oversized_session_is_refused_and_buffers_are_lazy) {
    char msg[1024];
    ert_session_options opt = ert_session_options_default();
    opt.max_batch = 1 << 20; /* 1M rows of tiny-f32: ~0.1 GB per activation buffer, ~0.9 GB in all */
    ert_session *s = NULL, *t = NULL;
    ck_assert_int_eq(session_with_limit("500000000", &opt, &s, msg, sizeof msg), ERT_ERR_OUT_OF_MEMORY);
    ck_assert_msg(strstr(msg, "session on 'cpu': buffers for 1048576 rows: cpu backend: ") &&
                      strstr(msg, "more than ERT_CPU_MEMORY_LIMIT's 476.8 MB (lower the batch size)"),
                  "%s", msg);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(session_with_limit("1G", &opt, &s, msg, sizeof msg), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(msg, "ERT_CPU_MEMORY_LIMIT '1G': expected a whole number of bytes > 0"), "%s", msg);
    /* two sessions that fit one at a time but not together */
    ck_assert_msg(session_with_limit("1500000000", &opt, &s, msg, sizeof msg) == ERT_OK, "%s", msg);
    ck_assert_int_eq(session_with_limit("1500000000", &opt, &t, msg, sizeof msg), ERT_ERR_OUT_OF_MEMORY);
    ck_assert_msg(strstr(msg, "this process's CPU sessions hold"), "%s", msg);
    ert_session_free(s);
    ck_assert_msg(session_with_limit("1500000000", &opt, &t, msg, sizeof msg) == ERT_OK, "%s", msg);
    ert_session_free(t);
    s = t = NULL;
#ifdef ERT_ASAN
    return; /* under ASan the backend zeroes heap blocks instead of mapping them */
#endif
    /* laziness: creating the ~0.9 GB session makes little of it resident */
    const double before = resident_mb();
    ck_assert_msg(session_with_limit("64000000000", &opt, &s, msg, sizeof msg) == ERT_OK, "%s", msg);
    const double grown = resident_mb() - before;
    ck_assert_msg(grown < 200, "creating a session made %.0f MB resident", grown);
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("confidence:0.5", &p), ERT_OK);
    int32_t pred[5], ex[5], want_pred[5], want_ex[5];
    float conf[5], want_conf[5];
    ert_batch b = {.input = x, .n = 5};
    ert_outputs o = {pred, ex, conf, NULL};
    ck_assert_int_eq(ert_session_run(s, p, &b, &o), ERT_OK);
    ert_session_free(s);
    /* the same answers as a small session */
    opt.max_batch = 8;
    ck_assert_int_eq(ert_session_new(model, &opt, &s), ERT_OK);
    ert_outputs w = {want_pred, want_ex, want_conf, NULL};
    ck_assert_int_eq(ert_session_run(s, p, &b, &w), ERT_OK);
    ck_assert(memcmp(pred, want_pred, sizeof pred) == 0 && memcmp(ex, want_ex, sizeof ex) == 0);
    ck_assert(memcmp(conf, want_conf, sizeof conf) == 0);
    ert_session_free(s);
    ert_policy_free(p);
}
END_TEST

/* The profile's bytes by hand on tiny-f32, 10 samples under `none` (every one reaches
 * every stage), 4-byte floats. A residual block counts its sub-ops and then y += x (read
 * two, write one). Stage 1: body residual(layernorm 16, linear 16->16): weights 32 + 272,
 * activations 3x16 + (16+16) + (16+16) a sample; head layernorm 16 + linear 16->5:
 * weights 32 + 85, activations 32 + 21. Stage 3: body residual(linear 8->8): weights 72,
 * activations 24 + 16; head linear 8->5: weights 45, activations 13. */
START_TEST(profile_bytes_by_hand) {
    ert_session_options so = ert_session_options_default();
    so.max_batch = 10;
    ert_session *s = NULL;
    ck_assert_int_eq(ert_session_new(model, &so, &s), ERT_OK);
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("none", &p), ERT_OK);
    int32_t pred[10], ex[10];
    float conf[10];
    ert_batch b = {.input = x, .n = 10};
    ert_outputs out = {pred, ex, conf, NULL};
    ck_assert_int_eq(ert_session_run(s, p, &b, &out), ERT_OK);
    ert_profile prof;
    ck_assert_int_eq(ert_session_profile(s, &prof), ERT_OK);
    ck_assert_int_eq(prof.stage[1].rows, 10);
    ck_assert_int_eq(prof.stage[3].rows, 10);
    ck_assert_double_eq(prof.stage[1].bytes, 4.0 * (304 + 10 * 112 + 117 + 10 * 53));
    ck_assert_double_eq(prof.stage[3].bytes, 4.0 * (72 + 10 * 40 + 45 + 10 * 13));
    ert_policy_free(p);
    ert_session_free(s);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("session");
    TCase *tc = tcase_create("session");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, every_sample_gets_one_result);
    tcase_add_test(tc, masked_and_compact_agree_exactly);
    tcase_add_test(tc, full_ignores_exits);
    tcase_add_test(tc, profile_bytes_by_hand);
    tcase_add_test(tc, oracle_is_earliest_correct_exit);
    tcase_add_test(tc, scheduled_exits_where_told);
    tcase_add_test(tc, profile_counts_rows);
    tcase_add_test(tc, bad_input_is_refused);
    tcase_add_test(tc, bad_session_options);
    tcase_add_test(tc, batch_of_one);
    tcase_add_test(tc, oversized_session_is_refused_and_buffers_are_lazy);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(suite()); }
