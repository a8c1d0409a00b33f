/*
 * conf.c: membership changes one server at a time (Ongaro's thesis §4.1).
 *
 * A configuration is an entry in the log. Every node switches to a new
 * configuration as soon as the entry is in its log, committed or not, and
 * back to the previous one if that entry is cut off as a conflicting tail.
 * Adding or removing a single server keeps any majority of the old
 * configuration overlapping any majority of the new one, so two leaders
 * can never be elected in one term across a change; the leader allows one
 * change at a time, and only once it has committed an entry of its own
 * term (otherwise a change proposed by a deposed leader could commit
 * alongside another one: the bug found in §4.1's original rule).
 */
#include <stdlib.h>
#include <string.h>

#include "dsync/errors.h"
#include "raft_internal.h"

int raft_conf_encode(const raft_member *members, size_t n, ut_buf *b)
{
    if (n == 0 || n > RAFT_MAX_NODES) return DSYNC_EINVAL;
    ut_buf_put_le(b, n, 4);
    for (size_t i = 0; i < n; i++) {
        size_t alen = strnlen(members[i].addr, RAFT_ADDR_MAX);
        if (members[i].id == 0 || alen == RAFT_ADDR_MAX) return DSYNC_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (members[j].id == members[i].id) return DSYNC_EINVAL;
        ut_buf_put_le(b, members[i].id, 8);
        ut_buf_put_le(b, alen, 2);
        ut_buf_append(b, members[i].addr, alen);
    }
    return b->oom ? DSYNC_ENOMEM : 0;
}

int raft_conf_decode(const void *data, size_t len, raft_member *out, size_t max, size_t *n)
{
    ut_reader rd = {data, len, false};
    uint64_t count = ut_read_le(&rd, 4);
    if (rd.bad || count == 0 || count > RAFT_MAX_NODES || count > max) return DSYNC_ECORRUPT;
    for (size_t i = 0; i < count; i++) {
        out[i].id = ut_read_le(&rd, 8);
        size_t alen = (size_t)ut_read_le(&rd, 2);
        if (rd.bad || out[i].id == 0 || alen >= RAFT_ADDR_MAX || alen > rd.left)
            return DSYNC_ECORRUPT;
        memcpy(out[i].addr, rd.p, alen);
        out[i].addr[alen] = '\0';
        if (memchr(out[i].addr, '\0', alen)) return DSYNC_ECORRUPT;
        rd.p += alen;
        rd.left -= alen;
        for (size_t j = 0; j < i; j++)
            if (out[j].id == out[i].id) return DSYNC_ECORRUPT;
    }
    if (rd.left != 0) return DSYNC_ECORRUPT;
    *n = (size_t)count;
    return 0;
}

void *raft_dup(const void *data, size_t len)
{
    void *c = malloc(len ? len : 1);
    if (c && len) memcpy(c, data, len);
    return c;
}

bool raft_is_member(const raft *r, uint64_t id)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->pr[i].id == id) return true;
    return false;
}

int raft_set_conf(raft *r, const void *conf, size_t len)
{
    raft_member m[RAFT_MAX_NODES];
    size_t n;
    if (raft_conf_decode(conf, len, m, RAFT_MAX_NODES, &n) != 0) return DSYNC_ECORRUPT;
    void *copy = raft_dup(conf, len);
    if (!copy) return DSYNC_ENOMEM;
    progress pr[RAFT_MAX_NODES];
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < r->n && r->pr[k].id != m[i].id)
            k++;
        if (k < r->n) {
            pr[i] = r->pr[k];
        } else {
            /* A newcomer: probe from the end of our log; it counts as
             * active so CheckQuorum gives it an election timeout to answer. */
            pr[i] = (progress){.id = m[i].id, .next = r->last + 1, .recent_active = true};
        }
    }
    memcpy(r->pr, pr, n * sizeof pr[0]);
    for (size_t i = 0; i < n; i++)
        r->voters[i] = m[i].id;
    r->n = n;
    free(r->conf);
    r->conf = copy;
    r->conf_len = len;
    r->conf_changed = true;
    return 0;
}

int raft_set_base_conf(raft *r, const void *conf, size_t len)
{
    void *copy = raft_dup(conf, len);
    if (!copy) return DSYNC_ENOMEM;
    free(r->base_conf);
    r->base_conf = copy;
    r->base_conf_len = len;
    return 0;
}

/* The latest configuration entry at or before index still in the log. */
static const raft_entry *conf_entry_at(const raft *r, uint64_t index)
{
    for (uint64_t i = index; i > r->snap_index; i--) {
        const raft_entry *e = raft_entry_at(r, i);
        if (e->type == RAFT_ENTRY_CONF) return e;
    }
    return NULL;
}

void raft_recompute_conf(raft *r)
{
    const raft_entry *e = conf_entry_at(r, r->last);
    r->conf_index = e ? e->index : 0;
    /* Both were valid when they became current: this cannot fail to
     * decode, only to allocate, and then the old configuration stays. */
    if (e)
        raft_set_conf(r, e->data, e->len);
    else
        raft_set_conf(r, r->base_conf, r->base_conf_len);
}

int raft_conf_at(const raft *r, uint64_t index, const void **conf, size_t *len)
{
    if (index < r->snap_index || index > r->last) return DSYNC_EINVAL;
    const raft_entry *e = conf_entry_at(r, index);
    *conf = e ? e->data : r->base_conf;
    *len = e ? e->len : r->base_conf_len;
    return 0;
}

size_t raft_members(const raft *r, raft_member *out, size_t max)
{
    size_t n = 0;
    if (raft_conf_decode(r->conf, r->conf_len, out, max, &n) != 0) return r->n;
    return n;
}

int raft_propose_conf(raft *r, bool add, const raft_member *member, uint64_t *index)
{
    if (r->role != RAFT_LEADER) return DSYNC_ENOTLEADER;
    if (raft_term_at(r, r->commit) != r->term || r->conf_index > r->commit)
        return DSYNC_EUNAVAILABLE;
    raft_member m[RAFT_MAX_NODES];
    size_t n;
    if (raft_conf_decode(r->conf, r->conf_len, m, RAFT_MAX_NODES, &n) != 0) return DSYNC_EINVAL;
    size_t at = 0;
    while (at < n && m[at].id != member->id)
        at++;
    if (add) {
        if (at < n) return DSYNC_EEXIST;
        if (n == RAFT_MAX_NODES) return DSYNC_EINVAL;
        m[n++] = *member;
    } else {
        if (at == n) return DSYNC_ENOTFOUND;
        if (n == 1) return DSYNC_EINVAL;
        m[at] = m[--n];
    }
    ut_buf b;
    ut_buf_init(&b);
    int rc = raft_conf_encode(m, n, &b);
    if (rc == 0) rc = raft_propose_entry(r, RAFT_ENTRY_CONF, b.data, b.len, index);
    ut_buf_free(&b);
    return rc;
}
