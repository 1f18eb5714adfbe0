/* Subcommands of the exitrt program that live in their own files. Each takes the
 * arguments after `exitrt` (argv[0] is the subcommand name) and returns the exit status. */
#ifndef ERT_TOOLS_COMMANDS_H
#define ERT_TOOLS_COMMANDS_H

int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
