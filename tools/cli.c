#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

void cli_set_exec(ert_session_options *so, const char *exec, const char *buckets, const char *compaction) {
    if (exec) cli_check_in(ert_exec_parse(exec, &so->exec), "--exec");
    if (compaction) cli_check_in(ert_compaction_parse(compaction, &so->compaction), "--compaction");
    if (buckets) {
        int b[ERT_MAX_BUCKETS], n;
        cli_check_in(ert_buckets_parse(buckets, so->max_batch, b, &n), "--buckets");
        so->buckets = buckets;
    }
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
