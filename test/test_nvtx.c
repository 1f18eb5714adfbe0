/* NVTX ranges, checked on the CPU: ctest points NVTX_INJECTION64_PATH at the recorder
 * library (test/nvtx_inject.c), which logs every domain, category, registered string,
 * push and pop to $ERT_NVTX_LOG. One compact-mode run of tiny-f32 (then a second batch on
 * the same session) must produce exactly: domain "exitrt" and the six named categories,
 * registered once; batch > upload, stage k > (exit head e, decide e, compact e, host
 * sync e) for the stages that ran, download; every push popped; one opaque ARGB colour
 * per category; payload = the rows the range works on, matching the session profile.
 *
 * A second scenario measures three sweep points interleaved: every batch of theirs is a
 * "sweep point" range (category sweep) named by policy and data, and they take turns.
 *
 * NVTX initialises once per process, at its first call: the environment is set before
 * anything runs. Each test runs in its own forked process (check's default), so each
 * starts a fresh log; the second reads only what follows its own first run, so it also
 * holds with CK_FORK=no. Exit 77 (skipped) when the build has no NVTX headers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#if !defined(ERT_WITH_NVTX) || !ERT_WITH_NVTX

int main(void) {
    printf("skipped: built without the NVTX3 headers (nvtx3/nvToolsExt.h not found), ranges are no-ops\n");
    return ERT_TEST_SKIP;
}

#else

#include <unistd.h>

#include "exitrt/evaluate.h"
#include "exitrt/exitrt.h"

enum { IN = 24, N1 = 40, N2 = 17, MAXB = 64, MAX_LINES = 4096, MAX_EVENTS = 512 };

/* ---------------------------------------------------------------- the recorded log */

static char log_path[512];
static char *lines[MAX_LINES];
static int num_lines;

static void log_read(void) {
    for (int i = 0; i < num_lines; ++i) free(lines[i]);
    num_lines = 0;
    FILE *f = fopen(log_path, "r");
    ck_assert_msg(f != NULL, "no NVTX log at %s: the injection library was not loaded (NVTX_INJECTION64_PATH=%s)",
                  log_path, getenv("NVTX_INJECTION64_PATH"));
    char buf[512];
    while (fgets(buf, sizeof buf, f)) {
        buf[strcspn(buf, "\n")] = '\0';
        ck_assert_int_lt(num_lines, MAX_LINES);
        lines[num_lines++] = strdup(buf);
    }
    fclose(f);
}

static void log_dump(void) {
    fprintf(stderr, "---- recorded NVTX log (%s), string lines left out ----\n", log_path);
    for (int i = 0; i < num_lines; ++i)
        if (strncmp(lines[i], "string ", 7) != 0) fprintf(stderr, "%4d  %s\n", i, lines[i]);
}

#define check(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) log_dump();                                                                                       \
        ck_assert_msg(cond, __VA_ARGS__);                                                                              \
    } while (0)

/* ---------------------------------------------------------------- expected ranges */

static const char *const category_names[] = {NULL, "batch", "stage", "exit", "compact", "transfer", "sweep"};
enum { CAT_BATCH = 1, CAT_STAGE, CAT_EXIT, CAT_COMPACT, CAT_TRANSFER, CAT_SWEEP, NUM_CAT = CAT_SWEEP };

typedef struct event {
    int push;         /* 1 push, 0 pop */
    int depth;
    unsigned category;
    long long payload;
    char text[32];
} event;

typedef struct expected {
    event ev[MAX_EVENTS];
    int n, depth;
} expected;

static void expect_push(expected *x, const char *text, unsigned category, long long payload) {
    ck_assert_int_lt(x->n, MAX_EVENTS);
    event *e = &x->ev[x->n++];
    *e = (event){.push = 1, .depth = x->depth++, .category = category, .payload = payload};
    snprintf(e->text, sizeof e->text, "%s", text);
}

static void expect_pop(expected *x) {
    ck_assert_int_lt(x->n, MAX_EVENTS);
    x->ev[x->n++] = (event){.push = 0, .depth = --x->depth};
}

static void expect_leaf(expected *x, const char *fmt, int index, unsigned category, long long payload) {
    char text[32];
    snprintf(text, sizeof text, fmt, index);
    expect_push(x, text, category, payload);
    expect_pop(x);
}

/* The ranges of one compact-mode run of `n` samples, from the model's layout and the
 * rows the profile says entered each stage. */
static void expect_batch(expected *x, const ert_model *m, const ert_profile *p, int n) {
    const int S = ert_model_num_stages(m);
    expect_push(x, "batch", CAT_BATCH, n);
    expect_leaf(x, "upload", 0, CAT_TRANSFER, n);
    for (int k = 0; k < S && p->stage[k].rows > 0; ++k) {
        ert_stage_info info;
        ck_assert_int_eq(ert_model_stage_info(m, k, &info), ERT_OK);
        const int rows = p->stage[k].rows, e = info.exit_index;
        char text[32];
        snprintf(text, sizeof text, "stage %d", k);
        expect_push(x, text, CAT_STAGE, rows);
        if (info.has_exit) {
            expect_leaf(x, "exit head %d", e, CAT_EXIT, rows);
            expect_leaf(x, "decide %d", e, CAT_EXIT, rows);
            if (k < S - 1) { /* the last stage keeps no survivors to gather */
                expect_leaf(x, "compact %d", e, CAT_COMPACT, rows);
                expect_leaf(x, "host sync %d", e, CAT_COMPACT, rows);
            }
        }
        expect_pop(x);
    }
    expect_leaf(x, "download", 0, CAT_TRANSFER, n);
    expect_pop(x);
    ck_assert_int_eq(x->depth, 0);
}

/* ---------------------------------------------------------------- one scenario */

static float input[(N1 + N2) * IN];

/* Runs one batch; checks its outputs and profile against each other and returns the
 * profile. */
static void run_batch(ert_session *s, const ert_model *m, const ert_policy *p, const float *x, int n,
                      ert_profile *prof) {
    int32_t pred[MAXB], exit_at[MAXB];
    float conf[MAXB];
    ert_batch b = {.input = x, .n = n};
    ert_outputs out = {.pred = pred, .exit_index = exit_at, .confidence = conf};
    ck_assert_msg(ert_session_run(s, p, &b, &out) == ERT_OK, "%s", ert_last_error());
    ck_assert_int_eq(ert_session_profile(s, prof), ERT_OK);
    /* rows entering stage k = samples that did not leave at an exit before it */
    int exits_before = 0;
    for (int k = 0; k < ert_model_num_stages(m); ++k) {
        int want = 0;
        for (int i = 0; i < n; ++i) want += exit_at[i] >= exits_before;
        ck_assert_int_eq(prof->stage[k].rows, want);
        ert_stage_info info;
        ck_assert_int_eq(ert_model_stage_info(m, k, &info), ERT_OK);
        exits_before += info.has_exit;
    }
}

START_TEST(ranges_of_a_compact_run) {
    ert_model *m = NULL;
    ck_assert_msg(ert_model_load(tu_path("test/fixtures/tiny-f32"), &m) == ERT_OK, "%s", ert_last_error());
    /* the fixture: stage0 exit 0, stage1 exit 1, stage2 no exit, stage3 exit 2 */
    ck_assert_int_eq(ert_model_num_stages(m), 4);
    ck_assert_int_eq(ert_model_input_size(m), IN);
    const int want_exit[4] = {0, 1, -1, 2};
    for (int k = 0; k < 4; ++k) {
        ert_stage_info info;
        ck_assert_int_eq(ert_model_stage_info(m, k, &info), ERT_OK);
        ck_assert_int_eq(info.exit_index, want_exit[k]);
    }
    srand(11);
    for (int i = 0; i < (N1 + N2) * IN; ++i) input[i] = (float)rand() / (float)RAND_MAX;

    ert_session_options opt = ert_session_options_default();
    opt.max_batch = MAXB;
    opt.mode = ERT_MODE_COMPACT;
    ert_session *s = NULL;
    ck_assert_msg(ert_session_new(m, &opt, &s) == ERT_OK, "%s", ert_last_error());
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("confidence:0.45", &p), ERT_OK);

    static expected x;
    ert_profile prof1, prof2;
    run_batch(s, m, p, input, N1, &prof1);
    ck_assert_int_eq(prof1.stage[0].rows, N1);
    ck_assert_msg(prof1.stage[1].rows > 0 && prof1.stage[1].rows < N1, "want some samples to leave at exit 0: %d of %d go on",
                  prof1.stage[1].rows, N1);
    expect_batch(&x, m, &prof1, N1);
    run_batch(s, m, p, input + N1 * IN, N2, &prof2);
    expect_batch(&x, m, &prof2, N2);

    log_read();

    /* Registrations: one domain, six categories, every string once, all before the
     * first range and none after (the second batch registers nothing). */
    int domains = 0, categories = 0, strings = 0, first_range = -1;
    int seen_cat[NUM_CAT + 1] = {0};
    static const char *registered[512];
    for (int i = 0; i < num_lines; ++i) {
        const char *l = lines[i];
        if (!strncmp(l, "push ", 5) || !strncmp(l, "pop ", 4)) {
            if (first_range < 0) first_range = i;
            continue;
        }
        check(first_range < 0, "line %d after the first range: %s", i, l);
        if (!strncmp(l, "domain ", 7)) {
            check(!strcmp(l, "domain exitrt"), "line %d: %s", i, l);
            ++domains;
        } else if (!strncmp(l, "category ", 9)) {
            unsigned id = 0;
            char name[64] = "";
            check(sscanf(l, "category exitrt %u %63s", &id, name) == 2, "line %d: %s", i, l);
            check(id >= 1 && id <= NUM_CAT && !strcmp(name, category_names[id]) && !seen_cat[id], "line %d: %s", i, l);
            seen_cat[id] = 1;
            ++categories;
        } else if (!strncmp(l, "string exitrt ", 14)) {
            const char *text = strchr(l + 14, ' ');
            check(text != NULL, "line %d: %s", i, l);
            ++text;
            for (int j = 0; j < strings; ++j) check(strcmp(registered[j], text) != 0, "'%s' registered twice", text);
            check(strings < 512, "too many strings");
            registered[strings++] = text;
        } else {
            check(0, "unexpected line %d: %s", i, l);
        }
    }
    check(domains == 1, "%d domains", domains);
    check(categories == NUM_CAT, "%d categories", categories);
    /* batch, upload, download, graph launch, sweep point; a name per stage; four per exit */
    check(strings == 5 + ERT_MAX_STAGES + 4 * ERT_MAX_EXITS, "%d registered strings", strings);
    check(first_range >= 0, "no ranges recorded");
    /* Every range text the run uses was registered (no ASCII fallback). */
    for (int j = 0; j < x.n; ++j) {
        if (!x.ev[j].push) continue;
        int found = 0;
        for (int r = 0; r < strings && !found; ++r) found = !strcmp(registered[r], x.ev[j].text);
        check(found, "'%s' was not registered", x.ev[j].text);
    }

    /* The ranges, in order, exactly. */
    char color_of[NUM_CAT + 1][16] = {{0}};
    int got = 0;
    for (int i = first_range; i < num_lines; ++i, ++got) {
        const char *l = lines[i];
        check(got < x.n, "line %d: more ranges than expected (%d): %s", i, x.n, l);
        const event *e = &x.ev[got];
        if (e->push) {
            int depth = -1;
            unsigned cat = 0;
            char color[16] = "", payload[32] = "", text[64] = "";
            const int f = sscanf(l, "push exitrt %d %u %15s %31s %63[^\n]", &depth, &cat, color, payload, text);
            check(f == 5, "line %d: want push '%s', got: %s", i, e->text, l);
            check(!strcmp(text, e->text), "line %d: want push '%s', got: %s", i, e->text, l);
            check(depth == e->depth, "line %d: '%s' at depth %d, want %d", i, text, depth, e->depth);
            check(cat == e->category, "line %d: '%s' in category %u, want %u (%s)", i, text, cat, e->category,
                  category_names[e->category]);
            check(strcmp(payload, "none") != 0 && atoll(payload) == e->payload, "line %d: '%s' payload %s, want %lld",
                  i, text, payload, e->payload);
            check(strlen(color) == 8 && !strncmp(color, "ff", 2), "line %d: '%s' colour %s, want opaque ARGB", i,
                  text, color);
            if (!color_of[cat][0]) snprintf(color_of[cat], sizeof color_of[cat], "%s", color);
            check(!strcmp(color_of[cat], color), "line %d: '%s' colour %s, but category %s has %s", i, text, color,
                  category_names[cat], color_of[cat]);
        } else {
            char want[32];
            snprintf(want, sizeof want, "pop exitrt %d", e->depth);
            check(!strcmp(l, want), "line %d: want '%s', got: %s", i, want, l);
        }
    }
    check(got == x.n, "%d range events recorded, want %d", got, x.n);
    /* one colour per category the run uses, five different ones */
    for (int a = 1; a <= 5; ++a) {
        check(color_of[a][0], "no range of category %s", category_names[a]);
        for (int b = 1; b < a; ++b)
            check(strcmp(color_of[a], color_of[b]) != 0, "categories %s and %s share colour %s", category_names[a],
                  category_names[b], color_of[a]);
    }

    for (int i = 0; i < num_lines; ++i) free(lines[i]);
    num_lines = 0;
    ert_policy_free(p);
    ert_session_free(s);
    ert_model_free(m);
}
END_TEST

/* A sweep's batches in the timeline: each is a "sweep point" range (category sweep)
 * named by its policy and data, around the session's own batch range, and the points
 * take turns batch by batch (ert_sweep_measure_jobs interleaves them; measuring each
 * point's pass in turn would show every batch of one point, then the next's). */
START_TEST(sweep_points_take_turns_in_the_timeline) {
    ert_model *m = NULL;
    ck_assert_msg(ert_model_load(tu_path("test/fixtures/tiny-f32"), &m) == ERT_OK, "%s", ert_last_error());
    srand(12);
    for (int i = 0; i < (N1 + N2) * IN; ++i) input[i] = (float)rand() / (float)RAND_MAX;
    ert_session_options opt = ert_session_options_default();
    opt.max_batch = MAXB;
    ert_session *s = NULL;
    ck_assert_msg(ert_session_new(m, &opt, &s) == ERT_OK, "%s", ert_last_error());
    ert_dataset clean = {.n = N1 + N2, .sample_size = IN, .ndim = 1, .shape = {IN}, .x = input, .name = "clean"};
    ert_dataset brief = clean;
    brief.n = 30;
    snprintf(brief.name, sizeof brief.name, "brief");
    const char *specs[] = {"fixed:0", "none", "confidence:0.45"};
    const ert_dataset *data[] = {&clean, &brief, &clean};
    ert_policy *pol[3];
    ert_measure_job jobs[3];
    for (int j = 0; j < 3; ++j) {
        ck_assert_int_eq(ert_policy_parse(specs[j], &pol[j]), ERT_OK);
        jobs[j] = (ert_measure_job){pol[j], data[j], NULL};
    }
    /* One plain run first: NVTX has initialised (and opened the log) before the mark. */
    ert_profile prof;
    run_batch(s, m, pol[1], input, 5, &prof);
    log_read();
    const int mark = num_lines;

    ert_sweep_options so = ert_sweep_options_default();
    so.batch = 20;
    so.warmup = 1;
    so.reps = 2;
    ert_sweep_row rows[3];
    ck_assert_msg(ert_sweep_measure_jobs(s, jobs, 3, &so, NULL, rows) == ERT_OK, "%s", ert_last_error());
    log_read();

    /* clean: batches of 20, 20, 17; brief: 20, 10. Per pass: the warm-ups (each job's
     * first batch), then rounds 1, 2, 3 of the jobs that have that batch. */
    static const struct {
        int job, rows, warm;
    } want[] = {{0, 20, 1}, {1, 20, 1}, {2, 20, 1}, {0, 20, 0}, {1, 20, 0}, {2, 20, 0},
                {0, 20, 0}, {1, 10, 0}, {2, 20, 0}, {0, 17, 0}, {2, 17, 0}};
    const int per_pass = (int)(sizeof want / sizeof *want), total = 2 * per_pass;
    int got = 0, batches = 0, sweep_depth = -1;
    char sweep_color[16] = "";
    for (int i = mark; i < num_lines; ++i) {
        int depth = -1;
        unsigned cat = 0;
        char color[16] = "", payload[32] = "", text[600] = "";
        if (sscanf(lines[i], "push exitrt %d %u %15s %31s %599[^\n]", &depth, &cat, color, payload, text) != 5)
            continue;
        if (depth == 1 && !strcmp(text, "batch")) {
            check(sweep_depth == 0, "line %d: a session batch outside a sweep point: %s", i, lines[i]);
            ++batches;
        }
        if (depth != 0) continue;
        check(got < total, "line %d: more sweep points than %d: %s", i, total, lines[i]);
        const int w = got % per_pass;
        char expect[600];
        snprintf(expect, sizeof expect, "ascii:%s%s on %s", want[w].warm ? "warm-up " : "", specs[want[w].job],
                 data[want[w].job]->name);
        check(!strcmp(text, expect), "line %d: sweep range %d is '%s', want '%s'", i, got, text, expect);
        check(cat == CAT_SWEEP, "line %d: category %u, want %d (sweep)", i, cat, CAT_SWEEP);
        check(atoll(payload) == want[w].rows, "line %d: payload %s, want %d rows", i, payload, want[w].rows);
        if (!sweep_color[0]) snprintf(sweep_color, sizeof sweep_color, "%s", color);
        check(!strcmp(color, sweep_color) && !strncmp(color, "ff", 2), "line %d: colour %s", i, color);
        sweep_depth = 0;
        ++got;
    }
    check(got == total, "%d sweep point ranges, want %d", got, total);
    check(batches == total, "%d session batches inside sweep points, want %d", batches, total);
    /* and every range closed */
    int open = 0;
    for (int i = 0; i < num_lines; ++i) open += !strncmp(lines[i], "push ", 5) - !strncmp(lines[i], "pop ", 4);
    check(open == 0, "%d ranges left open", open);

    for (int i = 0; i < num_lines; ++i) free(lines[i]);
    num_lines = 0;
    for (int j = 0; j < 3; ++j) ert_policy_free(pol[j]);
    ert_session_free(s);
    ert_model_free(m);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("nvtx");
    TCase *tc = tcase_create("nvtx");
    tcase_add_test(tc, ranges_of_a_compact_run);
    tcase_add_test(tc, sweep_points_take_turns_in_the_timeline);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    /* Before any NVTX call: NVTX reads NVTX_INJECTION64_PATH once, at its first call. */
    const char *inject = getenv("NVTX_INJECTION64_PATH");
    if (!inject || !*inject || access(inject, R_OK) != 0) {
        fprintf(stderr, "NVTX_INJECTION64_PATH must name the recorder library (libert_nvtx_inject.so); "
                        "ctest sets it. Got: %s\n", inject ? inject : "(unset)");
        return EXIT_FAILURE;
    }
    /* $ERT_NVTX_LOG, if set, is kept; otherwise a temporary file is used and removed. */
    const char *given = getenv("ERT_NVTX_LOG");
    char dir[64] = "";
    if (given && *given) {
        snprintf(log_path, sizeof log_path, "%s", given);
        remove(log_path);
    } else {
        snprintf(dir, sizeof dir, "/tmp/ert-nvtx-XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return EXIT_FAILURE;
        }
        snprintf(log_path, sizeof log_path, "%s/nvtx.log", dir);
        setenv("ERT_NVTX_LOG", log_path, 1);
    }
    const int rc = tu_run(suite());
    if (dir[0]) {
        remove(log_path);
        rmdir(dir);
    }
    return rc;
}

#endif
