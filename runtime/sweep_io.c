/* A sweep on disk: DIR/sweep.json (metadata, rows with frontier flags, latency model,
 * per-exit search) and DIR/sweep.csv (one line per row), each written to a temporary
 * name and renamed, so a reader never sees half a file. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "internal.h"

/* mkdir -p */
static ert_status make_dir(const char *dir) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "directory '%s': path too long", dir);
    for (char *p = buf + 1;; ++p) {
        const char c = *p;
        if (c == '/' || c == '\0') {
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return ert_error(ERT_ERR_IO, "directory '%s': cannot create: %s", buf, strerror(errno));
            *p = c;
        }
        if (c == '\0') break;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return ert_error(ERT_ERR_IO, "'%s' is not a directory", dir);
    return ERT_OK;
}

static ert_status write_text(const char *dir, const char *name, const char *text) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return ert_error(ERT_ERR_IO, "'%s': cannot write", path);
    const size_t len = strlen(text);
    const int ok = fwrite(text, 1, len, f) == len;
    if (fclose(f) != 0 || !ok || rename(tmp, path) != 0) {
        remove(tmp);
        return ert_error(ERT_ERR_IO, "'%s': write failed", path);
    }
    return ERT_OK;
}

/* ---------------------------------------------------------------- JSON */

static cJSON *latency_json(const ert_latency *l) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "mean", l->mean);
    cJSON_AddNumberToObject(j, "p50", l->p50);
    cJSON_AddNumberToObject(j, "p95", l->p95);
    cJSON_AddNumberToObject(j, "p99", l->p99);
    cJSON_AddNumberToObject(j, "max", l->max);
    return j;
}

static cJSON *histogram_json(const int64_t *h, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int e = 0; e < n; ++e) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)h[e]));
    return a;
}

static cJSON *row_json(const ert_sweep_row *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "policy", r->policy);
    cJSON_AddStringToObject(j, "family", r->family);
    cJSON_AddNumberToObject(j, "param", r->param); /* NaN is written as null */
    cJSON_AddNumberToObject(j, "calibrated", r->calibrated);
    cJSON_AddBoolToObject(j, "reference", r->reference);
    cJSON_AddNumberToObject(j, "samples", (double)r->samples);
    if (r->accuracy >= 0) cJSON_AddNumberToObject(j, "accuracy", r->accuracy);
    else cJSON_AddNullToObject(j, "accuracy");
    cJSON_AddNumberToObject(j, "mean_exit", r->mean_exit);
    cJSON_AddNumberToObject(j, "flops_fraction", r->flops_fraction);
    cJSON_AddNumberToObject(j, "throughput", r->throughput);
    cJSON_AddNumberToObject(j, "batches", r->num_batches);
    cJSON_AddItemToObject(j, "batch_latency_ms", latency_json(&r->batch_ms));
    cJSON_AddItemToObject(j, "sample_latency_ms", latency_json(&r->sample_ms));
    cJSON_AddItemToObject(j, "exit_histogram", histogram_json(r->exit_histogram, r->num_exits));
    cJSON_AddItemToObject(j, "exit_correct", histogram_json(r->exit_correct, r->num_exits));
    cJSON_AddNumberToObject(j, "sim_mismatch", (double)r->sim_mismatch);
    cJSON_AddBoolToObject(j, "frontier_mean", r->frontier_mean);
    cJSON_AddBoolToObject(j, "frontier_p99", r->frontier_p99);
    return j;
}

static cJSON *sim_json(const ert_sim_result *s, int E, double predicted_ms) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "accuracy", s->accuracy);
    cJSON_AddNumberToObject(j, "mean_exit", s->mean_exit);
    cJSON_AddNumberToObject(j, "flops_fraction", s->flops_fraction);
    cJSON_AddNumberToObject(j, "predicted_batch_ms", predicted_ms);
    cJSON_AddItemToObject(j, "exit_histogram", histogram_json(s->exit_histogram, E));
    return j;
}

static char *sweep_json_text(const ert_sweep_result *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", "exitrt-sweep");
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddStringToObject(j, "model", r->model);
    cJSON_AddStringToObject(j, "data", r->data);
    cJSON_AddNumberToObject(j, "samples", (double)r->samples);
    cJSON_AddStringToObject(j, "device", r->device);
    cJSON_AddStringToObject(j, "mode", r->mode);
    cJSON_AddStringToObject(j, "exec", r->exec);
    cJSON_AddStringToObject(j, "compaction", r->compaction);
    cJSON_AddStringToObject(j, "dtype", r->dtype);
    cJSON_AddNumberToObject(j, "batch", r->batch);
    cJSON_AddNumberToObject(j, "warmup", r->warmup);
    cJSON_AddNumberToObject(j, "reps", r->reps);
    cJSON_AddStringToObject(j, "date", r->date);
    cJSON_AddStringToObject(j, "calibration", r->calibration);
    cJSON_AddBoolToObject(j, "model_calibrated", r->model_calibrated);
    cJSON_AddNumberToObject(j, "num_exits", r->num_exits);
    cJSON_AddNumberToObject(j, "flops_full", r->flops_full);
    cJSON *ef = cJSON_AddArrayToObject(j, "exit_flops_fraction");
    for (int e = 0; e < r->num_exits; ++e) cJSON_AddItemToArray(ef, cJSON_CreateNumber(r->exit_flops_fraction[e]));
    if (r->shift[0]) {
        cJSON *sh = cJSON_AddObjectToObject(j, "shift");
        cJSON_AddStringToObject(sh, "kind", r->shift);
        cJSON_AddNumberToObject(sh, "severity", r->shift_severity);
        cJSON_AddNumberToObject(sh, "seed", (double)r->shift_seed);
    } else {
        cJSON_AddNullToObject(j, "shift");
    }
    cJSON *fm = cJSON_AddObjectToObject(j, "frontiers");
    cJSON_AddStringToObject(fm, "frontier_mean", "accuracy vs batch-mean latency");
    cJSON_AddStringToObject(fm, "frontier_p99", "accuracy vs batch-p99 latency");
    cJSON_AddNumberToObject(j, "sim_mismatch", (double)r->sim_mismatch);
    cJSON *rows = cJSON_AddArrayToObject(j, "rows");
    for (int i = 0; i < r->num_rows; ++i) cJSON_AddItemToArray(rows, row_json(&r->rows[i]));
    const ert_latency_model *lm = &r->latency;
    if (lm->batches > 0) {
        cJSON *l = cJSON_AddObjectToObject(j, "latency_model");
        cJSON_AddNumberToObject(l, "batches", (double)lm->batches);
        cJSON_AddNumberToObject(l, "overhead_ms", lm->overhead_ms);
        cJSON *fx = cJSON_AddArrayToObject(l, "stage_fixed_ms"), *pr = cJSON_AddArrayToObject(l, "stage_per_row_ms");
        for (int k = 0; k < lm->num_stages; ++k) {
            cJSON_AddItemToArray(fx, cJSON_CreateNumber(lm->fixed_ms[k]));
            cJSON_AddItemToArray(pr, cJSON_CreateNumber(lm->per_row_ms[k]));
        }
    }
    if (r->has_search) {
        const ert_threshold_search_result *s = &r->search;
        cJSON *x = cJSON_AddObjectToObject(j, "per_exit_search");
        cJSON_AddStringToObject(x, "data", r->search_data);
        cJSON_AddStringToObject(x, "kind", r->search_kind);
        cJSON_AddNumberToObject(x, "budget_flops", r->search_budget_flops);
        cJSON_AddNumberToObject(x, "budget_ms", r->search_budget_ms);
        cJSON_AddStringToObject(x, "policy", s->policy);
        cJSON *th = cJSON_AddArrayToObject(x, "thresholds");
        for (int e = 0; e < s->num_thresholds; ++e) cJSON_AddItemToArray(th, cJSON_CreateNumber(s->threshold[e]));
        cJSON_AddItemToObject(x, "on_search_data", sim_json(&s->search, r->num_exits, s->predicted_ms));
        cJSON_AddStringToObject(x, "shared_policy", s->shared_policy);
        cJSON_AddItemToObject(x, "shared_on_search_data", sim_json(&s->shared, r->num_exits, s->shared_predicted_ms));
        cJSON_AddNumberToObject(x, "rounds", s->rounds);
        cJSON_AddNumberToObject(x, "evaluations", s->evaluations);
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    return text;
}

/* ---------------------------------------------------------------- CSV */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int failed;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        const size_t cap = (b->cap ? 2 * b->cap : 4096) + (size_t)n;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void sb_num(sbuf *b, double v) {
    if (isnan(v)) sb_printf(b, ",");
    else sb_printf(b, ",%.9g", v);
}

static char *sweep_csv_text(const ert_sweep_result *r) {
    sbuf b = {0};
    sb_printf(&b, "policy,family,param,calibrated,reference,samples,accuracy,mean_exit,flops_fraction,throughput,"
                  "batch_mean_ms,batch_p50_ms,batch_p95_ms,batch_p99_ms,sample_mean_ms,sample_p50_ms,sample_p95_ms,"
                  "sample_p99_ms,frontier_mean,frontier_p99");
    for (int e = 0; e < r->num_exits; ++e) sb_printf(&b, ",exit_%d", e);
    sb_printf(&b, "\n");
    for (int i = 0; i < r->num_rows; ++i) {
        const ert_sweep_row *w = &r->rows[i];
        /* specs hold commas: quote them (they hold no quotes) */
        sb_printf(&b, "\"%s\",%s", w->policy, w->family);
        sb_num(&b, w->param);
        sb_printf(&b, ",%d,%d,%lld", w->calibrated, w->reference, (long long)w->samples);
        sb_num(&b, w->accuracy >= 0 ? w->accuracy : NAN);
        sb_num(&b, w->mean_exit);
        sb_num(&b, w->flops_fraction);
        sb_num(&b, w->throughput);
        const double lat[] = {w->batch_ms.mean,  w->batch_ms.p50,  w->batch_ms.p95,  w->batch_ms.p99,
                              w->sample_ms.mean, w->sample_ms.p50, w->sample_ms.p95, w->sample_ms.p99};
        for (int k = 0; k < 8; ++k) sb_num(&b, lat[k]);
        sb_printf(&b, ",%d,%d", w->frontier_mean, w->frontier_p99);
        for (int e = 0; e < r->num_exits; ++e) sb_printf(&b, ",%lld", (long long)w->exit_histogram[e]);
        sb_printf(&b, "\n");
    }
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

ert_status ert_sweep_write(const ert_sweep_result *r, const char *dir) {
    if (!r || !dir) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_sweep_write: NULL argument");
    ert_status st = make_dir(dir);
    if (st) return st;
    char *json = sweep_json_text(r), *csv = sweep_csv_text(r);
    if (!json || !csv) st = ert_error(ERT_ERR_OUT_OF_MEMORY, "sweep: out of memory writing '%s'", dir);
    if (!st) st = write_text(dir, "sweep.csv", csv);
    if (!st) st = write_text(dir, "sweep.json", json);
    free(json);
    free(csv);
    return st;
}

/* ---------------------------------------------------------------- reading back */

static double num_or_nan(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void read_str(const cJSON *o, const char *key, char *out, size_t len) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    snprintf(out, len, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

static ert_latency read_latency(const cJSON *o) {
    ert_latency l = {num_or_nan(o, "mean"), num_or_nan(o, "p50"), num_or_nan(o, "p95"), num_or_nan(o, "p99"),
                     num_or_nan(o, "max")};
    return l;
}

#define MAX_COUNT 9007199254740992.0 /* 2^53: every whole number below is exact in a double */

static int is_whole(const cJSON *v, double lo, double hi) {
    return cJSON_IsNumber(v) && v->valuedouble >= lo && v->valuedouble <= hi && v->valuedouble == floor(v->valuedouble);
}

/* A whole-number field in lo..hi, `dflt` when absent or null. A value of another kind
 * sets *bad to the key (the first one only) and gives dflt: the caller reports it. */
static int64_t whole_or(const cJSON *o, const char *key, int64_t dflt, double lo, double hi, const char **bad) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) return dflt;
    if (is_whole(v, lo, hi)) return (int64_t)v->valuedouble;
    if (!*bad) *bad = key;
    return dflt;
}

/* The counts of an exit histogram; their number, or -1 if one is not a count. */
static int read_hist(const cJSON *a, int64_t *h) {
    int n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, a) {
        if (!is_whole(v, 0, MAX_COUNT)) return -1;
        if (n < ERT_MAX_EXITS) h[n] = (int64_t)v->valuedouble;
        ++n;
    }
    return n;
}

static ert_status read_row(const cJSON *o, int index, const char *path, ert_sweep_row *r) {
    memset(r, 0, sizeof *r);
    const cJSON *pol = cJSON_GetObjectItemCaseSensitive(o, "policy");
    const cJSON *bl = cJSON_GetObjectItemCaseSensitive(o, "batch_latency_ms");
    const cJSON *sl = cJSON_GetObjectItemCaseSensitive(o, "sample_latency_ms");
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(o, "accuracy");
    if (!cJSON_IsString(pol) || !cJSON_IsObject(bl) || !cJSON_IsObject(sl) || !acc)
        return ert_error(ERT_ERR_FORMAT, "sweep '%s': row %d lacks policy, accuracy or the latencies", path, index);
    snprintf(r->policy, sizeof r->policy, "%s", pol->valuestring);
    read_str(o, "family", r->family, sizeof r->family);
    r->param = num_or_nan(o, "param");
    const char *bad = NULL;
    r->calibrated = (int)whole_or(o, "calibrated", -1, -1, 1, &bad);
    r->reference = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "reference"));
    r->samples = whole_or(o, "samples", 0, 0, MAX_COUNT, &bad);
    r->accuracy = cJSON_IsNumber(acc) ? acc->valuedouble : -1.0;
    r->mean_exit = num_or_nan(o, "mean_exit");
    r->flops_fraction = num_or_nan(o, "flops_fraction");
    r->throughput = num_or_nan(o, "throughput");
    r->num_batches = (int)whole_or(o, "batches", 0, 0, INT_MAX, &bad);
    r->batch_ms = read_latency(bl);
    r->sample_ms = read_latency(sl);
    r->num_exits = read_hist(cJSON_GetObjectItemCaseSensitive(o, "exit_histogram"), r->exit_histogram);
    if (r->num_exits < 0 || read_hist(cJSON_GetObjectItemCaseSensitive(o, "exit_correct"), r->exit_correct) < 0)
        return ert_error(ERT_ERR_FORMAT, "sweep '%s': row %d: an exit histogram holds something other than counts",
                         path, index);
    if (r->num_exits > ERT_MAX_EXITS)
        return ert_error(ERT_ERR_FORMAT, "sweep '%s': row %d has %d exits (at most %d)", path, index, r->num_exits,
                         ERT_MAX_EXITS);
    r->sim_mismatch = whole_or(o, "sim_mismatch", -1, -1, MAX_COUNT, &bad);
    if (bad) return ert_error(ERT_ERR_FORMAT, "sweep '%s': row %d: \"%s\" is not a whole number in range", path, index, bad);
    r->frontier_mean = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "frontier_mean"));
    r->frontier_p99 = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "frontier_p99"));
    return ERT_OK;
}

ert_status ert_sweep_read(const char *path_in, ert_sweep_result **out) {
    if (!path_in || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_sweep_read: NULL argument");
    *out = NULL;
    char path[4096];
    struct stat sb;
    if (stat(path_in, &sb) == 0 && S_ISDIR(sb.st_mode)) snprintf(path, sizeof path, "%s/sweep.json", path_in);
    else snprintf(path, sizeof path, "%s", path_in);
    FILE *f = fopen(path, "rb");
    if (!f) return ert_error(ERT_ERR_IO, "sweep '%s': cannot open", path);
    ert_status st = ERT_OK;
    char *text = NULL;
    cJSON *j = NULL;
    ert_sweep_result *r = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len < 0 || fseek(f, 0, SEEK_SET) != 0 || !(text = malloc((size_t)len + 1)) ||
        fread(text, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        free(text);
        return ert_error(ERT_ERR_IO, "sweep '%s': cannot read", path);
    }
    fclose(f);
    text[len] = '\0';
    j = cJSON_Parse(text);
    free(text);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(j, "rows");
    if (!cJSON_IsObject(j) || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, "exitrt-sweep") != 0 ||
        !cJSON_IsArray(rows)) {
        st = ert_error(ERT_ERR_FORMAT, "sweep '%s': not an exitrt sweep (needs \"format\": \"exitrt-sweep\" and rows)",
                       path);
        goto done;
    }
    if (!(r = calloc(1, sizeof *r))) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "sweep: out of memory");
        goto done;
    }
    read_str(j, "model", r->model, sizeof r->model);
    read_str(j, "data", r->data, sizeof r->data);
    read_str(j, "device", r->device, sizeof r->device);
    read_str(j, "mode", r->mode, sizeof r->mode);
    read_str(j, "exec", r->exec, sizeof r->exec);
    if (!r->exec[0]) snprintf(r->exec, sizeof r->exec, "eager"); /* sweeps written before graph mode */
    read_str(j, "compaction", r->compaction, sizeof r->compaction);
    if (!r->compaction[0]) snprintf(r->compaction, sizeof r->compaction, "gather"); /* ... before fill */
    read_str(j, "dtype", r->dtype, sizeof r->dtype);
    read_str(j, "date", r->date, sizeof r->date);
    read_str(j, "calibration", r->calibration, sizeof r->calibration);
    r->model_calibrated = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "model_calibrated"));
    const char *bad = NULL;
    r->batch = (int)whole_or(j, "batch", 0, 0, INT_MAX, &bad);
    r->warmup = (int)whole_or(j, "warmup", 0, 0, INT_MAX, &bad);
    r->reps = (int)whole_or(j, "reps", 1, 0, INT_MAX, &bad);
    r->samples = whole_or(j, "samples", 0, 0, MAX_COUNT, &bad);
    r->num_exits = (int)whole_or(j, "num_exits", 0, 0, ERT_MAX_EXITS, &bad);
    r->flops_full = num_or_nan(j, "flops_full");
    r->sim_mismatch = whole_or(j, "sim_mismatch", -1, -1, MAX_COUNT, &bad);
    const cJSON *ef = cJSON_GetObjectItemCaseSensitive(j, "exit_flops_fraction"), *v;
    int e = 0;
    cJSON_ArrayForEach(v, ef) if (e < ERT_MAX_EXITS) r->exit_flops_fraction[e++] = v->valuedouble;
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shift");
    if (cJSON_IsObject(sh)) {
        read_str(sh, "kind", r->shift, sizeof r->shift);
        r->shift_severity = (int)whole_or(sh, "severity", 0, 0, ERT_SHIFT_MAX_SEVERITY, &bad);
        /* any uint64 (older sweeps took --seed up to 2^63; written as a double) */
        const cJSON *seed = cJSON_GetObjectItemCaseSensitive(sh, "seed");
        if (is_whole(seed, 0, 18446744073709549568.0)) r->shift_seed = (uint64_t)seed->valuedouble;
        else if (seed && !cJSON_IsNull(seed) && !bad) bad = "seed";
    }
    if (bad) {
        st = ert_error(ERT_ERR_FORMAT, "sweep '%s': \"%s\" is not a whole number in range", path, bad);
        goto done;
    }
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, "per_exit_search");
    if (cJSON_IsObject(x)) {
        r->has_search = 1;
        read_str(x, "policy", r->search.policy, sizeof r->search.policy);
        read_str(x, "shared_policy", r->search.shared_policy, sizeof r->search.shared_policy);
        read_str(x, "data", r->search_data, sizeof r->search_data);
        read_str(x, "kind", r->search_kind, sizeof r->search_kind);
        r->search_budget_flops = num_or_nan(x, "budget_flops");
        r->search_budget_ms = num_or_nan(x, "budget_ms");
    }
    int i = 0;
    const cJSON *ro;
    cJSON_ArrayForEach(ro, rows) {
        ert_sweep_row row;
        if ((st = read_row(ro, i++, path, &row))) goto done;
        /* appended directly: the file's frontier flags are kept as written */
        if (r->num_rows == r->cap_rows) {
            const int cap = r->cap_rows ? 2 * r->cap_rows : 32;
            ert_sweep_row *nr = realloc(r->rows, sizeof *nr * (size_t)cap);
            if (!nr) {
                st = ert_error(ERT_ERR_OUT_OF_MEMORY, "sweep: out of memory");
                goto done;
            }
            r->rows = nr;
            r->cap_rows = cap;
        }
        r->rows[r->num_rows++] = row;
    }
done:
    cJSON_Delete(j);
    if (st) {
        ert_sweep_result_free(r);
        return st;
    }
    *out = r;
    return ERT_OK;
}
