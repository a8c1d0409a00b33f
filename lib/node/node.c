/*
 * node.c: a node's lifecycle and its event loop.
 *
 * The loop thread sleeps in poll() on an eventfd and the peer sockets
 * until a caller submits a call, a peer sends a frame, or the next
 * deadline (a Raft tick, a lease, a parked call) comes due. Each turn it
 * takes the frames, then the calls, ticks, and hands whatever Raft has
 * ready to node_raft.c: so everything that arrived in one turn shares one
 * fsync. Callers never touch node state: they queue an nd_call and sleep
 * on its semaphore, so the services need no locks of their own (Redis'
 * model).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "node_internal.h"

void nd_wake(dsync_node *n)
{
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the loop will wake. */
    while (write(n->wake_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

void nd_complete(nd_call *call, int rc)
{
    call->rc = rc;
    sem_post(&call->done);
}

int nd_submit(dsync_node *n, nd_call *call)
{
    call->rc = DSYNC_ECLOSED;
    call->next = NULL;
    call->submitted_ns = ut_now_ns();
    if (sem_init(&call->done, 0, 0) != 0) return DSYNC_ENOMEM;

    pthread_mutex_lock(&n->mu);
    if (n->closing) {
        pthread_mutex_unlock(&n->mu);
        sem_destroy(&call->done);
        return DSYNC_ECLOSED;
    }
    bool was_empty = n->queue_head == NULL;
    if (n->queue_tail)
        n->queue_tail->next = call;
    else
        n->queue_head = call;
    n->queue_tail = call;
    pthread_mutex_unlock(&n->mu);

    /* Only the first call into an empty queue needs to wake the loop. */
    if (was_empty) nd_wake(n);
    while (sem_wait(&call->done) != 0 && errno == EINTR)
        ;
    sem_destroy(&call->done);
    return call->rc;
}

static void handle(dsync_node *n, nd_call *call, uint64_t now_ms)
{
    switch (call->kind) {
    case ND_CALL_LOCK_ACQUIRE:
    case ND_CALL_LOCK_RELEASE:
    case ND_CALL_LOCK_STATE:
        nd_locks_handle(n, call, now_ms);
        return;
    case ND_CALL_HEALTH: {
        dsync_health *h = call->u.health;
        memset(h, 0, sizeof *h);
        h->node_id = n->cfg.node_id;
        h->uptime_ms = now_ms - n->started_ms;
        nd_raft_health(n, h, now_ms);
        nd_complete(call, 0);
        return;
    }
    case ND_CALL_MEMBER:
        nd_raft_handle_member(n, call);
        return;
    case ND_CALL_Q_ENQUEUE:
    case ND_CALL_Q_CONSUME:
    case ND_CALL_Q_ACK:
        nd_queue_handle(n, call);
        return;
    case ND_CALL_Q_STATE:
        nd_queue_state(n, call);
        return;
    case ND_CALL_CACHE_GET:
    case ND_CALL_CACHE_PUT:
        nd_cache_handle(n, call, now_ms);
        return;
    case ND_CALL_DROP_PEERS:
        if (n->net) nt_set_drop(n->net, call->u.drop.ids, call->u.drop.n);
        ut_log(&n->log, DSYNC_LOG_WARN, "fault injection: dropping traffic with %zu peer(s)",
               call->u.drop.n);
        nd_complete(call, 0);
        return;
    }
    nd_complete(call, DSYNC_EINVAL);
}

#define MAX_POLL 64

static void *loop_main(void *arg)
{
    dsync_node *n = arg;
    uint64_t next_deadline = ut_now_ms();
    struct pollfd fds[MAX_POLL];
    for (;;) {
        uint64_t now = ut_now_ms();
        int timeout = next_deadline <= now          ? 0
                      : next_deadline - now > 60000 ? 60000
                                                    : (int)(next_deadline - now);
        fds[0] = (struct pollfd){.fd = n->wake_fd, .events = POLLIN};
        /* The queue's Redis flush in flight, if any (a negative fd is
         * ignored by poll). */
        fds[1] = (struct pollfd){.fd = nd_queue_pollfd(n), .events = POLLIN};
        size_t nfds = 2;
        if (n->net) nfds += nt_pollfds(n->net, fds + 2, MAX_POLL - 2);
        int pr = poll(fds, nfds, timeout);
        if (pr < 0 && errno != EINTR)
            ut_log(&n->log, DSYNC_LOG_ERROR, "node loop: poll: %s", strerror(errno));
        if (pr > 0 && (fds[0].revents & POLLIN)) {
            uint64_t count;
            if (read(n->wake_fd, &count, sizeof count) < 0 && errno != EAGAIN)
                ut_log(&n->log, DSYNC_LOG_ERROR, "node loop: eventfd: %s", strerror(errno));
        }
        /* Peers first, and what they committed applied: a leader that
         * learns of new commits this turn, and a node whose view changed,
         * answer the calls below from the fresher state. */
        uint64_t turn_start = ut_now_ms();
        nd_cache_touches(n);
        if (pr > 0 && n->net) nt_handle(n->net, fds + 2, nfds - 2, turn_start);
        /* A flush that landed: its calls answered before this turn's work. */
        if (fds[1].revents) nq_redis_land(n, false);
        nd_log_reap(n); /* a flush that ended: commits, held acks out */
        if (raft_has_ready(n->raft)) nd_raft_process(n);
        /* A turn that ran long (a slow fsync, Redis, the scheduler) may have
         * left frames unread that say this node was cut off: for a while
         * its cache copies are not served (node_cache.c). */
        if (n->last_turn_ms > nd_election_ms(n) / 4)
            n->quiet_until = turn_start + nd_election_ms(n) / 2;

        pthread_mutex_lock(&n->mu);
        nd_call *batch = n->queue_head;
        n->queue_head = n->queue_tail = NULL;
        bool closing = n->closing;
        pthread_mutex_unlock(&n->mu);
        /* Again: a caller's hits before its call are in the LRU before it. */
        nd_cache_touches(n);

        now = ut_now_ms();
        while (batch) {
            nd_call *next = batch->next;
            batch->next = NULL;
            if (closing)
                nd_complete(batch, DSYNC_ECLOSED);
            else
                handle(n, batch, now);
            batch = next;
        }
        if (closing) break;
        now = ut_now_ms();
        next_deadline = nd_raft_tick(n, now);
        uint64_t locks = nd_locks_tick(n, now);
        uint64_t queue = nd_queue_tick(n, now);
        uint64_t cache = nd_cache_tick(n, now);
        nd_queue_flush(n);
        nd_raft_process(n);
        nd_cache_process(n);
        /* What this turn applied may bring a lease or a parked call due. */
        uint64_t after = nd_locks_tick(n, ut_now_ms());
        if (raft_has_ready(n->raft)) nd_raft_process(n);
        if (locks < next_deadline) next_deadline = locks;
        n->last_turn_ms = ut_now_ms() - turn_start;
        if (queue < next_deadline) next_deadline = queue;
        if (cache < next_deadline) next_deadline = cache;
        if (after < next_deadline) next_deadline = after;
        /* The Redis flush this turn sent, or one read to its end since. */
        uint64_t flight = nd_queue_flight_deadline(n);
        if (flight < next_deadline) next_deadline = flight;
        uint64_t deferred = nd_log_deadline(n); /* a follower's flush put off */
        if (deferred < next_deadline) next_deadline = deferred;
    }
    return NULL;
}

int dsync_node_open(const dsync_config *cfg, dsync_node **out)
{
    char err[256];
    *out = NULL;
    if (dsync_config_validate(cfg, err, sizeof err) != 0) return DSYNC_ECONFIG;

    dsync_node *n = calloc(1, sizeof *n);
    if (!n) return DSYNC_ENOMEM;
    n->cfg = *cfg;
    n->log.fn = cfg->log_fn;
    n->log.ctx = cfg->log_ctx;
    n->log.level = cfg->log_level;
    n->started_ms = ut_now_ms();
    n->wake_fd = -1;

    int rc = DSYNC_ENOMEM;
    n->metrics = dsync_metrics_new();
    if (!n->metrics) goto fail;
    n->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (n->wake_fd < 0) {
        rc = DSYNC_EIO;
        goto fail;
    }
    if ((rc = nd_locks_open(n)) != 0) goto fail;
    if ((rc = nd_raft_open(n)) != 0) {
        /* nd_raft_open has logged why (a corrupt log names the record). */
        goto fail_locks;
    }
    if ((rc = nd_queue_open(n)) != 0) goto fail_raft;
    if ((rc = nd_cache_open(n)) != 0) goto fail_queue;
    if (pthread_mutex_init(&n->mu, NULL) != 0) {
        rc = DSYNC_ENOMEM;
        goto fail_cache;
    }
    if (pthread_create(&n->thread, NULL, loop_main, n) != 0) {
        rc = DSYNC_ENOMEM;
        pthread_mutex_destroy(&n->mu);
        goto fail_cache;
    }
    ut_log(&n->log, DSYNC_LOG_INFO, "node %" PRIu64 " open: %zu member(s), data in %s",
           cfg->node_id, n->n_voters, cfg->data_dir[0] ? cfg->data_dir : "memory only");
    /* A node alone leads at once and commits its first view of live members
     * a tick later; wait for it (bounded), so the cache and a queue on Redis
     * serve from the first call. A cluster's nodes answer 503 until theirs. */
    for (int i = 0; !n->net && i < 200; i++) {
        dsync_queue_state st;
        if (dsync_queue_state_get(n, NULL, &st) != 0) break;
        uint64_t epoch = st.view_epoch;
        dsync_queue_state_free(&st);
        if (epoch) break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    *out = n;
    return 0;

fail_cache:
    nd_cache_close(n);
fail_queue:
    nd_queue_close(n);
fail_raft:
    nd_raft_close(n);
fail_locks:
    nd_locks_close(n);
fail:
    if (n->wake_fd >= 0) close(n->wake_fd);
    dsync_metrics_free(n->metrics);
    free(n);
    return rc;
}

void dsync_node_close(dsync_node *n)
{
    if (!n) return;
    pthread_mutex_lock(&n->mu);
    n->closing = true;
    pthread_mutex_unlock(&n->mu);
    nd_wake(n);
    pthread_join(n->thread, NULL);

    /* The loop has stopped: fail what is still parked, then late submits
     * see closing and never queue. */
    for (nd_call *c = n->parked; c;) {
        nd_call *next = c->next;
        nd_complete(c, DSYNC_ECLOSED);
        c = next;
    }
    n->parked = NULL;
    nd_raft_fail_all(n, DSYNC_ECLOSED);
    nd_cache_close(n);
    nd_queue_close(n);
    nd_raft_close(n);
    nd_locks_close(n);
    close(n->wake_fd);
    pthread_mutex_destroy(&n->mu);
    dsync_metrics_free(n->metrics);
    free(n);
}

int dsync_node_health(dsync_node *n, dsync_health *out)
{
    nd_call call = {.kind = ND_CALL_HEALTH, .u.health = out};
    return nd_submit(n, &call);
}

int dsync_node_metrics(dsync_node *n, char **text, size_t *len)
{
    /* The registry is thread-safe; rendering needs no trip to the loop. */
    return dsync_metrics_render(n->metrics, text, len);
}

dsync_metrics *dsync_node_metrics_registry(dsync_node *n)
{
    return n->metrics;
}
