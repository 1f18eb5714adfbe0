/* exitrt synth: writes the headline benchmark's residual MLP with seeded weights. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "exitrt/exitrt.h"

static void synth_usage(FILE *f) {
    fprintf(f,
            "usage: exitrt synth --width D --depth L --classes C [--dtype bf16] [--seed S] --out DIR\n"
            "\n"
            "Writes DIR/config.json and DIR/model.safetensors of a residual MLP with seeded\n"
            "weights: L blocks x = x + relu(W x + b) of width D, each followed by an exit\n"
            "head D -> C. The same options give byte-identical files. DIR is created if needed.\n"
            "\n"
            "  -w, --width D      residual (and input) width, 1..65536\n"
            "  -L, --depth L      blocks, one exit after each, 1..%d\n"
            "  -c, --classes C    classes of every exit head, 2..100000 (default 10)\n"
            "      --dtype T      weights stored as f32 (default) | bf16 | f16\n"
            "      --seed S       generator seed (default 1)\n"
            "  -o, --out DIR      output directory\n"
            "  -h, --help         this text\n",
            ERT_MAX_STAGES < ERT_MAX_EXITS ? ERT_MAX_STAGES : ERT_MAX_EXITS);
}


enum { OPT_DTYPE = 1000, OPT_SEED };

int cmd_synth(int argc, char **argv) {
    static const struct option lo[] = {
        {"width", required_argument, 0, 'w'},  {"depth", required_argument, 0, 'L'},
        {"classes", required_argument, 0, 'c'}, {"dtype", required_argument, 0, OPT_DTYPE},
        {"seed", required_argument, 0, OPT_SEED}, {"out", required_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    ert_synth_options o = {.width = 0, .depth = 0, .classes = 10, .dtype = ERT_DTYPE_F32, .seed = 1};
    const char *out = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "w:L:c:o:h", lo, NULL)) != -1) {
        switch (c) {
        case 'w': o.width = (int)cli_int("--width", optarg, 1, 65536); break;
        case 'L': o.depth = (int)cli_int("--depth", optarg, 1, 1000); break;
        case 'c': o.classes = (int)cli_int("--classes", optarg, 2, 100000); break;
        case OPT_DTYPE:
            if (ert_dtype_parse(optarg, &o.dtype) != ERT_OK || o.dtype == ERT_DTYPE_TF32)
                cli_fail("--dtype '%s': expected f32, bf16 or f16", optarg);
            break;
        case OPT_SEED: o.seed = (uint64_t)cli_int("--seed", optarg, 0, (long long)(~0ull >> 1)); break;
        case 'o': out = optarg; break;
        case 'h': synth_usage(stdout); return 0;
        default: synth_usage(stderr); return 1;
        }
    }
    cli_no_extra_args(argc, argv, synth_usage);
    if (!o.width) cli_fail("--width D is required");
    if (!o.depth) cli_fail("--depth L is required");
    if (!out) cli_fail("--out DIR is required");
    cli_check(ert_synth_write(&o, out));
    const double params = (double)o.depth * ((double)o.width * o.width + o.width) +
                          (double)o.depth * ((double)o.width * o.classes + o.classes);
    printf("wrote %s: synth-D%d-L%d, %d blocks of width %d, %d exits of %d classes, %.0f parameters (%s)\n", out,
           o.width, o.depth, o.depth, o.width, o.depth, o.classes, params, ert_dtype_name(o.dtype));
    return 0;
}
