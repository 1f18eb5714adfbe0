/* Malformed input, generated: seeded mutations of the fixtures' files and of valid spec
 * strings go through every loader the runtime has. Each must either load or fail with a
 * status and a message (naming the file where there is one); nothing may crash, leak or
 * read out of bounds (the sanitizer pass runs this file too). A model that still loads
 * must also run a batch or refuse it cleanly.
 *
 * JSON is mutated by structure (cJSON): a number becomes an edge value, a string another
 * string of the same document, a node is deleted, duplicated or changes type; binary
 * files by bytes (flips, truncation, header lengths). Every case has its own seed:
 * ERT_FUZZ_VERBOSE=1 prints each case before it runs, so a crash names its case;
 * ERT_FUZZ_CASES=N runs N cases per family instead of 400. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "exitrt/evaluate.h"
#include "testutil.h"

/* ---------------------------------------------------------------- the generator */

static uint64_t rng_state;

static void rng_seed(uint64_t family, uint64_t i) {
    rng_state = (family * 0x9E3779B97F4A7C15ull) ^ (i + 1) * 0xD1B54A32D192ED03ull;
    if (!rng_state) rng_state = 1;
}

static uint32_t rnd(void) { /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

static uint32_t below(uint32_t n) { return n ? rnd() % n : 0; }

static int verbose;

static void announce(const char *family, int i) {
    if (verbose) fprintf(stderr, "fuzz: %s case %d\n", family, i);
}

/* ---------------------------------------------------------------- JSON mutations */

enum { MAX_NODES = 4096 };

typedef struct nodes {
    cJSON *node[MAX_NODES], *parent[MAX_NODES];
    int n;
    const char *strings[MAX_NODES];
    int num_strings;
} nodes;

static void collect(nodes *ns, cJSON *node, cJSON *parent) {
    if (ns->n == MAX_NODES) return;
    ns->node[ns->n] = node;
    ns->parent[ns->n++] = parent;
    if (cJSON_IsString(node) && ns->num_strings < MAX_NODES) ns->strings[ns->num_strings++] = node->valuestring;
    for (cJSON *c = node->child; c; c = c->next) collect(ns, c, node);
}

/* clang-format off */
static const double edge_numbers[] = {0, -1, 1, 2, 3, 7, 0.5, -0.5, 1e-30, 255, 256, 65535, 65536, 2147483647.0,
                                      2147483648.0, 4294967296.0, -2147483648.0, 1e9, 1099511627776.0, 4e12, 1e18,
                                      1e300, -1e300, 1e-320};
/* clang-format on */

/* Replaces `old` (a child of `parent`) by `repl`, keeping its key. */
static void replace(cJSON *parent, cJSON *old, cJSON *repl) {
    if (old->string) {
        repl->string = strdup(old->string);
        repl->type &= ~cJSON_StringIsConst;
    }
    ck_assert(cJSON_ReplaceItemViaPointer(parent, old, repl));
}

/* One mutation of a random node; returns 0 when the chosen node could not be mutated. */
static int mutate_once(cJSON *root) {
    static nodes ns;
    ns.n = ns.num_strings = 0;
    collect(&ns, root, NULL);
    const int k = (int)below((uint32_t)ns.n);
    cJSON *node = ns.node[k], *parent = ns.parent[k];
    switch (below(7)) {
    case 0: /* an edge number */
        if (!cJSON_IsNumber(node)) return 0;
        cJSON_SetNumberValue(node, edge_numbers[below(sizeof edge_numbers / sizeof *edge_numbers)]);
        return 1;
    case 1: /* another string of the document, or a strange one */
        if (!cJSON_IsString(node) || !parent) return 0;
        {
            static const char *odd[] = {"", "\xff\xfe", "NaN", "-1", "F64", "I8", "NHWC", "../../etc/passwd"};
            const char *s = below(4) ? ns.strings[below((uint32_t)ns.num_strings)] : odd[below(8)];
            char *copy = strdup(s); /* s may be this node's own text */
            replace(parent, node, cJSON_CreateString(copy));
            free(copy);
        }
        return 1;
    case 2: /* deleted */
        if (!parent) return 0;
        cJSON_Delete(cJSON_DetachItemViaPointer(parent, node));
        return 1;
    case 3: /* duplicated next to itself (a repeated key in an object) */
        if (!parent) return 0;
        {
            cJSON *dup = cJSON_Duplicate(node, 1);
            if (node->string) {
                cJSON_AddItemToObject(parent, node->string, dup);
            } else {
                cJSON_AddItemToArray(parent, dup);
            }
        }
        return 1;
    case 4: /* another type */
        if (!parent) return 0;
        {
            cJSON *repl;
            switch (below(6)) {
            case 0: repl = cJSON_CreateNull(); break;
            case 1: repl = cJSON_CreateTrue(); break;
            case 2: repl = cJSON_CreateArray(); break;
            case 3: repl = cJSON_CreateObject(); break;
            case 4: repl = cJSON_CreateNumber(edge_numbers[below(sizeof edge_numbers / sizeof *edge_numbers)]); break;
            default: repl = cJSON_CreateString("x"); break;
            }
            replace(parent, node, repl);
        }
        return 1;
    case 5: /* an item of an array moved to its end (not cJSON_InsertItemInArray: 1.7.15 loses
             * an item inserted at the front) */
        if (!cJSON_IsArray(node) || cJSON_GetArraySize(node) < 2) return 0;
        cJSON_AddItemToArray(node, cJSON_DetachItemFromArray(node, (int)below((uint32_t)cJSON_GetArraySize(node) - 1)));
        return 1;
    default: /* an array grows or shrinks by one */
        if (!cJSON_IsArray(node)) return 0;
        if (cJSON_GetArraySize(node) > 0 && below(2)) {
            cJSON_DeleteItemFromArray(node, (int)below((uint32_t)cJSON_GetArraySize(node)));
        } else {
            cJSON_AddItemToArray(node, cJSON_CreateNumber(edge_numbers[below(6)]));
        }
        return 1;
    }
}

/* 1 to 3 mutations of the document `text`; the caller frees the result. */
static char *mutate_json(const char *text) {
    cJSON *root = cJSON_Parse(text);
    ck_assert_ptr_nonnull(root);
    const int want = 1 + (int)below(3);
    for (int done = 0, tries = 0; done < want && tries < 100; ++tries) done += mutate_once(root);
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    ck_assert_ptr_nonnull(out);
    return out;
}

/* ---------------------------------------------------------------- byte mutations */

typedef struct bytes {
    unsigned char *p;
    size_t n;
} bytes;

static bytes read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot read %s", path);
    bytes b = {0};
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    b.n = (size_t)ftell(f);
    rewind(f);
    b.p = malloc(b.n + 1);
    ck_assert(fread(b.p, 1, b.n, f) == b.n);
    b.p[b.n] = 0;
    fclose(f);
    return b;
}

/* Flips, overwrites or truncates; bytes before `from` stay unless the mutation is a
 * truncation. */
static void mutate_bytes(bytes *b, size_t from) {
    if (b->n <= from) return;
    switch (below(4)) {
    case 0: b->n = from + below((uint32_t)(b->n - from)); break; /* truncated */
    case 1:
        for (int k = 1 + (int)below(4); k > 0; --k)
            b->p[from + below((uint32_t)(b->n - from))] ^= (unsigned char)(1u << below(8));
        break;
    case 2:
        for (int k = 1 + (int)below(8); k > 0; --k) b->p[from + below((uint32_t)(b->n - from))] = (unsigned char)rnd();
        break;
    default: { /* a run of 0xff (NaN-like floats, huge lengths) */
        const size_t at = from + below((uint32_t)(b->n - from)), len = 1 + below(8);
        for (size_t i = at; i < at + len && i < b->n; ++i) b->p[i] = 0xff;
    }
    }
}

/* ---------------------------------------------------------------- the checks */

static char dir[512];

static void path_in(char *out, size_t len, const char *name) { snprintf(out, len, "%s/%s", dir, name); }

/* A failure must have a message, and a file's loader must name the file. */
static void check_failure(ert_status st, const char *family, int i, const char *names) {
    const char *msg = ert_last_error();
    ck_assert_msg(st > ERT_OK && msg && msg[0], "%s case %d: status %d with no message", family, i, (int)st);
    if (names) ck_assert_msg(strstr(msg, names) != NULL, "%s case %d: '%s' does not name '%s'", family, i, msg, names);
}

typedef struct tally {
    int loaded, refused, ran;
} tally;

/* The model in `dir`: loads, or fails naming the model directory; when it loads, a
 * session runs 3 random samples (or refuses with a message). */
static void try_model(const char *family, int i, tally *t) {
    ert_model *m = NULL;
    ert_status st = ert_model_load(dir, &m);
    if (st) {
        check_failure(st, family, i, dir);
        t->refused++;
        return;
    }
    t->loaded++;
    ert_session_options so = ert_session_options_default();
    so.max_batch = 3;
    ert_session *s = NULL;
    st = ert_session_new(m, &so, &s);
    if (st) {
        check_failure(st, family, i, NULL);
        ert_model_free(m);
        return;
    }
    const int64_t in = ert_model_input_size(m);
    float *x = malloc(sizeof *x * (size_t)(3 * in));
    ck_assert_ptr_nonnull(x);
    for (int64_t k = 0; k < 3 * in; ++k) x[k] = (float)(rnd() % 1000) / 1000.0f;
    int32_t pred[3], ex[3];
    float conf[3];
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("confidence:0.5", &p), ERT_OK);
    ert_batch b = {.input = x, .n = 3};
    ert_outputs o = {.pred = pred, .exit_index = ex, .confidence = conf};
    st = ert_session_run(s, p, &b, &o);
    if (st) {
        check_failure(st, family, i, NULL);
    } else {
        t->ran++;
        for (int k = 0; k < 3; ++k) {
            ck_assert_msg(ex[k] >= 0 && ex[k] < ert_model_num_exits(m), "%s case %d: exit %d", family, i, ex[k]);
            ck_assert_msg(pred[k] >= 0 && pred[k] < ert_model_num_classes(m), "%s case %d: class %d", family, i,
                          pred[k]);
        }
    }
    ert_policy_free(p);
    free(x);
    ert_session_free(s);
    ert_model_free(m);
}

static void copy_fixture(const char *fixture, const char *name) {
    char from[1024], to[1024];
    snprintf(from, sizeof from, "test/fixtures/%s/%s", fixture, name);
    path_in(to, sizeof to, name);
    tu_copy_file(tu_path(from), to);
}

static void write_bytes(const char *name, const void *p, size_t n) {
    char path[1024];
    path_in(path, sizeof path, name);
    tu_write_file(path, p, n);
}

/* Cases per family: 400, or $ERT_FUZZ_CASES for a longer run. */
static int cases_per_family = 400;

/* The checks on how many cases loaded and how many were refused (that the mutations
 * reach past the parsers) need a sample: not with a handful of cases. */
static int enough_cases(void) { return cases_per_family >= 100; }

/* config.json mutated; the weights as shipped. */
static void fuzz_config(const char *fixture, uint64_t family) {
    char src[512];
    snprintf(src, sizeof src, "test/fixtures/%s/config.json", fixture);
    bytes base = read_all(tu_path(src));
    copy_fixture(fixture, "model.safetensors");
    tally t = {0};
    for (int i = 0; i < cases_per_family; ++i) {
        announce(fixture, i);
        rng_seed(family, (uint64_t)i);
        char *text = mutate_json((const char *)base.p);
        write_bytes("config.json", text, strlen(text));
        free(text);
        try_model("config.json", i, &t);
    }
    printf("%s config.json: %d loaded (%d ran a batch), %d refused\n", fixture, t.loaded, t.ran, t.refused);
    /* the mutations reach past the parser: some models still load, most are refused */
    ck_assert_msg(!enough_cases() || (t.refused > cases_per_family / 4 && t.loaded > 0),
                  "%s config: %d loaded, %d refused", fixture, t.loaded, t.refused);
    free(base.p);
}

/* model.safetensors mutated: its JSON header by structure, or its bytes. */
static void fuzz_safetensors(const char *fixture, uint64_t family) {
    char src[512];
    snprintf(src, sizeof src, "test/fixtures/%s/model.safetensors", fixture);
    bytes base = read_all(tu_path(src));
    ck_assert(base.n > 8);
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; --k) hlen = hlen << 8 | base.p[k];
    ck_assert(hlen + 8 <= base.n);
    copy_fixture(fixture, "config.json");
    tally t = {0};
    for (int i = 0; i < cases_per_family; ++i) {
        announce(fixture, i);
        rng_seed(family, (uint64_t)i);
        bytes b = {malloc(base.n + 1), base.n};
        memcpy(b.p, base.p, base.n);
        if (below(2)) { /* the header, by structure; the data as it was */
            char *header = malloc(hlen + 1);
            memcpy(header, base.p + 8, hlen);
            header[hlen] = '\0';
            char *h = mutate_json(header);
            const size_t n = strlen(h), rest = base.n - 8 - hlen;
            free(b.p);
            b.n = 8 + n + rest;
            b.p = malloc(b.n);
            for (int k = 0; k < 8; ++k) b.p[k] = (unsigned char)((uint64_t)n >> (8 * k));
            memcpy(b.p + 8, h, n);
            memcpy(b.p + 8 + n, base.p + 8 + hlen, rest);
            free(h);
            free(header);
        } else if (below(4) == 0) { /* the header length */
            static const uint64_t lens[] = {0, 1, 7, 0xffffffffull, 0xffffffffffffffffull};
            const uint64_t v = below(2) ? lens[below(5)] : hlen + below(16) - 8;
            for (int k = 0; k < 8; ++k) b.p[k] = (unsigned char)(v >> (8 * k));
        } else {
            mutate_bytes(&b, below(2) ? 8 : 8 + hlen);
        }
        write_bytes("model.safetensors", b.p, b.n);
        free(b.p);
        try_model("model.safetensors", i, &t);
    }
    printf("%s model.safetensors: %d loaded (%d ran a batch), %d refused\n", fixture, t.loaded, t.ran, t.refused);
    ck_assert_msg(!enough_cases() || (t.refused > cases_per_family / 4 && t.loaded > 0),
                  "%s safetensors: %d loaded, %d refused", fixture, t.loaded, t.refused);
    free(base.p);
}

START_TEST(model_config_mutations) {
    fuzz_config("tiny-f32", 1);
    fuzz_config("tiny-cnn", 2);
}
END_TEST

START_TEST(safetensors_mutations) {
    fuzz_safetensors("tiny-f32", 3);
    fuzz_safetensors("tiny-bf16", 4);
    fuzz_safetensors("tiny-cnn", 5);
    /* dimensions each within bounds whose product is not (a signed overflow once) */
    const float one = 1.0f;
    const tu_tensor huge = {"stages.0.fc.weight", "F32", 2, {1099511627776LL, 4000000000000LL}, &one, 4, {0, 4}};
    char path[1024];
    path_in(path, sizeof path, "model.safetensors");
    tu_write_safetensors(path, &huge, 1);
    ert_model *m = NULL;
    ck_assert_int_eq(ert_model_load(dir, &m), ERT_ERR_FORMAT);
    ck_assert(tu_error_has("tensor 'stages.0.fc.weight': shape too large"));
}
END_TEST

/* calibration.json beside a good model: a mutated one is refused naming it, or loads. */
START_TEST(calibration_mutations) {
    copy_fixture("tiny-f32", "config.json");
    copy_fixture("tiny-f32", "model.safetensors");
    const char *good = "{\"temperatures\": [1.5, 0.75, 2.0], \"exits\": [{\"temperature\": 1.5}, {\"temperature\": "
                       "0.75}, {\"temperature\": 2.0}]}";
    write_bytes("calibration.json", good, strlen(good));
    ert_model *m = NULL;
    ck_assert_msg(ert_model_load(dir, &m) == ERT_OK, "%s", ert_last_error());
    ert_model_free(m);
    tally t = {0};
    for (int i = 0; i < cases_per_family; ++i) {
        announce("calibration", i);
        rng_seed(6, (uint64_t)i);
        char *text = mutate_json(good);
        write_bytes("calibration.json", text, strlen(text));
        free(text);
        ert_status st = ert_model_load(dir, &m);
        if (st) {
            check_failure(st, "calibration.json", i, "calibration.json");
            t.refused++;
        } else {
            t.loaded++;
            ert_model_free(m);
        }
    }
    printf("calibration.json: %d loaded, %d refused\n", t.loaded, t.refused);
    ck_assert_msg(!enough_cases() || (t.refused > 0 && t.loaded > 0), "calibration: %d loaded, %d refused", t.loaded,
                  t.refused);
    char path[1024];
    path_in(path, sizeof path, "calibration.json");
    remove(path);
}
END_TEST

/* .npy inputs and labels. */
START_TEST(npy_mutations) {
    char spec[1024];
    tu_write_tiny_npy(3, 7, spec, sizeof spec); /* X.npy:Y.npy in a directory of their own */
    char xpath[1024], ypath[1024];
    const char *colon = strrchr(spec, ':');
    snprintf(xpath, sizeof xpath, "%.*s", (int)(colon - spec), spec);
    snprintf(ypath, sizeof ypath, "%s", colon + 1);
    bytes bx = read_all(xpath), by = read_all(ypath);
    char mx[1100], my[1100], mspec[2300];
    path_in(mx, sizeof mx, "x.npy");
    path_in(my, sizeof my, "y.npy");
    snprintf(mspec, sizeof mspec, "%s:%s", mx, my);
    tally t = {0};
    for (int i = 0; i < cases_per_family; ++i) {
        announce("npy", i);
        rng_seed(7, (uint64_t)i);
        const int which = (int)below(2);
        bytes b = which ? by : bx;
        bytes m = {malloc(b.n + 1), b.n};
        memcpy(m.p, b.p, b.n);
        /* the header dict ('descr', 'shape', ...) lives in the first 128 bytes */
        mutate_bytes(&m, below(3) ? 0 : 128);
        tu_write_file(mx, which ? bx.p : m.p, which ? bx.n : m.n);
        tu_write_file(my, which ? m.p : by.p, which ? m.n : by.n);
        free(m.p);
        ert_dataset *d = NULL;
        ert_status st = ert_dataset_load(mspec, &d);
        if (st) check_failure(st, "npy", i, which ? "y.npy" : "x.npy");
        ert_dataset_free(d);
        st ? t.refused++ : t.loaded++;
    }
    printf("npy: %d loaded, %d refused\n", t.loaded, t.refused);
    ck_assert_msg(!enough_cases() || (t.refused > cases_per_family / 4 && t.loaded > 0), "npy: %d loaded, %d refused",
                  t.loaded, t.refused);
    free(bx.p);
    free(by.p);
}
END_TEST

/* IDX files (Fashion-MNIST's format), plain and gzip-compressed. */
START_TEST(idx_mutations) {
    enum { N = 6 };
    unsigned char img[16 + N * 28 * 28], lab[8 + N];
    const unsigned char ih[16] = {0, 0, 8, 3, 0, 0, 0, N, 0, 0, 0, 28, 0, 0, 0, 28}, lh[8] = {0, 0, 8, 1, 0, 0, 0, N};
    memcpy(img, ih, 16);
    memcpy(lab, lh, 8);
    for (int k = 16; k < (int)sizeof img; ++k) img[k] = (unsigned char)(k * 7);
    for (int k = 0; k < N; ++k) lab[8 + k] = (unsigned char)(k % 10);
    tally t = {0};
    for (int i = 0; i < cases_per_family; ++i) {
        announce("idx", i);
        rng_seed(8, (uint64_t)i);
        const int labels = (int)below(2), gz = (int)below(2);
        bytes m = {malloc(sizeof img), labels ? sizeof lab : sizeof img};
        memcpy(m.p, labels ? lab : img, m.n);
        mutate_bytes(&m, below(2) ? 0 : labels ? 8 : 16);
        char path[1024];
        path_in(path, sizeof path, gz ? "data-idx.gz" : "data-idx");
        if (gz) {
            gzFile g = gzopen(path, "wb");
            ck_assert_ptr_nonnull(g);
            ck_assert(m.n == 0 || gzwrite(g, m.p, (unsigned)m.n) == (int)m.n);
            ck_assert_int_eq(gzclose(g), Z_OK);
        } else {
            tu_write_file(path, m.p, m.n);
        }
        free(m.p);
        ert_dataset *d = NULL;
        ert_status st = ert_idx_read(path, &d);
        if (st) {
            check_failure(st, "idx", i, path);
        } else { /* what loads is whole: every value in [0, 1] or a label */
            const int64_t values = d->labels ? 0 : d->n * d->sample_size;
            for (int64_t k = 0; k < values; ++k) ck_assert(d->x[k] >= 0.0f && d->x[k] <= 1.0f);
        }
        ert_dataset_free(d);
        remove(path);
        st ? t.refused++ : t.loaded++;
    }
    printf("idx: %d loaded, %d refused\n", t.loaded, t.refused);
    ck_assert_msg(!enough_cases() || (t.refused > cases_per_family / 4 && t.loaded > 0), "idx: %d loaded, %d refused",
                  t.loaded, t.refused);
}
END_TEST

/* sweep.json (what `select` reads): a real sweep of tiny-f32, mutated. What still reads
 * must answer a budget query with the most accurate row within the budget. */
START_TEST(sweep_json_mutations) {
    char spec[1024];
    tu_write_tiny_npy(4, 40, spec, sizeof spec);
    ert_model *m = NULL;
    ert_session *s = tu_tiny_session(20, &m);
    ert_dataset *d = NULL;
    ck_assert_int_eq(ert_dataset_load(spec, &d), ERT_OK);
    ert_sweep_options sw = ert_sweep_options_default();
    sw.grid = 3;
    sw.batch = 20;
    ert_sweep_result *res = NULL;
    ck_assert_msg(ert_sweep_run(s, d, &sw, &res) == ERT_OK, "%s", ert_last_error());
    char sub[600], path[700];
    snprintf(sub, sizeof sub, "%s/sweep", dir);
    ck_assert_msg(ert_sweep_write(res, sub) == ERT_OK, "%s", ert_last_error());
    ert_sweep_result_free(res);
    snprintf(path, sizeof path, "%s/sweep.json", sub);
    bytes base = read_all(path);
    tally t = {0};
    for (int i = 0; i < cases_per_family; ++i) {
        announce("sweep.json", i);
        rng_seed(11, (uint64_t)i);
        char *text = mutate_json((const char *)base.p);
        tu_write_file(path, text, strlen(text));
        free(text);
        ert_sweep_result *r = NULL;
        ert_status st = ert_sweep_read(sub, &r);
        if (st) {
            check_failure(st, "sweep.json", i, "sweep.json");
            t.refused++;
            continue;
        }
        t.loaded++;
        ert_select_query q = ert_select_query_default();
        q.latency_budget_ms = r->num_rows ? r->rows[below((uint32_t)r->num_rows)].batch_ms.mean : 1.0;
        const int best = ert_select(r->rows, r->num_rows, &q);
        ck_assert(best >= -1 && best < r->num_rows);
        for (int j = 0; best >= 0 && j < r->num_rows; ++j) {
            const ert_sweep_row *w = &r->rows[j];
            if (!w->reference && w->accuracy >= 0 && w->batch_ms.mean <= q.latency_budget_ms)
                ck_assert_msg(w->accuracy <= r->rows[best].accuracy,
                              "sweep.json case %d: row %d (%g) beats the answer %d (%g)", i, j, w->accuracy, best,
                              r->rows[best].accuracy);
        }
        ert_sweep_result_free(r);
    }
    printf("sweep.json: %d read, %d refused\n", t.loaded, t.refused);
    ck_assert_msg(!enough_cases() || (t.refused > 0 && t.loaded > 0), "sweep.json: %d read, %d refused", t.loaded,
                  t.refused);
    free(base.p);
    ert_dataset_free(d);
    ert_session_free(s);
    ert_model_free(m);
}
END_TEST

/* Policy files (what `select` writes) and policy, bucket and shift spec strings. */
START_TEST(policy_and_spec_mutations) {
    static const char *good[] = {
        "{\"kind\": \"confidence\", \"thresholds\": [0.9, 0.8, 0.7], \"temperatures\": [1.0, 1.5, 2.0]}",
        "{\"kind\": \"scheduled\", \"hazard\": 0.2, \"seed\": 4}", "{\"kind\": \"patience\", \"patience\": 2}",
        "{\"policy\": \"entropy:0.3,0.2;temp=1.5\"}"};
    char path[1024];
    path_in(path, sizeof path, "policy.json");
    tally t = {0};
    for (int i = 0; i < cases_per_family; ++i) {
        announce("policy file", i);
        rng_seed(9, (uint64_t)i);
        char *text = mutate_json(good[i % 4]);
        tu_write_file(path, text, strlen(text));
        free(text);
        ert_policy *p = NULL;
        ert_status st = ert_policy_parse(path, &p);
        if (st) check_failure(st, "policy file", i, "policy.json");
        st ? t.refused++ : t.loaded++;
        ert_policy_free(p);
    }
    printf("policy files: %d loaded, %d refused\n", t.loaded, t.refused);
    ck_assert_msg(!enough_cases() || (t.refused > 0 && t.loaded > 0), "policy files: %d loaded, %d refused", t.loaded,
                  t.refused);
    /* far more thresholds than a spec holds */
    {
        char big[8192];
        int len = snprintf(big, sizeof big, "{\"kind\": \"confidence\", \"thresholds\": [0.5");
        for (int k = 0; k < 400; ++k) len += snprintf(big + len, sizeof big - (size_t)len, ", 0.123456789");
        snprintf(big + len, sizeof big - (size_t)len, "], \"temperatures\": [1.5, 1.25]}");
        tu_write_file(path, big, strlen(big));
        ert_policy *p = NULL;
        check_failure(ert_policy_parse(path, &p), "policy file", -1, "policy.json");
        ck_assert_ptr_null(p);
    }

    static const char *specs[] = {"confidence:0.9,0.8;temp=1.5,2",
                                  "entropy:0.3",
                                  "margin:0.25,0.5",
                                  "patience:2",
                                  "fixed:1",
                                  "scheduled:hazard=0.15,seed=3",
                                  "oracle",
                                  "none"};
    static const char alphabet[] = "0123456789.,;:=-+eE abcfhinoprstxyz\xff";
    int refused = 0;
    for (int i = 0; i < cases_per_family * 4; ++i) {
        rng_seed(10, (uint64_t)i);
        char s[96];
        snprintf(s, sizeof s, "%s", specs[below(8)]);
        for (int k = 1 + (int)below(3); k > 0; --k) {
            const size_t n = strlen(s);
            const size_t at = below((uint32_t)n + 1);
            if (below(2) && n > 0) {
                memmove(s + at, s + at + (at < n), n - at); /* a character deleted */
            } else if (n + 1 < sizeof s) {
                memmove(s + at + 1, s + at, n - at + 1); /* one inserted */
                s[at] = alphabet[below(sizeof alphabet - 1)];
            }
        }
        ert_policy *p = NULL;
        ert_status st = ert_policy_parse(s, &p);
        if (st) {
            check_failure(st, "policy spec", i, NULL);
            refused++;
        } else { /* what parses prints as a spec that parses again to the same text */
            char a[ERT_SPEC_MAX], b[ERT_SPEC_MAX];
            ert_policy_to_string(p, a, sizeof a);
            ert_policy *q = NULL;
            ck_assert_msg(ert_policy_parse(a, &q) == ERT_OK, "'%s' -> '%s' does not parse: %s", s, a, ert_last_error());
            ert_policy_to_string(q, b, sizeof b);
            ck_assert_msg(strcmp(a, b) == 0, "'%s' -> '%s' -> '%s'", s, a, b);
            ert_policy_free(q);
        }
        ert_policy_free(p);
        int buckets[ERT_MAX_BUCKETS], nb = 0;
        if (ert_buckets_parse(s, 256, buckets, &nb) == ERT_OK) {
            for (int k = 0; k < nb; ++k)
                ck_assert(buckets[k] >= 1 && buckets[k] <= 256 && (k == 0 || buckets[k] > buckets[k - 1]));
        } else {
            check_failure(ERT_ERR_INVALID_ARGUMENT, "buckets", i, NULL);
        }
    }
    printf("policy specs: %d parsed, %d refused\n", cases_per_family * 4 - refused, refused);
    ck_assert_msg(!enough_cases() || refused > cases_per_family, "policy specs: only %d of %d refused", refused,
                  cases_per_family * 4);
}
END_TEST

static void setup(void) { snprintf(dir, sizeof dir, "%s", tu_tmpdir()); }

int main(void) {
    verbose = getenv("ERT_FUZZ_VERBOSE") && atoi(getenv("ERT_FUZZ_VERBOSE")) > 0;
    if (getenv("ERT_FUZZ_CASES") && atoi(getenv("ERT_FUZZ_CASES")) > 0)
        cases_per_family = atoi(getenv("ERT_FUZZ_CASES"));
    Suite *s = suite_create("fuzz");
    TCase *tc = tcase_create("fuzz");
    tcase_add_unchecked_fixture(tc, setup, NULL);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, model_config_mutations);
    tcase_add_test(tc, safetensors_mutations);
    tcase_add_test(tc, calibration_mutations);
    tcase_add_test(tc, npy_mutations);
    tcase_add_test(tc, idx_mutations);
    tcase_add_test(tc, policy_and_spec_mutations);
    tcase_add_test(tc, sweep_json_mutations);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
