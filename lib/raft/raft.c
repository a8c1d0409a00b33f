/*
 * raft.c: elections, replication and commitment (see raft.h).
 *
 * The log lives in memory, entries (snap_index, last]; `stable` is how far
 * the caller has persisted it. A leader counts itself toward a majority only
 * up to `stable`, so nothing commits that is not durable on a majority.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "dsync/errors.h"
#include "raft_internal.h"

/* ---- helpers ------------------------------------------------------------ */

static void reset_timeout(raft *r)
{
    r->elapsed = 0;
    r->timeout = r->cfg.election_tick + (unsigned)(ut_rand_next(&r->rng) % r->cfg.election_tick);
}

uint64_t raft_term_at(const raft *r, uint64_t index)
{
    if (index == r->snap_index) return r->snap_term;
    return index > r->snap_index && index <= r->last ? raft_entry_at(r, index)->term : 0;
}

static uint64_t last_term(const raft *r)
{
    return raft_term_at(r, r->last);
}

static progress *find_pr(raft *r, uint64_t id)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->pr[i].id == id) return &r->pr[i];
    return NULL;
}

size_t raft_quorum(const raft *r)
{
    return r->n / 2 + 1;
}

static int append_local(raft *r, uint64_t term, uint8_t type, const void *data, size_t len)
{
    if (r->last - r->snap_index == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 64;
        raft_entry *nl = realloc(r->log, ncap * sizeof *nl);
        if (!nl) return DSYNC_ENOMEM;
        r->log = nl;
        r->cap = ncap;
    }
    void *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy) return DSYNC_ENOMEM;
        memcpy(copy, data, len);
    }
    /* A configuration takes effect as it is appended (thesis §4.1); one
     * that cannot is not appended either. */
    int rc = type == RAFT_ENTRY_CONF ? raft_set_conf(r, copy, len) : 0;
    if (rc != 0) {
        free(copy);
        return rc;
    }
    r->log[r->last - r->snap_index] = (raft_entry){r->last + 1, term, type, copy, len};
    r->last++;
    r->promotable = true;
    if (type == RAFT_ENTRY_CONF) r->conf_index = r->last;
    return 0;
}

/* Drops entries from index on (a conflicting uncommitted tail, §5.3). */
static void truncate_from(raft *r, uint64_t index)
{
    while (r->last >= index) {
        free(raft_entry_at(r, r->last)->data);
        r->last--;
    }
    if (r->stable >= index) r->stable = index - 1;
    if (r->unstable_from > index) r->unstable_from = index;
    /* A configuration in the tail is undone with it (thesis §4.1). */
    if (r->conf_index >= index) raft_recompute_conf(r);
}

void raft_send(raft *r, raft_msg m)
{
    if (r->n_out == r->cap_out) {
        size_t ncap = r->cap_out ? r->cap_out * 2 : 16;
        raft_msg *no = realloc(r->out, ncap * sizeof *no);
        if (!no) {
            raft_msg_free_entries(&m); /* a lost message: Raft retries */
            return;
        }
        r->out = no;
        r->cap_out = ncap;
    }
    m.from = r->cfg.id;
    if (!m.term) m.term = r->term;
    if (m.type == RAFT_MSG_APPEND_RESP || m.type == RAFT_MSG_HEARTBEAT_RESP)
        m.commit = r->waiting ? 1 : 0; /* whether callers wait here */
    r->out[r->n_out++] = m;
}

/* ---- roles ---------------------------------------------------------------- */

static void become_follower(raft *r, uint64_t term, uint64_t leader)
{
    if (term != r->term) {
        r->term = term;
        r->vote = 0;
    }
    r->role = RAFT_FOLLOWER;
    r->leader = leader;
    /* Entries it appended as leader and has not handed out yet are its
     * own, never unhurried. */
    if (r->unstable_from <= r->last) r->hurried = true;
    /* Reads waiting for this node's leadership will never be confirmed;
     * their callers time out and retry with the new leader. */
    r->n_pending = 0;
    reset_timeout(r);
}

static void send_append(raft *r, progress *p, bool allow_empty);

void raft_catch_up_to(raft *r, uint64_t index)
{
    if (r->role != RAFT_LEADER) return;
    for (size_t i = 0; i < r->n; i++) {
        progress *p = &r->pr[i];
        if (p->id == r->cfg.id || p->state != PR_REPLICATE) continue;
        if (p->catch_up < index) p->catch_up = index;
        while (p->state == PR_REPLICATE && p->next <= index && p->inflight < r->cfg.max_inflight) {
            uint64_t next = p->next;
            send_append(r, p, false);
            if (p->next == next) break;
        }
    }
}

/* Sends what each follower lacks; with commit_changed, an empty append to
 * those that lack nothing but are owed the new commit index, so they learn
 * it now rather than with the next entries or heartbeat. */
static void bcast_append(raft *r, bool commit_changed)
{
    for (size_t i = 0; i < r->n; i++) {
        progress *p = &r->pr[i];
        if (p->id != r->cfg.id) send_append(r, p, commit_changed && raft_commit_owed(r, p));
    }
}

static void become_leader(raft *r)
{
    r->role = RAFT_LEADER;
    r->leader = r->cfg.id;
    r->heartbeat_elapsed = 0;
    r->elapsed = 0;
    for (size_t i = 0; i < r->n; i++) {
        progress *p = &r->pr[i];
        p->match = p->id == r->cfg.id ? r->stable : 0;
        p->next = r->last + 1;
        p->state = PR_PROBE;
        p->probe_sent = false;
        p->inflight = 0;
        p->recent_active = true;
        p->read_ack = 0;
        p->catch_up = 0;
        p->quiet = 0;
        p->sent_commit = 0;
        p->waiting = true; /* until its first answer says */
        /* Everyone hears of the no-op's commit (and of what it commits
         * of earlier terms) at once: index r->last + 1, appended below. */
        p->wants = r->last + 1;
    }
    r->read_round = 0;
    r->self_slow = false;
    r->tick_last = r->last;
    /* A no-op of the new term lets earlier entries commit (§5.4.2, §8). */
    append_local(r, r->term, RAFT_ENTRY_NOOP, NULL, 0);
    bcast_append(r, false);
}

static void campaign(raft *r, bool pre)
{
    for (size_t i = 0; i < r->n; i++) {
        r->pr[i].vote_granted = r->pr[i].id == r->cfg.id;
        r->pr[i].vote_answered = r->pr[i].id == r->cfg.id;
    }
    uint64_t term;
    if (pre) {
        /* PreVote (§9.6): ask first, without disturbing anyone's term. */
        r->role = RAFT_PRECANDIDATE;
        term = r->term + 1;
    } else {
        r->role = RAFT_CANDIDATE;
        r->term++;
        r->vote = r->cfg.id;
        term = r->term;
    }
    r->leader = 0;
    reset_timeout(r);
    if (r->n == 1 && raft_is_member(r, r->cfg.id)) {
        if (pre)
            campaign(r, false);
        else
            become_leader(r);
        return;
    }
    for (size_t i = 0; i < r->n; i++) {
        if (r->pr[i].id == r->cfg.id) continue;
        raft_send(r, (raft_msg){.type = pre ? RAFT_MSG_PREVOTE : RAFT_MSG_VOTE,
                                .to = r->pr[i].id,
                                .term = term,
                                .index = r->last,
                                .log_term = last_term(r)});
    }
}

/* ---- replication ---------------------------------------------------------- */

static void send_append(raft *r, progress *p, bool allow_empty)
{
    if (p->state == PR_SNAPSHOT || (p->state == PR_PROBE && p->probe_sent)) return;
    if (p->state == PR_REPLICATE && p->inflight >= r->cfg.max_inflight) return;
    if (p->next <= r->snap_index) {
        /* What it needs was compacted away (§7). */
        raft_send_snapshot(r, p);
        return;
    }
    uint64_t prev = p->next - 1;
    size_t count = 0;
    if (p->next <= r->last && raft_entries_now(r, p)) {
        count = (size_t)(r->last - p->next + 1);
        if (count > r->cfg.max_msg_entries) count = r->cfg.max_msg_entries;
    }
    if (count == 0 && !allow_empty && p->state == PR_REPLICATE) return;
    raft_entry *ents = NULL;
    if (count) {
        ents = calloc(count, sizeof *ents);
        if (!ents) return;
        for (size_t i = 0; i < count; i++) {
            const raft_entry *e = raft_entry_at(r, p->next + i);
            ents[i] = *e;
            ents[i].data = NULL;
            if (e->len) {
                ents[i].data = malloc(e->len);
                if (!ents[i].data) {
                    for (size_t j = 0; j < i; j++)
                        free(ents[j].data);
                    free(ents);
                    return;
                }
                memcpy(ents[i].data, e->data, e->len);
            }
        }
    }
    /* context 1: no commit waits for this follower's answer, so it may
     * take its time to make these entries durable (raft_ready.unhurried).
     * Older followers ignore the field and write at once. */
    raft_send(r, (raft_msg){.type = RAFT_MSG_APPEND,
                            .to = p->id,
                            .index = prev,
                            .log_term = raft_term_at(r, prev),
                            .commit = r->commit,
                            .context = count && !raft_counted(r, p),
                            .entries = ents,
                            .n_entries = count});
    if (p->sent_commit < r->commit) p->sent_commit = r->commit;
    if (p->state == PR_PROBE) {
        p->probe_sent = true;
    } else if (count) {
        /* Pipelining: assume success and move on (§10.2.1 of the thesis). */
        p->next += count;
        p->inflight++;
    }
}

static int cmp_u64_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void become_follower(raft *r, uint64_t term, uint64_t leader);

/* After the leader's commit index moved; false if it stepped down. */
static bool leader_committed(raft *r)
{
    /* A new commit index goes out once per ready, not once per answer. */
    r->bcast_commit = true;
    /* A leader that removed itself leads until the change commits, then
     * steps down (thesis §4.2.2); the others elect among themselves. */
    if (!raft_is_member(r, r->cfg.id) && r->conf_index <= r->commit) {
        become_follower(r, r->term, 0);
        return false;
    }
    return true;
}

static bool maybe_commit(raft *r)
{
    uint64_t m[RAFT_MAX_NODES];
    for (size_t i = 0; i < r->n; i++)
        m[i] = r->pr[i].id == r->cfg.id ? r->stable : r->pr[i].match;
    qsort(m, r->n, sizeof m[0], cmp_u64_desc);
    uint64_t n = m[raft_quorum(r) - 1];
    /* Only an entry of the current term commits by counting (§5.4.2). */
    if (n > r->commit && raft_term_at(r, n) == r->term) {
        r->commit = n;
        return true;
    }
    return false;
}

/* ---- message handling ------------------------------------------------------ */

static bool log_up_to_date(const raft *r, uint64_t index, uint64_t term)
{
    uint64_t lt = last_term(r);
    return term > lt || (term == lt && index >= r->last);
}

static void handle_append(raft *r, const raft_msg *m)
{
    raft_msg resp = {.type = RAFT_MSG_APPEND_RESP, .to = m->from};
    if (m->index < r->commit) {
        /* Already committed here: say how far we are. */
        resp.index = r->commit;
        raft_send(r, resp);
        return;
    }
    if (m->index > r->last || raft_term_at(r, m->index) != m->log_term) {
        /* Fast back-off: point the leader before the conflicting term. */
        uint64_t hint = m->index > r->last ? r->last : m->index - 1;
        if (m->index <= r->last) {
            uint64_t t = raft_term_at(r, m->index);
            while (hint > r->commit && raft_term_at(r, hint) == t)
                hint--;
        }
        resp.reject = true;
        resp.index = m->index;
        resp.reject_hint = hint;
        raft_send(r, resp);
        return;
    }
    for (size_t i = 0; i < m->n_entries; i++) {
        const raft_entry *e = &m->entries[i];
        if (e->index <= r->last) {
            if (raft_term_at(r, e->index) == e->term) continue;
            /* Never drop a committed entry: the leader would be wrong. */
            if (e->index <= r->commit) return;
            truncate_from(r, e->index);
        }
        if (append_local(r, e->term, e->type, e->data, e->len) != 0) return;
        if (m->context != 1) r->hurried = true;
    }
    uint64_t last_new = m->index + m->n_entries;
    uint64_t c = m->commit < last_new ? m->commit : last_new;
    if (c > r->commit) r->commit = c;
    resp.index = last_new;
    raft_send(r, resp);
}

static void handle_append_resp(raft *r, progress *p, const raft_msg *m)
{
    p->recent_active = true;
    p->quiet = 0;
    raft_note_answer(r, p, m);
    if (p->state == PR_SNAPSHOT) {
        /* Only the answer to the snapshot moves it on; older answers say
         * no more than what the snapshot will. */
        if (m->reject || m->index < p->pending_snapshot) return;
        p->state = PR_PROBE;
    }
    if (m->reject) {
        /* Stale rejections of an index we no longer probe are ignored; so
         * is one, while replicating, of an index the follower has since
         * acknowledged (a reordered or duplicated answer: what it has
         * acknowledged is durable there and never taken back), which would
         * otherwise throw the pipeline back to probing. */
        if (m->index != p->next - 1 && p->state == PR_PROBE) return;
        if (p->state == PR_REPLICATE && m->index <= p->match) return;
        uint64_t next = m->reject_hint + 1;
        if (next > p->next - 1 && p->next > 1) next = p->next - 1;
        if (next <= p->match) next = p->match + 1;
        if (next < 1) next = 1;
        p->next = next;
        p->state = PR_PROBE;
        p->probe_sent = false;
        p->inflight = 0;
        send_append(r, p, true);
        return;
    }
    if (m->index > r->last) return; /* cannot match what we never had: drop */
    if (m->index > p->match) p->match = m->index;
    if (p->next < p->match + 1) p->next = p->match + 1;
    if (p->state == PR_PROBE) {
        p->state = PR_REPLICATE;
        p->probe_sent = false;
        p->inflight = 0;
        p->next = p->match + 1;
    } else if (p->inflight > 0) {
        p->inflight--;
    }
    if (maybe_commit(r) && !leader_committed(r)) return;
    send_append(r, p, false);
}

static void handle_vote(raft *r, const raft_msg *m, bool pre)
{
    bool can_vote = pre ? m->term > r->term || (r->vote == 0 && r->leader == 0)
                        : r->vote == 0 || r->vote == m->from;
    bool grant = can_vote && log_up_to_date(r, m->index, m->log_term);
    raft_msg resp = {
        .type = pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP, .to = m->from, .reject = !grant};
    /* A prevote answer carries the term asked about, so a granted one
     * never looks stale to the asker; a refusal carries ours. */
    resp.term = pre && grant ? m->term : r->term;
    if (grant && !pre) {
        r->vote = m->from;
        reset_timeout(r);
    }
    raft_send(r, resp);
}

static void handle_vote_resp(raft *r, progress *p, const raft_msg *m)
{
    if (p->vote_answered) return;
    p->vote_answered = true;
    p->vote_granted = !m->reject;
    size_t yes = 0, no = 0;
    for (size_t i = 0; i < r->n; i++) {
        yes += r->pr[i].vote_answered && r->pr[i].vote_granted;
        no += r->pr[i].vote_answered && !r->pr[i].vote_granted;
    }
    if (yes >= raft_quorum(r)) {
        if (r->role == RAFT_PRECANDIDATE)
            campaign(r, false);
        else
            become_leader(r);
    } else if (no >= raft_quorum(r)) {
        become_follower(r, r->term, 0);
    }
}

int raft_step(raft *r, const raft_msg *m)
{
    progress *p = find_pr(r, m->from);
    /* Requests are served whoever sends them, member or not in our view
     * of the configuration (thesis §4.1: a node whose configuration is
     * stale must still vote for the leader of the new one); answers count
     * only from members. */
    if (m->from == 0 || m->from == r->cfg.id || m->to != r->cfg.id || m->type < RAFT_MSG_VOTE ||
        m->type >= RAFT_MSG_MAX_ || m->term == 0)
        return DSYNC_EINVAL;
    for (size_t i = 0; i < m->n_entries; i++)
        if (m->entries[i].index != m->index + 1 + i || m->entries[i].term > m->term)
            return DSYNC_EINVAL;
    raft_member scratch[RAFT_MAX_NODES];
    size_t nm;
    if (m->type == RAFT_MSG_SNAPSHOT &&
        (m->index == 0 || m->log_term == 0 || m->log_term > m->term || m->n_entries ||
         raft_conf_decode(m->conf, m->conf_len, scratch, RAFT_MAX_NODES, &nm) != 0))
        return DSYNC_EINVAL;
    for (size_t i = 0; i < m->n_entries; i++)
        if (m->entries[i].type == RAFT_ENTRY_CONF &&
            raft_conf_decode(m->entries[i].data, m->entries[i].len, scratch, RAFT_MAX_NODES, &nm) !=
                0)
            return DSYNC_EINVAL;

    bool vote_req = m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE;
    if (m->term > r->term) {
        /* Leader stickiness: while we hear a leader, a higher-term vote
         * request is a disruptive node, not a failed leader (§9.6). */
        if (vote_req && r->cfg.check_quorum && r->leader != 0 && r->elapsed < r->cfg.election_tick)
            return 0;
        if (m->type == RAFT_MSG_PREVOTE || (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject)) {
            /* Prevotes never change terms. */
        } else {
            bool from_leader = m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
                               m->type == RAFT_MSG_SNAPSHOT;
            become_follower(r, m->term, from_leader ? m->from : 0);
        }
    } else if (m->term < r->term) {
        if (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
            m->type == RAFT_MSG_SNAPSHOT) {
            /* A deposed leader learns our term from the answer. */
            raft_send(r, (raft_msg){.type = RAFT_MSG_APPEND_RESP, .to = m->from});
        } else if (m->type == RAFT_MSG_PREVOTE) {
            raft_send(r, (raft_msg){.type = RAFT_MSG_PREVOTE_RESP, .to = m->from, .reject = true});
        }
        return 0;
    }

    switch (m->type) {
    case RAFT_MSG_PREVOTE:
        handle_vote(r, m, true);
        break;
    case RAFT_MSG_VOTE:
        handle_vote(r, m, false);
        break;
    case RAFT_MSG_PREVOTE_RESP:
        /* A grant from an earlier pre-campaign asked about another term. */
        if (r->role == RAFT_PRECANDIDATE && (m->reject || m->term == r->term + 1))
            if (p) handle_vote_resp(r, p, m);
        break;
    case RAFT_MSG_VOTE_RESP:
        if (p && r->role == RAFT_CANDIDATE) handle_vote_resp(r, p, m);
        break;
    case RAFT_MSG_APPEND:
    case RAFT_MSG_HEARTBEAT:
    case RAFT_MSG_SNAPSHOT:
        if (r->role != RAFT_FOLLOWER) become_follower(r, r->term, m->from);
        r->leader = m->from;
        r->elapsed = 0;
        if (m->type == RAFT_MSG_APPEND) {
            handle_append(r, m);
        } else if (m->type == RAFT_MSG_SNAPSHOT) {
            raft_handle_snapshot(r, m);
        } else {
            /* The leader sends min(match, commit): safe to adopt. */
            uint64_t c = m->commit < r->last ? m->commit : r->last;
            if (c > r->commit) r->commit = c;
            raft_send(
                r,
                (raft_msg){.type = RAFT_MSG_HEARTBEAT_RESP, .to = m->from, .context = m->context});
        }
        break;
    case RAFT_MSG_APPEND_RESP:
        if (p && r->role == RAFT_LEADER) handle_append_resp(r, p, m);
        break;
    case RAFT_MSG_HEARTBEAT_RESP:
        if (p && r->role == RAFT_LEADER) {
            p->recent_active = true;
            p->quiet = 0;
            raft_note_answer(r, p, m);
            if (m->context > p->read_ack && m->context <= r->read_round) {
                p->read_ack = m->context;
                raft_release_reads(r);
            }
            if (p->state == PR_SNAPSHOT) {
                /* A snapshot lost on the way is sent again, but only after
                 * an election timeout: a large one takes a while. */
                if (++p->snapshot_wait >= r->cfg.election_tick) {
                    p->state = PR_PROBE;
                    p->probe_sent = false;
                    send_append(r, p, true);
                }
            } else if (p->match < (p->state == PR_PROBE ? r->last : p->next - 1) &&
                       p->match == p->hb_match) {
                /* No progress for a whole heartbeat on entries sent (or,
                 * probing, on any): appends were lost. Probe again from
                 * what the follower surely has. */
                p->state = PR_PROBE;
                p->next = p->match + 1;
                p->inflight = 0;
                p->probe_sent = false;
                send_append(r, p, true);
            }
            p->hb_match = p->match;
        }
        break;
    case RAFT_MSG_READ_INDEX:
        /* A follower's read: answered once confirmed, or dropped (the
         * follower retries) when this node cannot serve it. */
        if (r->role == RAFT_LEADER) raft_leader_read(r, m->context, m->from);
        break;
    case RAFT_MSG_READ_INDEX_RESP:
        if (m->from == r->leader) raft_add_read(r, m->context, m->index);
        break;
    default:
        return DSYNC_EINVAL;
    }
    return 0;
}

void raft_tick(raft *r)
{
    if (r->role != RAFT_LEADER) {
        /* A joining node with nothing in its log yet stays quiet. A node
         * whose latest configuration leaves it out still stands while
         * that configuration is uncommitted: it may be the only one that
         * can lead the change to its end (thesis §4.2.2); it just does not
         * vote for itself. Once its removal is known committed it is out
         * for good and stays quiet. */
        bool removed = !raft_is_member(r, r->cfg.id) && r->conf_index <= r->commit;
        if (!r->promotable || removed) {
            /* The clock still runs, so leader stickiness lapses and it can
             * vote for whoever leads next. */
            if (r->elapsed < r->timeout) r->elapsed++;
            return;
        }
        if (++r->elapsed >= r->timeout) campaign(r, r->cfg.pre_vote);
        return;
    }
    for (size_t i = 0; i < r->n; i++)
        if (r->pr[i].quiet < UINT_MAX) r->pr[i].quiet++;
    /* Entries it had a tick ago are still not durable here: its disk
     * lags, and followers alone must make the majority. */
    r->self_slow = r->stable < r->tick_last;
    r->tick_last = r->last;
    if (++r->heartbeat_elapsed >= r->cfg.heartbeat_tick) {
        r->heartbeat_elapsed = 0;
        /* Lazy followers get what they lack, ahead of the heartbeat so
         * its answer comes after theirs. */
        for (size_t i = 0; i < r->n; i++) {
            progress *p = &r->pr[i];
            if (p->id == r->cfg.id) continue;
            p->catch_up = r->last;
            send_append(r, p, false);
        }
        raft_bcast_heartbeat(r);
    }
    if (++r->elapsed >= r->cfg.election_tick) {
        r->elapsed = 0;
        if (r->cfg.check_quorum) {
            /* CheckQuorum: a leader cut off from a majority steps down. */
            size_t active = 0;
            for (size_t i = 0; i < r->n; i++) {
                active += r->pr[i].id == r->cfg.id || r->pr[i].recent_active;
                r->pr[i].recent_active = false;
            }
            if (active < raft_quorum(r)) become_follower(r, r->term, 0);
        }
    }
}

int raft_propose(raft *r, const void *data, size_t len, uint64_t *index)
{
    return raft_propose_entry(r, RAFT_ENTRY_NORMAL, data, len, index);
}

int raft_propose_entry(raft *r, uint8_t type, const void *data, size_t len, uint64_t *index)
{
    if (r->role != RAFT_LEADER) return DSYNC_ENOTLEADER;
    int rc = append_local(r, r->term, type, data, len);
    if (rc != 0) return rc;
    if (index) *index = r->last;
    /* Sent at the next ready: every proposal of a loop turn travels in one
     * append per follower (batching). */
    r->bcast_entries = true;
    return 0;
}

/* ---- ready / advance ------------------------------------------------------- */

/* The leader's deferred broadcast: new entries, a new commit index. */
static void flush_bcast(raft *r)
{
    if (r->role == RAFT_LEADER && (r->bcast_entries || r->bcast_commit))
        bcast_append(r, r->bcast_commit);
    r->bcast_entries = r->bcast_commit = false;
}

bool raft_has_ready(const raft *r)
{
    if (r->conf_changed) return true;
    if (r->role == RAFT_LEADER && (r->bcast_entries || r->bcast_commit)) return true;
    return r->n_out > 0 || r->n_reads > 0 || r->snap_unsaved || r->unstable_from <= r->last ||
           r->commit > r->applied || r->saved_hs.term != r->term || r->saved_hs.vote != r->vote ||
           r->saved_hs.commit != r->commit;
}

void raft_ready_get(raft *r, raft_ready *rd)
{
    flush_bcast(r);
    memset(rd, 0, sizeof *rd);
    rd->hard_state = (raft_hard_state){r->term, r->vote, r->commit};
    rd->hard_state_changed = memcmp(&rd->hard_state, &r->saved_hs, sizeof rd->hard_state) != 0;
    if (r->snap_unsaved) {
        rd->has_snapshot = true;
        rd->snapshot = (raft_snapshot){r->snap_index, r->snap_term, r->snap_data,
                                       r->snap_len,   r->base_conf, r->base_conf_len};
    }
    if (r->conf_changed) {
        rd->conf_changed = true;
        rd->conf = r->conf;
        rd->conf_len = r->conf_len;
    }
    if (r->unstable_from <= r->last) {
        rd->entries = raft_entry_at(r, r->unstable_from);
        rd->n_entries = (size_t)(r->last - r->unstable_from + 1);
        rd->unhurried = r->role == RAFT_FOLLOWER && !r->hurried;
    }
    rd->msgs = r->out;
    rd->n_msgs = r->n_out;
    /* Committed means durable on a majority, so an entry may be applied
     * here before this node's own copy is on disk (its write may still be
     * out, raft_advance_unsynced): a crash loses nothing committed, and a
     * restarted node learns the entry again from the leader. So a leader
     * whose own disk is slow answers once two followers have the entry. */
    if (r->commit > r->applied) {
        rd->committed = raft_entry_at(r, r->applied + 1);
        rd->n_committed = (size_t)(r->commit - r->applied);
    }
    rd->reads = r->reads;
    rd->n_reads = r->n_reads;
    rd->role = r->role;
    rd->leader = r->leader;
    rd->term = r->term;
}

/* The leader's own vote toward commit is what it has persisted. */
static void count_self(raft *r)
{
    if (r->role != RAFT_LEADER) return;
    progress *self = find_pr(r, r->cfg.id);
    if (self) self->match = r->stable;
    if (maybe_commit(r)) leader_committed(r);
}

static void advance(raft *r, raft_ready *rd, bool synced)
{
    r->saved_hs = rd->hard_state;
    if (rd->has_snapshot) r->snap_unsaved = false;
    if (rd->n_entries) {
        uint64_t last = rd->entries[rd->n_entries - 1].index;
        if (synced) r->stable = last;
        r->unstable_from = last + 1;
        r->hurried = false;
    }
    if (rd->n_committed) r->applied = rd->committed[rd->n_committed - 1].index;
    for (size_t i = 0; i < rd->n_msgs; i++)
        raft_msg_free_entries(&rd->msgs[i]);
    r->n_out = 0;
    r->n_reads = 0;
    if (rd->conf_changed) r->conf_changed = false;
    if (synced) count_self(r);
}

void raft_advance(raft *r, raft_ready *rd)
{
    advance(r, rd, true);
}

void raft_advance_unsynced(raft *r, raft_ready *rd)
{
    advance(r, rd, false);
}

void raft_synced(raft *r, uint64_t index, uint64_t term)
{
    /* Only if the entry there is still the one that was written: a tail
     * truncated since (this node lost its leadership) stays unstable until
     * the write of its replacement says otherwise. Writes complete in the
     * order they were handed over, so everything before it is durable too. */
    if (index <= r->stable || index > r->last || raft_term_at(r, index) != term) return;
    r->stable = index;
    count_self(r);
}

/* ---- lifecycle and accessors ---------------------------------------------- */

raft *raft_new(const raft_config *cfg)
{
    if (cfg->id == 0 || cfg->election_tick < 2 || cfg->heartbeat_tick == 0 ||
        cfg->heartbeat_tick >= cfg->election_tick || cfg->max_inflight == 0 ||
        cfg->max_msg_entries == 0)
        return NULL;
    raft *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->cfg = *cfg;
    r->waiting = true; /* until raft_set_waiting says otherwise */
    r->cfg.members = NULL;
    r->cfg.entries = NULL;
    r->cfg.snapshot = NULL;
    r->cfg.snapshot_conf = NULL;
    r->rng = cfg->seed ^ ut_mix64(cfg->id);
    /* The configuration: the snapshot's, else the first one. */
    ut_buf first;
    ut_buf_init(&first);
    int rc = cfg->snapshot_conf ? raft_set_base_conf(r, cfg->snapshot_conf, cfg->snapshot_conf_len)
             : raft_conf_encode(cfg->members, cfg->n_members, &first) == 0
                 ? raft_set_base_conf(r, first.data, first.len)
                 : DSYNC_EINVAL;
    ut_buf_free(&first);
    if (rc != 0 || raft_set_conf(r, r->base_conf, r->base_conf_len) != 0) {
        raft_free(r);
        return NULL;
    }
    if (cfg->snapshot_index) {
        if (cfg->snapshot_term == 0 || cfg->applied < cfg->snapshot_index ||
            (cfg->snapshot_len && !(r->snap_data = malloc(cfg->snapshot_len)))) {
            raft_free(r);
            return NULL;
        }
        if (cfg->snapshot_len) memcpy(r->snap_data, cfg->snapshot, cfg->snapshot_len);
        r->snap_len = cfg->snapshot_len;
        r->snap_index = r->last = cfg->snapshot_index;
        r->snap_term = cfg->snapshot_term;
    }
    /* Entries bring their configurations with them (append_local). */
    for (size_t i = 0; i < cfg->n_entries; i++) {
        if (cfg->entries[i].index != cfg->snapshot_index + i + 1 ||
            append_local(r, cfg->entries[i].term, cfg->entries[i].type, cfg->entries[i].data,
                         cfg->entries[i].len) != 0) {
            raft_free(r);
            return NULL;
        }
    }
    r->promotable = !cfg->join || r->last > 0;
    uint64_t commit =
        cfg->hard_state.commit > cfg->snapshot_index ? cfg->hard_state.commit : cfg->snapshot_index;
    if (commit > r->last || cfg->applied > commit) {
        raft_free(r);
        return NULL;
    }
    r->stable = r->last;
    r->unstable_from = r->last + 1;
    r->term = cfg->hard_state.term;
    r->vote = cfg->hard_state.vote;
    /* The snapshot holds only committed entries, whatever the hard state
     * last said. */
    r->commit = commit;
    r->applied = cfg->applied;
    r->saved_hs = cfg->hard_state;
    r->role = RAFT_FOLLOWER;
    reset_timeout(r);
    return r;
}

void raft_free(raft *r)
{
    if (!r) return;
    for (uint64_t i = r->snap_index + 1; i <= r->last; i++)
        free(raft_entry_at(r, i)->data);
    free(r->log);
    free(r->snap_data);
    free(r->conf);
    free(r->base_conf);
    for (size_t i = 0; i < r->n_out; i++)
        raft_msg_free_entries(&r->out[i]);
    free(r->out);
    free(r->pending);
    free(r->reads);
    free(r);
}

raft_role raft_get_role(const raft *r)
{
    return r->role;
}

uint64_t raft_leader(const raft *r)
{
    return r->leader;
}

uint64_t raft_term(const raft *r)
{
    return r->term;
}

uint64_t raft_stable_index(const raft *r)
{
    return r->stable;
}

uint64_t raft_commit_index(const raft *r)
{
    return r->commit;
}

uint64_t raft_last_index(const raft *r)
{
    return r->last;
}

uint64_t raft_match_index(const raft *r, uint64_t id)
{
    if (r->role != RAFT_LEADER) return 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->pr[i].id == id) return id == r->cfg.id ? r->stable : r->pr[i].match;
    return 0;
}

const char *raft_role_name(raft_role role)
{
    static const char *const names[] = {"follower", "precandidate", "candidate", "leader"};
    return role <= RAFT_LEADER ? names[role] : "unknown";
}
