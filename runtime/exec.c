/* Session modes, execution modes and graph mode's row buckets (the session captures with them). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "exitrt/exitrt.h"

/* Sets *out to the index of `text` among names[0..n), or fails naming `what` and the
 * names it accepts. */
static ert_status parse_name(const char *what, const char *text, const char *const *names, int n, int *out) {
    for (int i = 0; text && i < n; ++i)
        if (strcmp(text, names[i]) == 0) return (*out = i, ERT_OK);
    char expected[128] = "";
    for (int i = 0; i < n; ++i) {
        const size_t len = strlen(expected);
        snprintf(expected + len, sizeof expected - len, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ", names[i]);
    }
    return ert_error(ERT_ERR_INVALID_ARGUMENT, "%s '%s': expected %s", what, text ? text : "(null)", expected);
}

ert_status ert_mode_parse(const char *text, ert_mode *out) {
    static const char *const names[] = {"compact", "masked", "full"};
    int i = 0;
    const ert_status st = parse_name("mode", text, names, 3, &i);
    if (st == ERT_OK) *out = (ert_mode)i;
    return st;
}

const char *ert_mode_name(ert_mode mode) {
    return mode == ERT_MODE_MASKED ? "masked" : mode == ERT_MODE_FULL ? "full" : "compact";
}

ert_status ert_exec_parse(const char *text, ert_exec *out) {
    static const char *const names[] = {"eager", "graph", "auto"};
    int i = 0;
    const ert_status st = parse_name("exec", text, names, 3, &i);
    if (st == ERT_OK) *out = (ert_exec)i;
    return st;
}

const char *ert_exec_name(ert_exec exec) {
    return exec == ERT_EXEC_GRAPH ? "graph" : exec == ERT_EXEC_AUTO ? "auto" : "eager";
}

ert_status ert_compaction_parse(const char *text, ert_compaction *out) {
    static const char *const names[] = {"auto", "gather", "fill"};
    int i = 0;
    const ert_status st = parse_name("compaction", text, names, 3, &i);
    if (st == ERT_OK) *out = (ert_compaction)i;
    return st;
}

const char *ert_compaction_name(ert_compaction compaction) {
    return compaction == ERT_COMPACTION_FILL ? "fill" : compaction == ERT_COMPACTION_GATHER ? "gather" : "auto";
}

/* 1, 2, 4, 8, multiples of 16 to 128, then steps of 2^(1/steps) rounded up to multiples
 * of 64 (GEMM tiles are 64 or 128 rows), with steps = 8 halved until the list fits.
 * Every power of two below max_batch is a bucket, so a count's bucket never passes the
 * next power of two: the GEMM runs the algorithm eager mode picks for that count
 * (kernels/cuda/linear.cu chooses one per power-of-two range), hence the same answers. */
static int default_buckets(int max_batch, int *out) {
    for (int steps = 8; steps >= 1; steps /= 2) {
        int n = 0;
        for (int v = 1; v < 16 && v < max_batch; v *= 2) out[n++] = v;
        for (int v = 16; v <= 128 && v < max_batch; v += 16) out[n++] = v;
        for (int k = 1; n < ERT_MAX_BUCKETS; ++k) {
            /* pow, not a running product: every steps-th value is an exact power of two */
            const double v = ceil(128.0 * pow(2.0, (double)k / steps) / 64.0) * 64.0;
            if (v >= max_batch) break;
            if (v > out[n - 1]) out[n++] = (int)v;
        }
        if (n < ERT_MAX_BUCKETS) {
            out[n++] = max_batch;
            return n;
        }
    }
    return 0; /* not reached: 2^24 rows fit in 4 + 8 + 17 doublings */
}

ert_status ert_buckets_parse(const char *text, int max_batch, int *out, int *count) {
    *count = 0;
    if (max_batch < 1) return ert_error(ERT_ERR_INVALID_ARGUMENT, "buckets: max_batch %d must be positive", max_batch);
    if (!text || !*text || strcmp(text, "default") == 0) {
        *count = default_buckets(max_batch, out);
        return ERT_OK;
    }
    int n = 0;
    const char *p = text;
    for (;;) {
        char *end;
        errno = 0;
        const long v = strtol(p, &end, 10);
        if (end == p || errno || (*end != ',' && *end != '\0'))
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "buckets '%s': expected increasing row counts like 64,256,1024",
                             text);
        if (v < 1 || v > max_batch)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "buckets '%s': %ld is outside 1..%d (max_batch)", text, v,
                             max_batch);
        if (n && v <= out[n - 1])
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "buckets '%s': %ld does not increase on %d", text, v,
                             out[n - 1]);
        if (n == ERT_MAX_BUCKETS)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "buckets '%s': at most %d buckets", text, ERT_MAX_BUCKETS);
        out[n++] = (int)v;
        if (*end == '\0') break;
        p = end + 1;
    }
    if (out[n - 1] != max_batch) {
        if (n == ERT_MAX_BUCKETS)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "buckets '%s': at most %d buckets, max_batch %d included", text,
                             ERT_MAX_BUCKETS, max_batch);
        out[n++] = max_batch;
    }
    *count = n;
    return ERT_OK;
}
