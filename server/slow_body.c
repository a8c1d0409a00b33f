/*
 * slow_body.c: a deadline on reading a request body.
 *
 * civetweb 1.15's request_timeout_ms bounds a request's headers and each
 * wait for body bytes, but mg_read goes on reading as long as bytes keep
 * coming: a client that sends its body a byte every few seconds held a
 * worker as long as it liked, and as many such clients as there are
 * workers silenced the node. civetweb gives a handler neither a deadline
 * of its own nor the connection's socket.
 *
 * So read_body (http.c) checks the deadline after every mg_read, and a
 * watchdog thread makes sure mg_read comes back to it: each worker, while
 * it reads a body, publishes its deadline in a slot of its own, and the
 * watchdog, looking at the slots a few times per timeout, sends a worker
 * past its deadline a signal (SIGURG, with a handler that does nothing).
 * The signal ends the poll() that civetweb waits in (poll is never
 * restarted), so mg_read returns what it has, and the worker answers 408.
 * The watchdog signals again at each look until the worker ends the
 * watch, in case a signal lands between two polls. Nothing is searched
 * for and no descriptor is touched. Chunked bodies are refused (411):
 * civetweb's chunked reader reads on through an interrupted read.
 *
 * The slot's lock keeps the two apart: no signal is sent to a worker once
 * it has ended its watch, and one sent just before is delivered at the
 * worker's next system call (at the latest the futex of that lock, or the
 * send of its answer), before it could interrupt anything that matters:
 * SA_RESTART restarts a send or a futex wait, and civetweb retries a send
 * whose poll was interrupted.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "slow_body.h"

struct sb_slot {
    pthread_mutex_t mu;
    pthread_t thread;     /* the worker it belongs to */
    uint64_t deadline_ms; /* 0 while its worker reads no body */
};

/* The slot of the calling worker, and whose it is. */
static _Thread_local struct {
    sb_watchdog *w;
    sb_slot *slot;
} mine;

static void wake_only(int sig)
{
    (void)sig; /* its whole purpose is to interrupt a poll() */
}

static void sweep(sb_watchdog *w)
{
    uint64_t now = ut_now_ms();
    for (size_t i = 0; i < w->n; i++) {
        sb_slot *s = w->slots[i];
        pthread_mutex_lock(&s->mu);
        if (s->deadline_ms && s->deadline_ms <= now) pthread_kill(s->thread, SB_SIGNAL);
        pthread_mutex_unlock(&s->mu);
    }
}

static void *watchdog_main(void *arg)
{
    sb_watchdog *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + w->period_ms * 1000000ull;
        ts.tv_sec += (time_t)(ns / 1000000000ull);
        ts.tv_nsec = (long)(ns % 1000000000ull);
        int rc = 0;
        while (!w->stopping && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&w->cond, &w->mu, &ts);
        if (!w->stopping) sweep(w);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int sb_start(sb_watchdog *w, uint64_t timeout_ms)
{
    memset(w, 0, sizeof *w);
    /* A few looks per timeout: a body is cut off at most a period late. */
    w->period_ms = timeout_ms / 4 < 50 ? 50 : timeout_ms / 4 > 1000 ? 1000 : timeout_ms / 4;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = wake_only;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SB_SIGNAL, &sa, NULL) != 0) return -1;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) return -1;
    int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(&w->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) return -1;
    if (pthread_mutex_init(&w->mu, NULL) != 0) {
        pthread_cond_destroy(&w->cond);
        return -1;
    }
    if (pthread_create(&w->thread, NULL, watchdog_main, w) != 0) {
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cond);
        return -1;
    }
    w->started = true;
    return 0;
}

void sb_stop(sb_watchdog *w)
{
    if (!w->started) return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    for (size_t i = 0; i < w->n; i++) {
        pthread_mutex_destroy(&w->slots[i]->mu);
        free(w->slots[i]);
    }
    free(w->slots);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cond);
    w->started = false;
}

/* The calling worker's slot, made on its first body. */
static sb_slot *slot_of_this_thread(sb_watchdog *w)
{
    if (mine.w == w && mine.slot) return mine.slot;
    sb_slot *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return NULL;
    }
    s->thread = pthread_self();
    pthread_mutex_lock(&w->mu);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        sb_slot **grown = realloc(w->slots, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&w->mu);
            pthread_mutex_destroy(&s->mu);
            free(s);
            return NULL;
        }
        w->slots = grown;
        w->cap = cap;
    }
    w->slots[w->n++] = s;
    pthread_mutex_unlock(&w->mu);
    mine.w = w;
    mine.slot = s;
    return s;
}

sb_slot *sb_begin(sb_watchdog *w, uint64_t deadline_ms)
{
    if (!w->started) return NULL;
    sb_slot *s = slot_of_this_thread(w);
    if (!s) return NULL;
    pthread_mutex_lock(&s->mu);
    s->deadline_ms = deadline_ms ? deadline_ms : 1;
    pthread_mutex_unlock(&s->mu);
    return s;
}

void sb_end(sb_slot *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->deadline_ms = 0;
    pthread_mutex_unlock(&s->mu);
}
