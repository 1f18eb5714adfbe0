/* Datasets: IDX (plain and gzip), .npy (float32 data, int labels), Fashion-MNIST splits. */
#define _POSIX_C_SOURCE 200809L

#include "testutil.h"

#include "exitrt/exitrt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

/* ---------------------------------------------------------------- helpers */

static const char *join(const char *dir, const char *name) {
    static char buf[8][4096];
    static int slot;
    char *out = buf[slot++ % 8];
    snprintf(out, 4096, "%s/%s", dir, name);
    return out;
}

/* An IDX file: magic 00 00 type ndim, big-endian u32 dims, then `bytes` bytes of data. */
static size_t idx_image(unsigned char *buf, unsigned type, int ndim, const uint32_t *dims,
                        const unsigned char *data, size_t bytes) {
    size_t n = 0;
    buf[n++] = 0;
    buf[n++] = 0;
    buf[n++] = (unsigned char)type;
    buf[n++] = (unsigned char)ndim;
    for (int i = 0; i < ndim; ++i) {
        buf[n++] = (unsigned char)(dims[i] >> 24);
        buf[n++] = (unsigned char)(dims[i] >> 16);
        buf[n++] = (unsigned char)(dims[i] >> 8);
        buf[n++] = (unsigned char)dims[i];
    }
    if (bytes) memcpy(buf + n, data, bytes);
    return n + bytes;
}

static void write_gz(const char *path, const void *data, size_t bytes) {
    gzFile f = gzopen(path, "wb1");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_int_eq(gzwrite(f, data, (unsigned)bytes), (int)bytes);
    ck_assert_int_eq(gzclose(f), Z_OK);
}

/* Writes an IDX file, plain or gzip-compressed. */
static void write_idx(const char *path, int gz, unsigned type, int ndim, const uint32_t *dims,
                      const unsigned char *data, size_t bytes) {
    unsigned char *buf = malloc(4 + 4 * (size_t)ndim + bytes + 1);
    ck_assert_ptr_nonnull(buf);
    size_t n = idx_image(buf, type, ndim, dims, data, bytes);
    if (gz) write_gz(path, buf, n);
    else tu_write_file(path, buf, n);
    free(buf);
}

/* Writes a version 1.0 (or 2.0) .npy file with the given descr, order and shape. */
static void write_npy(const char *path, int major, const char *descr, int fortran, int ndim,
                      const long *shape, const void *data, size_t bytes) {
    char dict[512], shp[128] = "(";
    for (int i = 0; i < ndim; ++i) {
        char d[32];
        snprintf(d, sizeof d, "%ld,%s", shape[i], (i + 1 < ndim) ? " " : "");
        strcat(shp, d);
    }
    if (ndim > 1) shp[strlen(shp) - 1] = '\0'; /* (3, 4) but (5,) */
    strcat(shp, ")");
    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }", descr,
             fortran ? "True" : "False", shp);
    size_t pre = major == 1 ? 10 : 12;
    size_t hlen = strlen(dict) + 1;
    size_t pad = (64 - (pre + hlen) % 64) % 64;
    hlen += pad;
    unsigned char *buf = malloc(pre + hlen + bytes + 1);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    if (major == 1) {
        buf[8] = (unsigned char)(hlen & 0xff);
        buf[9] = (unsigned char)(hlen >> 8);
    } else {
        for (int i = 0; i < 4; ++i) buf[8 + i] = (unsigned char)(hlen >> (8 * i));
    }
    size_t off = pre;
    memcpy(buf + off, dict, strlen(dict));
    off += strlen(dict);
    memset(buf + off, ' ', pad);
    off += pad;
    buf[off++] = '\n';
    ck_assert_uint_eq(off, pre + hlen);
    ck_assert_uint_eq(off % 64, 0);
    if (bytes) memcpy(buf + off, data, bytes); /* the test hosts are little-endian */
    tu_write_file(path, buf, off + bytes);
    free(buf);
}

static void assert_error(ert_status got, ert_status want, const char *needle1,
                         const char *needle2) {
    const char *msg = ert_last_error();
    ck_assert_msg(got == want, "status %s (want %s): %s", ert_status_to_string(got),
                  ert_status_to_string(want), msg);
    if (needle1) ck_assert_msg(strstr(msg, needle1), "'%s' not in message: %s", needle1, msg);
    if (needle2) ck_assert_msg(strstr(msg, needle2), "'%s' not in message: %s", needle2, msg);
}

/* ---------------------------------------------------------------- (a) IDX round trips */

static void idx_roundtrip(int gz) {
    const char *dir = tu_tmpdir();
    const char *img = join(dir, gz ? "img.idx.gz" : "img.idx");
    const char *lbl = join(dir, gz ? "lbl.idx.gz" : "lbl.idx");
    unsigned char pix[3 * 2 * 4], labs[3] = {9, 0, 255};
    for (int i = 0; i < 24; ++i) pix[i] = (unsigned char)(i * 11);
    pix[0] = 0;
    pix[23] = 255;
    uint32_t idims[3] = {3, 2, 4}, ldims[1] = {3};
    write_idx(img, gz, 0x08, 3, idims, pix, sizeof pix);
    write_idx(lbl, gz, 0x08, 1, ldims, labs, sizeof labs);

    ert_dataset *d = NULL;
    ck_assert_int_eq(ert_idx_read(img, &d), ERT_OK);
    ck_assert_int_eq(d->n, 3);
    ck_assert_int_eq(d->ndim, 2);
    ck_assert_int_eq(d->shape[0], 2);
    ck_assert_int_eq(d->shape[1], 4);
    ck_assert_int_eq(d->sample_size, 8);
    ck_assert_ptr_null(d->labels);
    ck_assert_str_eq(d->name, img);
    for (int i = 0; i < 24; ++i) ck_assert_float_eq(d->x[i], (float)pix[i] / 255.0f);
    ck_assert_float_eq(d->x[0], 0.0f);
    ck_assert_float_eq(d->x[23], 1.0f);
    ert_dataset_free(d);

    d = NULL;
    ck_assert_int_eq(ert_idx_read(lbl, &d), ERT_OK);
    ck_assert_int_eq(d->n, 3);
    ck_assert_ptr_null(d->x);
    ck_assert_ptr_nonnull(d->labels);
    ck_assert_int_eq(d->labels[0], 9);
    ck_assert_int_eq(d->labels[1], 0);
    ck_assert_int_eq(d->labels[2], 255);
    ert_dataset_free(d);
}

START_TEST(test_idx_plain) { idx_roundtrip(0); }
END_TEST

START_TEST(test_idx_gzip) { idx_roundtrip(1); }
END_TEST

START_TEST(test_idx_4d) {
    const char *path = join(tu_tmpdir(), "c.idx");
    unsigned char pix[2 * 3 * 2 * 2];
    for (int i = 0; i < 24; ++i) pix[i] = (unsigned char)(255 - i);
    uint32_t dims[4] = {2, 3, 2, 2};
    write_idx(path, 0, 0x08, 4, dims, pix, sizeof pix);
    ert_dataset *d = NULL;
    ck_assert_int_eq(ert_idx_read(path, &d), ERT_OK);
    ck_assert_int_eq(d->n, 2);
    ck_assert_int_eq(d->ndim, 3);
    ck_assert_int_eq(d->shape[0], 3);
    ck_assert_int_eq(d->shape[1], 2);
    ck_assert_int_eq(d->shape[2], 2);
    ck_assert_int_eq(d->sample_size, 12);
    for (int i = 0; i < 24; ++i) ck_assert_float_eq(d->x[i], (float)pix[i] / 255.0f);
    ert_dataset_free(d);
}
END_TEST

/* ---------------------------------------------------------------- (b) IDX errors */

START_TEST(test_idx_truncated) {
    const char *dir = tu_tmpdir();
    unsigned char pix[24] = {0}, buf[64];
    uint32_t dims[3] = {3, 2, 4};
    ert_dataset *d = (ert_dataset *)1;

    const char *plain = join(dir, "short.idx");
    size_t n = idx_image(buf, 0x08, 3, dims, pix, sizeof pix);
    tu_write_file(plain, buf, n - 5);
    assert_error(ert_idx_read(plain, &d), ERT_ERR_FORMAT, "truncated", plain);
    ck_assert_ptr_null(d);

    /* A gzip stream cut short. */
    const char *full = join(dir, "full.idx.gz");
    write_gz(full, buf, n);
    FILE *f = fopen(full, "rb");
    ck_assert_ptr_nonnull(f);
    unsigned char gzbytes[512];
    size_t gzlen = fread(gzbytes, 1, sizeof gzbytes, f);
    fclose(f);
    ck_assert_uint_gt(gzlen, 20);
    const char *cut = join(dir, "cut.idx.gz");
    tu_write_file(cut, gzbytes, gzlen - 12);
    assert_error(ert_idx_read(cut, &d), ERT_ERR_FORMAT, "truncated", cut);

    /* A header cut inside the dimensions. */
    const char *hdr = join(dir, "hdr.idx");
    tu_write_file(hdr, buf, 7);
    assert_error(ert_idx_read(hdr, &d), ERT_ERR_FORMAT, "truncated", hdr);

    /* A header that promises 10^12 values from a few bytes fails fast, allocating little. */
    const char *huge = join(dir, "huge.idx");
    uint32_t hdims[3] = {1000000, 1000, 1000};
    n = idx_image(buf, 0x08, 3, hdims, pix, sizeof pix);
    tu_write_file(huge, buf, n);
    assert_error(ert_idx_read(huge, &d), ERT_ERR_FORMAT, "truncated", huge);
}
END_TEST

START_TEST(test_idx_bad_magic) {
    const char *path = join(tu_tmpdir(), "magic.idx");
    unsigned char buf[16] = {0x1f, 0x00, 0x08, 0x01, 0, 0, 0, 1, 7};
    tu_write_file(path, buf, 9);
    ert_dataset *d = NULL;
    assert_error(ert_idx_read(path, &d), ERT_ERR_FORMAT, "magic", path);
    ck_assert_ptr_null(d);

    /* ndim 0 and ndim 5 are malformed too. */
    unsigned char zero[4] = {0, 0, 0x08, 0};
    tu_write_file(path, zero, 4);
    assert_error(ert_idx_read(path, &d), ERT_ERR_FORMAT, path, NULL);
    unsigned char five[4] = {0, 0, 0x08, 5};
    tu_write_file(path, five, 4);
    assert_error(ert_idx_read(path, &d), ERT_ERR_FORMAT, path, NULL);
}
END_TEST

START_TEST(test_idx_wrong_dtype) {
    const char *path = join(tu_tmpdir(), "f32.idx");
    uint32_t dims[2] = {1, 1};
    unsigned char data[4] = {0x3f, 0x80, 0, 0};
    write_idx(path, 1, 0x0D, 2, dims, data, 4);
    ert_dataset *d = NULL;
    assert_error(ert_idx_read(path, &d), ERT_ERR_DTYPE, path, "0x0d");
    ck_assert_ptr_null(d);
}
END_TEST

START_TEST(test_idx_overflow_and_missing) {
    const char *dir = tu_tmpdir();
    const char *path = join(dir, "big.idx");
    uint32_t dims[4] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
    write_idx(path, 0, 0x08, 4, dims, NULL, 0);
    ert_dataset *d = NULL;
    assert_error(ert_idx_read(path, &d), ERT_ERR_FORMAT, "overflow", path);

    const char *missing = join(dir, "nope.idx.gz");
    assert_error(ert_idx_read(missing, &d), ERT_ERR_IO, missing, NULL);
    ck_assert_ptr_null(d);

    assert_error(ert_idx_read(NULL, &d), ERT_ERR_INVALID_ARGUMENT, NULL, NULL);
    assert_error(ert_idx_read(path, NULL), ERT_ERR_INVALID_ARGUMENT, NULL, NULL);
}
END_TEST

/* ---------------------------------------------------------------- (c) npy */

START_TEST(test_npy_roundtrip) {
    const char *dir = tu_tmpdir();
    float v[24];
    for (int i = 0; i < 24; ++i) v[i] = (float)i * 0.25f - 1.5f;
    v[5] = 3.14159265f;
    v[7] = -1e-30f;

    const char *p2 = join(dir, "a.npy");
    long s2[2] = {4, 6};
    write_npy(p2, 1, "<f4", 0, 2, s2, v, sizeof v);
    ert_dataset *d = NULL;
    ck_assert_int_eq(ert_npy_read_f32(p2, &d), ERT_OK);
    ck_assert_int_eq(d->n, 4);
    ck_assert_int_eq(d->ndim, 1);
    ck_assert_int_eq(d->shape[0], 6);
    ck_assert_int_eq(d->sample_size, 6);
    ck_assert_ptr_null(d->labels);
    ck_assert_int_eq(memcmp(d->x, v, sizeof v), 0);
    ert_dataset_free(d);

    /* One dimension: n samples of one value. */
    const char *p1 = join(dir, "b.npy");
    long s1[1] = {24};
    write_npy(p1, 1, "<f4", 0, 1, s1, v, sizeof v);
    ck_assert_int_eq(ert_npy_read_f32(p1, &d), ERT_OK);
    ck_assert_int_eq(d->n, 24);
    ck_assert_int_eq(d->ndim, 1);
    ck_assert_int_eq(d->shape[0], 1);
    ck_assert_int_eq(d->sample_size, 1);
    ck_assert_int_eq(memcmp(d->x, v, sizeof v), 0);
    ert_dataset_free(d);

    /* Four dimensions, version 2.0 header. */
    const char *p4 = join(dir, "c.npy");
    long s4[4] = {2, 1, 3, 4};
    write_npy(p4, 2, "<f4", 0, 4, s4, v, sizeof v);
    ck_assert_int_eq(ert_npy_read_f32(p4, &d), ERT_OK);
    ck_assert_int_eq(d->n, 2);
    ck_assert_int_eq(d->ndim, 3);
    ck_assert_int_eq(d->shape[0], 1);
    ck_assert_int_eq(d->shape[1], 3);
    ck_assert_int_eq(d->shape[2], 4);
    ck_assert_int_eq(d->sample_size, 12);
    ck_assert_int_eq(memcmp(d->x, v, sizeof v), 0);
    ert_dataset_free(d);

    /* Through ert_dataset_load, without labels. */
    ck_assert_int_eq(ert_dataset_load(p2, &d), ERT_OK);
    ck_assert_int_eq(d->n, 4);
    ck_assert_ptr_null(d->labels);
    ck_assert_str_eq(d->name, p2);
    ert_dataset_free(d);
}
END_TEST

START_TEST(test_npy_errors) {
    const char *dir = tu_tmpdir();
    double dv[6] = {1, 2, 3, 4, 5, 6};
    float fv[6] = {1, 2, 3, 4, 5, 6};
    long shape[2] = {2, 3};
    ert_dataset *d = NULL;

    const char *f8 = join(dir, "f8.npy");
    write_npy(f8, 1, "<f8", 0, 2, shape, dv, sizeof dv);
    assert_error(ert_npy_read_f32(f8, &d), ERT_ERR_DTYPE, "<f8", f8);
    ck_assert_ptr_null(d);
    assert_error(ert_dataset_load(f8, &d), ERT_ERR_DTYPE, "<f8", f8);

    const char *fort = join(dir, "fortran.npy");
    write_npy(fort, 1, "<f4", 1, 2, shape, fv, sizeof fv);
    assert_error(ert_npy_read_f32(fort, &d), ERT_ERR_UNSUPPORTED, fort, NULL);

    const char *trunc = join(dir, "trunc.npy");
    write_npy(trunc, 1, "<f4", 0, 2, shape, fv, sizeof fv - 3);
    assert_error(ert_npy_read_f32(trunc, &d), ERT_ERR_FORMAT, "truncated", trunc);

    const char *magic = join(dir, "magic.npy");
    tu_write_file(magic, "NUMPY\x01\x00xxxxxxxxxxxxxxxxx", 24);
    assert_error(ert_npy_read_f32(magic, &d), ERT_ERR_FORMAT, magic, NULL);

    const char *scalar = join(dir, "scalar.npy");
    write_npy(scalar, 1, "<f4", 0, 0, shape, fv, sizeof(float));
    assert_error(ert_npy_read_f32(scalar, &d), ERT_ERR_SHAPE, scalar, NULL);

    const char *missing = join(dir, "missing.npy");
    assert_error(ert_dataset_load(missing, &d), ERT_ERR_IO, missing, NULL);
    ck_assert_ptr_null(d);
}
END_TEST

START_TEST(test_npy_labels) {
    const char *dir = tu_tmpdir();
    float fv[6] = {0, 0.5f, 1, 0.25f, 0.75f, 0.125f};
    long shape[2] = {3, 2};
    const char *xs = join(dir, "x.npy");
    write_npy(xs, 1, "<f4", 0, 2, shape, fv, sizeof fv);

    int32_t l4[3] = {0x01020304, 0, 3}; /* every byte of a label counts */
    int64_t l8[3] = {2, 0x01020304, 1};
    long n3[1] = {3}, n2[1] = {2};
    const char *y4 = join(dir, "y4.npy");
    const char *y8 = join(dir, "y8.npy");
    const char *y2 = join(dir, "y2.npy");
    const char *yf = join(dir, "yf.npy");
    write_npy(y4, 1, "<i4", 0, 1, n3, l4, sizeof l4);
    write_npy(y8, 1, "<i8", 0, 1, n3, l8, sizeof l8);
    write_npy(y2, 1, "<i4", 0, 1, n2, l4, 2 * sizeof(int32_t));
    write_npy(yf, 1, "<f4", 0, 1, n3, fv, 3 * sizeof(float));

    char spec[8192];
    ert_dataset *d = NULL;
    snprintf(spec, sizeof spec, "%s:%s", xs, y4);
    ck_assert_int_eq(ert_dataset_load(spec, &d), ERT_OK);
    ck_assert_int_eq(d->n, 3);
    ck_assert_int_eq(d->sample_size, 2);
    ck_assert_ptr_nonnull(d->labels);
    for (int i = 0; i < 3; ++i) ck_assert_int_eq(d->labels[i], l4[i]);
    ck_assert_int_eq(memcmp(d->x, fv, sizeof fv), 0);
    ck_assert_str_eq(d->name, spec);
    ert_dataset_free(d);

    snprintf(spec, sizeof spec, "%s:%s", xs, y8);
    ck_assert_int_eq(ert_dataset_load(spec, &d), ERT_OK);
    for (int i = 0; i < 3; ++i) ck_assert_int_eq(d->labels[i], (int32_t)l8[i]);
    ert_dataset_free(d);

    snprintf(spec, sizeof spec, "%s:%s", xs, y2);
    d = NULL;
    assert_error(ert_dataset_load(spec, &d), ERT_ERR_SHAPE, y2, xs);
    ck_assert_ptr_null(d);

    snprintf(spec, sizeof spec, "%s:%s", xs, yf);
    assert_error(ert_dataset_load(spec, &d), ERT_ERR_DTYPE, "<f4", yf);

    const char *missing = join(dir, "nolabels.npy");
    snprintf(spec, sizeof spec, "%s:%s", xs, missing);
    assert_error(ert_dataset_load(spec, &d), ERT_ERR_IO, missing, NULL);
}
END_TEST

/* ---------------------------------------------------------------- (d) Fashion-MNIST */

static const char *fmnist_dir(void) {
    const char *dir = getenv("ERT_FASHION_MNIST_DIR");
    return dir && *dir ? dir : "/usr/share/datasets/fashion-mnist";
}

START_TEST(test_fmnist_real) {
    struct stat sb;
    const char *dir = fmnist_dir();
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        printf("test_fmnist_real: skipped, %s not found "
               "(apt-get install dataset-fashion-mnist)\n", dir);
        return;
    }
    ert_dataset *train = NULL, *val = NULL, *test = NULL, *all = NULL;
    ck_assert_msg(ert_dataset_load("fashion-mnist:train", &train) == ERT_OK, "%s",
                  ert_last_error());
    ck_assert_msg(ert_dataset_load("fashion-mnist:val", &val) == ERT_OK, "%s", ert_last_error());
    ck_assert_msg(ert_dataset_load("fashion-mnist:test", &test) == ERT_OK, "%s",
                  ert_last_error());
    ck_assert_msg(ert_dataset_load("fashion-mnist:train-all", &all) == ERT_OK, "%s",
                  ert_last_error());

    ck_assert_int_eq(train->n, 50000);
    ck_assert_int_eq(val->n, 10000);
    ck_assert_int_eq(test->n, 10000);
    ck_assert_int_eq(all->n, 60000);
    ert_dataset *sets[4] = {train, val, test, all};
    for (int s = 0; s < 4; ++s) {
        ert_dataset *d = sets[s];
        ck_assert_int_eq(d->ndim, 3);
        ck_assert_int_eq(d->shape[0], 1);
        ck_assert_int_eq(d->shape[1], 28);
        ck_assert_int_eq(d->shape[2], 28);
        ck_assert_int_eq(d->sample_size, 784);
        ck_assert_ptr_nonnull(d->labels);
        float lo = 1.0f, hi = 0.0f;
        for (int64_t i = 0; i < d->n * 784; ++i) {
            if (d->x[i] < lo) lo = d->x[i];
            if (d->x[i] > hi) hi = d->x[i];
        }
        ck_assert_float_eq(lo, 0.0f);
        ck_assert_float_eq(hi, 1.0f);
        for (int64_t i = 0; i < d->n; ++i) ck_assert(d->labels[i] >= 0 && d->labels[i] <= 9);
    }
    ck_assert_str_eq(train->name, "fashion-mnist:train");
    ck_assert_str_eq(test->name, "fashion-mnist:test");
    ck_assert_int_eq(train->labels[0], 9); /* Ankle boot */
    ck_assert_int_eq(test->labels[0], 9);
    ck_assert_int_eq(memcmp(val->x, all->x + 50000 * 784, 784 * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(val->labels, all->labels + 50000, 10000 * sizeof(int32_t)), 0);
    ck_assert_int_eq(memcmp(train->x, all->x, 784 * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(train->x + 49999 * 784, all->x + 49999 * 784, 784 * sizeof(float)),
                     0);
    ert_dataset_free(train);
    ert_dataset_free(val);
    ert_dataset_free(test);
    ert_dataset_free(all);
}
END_TEST

/* A fake Fashion-MNIST directory: image i is filled with byte i % 251, label i % 10.
 * Training images plain, training labels gzip; test files as given. */
static void write_fake_fmnist(const char *dir, int with_test) {
    uint32_t n = 60000;
    unsigned char *pix = malloc((size_t)n * 784);
    unsigned char *lab = malloc(n);
    ck_assert_ptr_nonnull(pix);
    ck_assert_ptr_nonnull(lab);
    for (uint32_t i = 0; i < n; ++i) {
        memset(pix + (size_t)i * 784, (int)(i % 251), 784);
        lab[i] = (unsigned char)(i % 10);
    }
    uint32_t idims[3] = {n, 28, 28}, ldims[1] = {n};
    write_idx(join(dir, "train-images-idx3-ubyte"), 0, 0x08, 3, idims, pix, (size_t)n * 784);
    write_idx(join(dir, "train-labels-idx1-ubyte.gz"), 1, 0x08, 1, ldims, lab, n);
    if (with_test) {
        idims[0] = ldims[0] = 10000;
        write_idx(join(dir, "t10k-images-idx3-ubyte.gz"), 1, 0x08, 3, idims, pix,
                  (size_t)10000 * 784);
        ldims[0] = 9999; /* one label short */
        write_idx(join(dir, "t10k-labels-idx1-ubyte.gz"), 1, 0x08, 1, ldims, lab, 9999);
    }
    free(pix);
    free(lab);
}

START_TEST(test_fmnist_fake_dir) {
    const char *dir = tu_tmpdir();
    write_fake_fmnist(dir, 1);
    ck_assert_int_eq(setenv("ERT_FASHION_MNIST_DIR", dir, 1), 0);

    ert_dataset *train = NULL, *val = NULL, *all = NULL, *test = NULL;
    ck_assert_msg(ert_dataset_load("fashion-mnist:train", &train) == ERT_OK, "%s",
                  ert_last_error());
    ck_assert_msg(ert_dataset_load("fashion-mnist:val", &val) == ERT_OK, "%s", ert_last_error());
    ck_assert_msg(ert_dataset_load("fashion-mnist:train-all", &all) == ERT_OK, "%s",
                  ert_last_error());
    ck_assert_int_eq(train->n, 50000);
    ck_assert_int_eq(val->n, 10000);
    ck_assert_int_eq(all->n, 60000);
    ck_assert_int_eq(val->ndim, 3);
    ck_assert_int_eq(val->sample_size, 784);
    ck_assert_float_eq(train->x[49999 * 784 + 783], (float)(49999 % 251) / 255.0f);
    ck_assert_int_eq(train->labels[49999], 9);
    ck_assert_float_eq(val->x[0], (float)(50000 % 251) / 255.0f);
    ck_assert_float_eq(val->x[9999 * 784 + 783], (float)(59999 % 251) / 255.0f);
    ck_assert_int_eq(val->labels[0], 0);
    ck_assert_int_eq(val->labels[9999], 9);
    ck_assert_int_eq(memcmp(val->x, all->x + 50000 * 784, 10000 * 784 * sizeof(float)), 0);
    ck_assert_str_eq(val->name, "fashion-mnist:val");

    /* The test labels are one short: a count mismatch naming both files. */
    assert_error(ert_dataset_load("fashion-mnist:test", &test), ERT_ERR_SHAPE,
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz");
    ck_assert_ptr_null(test);

    ert_dataset_free(train);
    ert_dataset_free(val);
    ert_dataset_free(all);
    unsetenv("ERT_FASHION_MNIST_DIR");
}
END_TEST

START_TEST(test_fmnist_missing) {
    const char *dir = tu_tmpdir();
    ert_dataset *d = NULL;

    /* A directory that does not exist: the message says how to install the data. */
    const char *gone = join(dir, "no-such-dir");
    ck_assert_int_eq(setenv("ERT_FASHION_MNIST_DIR", gone, 1), 0);
    assert_error(ert_dataset_load("fashion-mnist:test", &d), ERT_ERR_IO,
                 "apt-get install dataset-fashion-mnist", gone);
    ck_assert_ptr_null(d);

    /* A directory without the test files. */
    ck_assert_int_eq(setenv("ERT_FASHION_MNIST_DIR", dir, 1), 0);
    assert_error(ert_dataset_load("fashion-mnist:test", &d), ERT_ERR_IO,
                 "t10k-images-idx3-ubyte", dir);
    unsetenv("ERT_FASHION_MNIST_DIR");
}
END_TEST

/* ---------------------------------------------------------------- (e) specs */

START_TEST(test_specs) {
    ert_dataset *d = (ert_dataset *)1;
    assert_error(ert_dataset_load("fashion-mnist:bogus", &d), ERT_ERR_INVALID_ARGUMENT,
                 "fashion-mnist:bogus", "fashion-mnist:train-all");
    ck_assert_ptr_null(d);
    ck_assert_ptr_nonnull(strstr(ert_last_error(), "fashion-mnist:val"));
    ck_assert_ptr_nonnull(strstr(ert_last_error(), "fashion-mnist:test"));
    assert_error(ert_dataset_load("fashion-mnist", &d), ERT_ERR_INVALID_ARGUMENT,
                 "fashion-mnist:train", NULL);
    assert_error(ert_dataset_load("mnist:train", &d), ERT_ERR_INVALID_ARGUMENT, "mnist:train",
                 "PATH.npy");
    assert_error(ert_dataset_load("data.csv", &d), ERT_ERR_INVALID_ARGUMENT, "data.csv", NULL);
    assert_error(ert_dataset_load(NULL, &d), ERT_ERR_INVALID_ARGUMENT, NULL, NULL);
    assert_error(ert_dataset_load("x.npy", NULL), ERT_ERR_INVALID_ARGUMENT, NULL, NULL);
    assert_error(ert_dataset_load("/nonexistent/x.npy", &d), ERT_ERR_IO, "/nonexistent/x.npy",
                 NULL);
    assert_error(ert_dataset_load("/nonexistent/x.npy:", &d), ERT_ERR_INVALID_ARGUMENT,
                 "labels", NULL);
    ert_dataset_free(NULL);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("data");
    TCase *idx = tcase_create("idx");
    tcase_add_test(idx, test_idx_plain);
    tcase_add_test(idx, test_idx_gzip);
    tcase_add_test(idx, test_idx_4d);
    tcase_add_test(idx, test_idx_truncated);
    tcase_add_test(idx, test_idx_bad_magic);
    tcase_add_test(idx, test_idx_wrong_dtype);
    tcase_add_test(idx, test_idx_overflow_and_missing);
    suite_add_tcase(s, idx);

    TCase *npy = tcase_create("npy");
    tcase_add_test(npy, test_npy_roundtrip);
    tcase_add_test(npy, test_npy_errors);
    tcase_add_test(npy, test_npy_labels);
    suite_add_tcase(s, npy);

    TCase *fm = tcase_create("fashion-mnist");
    tcase_set_timeout(fm, 300);
    tcase_add_test(fm, test_fmnist_real);
    tcase_add_test(fm, test_fmnist_fake_dir);
    tcase_add_test(fm, test_fmnist_missing);
    suite_add_tcase(s, fm);

    TCase *spec = tcase_create("specs");
    tcase_add_test(spec, test_specs);
    suite_add_tcase(s, spec);
    return s;
}

int main(void) { return tu_run(suite()); }
