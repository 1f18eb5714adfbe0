/* A linear op's GEMMs through oneDNN's matmul, with the weights packed once.
 *
 * Why. With OpenBLAS a row's bits depend on the GEMM's size, so linear.c runs every GEMM
 * on blocks of exactly ERT_CPU_GEMM_ROWS rows: a batch of 1 computes 64 rows, and each
 * call packs its weight range again (worth ~29 rows of compute at K = 1024). oneDNN's
 * brgemm matmul, with one primitive per fixed row count, gives a row the same bits for
 * every row count and every place in the batch (bench/results/2026-11-29-cpu-dnnl-probe:
 * M = 1..300 on nine shapes), and reads weights packed once at creation. So a block of m
 * rows runs as primitives of 64, 32, 16, 8, 4, 2 and 1 rows (m's binary digits), each
 * computing only real rows (bench/NOTES.md, "oneDNN linear ops"); where the smallest
 * primitives give other bits (oneDNN 3.7's 1-row one at K > 1024), the rows below the
 * smallest that agrees run padded to it (min_rows).
 *
 * A GELU op's primitives (linear and conv) also add the bias and apply GELU, as a
 * post-op: oneDNN's vectorised erf is within 4e-7 of the exact GELU, as the formula with
 * glibc's erff is, and ~15x faster (that erff, one value at a time, was a fifth of
 * fmnist-mlp's time); it keeps NaN. relu stays in linear.c and conv.c: oneDNN's maps NaN
 * to 0 (bench/NOTES.md).
 *
 * Only where that holds: every primitive must be brgemm (`brg:` in oneDNN's
 * implementation name; an AVX2-only CPU gets `gemm:jit`, whose bits depend on M), the
 * primitives of an op must share one weight layout, and a check at creation runs the
 * last rows of a 64-row block through every smaller primitive and compares the bits.
 * Otherwise the op keeps OpenBLAS (ert_cpu_mm_new says why, without failing).
 *
 * Threads: oneDNN (Debian's build) uses OpenMP. Primitives are created with this
 * thread's OpenMP thread count set to 1, so that none splits its work (brgemm may split
 * K across threads, which would make the bits depend on the thread count) or starts a
 * team of its own; parallel.c runs the tasks. Each of the backend's threads has its own
 * stream, memory objects and scratchpad (oneDNN's user scratchpad mode: a primitive is
 * then safe to run on several threads at once).
 *
 * Convolutions (ert_cpu_conv_*) run as oneDNN's convolution primitive made for one sample
 * (N = 1) and run sample by sample, each on one thread: no im2col, and a sample's result
 * is that primitive's on that sample, whatever the batch, the sample's place in it or the
 * thread. Only a direct one (brgemm or jit kernels: AVX2 has them too); a convolution that
 * oneDNN would run as a GEMM per sample (some grouped ones) or as reference loops keeps
 * OpenBLAS's. The primitive reads and writes its own layouts (NHWC for one sample on
 * AVX-512, nChw8c on AVX2) in the thread's buffers; oneDNN reorders move a sample in and
 * out, except where a pool follows: it reads the primitive's output as it is (conv.c,
 * ert_cpu_pool_blocked), and only its 4x smaller result is NCHW. relu is applied by conv.c
 * (oneDNN's maps NaN to 0; the CPU backend keeps NaN, as PyTorch), GELU by the primitive.
 *
 * ERT_CPU_GEMM=openblas keeps every linear and conv op on OpenBLAS; ERT_CPU_GEMM=onednn
 * makes an op that cannot use oneDNN fail to be created (tests).
 *
 * Versions: oneDNN 2 (Debian 12) and 3 (Debian 13, Ubuntu 24.04). The C API differs in two
 * places, kept in the few functions after the includes: a memory descriptor is a struct in
 * 2 and a handle to destroy in 3 (here both live in an `mds` set, released together), and
 * 3 makes an op's primitive descriptor in one call where 2 first fills an op descriptor. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

#ifdef _OPENMP
#include <omp.h>
#endif
/* Sets this thread's OpenMP thread count to 1 and returns the count to restore: a
 * primitive made so plans for one thread (none splits its work by the thread count or
 * starts a team of its own), and a reorder run so runs on its caller. */
static int omp_one(void) {
#ifdef _OPENMP
    const int team = omp_get_max_threads();
    omp_set_num_threads(1);
    return team;
#else
    return 1;
#endif
}

static void omp_restore(int team) {
#ifdef _OPENMP
    omp_set_num_threads(team);
#else
    (void)team;
#endif
}

#ifdef ERT_WITH_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>

#if DNNL_VERSION_MAJOR >= 3
typedef const_dnnl_memory_desc_t md_ref; /* a handle */
#else
typedef const dnnl_memory_desc_t *md_ref; /* a struct's address */
#endif

/* The memory descriptors one function makes, released together by mds_free (oneDNN 3
 * handles; oneDNN 2 structs, nothing to release). A set must not move while its md_refs
 * are in use (oneDNN 2's point into it). */
enum { MDS = 32 };
typedef struct mds {
    int n;
    dnnl_memory_desc_t d[MDS];
} mds;

/* *out: a new descriptor of `dims` in the layout `tag`, kept in set. */
static dnnl_status_t md_tag(mds *set, md_ref *out, int ndims, const dnnl_dims_t dims, dnnl_data_type_t type,
                            dnnl_format_tag_t tag) {
    if (set->n == MDS) return dnnl_out_of_memory;
    dnnl_memory_desc_t *d = &set->d[set->n];
#if DNNL_VERSION_MAJOR >= 3
    const dnnl_status_t s = dnnl_memory_desc_create_with_tag(d, ndims, dims, type, tag);
    if (s == dnnl_success) *out = *d;
#else
    const dnnl_status_t s = dnnl_memory_desc_init_by_tag(d, ndims, dims, type, tag);
    if (s == dnnl_success) *out = d;
#endif
    if (s == dnnl_success) set->n++;
    return s;
}

/* *out: a copy of `from` (a primitive descriptor's, which goes with it), kept in set. */
static dnnl_status_t md_copy(mds *set, md_ref *out, md_ref from) {
    if (set->n == MDS) return dnnl_out_of_memory;
    dnnl_memory_desc_t *d = &set->d[set->n];
#if DNNL_VERSION_MAJOR >= 3
    const dnnl_status_t s = dnnl_memory_desc_clone(d, from);
    if (s != dnnl_success) return s;
    *out = *d;
#else
    *d = *from;
    *out = d;
#endif
    set->n++;
    return dnnl_success;
}

static void mds_free(mds *set) {
#if DNNL_VERSION_MAJOR >= 3
    for (int i = 0; i < set->n; ++i) dnnl_memory_desc_destroy(set->d[i]);
#endif
    set->n = 0;
}

static dnnl_engine_t engine;

/* A matmul's primitive descriptor (bias may be NULL). */
static dnnl_status_t matmul_pd(dnnl_primitive_desc_t *pd, md_ref src, md_ref weights, md_ref bias, md_ref dst,
                               const_dnnl_primitive_attr_t attr) {
#if DNNL_VERSION_MAJOR >= 3
    return dnnl_matmul_primitive_desc_create(pd, engine, src, weights, bias, dst, attr);
#else
    dnnl_matmul_desc_t md;
    const dnnl_status_t s = dnnl_matmul_desc_init(&md, src, weights, bias, dst);
    return s == dnnl_success ? dnnl_primitive_desc_create(pd, &md, attr, engine, NULL) : s;
#endif
}

/* A direct convolution's primitive descriptor for inference (bias may be NULL; dilates
 * as oneDNN counts them, 0 = none; the same padding before and after). */
static dnnl_status_t conv_pd(dnnl_primitive_desc_t *pd, md_ref src, md_ref weights, md_ref bias, md_ref dst,
                             const dnnl_dims_t strides, const dnnl_dims_t dilates, const dnnl_dims_t pad,
                             const_dnnl_primitive_attr_t attr) {
#if DNNL_VERSION_MAJOR >= 3
    return dnnl_convolution_forward_primitive_desc_create(pd, engine, dnnl_forward_inference, dnnl_convolution_direct,
                                                          src, weights, bias, dst, strides, dilates, pad, pad, attr);
#else
    dnnl_convolution_desc_t cd;
    const dnnl_status_t s = dnnl_dilated_convolution_forward_desc_init(
        &cd, dnnl_forward_inference, dnnl_convolution_direct, src, weights, bias, dst, strides, dilates, pad, pad);
    return s == dnnl_success ? dnnl_primitive_desc_create(pd, &cd, attr, engine, NULL) : s;
#endif
}

enum { SIZES = 7 }; /* primitives of 64 >> i rows, i < SIZES */
/* The most rows a block's remainder may be padded to (ert_cpu_mm's min_rows). */
enum { MIN_ROWS_MAX = 8 };

/* One column range's width (ERT_CPU_LINEAR_COLS, or the shorter last one): its
 * primitives. */
typedef struct width {
    int n;
    dnnl_primitive_t prim[SIZES];
} width;

/* One thread's memory objects: the source rows (set per call), the destination (its
 * part of the scratch) and the scratchpad. */
typedef struct lane {
    dnnl_stream_t stream;
    dnnl_memory_t src[SIZES], dst[2][SIZES], pad;
    float *xpad; /* MIN_ROWS_MAX rows of the input: a remainder padded to min_rows */
} lane;

struct ert_cpu_mm {
    int in, parts, threads;
    int fused, biased;  /* GELU: the primitives add the bias (if any) and apply GELU */
    int min_rows;       /* the smallest primitive run: a block's last rows < min_rows run as
                           min_rows, padded (oneDNN 3.7's 1-row matmul at K > 1024 gives other
                           bits than its larger ones; rows_agree finds the smallest that agrees) */
    width w[2];         /* w[1]: the last range, when it is narrower */
    dnnl_memory_t *weights; /* per range */
    dnnl_memory_t *bias;    /* per range, when biased */
    lane *lanes;
    float *dst;         /* per thread: ERT_CPU_GEMM_ROWS x ERT_CPU_LINEAR_COLS, then the scratchpad */
    size_t lane_floats;
    void *block;        /* the held block: the weights in the primitives' layout, a range
                           after another, the bias when biased, then dst */
};

static dnnl_status_t engine_status;
static void engine_create(void) { engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0); }

/* The process's CPU engine, made once: 1, or 0 and why not. */
static int engine_ready(char *why, size_t why_len) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, engine_create);
    if (engine_status == dnnl_success) return 1;
    snprintf(why, why_len, "oneDNN: no CPU engine (status %d)", (int)engine_status);
    return 0;
}

#define TRY(call)                                                                                                      \
    do {                                                                                                               \
        const dnnl_status_t s_ = (call);                                                                               \
        if (s_ != dnnl_success) {                                                                                      \
            snprintf(why, why_len, "oneDNN: %s failed (status %d)", #call, (int)s_);                                   \
            goto out;                                                                                                  \
        }                                                                                                              \
    } while (0)

static int width_of(const ert_cpu_mm *m, int part) {
    return part == m->parts - 1 && m->w[1].n ? 1 : 0;
}

/* The primitive of 64 >> i rows of a range on src into dst; 1 when it ran. */
static int run_rows(const ert_cpu_mm *m, const lane *l, int part, int i, const float *src, float *dst) {
    const int wi = width_of(m, part);
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, l->src[i]},
                               {DNNL_ARG_WEIGHTS, m->weights[part]},
                               {DNNL_ARG_DST, l->dst[wi][i]},
                               {DNNL_ARG_SCRATCHPAD, l->pad},
                               {DNNL_ARG_BIAS, m->biased ? m->bias[part] : NULL}};
    return dnnl_memory_set_data_handle(l->src[i], (void *)src) == dnnl_success &&
           dnnl_memory_set_data_handle(l->dst[wi][i], dst) == dnnl_success &&
           dnnl_primitive_execute(m->w[wi].prim[i], l->stream, m->biased ? 5 : 4, args) == dnnl_success;
}

float *ert_cpu_mm_run(const ert_cpu_mm *m, int thread, int part, int rows, const float *x) {
    const int n = m->w[width_of(m, part)].n;
    const lane *l = &m->lanes[thread];
    float *dst = m->dst + (size_t)thread * m->lane_floats;
    int done = 0; /* a multiple of every size run so far: done + size <= 64 below */
    for (int i = 0; i < SIZES && done < rows; ++i) {
        const int size = ERT_CPU_GEMM_ROWS >> i;
        if (rows - done >= size) {
            if (!run_rows(m, l, part, i, x + (size_t)done * m->in, dst + (size_t)done * n)) return NULL;
            done += size;
        }
        if (size == m->min_rows && done < rows) { /* the rest, padded: rows are independent */
            memcpy(l->xpad, x + (size_t)done * m->in, sizeof(float) * (size_t)(rows - done) * m->in);
            if (!run_rows(m, l, part, i, l->xpad, dst + (size_t)done * n)) return NULL;
            done = rows;
        }
    }
    return dst;
}

int ert_cpu_mm_fused(const ert_cpu_mm *m) { return m->fused; }

int ert_cpu_mm_min_rows(const ert_cpu_mm *m) { return m->min_rows; }

void ert_cpu_mm_free(ert_backend *be, ert_cpu_mm *m) {
    if (!m) return;
    for (int t = 0; m->lanes && t < m->threads; ++t) {
        lane *l = &m->lanes[t];
        for (int i = 0; i < SIZES; ++i) {
            dnnl_memory_destroy(l->src[i]);
            dnnl_memory_destroy(l->dst[0][i]);
            dnnl_memory_destroy(l->dst[1][i]);
        }
        dnnl_memory_destroy(l->pad);
        if (l->stream) dnnl_stream_destroy(l->stream);
    }
    for (int p = 0; m->weights && p < m->parts; ++p) dnnl_memory_destroy(m->weights[p]);
    for (int p = 0; m->bias && p < m->parts; ++p) dnnl_memory_destroy(m->bias[p]);
    for (int k = 0; k < 2; ++k)
        for (int i = 0; i < SIZES; ++i) dnnl_primitive_destroy(m->w[k].prim[i]);
    ert_cpu_release(be, m->block);
    free(m->lanes);
    free(m->weights);
    free(m->bias);
    free(m);
}

static dnnl_status_t append_eltwise(dnnl_post_ops_t ops, dnnl_alg_kind_t alg, float alpha, float beta) {
#if DNNL_VERSION_MAJOR >= 3
    return dnnl_post_ops_append_eltwise(ops, alg, alpha, beta);
#else
    return dnnl_post_ops_append_eltwise(ops, 1.0f, alg, alpha, beta);
#endif
}

/* GELU (the exact, erf form) as post-ops in one of two ways, the first that gives GELU's
 * answers here (gelu_check): gelu_erf alone (oneDNN 2), or after a clip of +inf to
 * FLT_MAX (oneDNN 3, whose gelu_erf maps +inf to NaN: 3.2 here, and PyTorch and OpenVINO,
 * which call it, report the same in 2026; its GELU of FLT_MAX is +inf, where 2's is
 * FLT_MAX). The clip leaves every other value, NaN and -inf included, as it was. */
enum { GELU_PLAIN, GELU_CLIPPED, GELU_WAYS };
static int gelu_way = -1; /* gelu_check's answer: a way, or -1 for none */

static dnnl_status_t add_gelu_way(dnnl_primitive_attr_t attr, int way) {
    dnnl_post_ops_t ops;
    dnnl_status_t s = dnnl_post_ops_create(&ops);
    if (s != dnnl_success) return s;
    if (way == GELU_CLIPPED) s = append_eltwise(ops, dnnl_eltwise_clip, -INFINITY, FLT_MAX);
    if (s == dnnl_success) s = append_eltwise(ops, dnnl_eltwise_gelu_erf, 0.0f, 0.0f);
    if (s == dnnl_success) s = dnnl_primitive_attr_set_post_ops(attr, ops); /* a copy */
    dnnl_post_ops_destroy(ops);
    return s;
}

/* Adds GELU to attr the way gelu_check chose (call gelu_works first). */
static dnnl_status_t add_gelu(dnnl_primitive_attr_t attr) { return add_gelu_way(attr, gelu_way); }

static char gelu_why[256];
/* 1 when a GELU matmul made `way` gives +inf, -inf, NaN and finite values GELU's answers:
 * +inf, NaN (x * Phi(x) at -inf is -inf * 0, as op_math.h has it), NaN and the exact
 * value within 1e-5; else 0 and why in gelu_why. A 4 x 1 x 16 matmul (brgemm, as the ops'). */
static int gelu_right(int way) {
    enum { ROWS = 4, N = 16 };
    static const float x[ROWS] = {INFINITY, -INFINITY, NAN, 1.0f};
    static float w[N], y[ROWS * N];
    for (int n = 0; n < N; ++n) w[n] = 0.25f * (float)(n + 1);
    snprintf(gelu_why, sizeof gelu_why, "oneDNN: a GELU matmul could not be made or run");
    const dnnl_dims_t sdims = {ROWS, 1}, wdims = {1, N}, ddims = {ROWS, N};
    mds set = {0};
    md_ref sd, wd, dd;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t mem[3] = {NULL, NULL, NULL};
    dnnl_stream_t stream = NULL;
    int ok = md_tag(&set, &sd, 2, sdims, dnnl_f32, dnnl_ab) == dnnl_success &&
             md_tag(&set, &wd, 2, wdims, dnnl_f32, dnnl_ab) == dnnl_success &&
             md_tag(&set, &dd, 2, ddims, dnnl_f32, dnnl_ab) == dnnl_success &&
             dnnl_primitive_attr_create(&attr) == dnnl_success && add_gelu_way(attr, way) == dnnl_success &&
             matmul_pd(&pd, sd, wd, NULL, dd, attr) == dnnl_success &&
             dnnl_primitive_create(&prim, pd) == dnnl_success &&
             dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) == dnnl_success &&
             dnnl_memory_create(&mem[0], sd, engine, (void *)x) == dnnl_success &&
             dnnl_memory_create(&mem[1], wd, engine, w) == dnnl_success &&
             dnnl_memory_create(&mem[2], dd, engine, y) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]}};
        ok = dnnl_primitive_execute(prim, stream, 3, args) == dnnl_success && dnnl_stream_wait(stream) == dnnl_success;
    }
    for (int i = 0; ok && i < ROWS * N; ++i) {
        const int r = i / N;
        const double z = (double)w[i % N];
        const double want = r == 0 ? INFINITY : r == 3 ? 0.5 * z * (1.0 + erf(z / sqrt(2.0))) : NAN;
        const float got = y[i];
        ok = isnan(want)   ? isnan(got)
             : isinf(want) ? isinf(got) && got > 0
                           : fabs(got - want) <= 1e-5 + 1e-4 * fabs(want);
        if (!ok)
            snprintf(gelu_why, sizeof gelu_why, "oneDNN %d.%d: its GELU of %g is %g, not %g%s", DNNL_VERSION_MAJOR,
                     DNNL_VERSION_MINOR, r == 3 ? z : (double)x[r] * z, (double)got, want,
                     way == GELU_CLIPPED ? " (after a clip to FLT_MAX)" : "");
    }
    for (int k = 0; k < 3; ++k) dnnl_memory_destroy(mem[k]);
    if (stream) dnnl_stream_destroy(stream);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    mds_free(&set);
    return ok;
}

static void gelu_check(void) {
    for (int way = 0; way < GELU_WAYS && gelu_way < 0; ++way)
        if (gelu_right(way)) gelu_way = way;
}

/* 1 when oneDNN's GELU post-ops give GELU's answers one way (gelu_check, once per
 * process), else 0 and why (unless why is NULL). */
static int gelu_works(char *why, size_t why_len) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, gelu_check);
    if (gelu_way >= 0) return 1;
    if (why) snprintf(why, why_len, "%s", gelu_why);
    return 0;
}

/* The primitives of one width (fused: with the bias if biased, and GELU as a post-op);
 * their weight layout in *wd, kept in `keep` (every one must share it), and the largest
 * scratchpad in *pad. 0, or why not (in why). */
static int make_width(width *w, int in, int fused, int biased, mds *keep, md_ref *wd, size_t *pad, char *why,
                      size_t why_len) {
    int ok = 0;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    mds set = {0};
    TRY(dnnl_primitive_attr_create(&attr));
    TRY(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    if (fused) TRY(add_gelu(attr));
    for (int i = 0; i < SIZES; ++i) {
        md_ref sd, dd, any, bd;
        const dnnl_dims_t s = {ERT_CPU_GEMM_ROWS >> i, in}, wdims = {in, w->n}, d = {ERT_CPU_GEMM_ROWS >> i, w->n},
                          bdims = {1, w->n};
        mds_free(&set);
        TRY(md_tag(&set, &sd, 2, s, dnnl_f32, dnnl_ab));
        TRY(md_tag(&set, &dd, 2, d, dnnl_f32, dnnl_ab));
        TRY(md_tag(&set, &any, 2, wdims, dnnl_f32, dnnl_format_tag_any));
        TRY(md_tag(&set, &bd, 2, bdims, dnnl_f32, dnnl_ab));
        TRY(matmul_pd(&pd, sd, any, biased ? bd : NULL, dd, attr));
        const char *impl = "";
        TRY(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
        if (strncmp(impl, "brg", 3) != 0) {
            snprintf(why, why_len, "oneDNN: matmul %d x %d x %d runs on '%s', not brgemm (its bits depend on the rows)",
                     ERT_CPU_GEMM_ROWS >> i, in, w->n, impl);
            goto out;
        }
        const md_ref q = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        if (i == 0) TRY(md_copy(keep, wd, q));
        else if (!dnnl_memory_desc_equal(*wd, q)) {
            snprintf(why, why_len, "oneDNN: matmul %d x %d x %d wants another weight layout than 64 rows",
                     ERT_CPU_GEMM_ROWS >> i, in, w->n);
            goto out;
        }
        const md_ref sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        const size_t p = sp ? dnnl_memory_desc_get_size(sp) : 0;
        if (p > *pad) *pad = p;
        TRY(dnnl_primitive_create(&w->prim[i], pd));
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
    }
    ok = 1;
out:
    mds_free(&set);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return ok;
}

/* Every smaller primitive gives the last rows of a 64-row block the block's bits. */
static int rows_agree(const ert_cpu_mm *m, int part, const float *x, char *why, size_t why_len) {
    const int n = m->w[width_of(m, part)].n;
    float *block = malloc(sizeof(float) * ERT_CPU_GEMM_ROWS * (size_t)n);
    if (!block) {
        snprintf(why, why_len, "out of memory checking the oneDNN matmul");
        return 0;
    }
    const float *all = ert_cpu_mm_run(m, 0, part, ERT_CPU_GEMM_ROWS, x);
    int ok = all != NULL;
    if (ok) memcpy(block, all, sizeof(float) * ERT_CPU_GEMM_ROWS * (size_t)n);
    else snprintf(why, why_len, "oneDNN: a matmul of %d x %d x %d failed to run", ERT_CPU_GEMM_ROWS, m->in, n);
    for (int rows = ERT_CPU_GEMM_ROWS - 1; ok && rows >= 1; rows /= 2) {
        const int first = ERT_CPU_GEMM_ROWS - rows;
        const float *got = ert_cpu_mm_run(m, 0, part, rows, x + (size_t)first * m->in);
        ok = got && memcmp(got, block + (size_t)first * n, sizeof(float) * (size_t)rows * n) == 0;
        if (!ok)
            snprintf(why, why_len, "oneDNN: a row's bits depend on the rows run with it (%d x %d x %d)", rows, m->in,
                     n);
    }
    free(block);
    return ok;
}

static ert_status mm_new(ert_backend *be, const ert_op_desc *d, int threads, ert_cpu_mm **out, char *why,
                         size_t why_len) {
    if (!engine_ready(why, why_len)) return ERT_OK;
    const char *name = d->name ? d->name : "linear";
    ert_cpu_mm *m = calloc(1, sizeof *m);
    ert_status st = ERT_OK;
    int ok = 0;
    float *probe = NULL;
    dnnl_memory_t plain = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t reorder = NULL;
    if (!m) return ert_error(ERT_ERR_OUT_OF_MEMORY, "cpu backend: out of memory preparing '%s'", name);
    m->in = d->in;
    m->threads = threads;
    /* oneDNN's GELU keeps NaN, as linear.c does (its relu does not); where it fails
     * gelu_works, linear.c applies GELU after the matmul, as for relu */
    m->fused = d->act == ERT_ACT_GELU && gelu_works(NULL, 0);
    m->biased = m->fused && d->bias;
    m->parts = (d->out + ERT_CPU_LINEAR_COLS - 1) / ERT_CPU_LINEAR_COLS;
    const int last = d->out - (m->parts - 1) * ERT_CPU_LINEAR_COLS;
    m->w[0].n = m->parts > 1 ? ERT_CPU_LINEAR_COLS : last;
    m->w[1].n = m->parts > 1 && last < ERT_CPU_LINEAR_COLS ? last : 0;
    mds set = {0}; /* wd, then the lanes', the plain weights' and the bias's */
    md_ref wd[2] = {NULL, NULL};
    size_t pad = 0;
    for (int k = 0; k < 2; ++k)
        if (m->w[k].n && !make_width(&m->w[k], d->in, m->fused, m->biased, &set, &wd[k], &pad, why, why_len)) goto out;
    /* one block: the packed weights of every range, the bias (fused), then each
     * thread's lane (its destination rows and its scratchpad), 64-byte aligned */
    const size_t full = (dnnl_memory_desc_get_size(wd[0]) + 63) & ~(size_t)63;
    const size_t tail = m->w[1].n ? (dnnl_memory_desc_get_size(wd[1]) + 63) & ~(size_t)63 : 0;
    const size_t weights = full * (size_t)(m->parts - (m->w[1].n ? 1 : 0)) + tail;
    const size_t packed = weights + (m->biased ? ((size_t)d->out * sizeof(float) + 63) & ~(size_t)63 : 0);
    /* a lane: its destination rows, its scratchpad, then MIN_ROWS_MAX input rows (xpad) */
    const size_t pad_floats = (pad + 63) / 64 * 16;
    const size_t each = (size_t)ERT_CPU_GEMM_ROWS * ERT_CPU_LINEAR_COLS + pad_floats + (size_t)MIN_ROWS_MAX * d->in;
    m->lane_floats = (each + 15) / 16 * 16; /* lanes 64-byte aligned */
    st = ert_cpu_hold(be, packed + m->lane_floats * sizeof(float) * (size_t)threads,
                      "the weights, packed for oneDNN, and 64 KB or more of scratch per thread: close other sessions, "
                      "use fewer threads or give the process more memory",
                      &m->block);
    if (st) goto out;
    m->dst = (float *)((char *)m->block + packed);
    m->weights = calloc((size_t)m->parts, sizeof *m->weights);
    m->bias = calloc((size_t)m->parts, sizeof *m->bias);
    m->lanes = calloc((size_t)threads, sizeof *m->lanes);
    if (!m->weights || !m->bias || !m->lanes) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "cpu backend: out of memory preparing '%s'", name);
        goto out;
    }
    /* every lane's memory objects have the same descriptors */
    md_ref sd[SIZES], dd[2][SIZES], padd;
    for (int i = 0; i < SIZES; ++i) {
        const dnnl_dims_t s = {ERT_CPU_GEMM_ROWS >> i, d->in};
        TRY(md_tag(&set, &sd[i], 2, s, dnnl_f32, dnnl_ab));
        for (int k = 0; k < 2; ++k) {
            const dnnl_dims_t dims = {ERT_CPU_GEMM_ROWS >> i, m->w[k].n};
            if (m->w[k].n) TRY(md_tag(&set, &dd[k][i], 2, dims, dnnl_f32, dnnl_ab));
        }
    }
    const dnnl_dims_t pdims = {(dnnl_dim_t)(pad ? pad : 1)};
    TRY(md_tag(&set, &padd, 1, pdims, dnnl_u8, dnnl_a));
    for (int t = 0; t < threads; ++t) {
        lane *l = &m->lanes[t];
        float *dst = m->dst + (size_t)t * m->lane_floats;
        TRY(dnnl_stream_create(&l->stream, engine, dnnl_stream_default_flags));
        for (int i = 0; i < SIZES; ++i) {
            TRY(dnnl_memory_create(&l->src[i], sd[i], engine, DNNL_MEMORY_NONE));
            for (int k = 0; k < 2; ++k)
                if (m->w[k].n) TRY(dnnl_memory_create(&l->dst[k][i], dd[k][i], engine, dst));
        }
        TRY(dnnl_memory_create(&l->pad, padd, engine, dst + (size_t)ERT_CPU_GEMM_ROWS * ERT_CPU_LINEAR_COLS));
        l->xpad = dst + (size_t)ERT_CPU_GEMM_ROWS * ERT_CPU_LINEAR_COLS + pad_floats;
    }
    /* each range's rows of W (out x in, row-major) are its (in x n) weights in layout ba */
    md_ref plain_d[2] = {NULL, NULL}, bias_d[2] = {NULL, NULL}; /* per width */
    for (int k = 0; k < 2; ++k) {
        const dnnl_dims_t dims = {d->in, m->w[k].n}, bdims = {1, m->w[k].n};
        if (m->w[k].n) TRY(md_tag(&set, &plain_d[k], 2, dims, dnnl_f32, dnnl_ba));
        if (m->w[k].n && m->biased) TRY(md_tag(&set, &bias_d[k], 2, bdims, dnnl_f32, dnnl_ab));
    }
    for (int p = 0; p < m->parts; ++p) {
        const int k = width_of(m, p);
        const float *wp = d->weight + (size_t)p * ERT_CPU_LINEAR_COLS * d->in;
        TRY(dnnl_memory_create(&plain, plain_d[k], engine, (void *)wp));
        TRY(dnnl_memory_create(&m->weights[p], wd[k], engine, (char *)m->block + (size_t)p * full));
        TRY(dnnl_reorder_primitive_desc_create(&rpd, plain_d[k], engine, wd[k], engine, NULL));
        TRY(dnnl_primitive_create(&reorder, rpd));
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, m->weights[p]}};
        TRY(dnnl_primitive_execute(reorder, m->lanes[0].stream, 2, args));
        TRY(dnnl_stream_wait(m->lanes[0].stream));
        dnnl_primitive_destroy(reorder), reorder = NULL;
        dnnl_primitive_desc_destroy(rpd), rpd = NULL;
        dnnl_memory_destroy(plain), plain = NULL;
        if (m->biased) { /* the range's bias, (1 x n) */
            float *b = (float *)((char *)m->block + weights) + (size_t)p * ERT_CPU_LINEAR_COLS;
            memcpy(b, d->bias + (size_t)p * ERT_CPU_LINEAR_COLS, sizeof(float) * (size_t)m->w[k].n);
            TRY(dnnl_memory_create(&m->bias[p], bias_d[k], engine, b));
        }
    }
    /* the check's rows: the op's own weights as inputs where they fit, so its values have
     * the model's scale (any values would do) */
    probe = malloc(sizeof(float) * ERT_CPU_GEMM_ROWS * (size_t)d->in);
    if (!probe) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "cpu backend: out of memory preparing '%s'", name);
        goto out;
    }
    const size_t nw = (size_t)d->out * d->in;
    for (size_t i = 0; i < (size_t)ERT_CPU_GEMM_ROWS * d->in; ++i)
        probe[i] = d->weight[(i * 7919u) % nw] + (float)(i % 13) * 0.0625f;
    /* the smallest primitive whose rows agree with the 64-row one's (1 with oneDNN 2; 2 for
     * oneDNN 3.7's matmuls of K > 1024), the remainder padded to it; ERT_ONEDNN_MIN_ROWS
     * (1, 2, 4 or 8) starts the search higher, for the tests of the padded path */
    int from = 1;
    const char *env = getenv("ERT_ONEDNN_MIN_ROWS");
    if (env && *env) {
        char *end;
        const long v = strtol(env, &end, 10);
        if (*end || (v != 1 && v != 2 && v != 4 && v != MIN_ROWS_MAX)) {
            st = ert_error(ERT_ERR_INVALID_ARGUMENT, "ERT_ONEDNN_MIN_ROWS='%s': expected 1, 2, 4 or 8", env);
            goto out;
        }
        from = (int)v;
    }
    for (int r = from; r <= MIN_ROWS_MAX && !ok; r *= 2) {
        m->min_rows = r;
        ok = rows_agree(m, 0, probe, why, why_len) &&
             (m->parts == 1 || rows_agree(m, m->parts - 1, probe, why, why_len));
    }
out:
    mds_free(&set);
    free(probe);
    if (reorder) dnnl_primitive_destroy(reorder);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (plain) dnnl_memory_destroy(plain);
    if (st || !ok) {
        ert_cpu_mm_free(be, m);
        m = NULL;
    }
    *out = m;
    return st;
}

/* ---------------------------------------------------------------- convolutions */

/* One thread's memory objects: the sample in and out in the op's layout (plain NCHW,
 * handles set per call), the primitive's layouts of them in the thread's part of the
 * held block, and its scratchpad. */
typedef struct conv_lane {
    dnnl_stream_t stream;
    dnnl_memory_t x, src, dst, y, pad;
    const float *out; /* dst's buffer */
} conv_lane;

struct ert_cpu_conv {
    int threads;
    int dst_block; /* the output layout's channel block (conv_block), or 0 */
    dnnl_primitive_t conv, to_src, to_y; /* the convolution, then reorders into and out of it */
    dnnl_memory_t weights, bias;         /* packed in the held block; bias NULL without one */
    conv_lane *lanes;
    void *block; /* held: the weights packed, the bias, then each thread's src, dst and scratchpad */
};

/* The sample moved into the primitive's layout and convolved (y NULL), or then moved out
 * into y (NCHW); 1 when every oneDNN call ran. */
static int conv_exec(const ert_cpu_conv *c, int thread, const float *x, float *y) {
    const conv_lane *l = &c->lanes[thread];
    const int team = omp_one(); /* the reorders run on this thread alone, as the convolution does */
    dnnl_exec_arg_t in[2] = {{DNNL_ARG_FROM, l->x}, {DNNL_ARG_TO, l->src}};
    dnnl_exec_arg_t run[5] = {{DNNL_ARG_SRC, l->src},
                              {DNNL_ARG_WEIGHTS, c->weights},
                              {DNNL_ARG_DST, l->dst},
                              {DNNL_ARG_SCRATCHPAD, l->pad},
                              {DNNL_ARG_BIAS, c->bias}};
    dnnl_exec_arg_t out[2] = {{DNNL_ARG_FROM, l->dst}, {DNNL_ARG_TO, l->y}};
    const int ok = dnnl_memory_set_data_handle(l->x, (void *)x) == dnnl_success &&
                   dnnl_primitive_execute(c->to_src, l->stream, 2, in) == dnnl_success &&
                   dnnl_primitive_execute(c->conv, l->stream, c->bias ? 5 : 4, run) == dnnl_success &&
                   (!y || (dnnl_memory_set_data_handle(l->y, y) == dnnl_success &&
                           dnnl_primitive_execute(c->to_y, l->stream, 2, out) == dnnl_success));
    omp_restore(team);
    return ok;
}

int ert_cpu_conv_run(const ert_cpu_conv *c, int thread, const float *x, float *y) {
    return conv_exec(c, thread, x, y) ? 0 : -1;
}

const float *ert_cpu_conv_run_blocked(const ert_cpu_conv *c, int thread, const float *x) {
    return c->dst_block && conv_exec(c, thread, x, NULL) ? c->lanes[thread].out : NULL;
}

int ert_cpu_conv_dst_block(const ert_cpu_conv *c) { return c ? c->dst_block : 0; }

void ert_cpu_onednn_version(char *buf, size_t len) {
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, len, "oneDNN %d.%d.%d (built against %d.%d)", v->major, v->minor, v->patch, DNNL_VERSION_MAJOR,
             DNNL_VERSION_MINOR);
}

/* The channel block B of a sample's layout `d` (dims 1, C, H, W) when it is one the pool
 * after the convolution can read (conv.c's ert_cpu_pool_blocked): NHWC (B = C), nChw16c,
 * nChw8c, nChw4c (B = 16, 8, 4; channels padded to a whole block) or NCHW (B = 1); else 0. */
static int conv_block(md_ref d, const dnnl_dims_t dims) {
    static const struct {
        dnnl_format_tag_t tag;
        int block;
    } known[] = {{dnnl_acdb, 0}, {dnnl_aBcd16b, 16}, {dnnl_aBcd8b, 8}, {dnnl_aBcd4b, 4}, {dnnl_abcd, 1}};
    int block = 0;
    for (size_t k = 0; k < sizeof known / sizeof known[0] && !block; ++k) {
        mds set = {0};
        md_ref t;
        if (md_tag(&set, &t, 4, dims, dnnl_f32, known[k].tag) == dnnl_success && dnnl_memory_desc_equal(d, t))
            block = known[k].block ? known[k].block : (int)dims[1];
        mds_free(&set);
    }
    return block;
}

void ert_cpu_conv_free(ert_backend *be, ert_cpu_conv *c) {
    if (!c) return;
    for (int t = 0; c->lanes && t < c->threads; ++t) {
        conv_lane *l = &c->lanes[t];
        dnnl_memory_destroy(l->x);
        dnnl_memory_destroy(l->src);
        dnnl_memory_destroy(l->dst);
        dnnl_memory_destroy(l->y);
        dnnl_memory_destroy(l->pad);
        if (l->stream) dnnl_stream_destroy(l->stream);
    }
    dnnl_memory_destroy(c->weights);
    dnnl_memory_destroy(c->bias);
    dnnl_primitive_destroy(c->conv);
    dnnl_primitive_destroy(c->to_src);
    dnnl_primitive_destroy(c->to_y);
    ert_cpu_release(be, c->block);
    free(c->lanes);
    free(c);
}

static size_t up64(size_t n) { return (n + 63) & ~(size_t)63; }

/* A reorder primitive from `from` to `to`, with the scratchpad it needs in *pad (user
 * mode: run on several threads at once, one that needs any would share it). */
static dnnl_status_t reorder_new(md_ref from, md_ref to, dnnl_primitive_t *out, size_t *pad) {
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = dnnl_primitive_attr_create(&attr);
    if (s == dnnl_success) s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success) s = dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, attr);
    if (s == dnnl_success) {
        const md_ref sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        *pad = sp ? dnnl_memory_desc_get_size(sp) : 0;
        s = dnnl_primitive_create(out, pd);
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return s;
}

static ert_status conv_new(ert_backend *be, const ert_op_desc *d, int threads, ert_cpu_conv **out, char *why,
                           size_t why_len) {
    if (!engine_ready(why, why_len)) return ERT_OK;
    const ert_conv_geom *g = &d->conv;
    const char *name = d->name ? d->name : "conv2d";
    ert_cpu_conv *c = calloc(1, sizeof *c);
    if (!c) return ert_error(ERT_ERR_OUT_OF_MEMORY, "cpu backend: out of memory preparing '%s'", name);
    c->threads = threads;
    ert_status st = ERT_OK;
    int ok = 0;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t pack = NULL;
    dnnl_memory_t plain = NULL;
    mds set = {0};
    /* the op's layouts: one sample, NCHW; weights (O, I/g, kh, kw), grouped as (g, O/g, I/g, kh, kw) */
    md_ref xd, yd, wd, bd, any_s, any_d, any_w, pdsc;
    const dnnl_dims_t xdims = {1, g->in_c, g->in_h, g->in_w}, ydims = {1, g->out_c, g->out_h, g->out_w};
    const dnnl_dims_t w4 = {g->out_c, g->in_c, g->kh, g->kw},
                      w5 = {g->groups, g->out_c / g->groups, g->in_c / g->groups, g->kh, g->kw}, bdims = {g->out_c};
    const dnnl_dims_t strides = {g->sh, g->sw}, dilates = {g->dh - 1, g->dw - 1}, pad = {g->ph, g->pw};
    const int grouped = g->groups > 1;
    TRY(md_tag(&set, &xd, 4, xdims, dnnl_f32, dnnl_nchw));
    TRY(md_tag(&set, &yd, 4, ydims, dnnl_f32, dnnl_nchw));
    TRY(md_tag(&set, &wd, grouped ? 5 : 4, grouped ? w5 : w4, dnnl_f32, grouped ? dnnl_goihw : dnnl_oihw));
    TRY(md_tag(&set, &bd, 1, bdims, dnnl_f32, dnnl_x));
    TRY(md_tag(&set, &any_s, 4, xdims, dnnl_f32, dnnl_format_tag_any));
    TRY(md_tag(&set, &any_d, 4, ydims, dnnl_f32, dnnl_format_tag_any));
    TRY(md_tag(&set, &any_w, grouped ? 5 : 4, grouped ? w5 : w4, dnnl_f32, dnnl_format_tag_any));
    TRY(dnnl_primitive_attr_create(&attr));
    TRY(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    if (d->act == ERT_ACT_GELU && !gelu_works(why, why_len)) goto out; /* conv.c applies relu only */
    if (d->act == ERT_ACT_GELU) TRY(add_gelu(attr));                    /* relu stays conv.c's */
    TRY(conv_pd(&pd, any_s, any_w, d->bias ? bd : NULL, any_d, strides, dilates, pad, attr));
    const char *impl = "";
    TRY(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
    const char *kind = strncmp(impl, "x64:", 4) == 0 ? impl + 4 : impl;
    if (strncmp(kind, "brg", 3) != 0 && strncmp(kind, "brdgmm", 6) != 0 && strncmp(kind, "jit", 3) != 0) {
        /* gemm: im2col and a GEMM per sample; ref: loops */
        snprintf(why, why_len, "oneDNN: convolution runs on '%s', not a direct one", impl);
        goto out;
    }
    /* the primitive's own layouts: valid while pd is */
    const md_ref sd = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const md_ref dd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const md_ref pw = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const md_ref sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    const size_t wbytes = up64(dnnl_memory_desc_get_size(pw)), bbytes = up64(sizeof(float) * (size_t)g->out_c);
    const size_t sbytes = up64(dnnl_memory_desc_get_size(sd)), dbytes = up64(dnnl_memory_desc_get_size(dd));
    const size_t pbytes = up64(sp ? dnnl_memory_desc_get_size(sp) : 0) + 64, each = sbytes + dbytes + pbytes;
    st = ert_cpu_hold(be, wbytes + bbytes + each * (size_t)threads,
                      "the weights, packed for oneDNN, and a sample's buffers per thread: close other sessions, use "
                      "fewer threads or give the process more memory",
                      &c->block);
    if (st) goto out;
    char *block = c->block;
    TRY(dnnl_primitive_create(&c->conv, pd));
    size_t in_pad = 0, out_pad = 0, pack_pad = 0;
    TRY(reorder_new(xd, sd, &c->to_src, &in_pad));
    TRY(reorder_new(dd, yd, &c->to_y, &out_pad));
    if (in_pad || out_pad) {
        snprintf(why, why_len, "oneDNN: a reorder to or from the convolution's layout needs a scratchpad");
        goto out;
    }
    TRY(dnnl_memory_create(&c->weights, pw, engine, block));
    if (d->bias) {
        memcpy(block + wbytes, d->bias, sizeof(float) * (size_t)g->out_c);
        TRY(dnnl_memory_create(&c->bias, bd, engine, block + wbytes));
    }
    c->lanes = calloc((size_t)threads, sizeof *c->lanes);
    if (!c->lanes) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "cpu backend: out of memory preparing '%s'", name);
        goto out;
    }
    const dnnl_dims_t pdims = {(dnnl_dim_t)pbytes};
    TRY(md_tag(&set, &pdsc, 1, pdims, dnnl_u8, dnnl_a));
    for (int t = 0; t < threads; ++t) {
        conv_lane *l = &c->lanes[t];
        char *mine = block + wbytes + bbytes + each * (size_t)t;
        TRY(dnnl_stream_create(&l->stream, engine, dnnl_stream_default_flags));
        TRY(dnnl_memory_create(&l->x, xd, engine, DNNL_MEMORY_NONE));
        TRY(dnnl_memory_create(&l->src, sd, engine, mine));
        TRY(dnnl_memory_create(&l->dst, dd, engine, mine + sbytes));
        TRY(dnnl_memory_create(&l->y, yd, engine, DNNL_MEMORY_NONE));
        TRY(dnnl_memory_create(&l->pad, pdsc, engine, mine + sbytes + dbytes));
        l->out = (const float *)(mine + sbytes);
    }
    c->dst_block = conv_block(dd, ydims);
    /* the weights, packed once */
    TRY(dnnl_memory_create(&plain, wd, engine, (void *)d->weight));
    TRY(reorder_new(wd, pw, &pack, &pack_pad));
    if (pack_pad) {
        snprintf(why, why_len, "oneDNN: packing the convolution's weights needs a scratchpad");
        goto out;
    }
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, c->weights}};
    TRY(dnnl_primitive_execute(pack, c->lanes[0].stream, 2, args));
    TRY(dnnl_stream_wait(c->lanes[0].stream));
    ok = 1;
out:
    mds_free(&set);
    if (pack) dnnl_primitive_destroy(pack);
    if (plain) dnnl_memory_destroy(plain);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (st || !ok) {
        ert_cpu_conv_free(be, c);
        c = NULL;
    }
    *out = c;
    return st;
}

#else /* built without oneDNN */

float *ert_cpu_mm_run(const ert_cpu_mm *m, int thread, int part, int rows, const float *x) {
    (void)m, (void)thread, (void)part, (void)rows, (void)x;
    return NULL;
}

int ert_cpu_mm_fused(const ert_cpu_mm *m) {
    (void)m;
    return 0;
}

int ert_cpu_mm_min_rows(const ert_cpu_mm *m) {
    (void)m;
    return 1;
}

void ert_cpu_mm_free(ert_backend *be, ert_cpu_mm *m) { (void)be, (void)m; }

static ert_status mm_new(ert_backend *be, const ert_op_desc *d, int threads, ert_cpu_mm **out, char *why,
                         size_t why_len) {
    (void)be, (void)d, (void)threads, (void)out;
    snprintf(why, why_len, "built without oneDNN");
    return ERT_OK;
}

int ert_cpu_conv_run(const ert_cpu_conv *c, int thread, const float *x, float *y) {
    (void)c, (void)thread, (void)x, (void)y;
    return -1;
}

const float *ert_cpu_conv_run_blocked(const ert_cpu_conv *c, int thread, const float *x) {
    (void)c, (void)thread, (void)x;
    return NULL;
}

int ert_cpu_conv_dst_block(const ert_cpu_conv *c) {
    (void)c;
    return 0;
}

void ert_cpu_onednn_version(char *buf, size_t len) { snprintf(buf, len, "oneDNN not built in"); }

void ert_cpu_conv_free(ert_backend *be, ert_cpu_conv *c) { (void)be, (void)c; }

static ert_status conv_new(ert_backend *be, const ert_op_desc *d, int threads, ert_cpu_conv **out, char *why,
                           size_t why_len) {
    (void)be, (void)d, (void)threads, (void)out;
    snprintf(why, why_len, "built without oneDNN");
    return ERT_OK;
}

#endif

/* The op's oneDNN object (a linear op: *mm; a convolution: *conv), made with this
 * thread's OpenMP count at 1, or NULL and why not; ERT_CPU_GEMM=openblas skips it,
 * ERT_CPU_GEMM=onednn turns a why-not into an error, another value is refused. */
static ert_status make(ert_backend *be, const ert_op_desc *d, int threads, ert_cpu_mm **mm, ert_cpu_conv **conv,
                       char *why, size_t why_len) {
    const char *env = getenv("ERT_CPU_GEMM");
    const int want = env && strcmp(env, "onednn") == 0;
    if (env && *env && !want && strcmp(env, "openblas") != 0)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "ERT_CPU_GEMM '%s': expected onednn or openblas", env);
    if (env && strcmp(env, "openblas") == 0) {
        snprintf(why, why_len, "ERT_CPU_GEMM=openblas");
        return ERT_OK;
    }
    if (!d->weight) { /* nothing to pack: the OpenBLAS path copes */
        snprintf(why, why_len, "no weights");
        return ERT_OK;
    }
    const int team = omp_one();
    const ert_status st = mm ? mm_new(be, d, threads, mm, why, why_len) : conv_new(be, d, threads, conv, why, why_len);
    omp_restore(team);
    if (!st && !(mm ? (void *)*mm : (void *)*conv) && want)
        return ert_error(ERT_ERR_UNSUPPORTED, "cpu backend: '%s' cannot run on oneDNN (ERT_CPU_GEMM=onednn): %s",
                         d->name ? d->name : mm ? "linear" : "conv2d", why);
    return st;
}

ert_status ert_cpu_mm_new(ert_backend *be, const ert_op_desc *d, int threads, ert_cpu_mm **out, char *why,
                          size_t why_len) {
    *out = NULL;
    return make(be, d, threads, out, NULL, why, why_len);
}

ert_status ert_cpu_conv_new(ert_backend *be, const ert_op_desc *d, int threads, ert_cpu_conv **out, char *why,
                            size_t why_len) {
    *out = NULL;
    return make(be, d, threads, NULL, out, why, why_len);
}
