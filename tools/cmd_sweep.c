/* Placeholder while the subcommand is written; replaced by its implementation. */
#include <stdio.h>

#include "commands.h"

static int not_yet(const char *name) {
    fprintf(stderr, "exitrt %s: not built yet\n", name);
    return 1;
}
int cmd_sweep(int argc, char **argv) { (void)argc, (void)argv; return not_yet("sweep"); }
int cmd_select(int argc, char **argv) { (void)argc, (void)argv; return not_yet("select"); }
int cmd_shift_report(int argc, char **argv) { (void)argc, (void)argv; return not_yet("shift-report"); }
