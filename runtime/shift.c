/* Input corruptions for distribution-shift reports: Gaussian noise, blur, contrast,
 * translation and rotation of [C,H,W] images with values in [0, 1], at severities 1..5.
 * Every random choice comes from a counter-based generator keyed by (seed, sample
 * index), so a corrupted sample does not depend on the order or batch it is made in. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exit_math.h"
#include "error.h"
#include "internal.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static const char *const shift_names[] = {"none", "gaussian-noise", "blur", "contrast", "translate", "rotate"};
#define NUM_SHIFTS ((int)(sizeof shift_names / sizeof *shift_names))

/* Strength per severity 1..5: noise sigma and contrast factors as in ImageNet-C (whose
 * pixels are also in [0, 1]); blur, translation and rotation scaled to 28x28 images. */
static const double strength[NUM_SHIFTS][ERT_SHIFT_MAX_SEVERITY] = {
    {0, 0, 0, 0, 0},
    {0.08, 0.12, 0.18, 0.26, 0.38},
    {0.5, 0.75, 1.0, 1.5, 2.0},
    {0.5, 0.4, 0.3, 0.2, 0.1},
    {1, 2, 3, 4, 5},
    {8, 16, 24, 32, 40},
};

ert_status ert_shift_parse(const char *text, ert_shift_kind *out) {
    if (!text || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_shift_parse: NULL argument");
    for (int i = 0; i < NUM_SHIFTS; ++i)
        if (strcmp(text, shift_names[i]) == 0) {
            *out = (ert_shift_kind)i;
            return ERT_OK;
        }
    return ert_error(ERT_ERR_INVALID_ARGUMENT,
                     "shift '%s': expected gaussian-noise, blur, contrast, translate, rotate or none", text);
}

const char *ert_shift_name(ert_shift_kind kind) {
    return (int)kind >= 0 && (int)kind < NUM_SHIFTS ? shift_names[kind] : "unknown";
}

double ert_shift_strength(ert_shift_kind kind, int severity) {
    if ((int)kind <= 0 || (int)kind >= NUM_SHIFTS || severity < 1 || severity > ERT_SHIFT_MAX_SEVERITY) return 0.0;
    return strength[kind][severity - 1];
}

/* ---------------------------------------------------------------- random numbers */


/* A uniform draw in (0, 1) from (seed, index, counter): 53 random bits, never 0. */
static double uniform3(uint64_t seed, uint64_t index, uint64_t counter) {
    uint64_t x = ert_mix64(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
    x = ert_mix64(x ^ (index + 0x8CB92BA72F3D8DD7ull));
    x = ert_mix64(x ^ (counter * 0xD6E8FEB86659FD93ull + 1));
    return ((double)(x >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static float clamp01(double v) { return v < 0.0 ? 0.0f : v > 1.0 ? 1.0f : (float)v; }

/* ---------------------------------------------------------------- image operations */

void ert_image_noise(const float *in, float *out, int64_t size, double sigma, uint64_t seed, uint64_t index) {
    /* Box-Muller: one pair of uniforms gives two independent normals. */
    for (int64_t j = 0; j < size; j += 2) {
        const double u1 = uniform3(seed, index, (uint64_t)j), u2 = uniform3(seed, index, (uint64_t)j + 1);
        const double r = sqrt(-2.0 * log(u1)), a = 2.0 * M_PI * u2;
        out[j] = clamp01(in[j] + sigma * r * cos(a));
        if (j + 1 < size) out[j + 1] = clamp01(in[j + 1] + sigma * r * sin(a));
    }
}

void ert_image_translate(const float *in, float *out, int C, int H, int W, int dx, int dy) {
    for (int c = 0; c < C; ++c)
        for (int y = 0; y < H; ++y)
            for (int x = 0; x < W; ++x) {
                const int sx = x - dx, sy = y - dy;
                const size_t o = ((size_t)c * H + y) * W + x;
                out[o] = (sx >= 0 && sx < W && sy >= 0 && sy < H) ? clamp01(in[((size_t)c * H + sy) * W + sx]) : 0.0f;
            }
}

static double pixel_or_zero(const float *img, int H, int W, int x, int y) {
    return (x >= 0 && x < W && y >= 0 && y < H) ? img[(size_t)y * W + x] : 0.0;
}

void ert_image_rotate(const float *in, float *out, int C, int H, int W, double degrees) {
    /* Inverse mapping: each output pixel samples the input at the point the rotation
     * carries onto it. With v pointing down the screen, a counter-clockwise turn by a
     * samples from (u cos a - v sin a, u sin a + v cos a). */
    const double a = degrees * M_PI / 180.0, ca = cos(a), sa = sin(a);
    const double cx = (W - 1) / 2.0, cy = (H - 1) / 2.0;
    for (int c = 0; c < C; ++c) {
        const float *img = in + (size_t)c * H * W;
        for (int y = 0; y < H; ++y)
            for (int x = 0; x < W; ++x) {
                const double u = x - cx, v = y - cy;
                const double sx = u * ca - v * sa + cx, sy = u * sa + v * ca + cy;
                const double fx = floor(sx), fy = floor(sy);
                const int x0 = (int)fx, y0 = (int)fy;
                const double tx = sx - fx, ty = sy - fy;
                const double val = (1 - ty) * ((1 - tx) * pixel_or_zero(img, H, W, x0, y0) +
                                               tx * pixel_or_zero(img, H, W, x0 + 1, y0)) +
                                   ty * ((1 - tx) * pixel_or_zero(img, H, W, x0, y0 + 1) +
                                         tx * pixel_or_zero(img, H, W, x0 + 1, y0 + 1));
                out[((size_t)c * H + y) * W + x] = clamp01(val);
            }
    }
}

ert_status ert_image_blur(const float *in, float *out, int C, int H, int W, double sigma) {
    const size_t plane = (size_t)H * W;
    if (!(sigma > 0.0)) {
        for (size_t i = 0; i < (size_t)C * plane; ++i) out[i] = clamp01(in[i]);
        return ERT_OK;
    }
    const int longest = H > W ? H : W;
    /* past the image, taps only repeat the edge pixels: 3 sides' worth is plenty, and the
     * cap keeps a huge (or infinite) sigma from overflowing the radius */
    const double reach = ceil(3.0 * sigma);
    const int r = reach < 3.0 * longest ? (int)reach : 3 * longest;
    double *w = malloc(sizeof *w * (size_t)(2 * r + 1));
    double *line = malloc(sizeof *line * (size_t)longest);
    if (!w || !line) {
        free(w);
        free(line);
        return ert_error(ERT_ERR_OUT_OF_MEMORY, "blur: out of memory");
    }
    double sum = 0.0;
    for (int k = -r; k <= r; ++k) sum += (w[k + r] = exp(-0.5 * k * k / (sigma * sigma)));
    for (int k = 0; k <= 2 * r; ++k) w[k] /= sum;
    for (int c = 0; c < C; ++c) {
        const float *src = in + (size_t)c * plane;
        float *dst = out + (size_t)c * plane;
        for (int y = 0; y < H; ++y) { /* rows: in -> out */
            for (int x = 0; x < W; ++x) line[x] = src[(size_t)y * W + x];
            for (int x = 0; x < W; ++x) {
                double acc = 0.0;
                for (int k = -r; k <= r; ++k) {
                    const int xx = x + k < 0 ? 0 : x + k >= W ? W - 1 : x + k;
                    acc += w[k + r] * line[xx];
                }
                dst[(size_t)y * W + x] = (float)acc;
            }
        }
        for (int x = 0; x < W; ++x) { /* columns: out -> out, through a copy of the column */
            for (int y = 0; y < H; ++y) line[y] = dst[(size_t)y * W + x];
            for (int y = 0; y < H; ++y) {
                double acc = 0.0;
                for (int k = -r; k <= r; ++k) {
                    const int yy = y + k < 0 ? 0 : y + k >= H ? H - 1 : y + k;
                    acc += w[k + r] * line[yy];
                }
                dst[(size_t)y * W + x] = clamp01(acc);
            }
        }
    }
    free(w);
    free(line);
    return ERT_OK;
}

void ert_image_contrast(const float *in, float *out, int C, int H, int W, double factor) {
    const size_t plane = (size_t)H * W;
    for (int c = 0; c < C; ++c) {
        const float *src = in + (size_t)c * plane;
        double m = 0.0;
        for (size_t i = 0; i < plane; ++i) m += src[i];
        m /= (double)plane;
        for (size_t i = 0; i < plane; ++i) out[(size_t)c * plane + i] = clamp01(m + factor * (src[i] - m));
    }
}

/* ---------------------------------------------------------------- datasets */

ert_status ert_dataset_copy(const ert_dataset *d, ert_dataset **out) {
    if (!d || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_dataset_copy: NULL argument");
    *out = NULL;
    ert_dataset *c = calloc(1, sizeof *c);
    const size_t nx = (size_t)d->n * (size_t)d->sample_size;
    if (!c) goto oom;
    *c = *d;
    c->x = NULL;
    c->labels = NULL;
    if (!(c->x = malloc(sizeof *c->x * (nx ? nx : 1)))) goto oom;
    memcpy(c->x, d->x, sizeof *c->x * nx);
    if (d->labels) {
        if (!(c->labels = malloc(sizeof *c->labels * (size_t)(d->n ? d->n : 1)))) goto oom;
        memcpy(c->labels, d->labels, sizeof *c->labels * (size_t)d->n);
    }
    *out = c;
    return ERT_OK;
oom:
    ert_dataset_free(c);
    return ert_error(ERT_ERR_OUT_OF_MEMORY, "dataset '%s': out of memory copying %lld samples", d->name,
                     (long long)d->n);
}

ert_status ert_shift_apply(ert_dataset *d, ert_shift_kind kind, int severity, uint64_t seed) {
    if (!d) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_shift_apply: NULL dataset");
    if ((int)kind < 0 || (int)kind >= NUM_SHIFTS)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_shift_apply: unknown shift kind %d", (int)kind);
    if (severity < 0 || severity > ERT_SHIFT_MAX_SEVERITY)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "shift %s: severity %d is not in 1..%d", ert_shift_name(kind),
                         severity, ERT_SHIFT_MAX_SEVERITY);
    if (kind == ERT_SHIFT_NONE || severity == 0) return ERT_OK;
    int C = 1, H = 1, W = d->sample_size;
    if (d->ndim == 3) C = d->shape[0], H = d->shape[1], W = d->shape[2];
    else if (d->ndim == 2) H = d->shape[0], W = d->shape[1];
    else if (kind != ERT_SHIFT_GAUSSIAN_NOISE && kind != ERT_SHIFT_CONTRAST)
        return ert_error(ERT_ERR_SHAPE, "dataset '%s': shift %s needs images ([H,W] or [C,H,W] samples), not %d-d samples",
                         d->name, ert_shift_name(kind), d->ndim);
    if ((int64_t)C * H * W != d->sample_size)
        return ert_error(ERT_ERR_SHAPE, "dataset '%s': sample shape %dx%dx%d does not hold %d values", d->name, C, H, W,
                         d->sample_size);
    const size_t size = (size_t)d->sample_size;
    float *tmp = malloc(sizeof *tmp * (size ? size : 1));
    if (!tmp) return ert_error(ERT_ERR_OUT_OF_MEMORY, "shift: out of memory");
    const double s = ert_shift_strength(kind, severity);
    for (int64_t i = 0; i < d->n; ++i) {
        float *x = d->x + (size_t)i * size;
        switch (kind) {
        case ERT_SHIFT_GAUSSIAN_NOISE: ert_image_noise(x, tmp, (int64_t)size, s, seed, (uint64_t)i); break;
        case ERT_SHIFT_BLUR:
            if (ert_image_blur(x, tmp, C, H, W, s)) { /* the samples before i stay blurred: say so */
                free(tmp);
                return ert_error_context(ERT_ERR_OUT_OF_MEMORY, "dataset '%s': sample %lld of %lld: ", d->name,
                                         (long long)i, (long long)d->n);
            }
            break;
        case ERT_SHIFT_CONTRAST: ert_image_contrast(x, tmp, C, H, W, s); break;
        case ERT_SHIFT_TRANSLATE: {
            /* A direction drawn per sample; the offset rounds s * (cos, sin) to whole
             * pixels, so at least one of dx, dy is nonzero. */
            const double a = 2.0 * M_PI * uniform3(seed, (uint64_t)i, UINT64_C(0xffffffff00000001));
            ert_image_translate(x, tmp, C, H, W, (int)lround(s * cos(a)), (int)lround(s * sin(a)));
            break;
        }
        case ERT_SHIFT_ROTATE: {
            const double sign = uniform3(seed, (uint64_t)i, UINT64_C(0xffffffff00000002)) < 0.5 ? -1.0 : 1.0;
            ert_image_rotate(x, tmp, C, H, W, sign * s);
            break;
        }
        case ERT_SHIFT_NONE: memcpy(tmp, x, sizeof *tmp * size); break;
        }
        memcpy(x, tmp, sizeof *tmp * size);
    }
    free(tmp);
    return ERT_OK;
}
