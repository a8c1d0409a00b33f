/*
 * send.c: what a leader sends each follower when (thrifty replication and
 * lazy commit), and what followers and the node tell it to decide: the
 * waiting flag in their answers, and the hints of raft_tell_commit_at and
 * raft_peer_wants_commit. raft.c does the sending; these say to whom.
 */
#include "raft_internal.h"

/* ---- new entries: thrifty replication ----------------------------------------
 * A commit needs the leader and quorum - 1 followers. New entries go at
 * once only to followers that make that majority, or whose callers wait
 * for them; the rest are lazy and get them at each heartbeat, in one
 * append. When the followers' disks are the leader's (several nodes on
 * one machine) or their CPUs are, the lazy one no longer writes and
 * fsyncs each entry beside the two that decide the commit; anywhere it
 * saves that follower a message, a wake-up and a write per proposal. */

/* Whether p answers often enough to be counted on for a majority. */
static bool responsive(const raft *r, const progress *p)
{
    return p->state == PR_REPLICATE && p->quiet <= 2 * r->cfg.heartbeat_tick;
}

/* Whether p gets new entries at once whatever the others do: it is not
 * simply replicating, callers wait there, an index it is to hear of
 * (wants) is not yet in its log, or it is still getting what it lacked at
 * the last heartbeat. */
static bool eager_anyway(const progress *p)
{
    return p->state != PR_REPLICATE || p->waiting || p->wants > p->match || p->next <= p->catch_up;
}

/* Whether q comes before p in the order followers count toward a
 * majority: further along first, then those eager anyway, then the lower
 * id. A strict order, so exactly the first ones count. */
static bool before(const progress *q, const progress *p)
{
    if (q->match != p->match) return q->match > p->match;
    bool eq = eager_anyway(q), ep = eager_anyway(p);
    return eq != ep ? eq : q->id < p->id;
}

/* Whether the commit of new entries waits for p's answer: p is among the
 * first responsive followers (in the order above) that make a majority
 * with the leader, or unknown (not responsive). A follower that stops
 * answering for two heartbeats no longer counts, so the next takes its
 * place; a leader whose own writes lag (self_slow) does not count itself,
 * so a majority of followers commits without it. */
bool raft_counted(const raft *r, const progress *p)
{
    if (!responsive(r, p)) return true;
    bool self = raft_is_member(r, r->cfg.id) && !r->self_slow;
    size_t need = raft_quorum(r) - (self ? 1 : 0), ahead = 0;
    for (size_t i = 0; i < r->n; i++) {
        const progress *q = &r->pr[i];
        if (q != p && q->id != r->cfg.id && responsive(r, q) && before(q, p)) ahead++;
    }
    return ahead < need;
}

/* Whether new entries go to p now: it counts, or it is eager anyway. */
bool raft_entries_now(const raft *r, const progress *p)
{
    return eager_anyway(p) || raft_counted(r, p);
}

/* ---- the commit index: lazy commit --------------------------------------------- */

/* Whether p is owed an empty append for the commit index: it has not
 * heard it, and callers wait there or the index it is to hear of
 * (wants) has now committed. */
bool raft_commit_owed(const raft *r, const progress *p)
{
    return p->sent_commit < r->commit &&
           (p->waiting || (p->sent_commit < p->wants && p->wants <= r->commit));
}

/* An answer from p says whether callers wait there; if that makes it
 * owed the commit index, it is told at the next ready. */
void raft_note_answer(raft *r, progress *p, const raft_msg *m)
{
    p->waiting = m->commit != 0;
    if (raft_commit_owed(r, p)) r->bcast_commit = true;
}

/* ---- inputs --------------------------------------------------------------------- */

void raft_set_waiting(raft *r, bool waiting)
{
    r->waiting = waiting;
}

/* Follower id (0: every follower) is to hear at once of index's commit. */
static void want_commit(raft *r, uint64_t id, uint64_t index)
{
    for (size_t i = 0; i < r->n; i++)
        if ((id == 0 || r->pr[i].id == id) && r->pr[i].wants < index) r->pr[i].wants = index;
}

void raft_tell_commit_at(raft *r, uint64_t index)
{
    want_commit(r, 0, index);
}

void raft_peer_wants_commit(raft *r, uint64_t id, uint64_t index)
{
    if (id) want_commit(r, id, index);
}
