#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

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
