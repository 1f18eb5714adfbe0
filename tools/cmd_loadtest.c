/* Placeholder while the subcommand is written; replaced by its implementation. */
#include <stdio.h>

#include "commands.h"

int cmd_loadtest(int argc, char **argv) {
    (void)argc, (void)argv;
    fprintf(stderr, "exitrt loadtest: not built yet\n");
    return 1;
}
