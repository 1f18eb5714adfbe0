/* Error reporting shared by the subcommands of the exitrt program: the only place that
 * prints an error and exits. Messages are one line, `exitrt <command>: ...`. */
#ifndef ERT_TOOLS_CLI_H
#define ERT_TOOLS_CLI_H

#include <stdint.h>
#include <stdio.h>

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

/* Option values: a whole decimal number in lo..hi, a real number in [lo, hi]; anything
 * else fails with "FLAG 'TEXT': expected ...". */
long long cli_int(const char *flag, const char *text, long long lo, long long hi);
double cli_real(const char *flag, const char *text, double lo, double hi);

/* The largest --seed of a corruption: every whole number up to it is exact in JSON. */
#define CLI_MAX_SEED 9007199254740992LL /* 2^53 */

/* --mode: compact | masked | full. */
ert_mode cli_mode(const char *text);

/* --shift KIND or KIND:S (gaussian-noise | blur | contrast | translate | rotate, S in
 * 1..5): the corruption, and its severity when given (else *severity is left as is). */
void cli_shift(const char *text, ert_shift_kind *kind, int *severity);
/* Corrupts the data in place (ert_shift_apply) and renames it "NAME, KIND S", so that
 * tables, JSON and errors name the corrupted data. ERT_SHIFT_NONE: nothing. */
void cli_shift_data(ert_dataset *data, ert_shift_kind kind, int severity, uint64_t seed);

/* After getopt: an argument left over (argv[optind]) is an error, with the usage. */
void cli_no_extra_args(int argc, char **argv, void (*usage)(FILE *));

/* --model DIR and --data SPLIT, which every command that runs a model needs: fails
 * naming the one missing. */
void cli_require_model_data(const char *model_dir, const char *data_spec);
/* Loads the model (its calibration.json unless no_calibration) and the data, cut to its
 * first `limit` samples when limit > 0. */
void cli_load(const char *model_dir, const char *data_spec, int no_calibration, long long limit, ert_model **model,
              ert_dataset **data);

/* The flags that say how a session runs a model, shared by the commands that run one:
 * --device, --dtype, --exec, --buckets, --compaction and --threads, as given (NULL, 0: not
 * given). CLI_SESSION_LONG_OPTIONS are their getopt_long entries (--device is 'D', the
 * others CLI_OPT_*, below any command's own codes); cli_session_flag takes a getopt result
 * that is one of them and returns 1, else 0. */
typedef struct cli_session_flags {
    const char *device, *dtype, *exec, *buckets, *compaction;
    int threads;
} cli_session_flags;
enum { CLI_OPT_DTYPE = 900, CLI_OPT_EXEC, CLI_OPT_BUCKETS, CLI_OPT_COMPACTION, CLI_OPT_THREADS };
#define CLI_SESSION_LONG_OPTIONS                                                                              \
    {"device", required_argument, 0, 'D'}, {"dtype", required_argument, 0, CLI_OPT_DTYPE},                    \
        {"exec", required_argument, 0, CLI_OPT_EXEC}, {"buckets", required_argument, 0, CLI_OPT_BUCKETS},    \
        {"compaction", required_argument, 0, CLI_OPT_COMPACTION}, {"threads", required_argument, 0, CLI_OPT_THREADS}
int cli_session_flag(cli_session_flags *f, int opt, const char *arg);
/* The flags into session options whose max_batch is set (--buckets are checked against
 * it): the device (default cpu), dtype, exec, buckets, compaction and threads; a bad value
 * fails naming its flag. */
void cli_session_apply(const cli_session_flags *f, ert_session_options *so);
/* --device names the cpu ("cpu", "cpu:0"; NULL is the default, the cpu). */
int cli_is_cpu(const char *device);
/* --threads N: the CPU ops' thread count, 1..ERT_MAX_THREADS. */
int cli_threads(const char *text);
/* --threads (0: not given, the default) for a session on `device`: a device other than
 * the cpu refuses a count. Returns it. */
int cli_device_threads(const char *device, int threads);
/* Says on stderr why an --exec auto session runs eager, or why a CPU session runs on
 * fewer threads than its default, when it does. */
void cli_note_exec(const ert_session *session);

/* The help lines of --exec, --buckets and --compaction, and of --threads, shared by the
 * commands that run a model; P pads the description column past the 23rd ("" or "  ",
 * as the command's other options). */
#define CLI_EXEC_HELP(P)                                                                       \
    "      --exec E       " P "  eager (default): the host reads each exit's survivor count |\n" \
    "                     " P "  graph: the forward as one CUDA graph, no host syncs (on the\n" \
    "                     " P "  cpu a replayed recording, for testing) |\n"                    \
    "                     " P "  auto: graph where it can be captured, else eager\n"              \
    "      --buckets LIST " P "  graph mode's row buckets, e.g. 64,256,1024 (default: fine\n"    \
    "                     " P "  steps to 128 rows, then steps of 2^(1/8); the batch size is\n" \
    "                     " P "  added)\n"                                                      \
    "      --compaction C " P "  compact mode's survivor moves: auto (default): fill on the\n"  \
    "                     " P "  cpu, gather on cuda | gather: copied in order into a second\n"  \
    "                     " P "  buffer | fill: in place, the last survivors fill the rows of\n" \
    "                     " P "  leaving samples (moves at most as many rows as left)\n"
#define CLI_THREADS_HELP(P)                                                                    \
    "      --threads N    " P "  cpu: threads of the ops (default: ERT_CPU_THREADS, else every\n" \
    "                     " P "  CPU this process may run on, halved while the session does\n"  \
    "                     " P "  not fit the memory limit); the device's name says the count\n" \
    "                     " P "  in force\n"

#endif
