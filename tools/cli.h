/* Error reporting shared by the subcommands of the exitrt program: the only place that
 * prints an error and exits. Messages are one line, `exitrt <command>: ...`. */
#ifndef ERT_TOOLS_CLI_H
#define ERT_TOOLS_CLI_H

#include "exitrt/exitrt.h"

/* The program name in messages ("exitrt eval"); main sets it before a subcommand runs. */
void cli_set_prog(const char *name);
const char *cli_prog(void);

/* Prints `prog: MESSAGE` and exits with status 1. */
void cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* A library call failed: prints its status and message (which names the file, tensor or
 * argument at fault), after `where` when not NULL, and exits with status 1. */
void cli_check_in(ert_status s, const char *where);
static inline void cli_check(ert_status s) { cli_check_in(s, NULL); }

#endif
