/*
 * codec.c: the cache messages' wire form (layout in cache.h). A peer may
 * send anything: decode checks every field against what its type allows
 * before the core sees it, and encode refuses what decode would refuse, so
 * a bug on the sending side shows up there and not at the peer.
 */
#include "cache_internal.h"

#define HEADER_BYTES (6 + 8 * 7 + 2)

/* Which fields each type may carry. */
static bool valid_fields(const cc_msg *m)
{
    if (m->type < CC_MSG_GETS || m->type >= CC_MSG_MAX_) return false;
    if (m->from == 0 || m->to == 0) return false;
    if (m->flags & ~(CC_F_VALUE | CC_F_DIRTY)) return false;
    if ((m->flags & CC_F_DIRTY) && !(m->flags & CC_F_VALUE)) return false;
    if (!(m->flags & CC_F_VALUE) && m->len != 0) return false;
    if (m->len > CC_VALUE_MAX) return false;
    if (m->key_len == 0 || m->key_len > CC_KEY_MAX || !m->key) return false;
    if (memchr(m->key, '\0', m->key_len)) return false;
    if (m->len && !m->value) return false;
    if (m->state > CC_M) return false;
    bool inv = m->type == CC_MSG_INV;
    if (inv ? (m->mode != CC_INV_DOWNGRADE && m->mode != CC_INV_INVALIDATE) : m->mode != 0)
        return false;
    if (inv ? m->reason >= CC_REASON_MAX_ : m->reason != 0) return false;
    bool value = m->flags & CC_F_VALUE;
    switch (m->type) {
    case CC_MSG_GETS:
    case CC_MSG_NACK:
    case CC_MSG_PUTBACK_ACK:
    case CC_MSG_INV:
    case CC_MSG_SAVED:
        return !value && m->state == CC_I;
    case CC_MSG_GETM:
        return !(m->flags & CC_F_DIRTY) && m->state == CC_I;
    case CC_MSG_WT:
        return value && !(m->flags & CC_F_DIRTY) && m->state == CC_I;
    case CC_MSG_PUTBACK:
        return value && (m->flags & CC_F_DIRTY) && m->state == CC_I;
    case CC_MSG_WT_ACK:
        return !value && m->state == CC_M;
    case CC_MSG_GRANT:
        /* S/E carry the value, M and I (absent) carry none. */
        return (m->state == CC_S || m->state == CC_E) ? value && !(m->flags & CC_F_DIRTY) : !value;
    case CC_MSG_INV_ACK:
        /* What stays behind is S (a downgrade) or I; dirty needs a value. */
        return m->state == CC_I || m->state == CC_S;
    default:
        return false;
    }
}

int cc_msg_encode(const cc_msg *m, ut_buf *b)
{
    if (!valid_fields(m)) return DSYNC_EINVAL;
    size_t start = b->len;
    unsigned char h[6] = {CC_WIRE_VERSION, (unsigned char)m->type, m->state, m->mode, m->reason,
                          m->flags};
    ut_buf_append(b, h, sizeof h);
    ut_buf_put_le(b, m->from, 8);
    ut_buf_put_le(b, m->to, 8);
    ut_buf_put_le(b, m->epoch, 8);
    ut_buf_put_le(b, m->rid, 8);
    ut_buf_put_le(b, m->hid, 8);
    ut_buf_put_le(b, m->version.epoch, 8);
    ut_buf_put_le(b, m->version.seq, 8);
    ut_buf_put_le(b, m->key_len, 2);
    ut_buf_append(b, m->key, m->key_len);
    ut_buf_put_le(b, m->len, 4);
    if (m->len) ut_buf_append(b, m->value, m->len);
    if (b->oom) {
        b->len = start;
        return DSYNC_ENOMEM;
    }
    return 0;
}

int cc_msg_decode(const void *data, size_t len, cc_msg *out)
{
    memset(out, 0, sizeof *out);
    if (!data || len < HEADER_BYTES) return DSYNC_ECORRUPT;
    ut_reader r = {data, len, false};
    if (ut_read_le(&r, 1) != CC_WIRE_VERSION) return DSYNC_ECORRUPT;
    out->type = (cc_msg_type)ut_read_le(&r, 1);
    out->state = (uint8_t)ut_read_le(&r, 1);
    out->mode = (uint8_t)ut_read_le(&r, 1);
    out->reason = (uint8_t)ut_read_le(&r, 1);
    out->flags = (uint8_t)ut_read_le(&r, 1);
    out->from = ut_read_le(&r, 8);
    out->to = ut_read_le(&r, 8);
    out->epoch = ut_read_le(&r, 8);
    out->rid = ut_read_le(&r, 8);
    out->hid = ut_read_le(&r, 8);
    out->version.epoch = ut_read_le(&r, 8);
    out->version.seq = ut_read_le(&r, 8);
    out->key_len = (size_t)ut_read_le(&r, 2);
    if (r.bad || out->key_len > r.left) return DSYNC_ECORRUPT;
    out->key = (const char *)r.p;
    r.p += out->key_len;
    r.left -= out->key_len;
    out->len = (size_t)ut_read_le(&r, 4);
    if (r.bad || out->len != r.left) return DSYNC_ECORRUPT;
    out->value = out->len ? r.p : NULL;
    if (!valid_fields(out)) {
        memset(out, 0, sizeof *out);
        return DSYNC_ECORRUPT;
    }
    return 0;
}
