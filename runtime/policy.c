/* Exit policies: parsing specs ("confidence:0.9", "entropy:0.2,0.3;temp=1.5") and JSON
 * policy files, and turning a policy into the decide kernel's plain parameters. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "internal.h"

struct ert_policy {
    ert_policy_kind kind;
    int num_thresholds;
    float threshold[ERT_MAX_EXITS];
    int num_temps; /* 0: the model's calibration */
    float temp[ERT_MAX_EXITS];
    int patience;
    int fixed_exit;
    int has_hazard;
    float hazard;
    uint64_t seed;
};

static const char *const kind_names[] = {"none",     "confidence", "entropy", "margin",
                                         "patience", "fixed",      "oracle",  "scheduled"};

static int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno != 0) return 0;
    *out = v;
    return 1;
}

static int parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0) return 0;
    *out = v;
    return 1;
}

/* "0.9,0.8,0.7" -> values; each in [lo, hi]. */
static ert_status parse_list(const char *spec, const char *what, const char *text, double lo, double hi, float *vals,
                             int *count) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", text);
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        double v;
        if (n == ERT_MAX_EXITS)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy '%s': more than %d %s", spec, ERT_MAX_EXITS, what);
        if (!parse_double(tok, &v) || !(v >= lo && v <= hi))
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy '%s': %s '%s' is not a number in [%g, %g]", spec, what,
                             tok, lo, hi);
        vals[n++] = (float)v;
    }
    if (n == 0) return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy '%s': no %s given", spec, what);
    *count = n;
    return ERT_OK;
}

static ert_status parse_args(ert_policy *p, const char *spec, const char *args) {
    long v;
    switch (p->kind) {
    case ERT_POLICY_NONE:
    case ERT_POLICY_ORACLE:
        if (args) return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy '%s': takes no argument", spec);
        return ERT_OK;
    case ERT_POLICY_CONFIDENCE:
    case ERT_POLICY_ENTROPY:
    case ERT_POLICY_MARGIN:
        if (!args)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy '%s': needs a threshold, e.g. %s:0.9", spec,
                             kind_names[p->kind]);
        return parse_list(spec, "threshold", args, 0.0, 1.0, p->threshold, &p->num_thresholds);
    case ERT_POLICY_PATIENCE:
        if (!args || !parse_long(args, &v) || v < 1 || v > ERT_MAX_EXITS)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy '%s': needs a patience N >= 1, e.g. patience:2", spec);
        p->patience = (int)v;
        return ERT_OK;
    case ERT_POLICY_FIXED:
        if (!args || !parse_long(args, &v) || v < 0 || v >= ERT_MAX_EXITS)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy '%s': needs an exit number K >= 0, e.g. fixed:1", spec);
        p->fixed_exit = (int)v;
        return ERT_OK;
    case ERT_POLICY_SCHEDULED: {
        if (!args) return ERT_OK; /* per-sample schedule given with each batch */
        char buf[256];
        snprintf(buf, sizeof buf, "%s", args);
        for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
            double d;
            if (strncmp(kv, "hazard=", 7) == 0 && parse_double(kv + 7, &d) && d >= 0.0 && d <= 1.0) {
                p->has_hazard = 1;
                p->hazard = (float)d;
            } else if (strncmp(kv, "seed=", 5) == 0 && parse_long(kv + 5, &v) && v >= 0) {
                p->seed = (uint64_t)v;
            } else {
                return ert_error(ERT_ERR_INVALID_ARGUMENT,
                                 "policy '%s': '%s' (expected hazard=H in [0,1] and seed=S >= 0)", spec, kv);
            }
        }
        if (!p->has_hazard) return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy '%s': needs hazard=H", spec);
        return ERT_OK;
    }
    }
    return ERT_OK;
}

static ert_status parse_spec(ert_policy *p, const char *spec) {
    char buf[1024];
    if (strlen(spec) >= sizeof buf) return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy spec too long");
    snprintf(buf, sizeof buf, "%s", spec);
    char *opts = strchr(buf, ';');
    if (opts) *opts++ = '\0';
    char *args = strchr(buf, ':');
    if (args) *args++ = '\0';
    int found = 0;
    for (int k = 0; k < (int)(sizeof kind_names / sizeof *kind_names); ++k)
        if (strcmp(buf, kind_names[k]) == 0) {
            p->kind = (ert_policy_kind)k;
            found = 1;
        }
    if (!found)
        return ert_error(ERT_ERR_INVALID_ARGUMENT,
                         "policy '%s': unknown kind '%s' (none, confidence, entropy, margin, patience, fixed, oracle, "
                         "scheduled, or a .json file)",
                         spec, buf);
    ert_status s = parse_args(p, spec, args);
    if (s) return s;
    for (char *save = NULL, *o = opts ? strtok_r(opts, ";", &save) : NULL; o; o = strtok_r(NULL, ";", &save)) {
        if (strncmp(o, "temp=", 5) != 0)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy '%s': unknown option '%s' (temp=T[,T...])", spec, o);
        if ((s = parse_list(spec, "temperature", o + 5, ERT_TEMP_MIN, ERT_TEMP_MAX, p->temp, &p->num_temps))) return s;
    }
    return ERT_OK;
}

/* Appends to spec[0..cap) at *len; once the text does not fit, *len is cap (and stays
 * there): the caller checks *len < cap once at the end. */
static void spec_append(char *spec, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void spec_append(char *spec, size_t cap, size_t *len, const char *fmt, ...) {
    if (*len >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    const int n = vsnprintf(spec + *len, cap - *len, fmt, ap);
    va_end(ap);
    *len = n < 0 || (size_t)n >= cap - *len ? cap : *len + (size_t)n;
}

/* {"policy": "<spec>"} or {"kind": ..., "thresholds": [...], "temperatures": [...],
 *  "patience": N, "exit": K, "hazard": H, "seed": S} */
static ert_status parse_json(ert_policy *p, const char *path, const char *text) {
    ert_status s = ERT_OK;
    cJSON *root = cJSON_Parse(text);
    char spec[1024];
    if (!cJSON_IsObject(root)) {
        s = ert_error(ERT_ERR_FORMAT, "policy file '%s': not a JSON object", path);
        goto done;
    }
    const cJSON *str = cJSON_GetObjectItemCaseSensitive(root, "policy");
    if (cJSON_IsString(str)) {
        if ((s = parse_spec(p, str->valuestring))) ert_error_context(s, "policy file '%s': ", path);
        goto done;
    }
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(root, "kind");
    if (!cJSON_IsString(kind)) {
        s = ert_error(ERT_ERR_FORMAT, "policy file '%s': needs \"policy\" (a spec) or \"kind\"", path);
        goto done;
    }
    /* Rebuild a spec from the fields, so that one parser checks everything. */
    size_t len = 0;
    spec_append(spec, sizeof spec, &len, "%s", kind->valuestring);
    const char *keys[] = {"thresholds", "patience", "exit", "hazard"};
    for (int k = 0; k < 4; ++k) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, keys[k]);
        if (cJSON_IsArray(v)) {
            const cJSON *item;
            int first = 1;
            cJSON_ArrayForEach(item, v) {
                spec_append(spec, sizeof spec, &len, "%s%.9g", first ? ":" : ",", item->valuedouble);
                first = 0;
            }
        } else if (cJSON_IsNumber(v)) {
            spec_append(spec, sizeof spec, &len, k == 3 ? ":hazard=%.9g" : ":%.9g", v->valuedouble);
        }
    }
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(root, "seed");
    if (cJSON_IsNumber(seed)) spec_append(spec, sizeof spec, &len, ",seed=%.0f", seed->valuedouble);
    const cJSON *temps = cJSON_GetObjectItemCaseSensitive(root, "temperatures");
    if (cJSON_IsArray(temps)) {
        const cJSON *item;
        int first = 1;
        cJSON_ArrayForEach(item, temps) {
            spec_append(spec, sizeof spec, &len, "%s%.9g", first ? ";temp=" : ",", item->valuedouble);
            first = 0;
        }
    }
    if (len >= sizeof spec) {
        s = ert_error(ERT_ERR_FORMAT, "policy file '%s': too long for a policy spec (%zu characters at most)", path,
                      sizeof spec - 1);
        goto done;
    }
    if ((s = parse_spec(p, spec))) ert_error_context(s, "policy file '%s': ", path);
done:
    cJSON_Delete(root);
    return s;
}

static int looks_like_file(const char *spec) {
    size_t n = strlen(spec);
    return (n > 5 && strcmp(spec + n - 5, ".json") == 0) || strchr(spec, '/') != NULL;
}

ert_status ert_policy_parse(const char *spec, ert_policy **out) {
    if (!spec || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_policy_parse: spec and out must not be NULL");
    *out = NULL;
    ert_policy *p = calloc(1, sizeof *p);
    if (!p) return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
    p->seed = 1;
    ert_status s;
    if (looks_like_file(spec)) {
        char *text = NULL;
        size_t size;
        if ((s = ert_file_read(spec, &text, &size))) {
            ert_error_context(s, "policy file: ");
            goto fail;
        }
        s = parse_json(p, spec, text);
        free(text);
    } else {
        s = parse_spec(p, spec);
    }
    if (s) goto fail;
    *out = p;
    return ERT_OK;
fail:
    free(p);
    return s;
}

void ert_policy_free(ert_policy *p) { free(p); }

ert_policy_kind ert_policy_get_kind(const ert_policy *p) { return p ? p->kind : ERT_POLICY_NONE; }

int ert_policy_has_hazard(const ert_policy *p) { return p && p->kind == ERT_POLICY_SCHEDULED && p->has_hazard; }

static size_t append_list(char *buf, size_t len, size_t at, const float *v, int n) {
    for (int i = 0; i < n && at < len; ++i) at += (size_t)snprintf(buf + at, len - at, "%s%g", i ? "," : "", v[i]);
    return at;
}

const char *ert_policy_to_string(const ert_policy *p, char *buf, size_t len) {
    if (!buf || len == 0) return buf;
    buf[0] = '\0';
    if (!p) return buf;
    size_t at = (size_t)snprintf(buf, len, "%s", kind_names[p->kind]);
    if (at >= len) return buf;
    switch (p->kind) {
    case ERT_POLICY_CONFIDENCE:
    case ERT_POLICY_ENTROPY:
    case ERT_POLICY_MARGIN:
        at += (size_t)snprintf(buf + at, len - at, ":");
        if (at < len) at = append_list(buf, len, at, p->threshold, p->num_thresholds);
        break;
    case ERT_POLICY_PATIENCE: at += (size_t)snprintf(buf + at, len - at, ":%d", p->patience); break;
    case ERT_POLICY_FIXED: at += (size_t)snprintf(buf + at, len - at, ":%d", p->fixed_exit); break;
    case ERT_POLICY_SCHEDULED:
        if (p->has_hazard)
            at += (size_t)snprintf(buf + at, len - at, ":hazard=%g,seed=%llu", p->hazard, (unsigned long long)p->seed);
        break;
    default: break;
    }
    if (p->num_temps && at < len) {
        at += (size_t)snprintf(buf + at, len - at, ";temp=");
        if (at < len) append_list(buf, len, at, p->temp, p->num_temps);
    }
    return buf;
}

int ert_policy_scheduled_exit(const ert_policy *p, int64_t index, int num_exits) {
    if (!p || !p->has_hazard || num_exits <= 0) return num_exits - 1;
    for (int e = 0; e < num_exits - 1; ++e)
        if (ert_hash_uniform(p->seed, (uint64_t)index, (uint64_t)e) < p->hazard) return e;
    return num_exits - 1;
}

ert_status ert_policy_exit_params(const ert_policy *p, const ert_model *m, ert_exit_params *out) {
    char spec[256];
    const int E = m->num_exits;
    memset(out, 0, sizeof *out);
    out->kind = p->kind;
    out->num_exits = E;
    out->patience = p->patience;
    out->fixed_exit = p->fixed_exit;
    ert_policy_to_string(p, spec, sizeof spec);
    /* A list gives every exit a value; the last exit's may be left out (it always exits). */
    if (p->num_thresholds > 1 && p->num_thresholds != E && p->num_thresholds != E - 1)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy '%s': %d thresholds for a model with %d exits (give 1, %d or %d)",
                         spec, p->num_thresholds, E, E - 1, E);
    if (p->num_temps > 1 && p->num_temps != E)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy '%s': %d temperatures for a model with %d exits (give 1 or %d)",
                         spec, p->num_temps, E, E);
    if (p->kind == ERT_POLICY_FIXED && p->fixed_exit >= E)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "policy '%s': exit %d does not exist (the model has exits 0..%d)", spec,
                         p->fixed_exit, E - 1);
    for (int e = 0; e < E; ++e) {
        int ti = p->num_thresholds <= 1 ? 0 : (e < p->num_thresholds ? e : p->num_thresholds - 1);
        out->threshold[e] = p->num_thresholds ? p->threshold[ti] : 0.0f;
        float t = p->num_temps == 0 ? m->temperature[e] : p->temp[p->num_temps == 1 ? 0 : e];
        out->inv_temp[e] = 1.0f / t;
    }
    return ERT_OK;
}
