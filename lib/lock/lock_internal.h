/*
 * lock_internal.h: the lock table's data structures, shared by its files:
 * table.c (requests, grants, leases), graph.c (wait-for graph), state.c
 * (snapshots of the table for readers, serialization, invariants).
 *
 * Every request, held or waiting, is one lk_req. It sits in its lock's
 * holder list or wait queue, in its client's list (in creation order), and
 * in the lease heap. An upgrading client has two: its S hold and its X wait.
 * Order everywhere comes from lists and sequence numbers, never from hash
 * map iteration, so every replica makes the same choices.
 */
#ifndef DSYNC_LOCK_INTERNAL_H
#define DSYNC_LOCK_INTERNAL_H

#include "lock.h"

typedef struct lk_lock lk_lock;
typedef struct lk_client lk_client;
typedef struct lk_req lk_req;

struct lk_req {
    lk_lock *lock;
    lk_client *client;
    dsync_lock_mode mode; /* held mode, or the mode waited for */
    bool waiting;
    bool upgrade;      /* waiting for X while holding S on the same key */
    uint64_t token;    /* holders: fencing token of the grant */
    uint64_t deadline; /* lease end, absolute ms */
    uint64_t ttl_ms;   /* lease length to give at the grant */
    uint64_t seq;      /* creation order: the tie-breaker everywhere */
    size_t heap_idx;
    lk_req *prev, *next;   /* in the lock's holders or waiters */
    lk_req *cprev, *cnext; /* in the client's list */
};

typedef struct {
    lk_req *head, *tail;
    size_t n;
} lk_list;

struct lk_lock {
    char *key;
    lk_list holders; /* grant order */
    lk_list waiters; /* queue order */
};

struct lk_client {
    char *id;
    lk_req *head, *tail; /* creation order */
    size_t n;
    uint64_t visit;    /* DFS epoch mark */
    lk_client *parent; /* DFS path */
};

struct lk_table {
    ut_map locks;   /* key -> lk_lock */
    ut_map clients; /* id -> lk_client */
    lk_req **heap;  /* min-heap on (deadline, seq) */
    size_t heap_n, heap_cap;
    uint64_t next_token;
    uint64_t next_seq;
    uint64_t visit_epoch;
    size_t n_holders, n_waiters;
    lk_event_fn listener;
    void *listener_ctx;
};

static inline bool lk_incompatible(dsync_lock_mode a, dsync_lock_mode b)
{
    return a == DSYNC_LOCK_EXCLUSIVE || b == DSYNC_LOCK_EXCLUSIVE;
}

/* table.c */
void lk_list_push_back(lk_list *l, lk_req *r);
void lk_list_push_front(lk_list *l, lk_req *r);
void lk_list_remove(lk_list *l, lk_req *r);
lk_lock *lk_lock_get(lk_table *t, const char *key, bool create);
lk_client *lk_client_get(lk_table *t, const char *id, bool create);
/* Links a new request everywhere (lists, heap, counters). */
int lk_req_link(lk_table *t, lk_req *r, bool front);
/* The parts of lk_req_link past the lock's list: client list, heap (room
 * reserved with lk_heap_reserve), counters. For restore. */
int lk_heap_reserve(lk_table *t, size_t n);
void lk_req_link_rest(lk_table *t, lk_req *r);
/* Unlinks and frees a request; frees its lock and client when empty. */
void lk_req_unlink(lk_table *t, lk_req *r);
void lk_table_clear(lk_table *t);

/* graph.c */
typedef void (*lk_edge_fn)(void *ctx, const lk_req *waiter, const lk_req *blocker);
/* Calls fn for every edge out of waiting request w, holders first. */
void lk_edges_of(const lk_req *w, lk_edge_fn fn, void *ctx);
/* If client c can reach itself, writes the cycle (c first) into res and
 * returns true. */
bool lk_find_cycle(lk_table *t, lk_client *c, dsync_lock_result *res);

#endif
