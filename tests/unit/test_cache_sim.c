/*
 * test_cache_sim.c: deterministic simulation of whole cache clusters.
 *
 * 3 to 5 cc_nodes in one process, a simulated clock (one ms per step), a
 * network that delays every message by a random amount and delivers what
 * is due in random order (so messages between two nodes overtake each
 * other too), a simulated Redis (values with versions, conditional
 * writes) whose requests take random time and sometimes fail (with or
 * without having been applied), and view changes: a node crashes (its
 * state is dropped, the view removes it), comes back empty later (the
 * view adds it), or the epoch moves on with the same members; each node
 * learns a new view after its own random delay. A third of the seeds also
 * lose messages, and then move the epoch on a few steps later, as cache.h
 * asks of a transport that loses a frame. One client per node
 * issues random GETs, PUTs and evictions on a few keys, one at a time.
 * Everything comes from one seeded generator and every message goes
 * through the wire codec.
 *
 * The transport does not duplicate messages (TCP; cache.h says why the
 * protocol relies on it), so neither does the simulation.
 *
 * Checked after every event: for every key, at most one live node holds
 * it in M or E, never together with an S copy elsewhere, and all S copies
 * hold the same value. Checked at every GET's completion, against the
 * history of PUTs (begin and end steps, and when a read first saw each):
 * the value is that of a PUT that began before the GET ended and that no
 * PUT known to come after it and known to be in effect before the GET
 * began has superseded (linearizability of a register with unique values,
 * so a PUT applied twice is caught too); a reader never sees a value older
 * than one it saw; absent only when no PUT was in effect.
 * Where the configuration can lose data, PUTs of a key completed before
 * that key's last loss are excused: with write-back and Redis, a crash
 * loses the keys the crashed node held dirty (and only those); with the
 * home's memory as the store, every view change may lose every key. With
 * Redis and write-through nothing is ever excused. At the end the network calms down,
 * every operation must complete, and every node must read the same
 * values.
 *
 * DSYNC_SIM_SEEDS=N runs seeds 1..N (default 200); DSYNC_SIM_SEED=S (or
 * DSYNC_SEED=S) runs one. A failure prints its seed and step.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cache/cache.h"
#include "dsync/errors.h"

#define MAXN 5
#define MAXKEYS 6
#define VALUE_MAX 40

typedef struct {
    uint64_t at;
    int to;
    unsigned char *bytes;
    size_t len;
} packet;

/* A store request on its way to the simulated Redis. */
typedef struct {
    uint64_t at;
    int node;
    uint64_t incarnation;
    cc_store_req req; /* key and value owned here */
} store_op;

typedef struct {
    int key;
    uint64_t begin, end; /* end: UINT64_MAX until it completed (forever, if unknown) */
    uint64_t seen;       /* end of the first read that returned it (UINT64_MAX: none) */
} put_rec;

/* When a PUT had certainly taken effect: at its end, or at the end of
 * the first read that saw it, whichever came first. */
static uint64_t effective_end(const put_rec *w)
{
    return w->seen < w->end ? w->seen : w->end;
}

typedef struct {
    cc_node *cc;
    bool up;
    uint64_t incarnation;
    /* the view this node will learn, and when */
    bool view_pending;
    uint64_t view_at, view_epoch;
    uint64_t view_members[MAXN];
    size_t view_n;
    bool view_may_lose;
    /* its client: one operation at a time */
    bool busy;
    uint64_t op_id;
    cc_op_kind kind;
    int key;
    uint64_t begin;
    uint64_t put_id;
    uint64_t seen[MAXKEYS]; /* put id last read (0: absent) */
    uint64_t final_read[MAXKEYS];
} snode;

typedef struct {
    bool present;
    unsigned char value[VALUE_MAX];
    size_t len;
    cc_version version;
    uint64_t fence; /* the highest epoch that loaded it (cache.h, "Epoch fence") */
} redis_key;

typedef struct {
    uint64_t seed, rng, now;
    int n, nkeys;
    uint64_t ids[MAXN];
    snode nodes[MAXN];
    uint64_t epoch;
    cc_config cfg;
    bool lossy_crash, lossy_view; /* which view changes may lose data */
    uint64_t last_loss[MAXKEYS];  /* per key: step of its last loss (0: none) */
    double p_op, p_evict, p_crash, p_restart, p_bump, p_store_fail;
    double p_loss;    /* a message lost (a broken connection)... */
    uint64_t bump_at; /* ...makes the cluster move to a new epoch then */
    uint64_t max_delay;
    packet *net;
    size_t n_net, cap_net;
    store_op *sq;
    size_t n_sq, cap_sq;
    redis_key redis[MAXKEYS];
    put_rec *puts; /* by put id; 0 unused */
    size_t n_puts, cap_puts;
    bool calm;
    uint64_t calm_since;
    /* Scripted scenarios: messages for which held() is true stay in the
     * network until it says otherwise. */
    bool (*held)(const cc_msg *m);
    /* figures */
    uint64_t gets, hits, puts_done, puts_unknown, views, crashes, msgs;
    char fail[512];
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
        if (!(cond) && !(s)->fail[0]) {                                                            \
            int off_ =                                                                             \
                snprintf((s)->fail, sizeof(s)->fail, "step %llu: ", (unsigned long long)(s)->now); \
            snprintf((s)->fail + off_, sizeof(s)->fail - (size_t)off_, __VA_ARGS__);               \
        }                                                                                          \
    } while (0)

static const char *key_name(int k)
{
    static const char *names[MAXKEYS] = {"alpha", "beta", "gamma", "delta", "eps", "zeta"};
    return names[k];
}

static int key_index(const char *key)
{
    for (int k = 0; k < MAXKEYS; k++)
        if (strcmp(key, key_name(k)) == 0) return k;
    return -1;
}

/* ---- values: the put id, then filler derived from it ---------------------- */

static size_t make_value(sim *s, uint64_t put_id, unsigned char *out)
{
    size_t len = 8 + (size_t)(rnd(s) % (VALUE_MAX - 8 + 1));
    ut_put_le(out, put_id, 8);
    for (size_t i = 8; i < len; i++)
        out[i] = (unsigned char)(put_id * 31 + i);
    return len;
}

/* The put id a value carries (0 and a failure when it is not one of ours). */
static uint64_t value_id(sim *s, const void *value, size_t len, int key)
{
    const unsigned char *p = value;
    CHECK(s, value && len >= 8 && len <= VALUE_MAX, "value of %zu bytes", len);
    if (!value || len < 8 || len > VALUE_MAX) return 0;
    uint64_t id = ut_get_le(p, 8);
    CHECK(s, id > 0 && id < s->n_puts, "value names unknown put %llu", (unsigned long long)id);
    if (id == 0 || id >= s->n_puts) return 0;
    for (size_t i = 8; i < len; i++)
        CHECK(s, p[i] == (unsigned char)(id * 31 + i), "value of put %llu corrupt",
              (unsigned long long)id);
    CHECK(s, s->puts[id].key == key, "key %s holds put %llu of key %s", key_name(key),
          (unsigned long long)id, key_name(s->puts[id].key));
    return id;
}

/* ---- the linearizability check ------------------------------------------- */

/* A PUT that completed at `end` may have been lost since. */
static bool excused(const sim *s, int key, uint64_t end)
{
    return s->last_loss[key] && end <= s->last_loss[key];
}

static void lose_all(sim *s)
{
    for (int k = 0; k < MAXKEYS; k++)
        s->last_loss[k] = s->now;
}

/* A GET of key by node r that began at gb returned put p (0: absent). */
static void check_read(sim *s, int r, int key, uint64_t gb, uint64_t p)
{
    /* Values are unique, so linearizability of the register reduces to:
     * p cannot be read once a PUT w that certainly came after it (w began
     * after p had certainly taken effect) had certainly taken effect
     * before the read began. A PUT applied twice (say, retried after its
     * first effect was seen) breaks exactly this. */
    uint64_t ge = s->now;
    uint64_t p_eff = p ? effective_end(&s->puts[p]) : 0;
    if (p) CHECK(s, s->puts[p].begin <= ge, "read put %llu before it began", (unsigned long long)p);
    for (size_t q = 1; q < s->n_puts && !s->fail[0]; q++) {
        const put_rec *w = &s->puts[q];
        uint64_t w_eff = effective_end(w);
        if (q == p || w->key != key || w_eff >= gb || excused(s, key, w_eff)) continue;
        if (!p)
            CHECK(s, false, "node %d read %s absent after put %llu took effect (step %llu)", r,
                  key_name(key), (unsigned long long)q, (unsigned long long)w_eff);
        else if (w->begin > p_eff)
            CHECK(s, false,
                  "node %d read %s = put %llu [%llu,%llu] (in effect by %llu), superseded by "
                  "put %llu [%llu,%llu] (in effect by %llu) before the read began at %llu",
                  r, key_name(key), (unsigned long long)p, (unsigned long long)s->puts[p].begin,
                  (unsigned long long)s->puts[p].end, (unsigned long long)p_eff,
                  (unsigned long long)q, (unsigned long long)w->begin, (unsigned long long)w->end,
                  (unsigned long long)w_eff, (unsigned long long)gb);
    }
    /* Never backwards for one reader, unless a loss came after the value
     * it saw was written (the reader may have seen the last copy left). */
    snode *nd = &s->nodes[r];
    uint64_t last = nd->seen[key];
    if (last && !(s->last_loss[key] && s->last_loss[key] >= s->puts[last].begin)) {
        CHECK(s, p != 0, "node %d read %s absent after reading put %llu", r, key_name(key),
              (unsigned long long)last);
        if (p)
            CHECK(s, p == last || p_eff >= s->puts[last].begin,
                  "node %d read %s = put %llu after reading the later put %llu", r, key_name(key),
                  (unsigned long long)p, (unsigned long long)last);
    }
    nd->seen[key] = p;
    if (p && s->puts[p].seen > ge) s->puts[p].seen = ge;
}

/* ---- invariants ---------------------------------------------------------- */

static void check_invariants(sim *s)
{
    for (int k = 0; k < s->nkeys && !s->fail[0]; k++) {
        int owners = 0, sharers = 0;
        uint64_t shared_id = 0;
        for (int i = 0; i < s->n; i++) {
            if (!s->nodes[i].up) continue;
            const void *v;
            size_t len;
            cc_state st = cc_peek(s->nodes[i].cc, key_name(k), &v, &len);
            if (st == CC_I) continue;
            uint64_t id = value_id(s, v, len, k);
            if (st == CC_S) {
                CHECK(s, sharers == 0 || id == shared_id,
                      "S copies of %s differ: put %llu and %llu", key_name(k),
                      (unsigned long long)shared_id, (unsigned long long)id);
                shared_id = id;
                sharers++;
            } else {
                owners++;
            }
        }
        CHECK(s, owners <= 1, "%d nodes hold %s in M or E", owners, key_name(k));
        CHECK(s, owners == 0 || sharers == 0, "%s held in M/E and in S on %d nodes", key_name(k),
              sharers);
    }
}

/* DSYNC_SIM_TRACE=1: every event of a seed, to follow a failure. */
static bool tracing;

static void trace(const sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void trace(const sim *s, const char *fmt, ...)
{
    if (!tracing) return;
    va_list ap;
    va_start(ap, fmt);
    printf("%5llu ", (unsigned long long)s->now);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static void trace_msg(const sim *s, const cc_msg *m)
{
    static const char *types[] = {"?",    "GETS",   "GETM",   "WT",  "PUTBACK", "GRANT",
                                  "NACK", "WT_ACK", "PB_ACK", "INV", "INV_ACK", "SAVED"};
    uint64_t id = m->len >= 8 ? ut_get_le(m->value, 8) : 0;
    trace(s,
          "  %llu->%llu %s %.*s e%llu rid %llu hid %llu st %s mode %u fl %u v(%llu,%llu) put %llu",
          (unsigned long long)m->from, (unsigned long long)m->to, types[m->type], (int)m->key_len,
          m->key, (unsigned long long)m->epoch, (unsigned long long)m->rid,
          (unsigned long long)m->hid, cc_state_name((cc_state)m->state), m->mode, m->flags,
          (unsigned long long)m->version.epoch, (unsigned long long)m->version.seq,
          (unsigned long long)id);
}

/* ---- the cluster --------------------------------------------------------- */

static int index_of(const sim *s, uint64_t id)
{
    for (int i = 0; i < s->n; i++)
        if (s->ids[i] == id) return i;
    return -1;
}

static void complete(sim *s, int i, const cc_completion *c)
{
    snode *nd = &s->nodes[i];
    CHECK(s, nd->busy && c->id == nd->op_id && c->kind == nd->kind,
          "node %d: completion of unknown op %llu", i, (unsigned long long)c->id);
    if (!nd->busy || c->id != nd->op_id) return;
    nd->busy = false;
    trace(s, "node %d: %s %s done: %s, put %llu", i, nd->kind == CC_OP_PUT ? "PUT" : "GET",
          key_name(nd->key), dsync_errname(c->status),
          (unsigned long long)(c->len >= 8 ? ut_get_le(c->value, 8) : nd->put_id));
    if (c->status == DSYNC_ETIMEDOUT) {
        /* The protocol goes on without the client: a PUT's outcome is
         * unknown, a GET's answer is lost. Never while calm. */
        CHECK(s, !s->calm || nd->begin < s->calm_since, "node %d: operation timed out while calm",
              i);
        if (nd->kind == CC_OP_PUT) s->puts_unknown++;
        return;
    }
    if (nd->kind == CC_OP_PUT) {
        CHECK(s, c->status == 0 || c->status == DSYNC_EUNAVAILABLE, "node %d: PUT failed: %s", i,
              dsync_errname(c->status));
        if (c->status == 0) {
            s->puts[nd->put_id].end = s->now;
            s->puts_done++;
        } else {
            s->puts_unknown++; /* outcome unknown: may appear any time */
        }
        return;
    }
    CHECK(s, c->status == 0 || c->status == DSYNC_ENOTFOUND, "node %d: GET failed: %s", i,
          dsync_errname(c->status));
    uint64_t p = c->status == 0 ? value_id(s, c->value, c->len, nd->key) : 0;
    s->gets++;
    check_read(s, i, nd->key, nd->begin, p);
    nd->final_read[nd->key] = p;
}

static void queue_packet(sim *s, uint64_t to, const unsigned char *bytes, size_t len)
{
    int t = index_of(s, to);
    CHECK(s, t >= 0, "message to unknown node %llu", (unsigned long long)to);
    if (t < 0) return;
    if (s->n_net == s->cap_net) {
        s->cap_net = s->cap_net ? s->cap_net * 2 : 256;
        s->net = realloc(s->net, s->cap_net * sizeof *s->net);
    }
    if (!s->calm && chance(s, s->p_loss)) {
        /* Lost: as cache.h asks of the transport, the cluster notices and
         * moves to a new epoch a little later. */
        if (!s->bump_at) s->bump_at = s->now + 1 + rnd(s) % 5;
        return;
    }
    unsigned char *copy = malloc(len);
    memcpy(copy, bytes, len);
    uint64_t delay = 1 + rnd(s) % s->max_delay;
    s->net[s->n_net++] = (packet){s->now + delay, t, copy, len};
    s->msgs++;
}

static void queue_store(sim *s, int i, const cc_store_req *r)
{
    if (s->n_sq == s->cap_sq) {
        s->cap_sq = s->cap_sq ? s->cap_sq * 2 : 64;
        s->sq = realloc(s->sq, s->cap_sq * sizeof *s->sq);
    }
    store_op op = {s->now + 1 + rnd(s) % 4, i, s->nodes[i].incarnation, *r};
    size_t klen = strlen(r->key) + 1;
    op.req.key = memcpy(malloc(klen), r->key, klen);
    op.req.value = r->len ? memcpy(malloc(r->len), r->value, r->len) : NULL;
    s->sq[s->n_sq++] = op;
}

/* Takes everything node i has ready. */
static void drain(sim *s, int i)
{
    snode *nd = &s->nodes[i];
    while (nd->up && cc_has_ready(nd->cc)) {
        cc_ready rd;
        cc_ready_get(nd->cc, &rd);
        for (size_t k = 0; k < rd.n_msgs; k++)
            queue_packet(s, rd.msgs[k].to, rd.msgs[k].bytes, rd.msgs[k].len);
        for (size_t k = 0; k < rd.n_store; k++)
            queue_store(s, i, &rd.store[k]);
        for (size_t k = 0; k < rd.n_done; k++)
            complete(s, i, &rd.done[k]);
        cc_advance(nd->cc, &rd);
    }
    check_invariants(s);
}

static void start_node(sim *s, int i)
{
    snode *nd = &s->nodes[i];
    cc_config cfg = s->cfg;
    cfg.self = s->ids[i];
    nd->cc = cc_node_new(&cfg);
    assert_non_null(nd->cc);
    nd->up = true;
    nd->incarnation++;
    nd->busy = false;
    nd->view_pending = false;
    memset(nd->seen, 0, sizeof nd->seen);
}

static void crash_node(sim *s, int i)
{
    snode *nd = &s->nodes[i];
    /* Write-back loses exactly what the node held dirty. */
    for (int k = 0; k < s->nkeys; k++)
        if (s->lossy_crash && cc_holds_dirty(nd->cc, key_name(k))) s->last_loss[k] = s->now;
    if (nd->busy && nd->kind == CC_OP_PUT) s->puts_unknown++; /* may or may not be in */
    cc_node_free(nd->cc);
    nd->cc = NULL;
    nd->up = false;
    nd->busy = false;
    s->crashes++;
    trace(s, "node %d: crash", i);
}

/* A new view of the live nodes, learnt by each after a random delay. */
static void new_view(sim *s, bool may_lose)
{
    s->epoch++;
    s->views++;
    uint64_t members[MAXN];
    size_t count = 0;
    for (int i = 0; i < s->n; i++)
        if (s->nodes[i].up) members[count++] = s->ids[i];
    for (int i = 0; i < s->n; i++) {
        snode *nd = &s->nodes[i];
        if (!nd->up) continue;
        nd->view_pending = true;
        nd->view_at = s->now + (s->calm ? 0 : rnd(s) % 3);
        nd->view_epoch = s->epoch;
        memcpy(nd->view_members, members, sizeof members);
        nd->view_n = count;
        nd->view_may_lose = may_lose;
    }
    /* A crash loses at once; a view change loses where it is applied. */
    if (may_lose) lose_all(s);
}

static void apply_views(sim *s)
{
    for (int i = 0; i < s->n; i++) {
        snode *nd = &s->nodes[i];
        if (!nd->up || !nd->view_pending || nd->view_at > s->now) continue;
        nd->view_pending = false;
        if (nd->view_may_lose) lose_all(s);
        trace(s, "node %d: view %llu (%zu members)", i, (unsigned long long)nd->view_epoch,
              nd->view_n);
        assert_int_equal(cc_set_view(nd->cc, nd->view_epoch, nd->view_members, nd->view_n), 0);
        drain(s, i);
    }
}

static void client_step(sim *s, int i)
{
    snode *nd = &s->nodes[i];
    /* A hit the embedder served from its own copy of a line (node_cache.c
     * serves GETs so) reaches the core later as a touch: at any time, the
     * key held, pinned by a request in flight, or gone. It may only
     * reorder the LRU. */
    if (nd->up && chance(s, s->p_evict)) {
        int k = (int)(rnd(s) % (uint64_t)s->nkeys);
        cc_touch(nd->cc, key_name(k));
        trace(s, "node %d: touch %s", i, key_name(k));
    }
    if (!nd->up || nd->busy || cc_epoch(nd->cc) == 0) return;
    if (chance(s, s->p_evict)) {
        int k = (int)(rnd(s) % (uint64_t)s->nkeys);
        trace(s, "node %d: evict %s: %d", i, key_name(k), cc_evict(nd->cc, key_name(k), s->now));
        drain(s, i);
    }
    if (!chance(s, s->p_op)) return;
    int key = (int)(rnd(s) % (uint64_t)s->nkeys);
    cc_result res;
    nd->key = key;
    nd->begin = s->now;
    if (rnd(s) % 10 < 6) {
        nd->kind = CC_OP_GET;
        assert_int_equal(cc_get(nd->cc, key_name(key), s->now, &res), 0);
        trace(s, "node %d: GET %s%s", i, key_name(key), res.done ? " hit" : "");
        if (res.done) {
            s->hits++;
            s->gets++;
            CHECK(s, res.status == 0, "a GET done at once failed");
            uint64_t p = value_id(s, res.value, res.len, key);
            check_read(s, i, key, s->now, p);
            nd->final_read[key] = p;
        } else {
            nd->busy = true;
            nd->op_id = res.id;
        }
    } else {
        if (s->n_puts == s->cap_puts) {
            s->cap_puts = s->cap_puts ? s->cap_puts * 2 : 256;
            s->puts = realloc(s->puts, s->cap_puts * sizeof *s->puts);
        }
        if (s->n_puts == 0) s->n_puts = 1;
        uint64_t id = s->n_puts++;
        s->puts[id] = (put_rec){key, s->now, UINT64_MAX, UINT64_MAX};
        unsigned char value[VALUE_MAX];
        size_t len = make_value(s, id, value);
        nd->kind = CC_OP_PUT;
        nd->put_id = id;
        trace(s, "node %d: PUT %s put %llu", i, key_name(key), (unsigned long long)id);
        assert_int_equal(cc_put(nd->cc, key_name(key), value, len, 0, s->now, &res), 0);
        assert_false(res.done);
        nd->busy = true;
        nd->op_id = res.id;
    }
    drain(s, i);
}

/* The simulated Redis answers the requests that are due. */
static void store_step(sim *s)
{
    for (size_t k = 0; k < s->n_sq;) {
        store_op op = s->sq[k];
        if (op.at > s->now) {
            k++;
            continue;
        }
        s->sq[k] = s->sq[--s->n_sq];
        int key = key_index(op.req.key);
        assert_true(key >= 0);
        redis_key *rk = &s->redis[key];
        /* A failure may come before or after the write took effect. */
        bool fails = !s->calm && chance(s, s->p_store_fail);
        bool applies = !fails || rnd(s) % 2;
        bool newer =
            !rk->present || rk->version.epoch < op.req.version.epoch ||
            (rk->version.epoch == op.req.version.epoch && rk->version.seq < op.req.version.seq);
        /* A write answers found only when the store kept a newer value. */
        bool found = op.req.kind == CC_STORE_LOAD ? rk->present : !newer;
        /* A write asked under an epoch older than a load of the key since
         * is refused, and says so (DSYNC_EUNAVAILABLE). DSYNC_SIM_NO_FENCE
         * turns the fence off, to see what it prevents. */
        bool fenced = op.req.kind == CC_STORE_WRITE && rk->present &&
                      op.req.epoch < rk->fence && !getenv("DSYNC_SIM_NO_FENCE");
        if (op.req.kind == CC_STORE_LOAD && applies && rk->present && op.req.epoch > rk->fence)
            rk->fence = op.req.epoch;
        if (fenced) fails = true;
        if (op.req.kind == CC_STORE_WRITE && applies && newer && !fenced) {
            rk->present = true;
            memcpy(rk->value, op.req.value, op.req.len);
            rk->len = op.req.len;
            rk->version = op.req.version;
        }
        snode *nd = &s->nodes[op.node];
        trace(s, "  store %s %s v(%llu,%llu) e%llu for node %d%s%s",
              op.req.kind == CC_STORE_LOAD ? "LOAD" : "WRITE", op.req.key,
              (unsigned long long)op.req.version.epoch, (unsigned long long)op.req.version.seq,
              (unsigned long long)op.req.epoch, op.node,
              fenced ? " fenced" : fails ? " fails" : "", applies || fenced ? "" : " (not applied)");
        if (nd->up && nd->incarnation == op.incarnation) {
            if (fails)
                cc_store_done(nd->cc, op.req.id, op.req.key, DSYNC_EUNAVAILABLE, false, NULL, 0,
                              (cc_version){0, 0}, s->now);
            else
                cc_store_done(nd->cc, op.req.id, op.req.key, 0, found, rk->value, rk->len,
                              rk->version, s->now);
            drain(s, op.node);
        }
        free((void *)op.req.key);
        free((void *)op.req.value);
    }
}

static bool is_held(const sim *s, const packet *p)
{
    if (!s->held) return false;
    cc_msg m;
    return cc_msg_decode(p->bytes, p->len, &m) == 0 && s->held(&m);
}

static void deliver_due(sim *s)
{
    for (;;) {
        size_t due[1024], count = 0;
        for (size_t k = 0; k < s->n_net && count < 1024; k++)
            if (s->net[k].at <= s->now && !is_held(s, &s->net[k])) due[count++] = k;
        if (count == 0 || s->fail[0]) return;
        size_t k = due[rnd(s) % count];
        packet p = s->net[k];
        s->net[k] = s->net[--s->n_net];
        snode *nd = &s->nodes[p.to];
        if (nd->up) {
            cc_msg m;
            assert_int_equal(cc_msg_decode(p.bytes, p.len, &m), 0);
            trace_msg(s, &m);
            assert_int_equal(cc_step(nd->cc, m.from, &m, s->now), 0);
            drain(s, p.to);
        }
        free(p.bytes);
    }
}

static void step(sim *s)
{
    if (!s->calm) {
        int live = 0;
        for (int i = 0; i < s->n; i++)
            live += s->nodes[i].up;
        int i = (int)(rnd(s) % (uint64_t)s->n);
        if (s->nodes[i].up && live > 2 && chance(s, s->p_crash)) {
            crash_node(s, i);
            new_view(s, s->lossy_view);
        } else if (!s->nodes[i].up && chance(s, s->p_restart)) {
            start_node(s, i);
            new_view(s, s->lossy_view);
        } else if (chance(s, s->p_bump)) {
            new_view(s, s->lossy_view);
        }
    }
    if (s->bump_at && s->bump_at <= s->now) {
        new_view(s, s->lossy_view);
        s->bump_at = 0;
    }
    apply_views(s);
    if (!s->calm)
        for (int i = 0; i < s->n; i++)
            client_step(s, i);
    deliver_due(s);
    store_step(s);
    for (int i = 0; i < s->n; i++)
        if (s->nodes[i].up) {
            cc_tick(s->nodes[i].cc, s->now);
            drain(s, i);
        }
}

static bool quiet(const sim *s)
{
    if (s->n_net || s->n_sq || s->bump_at) return false;
    for (int i = 0; i < s->n; i++)
        if (s->nodes[i].up && (s->nodes[i].busy || s->nodes[i].view_pending)) return false;
    return true;
}

static void free_sim(sim *s)
{
    for (int i = 0; i < s->n; i++)
        if (s->nodes[i].up) cc_node_free(s->nodes[i].cc);
    for (size_t k = 0; k < s->n_net; k++)
        free(s->net[k].bytes);
    for (size_t k = 0; k < s->n_sq; k++) {
        free((void *)s->sq[k].req.key);
        free((void *)s->sq[k].req.value);
    }
    free(s->net);
    free(s->sq);
    free(s->puts);
}

/* The configuration a seed runs: every combination of policy and store,
 * cluster sizes, tight LRUs, TTLs and network delays, by seed. */
static void configure(sim *s, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->seed = s->rng = seed;
    s->n = 3 + (int)(seed % 3);
    s->nkeys = 2 + (int)(seed / 3 % 5);
    s->cfg.policy = seed / 2 % 2 ? CC_WRITE_THROUGH : CC_WRITE_BACK;
    s->cfg.external_store = seed / 4 % 2 == 0;
    s->cfg.max_entries = seed % 4 == 0 ? 2 : 0;
    s->cfg.max_bytes = seed % 5 == 0 ? 64 : 0;
    s->cfg.default_ttl_ms = seed % 7 == 0 ? 25 : 0;
    s->cfg.store_retry_ms = 3;
    s->cfg.ring_vnodes = 16;
    s->lossy_crash = s->cfg.policy == CC_WRITE_BACK || !s->cfg.external_store;
    s->lossy_view = !s->cfg.external_store;
    s->p_op = 0.3;
    s->p_evict = 0.02;
    s->p_crash = 0.01;
    s->p_restart = 0.05;
    s->p_bump = 0.003;
    s->p_store_fail = s->cfg.external_store ? 0.03 : 0;
    s->p_loss = seed % 3 == 1 ? 0.003 : 0;
    s->max_delay = 1 + seed % 6;
    /* Timeouts short enough to fire often in the storm, yet above the
     * slowest path a calm operation can take, where none may time out: a
     * GET queued behind its own PUTBACK whose home recalls every member,
     * stores a dirty value and loads is six hops and three store requests
     * (a flat 30 ticks fell short of that once in ~30,000 seeds). */
    s->cfg.op_timeout_ms = seed % 11 == 0 ? 10 * s->max_delay + 30 : 0;
    for (int i = 0; i < s->n; i++)
        s->ids[i] = (uint64_t)i * 7 + 3;
}

static const char *mode_name(const sim *s)
{
    static char buf[96];
    snprintf(buf, sizeof buf, "%d nodes, %d keys, %s, %s%s%s%s%s", s->n, s->nkeys,
             s->cfg.policy == CC_WRITE_BACK ? "write-back" : "write-through",
             s->cfg.external_store ? "redis" : "home memory",
             s->cfg.max_entries ? ", 2 entries" : "", s->cfg.max_bytes ? ", 64 bytes" : "",
             s->cfg.default_ttl_ms ? ", ttl" : "", s->cfg.op_timeout_ms ? ", timeouts" : "");
    return buf;
}

static int run_seed(uint64_t seed, int steps)
{
    sim s;
    configure(&s, seed);
    for (int i = 0; i < s.n; i++)
        start_node(&s, i);
    s.now = 1;
    new_view(&s, false);
    for (; s.now < (uint64_t)steps && !s.fail[0]; s.now++)
        step(&s);

    /* Calm: no faults, no new operations; everything must finish. */
    s.calm = true;
    s.calm_since = s.now;
    for (int i = 0; i < s.n; i++)
        if (!s.nodes[i].up) {
            start_node(&s, i);
            new_view(&s, s.lossy_view);
        }
    int calm;
    for (calm = 0; calm < 3000 && !s.fail[0] && !quiet(&s); calm++, s.now++)
        step(&s);
    CHECK(&s, quiet(&s), "operations still pending after 3000 calm steps");
    /* Every node reads every key, twice; the second time they must agree
     * (the first may still find a copy older than a PUT whose outcome was
     * unknown: its value is in the store, and it takes effect when the
     * copy is recalled). */
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < s.n && !s.fail[0]; i++) {
            snode *nd = &s.nodes[i];
            for (int k = 0; k < s.nkeys && !s.fail[0]; k++) {
                cc_result res;
                nd->key = k;
                nd->begin = s.now;
                nd->kind = CC_OP_GET;
                assert_int_equal(cc_get(nd->cc, key_name(k), s.now, &res), 0);
                if (res.done) {
                    uint64_t p = value_id(&s, res.value, res.len, k);
                    check_read(&s, i, k, s.now, p);
                    nd->final_read[k] = p;
                } else {
                    nd->busy = true;
                    nd->op_id = res.id;
                }
                drain(&s, i);
                for (calm = 0; calm < 500 && nd->busy && !s.fail[0]; calm++, s.now++)
                    step(&s);
                CHECK(&s, !nd->busy, "final GET of %s on node %d did not complete", key_name(k), i);
            }
        }
    for (int k = 0; k < s.nkeys && !s.fail[0]; k++)
        for (int i = 1; i < s.n; i++)
            CHECK(&s, s.nodes[i].final_read[k] == s.nodes[0].final_read[k],
                  "nodes 0 and %d end with %s = put %llu and %llu", i, key_name(k),
                  (unsigned long long)s.nodes[0].final_read[k],
                  (unsigned long long)s.nodes[i].final_read[k]);

    if (getenv("DSYNC_SIM_VERBOSE"))
        print_message("seed %llu (%s): %llu gets (%llu hits at once), %llu puts done, %llu "
                      "unknown, %llu views, %llu crashes, %llu messages, %llu steps\n",
                      (unsigned long long)seed, mode_name(&s), (unsigned long long)s.gets,
                      (unsigned long long)s.hits, (unsigned long long)s.puts_done,
                      (unsigned long long)s.puts_unknown, (unsigned long long)s.views,
                      (unsigned long long)s.crashes, (unsigned long long)s.msgs,
                      (unsigned long long)s.now);
    int rc = 0;
    if (s.fail[0]) {
        print_message("cache sim seed %llu (%s) failed: %s (rerun: DSYNC_SIM_SEED=%llu)\n",
                      (unsigned long long)seed, mode_name(&s), s.fail, (unsigned long long)seed);
        rc = -1;
    }
    free_sim(&s);
    return rc;
}

static void test_random_clusters_stay_coherent_and_linearizable(void **state)
{
    const char *one = getenv("DSYNC_SIM_SEED");
    if (!one) one = getenv("DSYNC_SEED");
    if (one) {
        tracing = getenv("DSYNC_SIM_TRACE") != NULL;
        assert_int_equal(run_seed(strtoull(one, NULL, 10), 1500), 0);
        return;
    }
    const char *env = getenv("DSYNC_SIM_SEEDS");
    int seeds = env ? atoi(env) : 200;
    int failed = 0;
    for (int k = 1; k <= seeds; k++)
        failed += run_seed((uint64_t)k, 1500) != 0;
    assert_int_equal(failed, 0);
}

/* ---- scripted scenarios ---------------------------------------------------- */

static uint64_t held_from;    /* INV_ACKs from this node are held */
static cc_msg_type held_type; /* messages of this type are held */

static bool hold_acks_from(const cc_msg *m)
{
    return m->type == CC_MSG_INV_ACK && m->from == held_from;
}

static bool hold_type(const cc_msg *m)
{
    return m->type == held_type;
}

/* A calm 3-node cluster (home memory, write-back). Roles: the key's home,
 * and the two other nodes, whose messages cross the network. */
static int home_i, a_i, b_i;

static void scripted(sim *s)
{
    tracing = getenv("DSYNC_SIM_TRACE") != NULL;
    configure(s, 1);
    s->n = 3;
    s->nkeys = 1;
    s->cfg.external_store = false;
    s->cfg.policy = CC_WRITE_BACK;
    s->calm = true;
    for (int i = 0; i < s->n; i++)
        start_node(s, i);
    s->now = 1;
    new_view(s, false);
    apply_views(s);
    home_i = index_of(s, cc_home(s->nodes[0].cc, key_name(0)));
    a_i = (home_i + 1) % 3;
    b_i = (home_i + 2) % 3;
}

/* Node i's client starts op (GET, or PUT with a fresh put id). */
static void issue(sim *s, int i, cc_op_kind kind)
{
    snode *nd = &s->nodes[i];
    cc_result res;
    nd->key = 0;
    nd->begin = s->now;
    nd->kind = kind;
    if (kind == CC_OP_GET) {
        assert_int_equal(cc_get(nd->cc, key_name(0), s->now, &res), 0);
        if (res.done) return;
    } else {
        if (s->n_puts == s->cap_puts) {
            s->cap_puts = s->cap_puts ? s->cap_puts * 2 : 256;
            s->puts = realloc(s->puts, s->cap_puts * sizeof *s->puts);
        }
        if (s->n_puts == 0) s->n_puts = 1;
        nd->put_id = s->n_puts++;
        s->puts[nd->put_id] = (put_rec){0, s->now, UINT64_MAX, UINT64_MAX};
        unsigned char value[VALUE_MAX];
        size_t len = make_value(s, nd->put_id, value);
        assert_int_equal(cc_put(nd->cc, key_name(0), value, len, 0, s->now, &res), 0);
    }
    nd->busy = true;
    nd->op_id = res.id;
    drain(s, i);
}

static void run_steps(sim *s, int steps)
{
    for (int k = 0; k < steps && !s->fail[0]; k++, s->now++)
        step(s);
    if (s->fail[0]) fail_msg("%s", s->fail);
}

static void test_a_put_completes_only_once_every_other_copy_is_invalid(void **state)
{
    sim s;
    scripted(&s);
    issue(&s, a_i, CC_OP_PUT);
    run_steps(&s, 20);
    issue(&s, b_i, CC_OP_GET); /* a downgrades: both hold S */
    run_steps(&s, 20);
    assert_int_equal(cc_peek(s.nodes[a_i].cc, key_name(0), NULL, NULL), CC_S);
    assert_int_equal(cc_peek(s.nodes[b_i].cc, key_name(0), NULL, NULL), CC_S);
    /* The home writes while b's acknowledgement is held back. */
    held_from = s.ids[b_i];
    s.held = hold_acks_from;
    issue(&s, home_i, CC_OP_PUT);
    run_steps(&s, 50);
    assert_true(s.nodes[home_i].busy);
    assert_int_equal(cc_peek(s.nodes[home_i].cc, key_name(0), NULL, NULL), CC_I);
    assert_int_equal(cc_peek(s.nodes[a_i].cc, key_name(0), NULL, NULL), CC_I);
    assert_int_equal(cc_peek(s.nodes[b_i].cc, key_name(0), NULL, NULL), CC_I);
    s.held = NULL;
    run_steps(&s, 20);
    assert_false(s.nodes[home_i].busy);
    assert_int_equal(cc_peek(s.nodes[home_i].cc, key_name(0), NULL, NULL), CC_M);
    cc_stats st;
    cc_get_stats(s.nodes[b_i].cc, &st);
    assert_int_equal(st.invalidations[CC_REASON_WRITE], 1);
    free_sim(&s);
}

static void test_an_inv_that_overtakes_its_grant_is_obeyed_after_it(void **state)
{
    sim s;
    scripted(&s);
    /* a asks for M; its grant is held back while b asks too: the
     * home's INV to a arrives first and must wait for the grant. */
    held_type = CC_MSG_GRANT;
    s.held = hold_type;
    issue(&s, a_i, CC_OP_PUT);
    run_steps(&s, 10);
    issue(&s, b_i, CC_OP_PUT);
    run_steps(&s, 10);
    assert_true(s.nodes[a_i].busy && s.nodes[b_i].busy);
    s.held = NULL;
    run_steps(&s, 30);
    assert_false(s.nodes[a_i].busy);
    assert_false(s.nodes[b_i].busy);
    /* a's PUT happened, then its line went to b. */
    assert_int_equal(s.puts[s.nodes[a_i].put_id].end < s.puts[s.nodes[b_i].put_id].end, 1);
    assert_int_equal(cc_peek(s.nodes[a_i].cc, key_name(0), NULL, NULL), CC_I);
    assert_int_equal(cc_peek(s.nodes[b_i].cc, key_name(0), NULL, NULL), CC_M);
    issue(&s, home_i, CC_OP_GET);
    run_steps(&s, 20);
    assert_int_equal(s.nodes[home_i].final_read[0], s.nodes[b_i].put_id);
    free_sim(&s);
}

static void test_a_dirty_value_survives_a_view_change_that_kills_its_transaction(void **state)
{
    sim s;
    scripted(&s);
    issue(&s, a_i, CC_OP_PUT); /* a: M, dirty, the only copy */
    run_steps(&s, 20);
    uint64_t written = s.nodes[a_i].put_id;
    /* b reads; a's answer (with the dirty value) is held, and the
     * epoch moves on: the home's transaction dies with it. */
    held_from = s.ids[a_i];
    s.held = hold_acks_from;
    issue(&s, b_i, CC_OP_GET);
    run_steps(&s, 10);
    new_view(&s, false);
    run_steps(&s, 5);
    s.held = NULL;
    run_steps(&s, 40);
    assert_false(s.nodes[b_i].busy);
    assert_int_equal(s.nodes[b_i].final_read[0], written);
    /* a crashes now: the value is in the home's store already. */
    crash_node(&s, a_i);
    new_view(&s, false);
    run_steps(&s, 20);
    issue(&s, home_i, CC_OP_GET);
    run_steps(&s, 20);
    assert_false(s.nodes[home_i].busy);
    assert_int_equal(s.nodes[home_i].final_read[0], written);
    free_sim(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_clusters_stay_coherent_and_linearizable),
        cmocka_unit_test(test_a_put_completes_only_once_every_other_copy_is_invalid),
        cmocka_unit_test(test_an_inv_that_overtakes_its_grant_is_obeyed_after_it),
        cmocka_unit_test(test_a_dirty_value_survives_a_view_change_that_kills_its_transaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
