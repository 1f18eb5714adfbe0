/* Input corruptions on known tiny images, with answers worked out by hand: translation
 * by whole pixels, contrast on constant and two-level images, rotation by 90 and 180
 * degrees, blur of constant images and impulses, noise statistics, determinism. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exitrt/exitrt.h"
#include "testutil.h"

/* A 3x3 image 0.1 .. 0.9 in reading order. */
static void ramp(float *img, int n) {
    for (int i = 0; i < n; ++i) img[i] = (float)(i + 1) / 10.0f;
}

START_TEST(translate_one_pixel) {
    float in[9], out[9];
    ramp(in, 9);
    ert_image_translate(in, out, 1, 3, 3, 1, 0); /* right by one: column 0 is zero */
    const float right[9] = {0, 0.1f, 0.2f, 0, 0.4f, 0.5f, 0, 0.7f, 0.8f};
    for (int i = 0; i < 9; ++i) ck_assert_float_eq(out[i], right[i]);
    ert_image_translate(in, out, 1, 3, 3, 0, -1); /* up by one: the last row is zero */
    const float up[9] = {0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 0, 0, 0};
    for (int i = 0; i < 9; ++i) ck_assert_float_eq(out[i], up[i]);
    ert_image_translate(in, out, 1, 3, 3, 3, 0); /* off the image */
    for (int i = 0; i < 9; ++i) ck_assert_float_eq(out[i], 0.0f);
    /* Two channels move together. */
    float in2[18], out2[18];
    ramp(in2, 9);
    ramp(in2 + 9, 9);
    ert_image_translate(in2, out2, 2, 3, 3, -1, 1);
    for (int c = 0; c < 2; ++c) {
        ck_assert_float_eq(out2[c * 9 + 0], 0.0f);      /* row 0 comes from row -1 */
        ck_assert_float_eq(out2[c * 9 + 3], 0.2f);      /* (1,0) <- (0,1) */
        ck_assert_float_eq(out2[c * 9 + 7], 0.6f);      /* (2,1) <- (1,2) */
        ck_assert_float_eq(out2[c * 9 + 8], 0.0f);      /* (2,2) <- (1,3): outside */
    }
}
END_TEST

START_TEST(contrast_known_values) {
    float in[16], out[16];
    for (int i = 0; i < 16; ++i) in[i] = 0.3f;
    ert_image_contrast(in, out, 1, 4, 4, 0.1); /* a constant image has nothing to lose */
    for (int i = 0; i < 16; ++i) ck_assert_float_eq_tol(out[i], 0.3f, 1e-6f);
    for (int i = 0; i < 16; ++i) in[i] = i % 2 ? 1.0f : 0.0f; /* mean 0.5 */
    ert_image_contrast(in, out, 1, 4, 4, 0.5);
    for (int i = 0; i < 16; ++i) ck_assert_float_eq_tol(out[i], i % 2 ? 0.75f : 0.25f, 1e-6f);
    /* Per channel: channel 1 is constant 0.8 and stays so. */
    float in2[8] = {0, 1, 0, 1, 0.8f, 0.8f, 0.8f, 0.8f}, out2[8];
    ert_image_contrast(in2, out2, 2, 2, 2, 0.2);
    ck_assert_float_eq_tol(out2[0], 0.4f, 1e-6f);
    ck_assert_float_eq_tol(out2[1], 0.6f, 1e-6f);
    ck_assert_float_eq_tol(out2[5], 0.8f, 1e-6f);
    /* Severities fade monotonically. */
    for (int s = 1; s < 5; ++s)
        ck_assert(ert_shift_strength(ERT_SHIFT_CONTRAST, s + 1) < ert_shift_strength(ERT_SHIFT_CONTRAST, s));
}
END_TEST

START_TEST(rotate_quarter_turns) {
    float in[9] = {0}, out[9];
    in[1 * 3 + 2] = 1.0f; /* right middle */
    ert_image_rotate(in, out, 1, 3, 3, 90.0);
    /* counter-clockwise as displayed: the right edge goes to the top */
    for (int i = 0; i < 9; ++i) ck_assert_float_eq_tol(out[i], i == 0 * 3 + 1 ? 1.0f : 0.0f, 1e-6f);
    ert_image_rotate(in, out, 1, 3, 3, -90.0);
    for (int i = 0; i < 9; ++i) ck_assert_float_eq_tol(out[i], i == 2 * 3 + 1 ? 1.0f : 0.0f, 1e-6f);
    /* A plus sign is symmetric under a quarter turn. */
    const float plus[9] = {0, 1, 0, 1, 1, 1, 0, 1, 0};
    ert_image_rotate(plus, out, 1, 3, 3, 90.0);
    for (int i = 0; i < 9; ++i) ck_assert_float_eq_tol(out[i], plus[i], 1e-6f);
    /* 180 degrees on an even size (centre between pixels): out(y,x) = in(3-y, 3-x). */
    float a[16], b[16];
    for (int i = 0; i < 16; ++i) a[i] = (float)i / 16.0f;
    ert_image_rotate(a, b, 1, 4, 4, 180.0);
    for (int y = 0; y < 4; ++y)
        for (int x = 0; x < 4; ++x) ck_assert_float_eq_tol(b[y * 4 + x], a[(3 - y) * 4 + (3 - x)], 1e-6f);
    /* 0 degrees is the identity; a corner of a constant image loses mass at 45 degrees
     * (zero fill), the centre keeps it. */
    ert_image_rotate(a, b, 1, 4, 4, 0.0);
    for (int i = 0; i < 16; ++i) ck_assert_float_eq_tol(b[i], a[i], 1e-7f);
    float one[25], r[25];
    for (int i = 0; i < 25; ++i) one[i] = 1.0f;
    ert_image_rotate(one, r, 1, 5, 5, 45.0);
    ck_assert_float_eq_tol(r[12], 1.0f, 1e-6f);
    ck_assert_float_lt(r[0], 0.5f);
}
END_TEST

START_TEST(blur_known_values) {
    float in[49], out[49];
    for (int i = 0; i < 49; ++i) in[i] = 0.6f;
    ck_assert_int_eq(ert_image_blur(in, out, 1, 7, 7, 1.5), ERT_OK); /* edges replicated: constant stays constant */
    for (int i = 0; i < 49; ++i) ck_assert_float_eq_tol(out[i], 0.6f, 1e-6f);
    memset(in, 0, sizeof in);
    in[3 * 7 + 3] = 1.0f; /* an impulse in the middle, far enough from the edges at sigma 0.5 */
    ck_assert_int_eq(ert_image_blur(in, out, 1, 7, 7, 0.5), ERT_OK);
    double sum = 0.0;
    for (int i = 0; i < 49; ++i) sum += out[i];
    ck_assert_double_eq_tol(sum, 1.0, 1e-5);
    /* the separable kernel: centre weight squared, neighbours symmetric */
    const double w0 = 1.0, w1 = exp(-0.5 / 0.25), w2 = exp(-2.0 / 0.25), tot = w0 + 2 * w1 + 2 * w2;
    ck_assert_float_eq_tol(out[3 * 7 + 3], (float)((w0 / tot) * (w0 / tot)), 1e-6f);
    ck_assert_float_eq_tol(out[3 * 7 + 4], (float)((w0 / tot) * (w1 / tot)), 1e-6f);
    ck_assert_float_eq_tol(out[3 * 7 + 2], out[3 * 7 + 4], 1e-7f);
    ck_assert_float_eq_tol(out[2 * 7 + 3], out[3 * 7 + 4], 1e-7f);
    /* an unbounded sigma: the radius stops at 3 x 7 = 21, every tap weighs 1/43, and each
     * pixel sees the impulse through exactly one tap per pass */
    const double huge[] = {INFINITY, 1e300};
    for (int h = 0; h < 2; ++h) {
        ck_assert_int_eq(ert_image_blur(in, out, 1, 7, 7, huge[h]), ERT_OK);
        for (int i = 0; i < 49; ++i) ck_assert_float_eq_tol(out[i], (float)(1.0 / (43.0 * 43.0)), 1e-9f);
    }
    /* Near the edges: the blur commutes with mirroring and with transposing (edges
     * replicated the same way on all four sides), on an image with no symmetry. */
    float img[49], t[49], bt[49];
    for (int i = 0; i < 49; ++i) img[i] = (float)((i * 37) % 11) / 10.0f;
    for (int y = 0; y < 7; ++y)
        for (int x = 0; x < 7; ++x) t[y * 7 + x] = img[x * 7 + y];
    ck_assert_int_eq(ert_image_blur(img, out, 1, 7, 7, 1.0), ERT_OK);
    ck_assert_int_eq(ert_image_blur(t, bt, 1, 7, 7, 1.0), ERT_OK);
    for (int y = 0; y < 7; ++y)
        for (int x = 0; x < 7; ++x) ck_assert_float_eq_tol(bt[y * 7 + x], out[x * 7 + y], 1e-6f);
    for (int y = 0; y < 7; ++y)
        for (int x = 0; x < 7; ++x) t[y * 7 + x] = img[y * 7 + 6 - x];
    ck_assert_int_eq(ert_image_blur(t, bt, 1, 7, 7, 1.0), ERT_OK);
    for (int y = 0; y < 7; ++y)
        for (int x = 0; x < 7; ++x) ck_assert_float_eq_tol(bt[y * 7 + x], out[y * 7 + 6 - x], 1e-6f);
    /* sigma 0 (or NaN) copies */
    ck_assert_int_eq(ert_image_blur(in, out, 1, 7, 7, 0.0), ERT_OK);
    for (int i = 0; i < 49; ++i) ck_assert_float_eq(out[i], in[i]);
    ck_assert_int_eq(ert_image_blur(in, out, 1, 7, 7, NAN), ERT_OK);
    for (int i = 0; i < 49; ++i) ck_assert_float_eq(out[i], in[i]);
}
END_TEST

START_TEST(noise_statistics) {
    enum { N = 200000 };
    float *in = malloc(sizeof(float) * N), *out = malloc(sizeof(float) * N), *again = malloc(sizeof(float) * N);
    for (int i = 0; i < N; ++i) in[i] = 0.5f;
    const double sigma = ert_shift_strength(ERT_SHIFT_GAUSSIAN_NOISE, 1);
    ck_assert_double_eq(sigma, 0.08);
    ert_image_noise(in, out, N, sigma, 42, 7);
    double m = 0.0, v = 0.0;
    for (int i = 0; i < N; ++i) m += out[i];
    m /= N;
    for (int i = 0; i < N; ++i) v += (out[i] - m) * (out[i] - m);
    const double sd = sqrt(v / (N - 1));
    ck_assert_double_eq_tol(m, 0.5, 0.001); /* 4 standard errors: 4 * 0.08 / sqrt(2e5) */
    ck_assert_double_eq_tol(sd, 0.08, 0.001);
    /* the same (seed, index) gives the same draws; another index does not */
    ert_image_noise(in, again, N, sigma, 42, 7);
    ck_assert_int_eq(memcmp(out, again, sizeof(float) * N), 0);
    ert_image_noise(in, again, N, sigma, 42, 8);
    ck_assert_int_ne(memcmp(out, again, sizeof(float) * N), 0);
    /* clamped to [0, 1]: on a black image about half the draws are cut at 0 */
    for (int i = 0; i < N; ++i) in[i] = 0.0f;
    ert_image_noise(in, out, N, 0.38, 3, 0);
    int zeros = 0;
    for (int i = 0; i < N; ++i) {
        ck_assert(out[i] >= 0.0f && out[i] <= 1.0f);
        zeros += out[i] == 0.0f;
    }
    ck_assert_int_gt(zeros, N / 2 - N / 50);
    ck_assert_int_lt(zeros, N / 2 + N / 50);
    free(in);
    free(out);
    free(again);
}
END_TEST

static ert_dataset *images(int n, int C, int H, int W) {
    ert_dataset *d = calloc(1, sizeof *d);
    d->n = n;
    d->ndim = C > 1 ? 3 : 2;
    if (C > 1) d->shape[0] = C, d->shape[1] = H, d->shape[2] = W;
    else d->shape[0] = H, d->shape[1] = W;
    d->sample_size = C * H * W;
    d->x = malloc(sizeof(float) * (size_t)n * (size_t)d->sample_size);
    d->labels = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n * d->sample_size; ++i) d->x[i] = (float)((i * 7) % 11) / 10.0f;
    for (int i = 0; i < n; ++i) d->labels[i] = i % 3;
    snprintf(d->name, sizeof d->name, "test-images");
    return d;
}

START_TEST(dataset_shifts_are_deterministic) {
    const ert_shift_kind kinds[] = {ERT_SHIFT_GAUSSIAN_NOISE, ERT_SHIFT_BLUR, ERT_SHIFT_CONTRAST, ERT_SHIFT_TRANSLATE,
                                    ERT_SHIFT_ROTATE};
    ert_dataset *base = images(16, 2, 5, 6);
    for (int k = 0; k < 5; ++k)
        for (int s = 1; s <= 5; ++s) {
            ert_dataset *a = NULL, *b = NULL;
            ck_assert_int_eq(ert_dataset_copy(base, &a), ERT_OK);
            ck_assert_int_eq(ert_dataset_copy(base, &b), ERT_OK);
            ck_assert_ptr_ne(a->x, base->x);
            ck_assert_int_eq(ert_shift_apply(a, kinds[k], s, 5), ERT_OK);
            /* sample 9 alone, corrupted as sample 9 of a one-sample dataset, is not the
             * same draw: so corrupt b whole and compare */
            ck_assert_int_eq(ert_shift_apply(b, kinds[k], s, 5), ERT_OK);
            ck_assert_int_eq(memcmp(a->x, b->x, sizeof(float) * (size_t)(16 * a->sample_size)), 0);
            ck_assert_int_ne(memcmp(a->x, base->x, sizeof(float) * (size_t)(16 * a->sample_size)), 0);
            for (int i = 0; i < 16 * a->sample_size; ++i) ck_assert(a->x[i] >= 0.0f && a->x[i] <= 1.0f);
            ck_assert_int_eq(memcmp(a->labels, base->labels, sizeof(int32_t) * 16), 0);
            ert_dataset_free(a);
            ert_dataset_free(b);
        }
    /* Each corruption grows with severity: the distance from the clean images. */
    for (int k = 0; k < 5; ++k) {
        double prev = 0.0;
        for (int s = 1; s <= 5; ++s) {
            ert_dataset *a = NULL;
            ck_assert_int_eq(ert_dataset_copy(base, &a), ERT_OK);
            ck_assert_int_eq(ert_shift_apply(a, kinds[k], s, 1), ERT_OK);
            double dist = 0.0;
            for (int i = 0; i < 16 * a->sample_size; ++i) dist += fabs(a->x[i] - base->x[i]);
            if (kinds[k] != ERT_SHIFT_TRANSLATE && kinds[k] != ERT_SHIFT_ROTATE)
                ck_assert_msg(dist > prev, "%s: severity %d is not further from clean", ert_shift_name(kinds[k]), s);
            prev = dist;
            ert_dataset_free(a);
        }
    }
    /* Severity 0 and NONE change nothing; bad severities and kinds are refused. */
    ert_dataset *a = NULL;
    ck_assert_int_eq(ert_dataset_copy(base, &a), ERT_OK);
    ck_assert_int_eq(ert_shift_apply(a, ERT_SHIFT_BLUR, 0, 1), ERT_OK);
    ck_assert_int_eq(ert_shift_apply(a, ERT_SHIFT_NONE, 3, 1), ERT_OK);
    ck_assert_int_eq(memcmp(a->x, base->x, sizeof(float) * (size_t)(16 * a->sample_size)), 0);
    ck_assert_int_eq(ert_shift_apply(a, ERT_SHIFT_BLUR, 6, 1), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("severity 6"));
    /* flat samples: noise and contrast only */
    a->ndim = 1;
    a->shape[0] = a->sample_size;
    ck_assert_int_eq(ert_shift_apply(a, ERT_SHIFT_CONTRAST, 2, 1), ERT_OK);
    ck_assert_int_eq(ert_shift_apply(a, ERT_SHIFT_ROTATE, 2, 1), ERT_ERR_SHAPE);
    ck_assert(tu_error_has("needs images"));
    ert_dataset_free(a);
    ert_dataset_free(base);
}
END_TEST

START_TEST(translate_and_rotate_per_sample) {
    /* One bright pixel in the middle of a 9x9 image: translation at severity s moves it
     * by round(s cos a), round(s sin a), so its new place is within s (+ rounding) of the
     * centre and the image keeps exactly one bright pixel. */
    ert_dataset *d = images(40, 1, 9, 9);
    memset(d->x, 0, sizeof(float) * 40 * 81);
    for (int i = 0; i < 40; ++i) d->x[i * 81 + 4 * 9 + 4] = 1.0f;
    ck_assert_int_eq(ert_shift_apply(d, ERT_SHIFT_TRANSLATE, 3, 9), ERT_OK);
    int moved_right = 0, moved_left = 0;
    for (int i = 0; i < 40; ++i) {
        int count = 0, at = -1;
        for (int p = 0; p < 81; ++p)
            if (d->x[i * 81 + p] == 1.0f) count++, at = p;
        ck_assert_int_eq(count, 1);
        const int dy = at / 9 - 4, dx = at % 9 - 4;
        ck_assert(dx * dx + dy * dy >= 4 && dx * dx + dy * dy <= 18); /* ~3 px away */
        moved_right += dx > 0;
        moved_left += dx < 0;
    }
    ck_assert(moved_right > 5 && moved_left > 5); /* directions vary per sample */
    ert_dataset_free(d);
    /* every name parses back to its kind; out of range is "unknown" */
    const char *names[] = {"none", "gaussian-noise", "blur", "contrast", "translate", "rotate"};
    for (int i = 0; i <= ERT_SHIFT_ROTATE; ++i) {
        ck_assert_str_eq(ert_shift_name((ert_shift_kind)i), names[i]);
        ert_shift_kind back;
        ck_assert_int_eq(ert_shift_parse(names[i], &back), ERT_OK);
        ck_assert_int_eq(back, i);
    }
    ck_assert_str_eq(ert_shift_name((ert_shift_kind)-1), "unknown");
    ck_assert_str_eq(ert_shift_name((ert_shift_kind)(ERT_SHIFT_ROTATE + 1)), "unknown");
    ert_shift_kind k;
    ck_assert_int_eq(ert_shift_parse("rotate", &k), ERT_OK);
    ck_assert_int_eq(k, ERT_SHIFT_ROTATE);
    ck_assert_int_eq(ert_shift_parse("fog", &k), ERT_ERR_INVALID_ARGUMENT);
    ck_assert(tu_error_has("fog"));
}
END_TEST

int main(void) {
    Suite *s = suite_create("shift");
    TCase *tc = tcase_create("shift");
    tcase_add_test(tc, translate_one_pixel);
    tcase_add_test(tc, contrast_known_values);
    tcase_add_test(tc, rotate_quarter_turns);
    tcase_add_test(tc, blur_known_values);
    tcase_add_test(tc, noise_statistics);
    tcase_add_test(tc, dataset_shifts_are_deterministic);
    tcase_add_test(tc, translate_and_rotate_per_sample);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
