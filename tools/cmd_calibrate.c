/* exitrt calibrate: one softmax temperature per exit, fitted on a validation split. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "exitrt/exitrt.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: exitrt calibrate --model DIR [--data fashion-mnist:val] [options]\n"
            "\n"
            "Fits one temperature per exit by minimising the negative log-likelihood on the\n"
            "data (never the test split), writes DIR/calibration.json (read automatically by\n"
            "every command; --no-calibration ignores it), and reports per exit the NLL and the\n"
            "expected calibration error (%d bins) before and after.\n"
            "\n"
            "  -m, --model DIR        model directory\n"
            "  -d, --data SPLIT       data to fit on (default fashion-mnist:val)\n"
            "  -e, --eval-data SPLIT  also report before/after on this split (e.g. fashion-mnist:test)\n"
            "  -o, --out FILE         where to write (default DIR/calibration.json)\n"
            "  -D, --device DEV       cpu (default) | cuda:N\n"
            "  -b, --batch N          samples per batch (default 512)\n"
            CLI_THREADS_HELP("  ")
            "  -j, --json             print the result (with reliability bins) as JSON\n"
            "  -h, --help             this text\n",
            ERT_ECE_BINS);
}


static void print_table(const char *title, int E, const float *temp, const ert_calibration_stats *before,
                        const ert_calibration_stats *after) {
    printf("%s\n%4s %8s %10s %10s %10s %10s %9s\n", title, "exit", "T", "NLL before", "NLL after", "ECE before",
           "ECE after", "accuracy");
    double eb = 0, ea = 0;
    for (int e = 0; e < E; ++e) {
        printf("%4d %8.4f %10.4f %10.4f %9.2f%% %9.2f%% %8.2f%%\n", e, (double)temp[e], before[e].nll, after[e].nll,
               100 * before[e].ece, 100 * after[e].ece, 100 * after[e].accuracy);
        eb += before[e].ece / E;
        ea += after[e].ece / E;
    }
    printf("mean ECE over exits: %.2f%% -> %.2f%%\n", 100 * eb, 100 * ea);
}

int cmd_calibrate(int argc, char **argv) {
    const char *dir = NULL, *data_spec = "fashion-mnist:val", *eval_spec = NULL, *out_path = NULL;
    cli_session_flags session = {0}; /* --device and --threads of the shared session flags */
    int batch = 512, json = 0, c;
    static const struct option lo[] = {{"model", required_argument, 0, 'm'},  {"data", required_argument, 0, 'd'},
                                       {"eval-data", required_argument, 0, 'e'}, {"out", required_argument, 0, 'o'},
                                       {"device", required_argument, 0, 'D'}, {"batch", required_argument, 0, 'b'},
                                       {"json", no_argument, 0, 'j'},         {"help", no_argument, 0, 'h'},
                                       {"threads", required_argument, 0, CLI_OPT_THREADS}, {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:d:e:o:D:b:jh", lo, NULL)) != -1) {
        if (cli_session_flag(&session, c, optarg)) continue;
        switch (c) {
        case 'm': dir = optarg; break;
        case 'd': data_spec = optarg; break;
        case 'e': eval_spec = optarg; break;
        case 'o': out_path = optarg; break;
        case 'b': batch = (int)cli_int("--batch", optarg, 1, 1 << 20); break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    cli_no_extra_args(argc, argv, usage);
    if (!dir) cli_fail("--model DIR is required");
    if (strcmp(data_spec, "fashion-mnist:test") == 0)
        cli_fail("refusing to fit on the test split (use fashion-mnist:val)");
    char default_out[4096];
    snprintf(default_out, sizeof default_out, "%s/calibration.json", dir);
    ert_model *model = NULL;
    ert_dataset *data = NULL, *eval = NULL;
    cli_load(dir, data_spec, 1, 0, &model, &data); /* fitted from T = 1: the file's temperatures are not read */
    if (eval_spec) cli_check(ert_dataset_load(eval_spec, &eval));
    ert_session_options so = ert_session_options_default();
    so.max_batch = batch;
    cli_session_apply(&session, &so);
    ert_session *s = NULL;
    cli_check(ert_session_new(model, &so, &s));
    cli_note_exec(s);
    ert_calibration cal;
    cli_check(ert_calibrate(s, data, batch, &cal));
    ert_calibration_stats eb[ERT_MAX_EXITS], ea[ERT_MAX_EXITS];
    float ones[ERT_MAX_EXITS];
    for (int e = 0; e < ERT_MAX_EXITS; ++e) ones[e] = 1.0f;
    if (eval) {
        cli_check(ert_calibration_measure(s, eval, batch, ones, eb));
        cli_check(ert_calibration_measure(s, eval, batch, cal.temperature, ea));
    }
    cli_check(ert_calibration_write(&cal, out_path ? out_path : default_out));
    if (json) {
        /* the file just written holds everything, bins included */
        FILE *f = fopen(out_path ? out_path : default_out, "r");
        for (int ch; f && (ch = fgetc(f)) != EOF;) putchar(ch);
        if (f) fclose(f);
    } else {
        char title[1024];
        snprintf(title, sizeof title, "model %s | fitted on %s (%lld samples) | device %s", ert_model_name(model),
                 data->name, (long long)cal.samples, ert_session_device(s));
        print_table(title, cal.num_exits, cal.temperature, cal.before, cal.after);
        if (eval) {
            snprintf(title, sizeof title, "\nmeasured on %s (%lld samples), temperatures from %s", eval->name,
                     (long long)eval->n, data->name);
            print_table(title, cal.num_exits, cal.temperature, eb, ea);
        }
        printf("\nwrote %s\n", out_path ? out_path : default_out);
    }
    ert_session_free(s);
    ert_dataset_free(eval);
    ert_dataset_free(data);
    ert_model_free(model);
    return 0;
}
