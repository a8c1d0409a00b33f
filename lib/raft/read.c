/*
 * read.c: linearizable reads by ReadIndex (Ongaro's thesis §6.4).
 *
 * A read takes the leader's commit index once the leader has committed an
 * entry of its own term, and is answered only after a majority confirms,
 * in a heartbeat round started after the read, that this node still
 * leads: a leader deposed without knowing it can never answer. Followers
 * ask the leader and serve once they have applied the index it returns.
 */
#include <stdlib.h>
#include <string.h>

#include "dsync/errors.h"
#include "raft_internal.h"

void raft_add_read(raft *r, uint64_t context, uint64_t index)
{
    if (r->n_reads == r->cap_reads) {
        size_t ncap = r->cap_reads ? r->cap_reads * 2 : 16;
        raft_read_state *nr = realloc(r->reads, ncap * sizeof *nr);
        if (!nr) return; /* the caller times out and retries */
        r->reads = nr;
        r->cap_reads = ncap;
    }
    r->reads[r->n_reads++] = (raft_read_state){context, index};
}

static void answer_read(raft *r, const pending_read *p)
{
    if (p->from == 0)
        raft_add_read(r, p->context, p->index);
    else
        raft_send(r, (raft_msg){.type = RAFT_MSG_READ_INDEX_RESP,
                                .to = p->from,
                                .index = p->index,
                                .context = p->context});
}

void raft_bcast_heartbeat(raft *r)
{
    for (size_t i = 0; i < r->n; i++) {
        progress *p = &r->pr[i];
        if (p->id == r->cfg.id) continue;
        uint64_t c = p->match < r->commit ? p->match : r->commit;
        if (p->sent_commit < c) p->sent_commit = c;
        raft_send(
            r, (raft_msg){
                   .type = RAFT_MSG_HEARTBEAT, .to = p->id, .commit = c, .context = r->read_round});
    }
}

/* Answers every pending read whose heartbeat round a majority confirmed. */
void raft_release_reads(raft *r)
{
    size_t done = 0;
    while (done < r->n_pending) {
        const pending_read *p = &r->pending[done];
        size_t acks = 0;
        for (size_t i = 0; i < r->n; i++)
            acks += r->pr[i].id == r->cfg.id || r->pr[i].read_ack >= p->round;
        if (acks < raft_quorum(r)) break;
        answer_read(r, p);
        done++;
    }
    memmove(r->pending, r->pending + done, (r->n_pending - done) * sizeof *r->pending);
    r->n_pending -= done;
}

/* The leader takes a read: its index is the commit index now, valid once
 * a majority confirms in a later heartbeat round that it still leads. */
int raft_leader_read(raft *r, uint64_t context, uint64_t from)
{
    /* Until an entry of its term commits, a new leader does not know the
     * commit index of its predecessor (§6.4, step 1). */
    if (raft_term_at(r, r->commit) != r->term) return DSYNC_EUNAVAILABLE;
    if (r->n_pending == r->cap_pending) {
        size_t ncap = r->cap_pending ? r->cap_pending * 2 : 16;
        pending_read *np = realloc(r->pending, ncap * sizeof *np);
        if (!np) return DSYNC_ENOMEM;
        r->pending = np;
        r->cap_pending = ncap;
    }
    r->pending[r->n_pending++] = (pending_read){context, r->commit, from, ++r->read_round};
    if (r->n == 1)
        raft_release_reads(r);
    else
        raft_bcast_heartbeat(r);
    return 0;
}

int raft_read_index(raft *r, uint64_t context)
{
    if (r->role == RAFT_LEADER) return raft_leader_read(r, context, 0);
    if (r->role != RAFT_FOLLOWER || r->leader == 0) return DSYNC_EUNAVAILABLE;
    raft_send(r, (raft_msg){.type = RAFT_MSG_READ_INDEX, .to = r->leader, .context = context});
    return 0;
}
