/*
 * cache.h: the coherent cache's core (issue 5), a pure state machine per
 * node: directory-based MESI over the cluster's live members.
 *
 * No sockets, files, clocks, threads or randomness: the node runtime
 * creates one cc_node per cluster node and drives it with
 *   cc_get / cc_put / cc_evict   local operations (now is an argument),
 *   cc_step                      a decoded message from a peer,
 *   cc_store_done                the completion of a backing-store request,
 *   cc_tick                      the passage of time (timeouts, retries),
 *   cc_set_view                  the agreed live-member set changed,
 * and after any of these collects what to do with cc_ready_get (etcd raft's
 * Ready): messages to send, operations that completed, requests for the
 * backing store; then cc_advance. Messages a node sends to itself never
 * leave it: they are handled before the call returns.
 *
 * Protocol. Every node holds each key in M, E, S or I. The key's home is
 * its owner on the consistent-hash ring (lib/queue/ring) over the current
 * view's members; the home keeps the key's directory entry: its E/M owner
 * or its S sharers, and runs one transaction per key at a time, queuing the
 * others FIFO, which orders racing writers.
 *   - GET hit (S/E/M, not expired): answered at once, locally.
 *   - GET miss: GETS to the home. The home makes an E/M owner write its
 *     value back and drop to S (INV, downgrade), stores a dirty value
 *     before anything else, then grants E (nobody else holds it) or S,
 *     with the value (from the owner, or loaded from the store), or tells
 *     the requester the key is absent (404).
 *   - PUT on E/M: E->M locally (the home treats an E and an M owner
 *     alike). Write-back: done at once. Write-through: WT to the home,
 *     which stores the value and acknowledges (or refuses, when the node
 *     has meanwhile lost the line: the PUT then goes the GETM way).
 *   - PUT on S/I: GETM to the home, which invalidates every other copy
 *     (an M owner's dirty value comes back and is stored) and waits for
 *     every acknowledgement before it grants M; in write-through the GETM
 *     carries the value, stored before the grant. The PUT completes on
 *     the grant: at that point no other node holds a copy.
 *   - Evicting (LRU, TTL, cc_evict) a dirty line (M, or an S line whose
 *     value the store may not have yet, see below) sends PUTBACK with the
 *     value; the node keeps the value, outside the LRU, to answer an INV
 *     that crosses it, until the home acknowledges. Clean lines (S, E,
 *     clean M) leave silently: the home then holds a stale sharer or owner
 *     bit, which only ever costs one INV answered "I have nothing". A bit
 *     that is set for a node without the line is harmless; the opposite
 *     (a holder the home does not know) never happens, because only the
 *     home grants.
 *   - Dirty means "the store may not have this value yet", whatever the
 *     state. A node that hands a dirty value to its home (an INV answer)
 *     keeps it until the home says the store has that version or a newer
 *     one (SAVED): as a dirty S line after a downgrade, or, after an
 *     invalidation, outside the LRU like a PUTBACK. If the home's
 *     transaction dies with a view change before the store has the value,
 *     the node still has it: it answers the new epoch's recall with it,
 *     or writes it back (PUTBACK) to the key's home in the new epoch. So a
 *     view change without a crash loses no PUT, even in write-back.
 *   - A node has at most one request in flight per key (GETS, GETM, WT or
 *     PUTBACK, or a wait for SAVED); local operations on a key queue FIFO
 *     behind it. So the
 *     home never sees two requests of one node for one key at once.
 *   - An INV names the request id the holder was granted under. When it
 *     reaches a node whose request with that id is still waiting for its
 *     grant (messages may be reordered), the node defers it until the
 *     grant arrives, serves its queued operation with the grant, then
 *     obeys the INV. Without this a grant overtaken by the INV that
 *     revokes it would leave two owners.
 *
 * Versions. Every value carries a version (epoch, seq), ordered
 * lexicographically. The home gives each grant of M a version above every
 * version it knows for the key (it learns them from every acknowledgement
 * and store answer); an owner's local write-back PUT takes the next
 * version in the current epoch, and the home learns it (INV answer) before
 * it grants the line to anyone else; the first version of an epoch is
 * (epoch, 1), above everything of earlier epochs. A store keeps, for each key, only the value of
 * the highest version it was given (a write with a version not above the stored one is ignored):
 * late or retried write-backs then never move a value back.
 *
 * Backing store. With external_store the home asks the embedder (Redis)
 * through store requests (LOAD, STORE) and waits for cc_store_done; a
 * failed request is retried every store_retry_ms. Without, the store is
 * the home's own memory (unbounded: it is the store, not the cache).
 *
 * What a crash can lose:
 *   - write-through: a completed PUT is in the store before it completes.
 *     With an external store a node crash loses nothing. With the home's
 *     memory as the store, a crash of the home loses its keys.
 *   - write-back: a completed PUT lives only in the writer's M line until
 *     it is evicted, downgraded or invalidated; a crash of that node loses
 *     it, and readers then see the last value that reached the store (or
 *     none). A value another node has read has always reached the store
 *     first (the downgrade stores it before the grant), so with an
 *     external store no reader loses a value it has seen. With the home's
 *     memory as the store, a view change that moves the key's home (and a
 *     crash of the home) loses the key.
 *
 * Views. cc_set_view(epoch, members) is called on every node whenever the
 * cluster's agreed live-member set changes; epochs only grow, and must
 * never repeat even across a restart of the whole cluster (the Raft index
 * of the configuration is a good epoch). Every message carries its
 * sender's epoch. The rules, and why each is needed:
 *   1. A message of an older epoch is dropped; one of a newer epoch is held
 *      (up to CC_MAX_HELD messages, CC_MAX_HELD_BYTES) and handled once
 *      this node reaches that epoch, so nodes learning the view at
 *      different times lose nothing.
 *   2. A home forgets every directory entry and aborts every transaction
 *      (their grants may have been lost, their acknowledgements may never
 *      come: a crashed node answers nothing). An entry made in the new
 *      epoch starts "unknown": before granting anything, or accepting a
 *      write-through, it invalidates the key on every member but the
 *      requester (INV, reason view) and stores the freshest dirty value
 *      the answers bring. So no grant of the new epoch coexists with a
 *      copy of the old one, whatever the old directory knew.
 *   3. A node drops every line whose home changed, after writing back a
 *      dirty one (PUTBACK to the new home); a dirty value it holds for
 *      SAVED is written back to the key's home in the new epoch too.
 *      Safety does not rest on this (rule 2's recall finds every copy,
 *      and the simulation passes without it): it sends dirty values to
 *      their new home at once, and frees lines whose directory now lives
 *      on a node that knows nothing of them. Lines whose home is the same
 *      are kept and served until the new directory's first transaction
 *      recalls them; nothing new was granted before that.
 *   4. A node's requests in flight are re-sent in the new epoch, except a
 *      write-through PUT whose value may already have reached the store:
 *      it completes with DSYNC_EUNAVAILABLE (outcome unknown), because
 *      storing it again later, at a newer version, could undo a later PUT
 *      that readers have seen. A write-back PUT has no effect before its
 *      grant, so it is simply retried, and so are GETs.
 *   5. A node that is not a member drops every line and fails its
 *      operations with DSYNC_EUNAVAILABLE.
 * The core assumes that within one epoch the transport delivers each
 * message at most once (our TCP transport does not duplicate) and does
 * not lose it; order is free. A transport that loses a frame (a broken
 * connection) must make the cluster move to a new epoch (cc_set_view with
 * the same members); operations stuck until then time out (op_timeout_ms)
 * with DSYNC_ETIMEDOUT, their outcome unknown. A node cut off from the
 * cluster keeps serving its lines until it hears of the view that removed
 * it: the runtime must stop asking it (or give it an empty view) when it
 * loses the cluster.
 *
 * TTL. A PUT's ttl_ms (0: config default_ttl_ms; 0 there: none) bounds how
 * long the writer's copy lives; copies granted to other nodes live
 * default_ttl_ms. An expired line is a miss: it is evicted (a dirty one
 * written back first) and fetched again. The store keeps the value.
 *
 * Memory: each node's lines are bounded by max_entries and max_bytes (key
 * plus value bytes) in an O(1) LRU. Lines with a request in flight are
 * pinned outside the LRU list (still counted), so the bounds can be
 * exceeded by at most one pinned line per key with an operation waiting.
 * Dirty values held outside the LRU until their home has them are not
 * counted. Directory entries live until the next view change.
 *
 * Out of memory inside a transition (copying a message or a value) aborts
 * the process, like Redis' zmalloc: a half-made transition would leave the
 * protocol in a state no peer expects. Calls return DSYNC_ENOMEM only
 * where nothing has changed yet.
 */
#ifndef DSYNC_CACHE_H
#define DSYNC_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define CC_KEY_MAX 255u               /* key bytes (no NUL inside) */
#define CC_VALUE_MAX (16u << 20)      /* value bytes */
#define CC_MAX_NODES 16u              /* members of a view */
#define CC_MAX_HELD 4096u             /* messages of a future epoch held */
#define CC_MAX_HELD_BYTES (64u << 20) /* and their bytes in all */
#define CC_WIRE_VERSION 1u

typedef struct cc_node cc_node;

typedef enum { CC_I = 0, CC_S = 1, CC_E = 2, CC_M = 3 } cc_state;

typedef enum { CC_WRITE_BACK = 0, CC_WRITE_THROUGH = 1 } cc_policy;

/* A value's version: (epoch, seq), compared lexicographically. */
typedef struct {
    uint64_t epoch;
    uint64_t seq;
} cc_version;

typedef struct {
    uint64_t self; /* this node's id, nonzero */
    cc_policy policy;
    bool external_store;     /* store requests to the embedder (Redis) */
    size_t max_entries;      /* 0: unbounded */
    size_t max_bytes;        /* key + value bytes; 0: unbounded */
    uint64_t default_ttl_ms; /* 0: lines never expire */
    uint64_t op_timeout_ms;  /* 0: operations never time out */
    uint64_t store_retry_ms; /* wait before re-issuing a failed store request */
    unsigned ring_vnodes;    /* 0: QR_DEFAULT_VNODES */
} cc_config;

/* ---- messages -------------------------------------------------------- */

typedef enum {
    CC_MSG_GETS = 1,    /* node -> home: read miss, wants S or E */
    CC_MSG_GETM,        /* node -> home: wants M (value: write-through PUT) */
    CC_MSG_WT,          /* E/M owner -> home: store this PUT (write-through) */
    CC_MSG_PUTBACK,     /* node -> home: evicted a dirty M line, value */
    CC_MSG_GRANT,       /* home -> node: state S/E/M (value for S/E), or I: absent */
    CC_MSG_NACK,        /* home -> node: WT refused, not the owner */
    CC_MSG_WT_ACK,      /* home -> node: WT stored at version */
    CC_MSG_PUTBACK_ACK, /* home -> node: PUTBACK handled */
    CC_MSG_INV,         /* home -> holder: downgrade to S or invalidate */
    CC_MSG_INV_ACK,     /* holder -> home: done; state left, value if any */
    CC_MSG_SAVED,       /* home -> holder: the store has version (dirty data may go) */
    CC_MSG_MAX_
} cc_msg_type;

/* INV modes and, for counters, why a line is invalidated. */
typedef enum { CC_INV_DOWNGRADE = 1, CC_INV_INVALIDATE = 2 } cc_inv_mode;
typedef enum {
    CC_REASON_WRITE = 0,    /* another node's PUT */
    CC_REASON_EVICTION = 1, /* LRU, TTL or cc_evict on this node */
    CC_REASON_VIEW = 2,     /* a view change: home moved, or a new directory's recall */
    CC_REASON_MAX_
} cc_reason;

#define CC_F_VALUE 0x01u /* value attached */
#define CC_F_DIRTY 0x02u /* the value is newer than the store's */

/*
 * One message. key and value point into the buffer it was decoded from
 * (or the sender's memory); nothing is owned.
 *   rid: the requester's request id (requests and their answers); in an
 *        INV, the id of the request the holder was granted under (0: a
 *        view recall, no grant known).
 *   hid: the home's transaction id (INV, INV_ACK).
 *   state: GRANT: state granted (CC_I: the key is absent); INV_ACK: the
 *        holder's state after obeying.
 *   mode, reason: INV only.
 */
typedef struct {
    cc_msg_type type;
    uint64_t from, to, epoch;
    uint64_t rid, hid;
    uint8_t state, mode, reason, flags;
    cc_version version;
    const char *key;
    size_t key_len;
    const void *value;
    size_t len;
} cc_msg;

/* Appends the wire form: u8 wire version | u8 type | u8 state | u8 mode |
 * u8 reason | u8 flags | u64 from | u64 to | u64 epoch | u64 rid | u64 hid
 * | u64 version.epoch | u64 version.seq | u16 key length | key | u32 value
 * length | value, little-endian. DSYNC_EINVAL for a message that
 * cc_msg_decode would refuse; DSYNC_ENOMEM. */
int cc_msg_encode(const cc_msg *m, ut_buf *b);
/* Parses and validates all of it: known version and type, states, modes,
 * reasons and flags that make sense for the type, nonzero ids, a key of
 * 1..CC_KEY_MAX bytes without NUL, a value only with CC_F_VALUE, at most
 * CC_VALUE_MAX, no byte left over. key and value then point into data.
 * DSYNC_ECORRUPT for anything else. Never reads past data + len. */
int cc_msg_decode(const void *data, size_t len, cc_msg *out);

/* ---- the node ---------------------------------------------------------- */

/* A node with no view yet (every operation DSYNC_EUNAVAILABLE until
 * cc_set_view). NULL for a bad config or out of memory. Owned by the
 * caller; cc_node_free frees it and everything it holds. */
cc_node *cc_node_new(const cc_config *cfg);
void cc_node_free(cc_node *n);

/* The agreed live-member set (self included when this node is live) for
 * epoch, which must be above the current one (DSYNC_EINVAL otherwise, or
 * for n > CC_MAX_NODES, an id 0, duplicates). Applies the view rules
 * above; held messages of this epoch are handled. */
int cc_set_view(cc_node *n, uint64_t epoch, const uint64_t *members, size_t count);
uint64_t cc_epoch(const cc_node *n);

/* What cc_get/cc_put tell at once. done: the result is here (a GET hit,
 * or an error found before anything was sent): status 0 or
 * DSYNC_ENOTFOUND, state, value (valid until the next call into n).
 * Otherwise id names the operation; its cc_completion comes in a later
 * ready. */
typedef struct {
    bool done;
    uint64_t id;
    int status;
    cc_state state;
    const void *value;
    size_t len;
} cc_result;

/* GET key (NUL-terminated, 1..CC_KEY_MAX bytes). Returns 0 with res
 * filled, DSYNC_EINVAL (bad key), DSYNC_EUNAVAILABLE (no view / not a
 * member), DSYNC_ENOMEM. */
int cc_get(cc_node *n, const char *key, uint64_t now, cc_result *res);
/* PUT key = value (len bytes, copied, at most CC_VALUE_MAX: DSYNC_ETOOBIG),
 * ttl_ms for this node's copy (0: default). Completes once this node holds
 * the line in M with the value and every other copy is invalid (and, in
 * write-through, the value is in the store). Same returns as cc_get. */
int cc_put(cc_node *n, const char *key, const void *value, size_t len, uint64_t ttl_ms,
           uint64_t now, cc_result *res);
/* Drops this node's copy of key as an eviction would (a dirty one is
 * written back). 0, or DSYNC_ENOTFOUND when there is no idle copy. */
int cc_evict(cc_node *n, const char *key, uint64_t now);

/* A message from peer `from` (the transport's word, not the message's),
 * as cc_msg_decode made it: DSYNC_EINVAL when m->from differs or m->to is
 * not this node, 0 otherwise. Stale or unexpected messages (an old epoch,
 * a non-member, an answer nobody waits for, an INV or SAVED not from the
 * key's home) are dropped and counted in msgs_dropped. */
int cc_step(cc_node *n, uint64_t from, const cc_msg *m, uint64_t now);
/* Times out operations (DSYNC_ETIMEDOUT, outcome unknown: the protocol
 * goes on, a later grant still fills the line) and re-issues failed store
 * requests that are due. */
void cc_tick(cc_node *n, uint64_t now);

/* ---- the backing store ------------------------------------------------- */

typedef enum { CC_STORE_LOAD = 1, CC_STORE_WRITE = 2 } cc_store_kind;

/* A request for the embedder's store. LOAD: answer the key's value and
 * version (or not found). WRITE: keep (value, version) unless the store
 * holds a version >= this one; then change nothing and answer found with
 * what it holds (a late write-back must not win over a newer value, and
 * the home must learn of the newer one). In Redis: a hash with the value
 * and the two version numbers, and a Lua script that compares. Either way
 * answer with cc_store_done(id, key, ...).
 *
 * Epoch fence. epoch is the asking node's epoch. A store that answers
 * asynchronously (a write may still be on its way when the view changes)
 * must also keep, for each key it holds, the highest epoch that LOADed
 * it, and refuse a WRITE asked under a lower epoch: change nothing and
 * answer DSYNC_EUNAVAILABLE (the home asks again until the view change
 * that made it stale reaches it and ends its transaction). Without the
 * fence, a write of a transaction the view change ended could land after
 * the new epoch's home loaded the key and granted copies of the older
 * value: the store would then hold a value no copy has, and the next load
 * would hand it out beside them. (A write-through PUT whose write is
 * refused so completed DSYNC_EUNAVAILABLE, outcome unknown; a dirty value
 * so refused is still held by its writer, which brings it to the new
 * epoch's recall.) A store that answers each request before the next turn
 * of the caller's loop, as node_cache.c's does, keeps the fence anyway. A
 * key the store does not hold needs no fence: no copy of it can exist. */
typedef struct {
    uint64_t id;
    cc_store_kind kind;
    const char *key;
    const void *value;
    size_t len;
    cc_version version;
    uint64_t epoch;
} cc_store_req;

/* The answer to store request id for key. status 0 or a negative
 * DSYNC_E* (the request is then issued again later); found and (value,
 * len, version) (copied): for LOAD, the key's value; for WRITE, the newer
 * value the store kept instead (found false: the write took). Answers to requests the node
 * no longer waits for (view changed) are ignored. */
void cc_store_done(cc_node *n, uint64_t id, const char *key, int status, bool found,
                   const void *value, size_t len, cc_version version, uint64_t now);

/* ---- output -------------------------------------------------------------- */

typedef enum { CC_OP_GET = 1, CC_OP_PUT = 2 } cc_op_kind;

/* An operation that finished: status 0, DSYNC_ENOTFOUND (GET: absent),
 * DSYNC_EUNAVAILABLE (view change, outcome unknown for a PUT) or
 * DSYNC_ETIMEDOUT; for a GET, the value and the state it left the line in
 * (CC_I when the line could not be kept). */
typedef struct {
    uint64_t id;
    cc_op_kind kind;
    int status;
    cc_state state;
    const void *value;
    size_t len;
} cc_completion;

/* A message to send: the encoded bytes for peer `to`. */
typedef struct {
    uint64_t to;
    const unsigned char *bytes;
    size_t len;
} cc_outmsg;

/* Everything the node wants done; valid until cc_advance, and nothing
 * else may be called on n in between. */
typedef struct {
    const cc_outmsg *msgs;
    size_t n_msgs;
    const cc_completion *done;
    size_t n_done;
    const cc_store_req *store;
    size_t n_store;
} cc_ready;

bool cc_has_ready(const cc_node *n);
void cc_ready_get(cc_node *n, cc_ready *rd);
/* Releases what rd points at. */
void cc_advance(cc_node *n, cc_ready *rd);

/* ---- introspection ------------------------------------------------------- */

/* Counters the runtime exports as metrics. */
typedef struct {
    uint64_t hits, misses, evictions, writebacks;
    uint64_t invalidations[CC_REASON_MAX_];
    uint64_t transitions[4][4]; /* [from][to], cc_state indexes */
    uint64_t entries, bytes;    /* lines held now, and their key + value bytes */
    uint64_t dir_entries;       /* directory entries this node keeps as a home */
    uint64_t msgs_dropped;      /* stale or unexpected messages */
} cc_stats;

void cc_get_stats(const cc_node *n, cc_stats *out);
/* This node's copy of key: its state (CC_I when none; a line being
 * fetched or written back counts as CC_I) and, when held, the value (valid
 * until the next call into n). Read-only: no LRU touch, no expiry. */
cc_state cc_peek(const cc_node *n, const char *key, const void **value, size_t *len);
/* A hit served outside the core, from an embedder's copy of the line (as
 * node_cache.c serves GETs on callers' threads): key's line becomes the
 * most recently used, if this node still holds it and it sits in the LRU
 * (a line with a request in flight is pinned outside it). No state change,
 * no message, no stats: the embedder counts its own hits. */
void cc_touch(cc_node *n, const char *key);
/* Whether this node holds a value of key that the store may not have yet:
 * a dirty line, or a dirty value written back or handed over and not yet
 * acknowledged. What a crash of this node would lose. */
bool cc_holds_dirty(const cc_node *n, const char *key);
/* When this node's copy of key expires (its TTL, in the time base of the
 * calls' now); 0 when it never does or there is no copy. */
uint64_t cc_peek_expiry(const cc_node *n, const char *key);

/* Called, inside whatever call into n caused it, when one of this node's
 * copies stops being readable without a message or a call naming its key:
 * an eviction (LRU bounds, TTL, cc_evict) or a view change dropping it.
 * An embedder that serves reads from a copy of the lines outside the core
 * (node_cache.c does) drops its copy of key here. fn may be NULL. */
typedef void (*cc_drop_fn)(void *ctx, const char *key);
void cc_set_drop_listener(cc_node *n, cc_drop_fn fn, void *ctx);

/* The home of key under the current view (0: no view). */
uint64_t cc_home(const cc_node *n, const char *key);
const char *cc_state_name(cc_state s);

#endif
