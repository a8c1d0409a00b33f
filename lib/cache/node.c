/*
 * node.c: the cache node as the runtime sees it: creation, views, the
 * message entry point (epochs, held messages, messages to self), the
 * output it hands out Ready-style, counters and introspection. The
 * protocol itself is in line.c (requester side) and dir.c (home side).
 */
#include <assert.h>

#include "cache_internal.h"

int cc_version_cmp(cc_version a, cc_version b)
{
    if (a.epoch != b.epoch) return a.epoch < b.epoch ? -1 : 1;
    if (a.seq != b.seq) return a.seq < b.seq ? -1 : 1;
    return 0;
}

cc_version cc_version_next(cc_version v, uint64_t epoch)
{
    if (v.epoch < epoch) return (cc_version){epoch, 1};
    return (cc_version){v.epoch, v.seq + 1};
}

void *cc_memdup(const void *p, size_t len)
{
    void *c = malloc(len ? len : 1);
    if (!c) abort(); /* the core has no partial state to fall back to */
    if (len) memcpy(c, p, len);
    return c;
}

/* Grows an output array; the core cannot continue half-done, so running
 * out of memory there is fatal, like Redis' zmalloc. */
static void *grow(void *arr, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap) return arr;
    size_t ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    void *p = realloc(arr, ncap * sz);
    if (!p) abort();
    *cap = ncap;
    return p;
}

cc_node *cc_node_new(const cc_config *cfg)
{
    if (!cfg || cfg->self == 0) return NULL;
    if (cfg->policy != CC_WRITE_BACK && cfg->policy != CC_WRITE_THROUGH) return NULL;
    if (cfg->ring_vnodes > QR_MAX_VNODES) return NULL;
    cc_node *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->cfg = *cfg;
    if (n->cfg.store_retry_ms == 0) n->cfg.store_retry_ms = 100;
    ut_map_init(&n->lines);
    ut_map_init(&n->dirs);
    ut_map_init(&n->mem);
    n->lru.max_entries = cfg->max_entries;
    n->lru.max_bytes = cfg->max_bytes;
    return n;
}

static void free_output(cc_node *n)
{
    for (size_t i = 0; i < n->n_out; i++)
        free((void *)n->out[i].bytes);
    for (size_t i = 0; i < n->n_done; i++)
        free((void *)n->done[i].value);
    for (size_t i = 0; i < n->n_store; i++) {
        free((void *)n->store[i].key);
        free((void *)n->store[i].value);
    }
    n->n_out = n->n_done = n->n_store = 0;
}

void cc_node_free(cc_node *n)
{
    if (!n) return;
    const char *k;
    void *v;
    for (size_t it = 0; ut_map_next(&n->lines, &it, &k, &v);)
        cc_line_free(n, v);
    ut_map_close(&n->lines);
    cc_dirs_free(n);
    ut_map_close(&n->dirs);
    for (size_t it = 0; ut_map_next(&n->mem, &it, &k, &v);) {
        cc_memval *mv = v;
        free(mv->value);
        free(mv);
    }
    ut_map_close(&n->mem);
    free_output(n);
    free(n->out);
    free(n->done);
    free(n->store);
    for (size_t i = 0; i < n->n_self; i++)
        ut_buf_free(&n->self_q[i]);
    free(n->self_q);
    for (size_t i = 0; i < n->n_held; i++)
        free(n->held[i].bytes);
    free(n->held);
    qr_free(n->ring);
    free(n);
}

uint64_t cc_epoch(const cc_node *n)
{
    return n->epoch;
}

uint64_t cc_home_of(const cc_node *n, const char *key, size_t key_len)
{
    return n->ring ? qr_owner(n->ring, key, key_len) : 0;
}

uint64_t cc_home(const cc_node *n, const char *key)
{
    return cc_home_of(n, key, strlen(key));
}

/* ---- output ------------------------------------------------------------ */

void cc_send(cc_node *n, const cc_msg *m)
{
    ut_buf b;
    ut_buf_init(&b);
    int rc = cc_msg_encode(m, &b);
    assert(rc == 0); /* the core only builds valid messages */
    if (rc != 0) abort();
    if (m->to == n->cfg.self) {
        n->self_q = grow(n->self_q, &n->cap_self, n->n_self + 1, sizeof *n->self_q);
        n->self_q[n->n_self++] = b;
        return;
    }
    n->out = grow(n->out, &n->cap_out, n->n_out + 1, sizeof *n->out);
    n->out[n->n_out++] = (cc_outmsg){m->to, (unsigned char *)b.data, b.len};
}

void cc_complete(cc_node *n, cc_op *op, int status, cc_state state, const void *value, size_t len)
{
    if (op->reported) return;
    op->reported = true;
    n->done = grow(n->done, &n->cap_done, n->n_done + 1, sizeof *n->done);
    n->done[n->n_done++] = (cc_completion){op->id,
                                           op->kind,
                                           status,
                                           state,
                                           value && status == 0 ? cc_memdup(value, len) : NULL,
                                           value && status == 0 ? len : 0};
}

uint64_t cc_store_issue(cc_node *n, cc_store_kind kind, const char *key, const void *value,
                        size_t len, cc_version version)
{
    n->store = grow(n->store, &n->cap_store, n->n_store + 1, sizeof *n->store);
    uint64_t id = ++n->next_store;
    n->store[n->n_store++] = (cc_store_req){id,
                                            kind,
                                            cc_memdup(key, strlen(key) + 1),
                                            kind == CC_STORE_WRITE ? cc_memdup(value, len) : NULL,
                                            kind == CC_STORE_WRITE ? len : 0,
                                            version,
                                            n->epoch};
    return id;
}

void cc_transition(cc_node *n, cc_state from, cc_state to)
{
    if (from != to) n->stats.transitions[from][to]++;
}

bool cc_has_ready(const cc_node *n)
{
    return n->n_out || n->n_done || n->n_store;
}

void cc_ready_get(cc_node *n, cc_ready *rd)
{
    *rd = (cc_ready){n->out, n->n_out, n->done, n->n_done, n->store, n->n_store};
}

void cc_advance(cc_node *n, cc_ready *rd)
{
    free_output(n);
    memset(rd, 0, sizeof *rd);
}

/* ---- input ------------------------------------------------------------- */

static bool is_member(const cc_node *n, uint64_t id)
{
    for (size_t i = 0; i < n->n_members; i++)
        if (n->members[i] == id) return true;
    return false;
}

/* A message of the current epoch from a member. */
static void dispatch(cc_node *n, const cc_msg *m)
{
    /* Handlers use the key as a C string. */
    char key[CC_KEY_MAX + 1];
    memcpy(key, m->key, m->key_len);
    key[m->key_len] = '\0';
    cc_msg mm = *m;
    mm.key = key;
    switch (m->type) {
    case CC_MSG_GETS:
    case CC_MSG_GETM:
    case CC_MSG_WT:
    case CC_MSG_PUTBACK:
        /* Only the home serves requests (the sender's ring is ours). */
        if (cc_home_of(n, key, m->key_len) != n->cfg.self) {
            n->stats.msgs_dropped++;
            return;
        }
        cc_dir_on_request(n, &mm);
        break;
    case CC_MSG_INV_ACK:
        cc_dir_on_inv_ack(n, &mm);
        break;
    case CC_MSG_GRANT:
        cc_line_on_grant(n, &mm);
        break;
    case CC_MSG_INV:
    case CC_MSG_SAVED:
        /* Only the key's home revokes or releases a copy. */
        if (cc_home_of(n, key, m->key_len) != m->from) {
            n->stats.msgs_dropped++;
            return;
        }
        if (m->type == CC_MSG_INV)
            cc_line_on_inv(n, &mm);
        else
            cc_line_on_saved(n, &mm);
        break;
    case CC_MSG_NACK:
    case CC_MSG_WT_ACK:
    case CC_MSG_PUTBACK_ACK:
        cc_line_on_reply(n, &mm);
        break;
    default:
        n->stats.msgs_dropped++;
    }
}

/* Handles the messages this node sent itself, until there are none:
 * called at the end of every entry point, never re-entered. */
static void drain_self(cc_node *n)
{
    if (n->draining) return;
    n->draining = true;
    while (n->n_self) {
        ut_buf *batch = n->self_q;
        size_t count = n->n_self;
        n->self_q = NULL;
        n->n_self = n->cap_self = 0;
        for (size_t i = 0; i < count; i++) {
            cc_msg m;
            if (cc_msg_decode(batch[i].data, batch[i].len, &m) == 0 && m.epoch == n->epoch)
                dispatch(n, &m);
            ut_buf_free(&batch[i]);
        }
        free(batch);
    }
    n->draining = false;
}

/* A message of a future epoch waits for this node to get there (rule 1). */
static void hold(cc_node *n, const cc_msg *m)
{
    if (n->n_held >= CC_MAX_HELD || n->held_bytes > CC_MAX_HELD_BYTES) {
        n->stats.msgs_dropped++;
        return;
    }
    ut_buf b;
    ut_buf_init(&b);
    if (cc_msg_encode(m, &b) != 0) {
        ut_buf_free(&b);
        return;
    }
    n->held = grow(n->held, &n->cap_held, n->n_held + 1, sizeof *n->held);
    n->held[n->n_held++] = (cc_held){m->epoch, (unsigned char *)b.data, b.len};
    n->held_bytes += b.len;
}

static void step_one(cc_node *n, const cc_msg *m)
{
    if (m->epoch > n->epoch) {
        hold(n, m);
        return;
    }
    if (m->epoch < n->epoch || !n->member || !is_member(n, m->from)) {
        n->stats.msgs_dropped++;
        return;
    }
    dispatch(n, m);
}

int cc_step(cc_node *n, uint64_t from, const cc_msg *m, uint64_t now)
{
    if (m->from != from || m->to != n->cfg.self) return DSYNC_EINVAL;
    n->now = now;
    step_one(n, m);
    drain_self(n);
    return 0;
}

/* Replays held messages of the new epoch, drops older ones. */
static void replay_held(cc_node *n)
{
    cc_held *held = n->held;
    size_t count = n->n_held;
    n->held = NULL;
    n->n_held = n->cap_held = n->held_bytes = 0;
    for (size_t i = 0; i < count; i++) {
        cc_msg m;
        if (held[i].epoch >= n->epoch && cc_msg_decode(held[i].bytes, held[i].len, &m) == 0)
            step_one(n, &m); /* a later epoch's goes back to held */
        else
            n->stats.msgs_dropped++;
        free(held[i].bytes);
    }
    free(held);
}

int cc_set_view(cc_node *n, uint64_t epoch, const uint64_t *members, size_t count)
{
    if (epoch <= n->epoch || count > CC_MAX_NODES || (count && !members)) return DSYNC_EINVAL;
    for (size_t i = 0; i < count; i++) {
        if (members[i] == 0) return DSYNC_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (members[j] == members[i]) return DSYNC_EINVAL;
    }
    qr_ring *ring = qr_new(n->cfg.ring_vnodes);
    if (!ring) return DSYNC_ENOMEM;
    for (size_t i = 0; i < count; i++)
        if (qr_add(ring, members[i]) != 0) {
            qr_free(ring);
            return DSYNC_ENOMEM;
        }
    qr_ring *old = n->ring;
    n->ring = ring;
    n->epoch = epoch;
    n->n_members = count;
    if (count) memcpy(n->members, members, count * sizeof *members);
    n->member = is_member(n, n->cfg.self);
    cc_dirs_on_view(n);
    cc_lines_on_view(n, old);
    qr_free(old);
    replay_held(n);
    drain_self(n);
    return 0;
}

void cc_tick(cc_node *n, uint64_t now)
{
    n->now = now;
    cc_lines_tick(n, now);
    cc_dirs_tick(n, now);
    drain_self(n);
}

void cc_store_done(cc_node *n, uint64_t id, const char *key, int status, bool found,
                   const void *value, size_t len, cc_version version, uint64_t now)
{
    n->now = now;
    if (!key || (found && len && !value)) return;
    cc_dir_on_store_done(n, id, key, status, found, value, len, version);
    drain_self(n);
}

void cc_after_call(cc_node *n)
{
    drain_self(n);
}

/* ---- introspection ----------------------------------------------------- */

void cc_get_stats(const cc_node *n, cc_stats *out)
{
    *out = n->stats;
    out->entries = n->lru.entries;
    out->bytes = n->lru.bytes;
    out->dir_entries = n->dirs.count;
}

cc_state cc_peek(const cc_node *n, const char *key, const void **value, size_t *len)
{
    cc_line *l = ut_map_get(&n->lines, key);
    cc_state s = l ? l->state : CC_I;
    if (value) *value = s != CC_I ? l->value : NULL;
    if (len) *len = s != CC_I ? l->len : 0;
    return s;
}

void cc_touch(cc_node *n, const char *key)
{
    cc_line *l = key ? ut_map_get(&n->lines, key) : NULL;
    if (l && l->state != CC_I) cc_lru_touch(&n->lru, l);
}

uint64_t cc_peek_expiry(const cc_node *n, const char *key)
{
    const cc_line *l = ut_map_get(&n->lines, key);
    return l && l->state != CC_I ? l->expires_at : 0;
}

void cc_set_drop_listener(cc_node *n, cc_drop_fn fn, void *ctx)
{
    n->on_drop = fn;
    n->on_drop_ctx = ctx;
}

bool cc_holds_dirty(const cc_node *n, const char *key)
{
    const cc_line *l = ut_map_get(&n->lines, key);
    return l && (l->dirty || l->wb_held);
}

const char *cc_state_name(cc_state s)
{
    static const char *names[] = {"I", "S", "E", "M"};
    return (unsigned)s <= CC_M ? names[s] : "?";
}
