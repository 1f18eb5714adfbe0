/* Chrome / Perfetto trace of batch profiles ("Trace Event Format": complete events,
 * ph "X", times in microseconds). Slices nest by time on one track per session. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "internal.h"

struct ert_trace {
    FILE *f;
    char *path, *tmp;
    int events;
    int tracks;
    char track_names[16][64];
};

ert_status ert_trace_open(const char *path, ert_trace **out) {
    if (!path || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_trace_open: NULL argument");
    *out = NULL;
    ert_trace *t = calloc(1, sizeof *t);
    if (!t || !(t->path = strdup(path)) || !(t->tmp = malloc(strlen(path) + 5))) goto oom;
    sprintf(t->tmp, "%s.tmp", path);
    if (!(t->f = fopen(t->tmp, "w"))) {
        ert_status s = ert_error(ERT_ERR_IO, "trace '%s': cannot write", path);
        ert_trace_close(t);
        return s;
    }
    fprintf(t->f, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n");
    *out = t;
    return ERT_OK;
oom:
    if (t) free(t->path);
    free(t);
    return ert_error(ERT_ERR_OUT_OF_MEMORY, "trace: out of memory");
}

static int track_id(ert_trace *t, const char *track) {
    for (int i = 0; i < t->tracks; ++i)
        if (strcmp(t->track_names[i], track) == 0) return i + 1;
    if (t->tracks == 16) return 16;
    snprintf(t->track_names[t->tracks], sizeof t->track_names[0], "%s", track);
    fprintf(t->f, "%s{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 1, \"tid\": %d, \"args\": {\"name\": \"%s\"}}",
            t->events++ ? ",\n" : "", t->tracks + 1, track);
    return ++t->tracks;
}

static void slice(ert_trace *t, int tid, const char *name, const char *cat, double ts_us, double dur_ms, int rows) {
    fprintf(t->f,
            "%s{\"name\": \"%s\", \"cat\": \"%s\", \"ph\": \"X\", \"pid\": 1, \"tid\": %d, \"ts\": %.3f, "
            "\"dur\": %.3f, \"args\": {\"rows\": %d}}",
            t->events++ ? ",\n" : "", name, cat, tid, ts_us, dur_ms * 1e3, rows);
}

ert_status ert_trace_add(ert_trace *t, const char *track, const ert_profile *p) {
    if (!t || !p) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_trace_add: NULL argument");
    const int tid = track_id(t, track ? track : "exitrt");
    const double t0 = p->host_start_us;
    slice(t, tid, "batch", "batch", t0, p->batch_ms, p->num_stages ? p->stage[0].rows : 0);
    for (int k = 0; k < p->num_stages; ++k) {
        const ert_stage_profile *s = &p->stage[k];
        if (s->rows == 0) continue;
        char name[32];
        const double start = t0 + s->start_ms * 1e3;
        const double total = s->compute_ms + s->decide_ms + s->compact_ms + s->sync_ms;
        snprintf(name, sizeof name, "stage %d", k);
        slice(t, tid, name, "stage", start, total, s->rows);
        slice(t, tid, "compute", "stage", start, s->compute_ms, s->rows);
        double at = start + s->compute_ms * 1e3;
        if (s->decide_ms > 0) slice(t, tid, "decide", "exit", at, s->decide_ms, s->rows);
        at += s->decide_ms * 1e3;
        if (s->compact_ms > 0) slice(t, tid, "compact", "compact", at, s->compact_ms, s->rows);
        at += s->compact_ms * 1e3;
        if (s->sync_ms > 0) slice(t, tid, "host sync", "compact", at, s->sync_ms, s->rows);
    }
    return ferror(t->f) ? ert_error(ERT_ERR_IO, "trace '%s': write error", t->path) : ERT_OK;
}

ert_status ert_trace_close(ert_trace *t) {
    if (!t) return ERT_OK;
    ert_status s = ERT_OK;
    if (t->f) {
        fprintf(t->f, "\n]}\n");
        if (fclose(t->f) != 0 || rename(t->tmp, t->path) != 0) {
            remove(t->tmp);
            s = ert_error(ERT_ERR_IO, "trace '%s': write failed", t->path);
        }
    }
    free(t->path);
    free(t->tmp);
    free(t);
    return s;
}

void ert_trace_discard(ert_trace *t) {
    if (!t) return;
    if (t->f) {
        fclose(t->f);
        remove(t->tmp);
    }
    free(t->path);
    free(t->tmp);
    free(t);
}
