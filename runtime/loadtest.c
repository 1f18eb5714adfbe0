/* The load generator: arrivals on the generator's own clock, a FIFO queue with dynamic
 * batching, early answers, the SLO controller and the peak search, over two servers:
 * sessions on worker threads in real time, or a service-time model in virtual time.
 *
 * One dispatcher loop serves both servers. It only ever asks the server four things:
 * the time now, start this batch on that stream, wait until a time or until a batch is
 * done, and which batches are done. The simulated server answers them by moving a
 * virtual clock from event to event; the real one with CLOCK_MONOTONIC and a condition
 * variable its workers signal. So the batching rules and the bookkeeping the tests check
 * on the simulated server are the ones the real server runs. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "error.h"
#include "exitrt/exitrt.h"

#define MAX_POINTS 64
#define PATIENCE_CAP 64

enum { SRV_SIM = 1, SRV_REAL = 2 };
/* A job is one stream's batch: IDLE -> ASSIGNED (dispatcher) -> DONE (worker, or the
 * simulated clock passing its end) -> IDLE (dispatcher, once read). */
enum { JOB_IDLE = 0, JOB_ASSIGNED, JOB_DONE };

typedef struct lt_job {
    int state;
    int n, point;
    int64_t batch;
    int64_t *req;      /* [max_batch] request numbers */
    int64_t *sample;   /* [max_batch] input samples */
    double start_ms;   /* the stream took the batch */
    double end_ms;     /* the batch's results were all back */
    double *ready_ms;  /* [max_batch] each request's exit-ready time, from the run's start */
    int32_t *exit, *pred;
    int8_t *correct;
    ert_status status; /* a real run's failure, with its message */
    char msg[512];
} lt_job;

typedef struct lt_worker {
    ert_load_server *srv;
    int stream;
    pthread_t thread;
    int started;
    pthread_cond_t cv;
    int cv_init;
    ert_session *session;
    float *x;
    int32_t *labels, *pred, *exit;
    float *conf;
} lt_worker;

struct ert_load_server {
    int kind, streams, max_batch, num_points, num_exits;
    int64_t n_clean, n_shift;
    lt_job *jobs;
    double t0_abs_ms; /* real: CLOCK_MONOTONIC at the run's start */
    double vnow;      /* simulated: the virtual clock */
    /* simulated */
    int num_stages;
    double batch_ms, stage_ms[ERT_MAX_EXITS], row_ms[ERT_MAX_EXITS];
    int32_t *exits;
    uint8_t *correct;
    /* real */
    const ert_model *model;
    const ert_dataset *data, *shifted;
    const ert_policy *points[MAX_POINTS];
    int have_labels;
    lt_worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv_done;
    int sync_init, quit;
};

static double mono_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

/* ---------------------------------------------------------------- random numbers */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static double uniform01(uint64_t *state) { return (double)(splitmix64(state) >> 11) * 0x1.0p-53; }

/* ---------------------------------------------------------------- servers */

ert_load_server_options ert_load_server_options_default(void) {
    ert_load_server_options o = {.session = ert_session_options_default(), .streams = 1, .warmup = 3};
    o.session.mode = ERT_MODE_COMPACT;
    o.session.max_batch = 64;
    return o;
}

int ert_load_server_streams(const ert_load_server *s) { return s ? s->streams : 0; }
int ert_load_server_num_points(const ert_load_server *s) { return s ? s->num_points : 0; }
int ert_load_server_max_batch(const ert_load_server *s) { return s ? s->max_batch : 0; }
const ert_session *ert_load_server_session(const ert_load_server *s, int stream) {
    return s && s->workers && stream >= 0 && stream < s->streams ? s->workers[stream].session : NULL;
}

static ert_status jobs_alloc(ert_load_server *s) {
    s->jobs = calloc((size_t)s->streams, sizeof *s->jobs);
    if (!s->jobs) return ert_error(ERT_ERR_OUT_OF_MEMORY, "load server: out of memory");
    const size_t B = (size_t)s->max_batch;
    for (int i = 0; i < s->streams; ++i) {
        lt_job *j = &s->jobs[i];
        j->req = malloc(B * sizeof *j->req);
        j->sample = malloc(B * sizeof *j->sample);
        j->ready_ms = malloc(B * sizeof *j->ready_ms);
        j->exit = malloc(B * sizeof *j->exit);
        j->pred = malloc(B * sizeof *j->pred);
        j->correct = malloc(B * sizeof *j->correct);
        if (!j->req || !j->sample || !j->ready_ms || !j->exit || !j->pred || !j->correct)
            return ert_error(ERT_ERR_OUT_OF_MEMORY, "load server: out of memory");
    }
    return ERT_OK;
}

static void *worker_main(void *arg);

void ert_load_server_free(ert_load_server *s) {
    if (!s) return;
    if (s->kind == SRV_REAL && s->sync_init) {
        pthread_mutex_lock(&s->mu);
        s->quit = 1;
        for (int i = 0; s->workers && i < s->streams; ++i)
            if (s->workers[i].cv_init) pthread_cond_signal(&s->workers[i].cv);
        pthread_mutex_unlock(&s->mu);
        for (int i = 0; s->workers && i < s->streams; ++i)
            if (s->workers[i].started) pthread_join(s->workers[i].thread, NULL);
    }
    for (int i = 0; s->workers && i < s->streams; ++i) {
        lt_worker *w = &s->workers[i];
        if (w->cv_init) pthread_cond_destroy(&w->cv);
        ert_session_free(w->session);
        free(w->x);
        free(w->labels);
        free(w->pred);
        free(w->exit);
        free(w->conf);
    }
    if (s->sync_init) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv_done);
    }
    free(s->workers);
    for (int i = 0; s->jobs && i < s->streams; ++i) {
        lt_job *j = &s->jobs[i];
        free(j->req);
        free(j->sample);
        free(j->ready_ms);
        free(j->exit);
        free(j->pred);
        free(j->correct);
    }
    free(s->jobs);
    free(s->exits);
    free(s->correct);
    free(s);
}

ert_status ert_load_server_new_sim(const ert_sim_server_options *o, ert_load_server **out) {
    if (!o || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_load_server_new_sim: NULL argument");
    *out = NULL;
    const int streams = o->streams > 0 ? o->streams : 1, B = o->max_batch > 0 ? o->max_batch : 64;
    if (streams > 1024) return ert_error(ERT_ERR_INVALID_ARGUMENT, "simulated server: streams %d: expected 1..1024", streams);
    if (B > 1 << 20) return ert_error(ERT_ERR_INVALID_ARGUMENT, "simulated server: max_batch %d is too large", B);
    if (o->num_stages < 1 || o->num_stages > ERT_MAX_EXITS)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "simulated server: num_stages %d: expected 1..%d", o->num_stages,
                         ERT_MAX_EXITS);
    if (o->num_points < 1 || o->num_points > MAX_POINTS)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "simulated server: num_points %d: expected 1..%d", o->num_points,
                         MAX_POINTS);
    if (o->num_samples < 1 || o->num_shifted < 0 || !o->exits)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "simulated server: needs num_samples >= 1 and the exits table");
    if (o->batch_ms < 0) return ert_error(ERT_ERR_INVALID_ARGUMENT, "simulated server: batch_ms < 0");
    for (int k = 0; k < o->num_stages; ++k)
        if (!(o->stage_ms[k] >= 0) || !(o->row_ms[k] >= 0))
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "simulated server: stage %d: negative or NaN cost", k);
    const int64_t per = o->num_samples + o->num_shifted, total = per * o->num_points;
    for (int64_t i = 0; i < total; ++i)
        if (o->exits[i] < 0 || o->exits[i] >= o->num_stages)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "simulated server: exits[%lld] = %d: expected 0..%d",
                             (long long)i, o->exits[i], o->num_stages - 1);
    ert_load_server *s = calloc(1, sizeof *s);
    if (!s) return ert_error(ERT_ERR_OUT_OF_MEMORY, "simulated server: out of memory");
    s->kind = SRV_SIM;
    s->streams = streams;
    s->max_batch = B;
    s->num_points = o->num_points;
    s->num_exits = s->num_stages = o->num_stages;
    s->n_clean = o->num_samples;
    s->n_shift = o->num_shifted;
    s->batch_ms = o->batch_ms;
    memcpy(s->stage_ms, o->stage_ms, sizeof s->stage_ms);
    memcpy(s->row_ms, o->row_ms, sizeof s->row_ms);
    ert_status st = jobs_alloc(s);
    if (!st && !(s->exits = malloc((size_t)total * sizeof *s->exits)))
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "simulated server: out of memory");
    if (!st && o->correct && !(s->correct = malloc((size_t)total)))
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "simulated server: out of memory");
    if (st) {
        ert_load_server_free(s);
        return st;
    }
    memcpy(s->exits, o->exits, (size_t)total * sizeof *s->exits);
    if (o->correct) memcpy(s->correct, o->correct, (size_t)total);
    *out = s;
    return ERT_OK;
}

/* Runs one batch on a worker's session; fills the job's outputs. Called without the lock:
 * the dispatcher does not touch an ASSIGNED job. */
static void run_job(ert_load_server *s, lt_worker *w, lt_job *j) {
    j->start_ms = mono_ms() - s->t0_abs_ms;
    const int in = ert_model_input_size(s->model);
    for (int i = 0; i < j->n; ++i) {
        const int64_t smp = j->sample[i];
        const ert_dataset *d = smp < s->n_clean ? s->data : s->shifted;
        const int64_t row = smp < s->n_clean ? smp : smp - s->n_clean;
        memcpy(w->x + (size_t)i * (size_t)in, d->x + row * in, (size_t)in * sizeof(float));
        w->labels[i] = d->labels ? d->labels[row] : 0;
    }
    const ert_batch b = {.input = w->x, .n = j->n, .labels = s->have_labels ? w->labels : NULL,
                         .first_index = j->req[0]};
    ert_outputs o = {.pred = w->pred, .exit_index = w->exit, .confidence = w->conf};
    ert_status st = ert_session_run(w->session, s->points[j->point], &b, &o);
    /* the answers are on the host: the batch is done. Reading its profile (the exit-ready
     * times, several event reads on a GPU) is the worker's cost, not the requests'. */
    j->end_ms = mono_ms() - s->t0_abs_ms;
    ert_profile p;
    if (!st) st = ert_session_profile(w->session, &p);
    j->status = st;
    if (st) {
        snprintf(j->msg, sizeof j->msg, "%s", ert_last_error());
        return;
    }
    const double run_ms = p.host_start_us * 1e-3 - s->t0_abs_ms;
    for (int i = 0; i < j->n; ++i) {
        j->exit[i] = w->exit[i];
        j->pred[i] = w->pred[i];
        j->correct[i] = s->have_labels ? (int8_t)(w->pred[i] == w->labels[i]) : (int8_t)-1;
        double ready = ert_profile_exit_ready_ms(s->model, &p, w->exit[i]);
        ready = ready < 0 ? j->end_ms : run_ms + ready;
        /* The device timeline and the host clock differ by the launch latency: keep the
         * answer inside the batch's host interval. */
        if (ready < j->start_ms) ready = j->start_ms;
        if (ready > j->end_ms) ready = j->end_ms;
        j->ready_ms[i] = ready;
    }
}

static void *worker_main(void *arg) {
    lt_worker *w = arg;
    ert_load_server *s = w->srv;
    lt_job *j = &s->jobs[w->stream];
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->quit && j->state != JOB_ASSIGNED) pthread_cond_wait(&w->cv, &s->mu);
        if (s->quit) break;
        pthread_mutex_unlock(&s->mu);
        run_job(s, w, j);
        pthread_mutex_lock(&s->mu);
        j->state = JOB_DONE;
        pthread_cond_signal(&s->cv_done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

ert_status ert_load_server_new(const ert_model *model, const ert_dataset *data, const ert_dataset *shifted,
                               const ert_policy *const *points, int num_points, const ert_load_server_options *opt,
                               ert_load_server **out) {
    if (!model || !data || !points || !out)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_load_server_new: model, data, points and out must not be NULL");
    *out = NULL;
    const ert_load_server_options o = opt ? *opt : ert_load_server_options_default();
    if (num_points < 1 || num_points > MAX_POINTS)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "load server: %d operating points: expected 1..%d", num_points,
                         MAX_POINTS);
    for (int i = 0; i < num_points; ++i)
        if (!points[i]) return ert_error(ERT_ERR_INVALID_ARGUMENT, "load server: operating point %d is NULL", i);
    if (o.streams < 1 || o.streams > 64)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "load server: streams %d: expected 1..64", o.streams);
    if (o.session.max_batch < 1)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "load server: max_batch %d: expected >= 1", o.session.max_batch);
    const int in = ert_model_input_size(model);
    if (data->sample_size != in)
        return ert_error(ERT_ERR_SHAPE, "dataset '%s': %d values per sample, model '%s' expects %d", data->name,
                         data->sample_size, ert_model_name(model), in);
    if (data->n < 1) return ert_error(ERT_ERR_INVALID_ARGUMENT, "dataset '%s' is empty", data->name);
    if (shifted && (shifted->sample_size != in || shifted->n < 1))
        return ert_error(ERT_ERR_SHAPE, "shifted dataset '%s': %d values per sample (model '%s' expects %d), %lld samples",
                         shifted->name, shifted->sample_size, ert_model_name(model), in, (long long)shifted->n);
    const int classes = ert_model_num_classes(model);
    for (int d = 0; d < 2; ++d) {
        const ert_dataset *ds = d ? shifted : data;
        for (int64_t i = 0; ds && ds->labels && i < ds->n; ++i)
            if (ds->labels[i] < 0 || ds->labels[i] >= classes)
                return ert_error(ERT_ERR_SHAPE, "dataset '%s': label %d of sample %lld is not a class of model '%s'",
                                 ds->name, ds->labels[i], (long long)i, ert_model_name(model));
    }

    ert_load_server *s = calloc(1, sizeof *s);
    if (!s) return ert_error(ERT_ERR_OUT_OF_MEMORY, "load server: out of memory");
    s->kind = SRV_REAL;
    s->streams = o.streams;
    s->max_batch = o.session.max_batch;
    s->num_points = num_points;
    s->num_exits = ert_model_num_exits(model);
    s->model = model;
    s->data = data;
    s->shifted = shifted;
    s->n_clean = data->n;
    s->n_shift = shifted ? shifted->n : 0;
    s->have_labels = data->labels && (!shifted || shifted->labels);
    for (int i = 0; i < num_points; ++i) s->points[i] = points[i];
    ert_status st = jobs_alloc(s);
    if (st) goto fail;
    s->workers = calloc((size_t)o.streams, sizeof *s->workers);
    if (!s->workers) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "load server: out of memory");
        goto fail;
    }
    ert_session_options so = o.session;
    if (!so.device) so.device = "cpu";
    if (strncmp(so.device, "cpu", 3) == 0 && o.streams > 1 && !so.threads) { /* the streams divide the CPUs */
        int threads;
        if ((st = ert_cpu_threads_default(&threads))) goto fail;
        so.threads = threads / o.streams > 1 ? threads / o.streams : 1;
    }
    const size_t B = (size_t)so.max_batch;
    for (int i = 0; i < o.streams; ++i) {
        lt_worker *w = &s->workers[i];
        w->srv = s;
        w->stream = i;
        if ((st = ert_session_new(model, &so, &w->session))) {
            ert_error_context(st, "load server, stream %d: ", i);
            goto fail;
        }
        w->x = malloc(B * (size_t)in * sizeof *w->x);
        w->labels = calloc(B, sizeof *w->labels);
        w->pred = malloc(B * sizeof *w->pred);
        w->exit = malloc(B * sizeof *w->exit);
        w->conf = malloc(B * sizeof *w->conf);
        if (!w->x || !w->labels || !w->pred || !w->exit || !w->conf) {
            st = ert_error(ERT_ERR_OUT_OF_MEMORY, "load server: out of memory");
            goto fail;
        }
        /* Warm-up: fault in every buffer and let the backend settle before anything is timed:
         * `warmup` full batches, then every operating point at batch sizes from 1 to the
         * largest (at most 64 sizes), since a backend may pick its GEMM algorithm per shape
         * on first use and dynamic batching sends every size. */
        const int64_t n0 = data->n < (int64_t)B ? data->n : (int64_t)B;
        memcpy(w->x, data->x, (size_t)n0 * (size_t)in * sizeof(float));
        for (int64_t k = 0; k < n0; ++k) w->labels[k] = data->labels ? data->labels[k] : 0;
        const int step = n0 > 64 ? (int)((n0 + 63) / 64) : 1;
        for (int r = 0; o.warmup > 0 && r < o.warmup + num_points * (int)((n0 + step - 1) / step); ++r) {
            const int pt = r < o.warmup ? 0 : (r - o.warmup) % num_points;
            const int n = r < o.warmup ? (int)n0 : (int)(n0 - (int64_t)((r - o.warmup) / num_points) * step);
            const ert_batch b = {.input = w->x, .n = n, .labels = s->have_labels ? w->labels : NULL};
            ert_outputs ou = {.pred = w->pred, .exit_index = w->exit, .confidence = w->conf};
            if ((st = ert_session_run(w->session, points[pt], &b, &ou))) {
                ert_error_context(st, "load server, stream %d, operating point %d: ", i, pt);
                goto fail;
            }
        }
    }
    pthread_condattr_t ca;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        st = ert_error(ERT_ERR_BACKEND, "load server: pthread_mutex_init failed");
        goto fail;
    }
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&s->cv_done, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        pthread_mutex_destroy(&s->mu);
        st = ert_error(ERT_ERR_BACKEND, "load server: pthread_cond_init failed");
        goto fail;
    }
    s->sync_init = 1;
    for (int i = 0; i < o.streams; ++i) {
        lt_worker *w = &s->workers[i];
        if (pthread_cond_init(&w->cv, NULL) != 0) {
            st = ert_error(ERT_ERR_BACKEND, "load server: pthread_cond_init failed");
            break;
        }
        w->cv_init = 1;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            st = ert_error(ERT_ERR_BACKEND, "load server: cannot start the worker thread of stream %d", i);
            break;
        }
        w->started = 1;
    }
    pthread_condattr_destroy(&ca);
    if (st) goto fail;
    *out = s;
    return ERT_OK;
fail:
    ert_load_server_free(s);
    return st;
}

/* The server's four answers to the dispatcher. */

static double srv_now(const ert_load_server *s) { return s->kind == SRV_SIM ? s->vnow : mono_ms() - s->t0_abs_ms; }

static void srv_begin(ert_load_server *s) {
    if (s->kind == SRV_REAL) pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->streams; ++i) s->jobs[i].state = JOB_IDLE;
    s->vnow = 0.0;
    s->t0_abs_ms = mono_ms();
    if (s->kind == SRV_REAL) pthread_mutex_unlock(&s->mu);
}

/* Waits for every running batch (after a failure) and leaves every stream idle. */
static void srv_quiesce(ert_load_server *s) {
    if (s->kind == SRV_REAL) {
        pthread_mutex_lock(&s->mu);
        for (;;) {
            int busy = 0;
            for (int i = 0; i < s->streams; ++i) busy |= s->jobs[i].state == JOB_ASSIGNED;
            if (!busy) break;
            pthread_cond_wait(&s->cv_done, &s->mu);
        }
        for (int i = 0; i < s->streams; ++i) s->jobs[i].state = JOB_IDLE;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    for (int i = 0; i < s->streams; ++i) s->jobs[i].state = JOB_IDLE;
}

/* Hands a filled job (n, point, req, sample) to its stream at time `t`. The simulated
 * server computes the whole batch here: its service time is a function of the exits. */
static void srv_start(ert_load_server *s, lt_job *j, double t) {
    if (s->kind == SRV_REAL) {
        pthread_mutex_lock(&s->mu);
        j->state = JOB_ASSIGNED;
        pthread_cond_signal(&s->workers[j - s->jobs].cv);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    const int64_t per = s->n_clean + s->n_shift;
    const int32_t *ex = s->exits + (int64_t)j->point * per;
    const uint8_t *co = s->correct ? s->correct + (int64_t)j->point * per : NULL;
    int rows[ERT_MAX_EXITS] = {0};
    for (int i = 0; i < j->n; ++i)
        for (int k = 0; k <= ex[j->sample[i]]; ++k) rows[k]++;
    double ready[ERT_MAX_EXITS], cum = s->batch_ms;
    for (int k = 0; k < s->num_stages; ++k) {
        if (rows[k] > 0) cum += s->stage_ms[k] + s->row_ms[k] * rows[k];
        ready[k] = cum;
    }
    j->start_ms = t;
    j->end_ms = t + cum;
    j->status = ERT_OK;
    for (int i = 0; i < j->n; ++i) {
        const int e = ex[j->sample[i]];
        j->exit[i] = e;
        j->pred[i] = -1;
        j->correct[i] = co ? (int8_t)(co[j->sample[i]] != 0) : (int8_t)-1;
        j->ready_ms[i] = t + ready[e];
    }
    j->state = JOB_ASSIGNED;
}

/* Waits until time `until` (ms from the start; INFINITY: no deadline) or until a batch
 * is done, whichever comes first. Returns 0, or -1 if nothing can ever happen (no batch
 * running and no deadline: a dispatcher bug, reported rather than hanging). */
static int srv_wait(ert_load_server *s, double until) {
    if (s->kind == SRV_SIM) {
        double first = INFINITY;
        for (int i = 0; i < s->streams; ++i)
            if (s->jobs[i].state == JOB_ASSIGNED && s->jobs[i].end_ms < first) first = s->jobs[i].end_ms;
        if (first <= until) {
            if (first > s->vnow) s->vnow = first;
            for (int i = 0; i < s->streams; ++i)
                if (s->jobs[i].state == JOB_ASSIGNED && s->jobs[i].end_ms <= s->vnow) s->jobs[i].state = JOB_DONE;
            return 0;
        }
        if (isinf(until)) return -1;
        if (until > s->vnow) s->vnow = until;
        return 0;
    }
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    for (;;) {
        int done = 0, busy = 0;
        for (int i = 0; i < s->streams; ++i) {
            done |= s->jobs[i].state == JOB_DONE;
            busy |= s->jobs[i].state == JOB_ASSIGNED;
        }
        if (done) break;
        if (isinf(until)) {
            if (!busy) {
                rc = -1;
                break;
            }
            pthread_cond_wait(&s->cv_done, &s->mu);
            continue;
        }
        const double left = until - (mono_ms() - s->t0_abs_ms);
        if (left <= 0) break;
        const double abs_ms = s->t0_abs_ms + until;
        struct timespec ts = {.tv_sec = (time_t)(abs_ms / 1e3)};
        ts.tv_nsec = (long)((abs_ms - (double)ts.tv_sec * 1e3) * 1e6);
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        if (ts.tv_nsec < 0) ts.tv_nsec = 0;
        pthread_cond_timedwait(&s->cv_done, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* The first DONE job, or NULL. */
static lt_job *srv_take_done(ert_load_server *s) {
    lt_job *found = NULL;
    if (s->kind == SRV_REAL) pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->streams && !found; ++i)
        if (s->jobs[i].state == JOB_DONE) found = &s->jobs[i];
    if (s->kind == SRV_REAL) pthread_mutex_unlock(&s->mu);
    return found;
}

static int srv_stream_idle(ert_load_server *s) {
    int idle = -1;
    if (s->kind == SRV_REAL) pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->streams && idle < 0; ++i)
        if (s->jobs[i].state == JOB_IDLE) idle = i;
    if (s->kind == SRV_REAL) pthread_mutex_unlock(&s->mu);
    return idle;
}

static void srv_release(ert_load_server *s, lt_job *j) {
    if (s->kind == SRV_REAL) pthread_mutex_lock(&s->mu);
    j->state = JOB_IDLE;
    if (s->kind == SRV_REAL) pthread_mutex_unlock(&s->mu);
}

/* ---------------------------------------------------------------- statistics */

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Percentile q of sorted values: linear interpolation between order statistics. */
static double pct_sorted(const double *v, int64_t n, double q) {
    if (n <= 0) return NAN;
    const double pos = (q < 0 ? 0 : q > 100 ? 100 : q) / 100.0 * (double)(n - 1);
    const int64_t lo = (int64_t)floor(pos);
    const int64_t hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (pos - (double)lo);
}

/* Sorts `v` in place and returns its statistics. */
static ert_load_stats stats_sort(double *v, int64_t n) {
    ert_load_stats s = {NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    if (n <= 0) return s;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += v[i];
    s.mean = sum / (double)n;
    s.p50 = pct_sorted(v, n, 50);
    s.p90 = pct_sorted(v, n, 90);
    s.p95 = pct_sorted(v, n, 95);
    s.p99 = pct_sorted(v, n, 99);
    s.p999 = pct_sorted(v, n, 99.9);
    s.max = v[n - 1];
    return s;
}

ert_load_stats ert_load_stats_of(const double *values, int64_t n) {
    ert_load_stats s = {NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    if (!values || n <= 0) return s;
    double *v = malloc((size_t)n * sizeof *v);
    if (!v) return s;
    memcpy(v, values, (size_t)n * sizeof *v);
    s = stats_sort(v, n);
    free(v);
    return s;
}

/* ---------------------------------------------------------------- a run */

ert_load_options ert_load_options_default(void) {
    ert_load_options o = {.arrival = ERT_ARRIVAL_POISSON, .qps = 1000, .concurrency = 1, .seed = 1, .max_batch = 64,
                          .max_delay_ms = 2.0, .percentile = 99.0, .shift_at_s = -1.0, .window_ms = 200.0,
                          .slack = 0.7, .patience = 3};
    return o;
}

typedef struct lt_run {
    ert_load_server *s;
    const ert_load_options *o;
    ert_load_request *rec;
    int64_t n_gen, cap;  /* generated (arrival known) */
    int64_t n_adm;       /* admitted: arrival <= now */
    int64_t q_head;      /* the queue is rec[q_head .. n_adm) */
    int64_t n_done;
    int gen_done;
    uint64_t rng_arrival, rng_sample;
    double last_arrival;
    int64_t batches;
    /* controller */
    int point;
    double next_window;
    double *obs;
    int64_t n_obs, cap_obs;
    int slack_windows, cooldown;
    int patience[MAX_POINTS];    /* windows of slack before moving to each point */
    double fail_qps[MAX_POINTS]; /* arrival rate at which each point last overloaded (0: never) */
    int entered_stricter;        /* the current point was reached by a move stricter */
    int64_t adm_at_window;       /* requests admitted by the last window */
    ert_load_change *chg;
    int n_chg, cap_chg;
} lt_run;

static ert_status grow(void **p, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return ERT_OK;
    int64_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return ert_error(ERT_ERR_OUT_OF_MEMORY, "load test: out of memory (%lld entries)", (long long)need);
    *p = q;
    *cap = c;
    return ERT_OK;
}

static double rate_at(const lt_run *r, double t_ms) {
    const ert_load_options *o = r->o;
    return o->step_at_s > 0 && o->step_qps > 0 && t_ms >= o->step_at_s * 1e3 ? o->step_qps : o->qps;
}

/* Appends one request arriving at `t`: its sample is drawn here. */
static ert_status push_request(lt_run *r, double t) {
    ert_status st = grow((void **)&r->rec, &r->cap, r->n_gen + 1, sizeof *r->rec);
    if (st) return st;
    const ert_load_options *o = r->o;
    const ert_load_server *s = r->s;
    ert_load_request *q = &r->rec[r->n_gen++];
    memset(q, 0, sizeof *q);
    q->arrival_ms = t;
    q->start_ms = q->done_ms = NAN;
    int shift = s->n_shift > 0 && o->shift_fraction > 0 && o->shift_at_s >= 0 && t >= o->shift_at_s * 1e3 &&
                      uniform01(&r->rng_sample) < o->shift_fraction;
    if (shift) q->sample = s->n_clean + (int64_t)(splitmix64(&r->rng_sample) % (uint64_t)s->n_shift);
    else q->sample = (int64_t)(splitmix64(&r->rng_sample) % (uint64_t)s->n_clean);
    if (o->arrival == ERT_ARRIVAL_TRACE && o->trace_samples) {
        q->sample = o->trace_samples[r->n_gen - 1];
        shift = q->sample >= s->n_clean;
    }
    q->shifted = (int8_t)shift;
    q->exit = q->pred = -1;
    q->correct = -1;
    return ERT_OK;
}

static int limit_reached(const lt_run *r, double t) {
    const ert_load_options *o = r->o;
    return (o->requests > 0 && r->n_gen >= o->requests) || (o->duration_s > 0 && t >= o->duration_s * 1e3);
}

/* Open loop: the next arrival on the generator's clock. The gaps depend on nothing the
 * server does. A rate step restarts the exponential clock at the step (memoryless). */
static ert_status gen_next(lt_run *r) {
    const ert_load_options *o = r->o;
    double t;
    if (o->arrival == ERT_ARRIVAL_TRACE) {
        if (r->n_gen >= o->trace_len) {
            r->gen_done = 1;
            return ERT_OK;
        }
        t = o->trace_ms[r->n_gen];
    } else if (r->n_gen == 0 && o->arrival == ERT_ARRIVAL_CONSTANT) {
        t = 0.0;
    } else {
        t = r->last_arrival;
        for (;;) {
            const double rate = rate_at(r, t);
            const double gap = o->arrival == ERT_ARRIVAL_CONSTANT ? 1e3 / rate
                                                                  : -log1p(-uniform01(&r->rng_arrival)) * 1e3 / rate;
            const double step = o->step_at_s * 1e3;
            if (o->step_at_s > 0 && o->step_qps > 0 && t < step && t + gap >= step && o->step_qps != o->qps) {
                t = step;
                continue;
            }
            t += gap;
            break;
        }
    }
    if (limit_reached(r, t)) {
        r->gen_done = 1;
        return ERT_OK;
    }
    r->last_arrival = t;
    return push_request(r, t);
}

/* Generates open-loop arrivals until `upto` are known (or the limit is reached). */
static ert_status gen_upto(lt_run *r, int64_t upto) {
    ert_status st = ERT_OK;
    while (!st && !r->gen_done && r->n_gen < upto) st = gen_next(r);
    return st;
}

static ert_status log_change(lt_run *r, double t, int to, double observed, int64_t n) {
    if (r->n_chg == r->cap_chg) {
        int64_t cap = r->cap_chg;
        ert_status st = grow((void **)&r->chg, &cap, r->n_chg + 1, sizeof *r->chg);
        if (st) return st;
        r->cap_chg = (int)cap;
    }
    r->chg[r->n_chg++] = (ert_load_change){.t_ms = t, .from = r->point, .to = to, .observed_ms = observed, .observed_n = n};
    r->point = to;
    return ERT_OK;
}

/* One controller window. The window's percentile counts the requests answered since the
 * last window and, as lower bounds of their latency, the ages of those still queued: a
 * queue that builds shows at once, before its requests are answered.
 *   overload (percentile > slo)                  -> looser, at every window while it lasts
 *                                                   (a backlog drains faster at a looser point,
 *                                                   and waiting costs the tail): one point, and
 *                                                   one more per doubling over the objective;
 *   slack (percentile < slack * slo) for
 *   `patience` windows in a row                  -> one point stricter, then skip a window
 *                                                   (its answers mix the two points).
 * Looser fast, stricter slowly. A point that was moved to as the stricter one and then
 * overloaded doubles its patience (up to 64 windows) and remembers the arrival rate it
 * failed at: the controller probes it less and less often, unless the rate has fallen
 * well below that (then the base patience applies again). */
static ert_status controller_window(lt_run *r, double t) {
    const ert_load_options *o = r->o;
    for (int64_t i = r->q_head; i < r->n_adm; ++i) {
        ert_status st = grow((void **)&r->obs, &r->cap_obs, r->n_obs + 1, sizeof *r->obs);
        if (st) return st;
        r->obs[r->n_obs++] = t - r->rec[i].arrival_ms;
    }
    const int64_t n = r->n_obs;
    r->n_obs = 0;
    const double rate = (double)(r->n_adm - r->adm_at_window) / (o->window_ms * 1e-3);
    r->adm_at_window = r->n_adm;
    if (n == 0) return ERT_OK;
    qsort(r->obs, (size_t)n, sizeof *r->obs, cmp_double);
    const double p = pct_sorted(r->obs, n, o->percentile);
    const int last = r->s->num_points - 1;
    if (p > o->slo_ms) {
        r->slack_windows = 0;
        r->cooldown = 0;
        if (r->point < last) {
            if (r->entered_stricter) {
                int *pat = &r->patience[r->point];
                *pat = *pat * 2 > PATIENCE_CAP ? PATIENCE_CAP : *pat * 2;
            }
            r->fail_qps[r->point] = rate;
            r->entered_stricter = 0;
            /* The further over, the larger the step: 1 point up to 2x the objective, 2 up
             * to 4x, ... A load step can outrun a one-point-per-window walk while its
             * backlog grows. */
            int to = r->point + 1 + (int)floor(log2(p / o->slo_ms));
            if (to > last) to = last;
            return log_change(r, t, to, p, n);
        }
        return ERT_OK;
    }
    if (r->cooldown > 0) {
        r->cooldown--;
        return ERT_OK;
    }
    if (p < o->slack * o->slo_ms) {
        if (r->point == 0) return ERT_OK;
        const int to = r->point - 1;
        if (r->fail_qps[to] > 0 && rate < 0.8 * r->fail_qps[to]) {
            r->patience[to] = o->patience; /* the load that broke it has gone */
            r->fail_qps[to] = 0;
        }
        if (++r->slack_windows >= r->patience[to]) {
            r->slack_windows = 0;
            r->cooldown = 1;
            r->entered_stricter = 1;
            return log_change(r, t, to, p, n);
        }
    } else {
        r->slack_windows = 0;
    }
    return ERT_OK;
}

/* Reads one finished batch into the records. */
static ert_status collect(lt_run *r, lt_job *j) {
    const ert_load_options *o = r->o;
    if (j->status) return ert_error(j->status, "load test, stream %d, batch %lld: %s", (int)(j - r->s->jobs),
                                    (long long)j->batch, j->msg);
    for (int i = 0; i < j->n; ++i) {
        ert_load_request *q = &r->rec[j->req[i]];
        q->start_ms = j->start_ms;
        q->done_ms = o->late_answers ? j->end_ms : j->ready_ms[i];
        q->exit = j->exit[i];
        q->pred = j->pred[i];
        q->correct = j->correct[i];
        q->point = (int16_t)j->point;
        q->stream = (int16_t)(j - r->s->jobs);
        q->batch = j->batch;
        q->batch_size = (int16_t)(j->n > INT16_MAX ? INT16_MAX : j->n);
        if (o->controller == ERT_CONTROLLER_SLO) {
            ert_status st = grow((void **)&r->obs, &r->cap_obs, r->n_obs + 1, sizeof *r->obs);
            if (st) return st;
            r->obs[r->n_obs++] = q->done_ms - q->arrival_ms;
        }
    }
    r->n_done += j->n;
    /* Closed loop: each answer sends that client's next request, at the answer's time. */
    if (o->arrival == ERT_ARRIVAL_CLOSED)
        for (int i = 0; i < j->n; ++i) {
            const double t = r->rec[j->req[i]].done_ms;
            if (limit_reached(r, t)) continue;
            ert_status st = push_request(r, t);
            if (st) return st;
        }
    return ERT_OK;
}

static ert_status check_options(const ert_load_server *s, const ert_load_options *o) {
    if (o->arrival == ERT_ARRIVAL_POISSON || o->arrival == ERT_ARRIVAL_CONSTANT) {
        if (!(o->qps > 0) || !isfinite(o->qps))
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: qps %g: expected a rate > 0", o->qps);
        if (o->step_at_s > 0 && !(o->step_qps > 0))
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: a load step needs step_qps > 0");
    } else if (o->arrival == ERT_ARRIVAL_CLOSED) {
        if (o->concurrency < 1)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: concurrency %d: expected >= 1", o->concurrency);
    } else if (o->arrival == ERT_ARRIVAL_TRACE) {
        if (!o->trace_ms || o->trace_len < 1)
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: a trace needs trace_ms and trace_len >= 1");
        for (int64_t i = 0; i < o->trace_len; ++i)
            if (!isfinite(o->trace_ms[i]) || o->trace_ms[i] < 0 || (i && o->trace_ms[i] < o->trace_ms[i - 1]))
                return ert_error(ERT_ERR_INVALID_ARGUMENT,
                                 "load test: trace_ms[%lld] = %g: expected finite, >= 0 and non-decreasing",
                                 (long long)i, o->trace_ms[i]);
        for (int64_t i = 0; o->trace_samples && i < o->trace_len; ++i)
            if (o->trace_samples[i] < 0 || o->trace_samples[i] >= s->n_clean + s->n_shift)
                return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: trace_samples[%lld] = %lld: the server has %lld samples",
                                 (long long)i, (long long)o->trace_samples[i], (long long)(s->n_clean + s->n_shift));
    } else {
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: unknown arrival process %d", (int)o->arrival);
    }
    if (o->arrival != ERT_ARRIVAL_TRACE && o->requests <= 0 && !(o->duration_s > 0))
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: set requests or duration_s (a run must be bounded)");
    if (o->max_batch < 1 || o->max_batch > s->max_batch)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: max_batch %d: expected 1..%d (the server's)", o->max_batch,
                         s->max_batch);
    if (!(o->max_delay_ms >= 0) || !isfinite(o->max_delay_ms))
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: max_delay_ms %g: expected >= 0", o->max_delay_ms);
    if (!(o->percentile > 0 && o->percentile <= 100))
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: percentile %g: expected in (0, 100]", o->percentile);
    if (o->point < 0 || o->point >= s->num_points)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: operating point %d: the server has 0..%d", o->point,
                         s->num_points - 1);
    if (o->shift_fraction < 0 || o->shift_fraction > 1)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: shift_fraction %g: expected 0..1", o->shift_fraction);
    if (o->shift_fraction > 0 && o->shift_at_s >= 0 && s->n_shift == 0)
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: a shift needs a server with shifted data");
    if (!(o->window_ms > 0)) return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: window_ms must be > 0");
    if (o->slo_ms < 0) return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: slo_ms %g < 0", o->slo_ms);
    if (o->controller == ERT_CONTROLLER_SLO) {
        if (!(o->slo_ms > 0)) return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: the SLO controller needs slo_ms > 0");
        if (!(o->slack > 0 && o->slack < 1))
            return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: slack %g: expected in (0, 1)", o->slack);
        if (o->patience < 1) return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: patience must be >= 1");
    } else if (o->controller != ERT_CONTROLLER_NONE) {
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: unknown controller %d", (int)o->controller);
    }
    return ERT_OK;
}

/* The dispatcher: admit arrivals, read finished batches, run the controller, start
 * batches on free streams, then sleep until the next thing that can change a decision. */
static ert_status dispatch_loop(lt_run *r) {
    ert_load_server *s = r->s;
    const ert_load_options *o = r->o;
    const int closed = o->arrival == ERT_ARRIVAL_CLOSED;
    const int B = o->max_batch;
    ert_status st = ERT_OK;
    if (closed) {
        for (int c = 0; c < o->concurrency && !limit_reached(r, 0.0) && !st; ++c) st = push_request(r, 0.0);
        r->gen_done = 1; /* no open-loop generation; clients add their requests in collect */
    }
    while (!st) {
        for (lt_job *j; (j = srv_take_done(s));) {
            st = collect(r, j);
            srv_release(s, j);
            if (st) return st;
        }
        const double t = srv_now(s);
        /* Admit every arrival up to now; keep B + 1 future arrivals generated, so the time
         * the head batch fills up is known. */
        for (;;) {
            if (!closed && (st = gen_upto(r, r->n_adm + B + 1))) return st;
            while (r->n_adm < r->n_gen && r->rec[r->n_adm].arrival_ms <= t) r->n_adm++;
            if (closed || r->gen_done || r->n_adm < r->n_gen) break;
        }
        if (o->controller == ERT_CONTROLLER_SLO && t >= r->next_window) {
            if ((st = controller_window(r, t))) return st;
            while (r->next_window <= t) r->next_window += o->window_ms;
        }
        /* Dynamic batching: a batch leaves when full or when its oldest request has
         * waited max_delay_ms, for whichever stream is free. */
        for (int idle; r->n_adm > r->q_head && (idle = srv_stream_idle(s)) >= 0;) {
            const int64_t qlen = r->n_adm - r->q_head;
            const int full = qlen >= B;
            const int expired = t >= r->rec[r->q_head].arrival_ms + o->max_delay_ms;
            if (!full && !expired) break;
            lt_job *j = &s->jobs[idle];
            j->n = (int)(qlen < B ? qlen : B);
            j->point = r->point;
            j->batch = r->batches++;
            for (int i = 0; i < j->n; ++i) {
                j->req[i] = r->q_head + i;
                j->sample[i] = r->rec[r->q_head + i].sample;
            }
            r->q_head += j->n;
            srv_start(s, j, t);
        }
        if (r->n_done == r->n_gen && r->gen_done) break;
        /* The next moment a decision can change: a free stream waits for the batch to
         * fill or its oldest request's delay to run out, or for the next arrival; a busy
         * server waits for a batch to finish; the controller for its window. */
        double next = o->controller == ERT_CONTROLLER_SLO ? r->next_window : INFINITY;
        if (srv_stream_idle(s) >= 0) {
            if (r->n_adm > r->q_head) {
                const double deadline = r->rec[r->q_head].arrival_ms + o->max_delay_ms;
                if (deadline < next) next = deadline;
                if (r->q_head + B - 1 < r->n_gen && r->rec[r->q_head + B - 1].arrival_ms < next)
                    next = r->rec[r->q_head + B - 1].arrival_ms;
            } else if (r->n_adm < r->n_gen && r->rec[r->n_adm].arrival_ms < next) {
                next = r->rec[r->n_adm].arrival_ms;
            }
        }
        if (srv_wait(s, next) != 0)
            return ert_error(ERT_ERR_BACKEND, "load test: the dispatcher stalled (%lld of %lld requests answered)",
                             (long long)r->n_done, (long long)r->n_gen);
    }
    return st;
}

void ert_load_result_free(ert_load_result *r) {
    if (!r) return;
    free(r->req);
    free(r->windows);
    free(r->changes);
    free(r);
}

/* Per-window timeline by answer time (arrivals by intended arrival time). */
static ert_status build_windows(ert_load_result *res, const ert_load_options *o, int first_point) {
    const double W = o->window_ms;
    double end = 0.0;
    for (int64_t i = 0; i < res->requests; ++i) {
        if (res->req[i].done_ms > end) end = res->req[i].done_ms;
        if (res->req[i].arrival_ms > end) end = res->req[i].arrival_ms;
    }
    const int64_t nw = (int64_t)floor(end / W) + 1;
    if (nw > 10000000) return ert_error(ERT_ERR_INVALID_ARGUMENT, "load test: %lld windows: window_ms is too small", (long long)nw);
    res->windows = calloc((size_t)nw, sizeof *res->windows);
    int64_t *start = calloc((size_t)nw + 1, sizeof *start);
    double *lat = malloc((size_t)(res->requests > 0 ? res->requests : 1) * sizeof *lat);
    int64_t *order = malloc((size_t)(res->requests > 0 ? res->requests : 1) * sizeof *order);
    ert_status st = ERT_OK;
    if (!res->windows || !start || !lat || !order) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "load test: out of memory");
        goto done;
    }
    res->num_windows = (int)nw;
    /* Counting sort of the requests by answer window. */
    for (int64_t i = 0; i < res->requests; ++i) start[(int64_t)floor(res->req[i].done_ms / W) + 1]++;
    for (int64_t w = 0; w < nw; ++w) start[w + 1] += start[w];
    {
        int64_t *fill = calloc((size_t)nw, sizeof *fill);
        if (!fill) {
            st = ert_error(ERT_ERR_OUT_OF_MEMORY, "load test: out of memory");
            goto done;
        }
        for (int64_t i = 0; i < res->requests; ++i) {
            const int64_t w = (int64_t)floor(res->req[i].done_ms / W);
            order[start[w] + fill[w]++] = i;
        }
        free(fill);
    }
    for (int64_t i = 0; i < res->requests; ++i) res->windows[(int64_t)floor(res->req[i].arrival_ms / W)].arrivals++;
    int point = first_point, c = 0;
    for (int64_t w = 0; w < nw; ++w) {
        ert_load_window *win = &res->windows[w];
        win->t_ms = (double)(w + 1) * W;
        win->completed = start[w + 1] - start[w];
        win->offered_qps = (double)win->arrivals / (W * 1e-3);
        win->throughput_qps = (double)win->completed / (W * 1e-3);
        int64_t correct = 0, known = 0, shifted = 0;
        double exits = 0.0;
        for (int64_t k = 0; k < win->completed; ++k) {
            const ert_load_request *q = &res->req[order[start[w] + k]];
            lat[k] = q->done_ms - q->arrival_ms;
            exits += q->exit;
            shifted += q->shifted;
            if (q->correct >= 0) known++, correct += q->correct;
        }
        qsort(lat, (size_t)win->completed, sizeof *lat, cmp_double);
        win->p50_ms = pct_sorted(lat, win->completed, 50);
        win->p99_ms = pct_sorted(lat, win->completed, o->percentile);
        win->accuracy = known ? (double)correct / (double)known : -1.0;
        win->mean_exit = win->completed ? exits / (double)win->completed : NAN;
        win->shifted_share = win->completed ? (double)shifted / (double)win->completed : 0.0;
        while (c < res->num_changes && res->changes[c].t_ms < win->t_ms) point = res->changes[c++].to;
        win->point = point;
    }
done:
    free(start);
    free(lat);
    free(order);
    return st;
}

static ert_status summarize(lt_run *r, ert_load_result **out) {
    const ert_load_options *o = r->o;
    ert_load_result *res = calloc(1, sizeof *res);
    const int64_t n = r->n_gen;
    double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    ert_status st = ERT_OK;
    if (!res || !v) {
        st = ert_error(ERT_ERR_OUT_OF_MEMORY, "load test: out of memory");
        goto fail;
    }
    res->requests = n;
    res->req = r->rec;
    r->rec = NULL;
    res->changes = r->chg;
    res->num_changes = r->n_chg;
    r->chg = NULL;
    res->num_exits = r->s->num_exits;
    res->num_points = r->s->num_points;
    res->batches = r->batches;
    res->mean_batch = r->batches ? (double)n / (double)r->batches : 0.0;
    res->slo_ms = o->slo_ms;
    double first = INFINITY, last_arrival = 0.0, last_done = 0.0, exits = 0.0;
    int64_t correct = 0, known = 0, within = 0;
    for (int64_t i = 0; i < n; ++i) {
        const ert_load_request *q = &res->req[i];
        if (q->arrival_ms < first) first = q->arrival_ms;
        if (q->arrival_ms > last_arrival) last_arrival = q->arrival_ms;
        if (q->done_ms > last_done) last_done = q->done_ms;
        exits += q->exit;
        if (q->exit >= 0 && q->exit < ERT_MAX_EXITS) res->exit_histogram[q->exit]++;
        if (q->point >= 0 && q->point < 64) res->point_requests[q->point]++;
        if (q->correct >= 0) known++, correct += q->correct;
        within += o->slo_ms > 0 && q->done_ms - q->arrival_ms <= o->slo_ms;
    }
    res->duration_s = last_done * 1e-3;
    res->offered_qps = n > 1 && last_arrival > first ? (double)(n - 1) / ((last_arrival - first) * 1e-3) : 0.0;
    res->throughput = last_done > 0 ? (double)n / (last_done * 1e-3) : 0.0;
    res->accuracy = known ? (double)correct / (double)known : -1.0;
    res->mean_exit = n ? exits / (double)n : NAN;
    res->slo_attainment = o->slo_ms > 0 && n ? (double)within / (double)n : -1.0;
    for (int64_t i = 0; i < n; ++i) v[i] = res->req[i].done_ms - res->req[i].arrival_ms;
    res->latency = stats_sort(v, n);
    for (int64_t i = 0; i < n; ++i) v[i] = res->req[i].start_ms - res->req[i].arrival_ms;
    res->queue = stats_sort(v, n);
    for (int64_t i = 0; i < n; ++i) v[i] = res->req[i].done_ms - res->req[i].start_ms;
    res->compute = stats_sort(v, n);
    if ((st = build_windows(res, o, o->point))) goto fail;
    free(v);
    *out = res;
    return ERT_OK;
fail:
    free(v);
    ert_load_result_free(res);
    return st;
}

ert_status ert_loadtest_run(ert_load_server *s, const ert_load_options *opt, ert_load_result **out) {
    if (!s || !opt || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_loadtest_run: NULL argument");
    *out = NULL;
    ert_status st = check_options(s, opt);
    if (st) return st;
    lt_run r = {.s = s, .o = opt, .point = opt->point, .next_window = opt->window_ms};
    r.rng_arrival = opt->seed * 2 + 1;
    r.rng_sample = opt->seed * 2 + 2;
    for (int i = 0; i < MAX_POINTS; ++i) r.patience[i] = opt->patience;
    srv_begin(s);
    st = dispatch_loop(&r);
    srv_quiesce(s);
    if (!st) st = summarize(&r, out);
    free(r.rec);
    free(r.obs);
    free(r.chg);
    return st;
}

ert_load_phase ert_load_result_phase(const ert_load_result *res, double from_ms, double to_ms, double q) {
    ert_load_phase ph = {0, NAN, NAN, -1.0, NAN, -1.0};
    if (!res || res->requests <= 0) return ph;
    double *v = malloc((size_t)res->requests * sizeof *v);
    if (!v) return ph;
    int64_t n = 0, correct = 0, known = 0, within = 0;
    double exits = 0.0;
    for (int64_t i = 0; i < res->requests; ++i) {
        const ert_load_request *r = &res->req[i];
        if (r->arrival_ms < from_ms || r->arrival_ms >= to_ms) continue;
        v[n++] = r->done_ms - r->arrival_ms;
        exits += r->exit;
        if (r->correct >= 0) known++, correct += r->correct;
        within += res->slo_ms > 0 && r->done_ms - r->arrival_ms <= res->slo_ms;
    }
    ph.requests = n;
    if (n) {
        qsort(v, (size_t)n, sizeof *v, cmp_double);
        ph.latency_q = pct_sorted(v, n, q);
        ph.p50 = pct_sorted(v, n, 50);
        ph.mean_exit = exits / (double)n;
        ph.slo_attainment = res->slo_ms > 0 ? (double)within / (double)n : -1.0;
    }
    ph.accuracy = known ? (double)correct / (double)known : -1.0;
    free(v);
    return ph;
}

/* ---------------------------------------------------------------- peak search */

static ert_status peak_trial(ert_load_server *s, const ert_load_options *base, const ert_peak_options *po, double qps,
                             ert_peak_trial *t) {
    ert_load_options o = *base;
    o.arrival = ERT_ARRIVAL_POISSON;
    o.qps = qps;
    o.step_at_s = 0;
    o.controller = ERT_CONTROLLER_NONE;
    o.slo_ms = po->slo_ms;
    o.percentile = po->percentile;
    ert_load_result *r = NULL;
    ert_status st = ert_loadtest_run(s, &o, &r);
    if (st) return st;
    /* A queue that grows through the trial is not a steady state however the whole
     * trial's percentile comes out: its second half must hold the bound too. */
    double mid = r->requests ? r->req[r->requests / 2].arrival_ms : 0.0;
    const ert_load_phase all = ert_load_result_phase(r, -INFINITY, INFINITY, po->percentile);
    const ert_load_phase tail = ert_load_result_phase(r, mid, INFINITY, po->percentile);
    *t = (ert_peak_trial){.qps = qps, .latency_q = all.latency_q, .latency_q_tail = tail.latency_q,
                          .throughput = r->throughput, .accuracy = r->accuracy, .mean_exit = r->mean_exit};
    t->pass = all.latency_q <= po->slo_ms && tail.latency_q <= po->slo_ms;
    ert_load_result_free(r);
    return ERT_OK;
}

ert_status ert_loadtest_find_peak(ert_load_server *s, const ert_load_options *trial, const ert_peak_options *opt,
                                  ert_peak_result *out) {
    if (!s || !trial || !opt || !out) return ert_error(ERT_ERR_INVALID_ARGUMENT, "ert_loadtest_find_peak: NULL argument");
    memset(out, 0, sizeof *out);
    ert_peak_options po = *opt;
    if (!(po.slo_ms > 0)) return ert_error(ERT_ERR_INVALID_ARGUMENT, "peak search: slo_ms must be > 0");
    if (po.percentile == 0) po.percentile = 99.0;
    if (po.tolerance <= 0) po.tolerance = 0.03;
    if (po.max_trials <= 0) po.max_trials = 24;
    if (po.max_trials > ERT_PEAK_MAX_TRIALS) po.max_trials = ERT_PEAK_MAX_TRIALS;
    if (po.qps_lo < 0 || po.qps_hi < 0 || (po.qps_hi > 0 && po.qps_lo >= po.qps_hi))
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "peak search: bracket [%g, %g]: expected 0 <= lo < hi", po.qps_lo,
                         po.qps_hi);
    if (trial->requests <= 0 && !(trial->duration_s > 0))
        return ert_error(ERT_ERR_INVALID_ARGUMENT, "peak search: each trial needs requests or duration_s");
    const double min_span_s = ERT_PEAK_MIN_SPAN * po.slo_ms / 1e3;
    if (trial->requests > 0) out->max_qps = trial->requests / min_span_s;
    if (trial->duration_s > 0 && trial->duration_s < min_span_s) /* a limit too, when both are given */
        return ert_error(ERT_ERR_INVALID_ARGUMENT,
                         "peak search: trials of %g s cannot show an overload: a burst drains within the bound; "
                         "they must last %d x the bound, %g s",
                         trial->duration_s, ERT_PEAK_MIN_SPAN, min_span_s);
    if (out->max_qps > 0 && po.qps_lo >= out->max_qps)
        return ert_error(ERT_ERR_INVALID_ARGUMENT,
                         "peak search: %g qps is past what trials of %lld requests can test, %.0f qps (their "
                         "arrivals must span %d x the bound); send more requests",
                         po.qps_lo, (long long)trial->requests, out->max_qps, ERT_PEAK_MIN_SPAN);
    ert_status st;
    if (po.qps_hi == 0 || po.qps_lo == 0) {
        /* The capacity: a closed loop that keeps every stream's batches full. */
        ert_load_options c = *trial;
        c.arrival = ERT_ARRIVAL_CLOSED;
        c.concurrency = 2 * trial->max_batch * s->streams;
        c.controller = ERT_CONTROLLER_NONE;
        c.step_at_s = 0;
        ert_load_result *r = NULL;
        if ((st = ert_loadtest_run(s, &c, &r))) return ert_error_context(st, "peak search, capacity run: ");
        out->capacity_qps = r->throughput;
        ert_load_result_free(r);
        if (!(out->capacity_qps > 0)) return ert_error(ERT_ERR_BACKEND, "peak search: the capacity run answered nothing");
        if (po.qps_hi == 0) po.qps_hi = 1.25 * out->capacity_qps;
        if (po.qps_lo == 0) po.qps_lo = 0.1 * (po.qps_hi < out->capacity_qps ? po.qps_hi : out->capacity_qps);
    }
    if (out->max_qps > 0 && po.qps_hi > out->max_qps) po.qps_hi = out->max_qps;
    if (po.qps_lo >= po.qps_hi) po.qps_lo = 0.5 * po.qps_hi;
    double lo = po.qps_lo, hi = po.qps_hi;
    ert_peak_trial t;
#define TRIAL(q)                                                                                                       \
    do {                                                                                                               \
        if ((st = peak_trial(s, trial, &po, (q), &t))) return ert_error_context(st, "peak search at %.1f qps: ", (q)); \
        out->trials[out->num_trials++] = t;                                                                            \
    } while (0)
    TRIAL(lo);
    if (!t.pass) {
        out->found = 0;
        out->at_peak = t;
        return ERT_OK;
    }
    out->found = 1;
    out->at_peak = t;
    out->peak_qps = lo;
    /* Widen while the upper end still passes. */
    for (;;) {
        if (out->num_trials >= po.max_trials) return ERT_OK;
        TRIAL(hi);
        if (!t.pass) break;
        lo = hi;
        out->at_peak = t;
        out->peak_qps = lo;
        if (out->max_qps > 0 && hi >= out->max_qps) {
            out->limited = 1;
            return ERT_OK;
        }
        hi *= 2.0;
        if (out->max_qps > 0 && hi > out->max_qps) hi = out->max_qps;
    }
    while ((hi - lo) / hi >= po.tolerance && out->num_trials < po.max_trials) {
        const double mid = 0.5 * (lo + hi);
        TRIAL(mid);
        if (t.pass) {
            lo = mid;
            out->at_peak = t;
            out->peak_qps = lo;
        } else {
            hi = mid;
        }
    }
#undef TRIAL
    return ERT_OK;
}
