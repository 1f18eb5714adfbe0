/* Loading a model directory: config.json (cJSON) + model.safetensors. Every width is
 * checked op by op, every tensor against the shape the config implies, and a tensor the
 * config does not name is an error too. */
#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "internal.h"
#include "safetensors.h"

typedef struct load_ctx {
    ert_model *model;
    ert_safetensors *st;
    const char *config_path;
} load_ctx;

/* The largest size or count a config may give (values per sample, channels, a kernel,
 * padding, ...): every product the loader forms then fits in int64, every shape in int. */
#define MAX_DIM (1 << 28)

/* 1 if v is a whole number in lo..hi (no cast of an out-of-range double: that is UB). */
static int whole_in(const cJSON *v, int lo, int hi) {
    return cJSON_IsNumber(v) && v->valuedouble >= lo && v->valuedouble <= hi && v->valuedouble == floor(v->valuedouble);
}

static ert_status read_text(const char *path, char **out) {
    size_t size;
    return ert_file_read(path, out, &size);
}

/* An integer field in min..MAX_DIM; `where` names the place in the config. */
static ert_status get_int(const load_ctx *c, const cJSON *obj, const char *key, const char *where, int min, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!whole_in(v, min, MAX_DIM))
        return ert_error(ERT_ERR_FORMAT, "'%s': %s.%s: expected an integer in %d..%d", c->config_path, where, key, min,
                         MAX_DIM);
    *out = v->valueint;
    return ERT_OK;
}

static ert_status load_tensor(load_ctx *c, const cJSON *obj, const char *key, const char *where, int required,
                              int ndim, const int64_t *shape, char **name_out, float **data_out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return ert_error(ERT_ERR_FORMAT, "'%s': %s.%s: missing tensor name", c->config_path, where, key);
        return ERT_OK;
    }
    if (!cJSON_IsString(v))
        return ert_error(ERT_ERR_FORMAT, "'%s': %s.%s: expected a tensor name", c->config_path, where, key);
    ert_st_tensor *t = ert_st_find(c->st, v->valuestring);
    if (!t)
        return ert_error(ERT_ERR_FORMAT, "'%s': tensor '%s' (named by %s.%s) is missing", c->st->path,
                         v->valuestring, where, key);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; ++i) ok = t->shape[i] == shape[i];
    if (!ok) {
        char got[128] = "", want[128] = "";
        for (int i = 0; i < t->ndim; ++i)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
        for (int i = 0; i < ndim; ++i)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "", (long long)shape[i]);
        return ert_error(ERT_ERR_SHAPE, "'%s': tensor '%s' has shape [%s], %s.%s expects [%s]", c->st->path,
                         t->name, got, where, key, want);
    }
    t->used = 1;
    if (!(*name_out = strdup(t->name)) || !(*data_out = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1))))
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "'%s': out of memory", c->st->path);
    ert_st_read_f32(c->st, t, *data_out);
    for (int64_t i = 0; i < t->numel; ++i)
        if (!isfinite((*data_out)[i]))
            return ert_error(ERT_ERR_NUMERIC, "'%s': tensor '%s' holds a non-finite value at element %lld",
                             c->st->path, t->name, (long long)i);
    return ERT_OK;
}

static ert_status parse_seq(load_ctx *c, const cJSON *arr, const char *where, ert_shape in, int depth, ert_seq *seq,
                            ert_shape *out);

static int shape_width(ert_shape s) { return s.c * s.h * s.w; }

static ert_status parse_activation(const load_ctx *c, const cJSON *obj, const char *where, ert_activation *out) {
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(obj, "activation");
    *out = ERT_ACT_NONE;
    if (!act || cJSON_IsNull(act)) return ERT_OK;
    const char *a = cJSON_IsString(act) ? act->valuestring : "";
    if (strcmp(a, "none") == 0) *out = ERT_ACT_NONE;
    else if (strcmp(a, "relu") == 0) *out = ERT_ACT_RELU;
    else if (strcmp(a, "gelu") == 0) *out = ERT_ACT_GELU;
    else
        return ert_error(ERT_ERR_FORMAT, "'%s': %s.activation: '%s' (expected none, relu or gelu)", c->config_path,
                         where, a);
    return ERT_OK;
}

/* A pair field ("kernel": [3, 3] or 3); `dflt` < 0: required. Each value in min..MAX_DIM. */
static ert_status get_pair(const load_ctx *c, const cJSON *obj, const char *key, const char *where, int dflt, int min,
                           int *a, int *b) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) {
        if (dflt < 0) return ert_error(ERT_ERR_FORMAT, "'%s': %s.%s: required", c->config_path, where, key);
        *a = *b = dflt;
        return ERT_OK;
    }
    const cJSON *x = v, *y = v;
    if (cJSON_IsArray(v)) {
        if (cJSON_GetArraySize(v) != 2)
            return ert_error(ERT_ERR_FORMAT, "'%s': %s.%s: expected a number or two", c->config_path, where, key);
        x = cJSON_GetArrayItem(v, 0);
        y = cJSON_GetArrayItem(v, 1);
    }
    if (!whole_in(x, min, MAX_DIM) || !whole_in(y, min, MAX_DIM))
        return ert_error(ERT_ERR_FORMAT, "'%s': %s.%s: expected integers in %d..%d", c->config_path, where, key, min,
                         MAX_DIM);
    *a = x->valueint;
    *b = y->valueint;
    return ERT_OK;
}

/* Output size of a window op along one axis (PyTorch: floor mode); < 1: the window does
 * not fit. Every argument is at most MAX_DIM, so int64 holds every term. */
static int64_t window_out(int in, int k, int stride, int pad, int dil) {
    const int64_t span = (int64_t)in + 2 * (int64_t)pad - (int64_t)dil * (k - 1) - 1;
    return span < 0 ? 0 : span / stride + 1;
}

static ert_status parse_window(const load_ctx *c, const cJSON *obj, const char *where, ert_shape in, int conv,
                               ert_conv_geom *g) {
    ert_status s;
    g->in_c = in.c, g->in_h = in.h, g->in_w = in.w;
    g->groups = 1;
    if ((s = get_pair(c, obj, "kernel", where, -1, 1, &g->kh, &g->kw)) ||
        (s = get_pair(c, obj, "stride", where, conv ? 1 : 0, 1, &g->sh, &g->sw)) ||
        (s = get_pair(c, obj, "padding", where, 0, 0, &g->ph, &g->pw)) ||
        (s = get_pair(c, obj, "dilation", where, 1, 1, &g->dh, &g->dw)))
        return s;
    if (!conv && !cJSON_GetObjectItemCaseSensitive(obj, "stride")) g->sh = g->kh, g->sw = g->kw;
    if (!conv && (g->dh != 1 || g->dw != 1))
        return ert_error(ERT_ERR_UNSUPPORTED, "'%s': %s: pooling with dilation", c->config_path, where);
    if (!conv && (2 * (int64_t)g->ph > g->kh || 2 * (int64_t)g->pw > g->kw))
        return ert_error(ERT_ERR_FORMAT, "'%s': %s: padding must be at most half the kernel", c->config_path, where);
    const int64_t oh = window_out(in.h, g->kh, g->sh, g->ph, g->dh), ow = window_out(in.w, g->kw, g->sw, g->pw, g->dw);
    if (oh < 1 || ow < 1)
        return ert_error(ERT_ERR_SHAPE, "'%s': %s: a %dx%d window does not fit the %dx%d input", c->config_path, where,
                         g->kh, g->kw, in.h, in.w);
    if (oh * ow > MAX_DIM)
        return ert_error(ERT_ERR_SHAPE, "'%s': %s: a %lldx%lld output is too large (%d values at most)", c->config_path,
                         where, (long long)oh, (long long)ow, MAX_DIM);
    g->out_h = (int)oh;
    g->out_w = (int)ow;
    g->out_c = in.c;
    return ERT_OK;
}

static ert_status parse_conv(load_ctx *c, const cJSON *obj, const char *where, ert_shape in, ert_node *node) {
    ert_status s;
    ert_conv_geom *g = &node->geom;
    int in_c = 0, out_c = 0;
    if ((s = get_int(c, obj, "in_channels", where, 1, &in_c)) || (s = get_int(c, obj, "out_channels", where, 1, &out_c)) ||
        (s = parse_window(c, obj, where, in, 1, g)) || (s = parse_activation(c, obj, where, &node->act)))
        return s;
    if (in_c != in.c)
        return ert_error(ERT_ERR_SHAPE, "'%s': %s: conv2d has in_channels = %d but its input has %d channels",
                         c->config_path, where, in_c, in.c);
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(obj, "groups");
    if (groups && (s = get_int(c, obj, "groups", where, 1, &g->groups))) return s;
    if (in_c % g->groups || out_c % g->groups)
        return ert_error(ERT_ERR_SHAPE, "'%s': %s: groups = %d must divide in_channels %d and out_channels %d",
                         c->config_path, where, g->groups, in_c, out_c);
    g->out_c = out_c;
    const int64_t wshape[4] = {out_c, in_c / g->groups, g->kh, g->kw}, bshape[1] = {out_c};
    if ((s = load_tensor(c, obj, "weight", where, 1, 4, wshape, &node->weight_name, &node->weight)) ||
        (s = load_tensor(c, obj, "bias", where, 0, 1, bshape, &node->bias_name, &node->bias)))
        return s;
    const double outs = (double)out_c * g->out_h * g->out_w;
    node->params = (int64_t)wshape[0] * wshape[1] * wshape[2] * wshape[3] + (node->bias ? out_c : 0);
    node->flops = 2.0 * outs * (double)(in_c / g->groups) * g->kh * g->kw + (node->bias ? outs : 0);
    return ERT_OK;
}

static ert_status parse_node(load_ctx *c, const cJSON *obj, const char *where, ert_shape in, int depth,
                             ert_node *node) {
    ert_status s;
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(obj, "op");
    if (!cJSON_IsObject(obj) || !cJSON_IsString(op))
        return ert_error(ERT_ERR_FORMAT, "'%s': %s: expected an object with a string \"op\"", c->config_path, where);
    const char *name = op->valuestring;
    const int width_in = shape_width(in);
    node->in = width_in;
    node->in_shape = in;
    ert_shape out = in;
    const int vector_op = strcmp(name, "linear") == 0 || strcmp(name, "layernorm") == 0;
    const int image_op = strcmp(name, "conv2d") == 0 || strcmp(name, "maxpool") == 0 || strcmp(name, "avgpool") == 0 ||
                         strcmp(name, "global_avgpool") == 0;
    if (vector_op && in.image)
        return ert_error(ERT_ERR_SHAPE, "'%s': %s: %s needs a vector input, not a [%d, %d, %d] image (add a flatten)",
                         c->config_path, where, name, in.c, in.h, in.w);
    if (image_op && !in.image)
        return ert_error(ERT_ERR_SHAPE, "'%s': %s: %s needs a [C, H, W] image input, not a vector of %d",
                         c->config_path, where, name, width_in);
    if (strcmp(name, "flatten") == 0) {
        node->type = ERT_NODE_FLATTEN;
        out = (ert_shape){width_in, 1, 1, 0};
    } else if (strcmp(name, "relu") == 0) {
        node->type = ERT_NODE_RELU;
    } else if (strcmp(name, "linear") == 0) {
        node->type = ERT_NODE_LINEAR;
        int lin = 0, lout = 0;
        if ((s = get_int(c, obj, "in", where, 1, &lin)) || (s = get_int(c, obj, "out", where, 1, &lout)) ||
            (s = parse_activation(c, obj, where, &node->act)))
            return s;
        if (lin != width_in)
            return ert_error(ERT_ERR_SHAPE, "'%s': %s: linear has in = %d but its input has width %d", c->config_path,
                             where, lin, width_in);
        const int64_t wshape[2] = {lout, lin}, bshape[1] = {lout};
        if ((s = load_tensor(c, obj, "weight", where, 1, 2, wshape, &node->weight_name, &node->weight)) ||
            (s = load_tensor(c, obj, "bias", where, 0, 1, bshape, &node->bias_name, &node->bias)))
            return s;
        node->params = (int64_t)lin * lout + (node->bias ? lout : 0);
        node->flops = 2.0 * lin * lout + (node->bias ? lout : 0);
        out = (ert_shape){lout, 1, 1, 0};
    } else if (strcmp(name, "layernorm") == 0) {
        node->type = ERT_NODE_LAYERNORM;
        int dim = 0;
        if ((s = get_int(c, obj, "dim", where, 1, &dim))) return s;
        if (dim != width_in)
            return ert_error(ERT_ERR_SHAPE, "'%s': %s: layernorm has dim = %d but its input has width %d",
                             c->config_path, where, dim, width_in);
        node->eps = 1e-5f;
        const cJSON *eps = cJSON_GetObjectItemCaseSensitive(obj, "eps");
        if (eps) {
            if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0 && eps->valuedouble <= 1))
                return ert_error(ERT_ERR_FORMAT, "'%s': %s.eps: expected a number in (0, 1]", c->config_path, where);
            node->eps = (float)eps->valuedouble;
        }
        const int64_t shape[1] = {dim};
        if ((s = load_tensor(c, obj, "weight", where, 0, 1, shape, &node->weight_name, &node->weight)) ||
            (s = load_tensor(c, obj, "bias", where, 0, 1, shape, &node->bias_name, &node->bias)))
            return s;
        node->params = (node->weight ? dim : 0) + (node->bias ? dim : 0);
        node->flops = 7.0 * dim; /* mean, variance, scale and shift */
    } else if (strcmp(name, "conv2d") == 0) {
        node->type = ERT_NODE_CONV2D;
        if ((s = parse_conv(c, obj, where, in, node))) return s;
        out = (ert_shape){node->geom.out_c, node->geom.out_h, node->geom.out_w, 1};
    } else if (strcmp(name, "maxpool") == 0 || strcmp(name, "avgpool") == 0) {
        node->type = name[0] == 'm' ? ERT_NODE_MAXPOOL : ERT_NODE_AVGPOOL;
        if ((s = parse_window(c, obj, where, in, 0, &node->geom))) return s;
        out = (ert_shape){in.c, node->geom.out_h, node->geom.out_w, 1};
        node->flops = (double)in.c * out.h * out.w * node->geom.kh * node->geom.kw;
    } else if (strcmp(name, "global_avgpool") == 0) {
        node->type = ERT_NODE_AVGPOOL;
        node->geom = (ert_conv_geom){.in_c = in.c, .in_h = in.h, .in_w = in.w, .out_c = in.c, .out_h = 1, .out_w = 1,
                                     .kh = in.h, .kw = in.w, .sh = 1, .sw = 1, .dh = 1, .dw = 1, .groups = 1};
        out = (ert_shape){in.c, 1, 1, 1};
        node->flops = (double)width_in;
    } else if (strcmp(name, "residual") == 0) {
        node->type = ERT_NODE_RESIDUAL;
        char sub_where[256];
        if (snprintf(sub_where, sizeof sub_where, "%s.ops", where) >= (int)sizeof sub_where)
            return ert_error(ERT_ERR_FORMAT, "'%s': ops nested too deeply", c->config_path);
        ert_seq seq = {0};
        ert_shape sub_out = in;
        s = parse_seq(c, cJSON_GetObjectItemCaseSensitive(obj, "ops"), sub_where, in, depth + 1, &seq, &sub_out);
        node->sub = seq.nodes;
        node->num_sub = seq.count;
        if (s) return s;
        if (shape_width(sub_out) != width_in || sub_out.image != in.image)
            return ert_error(ERT_ERR_SHAPE, "'%s': %s: residual body changes the width from %d to %d",
                             c->config_path, where, width_in, shape_width(sub_out));
        int computes = 0;
        for (int i = 0; i < seq.count; ++i) {
            computes += seq.nodes[i].type != ERT_NODE_FLATTEN;
            node->flops += seq.nodes[i].flops;
            node->params += seq.nodes[i].params;
        }
        if (!computes)
            return ert_error(ERT_ERR_FORMAT, "'%s': %s: residual must wrap at least one op that computes",
                             c->config_path, where);
        node->flops += width_in; /* the add */
        if (depth + 1 > c->model->max_depth) c->model->max_depth = depth + 1;
    } else {
        return ert_error(ERT_ERR_FORMAT,
                         "'%s': %s: unknown op '%s' (flatten, linear, layernorm, residual, conv2d, relu, maxpool, "
                         "avgpool, global_avgpool)",
                         c->config_path, where, name);
    }
    if ((int64_t)out.c * out.h * out.w > MAX_DIM)
        return ert_error(ERT_ERR_SHAPE, "'%s': %s: %s gives %lld values per sample (%d at most)", c->config_path, where,
                         name, (long long)out.c * out.h * out.w, MAX_DIM);
    node->out_shape = out;
    node->out = shape_width(out);
    if (node->out > c->model->max_width) c->model->max_width = node->out;
    return ERT_OK;
}

static ert_status parse_seq(load_ctx *c, const cJSON *arr, const char *where, ert_shape in, int depth, ert_seq *seq,
                            ert_shape *out) {
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0)
        return ert_error(ERT_ERR_FORMAT, "'%s': %s: expected a non-empty list of ops", c->config_path, where);
    if (!(seq->nodes = calloc((size_t)cJSON_GetArraySize(arr), sizeof *seq->nodes)))
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
    seq->count = cJSON_GetArraySize(arr);
    ert_shape cur = in;
    int i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, arr) {
        char node_where[256];
        if (snprintf(node_where, sizeof node_where, "%s[%d]", where, i) >= (int)sizeof node_where)
            return ert_error(ERT_ERR_FORMAT, "'%s': ops nested too deeply", c->config_path);
        ert_status s = parse_node(c, item, node_where, cur, depth, &seq->nodes[i]);
        if (s) return s;
        cur = seq->nodes[i++].out_shape;
    }
    *out = cur;
    return ERT_OK;
}

static ert_status parse_input(load_ctx *c, const cJSON *input) {
    ert_model *m = c->model;
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(input, "shape");
    if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) < 1 || cJSON_GetArraySize(shape) > 3)
        return ert_error(ERT_ERR_FORMAT, "'%s': input.shape: expected 1 to 3 dimensions", c->config_path);
    m->input_ndim = cJSON_GetArraySize(shape);
    int64_t size = 1;
    for (int i = 0; i < m->input_ndim; ++i) {
        const cJSON *d = cJSON_GetArrayItem(shape, i);
        if (!whole_in(d, 1, MAX_DIM))
            return ert_error(ERT_ERR_FORMAT, "'%s': input.shape[%d]: expected an integer in 1..%d", c->config_path, i,
                             MAX_DIM);
        m->input_shape[i] = d->valueint;
        size *= d->valueint;
        if (size > MAX_DIM)
            return ert_error(ERT_ERR_FORMAT, "'%s': input.shape: more than %d values per sample", c->config_path,
                             MAX_DIM);
    }
    m->input_size = (int)size;
    m->max_width = m->input_size;
    m->channels = m->input_ndim == 1 ? 1 : m->input_shape[0];
    if (!(m->scale = malloc(sizeof(float) * (size_t)m->channels)) ||
        !(m->shift = malloc(sizeof(float) * (size_t)m->channels)))
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
    const cJSON *mean = cJSON_GetObjectItemCaseSensitive(input, "mean");
    const cJSON *std = cJSON_GetObjectItemCaseSensitive(input, "std");
    for (int ch = 0; ch < m->channels; ++ch) {
        double mu = 0.0, sd = 1.0;
        const cJSON *arrs[2] = {mean, std};
        for (int k = 0; k < 2; ++k) {
            const cJSON *a = arrs[k];
            if (!a) continue;
            int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : 0;
            if (n != 1 && n != m->channels)
                return ert_error(ERT_ERR_SHAPE, "'%s': input.%s: %d values for %d channels (give 1 or %d)",
                                 c->config_path, k ? "std" : "mean", n, m->channels, m->channels);
            const cJSON *v = cJSON_GetArrayItem(a, n == 1 ? 0 : ch);
            if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
                return ert_error(ERT_ERR_FORMAT, "'%s': input.%s: expected numbers", c->config_path, k ? "std" : "mean");
            if (k) sd = v->valuedouble;
            else mu = v->valuedouble;
        }
        if (!(sd > 0)) return ert_error(ERT_ERR_FORMAT, "'%s': input.std must be positive", c->config_path);
        if (!(fabs(1.0 / sd) <= FLT_MAX && fabs(mu / sd) <= FLT_MAX))
            return ert_error(ERT_ERR_FORMAT, "'%s': input.mean %g and std %g (channel %d) do not normalise in float",
                             c->config_path, mu, sd, ch);
        m->scale[ch] = (float)(1.0 / sd);
        m->shift[ch] = (float)(-mu / sd);
    }
    return ERT_OK;
}

static ert_status parse_config(load_ctx *c, const cJSON *root) {
    ert_model *m = c->model;
    ert_status s;
    if (!cJSON_IsObject(root)) return ert_error(ERT_ERR_FORMAT, "'%s': not a JSON object", c->config_path);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (fmt && (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "exitrt-model") != 0))
        return ert_error(ERT_ERR_FORMAT, "'%s': format is not \"exitrt-model\"", c->config_path);
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (ver && (!cJSON_IsNumber(ver) || ver->valueint != 1))
        return ert_error(ERT_ERR_UNSUPPORTED, "'%s': version %g (this build reads version 1)", c->config_path,
                         cJSON_IsNumber(ver) ? ver->valuedouble : -1.0);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    if (!(m->name = strdup(cJSON_IsString(name) ? name->valuestring : "model")))
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");

    const cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
    if (!cJSON_IsObject(input)) return ert_error(ERT_ERR_FORMAT, "'%s': missing \"input\"", c->config_path);
    if ((s = parse_input(c, input))) return s;

    const cJSON *classes = cJSON_GetObjectItemCaseSensitive(root, "classes");
    if (!cJSON_IsArray(classes) || cJSON_GetArraySize(classes) < 2)
        return ert_error(ERT_ERR_FORMAT, "'%s': classes: expected a list of at least 2 labels", c->config_path);
    m->num_classes = cJSON_GetArraySize(classes);
    if (!(m->labels = calloc((size_t)m->num_classes, sizeof *m->labels)))
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
    for (int i = 0; i < m->num_classes; ++i) {
        const cJSON *l = cJSON_GetArrayItem(classes, i);
        if (!cJSON_IsString(l)) return ert_error(ERT_ERR_FORMAT, "'%s': classes[%d]: expected a string", c->config_path, i);
        if (!(m->labels[i] = strdup(l->valuestring))) return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
    }

    const cJSON *stages = cJSON_GetObjectItemCaseSensitive(root, "stages");
    if (!cJSON_IsArray(stages) || cJSON_GetArraySize(stages) < 1)
        return ert_error(ERT_ERR_FORMAT, "'%s': stages: expected a non-empty list", c->config_path);
    if (cJSON_GetArraySize(stages) > ERT_MAX_STAGES)
        return ert_error(ERT_ERR_UNSUPPORTED, "'%s': %d stages (at most %d)", c->config_path,
                         cJSON_GetArraySize(stages), ERT_MAX_STAGES);
    m->num_stages = cJSON_GetArraySize(stages);
    if (!(m->stages = calloc((size_t)m->num_stages, sizeof *m->stages)))
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
    ert_shape shape = m->input_ndim == 3 ? (ert_shape){m->input_shape[0], m->input_shape[1], m->input_shape[2], 1}
                                          : (ert_shape){m->input_size, 1, 1, 0};
    for (int i = 0; i < m->num_stages; ++i) {
        ert_stage *st = &m->stages[i];
        const cJSON *js = cJSON_GetArrayItem(stages, i);
        char where[64];
        snprintf(where, sizeof where, "stages[%d]", i);
        if (!cJSON_IsObject(js)) return ert_error(ERT_ERR_FORMAT, "'%s': %s: expected an object", c->config_path, where);
        const cJSON *sn = cJSON_GetObjectItemCaseSensitive(js, "name");
        char defname[32];
        snprintf(defname, sizeof defname, "stage%d", i);
        if (!(st->name = strdup(cJSON_IsString(sn) ? sn->valuestring : defname)))
            return ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
        st->width_in = shape_width(shape);
        char w2[96];
        snprintf(w2, sizeof w2, "%s.ops", where);
        if ((s = parse_seq(c, cJSON_GetObjectItemCaseSensitive(js, "ops"), w2, shape, 0, &st->body, &shape))) return s;
        st->width_out = shape_width(shape);
        st->exit_index = -1;
        const cJSON *head = cJSON_GetObjectItemCaseSensitive(js, "exit");
        if (head && !cJSON_IsNull(head)) {
            if (m->num_exits == ERT_MAX_EXITS)
                return ert_error(ERT_ERR_UNSUPPORTED, "'%s': more than %d exits", c->config_path, ERT_MAX_EXITS);
            snprintf(w2, sizeof w2, "%s.exit", where);
            ert_shape hs;
            if ((s = parse_seq(c, head, w2, shape, 0, &st->head, &hs))) return s;
            if (st->head.nodes[st->head.count - 1].type != ERT_NODE_LINEAR)
                return ert_error(ERT_ERR_FORMAT, "'%s': %s: an exit head must end with a linear op (the logits)",
                                 c->config_path, w2);
            if (shape_width(hs) != m->num_classes)
                return ert_error(ERT_ERR_SHAPE, "'%s': %s: exit head outputs %d values for %d classes", c->config_path,
                                 w2, shape_width(hs), m->num_classes);
            st->exit_index = m->num_exits;
            m->exit_stage[m->num_exits] = i;
            m->temperature[m->num_exits] = 1.0f;
            m->num_exits++;
        } else if (i == m->num_stages - 1) {
            return ert_error(ERT_ERR_FORMAT, "'%s': %s: the last stage needs an exit head", c->config_path, where);
        }
    }
    if (m->num_classes > m->max_width) m->max_width = m->num_classes;
    return ERT_OK;
}

static ert_status load_calibration(ert_model *m, const char *path) {
    char *text = NULL;
    cJSON *root = NULL;
    ert_status s = read_text(path, &text);
    if (s) return s;
    root = cJSON_Parse(text);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "temperatures");
    if (!cJSON_IsArray(t) || cJSON_GetArraySize(t) != m->num_exits) {
        s = ert_error(ERT_ERR_FORMAT, "'%s': expected {\"temperatures\": [%d positive numbers]}", path, m->num_exits);
        goto done;
    }
    for (int i = 0; i < m->num_exits; ++i) {
        const cJSON *v = cJSON_GetArrayItem(t, i);
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= ERT_TEMP_MIN && v->valuedouble <= ERT_TEMP_MAX)) {
            s = ert_error(ERT_ERR_FORMAT, "'%s': temperatures[%d]: expected a number in [%g, %g]", path, i,
                          ERT_TEMP_MIN, ERT_TEMP_MAX);
            goto done;
        }
        m->temperature[i] = (float)v->valuedouble;
    }
done:
    cJSON_Delete(root);
    free(text);
    return s;
}

ert_status ert_model_load(const char *dir, ert_model **out) { return ert_model_load_ex(dir, NULL, out); }

ert_status ert_model_load_ex(const char *dir, const ert_model_load_options *opt, ert_model **out) {
    if (!dir || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_model_load: dir and out must not be NULL");
    *out = NULL;
    ert_status s;
    char config_path[4096], weights_path[4096], calib_path[4096];
    snprintf(config_path, sizeof config_path, "%s/config.json", dir);
    snprintf(weights_path, sizeof weights_path, "%s/model.safetensors", dir);
    snprintf(calib_path, sizeof calib_path, "%s/calibration.json", dir);
    char *text = NULL;
    cJSON *root = NULL;
    load_ctx c = {.config_path = config_path};
    ert_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(dir))) {
        s = ert_error(ERT_ERR_OUT_OF_MEMORY, "out of memory");
        goto fail;
    }
    c.model = m;
    if ((s = read_text(config_path, &text))) goto fail;
    if (!(root = cJSON_Parse(text))) {
        s = ert_error(ERT_ERR_FORMAT, "'%s': invalid JSON near byte %ld", config_path,
                      (long)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - text : 0));
        goto fail;
    }
    if ((s = ert_st_open(weights_path, &c.st))) goto fail;
    if ((s = parse_config(&c, root))) goto fail;
    for (int i = 0; i < c.st->count; ++i)
        if (!c.st->tensors[i].used) {
            s = ert_error(ERT_ERR_FORMAT, "'%s': tensor '%s' is not used by '%s'", weights_path,
                          c.st->tensors[i].name, config_path);
            goto fail;
        }
    FILE *cal = opt && opt->no_calibration ? NULL : fopen(calib_path, "rb");
    if (cal) {
        fclose(cal);
        if ((s = load_calibration(m, calib_path))) goto fail;
    }
    ert_st_close(c.st);
    cJSON_Delete(root);
    free(text);
    *out = m;
    return ERT_OK;
fail:
    ert_st_close(c.st);
    cJSON_Delete(root);
    free(text);
    ert_model_free(m);
    return s;
}

static void free_seq(ert_node *nodes, int count) {
    for (int i = 0; i < count; ++i) {
        free(nodes[i].weight_name);
        free(nodes[i].bias_name);
        free(nodes[i].weight);
        free(nodes[i].bias);
        free_seq(nodes[i].sub, nodes[i].num_sub);
    }
    free(nodes);
}

void ert_model_free(ert_model *m) {
    if (!m) return;
    for (int i = 0; m->stages && i < m->num_stages; ++i) {
        free(m->stages[i].name);
        free_seq(m->stages[i].body.nodes, m->stages[i].body.count);
        free_seq(m->stages[i].head.nodes, m->stages[i].head.count);
    }
    for (int i = 0; m->labels && i < m->num_classes; ++i) free(m->labels[i]);
    free(m->labels);
    free(m->stages);
    free(m->scale);
    free(m->shift);
    free(m->name);
    free(m->dir);
    free(m);
}

const char *ert_model_name(const ert_model *m) { return m ? m->name : NULL; }
int ert_model_input_size(const ert_model *m) { return m ? m->input_size : 0; }
int ert_model_num_classes(const ert_model *m) { return m ? m->num_classes : 0; }
int ert_model_num_stages(const ert_model *m) { return m ? m->num_stages : 0; }
int ert_model_num_exits(const ert_model *m) { return m ? m->num_exits : 0; }

const char *ert_model_class_label(const ert_model *m, int cls) {
    return (m && cls >= 0 && cls < m->num_classes) ? m->labels[cls] : NULL;
}

float ert_model_temperature(const ert_model *m, int exit) {
    return (m && exit >= 0 && exit < m->num_exits) ? m->temperature[exit] : 1.0f;
}

static void seq_totals(const ert_seq *seq, double *flops, int64_t *params) {
    *flops = 0.0;
    *params = 0;
    for (int i = 0; i < seq->count; ++i) {
        *flops += seq->nodes[i].flops;
        *params += seq->nodes[i].params;
    }
}

ert_status ert_model_stage_info(const ert_model *m, int stage, ert_stage_info *out) {
    if (!m || !out || stage < 0 || stage >= m->num_stages)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "stage %d: out of range (model has %d stages)", stage,
                         m ? m->num_stages : 0);
    const ert_stage *st = &m->stages[stage];
    memset(out, 0, sizeof *out);
    out->name = st->name;
    out->has_exit = st->head.count > 0;
    out->exit_index = st->exit_index;
    out->width_in = st->width_in;
    out->width_out = st->width_out;
    seq_totals(&st->body, &out->flops, &out->params);
    seq_totals(&st->head, &out->head_flops, &out->head_params);
    out->bytes = 4.0 * (double)out->params;
    out->act_bytes = 4.0 * (double)(st->width_in + st->width_out);
    return ERT_OK;
}

double ert_model_flops_to_exit(const ert_model *m, int exit) {
    if (!m || exit < 0 || exit >= m->num_exits) return 0.0;
    double total = 0.0;
    for (int i = 0; i <= m->exit_stage[exit]; ++i) {
        ert_stage_info info;
        ert_model_stage_info(m, i, &info);
        total += info.flops + info.head_flops;
    }
    return total;
}

double ert_model_flops_full(const ert_model *m) {
    if (!m) return 0.0;
    double total = 0.0;
    for (int i = 0; i < m->num_stages; ++i) {
        ert_stage_info info;
        ert_model_stage_info(m, i, &info);
        total += info.flops + (i == m->num_stages - 1 ? info.head_flops : 0.0);
    }
    return total;
}

int ert_model_exit_stage(const ert_model *m, int exit) {
    return (m && exit >= 0 && exit < m->num_exits) ? m->exit_stage[exit] : -1;
}

double ert_profile_exit_ready_ms(const ert_model *m, const ert_profile *p, int exit) {
    const int k = ert_model_exit_stage(m, exit);
    if (k < 0 || !p || k >= p->num_stages || p->stage[k].rows == 0) return -1.0;
    const ert_stage_profile *s = &p->stage[k];
    return s->start_ms + s->compute_ms + s->decide_ms;
}
