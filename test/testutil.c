#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/wait.h>

#include "exitrt/exitrt.h"

const char *tu_path(const char *rel) {
    static char buf[8][4096];
    static int slot;
    const char *root = getenv("ERT_SOURCE_DIR");
    char *out = buf[slot++ % 8];
    snprintf(out, 4096, "%s/%s", root ? root : ".", rel);
    return out;
}

const char *tu_tmpdir(void) {
    static char buf[8][256];
    static int slot;
    char *out = buf[slot++ % 8];
    snprintf(out, 256, "/tmp/ert-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(out));
    return out;
}

cJSON *tu_json_load(const char *path) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)len + 1);
    ck_assert_uint_eq(fread(text, 1, (size_t)len, f), (size_t)len);
    text[len] = '\0';
    fclose(f);
    cJSON *json = cJSON_Parse(text);
    free(text);
    ck_assert_msg(json != NULL, "cannot parse %s", path);
    return json;
}

float *tu_json_floats(const cJSON *arr, int *n) {
    ck_assert(cJSON_IsArray(arr));
    int len = cJSON_GetArraySize(arr);
    float *out = malloc(sizeof(float) * (size_t)(len > 0 ? len : 1));
    int i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, arr) out[i++] = (float)item->valuedouble;
    if (n) *n = len;
    return out;
}

void tu_write_file(const char *path, const void *data, size_t bytes) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(data, 1, bytes, f), bytes);
    fclose(f);
}

static int run_suite(Suite *s, int fork) {
    SRunner *sr = srunner_create(s);
    if (!fork) srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int tu_run(Suite *s) { return run_suite(s, 1); }
int tu_run_nofork(Suite *s) { return run_suite(s, 0); }

double tu_rel_err(const float *a, const float *b, int n, double atol, double rtol) {
    double worst = 0.0;
    for (int i = 0; i < n; ++i) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        double e = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (e > worst) worst = e;
    }
    return worst;
}


void tu_write_safetensors(const char *path, const tu_tensor *t, int n) {
    char header[8192];
    size_t at = 0, off = 0;
    at += (size_t)snprintf(header + at, sizeof header - at, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; ++i) {
        at += (size_t)snprintf(header + at, sizeof header - at, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name,
                               t[i].dtype);
        for (int d = 0; d < t[i].ndim; ++d)
            at += (size_t)snprintf(header + at, sizeof header - at, "%s%lld", d ? "," : "", t[i].shape[d]);
        long long b = (long long)off, e = (long long)(off + t[i].bytes);
        if (t[i].offsets[1]) {
            b = t[i].offsets[0];
            e = t[i].offsets[1];
        }
        at += (size_t)snprintf(header + at, sizeof header - at, "],\"data_offsets\":[%lld,%lld]}", b, e);
        off += t[i].bytes;
    }
    at += (size_t)snprintf(header + at, sizeof header - at, "}");
    ck_assert_uint_lt(at, sizeof header);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = (unsigned char)(((unsigned long long)at >> (8 * i)) & 0xff);
    fwrite(len, 1, 8, f);
    fwrite(header, 1, at, f);
    for (int i = 0; i < n; ++i) fwrite(t[i].data, 1, t[i].bytes, f);
    fclose(f);
}

void tu_write_text(const char *path, const char *text) { tu_write_file(path, text, strlen(text)); }

void tu_copy_file(const char *from, const char *to) {
    FILE *f = fopen(from, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", from);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    tu_write_file(to, buf, (size_t)len);
    free(buf);
}

const char *tu_copy_tiny(void) {
    const char *dir = tu_tmpdir();
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; ++i) {
        char from[512], to[512];
        snprintf(from, sizeof from, "test/fixtures/tiny-f32/%s", files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        tu_copy_file(tu_path(from), to);
    }
    return dir;
}

int tu_error_has(const char *needle) {
    if (strstr(ert_last_error(), needle)) return 1;
    fprintf(stderr, "expected '%s' in the error message: %s\n", needle, ert_last_error());
    return 0;
}

const char *tu_cpu_name(int threads) {
    static char name[64];
    int onednn = 0;
#ifdef ERT_WITH_ONEDNN
    const char *gemm = getenv("ERT_CPU_GEMM");
    onednn = !(gemm && strcmp(gemm, "openblas") == 0) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#endif
    snprintf(name, sizeof name, "cpu (%d thread%s, %s)", threads, threads == 1 ? "" : "s", onednn ? "oneDNN" : "OpenBLAS");
    return name;
}

static void read_capture(const char *path, char *buf, size_t len) {
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, len - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

int tu_cli(const char *args, char *out, size_t out_len, char *err, size_t err_len) {
    const char *dir = tu_tmpdir();
    char cmd[8192], po[512], pe[512];
    snprintf(po, sizeof po, "%s/out", dir);
    snprintf(pe, sizeof pe, "%s/err", dir);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s > '%s' 2> '%s'", getenv("ERT_SOURCE_DIR"), getenv("ERT_CLI"), args,
             po, pe);
    const int rc = system(cmd);
    read_capture(po, out, out_len);
    read_capture(pe, err, err_len);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

void tu_write_npy(const char *path, const char *descr, const char *shape, const void *data, size_t bytes) {
    char header[256];
    int len = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    while ((len + 10 + 1) % 64) header[len++] = ' ';
    header[len++] = '\n';
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(len & 0xff),
                                   (unsigned char)(len >> 8)};
    ck_assert_uint_eq(fwrite(pre, 1, 10, f), 10);
    ck_assert_uint_eq(fwrite(header, 1, (size_t)len, f), (size_t)len);
    ck_assert_uint_eq(fwrite(data, 1, bytes, f), bytes);
    fclose(f);
}

ert_model *tu_tiny_model(unsigned seed, float *x, int32_t *labels, int n) {
    ert_model *m = NULL;
    ck_assert_msg(ert_model_load(tu_path("test/fixtures/tiny-f32"), &m) == ERT_OK, "%s", ert_last_error());
    srand(seed);
    for (int i = 0; i < n * ert_model_input_size(m); ++i) x[i] = (float)rand() / (float)RAND_MAX;
    for (int i = 0; i < n; ++i) labels[i] = rand() % ert_model_num_classes(m);
    return m;
}

ert_session *tu_tiny_session(int max_batch, ert_model **model) {
    ck_assert_msg(ert_model_load(tu_path("test/fixtures/tiny-f32"), model) == ERT_OK, "%s", ert_last_error());
    ert_session_options so = ert_session_options_default();
    so.max_batch = max_batch;
    ert_session *s = NULL;
    ck_assert_msg(ert_session_new(*model, &so, &s) == ERT_OK, "%s", ert_last_error());
    return s;
}

void tu_write_tiny_npy(unsigned seed, int n, char *spec, size_t len) {
    float *x = malloc(sizeof(float) * (size_t)n * 24);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n);
    ck_assert(x && y);
    srand(seed);
    for (int i = 0; i < n * 24; ++i) x[i] = (float)rand() / (float)RAND_MAX;
    for (int i = 0; i < n; ++i) y[i] = rand() % 5;
    const char *dir = tu_tmpdir();
    char px[512], py[512], shape[64];
    snprintf(px, sizeof px, "%s/x.npy", dir);
    snprintf(py, sizeof py, "%s/y.npy", dir);
    snprintf(shape, sizeof shape, "(%d, 2, 3, 4)", n);
    tu_write_npy(px, "<f4", shape, x, sizeof(float) * (size_t)n * 24);
    snprintf(shape, sizeof shape, "(%d,)", n);
    tu_write_npy(py, "<i4", shape, y, sizeof(int32_t) * (size_t)n);
    snprintf(spec, len, "%s:%s", px, py);
    free(x);
    free(y);
}
