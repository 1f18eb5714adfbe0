#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char prog[64] = "exitrt";

void cli_set_prog(const char *name) { snprintf(prog, sizeof prog, "%s", name); }

const char *cli_prog(void) { return prog; }

void cli_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

void cli_check_in(ert_status s, const char *where) {
    if (s == ERT_OK) return;
    const char *msg = ert_last_error();
    cli_fail("%s%s%s: %s", where ? where : "", where ? ": " : "", ert_status_to_string(s),
             msg[0] ? msg : "(no detail)");
}

void cli_require_model_data(const char *model_dir, const char *data_spec) {
    if (!model_dir) cli_fail("--model DIR is required");
    if (!data_spec)
        cli_fail("--data SPLIT is required (fashion-mnist:test, fashion-mnist:val, FILE.npy[:LABELS.npy])");
}

void cli_load(const char *model_dir, const char *data_spec, int no_calibration, long long limit, ert_model **model,
              ert_dataset **data) {
    cli_require_model_data(model_dir, data_spec);
    const ert_model_load_options mo = {.no_calibration = no_calibration};
    cli_check(ert_model_load_ex(model_dir, &mo, model));
    cli_check(ert_dataset_load(data_spec, data));
    if (limit > 0 && limit < (*data)->n) (*data)->n = limit;
}

int cli_session_flag(cli_session_flags *f, int opt, const char *arg) {
    switch (opt) {
    case 'D': f->device = arg; return 1;
    case CLI_OPT_DTYPE: f->dtype = arg; return 1;
    case CLI_OPT_EXEC: f->exec = arg; return 1;
    case CLI_OPT_BUCKETS: f->buckets = arg; return 1;
    case CLI_OPT_COMPACTION: f->compaction = arg; return 1;
    case CLI_OPT_THREADS: f->threads = cli_threads(arg); return 1;
    default: return 0;
    }
}

void cli_session_apply(const cli_session_flags *f, ert_session_options *so) {
    so->device = f->device ? f->device : "cpu";
    if (f->dtype) cli_check(ert_dtype_parse(f->dtype, &so->dtype));
    if (f->exec) cli_check_in(ert_exec_parse(f->exec, &so->exec), "--exec");
    if (f->compaction) cli_check_in(ert_compaction_parse(f->compaction, &so->compaction), "--compaction");
    if (f->buckets) {
        int b[ERT_MAX_BUCKETS], n;
        cli_check_in(ert_buckets_parse(f->buckets, so->max_batch, b, &n), "--buckets");
        so->buckets = f->buckets;
    }
    so->threads = cli_device_threads(so->device, f->threads);
}

int cli_is_cpu(const char *device) { return !device || strncmp(device, "cpu", 3) == 0; }

int cli_threads(const char *text) { return (int)cli_int("--threads", text, 1, ERT_MAX_THREADS); }

int cli_device_threads(const char *device, int threads) {
    if (threads && !cli_is_cpu(device))
        cli_fail("--threads %d: sets the cpu device's threads; '%s' is not the cpu", threads, device);
    return threads;
}

void cli_note_exec(const ert_session *session) {
    const char *note = ert_session_exec_note(session);
    if (note && *note) fprintf(stderr, "%s: %s\n", cli_prog(), note);
}

void cli_no_extra_args(int argc, char **argv, void (*usage)(FILE *)) {
    if (optind >= argc) return;
    fprintf(stderr, "%s: unexpected argument '%s'\n", prog, argv[optind]);
    usage(stderr);
    exit(1);
}

long long cli_int(const char *flag, const char *text, long long lo, long long hi) {
    char *end;
    errno = 0;
    const long long v = strtoll(text, &end, 10);
    if (end == text || *end != '\0' || errno != 0 || v < lo || v > hi)
        cli_fail("%s '%s': expected an integer in %lld..%lld", flag, text, lo, hi);
    return v;
}

double cli_real(const char *flag, const char *text, double lo, double hi) {
    char *end;
    errno = 0;
    const double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno != 0 || !(v >= lo && v <= hi))
        cli_fail("%s '%s': expected a number in [%g, %g]", flag, text, lo, hi);
    return v;
}

ert_mode cli_mode(const char *text) {
    ert_mode m = ERT_MODE_COMPACT;
    cli_check_in(ert_mode_parse(text, &m), "--mode");
    return m;
}

void cli_shift(const char *text, ert_shift_kind *kind, int *severity) {
    char name[64];
    const char *colon = strchr(text, ':');
    const size_t len = colon ? (size_t)(colon - text) : strlen(text);
    int ok = len < sizeof name;
    if (ok) {
        memcpy(name, text, len);
        name[len] = '\0';
        ok = ert_shift_parse(name, kind) == ERT_OK;
    }
    if (!ok)
        cli_fail("--shift '%s': expected gaussian-noise, blur, contrast, translate or rotate, optionally with "
                 ":SEVERITY (1..%d)",
                 text, ERT_SHIFT_MAX_SEVERITY);
    if (colon) *severity = (int)cli_int("--shift severity", colon + 1, 1, ERT_SHIFT_MAX_SEVERITY);
}

void cli_shift_data(ert_dataset *data, ert_shift_kind kind, int severity, uint64_t seed) {
    if (kind == ERT_SHIFT_NONE) return;
    cli_check(ert_shift_apply(data, kind, severity, seed));
    char name[sizeof data->name];
    snprintf(name, sizeof name, "%.200s, %s %d", data->name, ert_shift_name(kind), severity);
    memcpy(data->name, name, sizeof name);
}
