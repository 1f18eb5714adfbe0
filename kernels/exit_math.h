/*
 * Exit math shared by every backend: the CPU reference includes it as C, the CUDA
 * decide kernel as device code, so both decide with the same arithmetic.
 *
 * For one row of logits z (C classes) at exit e with inverse temperature k = 1/T:
 *   m  = max_i k z_i,  s = sum_i exp(k z_i - m)
 *   p1 = 1 / s (top-1 probability), p2 = exp(k z_2nd - m) / s
 *   H  = log s - sum_i exp(k z_i - m) (k z_i - m) / s,  normalised by log C
 * Two passes over the logits, no temporary array (C may be large on the device).
 */
#ifndef ERT_EXIT_MATH_H
#define ERT_EXIT_MATH_H

#include <math.h>
#include <stdint.h>

#include "exitrt/exitrt.h"
#include "hd.h"

/* The policy as plain data. It travels by value into the decide kernel. */
typedef struct ert_exit_params {
    int32_t kind;       /* ert_policy_kind */
    int32_t num_exits;
    int32_t patience;   /* PATIENCE: consecutive equal predictions needed */
    int32_t fixed_exit; /* FIXED: the exit everyone leaves at */
    float threshold[ERT_MAX_EXITS];
    float inv_temp[ERT_MAX_EXITS];
} ert_exit_params;

/* Per-sample policy state. It moves with the sample when survivors are compacted. */
typedef struct ert_sample_state {
    int32_t label;       /* true class, or -1 (ORACLE needs it) */
    int32_t target_exit; /* SCHEDULED: the exit to leave at */
    int32_t last_pred;   /* prediction at the previous exit, or -1 */
    int32_t streak;      /* consecutive exits with the same prediction */
    int32_t done;        /* masked mode: the sample has already left */
} ert_sample_state;

typedef struct ert_softmax_stats {
    int32_t top1;       /* argmax (first on ties), ignoring NaN */
    int32_t finite;     /* 1 when every logit is finite */
    float p1;           /* top-1 probability */
    float p2;           /* second probability */
    float entropy_norm; /* entropy / log(C), in [0, 1] */
} ert_softmax_stats;

ERT_HD int ert_isfinite(float x) { return isfinite(x) ? 1 : 0; }

ERT_HD ert_softmax_stats ert_softmax_stats_compute(const float *z, int classes, float inv_temp) {
    ert_softmax_stats s;
    float m1 = -INFINITY, m2 = -INFINITY;
    int top1 = 0, finite = 1;
    for (int i = 0; i < classes; ++i) {
        float v = z[i] * inv_temp;
        if (!ert_isfinite(v)) {
            finite = 0;
            if (v != v) continue; /* NaN never wins the argmax */
        }
        if (v > m1) {
            m2 = m1;
            m1 = v;
            top1 = i;
        } else if (v > m2) {
            m2 = v;
        }
    }
    s.top1 = top1;
    s.finite = finite;
    if (!finite) {
        s.p1 = s.p2 = s.entropy_norm = NAN;
        return s;
    }
    float sum = 0.0f, wsum = 0.0f;
    for (int i = 0; i < classes; ++i) {
        float d = z[i] * inv_temp - m1;
        float e = expf(d);
        sum += e;
        wsum += e * d;
    }
    s.p1 = 1.0f / sum;
    s.p2 = classes > 1 ? expf(m2 - m1) / sum : 0.0f;
    s.entropy_norm = classes > 1 ? (logf(sum) - wsum / sum) / logf((float)classes) : 0.0f;
    return s;
}

/* Updates the sample's patience state and returns 1 when it leaves at exit `e`.
 * The last exit always exits. Scores that are not finite never count as confident. */
ERT_HD int ert_exit_decide(const ert_exit_params *p, int e, int is_last,
                           const ert_softmax_stats *s, ert_sample_state *st) {
    if (s->finite) {
        st->streak = (st->last_pred == s->top1) ? st->streak + 1 : 1;
        st->last_pred = s->top1;
    } else {
        st->streak = 0;
        st->last_pred = -1;
    }
    if (is_last) return 1;
    float t = p->threshold[e];
    switch (p->kind) {
    case ERT_POLICY_CONFIDENCE: return s->finite && s->p1 >= t;
    case ERT_POLICY_ENTROPY: return s->finite && s->entropy_norm <= t;
    case ERT_POLICY_MARGIN: return s->finite && (s->p1 - s->p2) >= t;
    case ERT_POLICY_PATIENCE: return s->finite && st->streak >= p->patience;
    case ERT_POLICY_FIXED: return e >= p->fixed_exit;
    case ERT_POLICY_ORACLE: return s->finite && st->label >= 0 && s->top1 == st->label;
    case ERT_POLICY_SCHEDULED: return e >= st->target_exit;
    default: return 0;
    }
}

/* The score a policy compares with its threshold (for reports and for tests that skip
 * samples within a tolerance of their threshold); NaN where the policy has none. */
ERT_HD float ert_exit_score(int32_t kind, const ert_softmax_stats *s) {
    switch (kind) {
    case ERT_POLICY_CONFIDENCE: return s->p1;
    case ERT_POLICY_ENTROPY: return s->entropy_norm;
    case ERT_POLICY_MARGIN: return s->p1 - s->p2;
    default: return NAN;
    }
}

/* splitmix64's finaliser: the one integer hash behind every seeded draw in exitrt
 * (schedules, synthetic weights, corruptions), so draws never depend on call order. */
ERT_HD uint64_t ert_mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

/* A counter-based draw in [0, 1) from (seed, sample index, exit): the same sample gets
 * the same exit stage on every backend and every batch split. */
ERT_HD float ert_hash_uniform(uint64_t seed, uint64_t index, uint64_t exit) {
    const uint64_t x = ert_mix64(seed * 0x9E3779B97F4A7C15ull ^ (index + 0x632BE59BD9B4E019ull) * 0xBF58476D1CE4E5B9ull ^
                                 (exit + 1) * 0x94D049BB133111EBull);
    return (float)(x >> 40) * (1.0f / 16777216.0f);
}

#endif
