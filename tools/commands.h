/* Subcommands of the exitrt program that live in their own files. Each takes the
 * arguments after `exitrt` (argv[0] is the subcommand name) and returns the exit status. */
#ifndef ERT_TOOLS_COMMANDS_H
#define ERT_TOOLS_COMMANDS_H

int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);   /* tools/cmd_calibrate.c */
int cmd_sweep(int argc, char **argv);       /* tools/cmd_sweep.c */
int cmd_select(int argc, char **argv);      /* tools/cmd_sweep.c */
int cmd_shift_report(int argc, char **argv); /* tools/cmd_sweep.c */
int cmd_loadtest(int argc, char **argv);    /* tools/cmd_loadtest.c */

#endif
