#include "backend_testutil.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "exitrt/exitrt.h"
#include "testutil.h"

static uint64_t rng;

void rng_seed(uint64_t seed) { rng = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull; }

uint32_t rng_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

float rng_uniform(float lo, float hi) { return lo + (hi - lo) * (float)(rng_u32() >> 8) * (1.0f / 16777216.0f); }

void fill_uniform(float *v, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; ++i) v[i] = rng_uniform(lo, hi);
}

size_t esize(ert_dtype dt) { return dt == ERT_DTYPE_BF16 || dt == ERT_DTYPE_F16 ? 2 : 4; }

void to_act(ert_dtype dt, const float *src, size_t n, void *dst) {
    for (size_t i = 0; i < n; ++i) {
        if (dt == ERT_DTYPE_BF16) ((uint16_t *)dst)[i] = ert_f32_to_bf16(src[i]);
        else if (dt == ERT_DTYPE_F16) ((uint16_t *)dst)[i] = ert_f32_to_f16(src[i]);
        else ((float *)dst)[i] = src[i];
    }
}

void from_act(ert_dtype dt, const void *src, size_t n, float *dst) {
    for (size_t i = 0; i < n; ++i) {
        if (dt == ERT_DTYPE_BF16) dst[i] = ert_bf16_to_f32(((const uint16_t *)src)[i]);
        else if (dt == ERT_DTYPE_F16) dst[i] = ert_f16_to_f32(((const uint16_t *)src)[i]);
        else dst[i] = ((const float *)src)[i];
    }
}

/* What the device stores of these values (the CPU then computes from the same numbers). */
void round_act(ert_dtype dt, float *v, size_t n) {
    if (dt == ERT_DTYPE_BF16)
        for (size_t i = 0; i < n; ++i) v[i] = ert_bf16_to_f32(ert_f32_to_bf16(v[i]));
    else if (dt == ERT_DTYPE_F16)
        for (size_t i = 0; i < n; ++i) v[i] = ert_f16_to_f32(ert_f32_to_f16(v[i]));
}

ert_backend *make(const ert_backend_ops *o, ert_dtype dt, int max_rows) {
    int buckets[ERT_MAX_BUCKETS], nb = 0;
    ck_assert_msg(ert_buckets_parse(NULL, max_rows, buckets, &nb) == ERT_OK, "%s", ert_last_error());
    ert_backend_config cfg = {
        .device = 0, .max_rows = max_rows, .dtype = dt, .bucket_rows = buckets, .num_buckets = nb};
    ert_backend *be = NULL;
    const ert_status st = o->create(&cfg, &be);
    ck_assert_msg(st == ERT_OK, "%s create (%s): %s", o->name, ert_dtype_name(dt), ert_last_error());
    return be;
}

void *balloc(const ert_backend_ops *o, ert_backend *be, size_t bytes) {
    void *p = NULL;
    ck_assert_msg(o->alloc(be, bytes, &p) == ERT_OK, "%s alloc %zu: %s", o->name, bytes, ert_last_error());
    return p;
}

/* Upload, then sync: the host buffers are reused right away. */
void bup(const ert_backend_ops *o, ert_backend *be, void *dst, const void *src, size_t bytes) {
    ck_assert_msg(o->upload(be, dst, src, bytes) == ERT_OK, "%s upload: %s", o->name, ert_last_error());
    ck_assert_msg(o->sync(be) == ERT_OK, "%s sync: %s", o->name, ert_last_error());
}

void bdown(const ert_backend_ops *o, ert_backend *be, void *dst, const void *src, size_t bytes) {
    ck_assert_msg(o->download(be, dst, src, bytes) == ERT_OK, "%s download: %s", o->name, ert_last_error());
}

void bfill(const ert_backend_ops *o, ert_backend *be, void *dst, size_t bytes, int byte) {
    void *h = malloc(bytes ? bytes : 1);
    memset(h, byte, bytes);
    bup(o, be, dst, h, bytes);
    free(h);
}

int32_t *bcount(const ert_backend_ops *o, ert_backend *be, int32_t v) {
    int32_t *p = balloc(o, be, sizeof v);
    bup(o, be, p, &v, sizeof v);
    return p;
}

tolerance tol_for(ert_dtype dt) {
    switch (dt) {
    case ERT_DTYPE_F32: return (tolerance){1e-4, 1e-4};
    case ERT_DTYPE_TF32: return (tolerance){2e-3, 2e-3};
    default: return (tolerance){2e-2, 2e-2};
    }
}

int all_bytes(const void *p, size_t n, int byte) {
    for (size_t i = 0; i < n; ++i)
        if (((const unsigned char *)p)[i] != (unsigned char)byte) return 0;
    return 1;
}

void check_graph_vs_eager(const ert_backend_ops *o, ert_backend *be, const ert_op *op, const void *x,
                          size_t y_row_bytes, int max_rows, const int *counts, int num_counts, const char *what) {
    int buckets[ERT_MAX_BUCKETS], nb = 0;
    ck_assert_msg(ert_buckets_parse(NULL, max_rows, buckets, &nb) == ERT_OK, "%s", ert_last_error());
    const size_t yb = (size_t)(max_rows + 1) * y_row_bytes; /* a guard row past the last */
    int32_t *count = bcount(o, be, 0);
    void *yg = balloc(o, be, yb), *ye = balloc(o, be, yb);
    unsigned char *hg = malloc(yb), *he = malloc(yb);
    ck_assert(hg && he);
    ert_graph *graph = NULL;
    ck_assert_msg(o->graph_begin(be, buckets, nb) == ERT_OK, "%s: %s", what, ert_last_error());
    if (o->op_run(be, op, (ert_rows){max_rows, count}, x, yg) != ERT_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ert_last_error());
        (void)o->graph_end(be, NULL);
        ck_abort_msg("%s: capturing the op: %s", what, msg);
    }
    /* transfers and syncs are no part of a graph: refused while one is captured, by name */
    const int32_t zero = 0;
    const ert_status up = o->upload(be, count, &zero, sizeof zero);
    char up_msg[512];
    snprintf(up_msg, sizeof up_msg, "%s", ert_last_error());
    const ert_status sy = o->sync(be);
    if (up != ERT_ERR_INVALID_ARGUMENT || !strstr(up_msg, "a transfer while a graph is being") ||
        sy != ERT_ERR_INVALID_ARGUMENT || !strstr(ert_last_error(), "a sync while a graph is being")) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ert_last_error());
        (void)o->graph_end(be, NULL);
        ck_abort_msg("%s: an upload (%d: %s) and a sync (%d: %s) during a capture", what, (int)up, up_msg, (int)sy,
                     msg);
    }
    ck_assert_msg(o->graph_end(be, &graph) == ERT_OK, "%s: %s", what, ert_last_error());
    for (int i = 0; i < num_counts; ++i) {
        /* a count above the op's rows is read as its rows (ert_rows) */
        const int c = counts[i], n = c < max_rows ? c : max_rows, bucket = ert_bucket_rows(buckets, nb, n);
        bup(o, be, count, &c, sizeof c);
        bfill(o, be, yg, yb, 0xFF);
        bfill(o, be, ye, yb, 0xFF);
        ck_assert_msg(o->graph_launch(be, graph) == ERT_OK, "%s: %s", what, ert_last_error());
        if (n > 0) ck_assert_msg(o->op_run(be, op, (ert_rows){n, NULL}, x, ye) == ERT_OK, "%s", ert_last_error());
        bdown(o, be, hg, yg, yb);
        bdown(o, be, he, ye, yb);
        size_t at = 0;
        while (at < (size_t)n * y_row_bytes && hg[at] == he[at]) ++at;
        ck_assert_msg(at == (size_t)n * y_row_bytes,
                      "%s, count %d (bucket %d): graph != eager, first at row %zu (byte %zu of the row)", what, c,
                      bucket, at / y_row_bytes, at % y_row_bytes);
        const size_t untouched = (size_t)bucket * y_row_bytes;
        ck_assert_msg(all_bytes(hg + untouched, yb - untouched, 0xFF),
                      "%s, count %d: the graph wrote rows at or past its bucket (%d rows)", what, n, bucket);
    }
    o->graph_free(be, graph);
    o->release(be, yg), o->release(be, ye), o->release(be, count);
    free(hg), free(he);
}

/* ---------------------------------------------------------------- compaction */

#define NROWS(a) (sizeof(a) / sizeof *(a))
static const int kCompactRows[] = {0, 1, 3, 17, 64, 100, 257, 1000, 1024, 1025, 4096, 4097, 5000};
/* then passes with a device count: below the rows, 0, and above them (read as the rows),
 * on both sides of the CUDA fill's one-launch limit (1024 rows) */
static const int kCompactDevRows[][2] = {{1000, 613}, {1000, 0}, {100, 200}, {5000, 3001}, {5000, 0}};
static const int kCompactWidths[] = {1, 2, 37, 512};

typedef struct compact_case {
    int rows, dev_count, kind;
    size_t row_bytes;
    const uint8_t *keep;
    const unsigned char *x;
    const int32_t *idx;
    const ert_sample_state *st;
} compact_case;

static void move_ref(const compact_case *k, int from, int to, unsigned char *y, int32_t *idx, ert_sample_state *st) {
    memcpy(y + (size_t)to * k->row_bytes, k->kind == ERT_COMPACT_FILL ? y + (size_t)from * k->row_bytes
                                                                       : k->x + (size_t)from * k->row_bytes,
           k->row_bytes);
    idx[to] = k->kind == ERT_COMPACT_FILL ? idx[from] : k->idx[from];
    st[to] = k->kind == ERT_COMPACT_FILL ? st[from] : k->st[from];
}

/* The contract on the host, written from the definitions. y, idx and st hold the poisoned
 * outputs (gather) or copies of the inputs (fill). Returns the survivor count. */
static int32_t ref_compact(const compact_case *k, unsigned char *y, int32_t *idx, ert_sample_state *st) {
    const int rows = k->dev_count >= 0 && k->dev_count < k->rows ? k->dev_count : k->rows;
    int32_t n = 0;
    for (int r = 0; r < rows; ++r)
        if (k->keep[r]) {
            if (k->kind == ERT_COMPACT_GATHER) move_ref(k, r, n, y, idx, st);
            ++n;
        }
    if (k->kind == ERT_COMPACT_GATHER) return n;
    /* fill: holes below n, kept rows at or past n, both in row order, paired. */
    int *holes = malloc(sizeof(int) * (size_t)(n + 1)), *tail = malloc(sizeof(int) * (size_t)(rows + 1));
    int nh = 0, nt = 0;
    for (int r = 0; r < n; ++r)
        if (!k->keep[r]) holes[nh++] = r;
    for (int r = n; r < rows; ++r)
        if (k->keep[r]) tail[nt++] = r;
    ck_assert_int_eq(nh, nt);
    for (int i = 0; i < nh; ++i) move_ref(k, tail[i], holes[i], y, idx, st);
    free(holes);
    free(tail);
    return n;
}

/* Runs one compaction on a backend and compares every output byte with the reference.
 * Each buffer has a poisoned guard row past its rows that must stay as it is. */
static void check_compact_on(const ert_backend_ops *o, ert_backend *be, const char *label, const compact_case *k,
                             int width, const unsigned char *want_y, const int32_t *want_idx,
                             const ert_sample_state *want_st, int32_t want_n) {
    const int rows = k->rows, cap = (rows > 0 ? rows : 1) + 1, fill = k->kind == ERT_COMPACT_FILL;
    const size_t xb = (size_t)cap * k->row_bytes;
    unsigned char *x = balloc(o, be, xb), *y = fill ? x : balloc(o, be, xb);
    int32_t *idx = balloc(o, be, (size_t)cap * 4), *idx_out = fill ? idx : balloc(o, be, (size_t)cap * 4);
    ert_sample_state *st = balloc(o, be, (size_t)cap * sizeof *st);
    ert_sample_state *st_out = fill ? st : balloc(o, be, (size_t)cap * sizeof *st);
    uint8_t *keep = balloc(o, be, (size_t)cap);
    int32_t *count = balloc(o, be, 4), *devc = bcount(o, be, k->dev_count);
    unsigned char *hy = malloc(xb);
    int32_t *hidx = malloc((size_t)cap * 4), hn = -1;
    ert_sample_state *hst = malloc((size_t)cap * sizeof *hst);

    bfill(o, be, y, xb, 0xAB);
    bfill(o, be, idx_out, (size_t)cap * 4, 0xAB);
    bfill(o, be, st_out, (size_t)cap * sizeof *st, 0xAB);
    bup(o, be, x, k->x, (size_t)rows * k->row_bytes);
    bup(o, be, idx, k->idx, (size_t)rows * 4);
    bup(o, be, st, k->st, (size_t)rows * sizeof *st);
    bup(o, be, keep, k->keep, (size_t)rows);
    bfill(o, be, count, 4, 0xAB);
    const ert_compact_args a = {.rows = {rows, k->dev_count >= 0 ? devc : NULL}, .width = width, .x = x, .y = y,
                                .idx_in = idx, .idx_out = idx_out, .state_in = st, .state_out = st_out,
                                .keep = keep, .count = count};
    RUN_OK(o, o->compact(be, &a));
    /* gather: every output row, poison past the survivors included; fill: the rows given */
    const size_t m = (size_t)(fill ? rows : cap - 1);
    bdown(o, be, &hn, count, 4);
    bdown(o, be, hy, y, m * k->row_bytes);
    bdown(o, be, hidx, idx_out, m * 4);
    bdown(o, be, hst, st_out, m * sizeof *hst);
    ck_assert_msg(hn == want_n, "compact %s rows %d width %d: count %d, expected %d", label, rows, width, hn, want_n);
    ck_assert_msg(memcmp(hy, want_y, m * k->row_bytes) == 0, "compact %s rows %d width %d: activations differ", label,
                  rows, width);
    ck_assert_msg(memcmp(hidx, want_idx, m * 4) == 0, "compact %s rows %d: indices differ", label, rows);
    ck_assert_msg(memcmp(hst, want_st, m * sizeof *hst) == 0, "compact %s rows %d: states differ", label, rows);
    bdown(o, be, hy, y, xb);
    bdown(o, be, hidx, idx_out, (size_t)cap * 4);
    bdown(o, be, hst, st_out, (size_t)cap * sizeof *hst);
    ck_assert_msg(all_bytes(hy + (size_t)(cap - 1) * k->row_bytes, k->row_bytes, 0xAB) &&
                      all_bytes((unsigned char *)(hidx + cap - 1), 4, 0xAB) &&
                      all_bytes((unsigned char *)(hst + cap - 1), sizeof *hst, 0xAB),
                  "compact %s rows %d width %d: the guard row past the rows was written", label, rows, width);

    o->release(be, x), o->release(be, idx), o->release(be, st);
    if (!fill) o->release(be, y), o->release(be, idx_out), o->release(be, st_out);
    o->release(be, keep), o->release(be, count), o->release(be, devc);
    free(hy), free(hidx), free(hst);
}

void check_compaction(const ert_backend_ops *const *ops, ert_backend *const *bes, const char *const *labels, int n,
                      ert_dtype dt, int kind, uint64_t seed) {
    rng_seed(seed);
    const size_t es = esize(dt);
    for (size_t wi = 0; wi < sizeof kCompactWidths / sizeof *kCompactWidths; ++wi)
        for (size_t ri = 0; ri < NROWS(kCompactRows) + NROWS(kCompactDevRows); ++ri) {
            const int with_dev = ri >= NROWS(kCompactRows);
            const int rows = with_dev ? kCompactDevRows[ri - NROWS(kCompactRows)][0] : kCompactRows[ri];
            const int dev = with_dev ? kCompactDevRows[ri - NROWS(kCompactRows)][1] : -1, cap = rows > 0 ? rows : 1;
            const int width = kCompactWidths[wi];
            const size_t row_bytes = (size_t)width * es, xb = (size_t)cap * row_bytes;
            unsigned char *x = malloc(xb), *want_y = malloc(xb);
            int32_t *idx = malloc((size_t)cap * 4), *want_idx = malloc((size_t)cap * 4);
            ert_sample_state *st = malloc((size_t)cap * sizeof *st), *want_st = malloc((size_t)cap * sizeof *st);
            uint8_t *keep = malloc((size_t)cap);
            for (size_t i = 0; i < xb; ++i) x[i] = (unsigned char)rng_u32();
            for (int r = 0; r < rows; ++r) {
                idx[r] = (int32_t)(rng_u32() % 100000);
                st[r] = (ert_sample_state){(int32_t)r, (int32_t)(r % 4), (int32_t)(r % 10) - 1, (int32_t)(r % 3), 0};
            }
            for (int pattern = 0; pattern < 4; ++pattern) {
                /* all 0, all 1, half, sparse; keep values other than 1 also mean "keep" */
                for (int r = 0; r < rows; ++r)
                    keep[r] = pattern == 0 ? 0
                              : pattern == 1 ? 1
                              : pattern == 2 ? (uint8_t)(rng_u32() & 1)
                                             : (uint8_t)(rng_u32() % 32 == 0 ? 1 + rng_u32() % 255 : 0);
                const compact_case k = {rows, dev, kind, row_bytes, keep, x, idx, st};
                if (kind == ERT_COMPACT_FILL) {
                    memcpy(want_y, x, xb);
                    memcpy(want_idx, idx, (size_t)cap * 4);
                    memcpy(want_st, st, (size_t)cap * sizeof *want_st);
                } else {
                    memset(want_y, 0xAB, xb);
                    memset(want_idx, 0xAB, (size_t)cap * 4);
                    memset(want_st, 0xAB, (size_t)cap * sizeof *want_st);
                }
                const int32_t want_n = ref_compact(&k, want_y, want_idx, want_st);
                for (int b = 0; b < n; ++b)
                    check_compact_on(ops[b], bes[b], labels[b], &k, width, want_y, want_idx, want_st, want_n);
            }
            free(x), free(want_y), free(idx), free(want_idx), free(st), free(want_st), free(keep);
        }
}

void check_backend_refusals(const ert_backend_ops *o, ert_backend *be, int max_rows) {
    const int short_of_max[2] = {4, max_rows - 1}, repeated[3] = {4, 4, max_rows};
    ck_assert_int_eq(o->graph_begin(be, short_of_max, 2), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(ert_last_error(), "the last bucket must be max_rows"), "%s", ert_last_error());
    ck_assert_int_eq(o->graph_begin(be, repeated, 3), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(ert_last_error(), "buckets must increase"), "%s", ert_last_error());
    /* nothing is left capturing: a good list starts; while it captures, what a graph cannot
     * hold is refused by message (nothing reaches CUDA to invalidate the capture); then it
     * is discarded */
    const int good[2] = {4, max_rows};
    RUN_OK(o, o->graph_begin(be, good, 2));
    void *p = NULL;
    ert_event *ev = NULL;
    int32_t host = 0;
    ck_assert_int_eq(o->alloc(be, 16, &p), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(ert_last_error(), "an allocation while a graph is being"), "%s", ert_last_error());
    ck_assert_int_eq(o->host_alloc(be, 16, &p), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(ert_last_error(), "an allocation while a graph is being"), "%s", ert_last_error());
    ck_assert_int_eq(o->event_new(be, &ev), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(ert_last_error(), "an event's creation while a graph is being"), "%s", ert_last_error());
    ck_assert_int_eq(o->sync(be), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(ert_last_error(), "a sync while a graph is being"), "%s", ert_last_error());
    ck_assert_int_eq(o->download(be, &host, &host, sizeof host), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(ert_last_error(), "a transfer while a graph is being"), "%s", ert_last_error());
    ck_assert_ptr_null(p);
    ck_assert_ptr_null(ev);
    RUN_OK(o, o->graph_end(be, NULL));

    int32_t *count = bcount(o, be, 2), got = -1;
    float *x = balloc(o, be, 2 * sizeof(float));
    int32_t *idx = balloc(o, be, 2 * sizeof(int32_t));
    ert_sample_state *st = balloc(o, be, 2 * sizeof *st);
    uint8_t *keep = balloc(o, be, 2);
    const ert_compact_args a = {.rows = {2, count}, .width = 1, .x = x, .y = x, .idx_in = idx, .idx_out = idx,
                                .state_in = st, .state_out = st, .keep = keep, .count = count};
    ck_assert_int_eq(o->compact(be, &a), ERT_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(ert_last_error(), "compaction writing its count over the row count it reads"), "%s",
                  ert_last_error());
    bdown(o, be, &got, count, sizeof got);
    ck_assert_int_eq(got, 2);
    o->release(be, count), o->release(be, x), o->release(be, idx), o->release(be, st), o->release(be, keep);
}

int cuda_skip_or_fail(const char *why, const char *detail) {
    const char *req = getenv("ERT_REQUIRE_CUDA");
    const int required = req && strcmp(req, "1") == 0;
    printf("%s: %s%s%s\n", required ? "FAIL (ERT_REQUIRE_CUDA=1)" : "SKIP", why, detail ? ": " : "",
           detail ? detail : "");
    return required ? EXIT_FAILURE : ERT_TEST_SKIP;
}

void cuda_env_clear(void) {
    static const char *steering[] = {"ERT_COMPACT_PATH", "ERT_CONV_FUSE", "ERT_CUDA_GRAPH_FAIL_AT",
                                     "ERT_CUDA_GRAPH_ROUTE_SWITCHES", "ERT_CUDA_GRAPH_DOT"};
    for (size_t i = 0; i < sizeof steering / sizeof *steering; ++i) unsetenv(steering[i]);
}

int cuda_backends_or_skip(const ert_backend_ops **cpu, const ert_backend_ops **gpu) {
    cuda_env_clear();
    *cpu = ert_backend_cpu();
    *gpu = ert_backend_cuda();
    if (!*gpu) return cuda_skip_or_fail("built without CUDA", NULL);
    ert_backend_config cfg = {.device = 0, .max_rows = 1, .dtype = ERT_DTYPE_F32};
    ert_backend *probe = NULL;
    const ert_status st = (*gpu)->create(&cfg, &probe);
    if (st == ERT_ERR_UNSUPPORTED) return cuda_skip_or_fail("no CUDA device", ert_last_error());
    if (st != ERT_OK) { /* a device exists but the backend cannot start: a failure */
        printf("FAIL: cuda backend create: %s\n", ert_last_error());
        return EXIT_FAILURE;
    }
    printf("device: %s\n", (*gpu)->device_name(probe));
    (*gpu)->destroy(probe);
    return -1;
}
