/*
 * snapshot.c: log compaction and InstallSnapshot (Raft paper §7).
 *
 * The node snapshots its state machine now and then and tells Raft, which
 * drops the log up to that index and keeps the image. A follower that
 * needs an entry the leader no longer has gets the image instead, in one
 * message; it replaces its state machine and log with it, unless its own
 * log already holds the snapshot's last entry, in which case that entry
 * and everything before it are committed and nothing is replaced.
 */
#include <stdlib.h>
#include <string.h>

#include "dsync/errors.h"
#include "raft_internal.h"

/* Drops the log up to and including index (at most last). */
static void drop_prefix(raft *r, uint64_t index)
{
    uint64_t keep_from = index + 1;
    for (uint64_t i = r->snap_index + 1; i < keep_from && i <= r->last; i++)
        free(raft_entry_at(r, i)->data);
    size_t kept = keep_from <= r->last ? (size_t)(r->last - index) : 0;
    if (kept) memmove(r->log, raft_entry_at(r, keep_from), kept * sizeof *r->log);
}

/* Installs image and configuration together, or neither. */
static int set_snapshot(raft *r, const void *data, size_t len, const void *conf, size_t conf_len)
{
    void *image = raft_dup(data, len), *cc = raft_dup(conf, conf_len);
    if (!image || !cc) {
        free(image);
        free(cc);
        return DSYNC_ENOMEM;
    }
    free(r->snap_data);
    r->snap_data = image;
    r->snap_len = len;
    free(r->base_conf);
    r->base_conf = cc;
    r->base_conf_len = conf_len;
    return 0;
}

int raft_compact(raft *r, uint64_t index, const void *data, size_t len)
{
    if (index <= r->snap_index || index > r->applied) return DSYNC_EINVAL;
    /* The snapshot records the configuration as of its index. */
    const void *conf;
    size_t conf_len;
    int rc = raft_conf_at(r, index, &conf, &conf_len);
    if (rc == 0) rc = set_snapshot(r, data, len, conf, conf_len);
    if (rc != 0) return rc;
    if (r->conf_index <= index) r->conf_index = 0;
    uint64_t term = raft_term_at(r, index);
    raft_catch_up_to(r, index);
    drop_prefix(r, index);
    r->snap_index = index;
    r->snap_term = term;
    return 0;
}

uint64_t raft_snapshot_index(const raft *r)
{
    return r->snap_index;
}

void raft_send_snapshot(raft *r, progress *p)
{
    void *copy = raft_dup(r->snap_data, r->snap_len);
    void *conf = raft_dup(r->base_conf, r->base_conf_len);
    if (!copy || !conf) {
        free(copy);
        free(conf);
        return; /* the next heartbeat tries again */
    }
    raft_send(r, (raft_msg){.type = RAFT_MSG_SNAPSHOT,
                            .to = p->id,
                            .index = r->snap_index,
                            .log_term = r->snap_term,
                            .commit = r->commit,
                            .snapshot = copy,
                            .snapshot_len = r->snap_len,
                            .conf = conf,
                            .conf_len = r->base_conf_len});
    p->state = PR_SNAPSHOT;
    p->pending_snapshot = r->snap_index;
    p->snapshot_wait = 0;
    p->inflight = 0;
    p->probe_sent = false;
}

void raft_handle_snapshot(raft *r, const raft_msg *m)
{
    raft_msg resp = {.type = RAFT_MSG_APPEND_RESP, .to = m->from};
    if (m->index <= r->commit) {
        /* Old news: say how far we are. */
        resp.index = r->commit;
        raft_send(r, resp);
        return;
    }
    if (raft_term_at(r, m->index) == m->log_term) {
        /* Our log has the snapshot's last entry, so by Log Matching it has
         * everything the snapshot covers: commit it and keep the log. */
        r->commit = m->index;
        resp.index = m->index;
        raft_send(r, resp);
        return;
    }
    if (set_snapshot(r, m->snapshot, m->snapshot_len, m->conf, m->conf_len) != 0)
        return; /* the leader resends */
    /* Nothing in our log can be trusted past a conflict with a committed
     * entry: discard it all and start after the snapshot. */
    drop_prefix(r, r->last);
    r->snap_index = r->last = m->index;
    r->snap_term = m->log_term;
    r->commit = r->applied = r->stable = m->index;
    r->unstable_from = m->index + 1;
    r->snap_unsaved = true;
    r->promotable = true;
    r->conf_index = 0;
    raft_recompute_conf(r); /* the snapshot's configuration */
    resp.index = m->index;
    raft_send(r, resp);
}
