/*
 * cache_internal.h: what the cache core's files share: the node's lines
 * and LRU (lru.c), the requester side (line.c), the home side (dir.c),
 * the codec (codec.c) and the node itself: views, output, dispatch
 * (node.c).
 */
#ifndef DSYNC_CACHE_INTERNAL_H
#define DSYNC_CACHE_INTERNAL_H

#include <stdlib.h>
#include <string.h>

#include "cache/cache.h"
#include "dsync/errors.h"
#include "queue/ring.h"

/* ---- lines: one per key a node holds or has business with ------------- */

/* The request a line has in flight (at most one per key). */
typedef enum { TX_NONE = 0, TX_GETS, TX_GETM, TX_WT, TX_PUTBACK, TX_SAVE } cc_txn_kind;
/* TX_SAVE sends nothing: the line handed its dirty value to the home in
 * an INV answer and waits for SAVED before it lets go of it. */

/* A local operation waiting on its key, FIFO. */
typedef struct cc_op {
    uint64_t id;
    cc_op_kind kind;
    void *value; /* PUT: owned copy */
    size_t len;
    uint64_t ttl_ms;
    uint64_t deadline; /* 0: none */
    /* The node's timeout list: ops in deadline order (all ops get the same
     * timeout, so creation order), until they complete or time out. */
    struct cc_op *tprev, *tnext;
    bool timed;
    bool reported;   /* timed out: its completion was already given */
    bool counted;    /* counted as a hit or a miss */
    bool sent_value; /* write-through PUT whose value left this node */
    struct cc_op *next;
} cc_op;

typedef struct cc_line cc_line;
struct cc_line {
    char *key;
    size_t key_len;
    cc_state state; /* CC_I: not cached (a fetch or a write-back in flight) */
    bool dirty;     /* the store may not have this value yet (M, or S after a downgrade) */
    void *value;    /* S/E/M: the value; wb_held: the dirty value, state I */
    size_t len;
    cc_version version;
    uint64_t expires_at; /* 0: never */
    /* LRU: resident lines (S/E/M) are counted; idle ones are also linked. */
    cc_line *prev, *next;
    bool counted, linked;
    /* The request in flight. */
    cc_txn_kind txn;
    uint64_t rid, home, txn_epoch;
    bool wb_held; /* state I, value kept until PUTBACK_ACK or SAVED (TX_PUTBACK,
                     TX_SAVE; or TX_GETM, whose grant supersedes it) */
    /* An INV that overtook the grant of request rid, obeyed after it. */
    bool inv_deferred;
    uint8_t inv_mode, inv_reason;
    uint64_t inv_hid, inv_from;
    cc_op *ops, *ops_tail;
};

/* The LRU over resident lines: most recent at head. */
typedef struct {
    cc_line *head, *tail;
    size_t entries, bytes;
    size_t max_entries, max_bytes; /* 0: unbounded */
} cc_lru;

/* Bytes a line counts for. */
size_t cc_line_bytes(const cc_line *l);
/* Counts a line that became resident and links it at the head. */
void cc_lru_add(cc_lru *lru, cc_line *l);
/* Uncounts (and unlinks) a line that stops being resident. */
void cc_lru_remove(cc_lru *lru, cc_line *l);
/* Pins a resident line (a request in flight): unlinked, still counted. */
void cc_lru_pin(cc_lru *lru, cc_line *l);
/* Links a pinned resident line back, at the head. */
void cc_lru_unpin(cc_lru *lru, cc_line *l);
/* A linked line was used: to the head. */
void cc_lru_touch(cc_lru *lru, cc_line *l);
/* The counted bytes of a resident line change from old_bytes. */
void cc_lru_resize(cc_lru *lru, cc_line *l, size_t old_bytes);
/* The line to evict now: the tail, when over a bound; NULL otherwise. */
cc_line *cc_lru_victim(const cc_lru *lru);

/* ---- directory entries: one per key a home has business with ---------- */

typedef struct {
    uint64_t node, rid; /* the holder and the request it was granted under */
} cc_holder;

/* A request waiting at (or being served by) the home: a copy of the
 * message's fields. */
typedef struct cc_req {
    cc_msg_type type;
    uint64_t from, rid;
    uint8_t flags;
    cc_version version;
    void *value;
    size_t len;
    struct cc_req *next;
} cc_req;

/* Steps of a home transaction, in order; a transaction skips what it does
 * not need. */
typedef enum {
    PH_RECALL = 0, /* unknown holders: invalidate on every member */
    PH_REVOKE,     /* downgrade the owner / invalidate the holders */
    PH_SAVE_OLD,   /* store the dirty value the answers brought */
    PH_SAVE_NEW,   /* store the requester's value (write-through, PUTBACK) */
    PH_LOAD,       /* load the value for a GETS */
    PH_REPLY,
} cc_phase;

/* The transaction a directory entry runs (one request at a time): only
 * while one runs, so that an idle entry costs little. */
typedef struct {
    cc_req *req;
    cc_phase phase;
    uint64_t hid;
    uint64_t awaited[CC_MAX_NODES]; /* nodes whose INV_ACK is still due */
    size_t acks_waited;
    uint64_t store_waited; /* store request id, 0: none */
    uint64_t store_retry_at;
    cc_store_req store_again; /* what to re-issue when it failed (value in best/req) */
    /* The freshest value the transaction has seen. */
    bool has_best, best_dirty;
    void *best;
    size_t best_len;
    cc_version best_version;
    uint64_t suppliers[CC_MAX_NODES]; /* nodes that handed dirty values: told SAVED */
    size_t n_suppliers;
} cc_txn;

typedef struct cc_dir {
    char *key;
    bool unknown;       /* made in this epoch, holders not yet recalled */
    bool fenced;        /* external store: this epoch has LOADed the key (cache.h, "Epoch fence") */
    cc_holder owner;    /* node 0: none */
    cc_holder *sharers; /* n_sharers of cap_sharers */
    uint32_t n_sharers, cap_sharers;
    cc_version max_version;     /* highest version known for the key */
    cc_txn *tx;                 /* the transaction in progress; NULL: none */
    cc_req *queue, *queue_tail; /* those waiting */
} cc_dir;

/* A value in the home's memory, when it is the backing store. */
typedef struct {
    void *value;
    size_t len;
    cc_version version;
} cc_memval;

/* A message of a future epoch, held with its bytes. */
typedef struct {
    uint64_t epoch;
    unsigned char *bytes;
    size_t len;
} cc_held;

/* ---- the node ------------------------------------------------------------ */

struct cc_node {
    cc_config cfg;
    uint64_t epoch;
    uint64_t members[CC_MAX_NODES];
    size_t n_members;
    bool member;   /* self is in the view */
    qr_ring *ring; /* over members; NULL before the first view */
    ut_map lines;  /* key -> cc_line */
    cc_lru lru;
    ut_map dirs; /* key -> cc_dir (this node as a home) */
    ut_map mem;  /* key -> cc_memval (home memory store) */
    uint64_t next_rid, next_hid, next_op, next_store;
    uint64_t now;
    cc_stats stats;
    cc_drop_fn on_drop; /* cc_set_drop_listener */
    void *on_drop_ctx;
    cc_op *timers_head, *timers_tail;
    size_t store_retries; /* directory entries waiting to re-issue a store request */
    /* Output, handed out by cc_ready_get. */
    cc_outmsg *out;
    size_t n_out, cap_out;
    cc_completion *done;
    size_t n_done, cap_done;
    cc_store_req *store;
    size_t n_store, cap_store;
    /* Messages to self, handled before the API call returns. */
    ut_buf *self_q;
    size_t n_self, cap_self;
    bool draining;
    bool in_view; /* cc_set_view is walking the lines: no evictions */
    cc_held *held;
    size_t n_held, cap_held, held_bytes;
};

/* <0, 0, >0 as a is below, equal to, above b. */
int cc_version_cmp(cc_version a, cc_version b);
/* The version a new grant of M in epoch e takes after v. */
cc_version cc_version_next(cc_version v, uint64_t epoch);

/* node.c: output. Each copies what it is given. */
/* Queues m for its peer, or for this node itself (handled before the
 * current entry point returns). */
void cc_send(cc_node *n, const cc_msg *m);
/* Reports op's completion, unless it was reported already (timed out). */
void cc_complete(cc_node *n, cc_op *op, int status, cc_state state, const void *value, size_t len);
/* Queues a store request; returns its id. */
uint64_t cc_store_issue(cc_node *n, cc_store_kind kind, const char *key, const void *value,
                        size_t len, cc_version version);
/* Counts a line's move from one state to another. */
void cc_transition(cc_node *n, cc_state from, cc_state to);
/* The end of every entry point: handles the messages to self. */
void cc_after_call(cc_node *n);
/* The key's home under the current view (0: none). */
uint64_t cc_home_of(const cc_node *n, const char *key, size_t key_len);
/* malloc + memcpy that aborts when memory runs out (see cache.h). */
void *cc_memdup(const void *p, size_t len);

/* line.c: the requester side. */
/* The line of key, made (state I) when create; NULL when absent or out
 * of memory. */
cc_line *cc_line_get(cc_node *n, const char *key, bool create);
/* Frees a line that is out of the map, with its queued operations. */
void cc_line_free(cc_node *n, cc_line *l);
/* Runs the queued operations of a line as far as they go without an
 * answer; frees the line when nothing is left of it. */
void cc_line_run(cc_node *n, cc_line *l);
/* Evicts as long as the LRU is over a bound. */
void cc_line_enforce(cc_node *n);
/* Drops l's copy as an eviction (dirty: PUTBACK). l must be idle. */
void cc_line_evict(cc_node *n, cc_line *l, cc_reason reason);
/* Messages from homes, of the current epoch, keys NUL-terminated. */
void cc_line_on_grant(cc_node *n, const cc_msg *m);
void cc_line_on_reply(cc_node *n, const cc_msg *m); /* NACK, WT_ACK, PUTBACK_ACK */
void cc_line_on_inv(cc_node *n, const cc_msg *m);
void cc_line_on_saved(cc_node *n, const cc_msg *m);
/* The view changed (rules 3 to 5 of cache.h). */
void cc_lines_on_view(cc_node *n, const qr_ring *old_ring);
/* Times out operations whose deadline is past. */
void cc_lines_tick(cc_node *n, uint64_t now);

/* dir.c: the home side. */
/* A request (GETS, GETM, WT, PUTBACK) for a key this node is home of:
 * queued behind the key's transaction, or started. */
void cc_dir_on_request(cc_node *n, const cc_msg *m);
/* An INV answer for the key's current transaction. */
void cc_dir_on_inv_ack(cc_node *n, const cc_msg *m);
/* A store answer (cc_store_done). */
void cc_dir_on_store_done(cc_node *n, uint64_t id, const char *key, int status, bool found,
                          const void *value, size_t len, cc_version version);
/* Forgets every entry (rule 2); drops memory-store keys no longer homed. */
void cc_dirs_on_view(cc_node *n);
/* Re-issues failed store requests that are due. */
void cc_dirs_tick(cc_node *n, uint64_t now);
/* Frees every directory entry (leaves an empty map). */
void cc_dirs_free(cc_node *n);

#endif
