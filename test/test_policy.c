/* Exit policies: parsing (every error with its own message), the shared exit math on
 * hand-built cases, and the CPU decide and compact kernels' invariants. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "exit_math.h"
#include "testutil.h"

static void parse_ok(const char *spec, const char *canonical) {
    ert_policy *p = NULL;
    ck_assert_msg(ert_policy_parse(spec, &p) == ERT_OK, "%s: %s", spec, ert_last_error());
    char buf[256];
    ck_assert_str_eq(ert_policy_to_string(p, buf, sizeof buf), canonical);
    ert_policy_free(p);
}

static void parse_fails(const char *spec, ert_status status, const char *needle) {
    ert_policy *p = (ert_policy *)0x1;
    ert_status s = ert_policy_parse(spec, &p);
    ck_assert_msg(s == status, "%s: got %s (%s)", spec, ert_status_to_string(s), ert_last_error());
    ck_assert_ptr_null(p);
    ck_assert(tu_error_has(needle));
}

START_TEST(parse_specs) {
    parse_ok("none", "none");
    parse_ok("confidence:0.9", "confidence:0.9");
    parse_ok("entropy:0.2,0.3,0.4", "entropy:0.2,0.3,0.4");
    parse_ok("margin:0.5;temp=1.5", "margin:0.5;temp=1.5");
    parse_ok("patience:3", "patience:3");
    parse_ok("fixed:0", "fixed:0");
    parse_ok("oracle", "oracle");
    parse_ok("scheduled", "scheduled");
    parse_ok("scheduled:hazard=0.15,seed=7", "scheduled:hazard=0.15,seed=7");
    parse_ok("scheduled:seed=0,hazard=1", "scheduled:hazard=1,seed=0");
    parse_fails("confidence", ERT_ERR_INVALID_ARGUMENT, "needs a threshold");
    parse_fails("confidence:1.5", ERT_ERR_INVALID_ARGUMENT, "threshold '1.5' is not a number in [0, 1]");
    parse_fails("confidence:nan", ERT_ERR_INVALID_ARGUMENT, "threshold 'nan'");
    parse_fails("entropy:0.2,x", ERT_ERR_INVALID_ARGUMENT, "threshold 'x'");
    parse_fails("bogus:1", ERT_ERR_INVALID_ARGUMENT, "unknown kind 'bogus'");
    parse_fails("patience:0", ERT_ERR_INVALID_ARGUMENT, "patience N >= 1");
    parse_fails("fixed:-1", ERT_ERR_INVALID_ARGUMENT, "exit number K >= 0");
    parse_fails("none:2", ERT_ERR_INVALID_ARGUMENT, "takes no argument");
    parse_fails("scheduled:hazard=2", ERT_ERR_INVALID_ARGUMENT, "'hazard=2'");
    parse_fails("confidence:0.9;tmp=2", ERT_ERR_INVALID_ARGUMENT, "unknown option 'tmp=2'");
    parse_fails("confidence:0.9;temp=0", ERT_ERR_INVALID_ARGUMENT, "temperature '0'");
    parse_fails("/nonexistent/policy.json", ERT_ERR_IO, "cannot open");
}
END_TEST

/* A short buffer gets the canonical text's prefix, NUL-terminated, and nothing past it
 * is written; a zero-length buffer is left alone. */
START_TEST(to_string_truncates) {
    const char *specs[] = {"confidence:0.25,0.5;temp=1.5,2", "patience:12", "fixed:3",
                           "scheduled:hazard=0.125,seed=12345", "none"};
    for (int k = 0; k < 5; ++k) {
        ert_policy *p = NULL;
        ck_assert_int_eq(ert_policy_parse(specs[k], &p), ERT_OK);
        const size_t full = strlen(specs[k]);
        for (size_t len = 0; len <= full + 1; ++len) {
            char buf[64];
            memset(buf, 'X', sizeof buf);
            ck_assert_ptr_eq(ert_policy_to_string(p, buf, len), buf);
            for (size_t i = len; i < sizeof buf; ++i) ck_assert_msg(buf[i] == 'X', "%s, len %zu: byte %zu written", specs[k], len, i);
            if (len == 0) continue;
            ck_assert_uint_eq(strlen(buf), len - 1 < full ? len - 1 : full);
            ck_assert_msg(strncmp(buf, specs[k], strlen(buf)) == 0, "%s, len %zu: '%s'", specs[k], len, buf);
        }
        ert_policy_free(p);
    }
}
END_TEST

START_TEST(parse_json_files) {
    const char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/a.json", dir);
    tu_write_text(path, "{\"policy\": \"entropy:0.25\"}");
    parse_ok(path, "entropy:0.25");
    snprintf(path, sizeof path, "%s/b.json", dir);
    tu_write_text(path, "{\"kind\": \"confidence\", \"thresholds\": [0.9, 0.8], \"temperatures\": [1.5, 2]}");
    parse_ok(path, "confidence:0.9,0.8;temp=1.5,2");
    snprintf(path, sizeof path, "%s/c.json", dir);
    tu_write_text(path, "{\"kind\": \"patience\", \"patience\": 2}");
    parse_ok(path, "patience:2");
    snprintf(path, sizeof path, "%s/d.json", dir);
    tu_write_text(path, "[1, 2]");
    parse_fails(path, ERT_ERR_FORMAT, "not a JSON object");
    snprintf(path, sizeof path, "%s/e.json", dir);
    tu_write_text(path, "{\"kind\": \"confidence\", \"thresholds\": [2]}");
    parse_fails(path, ERT_ERR_INVALID_ARGUMENT, "e.json");
}
END_TEST

/* ---------------------------------------------------------------- exit math */

static ert_exit_params params(int kind, float t) {
    ert_exit_params p;
    memset(&p, 0, sizeof p);
    p.kind = kind;
    p.num_exits = 4;
    p.patience = 2;
    p.fixed_exit = 1;
    for (int e = 0; e < ERT_MAX_EXITS; ++e) {
        p.threshold[e] = t;
        p.inv_temp[e] = 1.0f;
    }
    return p;
}

static int decide(const ert_exit_params *p, int e, int last, const float *z, int C, ert_sample_state *st) {
    ert_softmax_stats s = ert_softmax_stats_compute(z, C, p->inv_temp[e]);
    return ert_exit_decide(p, e, last, &s, st);
}

START_TEST(policies_on_hand_built_cases) {
    const float even[2] = {0, 0}, peaked[2] = {100, 0}, ln3[2] = {1.0986123f, 0}; /* p1 = 0.75 */
    ert_sample_state st = {.label = -1, .last_pred = -1};
    ert_exit_params p = params(ERT_POLICY_CONFIDENCE, 0.75f);
    ck_assert_int_eq(decide(&p, 0, 0, even, 2, &st), 0);
    p.threshold[0] = 0.74f;
    ck_assert_int_eq(decide(&p, 0, 0, ln3, 2, &st), 1);
    p.threshold[0] = 0.76f;
    ck_assert_int_eq(decide(&p, 0, 0, ln3, 2, &st), 0);
    ck_assert_int_eq(decide(&p, 0, 1, ln3, 2, &st), 1); /* the last exit always exits */
    p.threshold[0] = 0.5f;                               /* >=: exactly at the threshold exits */
    ck_assert_int_eq(decide(&p, 0, 0, even, 2, &st), 1);

    /* temperature 2 on logits (2, 0): p1 = 1 / (1 + e^-1) = 0.7311 */
    const float two[2] = {2, 0};
    p.inv_temp[0] = 0.5f;
    p.threshold[0] = 0.73f;
    ck_assert_int_eq(decide(&p, 0, 0, two, 2, &st), 1);
    p.threshold[0] = 0.732f;
    ck_assert_int_eq(decide(&p, 0, 0, two, 2, &st), 0);

    p = params(ERT_POLICY_ENTROPY, 0.01f);
    ck_assert_int_eq(decide(&p, 0, 0, peaked, 2, &st), 1);
    ck_assert_int_eq(decide(&p, 0, 0, even, 2, &st), 0); /* uniform: normalised entropy 1 */
    p.threshold[0] = 1.0f;
    ck_assert_int_eq(decide(&p, 0, 0, even, 2, &st), 1);

    p = params(ERT_POLICY_MARGIN, 0.5f); /* margin of ln3: 0.75 - 0.25 = 0.5 */
    ck_assert_int_eq(decide(&p, 0, 0, ln3, 2, &st), 1);
    p.threshold[0] = 0.51f;
    ck_assert_int_eq(decide(&p, 0, 0, ln3, 2, &st), 0);
    const float tie[3] = {1, 1, 0};
    p.threshold[0] = 0.0f;
    ck_assert_int_eq(decide(&p, 0, 0, tie, 3, &st), 1); /* margin 0 >= 0 */
    p.threshold[0] = 1e-6f;
    ck_assert_int_eq(decide(&p, 0, 0, tie, 3, &st), 0);

    /* patience 2: predictions 1, 0, 0 -> leaves at the third exit */
    const float to1[2] = {0, 3}, to0[2] = {3, 0};
    p = params(ERT_POLICY_PATIENCE, 0);
    st = (ert_sample_state){.label = -1, .last_pred = -1};
    ck_assert_int_eq(decide(&p, 0, 0, to1, 2, &st), 0);
    ck_assert_int_eq(st.streak, 1);
    ck_assert_int_eq(decide(&p, 1, 0, to0, 2, &st), 0);
    ck_assert_int_eq(decide(&p, 2, 0, to0, 2, &st), 1);
    ck_assert_int_eq(st.streak, 2);

    p = params(ERT_POLICY_FIXED, 0);
    ck_assert_int_eq(decide(&p, 0, 0, peaked, 2, &st), 0);
    ck_assert_int_eq(decide(&p, 1, 0, even, 2, &st), 1);

    p = params(ERT_POLICY_ORACLE, 0);
    st = (ert_sample_state){.label = 1, .last_pred = -1};
    ck_assert_int_eq(decide(&p, 0, 0, to0, 2, &st), 0);
    ck_assert_int_eq(decide(&p, 1, 0, to1, 2, &st), 1);

    p = params(ERT_POLICY_SCHEDULED, 0);
    st = (ert_sample_state){.label = -1, .target_exit = 2, .last_pred = -1};
    ck_assert_int_eq(decide(&p, 1, 0, peaked, 2, &st), 0);
    ck_assert_int_eq(decide(&p, 2, 0, even, 2, &st), 1);

    p = params(ERT_POLICY_NONE, 0);
    ck_assert_int_eq(decide(&p, 2, 0, peaked, 2, &st), 0);
    ck_assert_int_eq(decide(&p, 3, 1, peaked, 2, &st), 1);
}
END_TEST

START_TEST(non_finite_scores_never_confident) {
    const float with_nan[3] = {5, NAN, 0}, with_inf[3] = {INFINITY, 0, 0}, all_nan[2] = {NAN, NAN};
    const int kinds[] = {ERT_POLICY_CONFIDENCE, ERT_POLICY_ENTROPY, ERT_POLICY_MARGIN, ERT_POLICY_PATIENCE,
                         ERT_POLICY_ORACLE};
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; ++k) {
        ert_exit_params p = params(kinds[k], 0.0f);
        p.threshold[0] = kinds[k] == ERT_POLICY_ENTROPY ? 1.0f : 0.0f; /* the loosest threshold */
        p.patience = 1;
        ert_sample_state st = {.label = 0, .last_pred = 0, .streak = 5};
        ck_assert_int_eq(decide(&p, 0, 0, with_nan, 3, &st), 0);
        ck_assert_int_eq(st.streak, 0);
        ck_assert_int_eq(decide(&p, 0, 0, with_inf, 3, &st), 0);
        ck_assert_int_eq(decide(&p, 0, 0, all_nan, 2, &st), 0);
        ck_assert_int_eq(decide(&p, 0, 1, with_nan, 3, &st), 1); /* but the last exit still exits */
    }
    ert_softmax_stats s = ert_softmax_stats_compute(with_nan, 3, 1.0f);
    ck_assert_int_eq(s.top1, 0); /* NaN never wins the argmax */
    ck_assert(isnan(s.p1));
}
END_TEST

START_TEST(hazard_schedule) {
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("scheduled:hazard=0.15,seed=1", &p), ERT_OK);
    int hist[12] = {0};
    const int n = 20000;
    for (int i = 0; i < n; ++i) {
        const int e = ert_policy_scheduled_exit(p, i, 12);
        ck_assert_int_eq(e, ert_policy_scheduled_exit(p, i, 12)); /* deterministic */
        hist[e]++;
    }
    /* P(exit k) = 0.85^k * 0.15 for k < 11; the rest reach the last exit. */
    for (int k = 0; k < 11; ++k) {
        const double want = pow(0.85, k) * 0.15;
        ck_assert_msg(fabs((double)hist[k] / n - want) < 0.012, "exit %d: %.4f vs %.4f", k, (double)hist[k] / n, want);
    }
    ck_assert(fabs((double)hist[11] / n - pow(0.85, 11)) < 0.012);
    ert_policy_free(p);
}
END_TEST

/* ---------------------------------------------------------------- CPU decide + compact */

START_TEST(decide_writes_at_original_index) {
    /* 5 rows that are samples 7, 2, 9, 0, 4 of a batch of 10; confidence 0.9. */
    enum { R = 5, N = 10, C = 3 };
    float logits[R * C] = {9, 0, 0, /* leaves, pred 0 */ 0, 0, 0, /* stays */ 0, 0, 9, /* leaves, pred 2 */
                           NAN, 9, 0, /* NaN: stays */ 0, 9, 0 /* done already: skipped */};
    int32_t orig[R] = {7, 2, 9, 0, 4};
    ert_sample_state st[R];
    for (int r = 0; r < R; ++r) st[r] = (ert_sample_state){.label = -1, .last_pred = -1, .done = r == 4};
    uint8_t keep[R];
    int32_t pred[N], ex[N];
    float conf[N];
    for (int i = 0; i < N; ++i) pred[i] = ex[i] = -7, conf[i] = -7.0f;
    ert_decide_args a = {.params = params(ERT_POLICY_CONFIDENCE, 0.9f), .exit_index = 1, .classes = C,
                         .rows = {R, NULL}, .logits = logits, .orig_index = orig, .state = st, .keep = keep,
                         .pred = pred, .exit_at = ex, .conf = conf};
    ert_backend *be;
    const ert_backend_ops *ops = ert_backend_cpu();
    ert_backend_config cfg = {.device = 0, .max_rows = R, .dtype = ERT_DTYPE_F32};
    ck_assert_int_eq(ops->create(&cfg, &be), ERT_OK);
    ck_assert_int_eq(ops->decide(be, &a), ERT_OK);
    const uint8_t want_keep[R] = {0, 1, 0, 1, 0};
    for (int r = 0; r < R; ++r) ck_assert_int_eq(keep[r], want_keep[r]);
    for (int i = 0; i < N; ++i) {
        if (i == 7 || i == 9) {
            ck_assert_int_eq(pred[i], i == 7 ? 0 : 2);
            ck_assert_int_eq(ex[i], 1);
            ck_assert_float_eq_tol(conf[i], 1.0f / (1.0f + 2.0f * expf(-9.0f)), 1e-6f);
        } else {
            ck_assert_int_eq(pred[i], -7); /* nobody else was written */
            ck_assert_int_eq(ex[i], -7);
        }
    }
    ck_assert_int_eq(st[0].done, 1);
    ck_assert_int_eq(st[1].done, 0);
    ops->destroy(be);
}
END_TEST

START_TEST(compact_keeps_order) {
    enum { R = 257, W = 5 };
    float x[R * W], y[R * W];
    int32_t idx[R], idx2[R], count = -1;
    ert_sample_state st[R], st2[R];
    uint8_t keep[R];
    srand(3);
    for (int r = 0; r < R; ++r) {
        for (int j = 0; j < W; ++j) x[r * W + j] = (float)(r * 100 + j);
        idx[r] = 1000 + r;
        st[r] = (ert_sample_state){.label = r, .target_exit = r % 7, .last_pred = r % 3, .streak = r % 2};
        keep[r] = (uint8_t)(rand() % 3 == 0);
    }
    ert_compact_args a = {.rows = {R, NULL}, .width = W, .x = x, .y = y, .idx_in = idx, .idx_out = idx2,
                          .state_in = st, .state_out = st2, .keep = keep, .count = &count};
    const ert_backend_ops *ops = ert_backend_cpu();
    ert_backend *be;
    ert_backend_config cfg = {.device = 0, .max_rows = R, .dtype = ERT_DTYPE_F32};
    ck_assert_int_eq(ops->create(&cfg, &be), ERT_OK);
    ck_assert_int_eq(ops->compact(be, &a), ERT_OK);
    int n = 0;
    for (int r = 0; r < R; ++r) {
        if (!keep[r]) continue;
        ck_assert_int_eq(idx2[n], 1000 + r); /* survivors keep their order */
        ck_assert_int_eq(st2[n].label, r);
        ck_assert_int_eq(st2[n].target_exit, r % 7);
        for (int j = 0; j < W; ++j) ck_assert_float_eq(y[n * W + j], x[r * W + j]);
        ++n;
    }
    ck_assert_int_eq(count, n);
    memset(keep, 0, sizeof keep);
    ck_assert_int_eq(ops->compact(be, &a), ERT_OK);
    ck_assert_int_eq(count, 0);
    ops->destroy(be);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("policy");
    TCase *tc = tcase_create("policy");
    tcase_add_test(tc, parse_specs);
    tcase_add_test(tc, to_string_truncates);
    tcase_add_test(tc, parse_json_files);
    tcase_add_test(tc, policies_on_hand_built_cases);
    tcase_add_test(tc, non_finite_scores_never_confident);
    tcase_add_test(tc, hazard_schedule);
    tcase_add_test(tc, decide_writes_at_original_index);
    tcase_add_test(tc, compact_keeps_order);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(suite()); }
