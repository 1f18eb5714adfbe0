/* Synthetic models: the headline benchmark's residual MLP with seeded weights.
 *
 *   input x (D) -> block 0: x = x + relu(W0 x + b0) -> exit 0: logits = H0 x + c0 (C)
 *               -> block 1 ...                       -> exit 1 ...  (an exit after every block)
 *
 * Weights come from a counter-based generator (splitmix64 of seed, tensor and element
 * index), so any element can be produced on its own: tensors are streamed to the file in
 * chunks and never held whole (a 65536-wide block is 16 GiB in f32).
 *
 * Scales, so that activations stay O(1) over many blocks: W uniform in +-a with
 * a = 0.5/sqrt(D) gives Var((W x)_i) = D a^2/3 E[x^2] = E[x^2]/12, and relu keeps half of
 * that, so each block grows E[x^2] by about 1/24: x1.6 after 12 blocks, x3.4 after 32.
 * Block biases are +-0.01; heads are +-1/sqrt(D) (PyTorch's default for nn.Linear).
 *
 * Files are written under temporary names in DIR and renamed into place, so a failure
 * leaves either the complete old files or the complete new ones, never a half. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "exit_math.h"
#include "dtype.h"
#include "error.h"
#include "exitrt/exitrt.h"

#define SYNTH_MAX_WIDTH 65536
#define SYNTH_MAX_CLASSES 100000
#define SYNTH_CHUNK 65536 /* elements generated and written at a time */

/* ---------------------------------------------------------------- the generator */


/* Element `i` of tensor `t` (the t-th tensor in file order), uniform in [-scale, scale).
 * splitmix64 of a counter: seed picks the stream, (t, i) the position in it. */
static float synth_value(uint64_t seed, uint64_t t, uint64_t i, float scale) {
    const uint64_t key = ert_mix64(seed ^ 0x5EEDC0DE5EEDC0DEull);
    const uint64_t x = ert_mix64(key + ((t << 40) + i + 1) * 0x9E3779B97F4A7C15ull);
    const float u = (float)(x >> 40) * (1.0f / 16777216.0f); /* [0, 1), 24 bits */
    return (2.0f * u - 1.0f) * scale;
}

/* ---------------------------------------------------------------- the tensors */

typedef struct synth_tensor {
    char name[64];
    int ndim;
    int64_t shape[2];
    float scale;
    uint64_t begin, end; /* byte range in the data section */
} synth_tensor;

static const char *st_dtype(ert_dtype d) { return d == ERT_DTYPE_BF16 ? "BF16" : d == ERT_DTYPE_F16 ? "F16" : "F32"; }
static size_t elem_size(ert_dtype d) { return d == ERT_DTYPE_F32 ? 4 : 2; }

/* File order per block k: stages.k.fc.weight, .bias, exits.k.fc.weight, .bias. */
static void plan_tensors(const ert_synth_options *o, synth_tensor *t) {
    const int D = o->width, C = o->classes;
    const float a = 0.5f / sqrtf((float)D), h = 1.0f / sqrtf((float)D);
    uint64_t off = 0;
    for (int k = 0; k < o->depth; ++k) {
        synth_tensor *s = &t[4 * k];
        s[0] = (synth_tensor){.ndim = 2, .shape = {D, D}, .scale = a};
        s[1] = (synth_tensor){.ndim = 1, .shape = {D, 0}, .scale = 0.01f};
        s[2] = (synth_tensor){.ndim = 2, .shape = {C, D}, .scale = h};
        s[3] = (synth_tensor){.ndim = 1, .shape = {C, 0}, .scale = h};
        snprintf(s[0].name, sizeof s[0].name, "stages.%d.fc.weight", k);
        snprintf(s[1].name, sizeof s[1].name, "stages.%d.fc.bias", k);
        snprintf(s[2].name, sizeof s[2].name, "exits.%d.fc.weight", k);
        snprintf(s[3].name, sizeof s[3].name, "exits.%d.fc.bias", k);
        for (int j = 0; j < 4; ++j) {
            uint64_t n = (uint64_t)s[j].shape[0] * (s[j].ndim == 2 ? (uint64_t)s[j].shape[1] : 1u);
            s[j].begin = off;
            off += n * elem_size(o->dtype);
            s[j].end = off;
        }
    }
}

/* ---------------------------------------------------------------- files */

/* mkdir -p: every missing component of `dir` is created. */
static ert_status make_dirs(const char *dir) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "dir '%s': path too long", dir);
    for (char *p = path + 1; *p; ++p) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return ert_error(ERT_ERR_IO, "cannot create directory '%s': %s", path, strerror(errno));
        *p = '/';
    }
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
        return ert_error(ERT_ERR_IO, "cannot create directory '%s': %s", path, strerror(errno));
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return ert_error(ERT_ERR_IO, "'%s' exists and is not a directory", path);
    return ERT_OK;
}

/* Appends printf output to a header buffer of `cap` bytes; 0 when it does not fit. */
static int append(char *buf, size_t cap, size_t *len, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static int append(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap - *len) return 0;
    *len += (size_t)n;
    return 1;
}

static ert_status write_weights(const ert_synth_options *o, const synth_tensor *t, int count, const char *path) {
    ert_status st = ERT_OK;
    const size_t cap = 256 + (size_t)count * 192;
    char *header = malloc(cap);
    float *vals = malloc(SYNTH_CHUNK * sizeof(float));
    void *raw = malloc(SYNTH_CHUNK * 4);
    FILE *f = NULL;
    if (!header || !vals || !raw) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
        goto done;
    }
    size_t len = 0;
    int ok = append(header, cap, &len,
                    "{\"__metadata__\":{\"format\":\"pt\",\"generator\":\"exitrt synth\",\"seed\":\"%llu\"}",
                    (unsigned long long)o->seed);
    for (int i = 0; ok && i < count; ++i) {
        ok = append(header, cap, &len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, st_dtype(o->dtype));
        for (int d = 0; ok && d < t[i].ndim; ++d)
            ok = append(header, cap, &len, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        ok = ok && append(header, cap, &len, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t[i].begin,
                          (unsigned long long)t[i].end);
    }
    ok = ok && append(header, cap, &len, "}");
    /* Pad with spaces so the data starts 8-byte aligned (8 + len is a multiple of 8). */
    while (ok && len % 8) ok = append(header, cap, &len, " ");
    if (!ok) {
        st = ert_error(ERT_ERR_INVALID_ARGUMENT, "safetensors header too long");
        goto done;
    }
    if (!(f = fopen(path, "wb"))) {
        st = ert_error(ERT_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
        goto done;
    }
    unsigned char n8[8];
    for (int i = 0; i < 8; ++i) n8[i] = (unsigned char)(((uint64_t)len >> (8 * i)) & 0xffu);
    ok = fwrite(n8, 1, 8, f) == 8 && fwrite(header, 1, len, f) == len;
    const size_t es = elem_size(o->dtype);
    for (int i = 0; ok && i < count; ++i) {
        const uint64_t n = (t[i].end - t[i].begin) / es;
        for (uint64_t at = 0; ok && at < n; at += SYNTH_CHUNK) {
            const size_t m = (size_t)(n - at < SYNTH_CHUNK ? n - at : SYNTH_CHUNK);
            for (size_t j = 0; j < m; ++j) vals[j] = synth_value(o->seed, (uint64_t)i, at + j, t[i].scale);
            for (size_t j = 0; j < m; ++j) {
                /* Little-endian on disk, as the format requires (and as every host we
                 * build for stores them). */
                if (o->dtype == ERT_DTYPE_BF16) ((uint16_t *)raw)[j] = ert_f32_to_bf16(vals[j]);
                else if (o->dtype == ERT_DTYPE_F16) ((uint16_t *)raw)[j] = ert_f32_to_f16(vals[j]);
                else ((float *)raw)[j] = vals[j];
            }
            ok = fwrite(raw, es, m, f) == m;
        }
    }
    if (fclose(f) != 0) ok = 0;
    f = NULL;
    if (!ok) st = ert_error(ERT_ERR_IO, "write error on '%s' (disk full?)", path);
done:
    if (f) fclose(f);
    free(raw);
    free(vals);
    free(header);
    return st;
}

static cJSON *linear_json(int in, int out, const char *act, const char *weight, const char *bias) {
    cJSON *op = cJSON_CreateObject();
    cJSON_AddStringToObject(op, "op", "linear");
    cJSON_AddNumberToObject(op, "in", in);
    cJSON_AddNumberToObject(op, "out", out);
    if (act) cJSON_AddStringToObject(op, "activation", act);
    cJSON_AddStringToObject(op, "weight", weight);
    cJSON_AddStringToObject(op, "bias", bias);
    return op;
}

static ert_status write_config(const ert_synth_options *o, const synth_tensor *t, const char *path) {
    ert_status st = ERT_OK;
    char name[64], seed[32];
    snprintf(name, sizeof name, "synth-D%d-L%d", o->width, o->depth);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->seed);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "exitrt-model");
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddStringToObject(root, "name", name);
    cJSON *gen = cJSON_AddObjectToObject(root, "generator");
    cJSON_AddStringToObject(gen, "tool", "exitrt synth");
    cJSON_AddStringToObject(gen, "seed", seed); /* a string: a u64 does not fit a JSON double */
    cJSON_AddStringToObject(gen, "dtype", ert_dtype_name(o->dtype));
    cJSON *input = cJSON_AddObjectToObject(root, "input");
    cJSON *shape = cJSON_AddArrayToObject(input, "shape");
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(o->width));
    cJSON *classes = cJSON_AddArrayToObject(root, "classes");
    for (int c = 0; c < o->classes; ++c) {
        char label[16];
        snprintf(label, sizeof label, "c%d", c);
        cJSON_AddItemToArray(classes, cJSON_CreateString(label));
    }
    cJSON *stages = cJSON_AddArrayToObject(root, "stages");
    for (int k = 0; k < o->depth; ++k) {
        const synth_tensor *s = &t[4 * k];
        char sname[32];
        snprintf(sname, sizeof sname, "block%d", k);
        cJSON *stage = cJSON_CreateObject();
        cJSON_AddStringToObject(stage, "name", sname);
        cJSON *ops = cJSON_AddArrayToObject(stage, "ops");
        cJSON *res = cJSON_CreateObject();
        cJSON_AddStringToObject(res, "op", "residual");
        cJSON *sub = cJSON_AddArrayToObject(res, "ops");
        cJSON_AddItemToArray(sub, linear_json(o->width, o->width, "relu", s[0].name, s[1].name));
        cJSON_AddItemToArray(ops, res);
        cJSON *head = cJSON_AddArrayToObject(stage, "exit");
        cJSON_AddItemToArray(head, linear_json(o->width, o->classes, NULL, s[2].name, s[3].name));
        cJSON_AddItemToArray(stages, stage);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
    FILE *f = fopen(path, "wb");
    if (!f) {
        st = ert_error(ERT_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    } else {
        const size_t n = strlen(text);
        int ok = fwrite(text, 1, n, f) == n && fputc('\n', f) != EOF;
        if (fclose(f) != 0 || !ok) st = ert_error(ERT_ERR_IO, "write error on '%s'", path);
    }
    cJSON_free(text);
    return st;
}

/* ---------------------------------------------------------------- entry point */

static ert_status check_options(const ert_synth_options *o, const char *dir) {
    if (!o || !dir || !*dir)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_synth_write: options and dir must not be NULL or empty");
    const int max_depth = ERT_MAX_STAGES < ERT_MAX_EXITS ? ERT_MAX_STAGES : ERT_MAX_EXITS;
    if (o->width < 1 || o->width > SYNTH_MAX_WIDTH)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "width %d: expected 1..%d", o->width, SYNTH_MAX_WIDTH);
    if (o->depth < 1 || o->depth > max_depth)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "depth %d: expected 1..%d (an exit after every block)",
                         o->depth, max_depth);
    if (o->classes < 2 || o->classes > SYNTH_MAX_CLASSES)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "classes %d: expected 2..%d", o->classes,
                         SYNTH_MAX_CLASSES);
    if (o->dtype != ERT_DTYPE_F32 && o->dtype != ERT_DTYPE_BF16 && o->dtype != ERT_DTYPE_F16)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "dtype '%s': weights are stored as f32, bf16 or f16",
                         ert_dtype_name(o->dtype));
    return ERT_OK;
}

ert_status ert_synth_write(const ert_synth_options *opt, const char *dir) {
    ert_status st = check_options(opt, dir);
    if (st) return st;
    if ((st = make_dirs(dir))) return st;
    const int count = 4 * opt->depth;
    synth_tensor *t = calloc((size_t)count, sizeof *t);
    if (!t) return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
    plan_tensors(opt, t);

    char cfg[4096], wts[4096], cfg_tmp[4200], wts_tmp[4200];
    if (snprintf(cfg, sizeof cfg, "%s/config.json", dir) >= (int)sizeof cfg ||
        snprintf(wts, sizeof wts, "%s/model.safetensors", dir) >= (int)sizeof wts) {
        free(t);
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "dir '%s': path too long", dir);
    }
    snprintf(cfg_tmp, sizeof cfg_tmp, "%s/.config.json.tmp.%ld", dir, (long)getpid());
    snprintf(wts_tmp, sizeof wts_tmp, "%s/.model.safetensors.tmp.%ld", dir, (long)getpid());
    if ((st = write_weights(opt, t, count, wts_tmp)) || (st = write_config(opt, t, cfg_tmp))) goto fail;
    /* The weights first: a config never names tensors its file lacks. */
    if (rename(wts_tmp, wts) != 0) {
        st = ert_error(ERT_ERR_IO, "cannot rename '%s' to '%s': %s", wts_tmp, wts, strerror(errno));
        goto fail;
    }
    if (rename(cfg_tmp, cfg) != 0) {
        st = ert_error(ERT_ERR_IO, "cannot rename '%s' to '%s': %s", cfg_tmp, cfg, strerror(errno));
        goto fail;
    }
    free(t);
    return ERT_OK;
fail:
    remove(wts_tmp);
    remove(cfg_tmp);
    free(t);
    return st;
}
