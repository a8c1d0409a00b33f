/*
 * codec.c: Raft messages on the wire.
 *
 * u8 version | u8 type | u64 from, to, term, log_term, index, commit,
 * reject_hint, context | u8 reject | u32 n_entries | entries: u64 index, u64 term,
 * u8 type, u32 length, bytes | u32 snapshot length, bytes | u32 configuration
 * length, bytes (the last two only in a snapshot message). Little-endian. Decoding checks every
 * length against what is left and refuses trailing bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "dsync/errors.h"
#include "raft.h"

#define RAFT_WIRE_VERSION 2
#define RAFT_MAX_ENTRIES_PER_MSG 65536

int raft_msg_encode(const raft_msg *m, ut_buf *b)
{
    ut_buf_put_le(b, RAFT_WIRE_VERSION, 1);
    ut_buf_put_le(b, (uint64_t)m->type, 1);
    ut_buf_put_le(b, m->from, 8);
    ut_buf_put_le(b, m->to, 8);
    ut_buf_put_le(b, m->term, 8);
    ut_buf_put_le(b, m->log_term, 8);
    ut_buf_put_le(b, m->index, 8);
    ut_buf_put_le(b, m->commit, 8);
    ut_buf_put_le(b, m->reject_hint, 8);
    ut_buf_put_le(b, m->context, 8);
    ut_buf_put_le(b, m->reject ? 1 : 0, 1);
    ut_buf_put_le(b, m->n_entries, 4);
    for (size_t i = 0; i < m->n_entries; i++) {
        const raft_entry *e = &m->entries[i];
        ut_buf_put_le(b, e->index, 8);
        ut_buf_put_le(b, e->term, 8);
        ut_buf_put_le(b, e->type, 1);
        ut_buf_put_le(b, e->len, 4);
        ut_buf_append(b, e->data, e->len);
    }
    ut_buf_put_le(b, m->snapshot_len, 4);
    ut_buf_append(b, m->snapshot, m->snapshot_len);
    ut_buf_put_le(b, m->conf_len, 4);
    ut_buf_append(b, m->conf, m->conf_len);
    return b->oom ? DSYNC_ENOMEM : 0;
}

void raft_msg_free_entries(raft_msg *m)
{
    for (size_t i = 0; i < m->n_entries; i++)
        free(m->entries[i].data);
    free(m->entries);
    free(m->snapshot);
    free(m->conf);
    m->entries = NULL;
    m->snapshot = NULL;
    m->conf = NULL;
    m->n_entries = m->snapshot_len = m->conf_len = 0;
}

/* A u32 length and that many bytes, copied out; an empty one is NULL. */
static int read_blob(ut_reader *r, bool allowed, void **out, size_t *out_len)
{
    size_t len = (size_t)ut_read_le(r, 4);
    if (r->bad || len > r->left || (len && !allowed)) return DSYNC_ECORRUPT;
    if (!len) return 0;
    if (!(*out = malloc(len))) return DSYNC_ENOMEM;
    memcpy(*out, r->p, len);
    *out_len = len;
    r->p += len;
    r->left -= len;
    return 0;
}

int raft_msg_decode(const void *data, size_t len, raft_msg *m)
{
    ut_reader r = {data, len, false};
    memset(m, 0, sizeof *m);
    if (ut_read_le(&r, 1) != RAFT_WIRE_VERSION) return DSYNC_ECORRUPT;
    uint64_t type = ut_read_le(&r, 1);
    m->type = (raft_msg_type)type;
    m->from = ut_read_le(&r, 8);
    m->to = ut_read_le(&r, 8);
    m->term = ut_read_le(&r, 8);
    m->log_term = ut_read_le(&r, 8);
    m->index = ut_read_le(&r, 8);
    m->commit = ut_read_le(&r, 8);
    m->reject_hint = ut_read_le(&r, 8);
    m->context = ut_read_le(&r, 8);
    uint64_t reject = ut_read_le(&r, 1);
    uint64_t n = ut_read_le(&r, 4);
    /* Each entry takes at least 21 bytes: a count beyond that is a lie. */
    if (r.bad || type < RAFT_MSG_VOTE || type >= RAFT_MSG_MAX_ || reject > 1 ||
        n > RAFT_MAX_ENTRIES_PER_MSG || n > r.left / 21)
        return DSYNC_ECORRUPT;
    m->reject = reject == 1;
    if (n) {
        m->entries = calloc((size_t)n, sizeof *m->entries);
        if (!m->entries) return DSYNC_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        raft_entry *e = &m->entries[i];
        e->index = ut_read_le(&r, 8);
        e->term = ut_read_le(&r, 8);
        e->type = (uint8_t)ut_read_le(&r, 1);
        e->len = (size_t)ut_read_le(&r, 4);
        m->n_entries = i + 1;
        if (r.bad || e->len > r.left ||
            (e->type != RAFT_ENTRY_NORMAL && e->type != RAFT_ENTRY_NOOP &&
             e->type != RAFT_ENTRY_CONF)) {
            raft_msg_free_entries(m);
            return DSYNC_ECORRUPT;
        }
        if (e->len) {
            e->data = malloc(e->len);
            if (!e->data) {
                raft_msg_free_entries(m);
                return DSYNC_ENOMEM;
            }
            memcpy(e->data, r.p, e->len);
            r.p += e->len;
            r.left -= e->len;
        }
    }
    /* The snapshot and its configuration: only a snapshot has them. */
    int rc = read_blob(&r, m->type == RAFT_MSG_SNAPSHOT, &m->snapshot, &m->snapshot_len);
    if (rc == 0) rc = read_blob(&r, m->type == RAFT_MSG_SNAPSHOT, &m->conf, &m->conf_len);
    if (rc != 0) {
        raft_msg_free_entries(m);
        return rc;
    }
    if (r.bad || r.left != 0) {
        raft_msg_free_entries(m);
        return DSYNC_ECORRUPT;
    }
    return 0;
}
