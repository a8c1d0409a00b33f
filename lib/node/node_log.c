/*
 * node_log.c: the Raft log written by a thread of its own.
 *
 * The loop used to call fdatasync itself, and for the 0.3 to 0.7 ms the
 * disk took it read no socket: acks waited, so commits waited, so did the
 * callers and the proposals of the next batch. Now the loop hands each
 * batch of records to the writer thread (st_log_flush_*) and goes on (at
 * light load, a single entry after the disk sat idle, it still flushes
 * itself: see disk_idle below); while
 * one flush is out, the next batch collects in the store's buffer and
 * leaves as one write the moment the disk is free (group commit, with the
 * batch as large as the disk is slow). etcd's raft calls this asynchronous
 * storage writes; raft.h says what it asks of us:
 *
 *  - a leader's APPEND, HEARTBEAT and SNAPSHOT messages go at once
 *    (node_raft.c sends them before handing the entries over);
 *  - every other message (an ack, a vote, a read answer) waits until all
 *    that was handed to storage before it is durable: it is held here and
 *    sent when the flush that covers it ends;
 *  - when a flush ends, raft_synced(index, term) of its last entry: the
 *    leader counts itself toward a majority only up to there (what is
 *    committed is applied at once: it is durable on a majority already);
 *  - a snapshot (saved or installed) drains the writer first; closing
 *    joins it (a flush out finishes or not: nothing acknowledged waits
 *    on what is still buffered).
 *
 * A flush covers the held messages queued before it began; messages held
 * after that wait for the next one, which begins as the last ends. So
 * every message waits for every write handed over before it, never for
 * one handed over after it. A commit index alone is not worth a flush: it
 * rides with the next one, as it did before (node_raft.c, persist).
 *
 * A follower whose answers no commit waits on (raft_ready.unhurried: the
 * leader has enough other followers) puts its flush off by up to
 * ND_LOG_DEFER_MS, so it writes one batch every few milliseconds instead
 * of beside every flush of the followers that decide the commits; a vote,
 * a heartbeat or read answer, or an entry a commit waits on ends the wait.
 */
#include <inttypes.h>
#include <string.h>

#include "node_internal.h"

/* The longest a follower puts off writing entries no commit waits on
 * (raft_ready.unhurried), to write them with later ones in one flush. A
 * vote, a heartbeat or read answer, or an entry a commit waits on ends
 * the wait at once. */
#define ND_LOG_DEFER_MS 5

static int flush_job(void *arg)
{
    return st_log_flush_run(arg);
}

int nd_log_open(dsync_node *n)
{
    nd_log *w = &n->wal;
    ut_buf_init(&w->flush.data);
    ut_buf_init(&w->held);
    return n->store ? nd_writer_start(&w->wr, n, flush_job, &w->flush) : 0;
}

void nd_log_close(dsync_node *n)
{
    nd_log *w = &n->wal;
    /* A flush still out runs to its end; nothing waits on it now. */
    nd_writer_stop(&w->wr);
    ut_buf_free(&w->flush.data);
    ut_buf_free(&w->held);
}

/* ---- held messages ---------------------------------------------------------- */

static void release(dsync_node *n, size_t upto)
{
    nd_log *w = &n->wal;
    const unsigned char *p = (const unsigned char *)w->held.data;
    for (size_t off = 0; off < upto;) {
        uint64_t to = ut_get_le(p + off, 8);
        size_t len = (size_t)ut_get_le(p + off + 8, 4);
        if (n->net) nt_send(n->net, to, ND_FRAME_RAFT, p + off + 12, len);
        off += 12 + len;
    }
    if (upto < w->held.len) memmove(w->held.data, w->held.data + upto, w->held.len - upto);
    w->held.len -= upto;
    w->held_covered = 0;
    w->urgent_end = w->urgent_end > upto ? w->urgent_end - upto : 0;
}

bool nd_log_waiting(const dsync_node *n)
{
    return n->wal.wr.busy || n->wal.pending_sync || n->wal.held.len;
}

void nd_log_send(dsync_node *n, uint64_t to, const void *frame, size_t len, bool append_answer)
{
    nd_log *w = &n->wal;
    if (!nd_log_waiting(n)) {
        nt_send(n->net, to, ND_FRAME_RAFT, frame, len);
        return;
    }
    unsigned char hdr[12];
    ut_put_le(hdr, to, 8);
    ut_put_le(hdr + 8, len, 4);
    /* Out of memory, the message is lost: Raft resends what matters. */
    if (ut_buf_reserve(&w->held, sizeof hdr + len) != 0) return;
    ut_buf_append(&w->held, hdr, sizeof hdr);
    ut_buf_append(&w->held, frame, len);
    if (!append_answer) w->urgent_end = w->held.len;
}

/* ---- flushes ------------------------------------------------------------ */

void nd_log_handed(dsync_node *n, uint64_t index, uint64_t term, size_t entries, bool must_sync,
                   bool unhurried)
{
    nd_log *w = &n->wal;
    if (entries) {
        w->pending_index = index;
        w->pending_term = term;
        w->pending_entries += entries;
    }
    if (!must_sync) return;
    if (!w->pending_sync) {
        /* The first records of a flush to come: deferrable if they may
         * wait, until ND_LOG_DEFER_MS from now. */
        w->deferrable = unhurried;
        w->defer_until_ms = ut_now_ms() + ND_LOG_DEFER_MS;
    } else if (!unhurried) {
        w->deferrable = false;
    }
    w->pending_sync = true;
}

/* Whether the flush due may be put off: it carries only unhurried
 * records, and no frame but answers to appends waits for it (held after
 * the flush out began, if one is). */
static bool may_defer(const nd_log *w)
{
    return w->pending_sync && w->deferrable && w->urgent_end <= w->held_covered;
}

/* Whether the flush due waits for more now. */
static bool deferred(const nd_log *w)
{
    return may_defer(w) && ut_now_ms() < w->defer_until_ms;
}

uint64_t nd_log_deadline(const dsync_node *n)
{
    const nd_log *w = &n->wal;
    bool due = may_defer(w) && !w->wr.busy && w->wr.started && !n->store_broken;
    return due ? w->defer_until_ms : UINT64_MAX;
}

static void finished(dsync_node *n, uint64_t index, uint64_t term, size_t entries, uint64_t took_ns)
{
    dsync_series_observe(n->lm.fsync_seconds, (double)took_ns / 1e9);
    if (entries) {
        dsync_series_observe(n->lm.batch_entries, (double)entries);
        raft_synced(n->raft, index, term);
    }
}

void nd_log_kick(dsync_node *n)
{
    nd_log *w = &n->wal;
    if (!w->wr.started || w->wr.busy || n->store_broken || deferred(w)) return;
    if (!w->pending_sync) {
        /* Nothing handed over waits for the disk: what was held only
         * waited for the flush that just ended. */
        if (w->held.len) release(n, w->held.len);
        return;
    }
    if (st_log_flush_begin(n->store, &w->flush) != 0) {
        nd_raft_broken(n, "writing the log");
        return;
    }
    w->job_index = w->pending_index;
    w->job_term = w->pending_term;
    w->job_entries = w->pending_entries;
    w->pending_entries = 0;
    w->pending_sync = w->deferrable = false;
    w->held_covered = w->held.len;
    nd_writer_hand(&w->wr);
}

#define ND_LOG_IDLE_NS 100000
#define ND_LOG_SLOW_NS 50000000ull         /* 50 ms: a tenth of an election timeout */
#define ND_LOG_SLOW_PAUSE_NS 2000000000ull /* 2 s */

/* A flush has ended, on the writer or on the loop: the store told, the
 * leader told how far its own log is durable, the messages the flush
 * covers out (covered bytes of held). False when the store broke. */
static bool flush_ended(dsync_node *n, int rc, uint64_t took_ns, uint64_t index, uint64_t term,
                        size_t entries, size_t covered, dsync_series *by)
{
    nd_log *w = &n->wal;
    if (st_log_flush_end(n->store, &w->flush, rc) != 0) {
        nd_raft_broken(n, "writing the log");
        return false;
    }
    uint64_t now = ut_now_ns();
    w->idle_since_ns = now;
    if (took_ns > ND_LOG_SLOW_NS) w->loop_flush_after_ns = now + ND_LOG_SLOW_PAUSE_NS;
    dsync_series_add(by, 1);
    finished(n, index, term, entries, took_ns);
    bool released = covered > 0;
    release(n, covered);
    /* The acks out the moment the disk allows, not after the rest of the
     * turn: on the one-client path they are what the leader waits for. */
    if (released && n->net) nt_tick(n->net, ut_now_ms());
    return true;
}

/* Light load: the disk has been idle this long since the loop last saw
 * a flush end, and the flush due carries at most one entry (one client,
 * a trickle). Then the loop runs it itself: handing it to the writer
 * would cost two thread wake-ups, about 10% of one client's lock cycles/s
 * here, and with one entry in flight there is little else for the loop to
 * do meanwhile. Under load the writer keeps the loop reading acks while
 * the disk works. The price is that the loop reads nothing, sends no
 * heartbeat, for as long as that fdatasync takes: after one that took
 * over ND_LOG_SLOW_NS (the disk hiccups), every flush goes to the writer
 * for ND_LOG_SLOW_PAUSE_NS. */
static bool disk_idle(const nd_log *w)
{
    if (w->wr.busy || w->pending_entries > 1 || !w->idle_since_ns) return false;
    uint64_t now = ut_now_ns();
    return now - w->idle_since_ns >= ND_LOG_IDLE_NS && now >= w->loop_flush_after_ns;
}

void nd_log_kick_unless_idle(dsync_node *n)
{
    if (!disk_idle(&n->wal)) nd_log_kick(n);
}

void nd_log_flush_if_idle(dsync_node *n)
{
    nd_log *w = &n->wal;
    if (!w->wr.started || w->wr.busy || n->store_broken) return;
    if (!w->pending_sync || !disk_idle(w) || deferred(w)) {
        nd_log_kick(n);
        return;
    }
    if (st_log_flush_begin(n->store, &w->flush) != 0) {
        nd_raft_broken(n, "writing the log");
        return;
    }
    uint64_t index = w->pending_index, term = w->pending_term;
    size_t entries = w->pending_entries;
    w->pending_entries = 0;
    w->pending_sync = w->deferrable = false;
    uint64_t start = ut_now_ns();
    int rc = st_log_flush_run(&w->flush);
    /* Nothing was out: every held message waited for this flush. */
    flush_ended(n, rc, ut_now_ns() - start, index, term, entries, w->held.len, n->lm.flushes_loop);
}

void nd_log_reap(dsync_node *n)
{
    nd_log *w = &n->wal;
    int rc;
    uint64_t took;
    if (!nd_writer_reap(&w->wr, &rc, &took)) {
        /* A deferred flush whose time has come. */
        if (w->pending_sync && !w->wr.busy && !deferred(w)) nd_log_kick(n);
        return;
    }
    if (flush_ended(n, rc, took, w->job_index, w->job_term, w->job_entries, w->held_covered,
                    n->lm.flushes_writer))
        nd_log_kick(n);
}

void nd_log_drain(dsync_node *n)
{
    nd_log *w = &n->wal;
    if (!w->wr.started) return;
    w->deferrable = false;
    nd_log_kick(n);
    while (w->wr.busy && !n->store_broken) {
        nd_writer_wait(&w->wr);
        nd_log_reap(n); /* begins the next flush when one is due */
    }
}
