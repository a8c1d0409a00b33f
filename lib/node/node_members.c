/*
 * node_members.c: who is in the cluster and who is alive.
 *
 * Membership: changes one node at a time (Raft thesis section 4.1), from
 * any member; a follower forwards the change to the leader
 * (ND_FRAME_CONF), which answers once the entry has applied there
 * (ND_FRAME_CONF_RESULT), since a removed node may never see that entry.
 *
 * The view: the leader's failure detector puts its verdict, the live
 * members, through the log as a VIEW command (fsm.h), so every replica
 * places topics and cache homes on the same members at the same index. A
 * node that may have lost frames asks for a new view epoch (a bump).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "node_internal.h"

uint64_t nd_election_ms(const dsync_node *n)
{
    return n->cfg.raft_tick_ms * n->cfg.raft_election_ticks;
}

bool nd_is_member(const dsync_node *n, uint64_t id)
{
    for (size_t i = 0; i < n->n_voters; i++)
        if (n->voters[i] == id) return true;
    return false;
}

/* Takes the configuration Raft uses now: ids, addresses for the
 * transport (a new member is dialled from now on), metric series. */
void nd_set_members(dsync_node *n, const void *conf, size_t len)
{
    size_t count;
    raft_member m[RAFT_MAX_NODES];
    if (raft_conf_decode(conf, len, m, RAFT_MAX_NODES, &count) != 0) return;
    for (size_t i = 0; i < count; i++) {
        n->members[i] = m[i];
        n->voters[i] = m[i].id;
        n->rm.peer_up[i] = NULL;
        if (m[i].id == n->cfg.node_id) continue;
        char id[24];
        snprintf(id, sizeof id, "%" PRIu64, m[i].id);
        n->rm.peer_up[i] = dsync_metric_series1(n->rm.peer_up_family, id);
        if (!n->net) continue;
        int rc = nt_add_peer(n->net, m[i].id, m[i].addr);
        if (rc == 0)
            ut_log(&n->log, DSYNC_LOG_INFO, "member %" PRIu64 " at %s joined", m[i].id, m[i].addr);
        else if (rc != DSYNC_EEXIST)
            ut_log(&n->log, DSYNC_LOG_ERROR, "member %" PRIu64 ": bad address \"%s\"", m[i].id,
                   m[i].addr);
    }
    n->n_voters = count;
    dsync_series_set(n->rm.members, (double)count);
    nd_queue_members_changed(n);
}

/* Leader: proposes the change; 0 with *index, or the error. */
static int propose_member(dsync_node *n, bool add, const raft_member *m, uint64_t *index)
{
    /* A cluster's votes and log must survive restarts: a memory-only node
     * stays alone. */
    if (add && (!n->net || !n->store)) return DSYNC_EINVAL;
    return raft_propose_conf(n->raft, add, m, index);
}

static void send_conf_result(dsync_node *n, uint64_t to, uint64_t seq, int rc)
{
    unsigned char b[12];
    ut_put_le(b, seq, 8);
    ut_put_le(b + 8, (uint64_t)(uint32_t)-rc, 4);
    nt_send(n->net, to, ND_FRAME_CONF_RESULT, b, sizeof b);
}

/* Leader: a member change a follower forwarded. Refused at once, or
 * remembered and answered once its entry has applied here (the node it
 * removes may never see that entry, so it cannot wait for it itself). */
void nd_conf_frame(dsync_node *n, uint64_t from, const unsigned char *p, size_t len)
{
    if (len < 19 || (p[8] != 0 && p[8] != 1)) return;
    uint64_t seq = ut_get_le(p, 8);
    raft_member m = {.id = ut_get_le(p + 9, 8)};
    size_t alen = (size_t)ut_get_le(p + 17, 2);
    if (len != 19 + alen || alen >= sizeof m.addr || m.id == 0) return;
    memcpy(m.addr, p + 19, alen);
    if (memchr(m.addr, '\0', alen)) return;
    nd_remote_conf *slot = NULL;
    for (size_t i = 0; i < ND_MAX_REMOTE_CONFS && !slot; i++)
        if (!n->remote_confs[i].index) slot = &n->remote_confs[i];
    uint64_t index = 0;
    int rc = slot ? propose_member(n, p[8] == 1, &m, &index) : DSYNC_EUNAVAILABLE;
    if (rc != 0) {
        send_conf_result(n, from, seq, rc);
        return;
    }
    *slot = (nd_remote_conf){from, seq, index, m.id, p[8] == 1, ut_now_ms() + ND_COMMIT_TIMEOUT_MS};
}

void nd_conf_result(dsync_node *n, const unsigned char *p, size_t len)
{
    if (len != 12) return;
    uint64_t seq = ut_get_le(p, 8);
    uint64_t code = ut_get_le(p + 8, 4);
    /* A peer's number is checked before it becomes our error code. */
    int rc = code == 0 ? 0 : code <= (uint64_t)-DSYNC_ERR_MIN ? -(int)code : DSYNC_EUNAVAILABLE;
    for (nd_call **pp = &n->confs; *pp; pp = &(*pp)->next) {
        nd_call *c = *pp;
        if (c->u.member.seq != seq || c->u.member.index) continue;
        *pp = c->next;
        c->next = NULL;
        nd_complete(c, rc);
        return;
    }
}

void nd_raft_handle_member(dsync_node *n, nd_call *call)
{
    if (!n->net) {
        nd_complete(call, DSYNC_EINVAL); /* a node started without peers stays alone */
        return;
    }
    int rc;
    call->u.member.index = 0;
    call->u.member.seq = ++n->next_seq;
    if (n->store_broken) {
        rc = DSYNC_EIO;
    } else if (raft_get_role(n->raft) == RAFT_LEADER) {
        rc = propose_member(n, call->u.member.add, &call->u.member.m, &call->u.member.index);
    } else if (raft_leader(n->raft)) {
        unsigned char b[19 + RAFT_ADDR_MAX];
        size_t alen = strlen(call->u.member.m.addr);
        ut_put_le(b, call->u.member.seq, 8);
        b[8] = call->u.member.add ? 1 : 0;
        ut_put_le(b + 9, call->u.member.m.id, 8);
        ut_put_le(b + 17, alen, 2);
        memcpy(b + 19, call->u.member.m.addr, alen);
        rc = nt_send(n->net, raft_leader(n->raft), ND_FRAME_CONF, b, 19 + alen);
        if (rc != 0) rc = DSYNC_EUNAVAILABLE;
    } else {
        rc = DSYNC_EUNAVAILABLE;
    }
    if (rc != 0) {
        nd_complete(call, rc);
        return;
    }
    call->deadline_ms = ut_now_ms() + ND_COMMIT_TIMEOUT_MS;
    call->next = n->confs;
    n->confs = call;
}

/* Answers membership changes whose entry has been applied here (our own
 * callers, and the followers that forwarded one): done when the
 * configuration now says what was asked. */
void nd_finish_confs(dsync_node *n)
{
    for (nd_call **pp = &n->confs; *pp;) {
        nd_call *c = *pp;
        if (!c->u.member.index || c->u.member.index > n->applied) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        c->next = NULL;
        bool in = nd_is_member(n, c->u.member.m.id);
        nd_complete(c, in == c->u.member.add ? 0 : DSYNC_EUNAVAILABLE);
    }
    uint64_t now = ut_now_ms();
    for (size_t i = 0; i < ND_MAX_REMOTE_CONFS; i++) {
        nd_remote_conf *rc = &n->remote_confs[i];
        if (!rc->index) continue;
        if (rc->index <= n->applied) {
            bool in = nd_is_member(n, rc->id);
            send_conf_result(n, rc->from, rc->seq, in == rc->add ? 0 : DSYNC_EUNAVAILABLE);
            rc->index = 0;
        } else if (rc->deadline_ms <= now) {
            rc->index = 0; /* the follower has given up by now */
        }
    }
}

int dsync_node_add_member(dsync_node *n, uint64_t id, const char *peer_addr)
{
    char host[DSYNC_ADDR_MAX];
    uint16_t port;
    if (!n || id == 0 || !peer_addr || strlen(peer_addr) >= RAFT_ADDR_MAX ||
        nt_parse_addr(peer_addr, host, sizeof host, &port) != 0)
        return DSYNC_EINVAL;
    nd_call call = {.kind = ND_CALL_MEMBER, .u.member = {.add = true, .m = {.id = id}}};
    strcpy(call.u.member.m.addr, peer_addr);
    return nd_submit(n, &call);
}

int dsync_node_remove_member(dsync_node *n, uint64_t id)
{
    if (!n || id == 0) return DSYNC_EINVAL;
    nd_call call = {.kind = ND_CALL_MEMBER, .u.member = {.add = false, .m = {.id = id}}};
    return nd_submit(n, &call);
}

uint64_t nd_down_after_ms(const dsync_node *n)
{
    return 3 * nd_election_ms(n);
}

/* Leader: the failure detector's verdict goes through the log as a VIEW,
 * so every replica places topics on the same live members at the same
 * index. A member is live while it was heard within nd_down_after_ms
 * (every node pings every peer every other tick) and, to enter the view,
 * has caught up with the log; the leader is live. */
void nd_propose_view(dsync_node *n, uint64_t now_ms)
{
    if (raft_get_role(n->raft) != RAFT_LEADER) {
        n->view_bump = false; /* asked of an earlier leadership: answered or asked again */
        return;
    }
    /* Out of a long turn, what was heard from peers is stale: the frames
     * that came meanwhile may be unread yet. */
    if (now_ms < n->quiet_until) return;
    if (n->view_index && n->view_term == raft_term(n->raft)) return; /* one at a time */
    fsm_cmd cmd = {.op = FSM_VIEW, .now_ms = ut_wall_ms()};
    for (size_t i = 0; i < n->n_voters && cmd.n_live < FSM_VIEW_MAX; i++) {
        uint64_t id = n->voters[i];
        uint64_t heard = id == n->cfg.node_id || !n->net ? now_ms : nt_last_heard(n->net, id);
        bool live = heard && now_ms - heard <= nd_down_after_ms(n);
        /* One coming back must first catch up with the log, or it would be
         * handed topics it cannot serve yet. Until it has, it gets entries
         * as they come, not only at heartbeats (raft.h, thrifty
         * replication), or under steady writes it would never be level. */
        if (live && id != n->cfg.node_id && !fsm_view_has(&n->fsm, id)) {
            live = raft_match_index(n->raft, id) >= raft_commit_index(n->raft);
            if (!live) raft_peer_wants_commit(n->raft, id, raft_last_index(n->raft));
        }
        if (live) cmd.live[cmd.n_live++] = id;
    }
    /* Ids in increasing order, as the codec wants. */
    for (size_t i = 1; i < cmd.n_live; i++)
        for (size_t j = i; j > 0 && cmd.live[j - 1] > cmd.live[j]; j--) {
            uint64_t t = cmd.live[j];
            cmd.live[j] = cmd.live[j - 1];
            cmd.live[j - 1] = t;
        }
    /* A bump (frames may have been lost) makes a new epoch even for the
     * same members, at most once per election timeout: a flapping link
     * must not turn every flap into a log entry and aborted transactions. */
    bool bump = n->view_bump && now_ms >= n->last_bump_ms + nd_election_ms(n);
    bool same = n->fsm.view_index && fsm_view_equals(&n->fsm, cmd.live, cmd.n_live);
    if (same && !bump) return;
    if (bump) n->last_bump_ms = now_ms;
    n->view_bump = false;
    n->view_index = nd_propose_internal(n, &cmd);
    n->view_term = raft_term(n->raft);
    if (n->view_index && same) dsync_series_add(n->rm.view_bumps, 1);
    if (n->view_index)
        ut_log(&n->log, DSYNC_LOG_INFO, "proposing a view of %zu live member(s) at %" PRIu64,
               cmd.n_live, n->view_index);
}

void nd_request_view_bump(dsync_node *n)
{
    /* Always the current epoch: a loss in a later epoch than a request
     * still pending needs a view past that one (epochs only grow, so the
     * later request answers the earlier too). */
    n->bump_pending = true;
    n->bump_epoch = n->fsm.view_epoch;
}

/* Leader: someone wants a view past epoch. Granted already when the view
 * applied here is past it, or will be when the view in flight applies (it
 * gets a higher epoch than any before it): an asker still short of it asks
 * again. Without this, requests resent while the asker had not yet applied
 * the view that answered them each made one more epoch, aborting the
 * transactions of the one before for nothing. */
static void bump_asked(dsync_node *n, uint64_t epoch)
{
    if (raft_get_role(n->raft) != RAFT_LEADER) return; /* the asker asks the next one */
    if (epoch < n->fsm.view_epoch) return;
    if (n->view_index && n->view_term == raft_term(n->raft)) return;
    n->view_bump = true;
}

/* Asks until a view past the one of the request has applied: there may be
 * no leader when the request is made, and a frame can be lost too. The
 * request names the epoch it wants a view past; an empty one follows it,
 * the form leaders of the previous release understand (a rolling upgrade
 * has them lead while followers run this one). */
void nd_send_view_bump(dsync_node *n)
{
    if (!n->bump_pending) return;
    if (n->fsm.view_epoch > n->bump_epoch) {
        n->bump_pending = false;
        return;
    }
    uint64_t leader = raft_leader(n->raft);
    if (leader == n->cfg.node_id) {
        bump_asked(n, n->bump_epoch);
    } else if (leader && n->net) {
        unsigned char b[8];
        ut_put_le(b, n->bump_epoch, 8);
        nt_send(n->net, leader, ND_FRAME_VIEW_BUMP, b, sizeof b);
        nt_send(n->net, leader, ND_FRAME_VIEW_BUMP, NULL, 0);
    }
}

void nd_view_bump_frame(dsync_node *n, uint64_t from, const unsigned char *p, size_t len)
{
    bool speaker = false;
    for (size_t i = 0; i < n->n_bump_speakers && !speaker; i++)
        speaker = n->bump_speakers[i] == from;
    if (len == 8) {
        if (!speaker && n->n_bump_speakers < RAFT_MAX_NODES)
            n->bump_speakers[n->n_bump_speakers++] = from;
        bump_asked(n, ut_get_le(p, 8));
    } else if (len == 0 && !speaker && raft_get_role(n->raft) == RAFT_LEADER) {
        n->view_bump = true; /* a node of the previous release: no epoch to judge by */
    }
}
