/* Model loading: safetensors and config.json parsing, each malformed file failing with
 * its own status and a message naming what is wrong; tiny models in f32/f16/bf16 agree
 * with PyTorch. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dtype.h"
#include "exitrt/exitrt.h"
#include "testutil.h"

/* A one-stage model: input [4] -> linear 4->3 relu -> exit linear 3->2. */
static const char *good_config =
    "{\"format\":\"exitrt-model\",\"version\":1,\"name\":\"small\","
    "\"input\":{\"shape\":[4],\"mean\":[0.5],\"std\":[0.25]},\"classes\":[\"a\",\"b\"],"
    "\"stages\":[{\"ops\":[{\"op\":\"linear\",\"in\":4,\"out\":3,\"activation\":\"relu\",\"weight\":\"w0\",\"bias\":\"b0\"}],"
    "\"exit\":[{\"op\":\"linear\",\"in\":3,\"out\":2,\"weight\":\"we\"}]}]}";

static float w0[12] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1};
static float b0[3] = {0.5f, -0.5f, 0.0f};
static float we[6] = {1, -1, 0.5f, -1, 1, -0.5f};

/* Writes the good model into a fresh directory; `mutate` may change the tensor list. */
static const char *write_model(const char *config, tu_tensor *t, int n) {
    const char *dir = tu_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    tu_write_text(path, config);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    tu_write_safetensors(path, t, n);
    return dir;
}

static void good_tensors(tu_tensor t[3]) {
    tu_tensor g[3] = {{"w0", "F32", 2, {3, 4}, w0, sizeof w0, {0, 0}},
                      {"b0", "F32", 1, {3}, b0, sizeof b0, {0, 0}},
                      {"we", "F32", 2, {2, 3}, we, sizeof we, {0, 0}}};
    memcpy(t, g, sizeof g);
}

/* Loads dir, expects `status` and `needle` in the message. */
static void expect_fail(const char *dir, ert_status status, const char *needle) {
    ert_model *m = (ert_model *)0x1;
    ert_status s = ert_model_load(dir, &m);
    ck_assert_msg(s == status, "expected status '%s', got '%s': %s", ert_status_to_string(status),
                  ert_status_to_string(s), ert_last_error());
    ck_assert_ptr_null(m);
    ck_assert(tu_error_has(needle));
}

START_TEST(loads_good_model) {
    tu_tensor t[3];
    good_tensors(t);
    const char *dir = write_model(good_config, t, 3);
    ert_model *m = NULL;
    ck_assert_int_eq(ert_model_load(dir, &m), ERT_OK);
    ck_assert_str_eq(ert_model_name(m), "small");
    ck_assert_int_eq(ert_model_input_size(m), 4);
    ck_assert_int_eq(ert_model_num_classes(m), 2);
    ck_assert_int_eq(ert_model_num_exits(m), 1);
    ck_assert_str_eq(ert_model_class_label(m, 1), "b");
    ck_assert_ptr_null(ert_model_class_label(m, 2));
    ck_assert_ptr_null(ert_model_class_label(m, -1));
    ck_assert_ptr_null(ert_model_class_label(NULL, 0));
    /* linear 4x3 with bias: 2*12 + 3; head 2*6 */
    ck_assert_double_eq(ert_model_flops_full(m), 27.0 + 12.0);
    ert_stage_info si;
    ck_assert_int_eq(ert_model_stage_info(m, 0, &si), ERT_OK);
    ck_assert_int_eq(si.params, 15);
    ck_assert_int_eq(si.head_params, 6);
    ck_assert_int_eq(ert_model_stage_info(m, 1, &si), ERT_ERR_INVALID_ARGUMENT);

    /* One hand-computed sample: x = (0.75, 0.25, 0.5, 1.0) -> normalised (1, -1, 0, 2)
     * -> relu(W0 x + b0) = relu(1.5, -1.5, 2) = (1.5, 0, 2) -> logits (2.5, -2.5). */
    ert_session *s = NULL;
    ert_session_options o = ert_session_options_default();
    o.max_batch = 2;
    ck_assert_int_eq(ert_session_new(m, &o, &s), ERT_OK);
    ert_policy *p = NULL;
    ck_assert_int_eq(ert_policy_parse("none", &p), ERT_OK);
    float x[4] = {0.75f, 0.25f, 0.5f, 1.0f};
    int32_t pred, ex;
    float conf;
    ert_batch b = {.input = x, .n = 1};
    ert_outputs out = {&pred, &ex, &conf, NULL};
    ck_assert_int_eq(ert_session_run(s, p, &b, &out), ERT_OK);
    ck_assert_int_eq(pred, 0);
    ck_assert_int_eq(ex, 0);
    ck_assert_float_eq_tol(conf, 1.0f / (1.0f + expf(-5.0f)), 1e-6f);
    /* The profile's work by hand, two samples: FLOPs 2 x (27 + 12); bytes 4 x (weights
     * 15 + 6, activations per sample 4 + 3 read and written by the body, 3 + 2 by the head). */
    float x2[8] = {0.75f, 0.25f, 0.5f, 1.0f, 0.0f, 1.0f, 0.5f, 0.25f};
    int32_t pred2[2], ex2[2];
    float conf2[2];
    b = (ert_batch){.input = x2, .n = 2};
    out = (ert_outputs){pred2, ex2, conf2, NULL};
    ck_assert_int_eq(ert_session_run(s, p, &b, &out), ERT_OK);
    ert_profile prof;
    ck_assert_int_eq(ert_session_profile(s, &prof), ERT_OK);
    ck_assert_int_eq(prof.num_stages, 1);
    ck_assert_int_eq(prof.stage[0].rows, 2);
    ck_assert_double_eq(prof.stage[0].flops, 2 * (27.0 + 12.0));
    ck_assert_double_eq(prof.stage[0].bytes, 4 * (15.0 + 6.0 + 2 * (7.0 + 5.0)));
    ert_policy_free(p);
    ert_session_free(s);
    ert_model_free(m);
    ert_model_free(NULL);
}
END_TEST

START_TEST(truncated_file) {
    tu_tensor t[3];
    good_tensors(t);
    const char *dir = write_model(good_config, t, 3);
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "rb");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    tu_write_file(path, buf, n - 10); /* the last tensor's bytes are cut */
    expect_fail(dir, ERT_ERR_FORMAT, "truncated");
    tu_write_file(path, buf, 5); /* not even a header length */
    expect_fail(dir, ERT_ERR_FORMAT, "too short");
    tu_write_file(path, buf, 40); /* header length larger than the file */
    expect_fail(dir, ERT_ERR_FORMAT, "exceeds the file");
}
END_TEST

START_TEST(oversized_offset) {
    tu_tensor t[3];
    good_tensors(t);
    t[2].offsets[0] = 60;
    t[2].offsets[1] = 1000000000;
    expect_fail(write_model(good_config, t, 3), ERT_ERR_FORMAT, "'we': data_offsets [60, 1000000000] run past");
}
END_TEST

START_TEST(wrong_dtype) {
    tu_tensor t[3];
    good_tensors(t);
    t[1].dtype = "I64";
    expect_fail(write_model(good_config, t, 3), ERT_ERR_DTYPE, "tensor 'b0': dtype 'I64' is not supported");
}
END_TEST

START_TEST(wrong_shape) {
    tu_tensor t[3];
    good_tensors(t);
    t[0].shape[0] = 4; /* [4, 3]: same bytes, wrong shape */
    t[0].shape[1] = 3;
    expect_fail(write_model(good_config, t, 3), ERT_ERR_SHAPE,
                "tensor 'w0' has shape [4, 3], stages[0].ops[0].weight expects [3, 4]");
}
END_TEST

START_TEST(byte_count_and_overlap) {
    tu_tensor t[3];
    good_tensors(t);
    t[1].shape[0] = 2; /* 12 bytes of data for 2 floats */
    expect_fail(write_model(good_config, t, 3), ERT_ERR_FORMAT, "12 bytes for 2 F32 elements");
    good_tensors(t);
    t[1].offsets[0] = 40; /* b0 overlaps w0 [0, 48) */
    t[1].offsets[1] = 52;
    expect_fail(write_model(good_config, t, 3), ERT_ERR_FORMAT, "tensors 'w0' and 'b0' overlap");
    /* data_offsets that are not two whole numbers, begin <= end, each part by itself */
    const char *bad[] = {"[\"0\",48]", "[0,\"48\"]", "[-4,44]", "[0.5,48]", "[0,47.5]", "[48,0]"};
    for (int k = 0; k < 6; ++k) {
        char header[512];
        const int len = snprintf(header, sizeof header,
                                 "{\"w0\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":%s},"
                                 "\"b0\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[48,60]},"
                                 "\"we\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[60,84]}}",
                                 bad[k]);
        unsigned char file[8 + 512 + 84] = {0};
        for (int i = 0; i < 8; ++i) file[i] = (unsigned char)((unsigned long long)len >> (8 * i));
        memcpy(file + 8, header, (size_t)len);
        const char *dir = write_model(good_config, t, 3);
        char path[512];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        tu_write_file(path, file, 8 + (size_t)len + 84);
        expect_fail(dir, ERT_ERR_FORMAT, "tensor 'w0': bad data_offsets");
    }
}
END_TEST

START_TEST(missing_and_unused_tensors) {
    tu_tensor t[4];
    good_tensors(t);
    expect_fail(write_model(good_config, t, 2), ERT_ERR_FORMAT, "tensor 'we' (named by stages[0].exit[0].weight) is missing");
    t[3] = (tu_tensor){"extra", "F32", 1, {3}, b0, sizeof b0, {0, 0}};
    expect_fail(write_model(good_config, t, 4), ERT_ERR_FORMAT, "tensor 'extra' is not used");
}
END_TEST

START_TEST(non_finite_weight) {
    tu_tensor t[3];
    good_tensors(t);
    float bad[3] = {0.0f, NAN, 1.0f};
    t[1].data = bad;
    expect_fail(write_model(good_config, t, 3), ERT_ERR_NUMERIC, "tensor 'b0' holds a non-finite value at element 1");
}
END_TEST

/* The good config with one substring replaced. */
static const char *config_with(const char *from, const char *to) {
    static char buf[4096];
    const char *at = strstr(good_config, from);
    ck_assert_ptr_nonnull(at);
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - good_config), good_config, to, at + strlen(from));
    return buf;
}

START_TEST(config_errors) {
    tu_tensor t[3];
    good_tensors(t);
    expect_fail(write_model("{\"stages\": [", t, 3), ERT_ERR_FORMAT, "invalid JSON");
    expect_fail(write_model(config_with("\"in\":3,\"out\":2", "\"in\":4,\"out\":2"), t, 3), ERT_ERR_SHAPE,
                "stages[0].exit[0]: linear has in = 4 but its input has width 3");
    expect_fail(write_model(config_with("[\"a\",\"b\"]", "[\"a\",\"b\",\"c\"]"), t, 3), ERT_ERR_SHAPE,
                "exit head outputs 2 values for 3 classes");
    expect_fail(write_model(config_with("\"op\":\"linear\",\"in\":4", "\"op\":\"conv9d\",\"in\":4"), t, 3),
                ERT_ERR_FORMAT, "unknown op 'conv9d'");
    expect_fail(write_model(config_with("\"relu\"", "\"swish\""), t, 3), ERT_ERR_FORMAT, "'swish'");
    expect_fail(write_model(config_with("\"version\":1", "\"version\":2"), t, 3), ERT_ERR_UNSUPPORTED, "version 2");
    expect_fail(write_model(config_with("\"mean\":[0.5]", "\"mean\":[0.5,0.1]"), t, 3), ERT_ERR_SHAPE,
                "input.mean: 2 values for 1 channels");
    expect_fail(write_model(config_with("\"std\":[0.25]", "\"std\":[0]"), t, 3), ERT_ERR_FORMAT, "std must be positive");
    expect_fail(write_model(config_with(",\"exit\":[{\"op\":\"linear\",\"in\":3,\"out\":2,\"weight\":\"we\"}]", ""), t, 2),
                ERT_ERR_FORMAT, "the last stage needs an exit head");
    expect_fail(write_model(config_with("\"in\":4,\"out\":3", "\"in\":4.5,\"out\":3"), t, 3), ERT_ERR_FORMAT,
                "stages[0].ops[0].in: expected an integer");
    expect_fail("/nonexistent-dir", ERT_ERR_IO, "/nonexistent-dir/config.json': cannot open");
    /* the weights file (mapped, not read): missing, a directory, empty, one byte */
    char path[600];
    const char *dir = write_model(good_config, t, 3);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ck_assert_int_eq(remove(path), 0);
    expect_fail(dir, ERT_ERR_IO, "model.safetensors': cannot open");
    ck_assert_int_eq(mkdir(path, 0700), 0);
    expect_fail(dir, ERT_ERR_IO, "model.safetensors': not a regular file");
    ck_assert_int_eq(rmdir(path), 0);
    tu_write_text(path, "");
    expect_fail(dir, ERT_ERR_FORMAT, "model.safetensors': 0 bytes: too short for a safetensors header");
    tu_write_text(path, "x");
    expect_fail(dir, ERT_ERR_FORMAT, "model.safetensors': 1 bytes: too short");
    ert_model *m = NULL;
    ck_assert_int_eq(ert_model_load(NULL, &m), ERT_ERR_INVALID_ARGUMENT);
}
END_TEST

START_TEST(calibration_file) {
    tu_tensor t[3];
    good_tensors(t);
    const char *dir = write_model(good_config, t, 3);
    char path[512];
    snprintf(path, sizeof path, "%s/calibration.json", dir);
    tu_write_text(path, "{\"temperatures\": [1.5]}");
    ert_model *m = NULL;
    ck_assert_int_eq(ert_model_load(dir, &m), ERT_OK);
    ck_assert_float_eq(ert_model_temperature(m, 0), 1.5f);
    ert_model_free(m);
    tu_write_text(path, "{\"temperatures\": [1.5, 2]}");
    expect_fail(dir, ERT_ERR_FORMAT, "calibration.json': expected {\"temperatures\": [1 positive numbers]}");
}
END_TEST

/* f16 / bf16 conversions against values PyTorch produces (hand-checked bit patterns). */
START_TEST(half_conversions) {
    ck_assert_uint_eq(ert_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(ert_f32_to_f16(-2.5f), 0xc100);
    ck_assert_uint_eq(ert_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(ert_f32_to_f16(65520.0f), 0x7c00);            /* rounds to inf */
    ck_assert_uint_eq(ert_f32_to_f16(5.9604645e-08f), 0x0001);      /* smallest subnormal */
    ck_assert_uint_eq(ert_f32_to_f16(1.0009765625f), 0x3c01);
    ck_assert_uint_eq(ert_f32_to_f16(1.00048828125f), 0x3c00);      /* tie to even */
    ck_assert_float_eq(ert_f16_to_f32(0x3555), 0.333251953125f);
    ck_assert_float_eq(ert_f16_to_f32(0x0001), 5.9604645e-08f);
    ck_assert(isnan(ert_f16_to_f32(ert_f32_to_f16(NAN))));
    ck_assert_uint_eq(ert_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(ert_f32_to_bf16(3.14159265f), 0x4049);
    ck_assert_uint_eq(ert_f32_to_bf16(1.00390625f), 0x3f80);        /* tie to even */
    ck_assert_float_eq(ert_bf16_to_f32(0x4049), 3.140625f);
    ck_assert(isnan(ert_bf16_to_f32(ert_f32_to_bf16(NAN))));
    for (int i = 0; i < 0x7c00; i += 7) /* every finite half survives a round trip */
        ck_assert_uint_eq(ert_f32_to_f16(ert_f16_to_f32((uint16_t)i)), (uint16_t)i);
}
END_TEST

/* The tiny models of test/fixtures (flatten, linear+relu/gelu, layernorm, residual, a
 * stage without exit, per-channel normalisation) against PyTorch: at each exit (fixed:K)
 * the prediction and the max softmax of the reference logits. */
static void check_tiny(const char *name, double tol) {
    char dir[256], ref[300];
    snprintf(dir, sizeof dir, "test/fixtures/%s", name);
    snprintf(ref, sizeof ref, "%s/reference.json", dir);
    cJSON *j = tu_json_load(tu_path(ref));
    ert_model *m = NULL;
    ck_assert_msg(ert_model_load(tu_path(dir), &m) == ERT_OK, "%s", ert_last_error());
    ert_session *s = NULL;
    ert_session_options o = ert_session_options_default();
    o.max_batch = 8;
    ck_assert_int_eq(ert_session_new(m, &o, &s), ERT_OK);
    const cJSON *inputs = cJSON_GetObjectItem(j, "inputs");
    const int n = cJSON_GetArraySize(inputs);
    float x[8 * 24];
    for (int i = 0; i < n; ++i) {
        int len;
        float *row = tu_json_floats(cJSON_GetArrayItem(inputs, i), &len);
        ck_assert_int_eq(len, 24);
        memcpy(x + i * 24, row, sizeof(float) * 24);
        free(row);
    }
    const cJSON *logits = cJSON_GetObjectItem(j, "exit_logits");
    ck_assert_int_eq(cJSON_GetArraySize(logits), ert_model_num_exits(m));
    double worst = 0;
    for (int e = 0; e < ert_model_num_exits(m); ++e) {
        char spec[32];
        snprintf(spec, sizeof spec, "fixed:%d", e);
        ert_policy *p = NULL;
        ck_assert_int_eq(ert_policy_parse(spec, &p), ERT_OK);
        int32_t pred[8], ex[8];
        float conf[8], lg[8 * 5];
        ert_batch b = {.input = x, .n = n};
        ert_outputs out = {pred, ex, conf, lg};
        ck_assert_msg(ert_session_run(s, p, &b, &out) == ERT_OK, "%s", ert_last_error());
        for (int i = 0; i < n; ++i) {
            int c;
            float *z = tu_json_floats(cJSON_GetArrayItem(cJSON_GetArrayItem(logits, e), i), &c);
            int arg = 0;
            double sum = 0;
            for (int k = 1; k < c; ++k)
                if (z[k] > z[arg]) arg = k;
            for (int k = 0; k < c; ++k) sum += exp((double)z[k] - z[arg]);
            ck_assert_int_eq(ex[i], e);
            ck_assert_int_eq(pred[i], arg);
            double err = fabs(conf[i] - 1.0 / sum);
            if (err > worst) worst = err;
            ck_assert_double_le(tu_rel_err(lg + i * 5, z, 5, 1e-5, 1e-5), 1.0); /* the logits themselves */
            free(z);
        }
        ert_policy_free(p);
    }
    printf("%s: max |confidence - PyTorch| = %.3g\n", name, worst);
    ck_assert_double_lt(worst, tol);
    ert_session_free(s);
    ert_model_free(m);
    cJSON_Delete(j);
}

START_TEST(tiny_f32) { check_tiny("tiny-f32", 1e-5); }
END_TEST
START_TEST(tiny_f16) { check_tiny("tiny-f16", 1e-5); }
END_TEST
START_TEST(tiny_bf16) { check_tiny("tiny-bf16", 1e-5); }
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("load");
    tcase_add_test(tc, loads_good_model);
    tcase_add_test(tc, truncated_file);
    tcase_add_test(tc, oversized_offset);
    tcase_add_test(tc, wrong_dtype);
    tcase_add_test(tc, wrong_shape);
    tcase_add_test(tc, byte_count_and_overlap);
    tcase_add_test(tc, missing_and_unused_tensors);
    tcase_add_test(tc, non_finite_weight);
    tcase_add_test(tc, config_errors);
    tcase_add_test(tc, calibration_file);
    tcase_add_test(tc, half_conversions);
    tcase_add_test(tc, tiny_f32);
    tcase_add_test(tc, tiny_f16);
    tcase_add_test(tc, tiny_bf16);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_run(suite()); }
