/*
 * node_writer.c: a thread that runs the loop's disk work, one job at a
 * time. Each store has one of its own: the Raft log's flushes
 * (node_log.c, n->wal.wr) and the queue file's (node_queue.c,
 * n->q_writer). An fdatasync takes 0.2 ms on a quiet disk and, now and
 * then, tens or hundreds of milliseconds; on the loop it would hold up
 * every peer frame, heartbeat and call behind it.
 *
 * The loop prepares a job (the bytes to write, where), hands it over with
 * nd_writer_hand and goes on; the thread runs fn(arg), records the result
 * and wakes the loop, which takes it with nd_writer_reap on its next turn.
 * Only the thread touches the job between the two. busy is written by the
 * loop alone; the thread reads it, and writes done, rc and took_ns, under
 * mu.
 */
#include "node_internal.h"

static void *writer_main(void *arg)
{
    nd_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && !(w->busy && !w->done))
            pthread_cond_wait(&w->cv, &w->mu);
        if (!(w->busy && !w->done)) break; /* stopped, and no job handed over */
        pthread_mutex_unlock(&w->mu);
        uint64_t start = ut_now_ns();
        int rc = w->fn(w->arg);
        uint64_t took = ut_now_ns() - start;
        pthread_mutex_lock(&w->mu);
        w->rc = rc;
        w->took_ns = took;
        w->done = true;
        pthread_cond_broadcast(&w->cv); /* nd_writer_wait may be waiting */
        nd_wake(w->n);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

int nd_writer_start(nd_writer *w, dsync_node *n, nd_job_fn fn, void *arg)
{
    *w = (nd_writer){.n = n, .fn = fn, .arg = arg};
    if (pthread_mutex_init(&w->mu, NULL) != 0) return DSYNC_ENOMEM;
    if (pthread_cond_init(&w->cv, NULL) != 0) {
        pthread_mutex_destroy(&w->mu);
        return DSYNC_ENOMEM;
    }
    if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        return DSYNC_ENOMEM;
    }
    w->started = true;
    return 0;
}

void nd_writer_stop(nd_writer *w)
{
    if (!w->started) return;
    /* A job handed over runs to its end first: the thread takes a job
     * before it looks at stop. */
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    w->started = false;
}

void nd_writer_hand(nd_writer *w)
{
    pthread_mutex_lock(&w->mu);
    w->busy = true;
    w->done = false;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

bool nd_writer_reap(nd_writer *w, int *rc, uint64_t *took_ns)
{
    if (!w->busy) return false;
    pthread_mutex_lock(&w->mu);
    bool done = w->done;
    if (done) w->busy = w->done = false;
    *rc = w->rc;
    *took_ns = w->took_ns;
    pthread_mutex_unlock(&w->mu);
    return done;
}

void nd_writer_wait(nd_writer *w)
{
    if (!w->busy) return;
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}
