/* Temperature scaling per exit (Guo et al., 2017): one temperature T_k per exit that
 * minimises the negative log-likelihood of the labels under softmax(z / T_k), fitted on a
 * validation split; expected calibration error (ECE) and reliability bins before and
 * after. The logits of every exit come from runs with fixed:k, which make every sample
 * leave at exit k and return its logits. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "internal.h"

double ert_ece(const float *conf, const uint8_t *correct, int64_t n, ert_reliability_bin *bins) {
    ert_reliability_bin b[ERT_ECE_BINS];
    memset(b, 0, sizeof b);
    for (int i = 0; i < ERT_ECE_BINS; ++i) {
        b[i].lo = (double)i / ERT_ECE_BINS;
        b[i].hi = (double)(i + 1) / ERT_ECE_BINS;
    }
    for (int64_t i = 0; i < n; ++i) {
        if (!isfinite(conf[i])) continue;
        int k = (int)(conf[i] * ERT_ECE_BINS);
        k = k < 0 ? 0 : k >= ERT_ECE_BINS ? ERT_ECE_BINS - 1 : k; /* confidence 1 goes to the last bin */
        b[k].count++;
        b[k].confidence += conf[i];
        b[k].accuracy += correct[i] ? 1.0 : 0.0;
    }
    double ece = 0.0;
    for (int k = 0; k < ERT_ECE_BINS; ++k) {
        if (b[k].count == 0) continue;
        b[k].confidence /= (double)b[k].count;
        b[k].accuracy /= (double)b[k].count;
        ece += (double)b[k].count / (double)(n > 0 ? n : 1) * fabs(b[k].accuracy - b[k].confidence);
    }
    if (bins) memcpy(bins, b, sizeof b);
    return ece;
}

/* Logits of every sample at exit `e` (n x C), from a fixed:e run. */
static ert_status exit_logits(ert_session *s, const ert_dataset *data, int batch, int e, float *logits) {
    const int C = ert_model_num_classes(ert_session_model(s));
    char spec[32];
    snprintf(spec, sizeof spec, "fixed:%d;temp=1", e);
    ert_policy *p = NULL;
    ert_status st = ert_policy_parse(spec, &p);
    if (st) return st;
    int32_t *pred = malloc(sizeof *pred * (size_t)batch), *ex = malloc(sizeof *ex * (size_t)batch);
    float *conf = malloc(sizeof *conf * (size_t)batch);
    if (!pred || !ex || !conf) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "calibration: out of memory");
        goto done;
    }
    for (int64_t first = 0; first < data->n; first += batch) {
        const int n = (int)(data->n - first < batch ? data->n - first : batch);
        ert_batch b = {.input = data->x + first * data->sample_size, .n = n, .first_index = first};
        ert_outputs out = {pred, ex, conf, logits + first * C};
        if ((st = ert_session_run(s, p, &b, &out))) break;
    }
done:
    free(pred), free(ex), free(conf);
    ert_policy_free(p);
    return st;
}

/* Mean NLL of the labels under softmax(beta * z), in double. */
static double nll_at(const float *z, const int32_t *labels, int64_t n, int C, double beta) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const float *row = z + i * C;
        double m = -INFINITY, sum = 0.0;
        for (int k = 0; k < C; ++k) m = fmax(m, beta * row[k]);
        for (int k = 0; k < C; ++k) sum += exp(beta * row[k] - m);
        total += log(sum) + m - beta * row[labels[i]];
    }
    return total / (double)n;
}

/* NLL is convex in beta = 1/T: a golden-section search on [1/20, 1/0.05] finds it. */
static double fit_beta(const float *z, const int32_t *labels, int64_t n, int C) {
    const double phi = 0.5 * (sqrt(5.0) - 1.0);
    double a = 0.05, b = 20.0;
    double x1 = b - phi * (b - a), x2 = a + phi * (b - a);
    double f1 = nll_at(z, labels, n, C, x1), f2 = nll_at(z, labels, n, C, x2);
    for (int it = 0; it < 60 && b - a > 1e-6; ++it) {
        if (f1 < f2) {
            b = x2, x2 = x1, f2 = f1;
            x1 = b - phi * (b - a);
            f1 = nll_at(z, labels, n, C, x1);
        } else {
            a = x1, x1 = x2, f1 = f2;
            x2 = a + phi * (b - a);
            f2 = nll_at(z, labels, n, C, x2);
        }
    }
    return 0.5 * (a + b);
}

static void measure(const float *z, const int32_t *labels, int64_t n, int C, float temperature, float *conf,
                    uint8_t *correct, ert_calibration_stats *out) {
    const float inv = 1.0f / temperature;
    int64_t right = 0;
    for (int64_t i = 0; i < n; ++i) {
        const ert_softmax_stats s = ert_softmax_stats_compute(z + i * C, C, inv);
        conf[i] = s.p1;
        correct[i] = (uint8_t)(s.top1 == labels[i]);
        right += correct[i];
    }
    out->nll = nll_at(z, labels, n, C, (double)inv);
    out->ece = ert_ece(conf, correct, n, out->bins);
    out->accuracy = (double)right / (double)n;
}

typedef struct cal_work {
    float *logits; /* n x C, one exit at a time */
    float *conf;
    uint8_t *correct;
} cal_work;

static ert_status work_new(const ert_dataset *d, int C, cal_work *w) {
    w->logits = malloc(sizeof(float) * (size_t)d->n * (size_t)C);
    w->conf = malloc(sizeof(float) * (size_t)d->n);
    w->correct = malloc((size_t)d->n);
    return w->logits && w->conf && w->correct ? ERT_OK : ert_error(ERT_ERR_OUT_OF_MEMORY, "calibration: out of memory");
}

static void work_free(cal_work *w) { free(w->logits), free(w->conf), free(w->correct); }

ert_status ert_calibrate(ert_session *s, const ert_dataset *data, int batch, ert_calibration *out) {
    if (!s || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_calibrate: NULL argument");
    ert_status st = ert_dataset_check(s, data, batch, 1);
    if (st) return st;
    const ert_model *m = ert_session_model(s);
    const int C = m->num_classes;
    memset(out, 0, sizeof *out);
    out->num_exits = m->num_exits;
    out->samples = data->n;
    cal_work w;
    if ((st = work_new(data, C, &w))) goto done;
    for (int e = 0; e < m->num_exits; ++e) {
        if ((st = exit_logits(s, data, batch, e, w.logits))) goto done;
        out->temperature[e] = (float)(1.0 / fit_beta(w.logits, data->labels, data->n, C));
        measure(w.logits, data->labels, data->n, C, 1.0f, w.conf, w.correct, &out->before[e]);
        measure(w.logits, data->labels, data->n, C, out->temperature[e], w.conf, w.correct, &out->after[e]);
    }
done:
    work_free(&w);
    return st;
}

ert_status ert_calibration_measure(ert_session *s, const ert_dataset *data, int batch, const float *temperature,
                                   ert_calibration_stats *out) {
    if (!s || !temperature || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_calibration_measure: NULL argument");
    ert_status st = ert_dataset_check(s, data, batch, 1);
    if (st) return st;
    const ert_model *m = ert_session_model(s);
    cal_work w;
    if ((st = work_new(data, m->num_classes, &w))) goto done;
    for (int e = 0; e < m->num_exits; ++e) {
        if (!(temperature[e] > 0)) {
            st = ert_error(ERT_ERR_INVALID_ARGUMENT, "temperature[%d] = %g: expected > 0", e, (double)temperature[e]);
            goto done;
        }
        if ((st = exit_logits(s, data, batch, e, w.logits))) goto done;
        measure(w.logits, data->labels, data->n, m->num_classes, temperature[e], w.conf, w.correct, &out[e]);
    }
done:
    work_free(&w);
    return st;
}

static cJSON *stats_json(const ert_calibration_stats *st) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "nll", st->nll);
    cJSON_AddNumberToObject(j, "ece", st->ece);
    cJSON_AddNumberToObject(j, "accuracy", st->accuracy);
    cJSON *bins = cJSON_AddArrayToObject(j, "bins");
    for (int k = 0; k < ERT_ECE_BINS; ++k) {
        cJSON *b = cJSON_CreateObject();
        cJSON_AddNumberToObject(b, "lo", st->bins[k].lo);
        cJSON_AddNumberToObject(b, "hi", st->bins[k].hi);
        cJSON_AddNumberToObject(b, "confidence", st->bins[k].confidence);
        cJSON_AddNumberToObject(b, "accuracy", st->bins[k].accuracy);
        cJSON_AddNumberToObject(b, "count", (double)st->bins[k].count);
        cJSON_AddItemToArray(bins, b);
    }
    return j;
}

ert_status ert_calibration_write(const ert_calibration *cal, const char *path) {
    if (!cal || !path) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_calibration_write: NULL argument");
    cJSON *j = cJSON_CreateObject();
    cJSON *t = cJSON_AddArrayToObject(j, "temperatures");
    cJSON *ex = cJSON_AddArrayToObject(j, "exits");
    for (int e = 0; e < cal->num_exits; ++e) {
        cJSON_AddItemToArray(t, cJSON_CreateNumber((double)cal->temperature[e]));
        cJSON *x = cJSON_CreateObject();
        cJSON_AddNumberToObject(x, "temperature", (double)cal->temperature[e]);
        cJSON_AddItemToObject(x, "before", stats_json(&cal->before[e]));
        cJSON_AddItemToObject(x, "after", stats_json(&cal->after[e]));
        cJSON_AddItemToArray(ex, x);
    }
    cJSON_AddNumberToObject(j, "samples", (double)cal->samples);
    cJSON_AddNumberToObject(j, "ece_bins", ERT_ECE_BINS);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return ert_error(ERT_ERR_OUT_OF_MEMORY, "calibration: out of memory");
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    ert_status st = ERT_OK;
    FILE *f = fopen(tmp, "w");
    int ok = f && fprintf(f, "%s\n", text) >= 0;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        st = ert_error(ERT_ERR_IO, "'%s': cannot write", path);
    }
    free(text);
    return st;
}
