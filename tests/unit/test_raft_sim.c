/*
 * test_raft_sim.c: deterministic simulation of whole Raft clusters.
 *
 * 3 or 5 nodes in one process, a simulated clock (ticks) and a network that
 * drops, duplicates, delays and reorders messages and cuts nodes off, all
 * drawn from one seeded generator. Nodes crash (losing whatever was not
 * persisted) and restart from their durable state. Nodes compact their
 * logs into snapshots, so followers left behind catch up by
 * InstallSnapshot. Each state machine is a hash chain of what it applied,
 * and a snapshot is that hash: installing one must land exactly where
 * applying the entries would have. Every message goes
 * through the wire codec. After every step the four safety properties of
 * the Raft paper (Figure 3) are checked; after the faults stop, a leader
 * must emerge and every node must apply everything within a bound.
 *
 * Seeds with seed % 7 < 2 (1, 7, 8, 14, 15, ...; 7 shares no factor with
 * the periods that pick size, harshness, batching, compaction and
 * membership, so these cover every mix of them) persist asynchronously:
 * each node hands every ready's writes to a simulated storage thread (a
 * FIFO queue) and goes on with raft_advance_unsynced. Writes complete a few
 * at a time, at a rate that varies by seed, with now and then a disk that
 * stalls; each releases the messages that waited for it and is reported
 * with raft_synced. A crash keeps a random prefix of the queue and loses
 * the rest.
 *
 * DSYNC_SIM_SEEDS=N runs seeds 1..N (default 100); DSYNC_SEED=S runs one.
 * A failure prints its seed and step; the seed alone reproduces it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "dsync/errors.h"
#include "raft/raft.h"

#define MAXN 5

/* Asynchronous mode: one ready's write as the storage thread holds it,
 * with the messages that may leave only once it, and so everything queued
 * before it, is durable. */
typedef struct {
    raft_entry *entries; /* copies, data owned here */
    size_t n_entries;
    bool has_hs;
    raft_hard_state hs;
    ut_buf *msgs; /* encoded */
    size_t n_msgs;
} pending_write;

typedef struct {
    raft *r;
    bool up;
    raft_hard_state hs;
    /* Durable: a snapshot, then log[k] holding index snap_index + 1 + k. */
    uint64_t snap_index, snap_term, snap_chain;
    ut_buf snap_conf; /* the configuration stored with the snapshot */
    raft_entry *log;  /* data owned here */
    size_t n_log, cap_log;
    uint64_t *chain; /* chain[k]: hash of entries 1 .. snap_index + 1 + k */
    uint64_t applied;
    uint64_t sm_chain; /* the state machine: hash of entries 1 .. applied */
    raft_role last_role;
    uint64_t last_term;
    pending_write *writes; /* asynchronous mode: not yet durable, oldest first */
    size_t n_writes, cap_writes;
    uint64_t stalled_until;                    /* its disk completes nothing before then */
    size_t unhurried_entries, hurried_entries; /* handed to persist, by raft_ready.unhurried */
} node;

typedef struct {
    uint64_t at;
    int to;
    unsigned char *bytes;
    size_t len;
} packet;

typedef struct {
    uint64_t seed, rng, now;
    int n;
    uint64_t ids[MAXN];
    node nodes[MAXN];
    bool cut[MAXN]; /* node cut off from everyone */
    double drop, dup;
    double p_crash, p_restart, p_cut; /* per step, for one random node */
    uint64_t compact_every;           /* 0: never compact */
    int n_initial;                    /* members at the start; the rest join later */
    double p_conf;                    /* per step: the leader adds or removes a node */
    uint64_t conf_changes;
    uint64_t snapshots_installed;
    bool scripted; /* named scenarios: no PreVote/CheckQuorum */
    /* Asynchronous persistence (see the header). */
    bool async;      /* nodes write through a storage thread */
    double p_write;  /* per step and node: the storage thread completes writes */
    double p_stall;  /* per step, for one random node: its disk stalls a while */
    bool hold[MAXN]; /* scripted: node i's writes complete only when told */
    /* How hard that was exercised, for DSYNC_SIM_VERBOSE. */
    uint64_t stale_syncs; /* raft_synced for entries truncated meanwhile */
    uint64_t writes_lost; /* queued writes a crash took */
    size_t max_writes;    /* longest queue */
    /* Scripted scenarios may drop chosen messages. */
    bool (*drop_fn)(const raft_msg *m);
    packet *net;
    size_t n_net, cap_net;
    /* global knowledge for the checks */
    uint64_t *committed_term; /* by index: term of the entry applied there */
    uint64_t *committed_val;
    uint64_t *committed_by;    /* a term >= the one the entry committed in */
    uint64_t *committed_chain; /* hash of the committed entries up to here */
    size_t n_committed, cap_committed;
    uint64_t *leader_of_term;
    size_t cap_terms;
    uint64_t next_value;
    /* reads: context -> highest index applied anywhere when it was asked */
    uint64_t *read_floor;
    size_t cap_reads;
    uint64_t next_read, reads_answered;
    char fail[256];
    int step;
} sim;

static uint64_t rnd(sim *s)
{
    return ut_rand_next(&s->rng);
}

static bool chance(sim *s, double p)
{
    return (double)(rnd(s) % 1000000) < p * 1000000.0;
}

#define CHECK(s, cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond) && !(s)->fail[0]) snprintf((s)->fail, sizeof(s)->fail, __VA_ARGS__);           \
    } while (0)

static uint64_t entry_value(const raft_entry *e)
{
    uint64_t v = 0;
    if (e->len == 8) memcpy(&v, e->data, 8);
    return v;
}

static uint64_t chain_next(uint64_t prev, uint64_t term, uint64_t value)
{
    return ut_mix64(prev ^ ut_mix64(term * 1000003 + value));
}

static void start_node(sim *s, int i)
{
    node *nd = &s->nodes[i];
    raft_member members[MAXN];
    int n_initial = s->n_initial ? s->n_initial : s->n;
    for (int k = 0; k < n_initial; k++)
        members[k] = (raft_member){.id = s->ids[k]};
    raft_config cfg = {
        .id = s->ids[i],
        .members = members,
        .n_members = (size_t)n_initial,
        .join = i >= n_initial,
        .snapshot_conf = nd->snap_conf.len ? nd->snap_conf.data : NULL,
        .snapshot_conf_len = nd->snap_conf.len,
        .election_tick = 10,
        .heartbeat_tick = 1,
        /* Small batches split an old-term entry from the new leader's
         * no-op, the window in which §5.4.2 matters (Figure 8). */
        .max_inflight = 1 + (size_t)(s->seed % 4),
        .max_msg_entries = 1 + (size_t)(s->seed / 4 % 3),
        .pre_vote = !s->scripted,
        .check_quorum = !s->scripted,
        .seed = s->seed * 31 + (uint64_t)i + s->now,
        .hard_state = nd->hs,
        .snapshot_index = nd->snap_index,
        .snapshot_term = nd->snap_term,
        .snapshot = &nd->snap_chain,
        .snapshot_len = sizeof nd->snap_chain,
        .entries = nd->log,
        .n_entries = nd->n_log,
        /* The state machine restarts from the snapshot, then the log. */
        .applied = nd->snap_index,
    };
    nd->r = raft_new(&cfg);
    assert_non_null(nd->r);
    nd->up = true;
    nd->applied = nd->snap_index;
    nd->sm_chain = nd->snap_chain;
    nd->last_role = RAFT_FOLLOWER;
}

/* The durable log of node i takes entries e (overwriting from e[0]). */
static void persist_entries(node *nd, const raft_entry *e, size_t n)
{
    if (n == 0) return;
    size_t from = (size_t)(e[0].index - nd->snap_index - 1);
    while (nd->n_log > from)
        free(nd->log[--nd->n_log].data);
    for (size_t k = 0; k < n; k++) {
        if (nd->n_log == nd->cap_log) {
            nd->cap_log = nd->cap_log ? nd->cap_log * 2 : 64;
            nd->log = realloc(nd->log, nd->cap_log * sizeof *nd->log);
            nd->chain = realloc(nd->chain, nd->cap_log * sizeof *nd->chain);
        }
        raft_entry c = e[k];
        c.data = NULL;
        if (e[k].len) {
            c.data = malloc(e[k].len);
            memcpy(c.data, e[k].data, e[k].len);
        }
        uint64_t prev = nd->n_log ? nd->chain[nd->n_log - 1] : nd->snap_chain;
        nd->chain[nd->n_log] = chain_next(prev, c.term, entry_value(&c));
        nd->log[nd->n_log++] = c;
    }
}

/* The durable log drops entries up to index (all of them if it has fewer)
 * behind a snapshot of term `term` and state `chain`. */
static void persist_snapshot(node *nd, uint64_t index, uint64_t term, uint64_t chain,
                             const void *conf, size_t conf_len)
{
    nd->snap_conf.len = 0;
    ut_buf_append(&nd->snap_conf, conf, conf_len);
    size_t drop =
        index >= nd->snap_index + nd->n_log ? nd->n_log : (size_t)(index - nd->snap_index);
    for (size_t k = 0; k < drop; k++)
        free(nd->log[k].data);
    if (nd->n_log > drop) {
        memmove(nd->log, nd->log + drop, (nd->n_log - drop) * sizeof *nd->log);
        memmove(nd->chain, nd->chain + drop, (nd->n_log - drop) * sizeof *nd->chain);
    }
    nd->n_log -= drop;
    nd->snap_index = index;
    nd->snap_term = term;
    nd->snap_chain = chain;
}

static void grow_committed(sim *s, size_t k)
{
    if (k < s->cap_committed) return;
    size_t ncap = s->cap_committed ? s->cap_committed : 256;
    while (ncap <= k)
        ncap *= 2;
    uint64_t **arrays[] = {&s->committed_term, &s->committed_val, &s->committed_by,
                           &s->committed_chain};
    for (size_t a = 0; a < sizeof arrays / sizeof arrays[0]; a++) {
        *arrays[a] = realloc(*arrays[a], ncap * sizeof(uint64_t));
        memset(*arrays[a] + s->cap_committed, 0, (ncap - s->cap_committed) * 8);
    }
    s->cap_committed = ncap;
}

static void net_send(sim *s, const raft_msg *m)
{
    int to = -1;
    for (int i = 0; i < s->n; i++)
        if (s->ids[i] == m->to) to = i;
    if (to < 0)
        fail_msg("message type %d from %llu to unknown %llu", m->type, (unsigned long long)m->from,
                 (unsigned long long)m->to);
    if (s->drop_fn && s->drop_fn(m)) return;
    int copies = chance(s, s->drop) ? 0 : chance(s, s->dup) ? 2 : 1;
    for (int c = 0; c < copies; c++) {
        ut_buf b;
        ut_buf_init(&b);
        assert_int_equal(raft_msg_encode(m, &b), 0);
        if (s->n_net == s->cap_net) {
            s->cap_net = s->cap_net ? s->cap_net * 2 : 256;
            s->net = realloc(s->net, s->cap_net * sizeof *s->net);
        }
        s->net[s->n_net++] = (packet){s->now + 1 + rnd(s) % 3, to, (unsigned char *)b.data, b.len};
    }
}

/* ---- asynchronous persistence --------------------------------------------- */

static void free_write(pending_write *w)
{
    for (size_t k = 0; k < w->n_entries; k++)
        free(w->entries[k].data);
    free(w->entries);
    for (size_t k = 0; k < w->n_msgs; k++)
        ut_buf_free(&w->msgs[k]);
    free(w->msgs);
}

static void make_durable(node *nd, const pending_write *w)
{
    persist_entries(nd, w->entries, w->n_entries);
    if (w->has_hs) nd->hs = w->hs;
}

/* Node i hands rd's writes to its storage thread. A leader's APPEND,
 * HEARTBEAT and SNAPSHOT leave at once (thesis §10.2.1: it counts itself
 * only up to what is durable); any other message reports state that must
 * be durable first, so it waits for this write and every one before it. */
static void queue_write(sim *s, int i, const raft_ready *rd)
{
    node *nd = &s->nodes[i];
    pending_write w = {
        .n_entries = rd->n_entries, .has_hs = rd->hard_state_changed, .hs = rd->hard_state};
    if (rd->n_entries) {
        w.entries = calloc(rd->n_entries, sizeof *w.entries);
        for (size_t k = 0; k < rd->n_entries; k++) {
            w.entries[k] = rd->entries[k];
            if (rd->entries[k].len) {
                w.entries[k].data = malloc(rd->entries[k].len);
                memcpy(w.entries[k].data, rd->entries[k].data, rd->entries[k].len);
            }
        }
    }
    /* With nothing to write and nothing queued, there is nothing to wait for. */
    bool wait = rd->n_entries || rd->hard_state_changed || nd->n_writes;
    for (size_t k = 0; k < rd->n_msgs; k++) {
        const raft_msg *m = &rd->msgs[k];
        if (!wait || m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
            m->type == RAFT_MSG_SNAPSHOT) {
            if (!s->cut[i]) net_send(s, m);
            continue;
        }
        w.msgs = realloc(w.msgs, (w.n_msgs + 1) * sizeof *w.msgs);
        ut_buf_init(&w.msgs[w.n_msgs]);
        assert_int_equal(raft_msg_encode(m, &w.msgs[w.n_msgs]), 0);
        w.n_msgs++;
    }
    if (!w.n_entries && !w.has_hs && !w.n_msgs) return;
    if (nd->n_writes == nd->cap_writes) {
        nd->cap_writes = nd->cap_writes ? nd->cap_writes * 2 : 16;
        nd->writes = realloc(nd->writes, nd->cap_writes * sizeof *nd->writes);
    }
    nd->writes[nd->n_writes++] = w;
    if (nd->n_writes > s->max_writes) s->max_writes = nd->n_writes;
}

/* The storage thread finishes node i's oldest write: its entries and hard
 * state are durable and the messages that waited for it leave (unless the
 * node is cut off by then). Returns whether it wrote entries, with the last
 * one in *index and *term for raft_synced. */
static bool complete_write(sim *s, int i, uint64_t *index, uint64_t *term)
{
    node *nd = &s->nodes[i];
    pending_write w = nd->writes[0];
    nd->n_writes--;
    memmove(nd->writes, nd->writes + 1, nd->n_writes * sizeof *nd->writes);
    make_durable(nd, &w);
    for (size_t k = 0; k < w.n_msgs && !s->cut[i]; k++) {
        raft_msg m;
        assert_int_equal(raft_msg_decode(w.msgs[k].data, w.msgs[k].len, &m), 0);
        net_send(s, &m);
        raft_msg_free_entries(&m);
    }
    bool wrote = w.n_entries > 0;
    if (wrote) {
        *index = w.entries[w.n_entries - 1].index;
        *term = w.entries[w.n_entries - 1].term;
    }
    free_write(&w);
    return wrote;
}

static void report_synced(sim *s, int i, uint64_t index, uint64_t term)
{
    raft *r = s->nodes[i].r;
    /* The core must ignore a write whose last entry is no longer there. */
    if (index > raft_snapshot_index(r) && raft_term_at(r, index) != term) s->stale_syncs++;
    raft_synced(r, index, term);
}

/* Completes node i's n oldest writes (all of them: SIZE_MAX), each reported
 * as it completes. Not between raft_ready_get and advance. */
static void complete_writes(sim *s, int i, size_t n)
{
    for (size_t k = 0; k < n && s->nodes[i].n_writes; k++) {
        uint64_t index, term;
        if (complete_write(s, i, &index, &term)) report_synced(s, i, index, term);
    }
}

static void crash_node(sim *s, int i)
{
    node *nd = &s->nodes[i];
    /* The storage thread had made some prefix of its queue durable (the
     * messages waiting for it never left); the rest is lost. */
    if (nd->n_writes) {
        size_t durable = (size_t)(rnd(s) % (nd->n_writes + 1));
        for (size_t k = 0; k < nd->n_writes; k++) {
            if (k < durable) make_durable(nd, &nd->writes[k]);
            free_write(&nd->writes[k]);
        }
        s->writes_lost += nd->n_writes - durable;
        nd->n_writes = 0;
    }
    raft_free(nd->r);
    nd->r = NULL;
    nd->up = false;
}

static void record_apply(sim *s, int i, const raft_entry *e)
{
    node *nd = &s->nodes[i];
    CHECK(s, e->index == nd->applied + 1, "node %d applied %llu after %llu", i,
          (unsigned long long)e->index, (unsigned long long)nd->applied);
    nd->applied = e->index;
    nd->sm_chain = chain_next(nd->sm_chain, e->term, entry_value(e));
    size_t k = (size_t)e->index;
    grow_committed(s, k);
    if (s->committed_term[k] == 0) {
        s->committed_term[k] = e->term;
        s->committed_val[k] = entry_value(e);
        s->committed_chain[k] = nd->sm_chain;
        /* It committed in a term no later than the applier's current one. */
        s->committed_by[k] = raft_term(nd->r);
        if (k > s->n_committed) s->n_committed = k;
    } else {
        /* State Machine Safety: one entry per index, everywhere. */
        CHECK(s, s->committed_term[k] == e->term && s->committed_val[k] == entry_value(e),
              "node %d applied a different entry at %zu", i, k);
        CHECK(s, s->committed_chain[k] == nd->sm_chain,
              "node %d reached entry %zu with a different state", i, k);
    }
}

/* A snapshot from the leader replaces node i's state machine. */
static void install_snapshot(sim *s, int i, const raft_snapshot *snap)
{
    node *nd = &s->nodes[i];
    uint64_t chain = 0;
    CHECK(s, snap->len == sizeof chain, "node %d got a snapshot of %zu bytes", i, snap->len);
    if (snap->len == sizeof chain) memcpy(&chain, snap->data, sizeof chain);
    CHECK(s, snap->index > nd->applied, "node %d installed snapshot %llu over applied %llu", i,
          (unsigned long long)snap->index, (unsigned long long)nd->applied);
    grow_committed(s, (size_t)snap->index);
    /* State Machine Safety through snapshots: the image is what applying
     * the committed entries gives. */
    CHECK(s, snap->index <= s->n_committed && s->committed_chain[snap->index] == chain,
          "node %d installed a snapshot at %llu that is not the committed state", i,
          (unsigned long long)snap->index);
    persist_snapshot(nd, snap->index, snap->term, chain, snap->conf, snap->conf_len);
    nd->applied = snap->index;
    nd->sm_chain = chain;
    s->snapshots_installed++;
}

static void compact_now(sim *s, int i);

/* Node i snapshots its state machine and compacts, now and then. */
static void maybe_compact(sim *s, int i)
{
    node *nd = &s->nodes[i];
    if (!s->compact_every || nd->applied < nd->snap_index + s->compact_every) return;
    compact_now(s, i);
}

/* Snapshot of everything applied: the image, its term and configuration. */
static void compact_now(sim *s, int i)
{
    node *nd = &s->nodes[i];
    /* Compaction rewrites the durable log: the writes queued before it
     * land first. */
    complete_writes(s, i, SIZE_MAX);
    uint64_t term = raft_term_at(nd->r, nd->applied);
    const void *conf;
    size_t conf_len;
    assert_int_equal(raft_conf_at(nd->r, nd->applied, &conf, &conf_len), 0);
    ut_buf copy;
    ut_buf_init(&copy);
    ut_buf_append(&copy, conf, conf_len);
    assert_int_equal(raft_compact(nd->r, nd->applied, &nd->sm_chain, sizeof nd->sm_chain), 0);
    persist_snapshot(nd, nd->applied, term, nd->sm_chain, copy.data, copy.len);
    ut_buf_free(&copy);
}

static void process_ready(sim *s, int i)
{
    node *nd = &s->nodes[i];
    for (int round = 0; round < 10 && nd->up && raft_has_ready(nd->r); round++) {
        raft_ready rd;
        raft_ready_get(nd->r, &rd);
        if (rd.unhurried)
            nd->unhurried_entries += rd.n_entries;
        else
            nd->hurried_entries += rd.n_entries;
        /* A snapshot replaces the log, so every write queued before it
         * lands first; the core hears of the last entry they wrote once
         * this ready is done (nothing may come between get and advance). */
        bool drained = false;
        uint64_t drained_index = 0, drained_term = 0;
        if (rd.has_snapshot) {
            while (nd->n_writes)
                drained |= complete_write(s, i, &drained_index, &drained_term);
            install_snapshot(s, i, &rd.snapshot);
        }
        if (s->async) {
            queue_write(s, i, &rd);
        } else {
            /* Persist first, then send: the rule this whole check relies on. */
            if (rd.hard_state_changed) nd->hs = rd.hard_state;
            persist_entries(nd, rd.entries, rd.n_entries);
            for (size_t k = 0; k < rd.n_msgs; k++)
                if (!s->cut[i]) net_send(s, &rd.msgs[k]);
        }
        for (size_t k = 0; k < rd.n_committed; k++)
            record_apply(s, i, &rd.committed[k]);
        for (size_t k = 0; k < rd.n_reads; k++) {
            /* Linearizability: a read covers every write applied anywhere
             * before it was asked. */
            uint64_t ctx = rd.reads[k].context;
            CHECK(s, ctx <= s->next_read && rd.reads[k].index >= s->read_floor[ctx],
                  "node %d read %llu at index %llu, below %llu applied before it", i,
                  (unsigned long long)ctx, (unsigned long long)rd.reads[k].index,
                  (unsigned long long)(ctx <= s->next_read ? s->read_floor[ctx] : 0));
            s->reads_answered++;
        }
        if (s->async)
            raft_advance_unsynced(nd->r, &rd);
        else
            raft_advance(nd->r, &rd);
        if (drained) report_synced(s, i, drained_index, drained_term);
        maybe_compact(s, i);
    }
}

static void deliver_due(sim *s)
{
    /* Deliver in a random order among those due: reordering. */
    for (;;) {
        size_t due[512], nd = 0;
        for (size_t k = 0; k < s->n_net && nd < 512; k++)
            if (s->net[k].at <= s->now) due[nd++] = k;
        if (nd == 0) return;
        size_t k = due[rnd(s) % nd];
        packet p = s->net[k];
        s->net[k] = s->net[--s->n_net];
        node *to = &s->nodes[p.to];
        if (to->up && !s->cut[p.to]) {
            raft_msg m;
            assert_int_equal(raft_msg_decode(p.bytes, p.len, &m), 0);
            /* Callers wait on this node or not, at random: followers
             * that do not hear each commit at once (raft_set_waiting).
             * Scripted cases keep the default (every node waits), but
             * for those that turn scripted off to run as in production. */
            if (!s->scripted) raft_set_waiting(to->r, rnd(s) & 1);
            raft_step(to->r, &m);
            raft_msg_free_entries(&m);
        }
        free(p.bytes);
    }
}

/* Term and chain of durable entry k (the snapshot's at its index). */
static void durable_at(const node *nd, uint64_t k, uint64_t *term, uint64_t *chain)
{
    if (k == nd->snap_index) {
        *term = nd->snap_term;
        *chain = nd->snap_chain;
    } else {
        *term = nd->log[k - nd->snap_index - 1].term;
        *chain = nd->chain[k - nd->snap_index - 1];
    }
}

static void check_invariants(sim *s)
{
    for (int i = 0; i < s->n; i++) {
        node *nd = &s->nodes[i];
        if (!nd->up || raft_get_role(nd->r) != RAFT_LEADER) continue;
        uint64_t t = raft_term(nd->r);
        if (t >= s->cap_terms) {
            size_t ncap = s->cap_terms ? s->cap_terms : 64;
            while (ncap <= t)
                ncap *= 2;
            s->leader_of_term = realloc(s->leader_of_term, ncap * sizeof(uint64_t));
            memset(s->leader_of_term + s->cap_terms, 0, (ncap - s->cap_terms) * 8);
            s->cap_terms = ncap;
        }
        /* Election Safety: one leader per term, ever. */
        CHECK(s, s->leader_of_term[t] == 0 || s->leader_of_term[t] == s->ids[i],
              "two leaders in term %llu", (unsigned long long)t);
        s->leader_of_term[t] = s->ids[i];
        /* Leader Completeness: an entry committed in term c is in the log
         * of every leader of a term after c. A deposed leader that has not
         * noticed yet may lack entries committed after it. */
        for (size_t k = raft_snapshot_index(nd->r); k <= s->n_committed; k++)
            CHECK(s,
                  k == 0 || t <= s->committed_by[k] ||
                      raft_term_at(nd->r, k) == s->committed_term[k],
                  "leader %d of term %llu lacks committed entry %zu", i, (unsigned long long)t, k);
    }
    /* Log Matching on the durable logs: same index and term, same prefix
     * (a snapshot counts as its last entry). */
    for (int a = 0; a < s->n; a++)
        for (int b = a + 1; b < s->n; b++) {
            node *x = &s->nodes[a], *y = &s->nodes[b];
            uint64_t lo = x->snap_index > y->snap_index ? x->snap_index : y->snap_index;
            uint64_t hx = x->snap_index + x->n_log, hy = y->snap_index + y->n_log;
            for (uint64_t k = hx < hy ? hx : hy; k >= lo && k > 0; k--) {
                uint64_t tx, ty, cx, cy;
                durable_at(x, k, &tx, &cx);
                durable_at(y, k, &ty, &cy);
                if (tx == ty) {
                    CHECK(s, cx == cy,
                          "logs of %d and %d agree on entry %llu's term but not before it", a, b,
                          (unsigned long long)k);
                    break; /* chains equal here imply equal before */
                }
            }
        }
}

static int leader_index(sim *s)
{
    for (int i = 0; i < s->n; i++)
        if (s->nodes[i].up && !s->cut[i] && raft_get_role(s->nodes[i].r) == RAFT_LEADER) return i;
    return -1;
}

/* Asks node i for a linearizable read, remembering what it must cover. */
static void ask_read(sim *s, int i)
{
    uint64_t ctx = s->next_read + 1;
    if ((size_t)ctx >= s->cap_reads) {
        s->cap_reads = s->cap_reads ? s->cap_reads * 2 : 256;
        s->read_floor = realloc(s->read_floor, s->cap_reads * sizeof(uint64_t));
    }
    s->read_floor[ctx] = s->n_committed;
    if (raft_read_index(s->nodes[i].r, ctx) == 0) s->next_read = ctx;
}

static void step(sim *s, bool faults)
{
    s->now++;
    for (int i = 0; i < s->n; i++)
        if (s->nodes[i].up) raft_tick(s->nodes[i].r);
    deliver_due(s);
    int l = leader_index(s);
    if (l >= 0 && chance(s, 0.3)) {
        uint64_t v = ++s->next_value, index;
        if (raft_propose(s->nodes[l].r, &v, sizeof v, &index) == 0) {
            /* Now and then the entry is one a follower's caller waits
             * for, or one every replica should hear of at once. */
            if (chance(s, 0.2))
                raft_peer_wants_commit(s->nodes[l].r, s->ids[rnd(s) % (uint64_t)s->n], index);
            else if (chance(s, 0.05))
                raft_tell_commit_at(s->nodes[l].r, index);
        }
    }
    if (l >= 0 && chance(s, s->p_conf)) {
        /* Add a node that is out, or take one out: one at a time. */
        raft_member m = {.id = s->ids[rnd(s) % (uint64_t)s->n]};
        raft_member cur[MAXN];
        size_t n = raft_members(s->nodes[l].r, cur, MAXN);
        bool in = false;
        for (size_t k = 0; k < n; k++)
            in |= cur[k].id == m.id;
        if (raft_propose_conf(s->nodes[l].r, !in, &m, NULL) == 0) s->conf_changes++;
    }
    int reader = (int)(rnd(s) % (uint64_t)s->n);
    if (s->nodes[reader].up && chance(s, 0.2)) ask_read(s, reader);
    if (faults) {
        int i = (int)(rnd(s) % (uint64_t)s->n);
        if (s->nodes[i].up && chance(s, s->p_crash))
            crash_node(s, i);
        else if (!s->nodes[i].up && chance(s, s->p_restart))
            start_node(s, i);
        if (chance(s, s->p_cut)) s->cut[i] = !s->cut[i];
        /* A stalled disk (a long fsync): the queue builds up behind it. */
        if (s->async && chance(s, s->p_stall))
            s->nodes[i].stalled_until = s->now + 10 + rnd(s) % 50;
    }
    /* Storage threads finish some of their oldest writes, so queues grow
     * to several writes and now and then entries are truncated under one.
     * Once calm, every write completes at the next step: a disk too slow
     * for the stream of proposals is overload, not a fault to recover from,
     * and the convergence bound below is about faults. */
    for (int i = 0; i < s->n; i++) {
        node *nd = &s->nodes[i];
        if (!nd->up || !nd->n_writes) continue;
        if (!faults)
            complete_writes(s, i, SIZE_MAX);
        else if (s->now >= nd->stalled_until && chance(s, s->p_write))
            complete_writes(s, i, 1 + (size_t)(rnd(s) % nd->n_writes));
    }
    for (int i = 0; i < s->n; i++)
        if (s->nodes[i].up) process_ready(s, i);
    check_invariants(s);
}

static void free_sim(sim *s)
{
    for (int i = 0; i < s->n; i++) {
        raft_free(s->nodes[i].r);
        for (size_t k = 0; k < s->nodes[i].n_log; k++)
            free(s->nodes[i].log[k].data);
        free(s->nodes[i].log);
        free(s->nodes[i].chain);
        ut_buf_free(&s->nodes[i].snap_conf);
        for (size_t k = 0; k < s->nodes[i].n_writes; k++)
            free_write(&s->nodes[i].writes[k]);
        free(s->nodes[i].writes);
    }
    for (size_t k = 0; k < s->n_net; k++)
        free(s->net[k].bytes);
    free(s->net);
    free(s->committed_term);
    free(s->committed_val);
    free(s->committed_by);
    free(s->committed_chain);
    free(s->read_floor);
    free(s->leader_of_term);
}

/* DSYNC_SIM_DEBUG=1: each node's view, when a seed does not converge. */
static void dump(sim *s)
{
    if (!getenv("DSYNC_SIM_DEBUG")) return;
    for (int i = 0; i < s->n; i++) {
        raft_member cur[MAXN];
        size_t nm = raft_members(s->nodes[i].r, cur, MAXN);
        char ids[64] = "";
        for (size_t k = 0; k < nm; k++)
            snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%llu ",
                     (unsigned long long)cur[k].id);
        print_message("node %d: %s term %llu leader %llu commit %llu last %llu applied %llu "
                      "members %s\n",
                      i, raft_role_name(raft_get_role(s->nodes[i].r)),
                      (unsigned long long)raft_term(s->nodes[i].r),
                      (unsigned long long)raft_leader(s->nodes[i].r),
                      (unsigned long long)raft_commit_index(s->nodes[i].r),
                      (unsigned long long)raft_last_index(s->nodes[i].r),
                      (unsigned long long)s->nodes[i].applied, ids);
    }
}

/* One seed: a stormy phase, then calm until everything converges. */
static int run_seed(uint64_t seed, int steps)
{
    sim s;
    memset(&s, 0, sizeof s);
    s.seed = seed;
    s.rng = seed;
    s.n = seed % 2 ? 3 : 5;
    /* Odd seeds are mild, even seeds harsh: frequent crashes and cuts
     * are what produce the interleavings of Figure 8. */
    bool harsh = (seed / 2) % 2 == 0;
    s.drop = harsh ? 0.2 : 0.05;
    s.dup = 0.02;
    s.p_crash = harsh ? 0.05 : 0.01;
    s.p_restart = harsh ? 0.2 : 0.05;
    s.p_cut = harsh ? 0.05 : 0.01;
    /* Most seeds compact, some often (so snapshots travel), some never. */
    s.compact_every = seed % 5 == 0 ? 0 : 3 + seed % 29;
    /* A third of the seeds change membership: 5 processes, 3 members at
     * first, nodes added and removed one at a time as the storm goes on. */
    if (seed % 3 == 0) {
        s.n = 5;
        s.n_initial = 3;
        s.p_conf = 0.02;
    }
    /* Asynchronous persistence on the seeds the header names, with disks
     * of three speeds. */
    if (seed % 7 < 2) {
        static const double p_write[] = {0.2, 0.5, 0.9};
        s.async = true;
        s.p_write = p_write[seed / 7 % 3];
        s.p_stall = 0.02;
    }
    for (int i = 0; i < s.n; i++)
        s.ids[i] = (uint64_t)i + 1;
    for (int i = 0; i < s.n; i++)
        start_node(&s, i);
    for (s.step = 0; s.step < steps && !s.fail[0]; s.step++)
        step(&s, true);

    /* Heal: everyone up, nobody cut, no loss, and no new membership change
     * (those the storm left in the logs still commit or are undone). A
     * change now and then taking the leader out means an election and a
     * catch-up each: the cluster would not settle, and the bounds below are
     * about recovering from faults. */
    s.drop = s.dup = 0;
    s.p_conf = 0;
    for (int i = 0; i < s.n; i++) {
        s.cut[i] = false;
        if (!s.nodes[i].up) start_node(&s, i);
    }
    /* Converged: a leader that is a member of its own latest configuration
     * (one that is taking itself out steps down once that commits, and the
     * next must catch the others up before it can commit or serve a read)
     * has committed in its own term, and every member has applied that. */
    uint64_t target = 0, target_term = 0;
    int calm;
    for (calm = 0; calm < 600 && !s.fail[0]; calm++, s.step++) {
        step(&s, false);
        int l = leader_index(&s);
        if (l < 0) continue;
        uint64_t term = raft_term(s.nodes[l].r);
        if (term != target_term) target = 0; /* a new leader: its own term's commit counts */
        uint64_t commit = raft_commit_index(s.nodes[l].r);
        if (target == 0 && raft_term_at(s.nodes[l].r, commit) == term) {
            target = commit; /* the leader has committed in its own term */
            target_term = term;
        }
        /* Every member applies everything; removed nodes hear nothing more. */
        raft_member cur[MAXN];
        size_t nm = raft_members(s.nodes[l].r, cur, MAXN);
        bool leader_member = false;
        for (size_t k = 0; k < nm; k++)
            leader_member |= cur[k].id == s.ids[l];
        bool all = target > 0 && leader_member;
        for (int i = 0; i < s.n && all; i++)
            for (size_t k = 0; k < nm; k++)
                if (cur[k].id == s.ids[i]) all = s.nodes[i].applied >= target;
        if (all) break;
    }
    if (calm >= 600) dump(&s);
    CHECK(&s, calm < 600, "no convergence within 600 calm ticks (target %llu)",
          (unsigned long long)target);
    /* Liveness of reads: once converged, a read at the leader is answered
     * within a few heartbeats. */
    uint64_t answered = s.reads_answered;
    int waited;
    for (waited = 0; waited < 100 && !s.fail[0] && s.reads_answered == answered; waited++) {
        int l = leader_index(&s);
        if (l >= 0) ask_read(&s, l);
        step(&s, false);
        s.step++;
    }
    if (waited >= 100) dump(&s);
    CHECK(&s, waited < 100, "a read at the leader went unanswered for 100 calm ticks");
    if (getenv("DSYNC_SIM_VERBOSE"))
        print_message("seed %llu: %d nodes, %zu entries committed, %llu proposals, %llu reads "
                      "answered, %llu snapshots installed, %llu membership changes, final term "
                      "%llu, %d steps\n",
                      (unsigned long long)seed, s.n, s.n_committed,
                      (unsigned long long)s.next_value, (unsigned long long)s.reads_answered,
                      (unsigned long long)s.snapshots_installed, (unsigned long long)s.conf_changes,
                      (unsigned long long)raft_term(s.nodes[0].r), s.step);
    if (getenv("DSYNC_SIM_VERBOSE") && s.async)
        print_message("seed %llu: async, writes complete with p %.1f per step, queues up to %zu, "
                      "%llu writes lost in crashes, %llu synced after their entries were "
                      "truncated\n",
                      (unsigned long long)seed, s.p_write, s.max_writes,
                      (unsigned long long)s.writes_lost, (unsigned long long)s.stale_syncs);
    int rc = 0;
    if (s.fail[0]) {
        print_message("raft sim seed %llu failed at step %d: %s (rerun: DSYNC_SEED=%llu)\n",
                      (unsigned long long)seed, s.step, s.fail, (unsigned long long)seed);
        rc = -1;
    }
    free_sim(&s);
    return rc;
}

static void test_random_clusters_under_faults_stay_safe_and_converge(void **state)
{
    const char *one = getenv("DSYNC_SEED");
    if (one) {
        assert_int_equal(run_seed(strtoull(one, NULL, 10), 800), 0);
        return;
    }
    const char *env = getenv("DSYNC_SIM_SEEDS");
    int seeds = env ? atoi(env) : 100;
    int failed = 0;
    for (int k = 1; k <= seeds; k++)
        failed += run_seed((uint64_t)k, 800) != 0;
    assert_int_equal(failed, 0);
}

/* ---- scripted scenarios --------------------------------------------------- */

static void scripted_init(sim *s, int n, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->seed = s->rng = seed;
    s->n = n;
    s->scripted = true;
    for (int i = 0; i < n; i++)
        s->ids[i] = (uint64_t)i + 1;
    for (int i = 0; i < n; i++)
        start_node(s, i);
}

/* Scripted scenarios in asynchronous mode: node i's writes complete as
 * soon as they are queued, unless the test holds them (s->hold[i]) to
 * complete them itself with complete_writes. */
static void process_and_write(sim *s, int i)
{
    process_ready(s, i);
    while (!s->hold[i] && s->nodes[i].n_writes) {
        complete_writes(s, i, SIZE_MAX);
        process_ready(s, i);
    }
}

/* Delivers everything in flight among reachable nodes until quiet. */
static void settle(sim *s)
{
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < s->n; i++)
            if (s->nodes[i].up) process_and_write(s, i);
        if (s->n_net == 0) break;
        s->now += 4;
        deliver_due(s);
    }
    check_invariants(s);
    if (s->fail[0]) fail_msg("%s", s->fail);
}

/* Ticks node i alone until it wins an election among the reachable nodes.
 * Stops the moment it wins: what it sends as leader is still queued in
 * its outbox, so the caller decides whether anyone hears it. */
static void elect(sim *s, int i)
{
    for (int t = 0; t < 200; t++) {
        raft_tick(s->nodes[i].r);
        for (int round = 0; round < 20; round++) {
            for (int k = 0; k < s->n; k++)
                if (s->nodes[k].up && k != i) process_and_write(s, k);
            if (raft_get_role(s->nodes[i].r) == RAFT_LEADER) return;
            process_and_write(s, i);
            s->now += 4;
            while (s->n_net) {
                deliver_due(s);
                if (raft_get_role(s->nodes[i].r) == RAFT_LEADER) return;
                for (int k = 0; k < s->n; k++)
                    if (s->nodes[k].up && k != i) process_and_write(s, k);
                s->now += 4;
            }
        }
    }
    fail_msg("node %d was not elected", i);
}

static sim *scenario; /* for the drop filter */

/* Lets S3 receive X (index 2) but nothing at index 3 once it has X. */
static bool drop_index3_to_s3(const raft_msg *m)
{
    if (m->type != RAFT_MSG_APPEND || m->to != 3 || !scenario->nodes[2].up ||
        raft_term_at(scenario->nodes[2].r, 2) == 0)
        return false;
    for (size_t k = 0; k < m->n_entries; k++)
        if (m->entries[k].index >= 3) return true;
    return false;
}

/* Figure 8 of the Raft paper, with our no-op entries: an entry of an
 * old term that reaches a majority must not be committed by counting,
 * because a node holding a newer-term entry at that index can still win
 * an election and overwrite it. */
static void test_figure_8_an_old_term_entry_on_a_majority_is_not_committed(void **state)
{
    sim s;
    /* Seed 12: one entry per append and one in flight, so X and the new
     * leader's no-op travel separately. */
    scripted_init(&s, 5, 12);
    scenario = &s;
    /* Term 1: S1 leads; its no-op (index 1) commits everywhere. */
    elect(&s, 0);
    settle(&s);
    uint64_t v = 42;
    /* (a) S1 appends X at index 2 and only S2 receives it. */
    for (int i = 2; i < 5; i++)
        s.cut[i] = true;
    assert_int_equal(raft_propose(s.nodes[0].r, &v, sizeof v, NULL), 0);
    settle(&s);
    assert_int_equal(raft_term_at(s.nodes[1].r, 2), raft_term(s.nodes[0].r));
    /* (b) S1 crashes; S5 wins with S3 and S4 and writes its no-op at
     * index 2, which nobody hears. */
    crash_node(&s, 0);
    s.cut[1] = true;
    s.cut[2] = s.cut[3] = s.cut[4] = false;
    elect(&s, 4);
    uint64_t t5 = raft_term(s.nodes[4].r);
    s.cut[4] = true;
    settle(&s);
    /* (c) S5 crashes; S1 returns and wins with S2 and S3, and gets X onto
     * S3 but not its own no-op: X is on a majority (S1, S2, S3). */
    crash_node(&s, 4);
    start_node(&s, 0);
    s.cut[4] = false;
    s.cut[0] = s.cut[1] = s.cut[2] = false;
    s.cut[3] = true;
    s.drop_fn = drop_index3_to_s3;
    elect(&s, 0);
    settle(&s);
    assert_int_equal(raft_term_at(s.nodes[2].r, 2), 1);
    /* §5.4.2: X is of an old term, so the leader must not count it in. */
    assert_true(raft_commit_index(s.nodes[0].r) < 2);
    /* (d) S1 crashes; S5 wins with S3 and S4 (its index-2 entry has a
     * newer term) and replaces X everywhere it can. Safe: X was never
     * committed, and the checks after every settle confirm it. */
    crash_node(&s, 0);
    s.drop_fn = NULL;
    start_node(&s, 4);
    s.cut[3] = false;
    s.cut[1] = true; /* S2 would refuse S5 anyway */
    elect(&s, 4);
    assert_true(raft_term(s.nodes[4].r) > t5);
    settle(&s);
    assert_int_equal(raft_term_at(s.nodes[2].r, 2), t5);
    /* Everyone back: all converge on S5's history. */
    s.cut[1] = false;
    start_node(&s, 0);
    for (int k = 0; k < 40; k++) {
        for (int i = 0; i < s.n; i++)
            raft_tick(s.nodes[i].r);
        settle(&s);
    }
    for (int i = 0; i < s.n; i++)
        assert_int_equal(raft_term_at(s.nodes[i].r, 2), t5);
    free_sim(&s);
}

static void run_ticks(sim *s, int ticks)
{
    for (int k = 0; k < ticks; k++) {
        for (int i = 0; i < s->n; i++)
            if (s->nodes[i].up) raft_tick(s->nodes[i].r);
        settle(s);
    }
}

/* An old leader cut off from the majority: CheckQuorum makes it step down,
 * PreVote keeps it from raising its term while alone, the majority elects
 * and commits, and on return its divergent uncommitted tail is replaced. */
static void test_a_partitioned_old_leader_steps_down_and_its_tail_is_replaced(void **state)
{
    sim s;
    scripted_init(&s, 3, 5);
    /* With PreVote and CheckQuorum on, as in production. */
    s.scripted = false;
    for (int i = 0; i < 3; i++) {
        crash_node(&s, i);
        start_node(&s, i);
    }
    run_ticks(&s, 60);
    int old = leader_index(&s);
    assert_true(old >= 0);
    uint64_t v = 1;
    raft_propose(s.nodes[old].r, &v, sizeof v, NULL);
    settle(&s);
    uint64_t committed = raft_commit_index(s.nodes[old].r);

    s.cut[old] = true;
    for (v = 100; v < 105; v++)
        raft_propose(s.nodes[old].r, &v, sizeof v, NULL);
    uint64_t old_term = raft_term(s.nodes[old].r);
    run_ticks(&s, 60);
    assert_int_not_equal(raft_get_role(s.nodes[old].r), RAFT_LEADER);
    assert_int_equal(raft_commit_index(s.nodes[old].r), committed);
    assert_int_equal(raft_term(s.nodes[old].r), old_term); /* PreVote */
    int neu = leader_index(&s);
    assert_true(neu >= 0 && neu != old);
    for (v = 200; v < 203; v++)
        raft_propose(s.nodes[neu].r, &v, sizeof v, NULL);
    run_ticks(&s, 5);
    uint64_t new_commit = raft_commit_index(s.nodes[neu].r);
    assert_true(new_commit > committed + 3);

    s.cut[old] = false;
    run_ticks(&s, 40);
    assert_true(raft_commit_index(s.nodes[old].r) >= new_commit);
    for (uint64_t k = 1; k <= new_commit; k++)
        assert_int_equal(raft_term_at(s.nodes[old].r, k), raft_term_at(s.nodes[neu].r, k));
    free_sim(&s);
}

/* ReadIndex: a leader cut off from the majority (no CheckQuorum here, so
 * it still believes it leads) must not answer a read, because a new leader
 * may already have committed writes it has not seen. */
static void test_a_deposed_leader_that_does_not_know_it_answers_no_read(void **state)
{
    sim s;
    scripted_init(&s, 3, 21);
    elect(&s, 0);
    settle(&s);
    uint64_t v = 7;
    raft_propose(s.nodes[0].r, &v, sizeof v, NULL);
    settle(&s);
    s.cut[0] = true;
    elect(&s, 1);
    settle(&s);
    v = 8;
    raft_propose(s.nodes[1].r, &v, sizeof v, NULL);
    settle(&s);
    assert_int_equal(raft_get_role(s.nodes[0].r), RAFT_LEADER); /* it does not know */
    assert_true(raft_commit_index(s.nodes[1].r) > raft_commit_index(s.nodes[0].r));

    uint64_t before = s.reads_answered;
    ask_read(&s, 0);
    for (int k = 0; k < 30; k++) {
        raft_tick(s.nodes[0].r);
        settle(&s);
    }
    assert_int_equal(s.reads_answered, before);
    /* The real leader answers, at an index covering the new write. */
    ask_read(&s, 1);
    for (int k = 0; k < 5 && s.reads_answered == before; k++) {
        raft_tick(s.nodes[1].r);
        settle(&s);
    }
    assert_int_equal(s.reads_answered, before + 1);
    free_sim(&s);
}

/* §7: a follower cut off while the others compacted their logs gets the
 * leader's snapshot, lands on the same state, and restarts from it. */
static void test_a_follower_left_behind_by_compaction_catches_up_by_snapshot(void **state)
{
    sim s;
    scripted_init(&s, 3, 7);
    elect(&s, 0);
    settle(&s);
    s.cut[2] = true;
    for (uint64_t v = 1; v <= 20; v++)
        assert_int_equal(raft_propose(s.nodes[0].r, &v, sizeof v, NULL), 0);
    run_ticks(&s, 3); /* heartbeats carry the commit index to node 1 */
    assert_true(s.nodes[2].applied <= 1);
    for (int i = 0; i < 2; i++) {
        node *nd = &s.nodes[i];
        assert_int_equal(nd->applied, 21);
        compact_now(&s, i);
        /* Compacting what is already compacted, or beyond applied, is refused. */
        assert_int_equal(raft_compact(nd->r, nd->applied, "x", 1), DSYNC_EINVAL);
        assert_int_equal(raft_compact(nd->r, nd->applied + 1, "x", 1), DSYNC_EINVAL);
    }
    assert_int_equal(raft_snapshot_index(s.nodes[0].r), 21);
    assert_int_equal(raft_term_at(s.nodes[0].r, 5), 0); /* compacted away */

    s.cut[2] = false;
    run_ticks(&s, 5);
    assert_int_equal(s.snapshots_installed, 1);
    assert_int_equal(s.nodes[2].applied, 21);
    assert_int_equal(s.nodes[2].sm_chain, s.nodes[0].sm_chain);
    uint64_t v = 99;
    raft_propose(s.nodes[0].r, &v, sizeof v, NULL);
    run_ticks(&s, 2);
    assert_int_equal(s.nodes[2].applied, 22);

    /* Restart: the snapshot plus the log after it. */
    crash_node(&s, 2);
    start_node(&s, 2);
    assert_int_equal(s.nodes[2].applied, 21);
    assert_int_equal(raft_snapshot_index(s.nodes[2].r), 21);
    assert_int_equal(raft_last_index(s.nodes[2].r), 22);
    run_ticks(&s, 2);
    assert_int_equal(s.nodes[2].applied, 22);
    assert_int_equal(s.nodes[2].sm_chain, s.nodes[0].sm_chain);
    free_sim(&s);
}

static bool has_member(raft *r, uint64_t id)
{
    raft_member cur[MAXN];
    size_t n = raft_members(r, cur, MAXN);
    for (size_t k = 0; k < n; k++)
        if (cur[k].id == id) return true;
    return false;
}

/* Thesis §4.1: a node uses a configuration as soon as it is in its log,
 * so a configuration in a divergent uncommitted tail must be undone when
 * the tail is replaced; and a joining node catches up and votes. */
static void test_a_configuration_in_a_divergent_tail_is_undone_with_it(void **state)
{
    sim s;
    scripted_init(&s, 4, 3);
    /* Node 4 (index 3) is not a member yet: restart everyone with 3. */
    s.n_initial = 3;
    for (int i = 0; i < 4; i++) {
        crash_node(&s, i);
        start_node(&s, i);
    }
    elect(&s, 0);
    settle(&s);
    assert_false(has_member(s.nodes[0].r, 4));
    /* The leader, cut off, adds node 4: only it has the configuration. */
    s.cut[0] = true;
    raft_member m4 = {.id = 4};
    uint64_t index;
    assert_int_equal(raft_propose_conf(s.nodes[0].r, true, &m4, &index), 0);
    /* One change at a time. */
    raft_member m3 = {.id = 3};
    assert_int_equal(raft_propose_conf(s.nodes[0].r, false, &m3, NULL), DSYNC_EUNAVAILABLE);
    settle(&s);
    assert_true(has_member(s.nodes[0].r, 4));
    assert_false(has_member(s.nodes[1].r, 4));
    /* The others elect a leader and write over that index. */
    elect(&s, 1);
    uint64_t v = 5;
    raft_propose(s.nodes[1].r, &v, sizeof v, NULL);
    settle(&s);
    s.cut[0] = false;
    run_ticks(&s, 20);
    assert_int_equal(raft_term_at(s.nodes[0].r, index), raft_term_at(s.nodes[1].r, index));
    assert_false(has_member(s.nodes[0].r, 4));

    /* Now add node 4 for real: it joins, catches up, and counts. */
    int l = leader_index(&s);
    assert_true(l >= 0);
    assert_int_equal(raft_propose_conf(s.nodes[l].r, true, &m4, &index), 0);
    assert_int_equal(raft_propose_conf(s.nodes[l].r, true, &m4, NULL), DSYNC_EUNAVAILABLE);
    run_ticks(&s, 20);
    for (int i = 0; i < 4; i++)
        assert_true(has_member(s.nodes[i].r, 4));
    assert_true(s.nodes[3].applied >= index);
    assert_int_equal(raft_propose_conf(s.nodes[l].r, true, &m4, NULL), DSYNC_EEXIST);
    /* Remove the leader itself: it steps down once that commits, and
     * the rest go on without it. */
    raft_member ml = {.id = s.ids[l]};
    assert_int_equal(raft_propose_conf(s.nodes[l].r, false, &ml, NULL), 0);
    run_ticks(&s, 40);
    assert_int_not_equal(raft_get_role(s.nodes[l].r), RAFT_LEADER);
    int nl = leader_index(&s);
    assert_true(nl >= 0 && nl != l);
    assert_false(has_member(s.nodes[nl].r, s.ids[l]));
    raft_member ghost = {.id = 9};
    assert_int_equal(raft_propose_conf(s.nodes[nl].r, false, &ghost, NULL), DSYNC_ENOTFOUND);
    free_sim(&s);
}

/* A follower holding entries nobody else has (its leader crashed before
 * they reached a majority) has that tail replaced by the next leader's
 * log, and never applies them. */
/* Appends to node i (by index) queued in the network, and the lowest prev
 * index among them (UINT64_MAX when none). */
static size_t appends_to(sim *s, int i, uint64_t *lowest)
{
    size_t count = 0;
    *lowest = UINT64_MAX;
    for (size_t k = 0; k < s->n_net; k++) {
        raft_msg m;
        if (s->net[k].to != i) continue;
        assert_int_equal(raft_msg_decode(s->net[k].bytes, s->net[k].len, &m), 0);
        if (m.type == RAFT_MSG_APPEND) {
            count++;
            if (m.index < *lowest) *lowest = m.index;
        }
        raft_msg_free_entries(&m);
    }
    return count;
}

/* While replicating, a rejection of an index the follower has since
 * acknowledged is stale (reordered or duplicated on the way): the leader
 * keeps pipelining instead of falling back to probing from the follower's
 * match. A rejection beyond the match still sends it back to probing. */
static void test_a_stale_rejection_does_not_stop_the_pipeline(void **state)
{
    (void)state;
    sim s;
    scripted_init(&s, 3, 33);
    elect(&s, 0);
    settle(&s);
    for (uint64_t v = 1; v <= 4; v++)
        raft_propose(s.nodes[0].r, &v, sizeof v, NULL);
    settle(&s);
    raft *leader = s.nodes[0].r;
    uint64_t match = raft_match_index(leader, 2);
    assert_int_equal(match, raft_last_index(leader));
    assert_true(match >= 3);
    raft_msg stale = {.type = RAFT_MSG_APPEND_RESP,
                      .from = 2,
                      .to = 1,
                      .term = raft_term(leader),
                      .index = match - 2,
                      .commit = 1, /* callers wait there: it gets entries at once */
                      .reject = true,
                      .reject_hint = match - 3};
    assert_int_equal(raft_step(leader, &stale), 0);
    process_ready(&s, 0);
    uint64_t lowest;
    assert_int_equal(appends_to(&s, 1, &lowest), 0); /* no probe went out */
    uint64_t v = 5;
    raft_propose(leader, &v, sizeof v, NULL);
    process_and_write(&s, 0);
    assert_int_equal(appends_to(&s, 1, &lowest), 1);
    assert_int_equal(lowest, match); /* the new entry, right after the match */
    settle(&s);
    assert_int_equal(raft_match_index(leader, 2), match + 1);

    /* A rejection past the match is not stale: two appends pipelined, the
     * first lost, the second rejected (a gap). Only probing from the match
     * recovers here (settle never ticks, so no heartbeat helps). */
    match++;
    for (v = 6; v <= 7; v++) {
        raft_propose(leader, &v, sizeof v, NULL);
        process_and_write(&s, 0);
    }
    size_t lost = SIZE_MAX;
    for (size_t k = 0; k < s.n_net; k++) {
        raft_msg m;
        if (s.net[k].to != 1) continue;
        assert_int_equal(raft_msg_decode(s.net[k].bytes, s.net[k].len, &m), 0);
        if (m.type == RAFT_MSG_APPEND && m.index == match) lost = k;
        raft_msg_free_entries(&m);
    }
    assert_true(lost != SIZE_MAX);
    assert_true(appends_to(&s, 1, &lowest) == 2);
    free(s.net[lost].bytes);
    s.net[lost] = s.net[--s.n_net];
    settle(&s);
    assert_int_equal(raft_match_index(leader, 2), match + 2);
    free_sim(&s);
}

/* Leader 0 proposes v; the append reaches both followers; node 3's ack
 * (and node 2's, with node2_answers) reaches the leader, which commits
 * and processes its ready. Returns the entry's index. */
static uint64_t propose_to_commit(sim *s, uint64_t v, bool node2_answers)
{
    uint64_t index;
    assert_int_equal(raft_propose(s->nodes[0].r, &v, sizeof v, &index), 0);
    process_and_write(s, 0);
    s->now += 4;
    deliver_due(s);
    if (node2_answers) process_and_write(s, 1);
    process_and_write(s, 2);
    s->now += 4;
    deliver_due(s);
    process_ready(s, 0);
    assert_int_equal(raft_commit_index(s->nodes[0].r), index);
    return index;
}

/* A follower hears a new commit index at once (an empty append) only up
 * to what its answers asked for (raft_set_waiting: callers wait there),
 * or what the leader named (raft_tell_commit_at, raft_peer_wants_commit);
 * one that waits for nothing learns it with the next entries or
 * heartbeat. A follower whose callers began to wait after the commit is
 * told when its next answer says so. */
static void test_a_follower_hears_each_commit_at_once_only_while_callers_wait_there(void **state)
{
    (void)state;
    sim s;
    scripted_init(&s, 3, 41);
    /* Nothing waits on node 2, yet a new leader's first entry reaches
     * every follower at once: what it commits of earlier terms may be
     * what their callers wait for. */
    raft_set_waiting(s.nodes[1].r, false);
    elect(&s, 0);
    settle(&s);
    raft *leader = s.nodes[0].r;
    assert_true(raft_commit_index(leader) > 0);
    assert_int_equal(raft_commit_index(s.nodes[1].r), raft_commit_index(leader));
    uint64_t lowest, v = 1, index;
    /* The leader learns each follower's flag from its answers. */
    raft_set_waiting(s.nodes[2].r, true);
    assert_int_equal(raft_propose(leader, &v, sizeof v, &index), 0);
    settle(&s);
    assert_int_equal(raft_commit_index(s.nodes[2].r), index);

    /* Node 3, where callers wait, makes the majority with the leader:
     * node 2 is not sent the entry (thrifty replication), and at its
     * commit only node 3 is told. */
    index = propose_to_commit(&s, 2, true);
    assert_true(raft_last_index(s.nodes[1].r) < index);
    assert_int_equal(appends_to(&s, 1, &lowest), 0);
    assert_int_equal(appends_to(&s, 2, &lowest), 1);
    settle(&s);
    assert_int_equal(raft_commit_index(s.nodes[2].r), index);
    assert_true(raft_commit_index(s.nodes[1].r) < index);
    /* The next heartbeat brings node 2 the entry and its commit. */
    raft_tick(leader);
    settle(&s);
    assert_int_equal(raft_commit_index(s.nodes[1].r), index);

    /* Nobody waits: node 2 (the lower id) helps the leader make the
     * majority. Its callers begin to wait while its answer is on its way,
     * and the entry commits meanwhile on node 3's answer to the next
     * heartbeat, so node 2 is not told then. When its answer arrives and
     * says it waits, it is told. */
    raft_set_waiting(s.nodes[2].r, false);
    raft_tick(leader);
    settle(&s);
    raft_set_waiting(s.nodes[1].r, true);
    v = 31;
    assert_int_equal(raft_propose(leader, &v, sizeof v, &index), 0);
    process_and_write(&s, 0);
    assert_int_equal(appends_to(&s, 1, &lowest), 1);
    assert_int_equal(appends_to(&s, 2, &lowest), 0);
    s.now += 4;
    deliver_due(&s);
    process_and_write(&s, 1);
    assert_int_equal(s.n_net, 1);
    packet late = s.net[--s.n_net];
    s.cut[1] = true;
    raft_tick(leader);
    settle(&s);
    assert_int_equal(raft_commit_index(leader), index);
    s.cut[1] = false;
    late.at = s.now;
    s.net[s.n_net++] = late;
    deliver_due(&s);
    process_ready(&s, 0);
    assert_int_equal(appends_to(&s, 1, &lowest), 1);
    settle(&s);
    assert_int_equal(raft_commit_index(s.nodes[1].r), index);

    /* Nobody waits anywhere, but the leader asks that every follower hear
     * of this entry's commit (raft_tell_commit_at): both are told. */
    raft_set_waiting(s.nodes[1].r, false);
    raft_set_waiting(s.nodes[2].r, false);
    v = 4;
    assert_int_equal(raft_propose(leader, &v, sizeof v, &index), 0);
    settle(&s);
    assert_true(raft_commit_index(s.nodes[1].r) < index);
    assert_true(raft_commit_index(s.nodes[2].r) < index);
    v = 5;
    assert_int_equal(raft_propose(leader, &v, sizeof v, &index), 0);
    raft_tell_commit_at(leader, index);
    settle(&s);
    assert_int_equal(raft_commit_index(s.nodes[1].r), index);
    assert_int_equal(raft_commit_index(s.nodes[2].r), index);

    /* An entry proposed for node 2 (a write it forwarded): node 2 alone
     * is told (raft_peer_wants_commit), though its answers said nothing
     * waits. */
    v = 6;
    assert_int_equal(raft_propose(leader, &v, sizeof v, &index), 0);
    raft_peer_wants_commit(leader, 2, index);
    settle(&s);
    assert_int_equal(raft_commit_index(s.nodes[1].r), index);
    assert_true(raft_commit_index(s.nodes[2].r) < index);
    free_sim(&s);
}

/* The leader (the first node) proposes *v (then raises it) and sends
 * what goes at once; the entry's index. */
static uint64_t propose_now(sim *s, uint64_t *v)
{
    uint64_t index;
    assert_int_equal(raft_propose(s->nodes[0].r, v, sizeof *v, &index), 0);
    (*v)++;
    process_and_write(s, 0);
    return index;
}

/* A leader's tick (a heartbeat), and everything it causes. */
static void heartbeat(sim *s)
{
    raft_tick(s->nodes[0].r);
    settle(s);
}

/* Three nodes, the first leading, where callers wait on neither
 * follower, and the leader knows it from their answers to a heartbeat
 * (seed 43: two entries an append, four appends in flight). async: the
 * nodes write through a storage thread (s->hold can stall them). */
static raft *idle_followers_init(sim *s, bool async)
{
    scripted_init(s, 3, 43);
    s->async = async;
    raft_set_waiting(s->nodes[1].r, false);
    raft_set_waiting(s->nodes[2].r, false);
    elect(s, 0);
    settle(s);
    raft_tick(s->nodes[0].r);
    settle(s);
    return s->nodes[0].r;
}

/* Thrifty replication: a new entry goes at once only to the followers
 * that make a majority with the leader (here one of two); the other gets
 * what it lacks at each heartbeat. When the one helping falls silent for
 * more than two heartbeats, the other takes its place. */
static void test_a_follower_not_needed_for_a_majority_gets_entries_at_heartbeats(void **state)
{
    (void)state;
    sim s;
    raft *leader = idle_followers_init(&s, false);
    uint64_t v = 1, index, lowest;

    /* Node 2 (the lower id, as far along as node 3) helps. */
    for (int k = 0; k < 3; k++) {
        index = propose_now(&s, &v);
        assert_int_equal(appends_to(&s, 1, &lowest), 1);
        assert_int_equal(appends_to(&s, 2, &lowest), 0);
        settle(&s);
        assert_int_equal(raft_commit_index(leader), index);
    }
    assert_true(raft_last_index(s.nodes[2].r) < index);
    raft_tick(leader);
    process_ready(&s, 0);
    assert_int_equal(appends_to(&s, 2, &lowest), 1);
    settle(&s);
    assert_int_equal(raft_last_index(s.nodes[2].r), index);
    assert_int_equal(raft_match_index(leader, 3), index);

    /* Node 2 falls silent with nothing in flight. After three ticks
     * without an answer it no longer counts: node 3 gets the next entry at
     * once, and it commits without waiting for a heartbeat. */
    s.cut[1] = true;
    for (int k = 0; k < 3; k++) {
        heartbeat(&s);
    }
    index = propose_now(&s, &v);
    assert_int_equal(appends_to(&s, 2, &lowest), 1);
    settle(&s);
    assert_int_equal(raft_commit_index(leader), index);

    /* Back, it catches up at the next heartbeat and helps again. Then it
     * falls silent with an entry on its way: nothing commits until the
     * next heartbeat brings node 3 the entry; after that node 3, further
     * along, gets entries at once. */
    s.cut[1] = false;
    heartbeat(&s);
    assert_int_equal(raft_match_index(leader, 2), index);
    s.cut[1] = true;
    index = propose_now(&s, &v);
    assert_int_equal(appends_to(&s, 2, &lowest), 0);
    settle(&s);
    assert_true(raft_commit_index(leader) < index);
    heartbeat(&s);
    assert_int_equal(raft_commit_index(leader), index);
    index = propose_now(&s, &v);
    assert_int_equal(appends_to(&s, 2, &lowest), 1);
    settle(&s);
    assert_int_equal(raft_commit_index(leader), index);

    /* Node 2 is back and catches up at the next heartbeat. */
    s.cut[1] = false;
    heartbeat(&s);
    assert_int_equal(raft_last_index(s.nodes[1].r), index);
    assert_int_equal(raft_commit_index(s.nodes[1].r), index);
    free_sim(&s);
}

/* Thrifty replication counts followers by how far their logs match: one
 * far behind, hinted (so sent entries whatever the others do), does not
 * stop a level follower from getting the next entry at once. */
static void test_a_lagging_hinted_follower_does_not_make_a_level_one_lazy(void **state)
{
    (void)state;
    sim s;
    raft *leader = idle_followers_init(&s, false);
    s.cut[2] = true;
    uint64_t v, index, lowest;
    for (v = 1; v <= 12; v++) /* in one batch */
        assert_int_equal(raft_propose(leader, &v, sizeof v, &index), 0);
    settle(&s);
    assert_int_equal(raft_commit_index(leader), index);
    s.cut[2] = false;
    raft_peer_wants_commit(leader, 3, index);
    index = propose_now(&s, &v);
    assert_int_equal(appends_to(&s, 1, &lowest), 1);
    settle(&s);
    assert_int_equal(raft_commit_index(leader), index);
    /* Heartbeats bring node 3 level. */
    run_ticks(&s, 3);
    assert_int_equal(raft_last_index(s.nodes[2].r), index);
    free_sim(&s);
}

/* A leader whose own writes lag a tick behind does not count itself: the
 * followers alone make the majority, so both get entries at once; once
 * its disk catches up, one follower suffices again. */
static void test_a_leader_whose_writes_lag_commits_through_both_followers(void **state)
{
    (void)state;
    sim s;
    raft *leader = idle_followers_init(&s, true);
    uint64_t v = 1, index, lowest;

    s.hold[0] = true;
    index = propose_now(&s, &v);
    assert_int_equal(appends_to(&s, 2, &lowest), 0);
    settle(&s);
    assert_true(raft_commit_index(leader) < index);
    /* The heartbeat brings node 3 the entry: the two followers commit it. */
    heartbeat(&s);
    assert_int_equal(raft_commit_index(leader), index);
    /* A tick later the leader's write is still out: both get the next
     * entry at once, and it commits without waiting for a heartbeat. */
    heartbeat(&s);
    index = propose_now(&s, &v);
    assert_int_equal(appends_to(&s, 1, &lowest), 1);
    assert_int_equal(appends_to(&s, 2, &lowest), 1);
    settle(&s);
    assert_int_equal(raft_commit_index(leader), index);

    /* Its disk catches up: one follower helps again. */
    s.hold[0] = false;
    settle(&s);
    heartbeat(&s);
    index = propose_now(&s, &v);
    assert_int_equal(appends_to(&s, 1, &lowest), 1);
    assert_int_equal(appends_to(&s, 2, &lowest), 0);
    settle(&s);
    assert_int_equal(raft_commit_index(leader), index);
    free_sim(&s);
}

/* A leader about to compact away entries a lazy follower lacks sends them
 * first: a heartbeat's lag does not cost that follower a snapshot. */
static void test_a_lazy_follower_is_sent_what_a_compaction_drops(void **state)
{
    (void)state;
    sim s;
    raft *leader = idle_followers_init(&s, false);
    uint64_t index;
    for (uint64_t v = 1; v <= 5; v++)
        assert_int_equal(raft_propose(leader, &v, sizeof v, &index), 0);
    settle(&s);
    assert_int_equal(s.nodes[0].applied, index);
    assert_true(raft_last_index(s.nodes[2].r) < index);
    compact_now(&s, 0);
    assert_int_equal(raft_snapshot_index(leader), index);
    settle(&s);
    assert_int_equal(raft_last_index(s.nodes[2].r), index);
    run_ticks(&s, 2);
    assert_int_equal(s.nodes[2].applied, index);
    assert_int_equal(s.snapshots_installed, 0);
    free_sim(&s);
}

/* The context of the one append with entries on its way to node i. */
static uint64_t append_context(sim *s, int i)
{
    uint64_t context = UINT64_MAX;
    for (size_t k = 0; k < s->n_net; k++) {
        raft_msg m;
        if (s->net[k].to != i) continue;
        assert_int_equal(raft_msg_decode(s->net[k].bytes, s->net[k].len, &m), 0);
        if (m.type == RAFT_MSG_APPEND && m.n_entries) {
            assert_int_equal(context, UINT64_MAX);
            context = m.context;
        }
        raft_msg_free_entries(&m);
    }
    assert_true(context != UINT64_MAX);
    return context;
}

/* An append whose answer no commit waits on says so (context 1), and the
 * follower's ready marks the entries it brought unhurried: the node may
 * put their write off a while (node_log.c). Entries from an append a
 * commit waits on, and a leader's own, are never unhurried. */
static void test_only_entries_no_commit_waits_on_are_unhurried(void **state)
{
    (void)state;
    sim s;
    raft *leader = idle_followers_init(&s, false);
    /* Callers wait on both: both get entries at once, and node 2 (the
     * lower id, as far along) is the one the commit waits on. */
    raft_set_waiting(s.nodes[1].r, true);
    raft_set_waiting(s.nodes[2].r, true);
    heartbeat(&s);
    size_t before2 = s.nodes[1].unhurried_entries;
    uint64_t v = 1, index = propose_now(&s, &v);
    assert_int_equal(append_context(&s, 1), 0);
    assert_int_equal(append_context(&s, 2), 1);
    settle(&s);
    assert_int_equal(raft_commit_index(leader), index);
    assert_int_equal(s.nodes[1].unhurried_entries, before2);
    assert_true(s.nodes[2].unhurried_entries >= 1);
    assert_int_equal(s.nodes[0].unhurried_entries, 0);

    /* Nothing waits on node 3 now: it gets entries at the heartbeat, in
     * an append no commit waits on either. */
    raft_set_waiting(s.nodes[2].r, false);
    heartbeat(&s);
    size_t before3 = s.nodes[2].unhurried_entries;
    index = propose_now(&s, &v);
    settle(&s);
    assert_true(raft_last_index(s.nodes[2].r) < index);
    raft_tick(leader);
    process_ready(&s, 0);
    assert_int_equal(append_context(&s, 2), 1);
    settle(&s);
    assert_int_equal(raft_last_index(s.nodes[2].r), index);
    assert_true(s.nodes[2].unhurried_entries > before3);
    free_sim(&s);
}

static void test_a_follower_with_a_divergent_uncommitted_tail_has_it_replaced(void **state)
{
    sim s;
    scripted_init(&s, 5, 11);
    elect(&s, 0);
    settle(&s);
    uint64_t base = raft_last_index(s.nodes[0].r);
    /* S1 gets two entries to S2 only. */
    for (int i = 2; i < 5; i++)
        s.cut[i] = true;
    for (uint64_t v = 900; v < 902; v++)
        assert_int_equal(raft_propose(s.nodes[0].r, &v, sizeof v, NULL), 0);
    settle(&s);
    assert_int_equal(raft_last_index(s.nodes[1].r), base + 2);
    assert_int_equal(raft_commit_index(s.nodes[1].r), base);
    /* S1 crashes; S3 leads with S4 and S5 and writes its own entries. */
    crash_node(&s, 0);
    s.cut[1] = true;
    s.cut[2] = s.cut[3] = s.cut[4] = false;
    elect(&s, 2);
    for (uint64_t v = 700; v < 703; v++)
        assert_int_equal(raft_propose(s.nodes[2].r, &v, sizeof v, NULL), 0);
    settle(&s);
    /* S2 returns: its tail goes, the leader's log takes its place. */
    s.cut[1] = false;
    run_ticks(&s, 10);
    uint64_t last = raft_last_index(s.nodes[2].r);
    assert_true(last >= base + 4);
    assert_int_equal(raft_last_index(s.nodes[1].r), last);
    for (uint64_t k = base + 1; k <= last; k++)
        assert_int_equal(raft_term_at(s.nodes[1].r, k), raft_term_at(s.nodes[2].r, k));
    assert_true(s.nodes[1].applied >= base + 3);
    for (uint64_t k = base + 1; k <= s.n_committed; k++)
        assert_true(s.committed_val[k] < 900);
    free_sim(&s);
}

/* Asynchronous persistence (raft_advance_unsynced, raft_synced): the
 * leader's append leaves before anything is durable, but an ack leaves only
 * with the write it acknowledges; the leader counts itself toward a
 * majority only once its own write is durable (thesis §10.2.1); a node
 * that knows an entry is committed applies it at once, its own copy
 * durable or not (committed is durable on a majority), while its own
 * durable index waits for its write. */
static void test_async_a_leader_counts_itself_only_once_its_own_write_is_durable(void **state)
{
    sim s;
    /* Seed 5: two appends in flight, so the leader tells a follower of the
     * new commit index at once rather than at the next heartbeat. */
    scripted_init(&s, 3, 5);
    s.async = true;
    elect(&s, 0);
    settle(&s);
    raft *leader = s.nodes[0].r;
    for (int i = 0; i < 3; i++)
        s.hold[i] = true;
    uint64_t v = 1, index;
    assert_int_equal(raft_propose(leader, &v, sizeof v, &index), 0);
    settle(&s);
    /* Every node has the entry, and every one's write of it is queued. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(raft_last_index(s.nodes[i].r), index);
        assert_int_equal(s.nodes[i].n_writes, 1);
    }
    assert_true(raft_match_index(leader, 2) < index); /* no ack has left */
    assert_true(raft_match_index(leader, 1) < index); /* nor counts its own */

    complete_writes(&s, 1, SIZE_MAX);
    settle(&s);
    assert_int_equal(raft_match_index(leader, 2), index);
    /* One follower is no majority of three while the leader's own copy
     * may still be lost. */
    assert_true(raft_match_index(leader, 1) < index);
    assert_true(raft_commit_index(leader) < index);

    complete_writes(&s, 0, SIZE_MAX);
    assert_int_equal(raft_match_index(leader, 1), index);
    assert_int_equal(raft_commit_index(leader), index);
    settle(&s);
    assert_int_equal(s.nodes[0].applied, index);
    assert_int_equal(s.nodes[1].applied, index);
    /* The third node has heard the entry is committed and applies it,
     * though its own write of it is still queued. */
    assert_int_equal(raft_commit_index(s.nodes[2].r), index);
    assert_int_equal(s.nodes[2].applied, index);
    assert_true(raft_stable_index(s.nodes[2].r) < index);
    s.hold[2] = false;
    settle(&s);
    assert_int_equal(raft_stable_index(s.nodes[2].r), index);
    free_sim(&s);
}

/* A write that completes after its entries were replaced (a new leader
 * overwrote them while it was queued) makes nothing durable in the core's
 * eyes: the entries now at those indexes are in a later write. If it
 * counted, the node would take the replacement for durable here, and as a
 * leader count itself toward a majority for it too early. */
static void test_async_a_write_whose_entries_were_replaced_meanwhile_is_ignored(void **state)
{
    sim s;
    scripted_init(&s, 5, 9);
    s.async = true;
    elect(&s, 0);
    settle(&s);
    /* Node 4's disk stalls; the leader gets an entry to it alone, and
     * crashes. */
    s.hold[4] = true;
    s.cut[1] = s.cut[2] = s.cut[3] = true;
    uint64_t v = 1, index;
    assert_int_equal(raft_propose(s.nodes[0].r, &v, sizeof v, &index), 0);
    settle(&s);
    assert_int_equal(raft_last_index(s.nodes[4].r), index);
    assert_int_equal(s.nodes[4].n_writes, 1);
    crash_node(&s, 0);
    s.cut[1] = s.cut[2] = s.cut[3] = false;
    /* Node 1 wins without node 4, whose answers wait behind its write, and
     * its first append replaces that entry with its no-op. */
    elect(&s, 1);
    settle(&s);
    uint64_t t1 = raft_term(s.nodes[1].r);
    assert_int_equal(raft_commit_index(s.nodes[1].r), index);
    assert_int_equal(raft_term_at(s.nodes[4].r, index), t1);
    /* Node 2 wins next; its first append carries the commit index, and
     * node 4's log matches it, so node 4 learns the entry is committed. */
    elect(&s, 2);
    settle(&s);
    assert_int_equal(raft_commit_index(s.nodes[4].r), index);
    assert_true(raft_stable_index(s.nodes[4].r) < index);

    /* The stalled write completes: the entry it held is gone. */
    complete_writes(&s, 4, 1);
    assert_int_equal(s.stale_syncs, 1);
    settle(&s);
    assert_true(raft_stable_index(s.nodes[4].r) < index);
    s.hold[4] = false;
    settle(&s);
    assert_true(raft_stable_index(s.nodes[4].r) >= index);
    assert_true(s.nodes[4].applied >= index);
    assert_int_equal(s.nodes[4].log[index - s.nodes[4].snap_index - 1].term, t1);
    free_sim(&s);
}

static void test_garbage_never_decodes_into_a_message_that_crashes(void **state)
{
    raft_entry e = {5, 2, RAFT_ENTRY_NORMAL, "payload", 7};
    raft_msg m = {.type = RAFT_MSG_APPEND,
                  .from = 1,
                  .to = 2,
                  .term = 3,
                  .log_term = 2,
                  .index = 4,
                  .commit = 4,
                  .context = 9,
                  .entries = &e,
                  .n_entries = 1};
    ut_buf b;
    ut_buf_init(&b);
    assert_int_equal(raft_msg_encode(&m, &b), 0);
    raft_msg out;
    assert_int_equal(raft_msg_decode(b.data, b.len, &out), 0);
    assert_int_equal(out.n_entries, 1);
    assert_int_equal(out.context, 9);
    assert_memory_equal(out.entries[0].data, "payload", 7);
    raft_msg_free_entries(&out);
    for (size_t n = 0; n < b.len; n++)
        assert_int_equal(raft_msg_decode(b.data, n, &out), DSYNC_ECORRUPT);
    /* A snapshot travels whole; only a snapshot message may carry one. */
    ut_buf sb;
    ut_buf_init(&sb);
    raft_msg sm = {.type = RAFT_MSG_SNAPSHOT,
                   .from = 1,
                   .to = 2,
                   .term = 3,
                   .index = 40,
                   .log_term = 2,
                   .snapshot = "image",
                   .snapshot_len = 5};
    assert_int_equal(raft_msg_encode(&sm, &sb), 0);
    assert_int_equal(raft_msg_decode(sb.data, sb.len, &out), 0);
    assert_int_equal(out.snapshot_len, 5);
    assert_memory_equal(out.snapshot, "image", 5);
    raft_msg_free_entries(&out);
    sm.type = RAFT_MSG_APPEND;
    sb.len = 0;
    assert_int_equal(raft_msg_encode(&sm, &sb), 0);
    assert_int_equal(raft_msg_decode(sb.data, sb.len, &out), DSYNC_ECORRUPT);
    ut_buf_free(&sb);
    uint64_t x = 7;
    char *copy = malloc(b.len);
    for (int i = 0; i < 50000; i++) {
        memcpy(copy, b.data, b.len);
        x = ut_mix64(x + (uint64_t)i);
        copy[x % b.len] = (char)(x >> 40);
        if (raft_msg_decode(copy, b.len, &out) == 0) raft_msg_free_entries(&out);
    }
    free(copy);
    ut_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_clusters_under_faults_stay_safe_and_converge),
        cmocka_unit_test(test_figure_8_an_old_term_entry_on_a_majority_is_not_committed),
        cmocka_unit_test(test_a_partitioned_old_leader_steps_down_and_its_tail_is_replaced),
        cmocka_unit_test(test_a_deposed_leader_that_does_not_know_it_answers_no_read),
        cmocka_unit_test(test_a_follower_with_a_divergent_uncommitted_tail_has_it_replaced),
        cmocka_unit_test(test_a_stale_rejection_does_not_stop_the_pipeline),
        cmocka_unit_test(test_a_follower_hears_each_commit_at_once_only_while_callers_wait_there),
        cmocka_unit_test(test_a_follower_not_needed_for_a_majority_gets_entries_at_heartbeats),
        cmocka_unit_test(test_a_lagging_hinted_follower_does_not_make_a_level_one_lazy),
        cmocka_unit_test(test_a_leader_whose_writes_lag_commits_through_both_followers),
        cmocka_unit_test(test_a_lazy_follower_is_sent_what_a_compaction_drops),
        cmocka_unit_test(test_only_entries_no_commit_waits_on_are_unhurried),
        cmocka_unit_test(test_a_follower_left_behind_by_compaction_catches_up_by_snapshot),
        cmocka_unit_test(test_a_configuration_in_a_divergent_tail_is_undone_with_it),
        cmocka_unit_test(test_async_a_leader_counts_itself_only_once_its_own_write_is_durable),
        cmocka_unit_test(test_async_a_write_whose_entries_were_replaced_meanwhile_is_ignored),
        cmocka_unit_test(test_garbage_never_decodes_into_a_message_that_crashes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
