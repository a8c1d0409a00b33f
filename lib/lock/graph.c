/*
 * graph.c: the wait-for graph over clients, derived from the table.
 *
 * A waiting request has an edge to every holder of its key it is
 * incompatible with and to every earlier waiter in the same queue it is
 * incompatible with (other than its own client). Edges are never stored,
 * so they can never go stale; a cycle search walks them from one client.
 * The table is acyclic before every acquire, so a new cycle must pass
 * through the requester: one depth-first search from it decides.
 */
#include "lock_internal.h"

void lk_edges_of(const lk_req *w, lk_edge_fn fn, void *ctx)
{
    for (const lk_req *h = w->lock->holders.head; h; h = h->next)
        if (h->client != w->client && lk_incompatible(w->mode, h->mode)) fn(ctx, w, h);
    for (const lk_req *e = w->lock->waiters.head; e && e != w; e = e->next)
        if (e->client != w->client && lk_incompatible(w->mode, e->mode)) fn(ctx, w, e);
}

typedef struct {
    lk_table *t;
    lk_client *target;
    lk_client *from;
    bool found;
} search;

static void visit(search *s, lk_client *c);

static void on_edge(void *ctx, const lk_req *waiter, const lk_req *blocker)
{
    search *s = ctx;
    if (s->found) return;
    lk_client *next = blocker->client;
    if (next == s->target) {
        s->found = true;
        /* Close the path: target's parent chain ends at the last hop. */
        s->target->parent = waiter->client;
        return;
    }
    if (next->visit == s->t->visit_epoch) return;
    next->parent = waiter->client;
    visit(s, next);
}

/* Depth-first over c's waiting requests, in creation order. Recursion
 * depth is bounded by the number of clients on one wait chain. */
static void visit(search *s, lk_client *c)
{
    c->visit = s->t->visit_epoch;
    for (lk_req *r = c->head; r && !s->found; r = r->cnext)
        if (r->waiting) lk_edges_of(r, on_edge, s);
}

bool lk_find_cycle(lk_table *t, lk_client *c, dsync_lock_result *res)
{
    search s = {t, c, NULL, false};
    t->visit_epoch++;
    c->parent = NULL;
    visit(&s, c);
    if (!s.found) return false;
    /* parent links run backwards along the cycle: c <- ... <- last <- c.
     * Collect them, then reverse so the cycle reads c -> ... -> last. */
    lk_client *chain[DSYNC_LOCK_CYCLE_MAX];
    size_t n = 0;
    lk_client *p = c->parent;
    while (p && p != c && n < DSYNC_LOCK_CYCLE_MAX - 1) {
        chain[n++] = p;
        p = p->parent;
    }
    res->cycle_len = 0;
    ut_strlcpy(res->cycle[res->cycle_len++], c->id, sizeof res->cycle[0]);
    while (n > 0)
        ut_strlcpy(res->cycle[res->cycle_len++], chain[--n]->id, sizeof res->cycle[0]);
    return true;
}
