/*
 * fsm.c: encode, decode and apply replicated lock commands.
 */
#include <string.h>

#include "fsm.h"

int fsm_encode(const fsm_cmd *c, ut_buf *b)
{
    ut_buf_put_le(b, FSM_VERSION, 1);
    ut_buf_put_le(b, (uint64_t)c->op, 1);
    ut_buf_put_le(b, c->origin, 8);
    ut_buf_put_le(b, c->seq, 8);
    ut_buf_put_le(b, c->now_ms, 8);
    switch (c->op) {
    case FSM_ACQUIRE:
        ut_buf_put_le(b, (uint64_t)c->mode, 1);
        ut_buf_put_le(b, c->ttl_ms, 8);
        ut_buf_put_le(b, c->wait_ms, 8);
        ut_buf_put_str16(b, c->key);
        ut_buf_put_str16(b, c->client_id);
        break;
    case FSM_RELEASE:
        ut_buf_put_str16(b, c->key);
        ut_buf_put_str16(b, c->client_id);
        break;
    case FSM_EXPIRE:
        break;
    }
    return b->oom ? DSYNC_ENOMEM : 0;
}

int fsm_decode(const void *data, size_t len, fsm_cmd *c)
{
    ut_reader r = {data, len, false};
    memset(c, 0, sizeof *c);
    if ((uint8_t)ut_read_le(&r, 1) != FSM_VERSION) return DSYNC_ECORRUPT;
    c->op = (fsm_op)(uint8_t)ut_read_le(&r, 1);
    c->origin = ut_read_le(&r, 8);
    c->seq = ut_read_le(&r, 8);
    c->now_ms = ut_read_le(&r, 8);
    switch (c->op) {
    case FSM_ACQUIRE:
        c->mode = (dsync_lock_mode)(uint8_t)ut_read_le(&r, 1);
        c->ttl_ms = ut_read_le(&r, 8);
        c->wait_ms = ut_read_le(&r, 8);
        ut_read_str16(&r, c->key, DSYNC_LOCK_KEY_MAX);
        ut_read_str16(&r, c->client_id, DSYNC_CLIENT_ID_MAX);
        if (c->mode != DSYNC_LOCK_SHARED && c->mode != DSYNC_LOCK_EXCLUSIVE) return DSYNC_ECORRUPT;
        break;
    case FSM_RELEASE:
        ut_read_str16(&r, c->key, DSYNC_LOCK_KEY_MAX);
        ut_read_str16(&r, c->client_id, DSYNC_CLIENT_ID_MAX);
        break;
    case FSM_EXPIRE:
        break;
    default:
        return DSYNC_ECORRUPT;
    }
    return r.bad || r.left != 0 ? DSYNC_ECORRUPT : 0;
}

int fsm_init(fsm *f)
{
    memset(f, 0, sizeof *f);
    f->locks = lk_table_new();
    return f->locks ? 0 : DSYNC_ENOMEM;
}

void fsm_close(fsm *f)
{
    lk_table_free(f->locks);
    f->locks = NULL;
}

void fsm_apply(fsm *f, const fsm_cmd *c, fsm_result *res)
{
    memset(res, 0, sizeof *res);
    /* Leaders' clocks differ a little; the table's time only moves on. */
    if (c->now_ms > f->clock_ms) f->clock_ms = c->now_ms;
    uint64_t now = f->clock_ms;
    switch (c->op) {
    case FSM_ACQUIRE: {
        lk_request req = {c->key, c->client_id, c->mode, c->ttl_ms, c->wait_ms, now};
        res->rc = lk_acquire(f->locks, &req, &res->lock);
        return;
    }
    case FSM_RELEASE:
        res->rc = lk_release(f->locks, c->key, c->client_id, now, &res->was_waiting);
        return;
    case FSM_EXPIRE:
        lk_expire(f->locks, now);
        res->rc = 0;
        return;
    }
    res->rc = DSYNC_EINVAL;
}

int fsm_snapshot(const fsm *f, ut_buf *b)
{
    ut_buf_put_le(b, FSM_VERSION, 1);
    ut_buf_put_le(b, f->clock_ms, 8);
    if (b->oom) return DSYNC_ENOMEM;
    return lk_table_snapshot(f->locks, b);
}

int fsm_restore(fsm *f, const void *data, size_t len)
{
    ut_reader r = {data, len, false};
    if ((uint8_t)ut_read_le(&r, 1) != FSM_VERSION) return DSYNC_ECORRUPT;
    uint64_t clock = ut_read_le(&r, 8);
    if (r.bad) return DSYNC_ECORRUPT;
    int rc = lk_table_restore(f->locks, r.p, r.left);
    if (rc == 0) f->clock_ms = clock;
    return rc;
}
