/*
 * node_raft.c: Raft, the durable log and the peer transport inside the
 * node loop.
 *
 * The loop drives lib/raft the way its header asks: ticks from the clock,
 * messages from the transport, and after every turn the ready: hand the
 * records to the log's writer thread (node_log.c: one fdatasync for all
 * that collected while the previous one ran, group commit; at light load
 * the loop flushes a lone entry itself), send (what
 * must not overtake the disk is held until it is durable), apply the
 * committed entries to the lock table and answer the callers waiting on
 * them, serve reads whose ReadIndex has been applied.
 *
 * Writes: any node takes a write. The leader stamps it with its clock and
 * proposes it; a follower forwards the command to the leader, which
 * proposes it for it. Every command carries (origin node, sequence), so
 * the origin recognises its own entry when it applies and answers the
 * caller from the result: a request answers after its entry commits, on
 * whichever node it arrived. Without a leader, or when the leader refuses
 * or the entry does not commit in time, the caller hears
 * DSYNC_EUNAVAILABLE (HTTP 503 with Retry-After).
 *
 * Sequences start from the wall clock in microseconds at open, so a
 * restarted node never mistakes an entry of its previous life for one of
 * its new requests.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_internal.h"

/* ---- the call lists --------------------------------------------------- */

static void push(nd_call **list, nd_call *c)
{
    c->next = *list;
    *list = c;
}

/* Unlinks and returns the first waiting write with this sequence number
 * and, when cmd is given, the same operation on the same key for the same
 * client, so an entry left from this node's previous life (its clock
 * stepped back across a restart) answers nobody. */
static nd_call *take_write(nd_call **list, uint64_t seq, const fsm_cmd *cmd)
{
    for (nd_call **pp = list; *pp; pp = &(*pp)->next) {
        const fsm_cmd *w = &(*pp)->cmd;
        if (w->seq != seq) continue;
        if (cmd && (w->op != cmd->op || strcmp(w->key, cmd->key) != 0 ||
                    strcmp(w->client_id, cmd->client_id) != 0))
            continue;
        nd_call *c = *pp;
        *pp = c->next;
        c->next = NULL;
        return c;
    }
    return NULL;
}

static void fail_list(nd_call **list, int rc)
{
    while (*list) {
        nd_call *c = *list;
        *list = c->next;
        nd_complete(c, rc);
    }
}

void nd_raft_fail_all(dsync_node *n, int rc)
{
    fail_list(&n->writes, rc);
    fail_list(&n->reads, rc);
    fail_list(&n->confs, rc);
}

/* ---- metrics ------------------------------------------------------------ */

static void register_metrics(dsync_node *n)
{
    dsync_metrics *m = n->metrics;
    nd_raft_metrics *rm = &n->rm;
    rm->term = dsync_metric_series0(
        dsync_metrics_gauge(m, "raft_term", "This node's current Raft term.", NULL));
    rm->commit_index = dsync_metric_series0(
        dsync_metrics_gauge(m, "raft_commit_index", "Highest log index known committed.", NULL));
    rm->applied_index = dsync_metric_series0(dsync_metrics_gauge(
        m, "raft_applied_index", "Highest log index applied to the lock table.", NULL));
    rm->is_leader = dsync_metric_series0(
        dsync_metrics_gauge(m, "raft_is_leader", "1 while this node is the leader.", NULL));
    rm->leader_changes = dsync_metric_series0(dsync_metrics_counter(
        m, "raft_leader_changes_total", "Times this node saw the leader change.", NULL));
    rm->proposal_seconds = dsync_metric_series0(dsync_metrics_histogram(
        m, "raft_proposal_seconds",
        "Time from a write's arrival to its entry applied (commit on a majority).", NULL,
        dsync_metrics_latency_bounds, dsync_metrics_latency_n_bounds));
    rm->forwarded = dsync_metric_series0(dsync_metrics_counter(
        m, "raft_forwarded_total", "Writes this follower forwarded to the leader.", NULL));
    rm->refused = dsync_metric_series0(dsync_metrics_counter(
        m, "raft_unavailable_total",
        "Writes and reads answered unavailable (no leader, no quorum, timeout).", NULL));
    rm->snapshots_installed = dsync_metric_series0(
        dsync_metrics_counter(m, "raft_snapshots_installed_total",
                              "Snapshots received from the leader and installed.", NULL));
    rm->view_bumps = dsync_metric_series0(dsync_metrics_counter(
        m, "cluster_view_bumps_total",
        "Views this node proposed as leader only for a new epoch, because a node may have lost "
        "cache frames (a connection that broke, a frame refused or dropped).",
        NULL));
    rm->peer_up_family = dsync_metrics_gauge(
        m, "raft_peer_up", "1 while a frame arrived from the peer within an election timeout.",
        "peer");
    rm->members = dsync_metric_series0(
        dsync_metrics_gauge(m, "raft_members", "Members of the current configuration.", NULL));
    dsync_metric *frames = dsync_metrics_counter(
        m, "transport_frames_total", "Peer transport frames by direction.", "direction");
    rm->frames_sent = dsync_metric_series1(frames, "sent");
    rm->frames_received = dsync_metric_series1(frames, "received");
    rm->frames_dropped = dsync_metric_series1(frames, "dropped");
    rm->protocol_errors = dsync_metric_series0(dsync_metrics_counter(
        m, "transport_protocol_errors_total",
        "Peer connections closed for sending garbage (bad frame, checksum, unknown peer).", NULL));
}

static void update_metrics(dsync_node *n, uint64_t now_ms)
{
    nd_raft_metrics *rm = &n->rm;
    dsync_series_set(rm->term, (double)raft_term(n->raft));
    dsync_series_set(rm->commit_index, (double)raft_commit_index(n->raft));
    dsync_series_set(rm->applied_index, (double)n->applied);
    dsync_series_set(rm->is_leader, raft_get_role(n->raft) == RAFT_LEADER);
    if (!n->net) return;
    for (size_t i = 0; i < n->n_voters; i++) {
        if (!rm->peer_up[i]) continue;
        uint64_t heard = nt_last_heard(n->net, n->voters[i]);
        dsync_series_set(rm->peer_up[i], heard && now_ms - heard <= nd_election_ms(n));
    }
    /* Counters only go up: add what the transport counted since last time. */
    nt_stats st, *was = &n->net_stats;
    nt_get_stats(n->net, &st);
    dsync_series_add(rm->frames_sent, (double)(st.frames_sent - was->frames_sent));
    dsync_series_add(rm->frames_received, (double)(st.frames_received - was->frames_received));
    dsync_series_add(rm->frames_dropped, (double)(st.frames_dropped - was->frames_dropped));
    dsync_series_add(rm->protocol_errors, (double)(st.protocol_errors - was->protocol_errors));
    *was = st;
}

/* ---- the transport ------------------------------------------------------ */

static void send_refusal(dsync_node *n, uint64_t to, uint64_t seq)
{
    unsigned char b[8];
    ut_put_le(b, seq, 8);
    nt_send(n->net, to, ND_FRAME_PROPOSE_REFUSED, b, sizeof b);
}

/* Leader: proposes a command for itself or for a follower. */
static int propose_cmd(dsync_node *n, fsm_cmd *cmd, uint64_t *index)
{
    if (n->store_broken) return DSYNC_EIO;
    if (raft_get_role(n->raft) != RAFT_LEADER) return DSYNC_ENOTLEADER;
    cmd->now_ms = ut_wall_ms();
    n->scratch.len = 0;
    if (fsm_encode(cmd, &n->scratch) != 0) return DSYNC_ENOMEM;
    return raft_propose(n->raft, n->scratch.data, n->scratch.len, index);
}

static void on_frame(void *ctx, uint64_t from, uint8_t type, const void *payload, size_t len)
{
    dsync_node *n = ctx;
    if (n->store_broken) return; /* it takes no part any more */
    switch (type) {
    case ND_FRAME_RAFT: {
        raft_msg m;
        if (raft_msg_decode(payload, len, &m) != 0) {
            ut_log(&n->log, DSYNC_LOG_WARN, "peer %" PRIu64 " sent a malformed raft message", from);
            return;
        }
        /* Whether our answers ask the leader for each new commit index
         * at once: only while callers here wait on one. */
        raft_set_waiting(n->raft, n->writes || n->reads || n->confs || n->parked);
        /* The sender is who the connection's HELLO said, nobody else. */
        if (m.from != from || raft_step(n->raft, &m) != 0)
            ut_log(&n->log, DSYNC_LOG_WARN, "peer %" PRIu64 " sent an invalid raft message", from);
        raft_msg_free_entries(&m);
        return;
    }
    case ND_FRAME_PROPOSE: {
        fsm_cmd cmd;
        if (fsm_decode(payload, len, &cmd) != 0 || cmd.origin != from || cmd.op == FSM_EXPIRE ||
            cmd.op == FSM_VIEW) {
            ut_log(&n->log, DSYNC_LOG_WARN, "peer %" PRIu64 " forwarded a malformed command", from);
            return;
        }
        /* A node removed from the cluster takes no writes any more. */
        uint64_t index;
        if (!nd_is_member(n, from) || propose_cmd(n, &cmd, &index) != 0) {
            send_refusal(n, from, cmd.seq);
            return;
        }
        /* Its caller waits there: it hears of the commit at once. */
        raft_peer_wants_commit(n->raft, from, index);
        return;
    }
    case ND_FRAME_PROPOSE_REFUSED: {
        if (len != 8) return;
        nd_call *c = take_write(&n->writes, ut_get_le(payload, 8), NULL);
        if (c) {
            dsync_series_add(n->rm.refused, 1);
            nd_complete(c, DSYNC_EUNAVAILABLE);
        }
        return;
    }
    case ND_FRAME_PING:
        return; /* the transport noted when it arrived: that is the point */
    case ND_FRAME_CONF:
        nd_conf_frame(n, from, payload, len);
        return;
    case ND_FRAME_CONF_RESULT:
        nd_conf_result(n, payload, len);
        return;
    case ND_FRAME_CACHE:
        nd_cache_frame(n, from, payload, len);
        return;
    case ND_FRAME_VIEW_BUMP:
        if (nd_is_member(n, from)) nd_view_bump_frame(n, from, payload, len);
        return;
    case ND_FRAME_QREQ:
    case ND_FRAME_QRESP:
        nd_queue_frame(n, from, type, payload, len);
        return;
    default:
        ut_log(&n->log, DSYNC_LOG_WARN, "peer %" PRIu64 " sent a frame of unknown type %u", from,
               type);
    }
}

/* ---- writes and reads ------------------------------------------------- */

int nd_propose(dsync_node *n, nd_call *call)
{
    if (n->store_broken) return DSYNC_EIO;
    fsm_cmd *cmd = &call->cmd;
    cmd->origin = n->cfg.node_id;
    cmd->seq = ++n->next_seq;
    int rc;
    if (raft_get_role(n->raft) == RAFT_LEADER) {
        rc = propose_cmd(n, cmd, NULL);
    } else {
        uint64_t leader = raft_leader(n->raft);
        if (!leader || !n->net) return DSYNC_EUNAVAILABLE;
        cmd->now_ms = 0; /* the leader stamps it */
        n->scratch.len = 0;
        if (fsm_encode(cmd, &n->scratch) != 0) return DSYNC_ENOMEM;
        rc = nt_send(n->net, leader, ND_FRAME_PROPOSE, n->scratch.data, n->scratch.len);
        if (rc == 0) dsync_series_add(n->rm.forwarded, 1);
    }
    if (rc != 0) return rc == DSYNC_ENOMEM ? rc : DSYNC_EUNAVAILABLE;
    call->deadline_ms = ut_now_ms() + ND_COMMIT_TIMEOUT_MS;
    push(&n->writes, call);
    return 0;
}

uint64_t nd_propose_internal(dsync_node *n, fsm_cmd *cmd)
{
    if (n->store_broken) return 0;
    cmd->origin = n->cfg.node_id;
    cmd->seq = 0;
    uint64_t index;
    if (propose_cmd(n, cmd, &index) != 0) return 0;
    /* Lease expiries and views concern every replica, not only the
     * followers where callers wait: all hear of their commit at once. */
    raft_tell_commit_at(n->raft, index);
    return index;
}

int nd_read(dsync_node *n, nd_call *call)
{
    if (n->store_broken) return DSYNC_EIO;
    call->read_ctx = ++n->next_read;
    call->read_index = 0;
    int rc = raft_read_index(n->raft, call->read_ctx);
    if (rc != 0) return rc == DSYNC_ENOMEM ? rc : DSYNC_EUNAVAILABLE;
    call->deadline_ms = ut_now_ms() + ND_COMMIT_TIMEOUT_MS;
    push(&n->reads, call);
    return 0;
}

static void serve_reads(dsync_node *n)
{
    for (nd_call **pp = &n->reads; *pp;) {
        nd_call *c = *pp;
        if (c->read_index && c->read_index <= n->applied) {
            *pp = c->next;
            c->next = NULL;
            nd_locks_serve_read(n, c);
        } else {
            pp = &c->next;
        }
    }
}

/* ---- the ready ------------------------------------------------------------ */

void nd_raft_broken(dsync_node *n, const char *what)
{
    /* PostgreSQL's lesson: after a failed fsync the kernel may have dropped
     * the pages; carrying on could acknowledge lost data. This node stops
     * taking part (no votes, no acks, no writes); the operator restarts it,
     * and it replays only what is really on disk. */
    n->store_broken = true;
    ut_log(&n->log, DSYNC_LOG_ERROR, "%s failed: this node stops taking part until it restarts",
           what);
    nd_raft_fail_all(n, DSYNC_EIO);
}

static int persist(dsync_node *n, const raft_ready *rd)
{
    if (!n->store) return 0;
    if (rd->has_snapshot) {
        st_snapshot_meta meta = {rd->snapshot.index, rd->snapshot.term, (void *)rd->snapshot.conf,
                                 rd->snapshot.conf_len};
        int rc = st_log_save_snapshot(n->store, &meta, rd->snapshot.data, rd->snapshot.len);
        if (rc != 0) return rc;
    }
    if (rd->n_entries) {
        st_entry ents[64];
        for (size_t i = 0; i < rd->n_entries;) {
            size_t k = 0;
            for (; k < 64 && i + k < rd->n_entries; k++) {
                const raft_entry *e = &rd->entries[i + k];
                ents[k] = (st_entry){e->index, e->term, e->type, e->data, e->len};
            }
            int rc = st_log_append(n->store, ents, k);
            if (rc != 0) return rc;
            i += k;
        }
    }
    if (rd->hard_state_changed) {
        st_hard_state hs = {rd->hard_state.term, rd->hard_state.vote, rd->hard_state.commit};
        int rc = st_log_set_hard_state(n->store, &hs);
        if (rc != 0) return rc;
    }
    /* The commit index is recorded but need not be durable: a restarted
     * node learns it again from the leader (or, alone, by committing its
     * no-op). So a change of commit alone rides along with the next flush
     * instead of costing one; term, vote and entries must be on disk
     * before anything that depends on them is sent (node_log.c holds it). */
    bool vote_changed = rd->hard_state_changed && (rd->hard_state.term != n->synced_term ||
                                                   rd->hard_state.vote != n->synced_vote);
    if (rd->hard_state_changed) {
        n->synced_term = rd->hard_state.term;
        n->synced_vote = rd->hard_state.vote;
    }
    const raft_entry *last = rd->n_entries ? &rd->entries[rd->n_entries - 1] : NULL;
    nd_log_handed(n, last ? last->index : 0, last ? last->term : 0, rd->n_entries,
                  rd->n_entries || vote_changed, rd->unhurried && !vote_changed);
    /* The disk starts now, while this turn goes on (or, idle, once this
     * round has been handed to Raft: nd_raft_process). */
    nd_log_kick_unless_idle(n);
    return n->store_broken ? DSYNC_EIO : 0;
}

static void send_msgs(dsync_node *n, const raft_ready *rd, bool appends)
{
    if (!n->net) return;
    for (size_t i = 0; i < rd->n_msgs; i++) {
        const raft_msg *m = &rd->msgs[i];
        bool is_append = m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_SNAPSHOT ||
                         m->type == RAFT_MSG_HEARTBEAT;
        if (is_append != appends) continue;
        n->scratch.len = 0;
        if (raft_msg_encode(m, &n->scratch) != 0) continue; /* lost: Raft resends */
        /* Only a leader's appends may overtake its disk (raft.h). */
        if (is_append && rd->role == RAFT_LEADER)
            nt_send(n->net, m->to, ND_FRAME_RAFT, n->scratch.data, n->scratch.len);
        else
            nd_log_send(n, m->to, n->scratch.data, n->scratch.len, m->type == RAFT_MSG_APPEND_RESP);
    }
}

static void apply_entry(dsync_node *n, const raft_entry *e)
{
    n->applied = e->index;
    if (e->type != RAFT_ENTRY_NORMAL) return;
    fsm_cmd cmd;
    if (fsm_decode(e->data, e->len, &cmd) != 0) {
        /* Every replica holds the same bytes and skips the same entry. */
        ut_log(&n->log, DSYNC_LOG_ERROR, "committed entry %" PRIu64 " is not a lock command",
               e->index);
        return;
    }
    if (cmd.op == FSM_VIEW) {
        fsm_apply_view(&n->fsm, e->index, &cmd);
        if (e->index >= n->view_index) n->view_index = 0;
        nd_queue_view_changed(n);
        nd_cache_view_changed(n);
        return;
    }
    nd_call *mine = NULL;
    if (cmd.origin == n->cfg.node_id && cmd.seq) mine = take_write(&n->writes, cmd.seq, &cmd);
    if (mine)
        dsync_series_observe(n->rm.proposal_seconds,
                             (double)(ut_now_ns() - mine->submitted_ns) / 1e9);
    nd_locks_apply(n, &cmd, mine);
    if (cmd.op == FSM_EXPIRE && e->index >= n->sweep_index) n->sweep_index = 0;
}

/* Replaces the lock table with the leader's image, before it is saved:
 * an image that does not restore is never written over our snapshot. */
static bool restore_snapshot(dsync_node *n, const raft_snapshot *s)
{
    if (fsm_restore(&n->fsm, s->data, s->len) != 0) {
        /* It passed the transport's checksum but is not a lock table (or
         * memory ran out): nothing safe to do but stop. */
        nd_raft_broken(n, "restoring the leader's snapshot");
        return false;
    }
    n->applied = n->snapshot_index = s->index;
    nd_queue_view_changed(n);
    nd_cache_view_changed(n);
    dsync_series_add(n->rm.snapshots_installed, 1);
    nd_locks_update_gauges(n);
    ut_log(&n->log, DSYNC_LOG_INFO, "installed the leader's snapshot at index %" PRIu64, s->index);
    return true;
}

static void maybe_snapshot(dsync_node *n)
{
    if (!n->store || n->store_broken || n->applied - n->snapshot_index < n->cfg.snapshot_entries)
        return;
    /* The log is rewritten from the file: everything buffered goes first. */
    nd_log_drain(n);
    if (n->store_broken) return;
    ut_buf b;
    ut_buf_init(&b);
    int rc = fsm_snapshot(&n->fsm, &b);
    const void *conf = NULL;
    size_t conf_len = 0;
    uint64_t term = raft_term_at(n->raft, n->applied);
    if (rc == 0) rc = raft_conf_at(n->raft, n->applied, &conf, &conf_len);
    if (rc == 0) {
        st_snapshot_meta meta = {n->applied, term, (void *)conf, conf_len};
        rc = st_log_save_snapshot(n->store, &meta, b.data, b.len);
    }
    if (rc == 0) rc = raft_compact(n->raft, n->applied, b.data, b.len);
    ut_buf_free(&b);
    if (rc == 0) {
        n->snapshot_index = n->applied;
        dsync_series_add(n->lm.snapshots, 1);
    } else if (rc == DSYNC_EIO) {
        nd_raft_broken(n, "writing a snapshot");
    }
}

void nd_raft_process(dsync_node *n)
{
    nd_log_reap(n);
    for (int round = 0; round < 64 && !n->store_broken && raft_has_ready(n->raft); round++) {
        raft_ready rd;
        raft_ready_get(n->raft, &rd);
        /* A leader's appends may leave before its own fsync (thesis
         * §10.2.1): it counts itself toward a majority only once durable,
         * so followers' disks and its own work in parallel. Votes and acks
         * leave only after the state they report is durable. */
        if (rd.has_snapshot) {
            /* A snapshot replaces the log: what is buffered goes first. */
            nd_log_drain(n);
            if (n->store_broken || !restore_snapshot(n, &rd.snapshot)) return;
        }
        if (rd.role == RAFT_LEADER && n->net) {
            send_msgs(n, &rd, true);
            nt_tick(n->net, ut_now_ms()); /* out now, before this round applies and answers */
        }
        if (persist(n, &rd) != 0) {
            nd_raft_broken(n, "writing the log");
            return;
        }
        if (rd.role != RAFT_LEADER) send_msgs(n, &rd, true);
        send_msgs(n, &rd, false);
        if (rd.conf_changed) nd_set_members(n, rd.conf, rd.conf_len);
        for (size_t i = 0; i < rd.n_committed; i++)
            apply_entry(n, &rd.committed[i]);
        for (size_t i = 0; i < rd.n_reads; i++)
            for (nd_call *c = n->reads; c; c = c->next)
                if (c->read_ctx == rd.reads[i].context) c->read_index = rd.reads[i].index;
        if (rd.leader != n->known_leader) {
            if (rd.leader) dsync_series_add(n->rm.leader_changes, 1);
            if (rd.leader || n->known_leader)
                ut_log(&n->log, DSYNC_LOG_INFO, "term %" PRIu64 ": leader is %" PRIu64 "%s",
                       rd.term, rd.leader, rd.leader == n->cfg.node_id ? " (this node)" : "");
            n->known_leader = rd.leader;
        }
        if (n->wal.wr.started) {
            raft_advance_unsynced(n->raft, &rd); /* raft_synced when the flush ends */
            nd_log_flush_if_idle(n);
        } else {
            raft_advance(n->raft, &rd); /* memory only: nothing to wait for */
        }
        /* A ReadIndex of 0 (nothing committed yet) is served at once. */
        serve_reads(n);
        nd_finish_confs(n);
        maybe_snapshot(n);
    }
    if (n->net) nt_tick(n->net, ut_now_ms()); /* flush what this turn queued */
    update_metrics(n, ut_now_ms());
}

static uint64_t expire_list(dsync_node *n, nd_call **list, uint64_t now_ms)
{
    uint64_t next = UINT64_MAX;
    for (nd_call **pp = list; *pp;) {
        nd_call *c = *pp;
        if (c->deadline_ms <= now_ms) {
            *pp = c->next;
            c->next = NULL;
            dsync_series_add(n->rm.refused, 1);
            nd_complete(c, DSYNC_EUNAVAILABLE);
            continue;
        }
        if (c->deadline_ms < next) next = c->deadline_ms;
        pp = &c->next;
    }
    return next;
}

uint64_t nd_raft_tick(dsync_node *n, uint64_t now_ms)
{
    /* Ticks that fell behind (a long fsync) are not replayed in a burst:
     * that would fire an election on a node that was merely busy. */
    if (now_ms >= n->tick_due_ms) {
        raft_tick(n->raft);
        n->tick_due_ms = now_ms + n->cfg.raft_tick_ms;
        /* Raft only links the leader with each follower; the failure
         * detector wants every pair, so every node pings every peer. */
        /* A node whose log is broken takes no part: it stops pinging, so
         * the leader's view drops it and its topics and keys move on. */
        if (n->net && !n->store_broken && n->ticks++ % 2 == 0)
            for (size_t i = 0; i < n->n_voters; i++)
                if (n->voters[i] != n->cfg.node_id)
                    nt_send(n->net, n->voters[i], ND_FRAME_PING, NULL, 0);
        nd_send_view_bump(n);
        nd_propose_view(n, now_ms);
    }
    uint64_t next = n->tick_due_ms;
    uint64_t w = expire_list(n, &n->writes, now_ms);
    uint64_t r = expire_list(n, &n->reads, now_ms);
    uint64_t c = expire_list(n, &n->confs, now_ms);
    if (w < next) next = w;
    if (r < next) next = r;
    if (c < next) next = c;
    if (n->net) {
        uint64_t t = nt_tick(n->net, now_ms);
        if (t < next) next = t;
    }
    return next;
}

/* ---- open, close, health ----------------------------------------------- */

static int build_raft(dsync_node *n, const st_loaded *ld)
{
    raft_config rc = {
        .id = n->cfg.node_id,
        .members = n->members,
        .n_members = n->n_voters,
        .join = n->cfg.join,
        .election_tick = (unsigned)n->cfg.raft_election_ticks,
        .heartbeat_tick = 1,
        .max_inflight = 256,
        .max_msg_entries = 512,
        .pre_vote = true,
        .check_quorum = true,
        .seed = ut_now_ns() ^ n->cfg.node_id,
    };
    raft_entry *ents = NULL;
    if (ld) {
        if (ld->has_hard_state)
            rc.hard_state =
                (raft_hard_state){ld->hard_state.term, ld->hard_state.vote, ld->hard_state.commit};
        n->synced_term = rc.hard_state.term;
        n->synced_vote = rc.hard_state.vote;
        if (ld->has_snapshot) {
            rc.snapshot_conf = ld->snapshot.conf_len ? ld->snapshot.conf : NULL;
            rc.snapshot_conf_len = ld->snapshot.conf_len;
            rc.snapshot_index = ld->snapshot.index;
            rc.snapshot_term = ld->snapshot.term;
            rc.snapshot = ld->snapshot_data;
            rc.snapshot_len = ld->snapshot_len;
        }
        if (ld->n_entries) {
            ents = calloc(ld->n_entries, sizeof *ents);
            if (!ents) return DSYNC_ENOMEM;
            for (size_t i = 0; i < ld->n_entries; i++)
                ents[i] =
                    (raft_entry){ld->entries[i].index, ld->entries[i].term, ld->entries[i].type,
                                 (void *)ld->entries[i].data, ld->entries[i].len};
        }
        rc.entries = ents;
        rc.n_entries = ld->n_entries;
    }
    rc.applied = n->applied;
    n->raft = raft_new(&rc);
    free(ents);
    if (!n->raft) {
        ut_log(&n->log, DSYNC_LOG_ERROR,
               "%s: the stored Raft state is inconsistent (hard state commit %" PRIu64
               " past the log's last entry?)",
               n->cfg.data_dir, rc.hard_state.commit);
        return DSYNC_ECORRUPT;
    }
    return 0;
}

static int open_store(dsync_node *n, const st_loaded **ld)
{
    char err[512];
    int rc = st_log_open(n->cfg.data_dir, &n->store, ld, err, sizeof err);
    if (rc != 0) {
        ut_log(&n->log, DSYNC_LOG_ERROR, "cannot open the log in %s: %s", n->cfg.data_dir, err);
        return rc;
    }
    if ((*ld)->has_snapshot) {
        if (fsm_restore(&n->fsm, (*ld)->snapshot_data, (*ld)->snapshot_len) != 0) {
            ut_log(&n->log, DSYNC_LOG_ERROR, "%s: the snapshot's lock table is corrupt",
                   n->cfg.data_dir);
            return DSYNC_ECORRUPT;
        }
        n->applied = n->snapshot_index = (*ld)->snapshot.index;
    }
    for (size_t i = 0; i < (*ld)->n_entries; i++) {
        const st_entry *e = &(*ld)->entries[i];
        fsm_cmd cmd;
        if (e->type == RAFT_ENTRY_NORMAL && fsm_decode(e->data, e->len, &cmd) != 0) {
            ut_log(&n->log, DSYNC_LOG_ERROR,
                   "%s: log entry %" PRIu64 " passed its checksum but is not a lock command",
                   n->cfg.data_dir, e->index);
            return DSYNC_ECORRUPT;
        }
    }
    if ((*ld)->torn_bytes)
        ut_log(&n->log, DSYNC_LOG_WARN,
               "%s: cut %zu bytes of a torn write off the end of the log (never acknowledged)",
               n->cfg.data_dir, (*ld)->torn_bytes);
    return 0;
}

int nd_raft_open(dsync_node *n)
{
    /* The first configuration: DSYNC_PEERS, or a cluster of one. Once
     * the log or a snapshot holds one, that one rules. */
    if (n->cfg.n_peers == 0) {
        n->members[0] = (raft_member){.id = n->cfg.node_id};
        snprintf(n->members[0].addr, sizeof n->members[0].addr, "%s", n->cfg.peer_addr);
        n->n_voters = 1;
    } else {
        for (size_t i = 0; i < n->cfg.n_peers; i++) {
            n->members[i] = (raft_member){.id = n->cfg.peers[i].id};
            snprintf(n->members[i].addr, sizeof n->members[i].addr, "%s", n->cfg.peers[i].addr);
        }
        n->n_voters = n->cfg.n_peers;
    }
    /* Request ids of this life never repeat one of an earlier life: a
     * leader may still hold a read or a write this node asked before a
     * quick restart. */
    n->next_seq = n->next_read = ut_wall_ms() * 1000;
    register_metrics(n);

    const st_loaded *ld = NULL;
    int rc = 0;
    if (n->cfg.data_dir[0] && (rc = open_store(n, &ld)) != 0) goto fail;
    if ((rc = nd_log_open(n)) != 0) goto fail;
    if ((rc = build_raft(n, ld)) != 0) goto fail;
    if (ld && ld->n_entries)
        ut_log(&n->log, DSYNC_LOG_INFO,
               "restored snapshot %" PRIu64 " + %zu log entries (term %" PRIu64 ")",
               n->snapshot_index, ld->n_entries, ld->hard_state.term);

    if (n->cfg.n_peers > 0) {
        nt_options opt = {.self_id = n->cfg.node_id,
                          .listen_addr = n->cfg.peer_addr,
                          .peers = n->cfg.peers,
                          .n_peers = n->cfg.n_peers,
                          .on_frame = on_frame,
                          .ctx = n,
                          .log = &n->log,
                          .max_outbox_bytes = 256u << 20,
                          /* a lost cache frame needs a new view epoch */
                          .watch_types = 1ULL << ND_FRAME_CACHE};
        char err[256];
        if ((rc = nt_open(&opt, &n->net, err, sizeof err)) != 0) {
            ut_log(&n->log, DSYNC_LOG_ERROR, "peer transport: %s", err);
            goto fail;
        }
    }
    /* The configuration Raft settled on (the log's, if it has one). */
    raft_ready first;
    raft_ready_get(n->raft, &first);
    if (first.conf_changed) nd_set_members(n, first.conf, first.conf_len);
    if (n->n_voters == 1 && n->voters[0] == n->cfg.node_id && !n->cfg.join) {
        /* Alone, it needs nobody's vote: lead at once, so the first call
         * after open is served, then replay the log by committing it. */
        while (raft_get_role(n->raft) != RAFT_LEADER)
            raft_tick(n->raft);
        nd_raft_process(n);
        nd_log_drain(n);
        nd_raft_process(n);
        if (n->store_broken) {
            rc = DSYNC_EIO;
            goto fail;
        }
    }
    n->tick_due_ms = ut_now_ms() + n->cfg.raft_tick_ms;
    return 0;

fail:
    nd_raft_close(n);
    return rc;
}

void nd_raft_close(dsync_node *n)
{
    nt_close(n->net);
    n->net = NULL;
    nd_log_close(n);
    raft_free(n->raft);
    n->raft = NULL;
    st_log_close(n->store);
    n->store = NULL;
}

int dsync_node_drop_peers(dsync_node *n, const uint64_t *ids, size_t count)
{
    if (!n || (count && !ids) || count > DSYNC_MAX_PEERS) return DSYNC_EINVAL;
    if (!n->cfg.fault_injection) return DSYNC_EINVAL;
    nd_call call = {.kind = ND_CALL_DROP_PEERS, .u.drop = {ids, count}};
    return nd_submit(n, &call);
}

void nd_raft_health(dsync_node *n, dsync_health *h, uint64_t now_ms)
{
    h->role = raft_role_name(raft_get_role(n->raft));
    h->leader_id = raft_leader(n->raft);
    h->term = raft_term(n->raft);
    h->commit_index = raft_commit_index(n->raft);
    h->applied_index = n->applied;
    h->last_index = raft_last_index(n->raft);
    h->snapshot_index = n->snapshot_index;
    h->healthy = !n->store_broken && h->leader_id != 0;
    h->n_peers = 0;
    h->is_member = nd_is_member(n, n->cfg.node_id);
    for (size_t i = 0; i < n->n_voters; i++) {
        uint64_t id = n->voters[i];
        if (id == n->cfg.node_id || !n->net) continue;
        dsync_peer_health *p = &h->peers[h->n_peers++];
        uint64_t heard = nt_last_heard(n->net, id);
        p->id = id;
        p->last_heard_ms = heard ? now_ms - heard : UINT64_MAX;
        p->reachable = heard && now_ms - heard <= nd_election_ms(n) && !nt_dropping(n->net, id);
        p->match_index = raft_match_index(n->raft, id);
    }
}
