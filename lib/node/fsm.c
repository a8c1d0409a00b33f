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
    case FSM_VIEW:
        ut_buf_put_le(b, c->n_live, 1);
        for (size_t i = 0; i < c->n_live; i++)
            ut_buf_put_le(b, c->live[i], 8);
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
    case FSM_VIEW:
        c->n_live = (size_t)ut_read_le(&r, 1);
        if (c->n_live > FSM_VIEW_MAX) return DSYNC_ECORRUPT;
        for (size_t i = 0; i < c->n_live; i++) {
            c->live[i] = ut_read_le(&r, 8);
            if (c->live[i] == 0 || (i && c->live[i] <= c->live[i - 1])) return DSYNC_ECORRUPT;
        }
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
    case FSM_VIEW:
        break; /* fsm_apply_view: it needs the entry's index */
    }
    res->rc = DSYNC_EINVAL;
}

void fsm_apply_view(fsm *f, uint64_t index, const fsm_cmd *c)
{
    if (c->now_ms > f->clock_ms) f->clock_ms = c->now_ms;
    f->view_index = index;
    uint64_t clock = c->now_ms < UINT64_MAX / 1024 ? c->now_ms * 1024 : UINT64_MAX / 2;
    f->view_epoch = clock > f->view_epoch ? clock : f->view_epoch + 1;
    f->n_live = c->n_live;
    memcpy(f->live, c->live, c->n_live * sizeof *f->live);
}

bool fsm_view_has(const fsm *f, uint64_t id)
{
    for (size_t i = 0; i < f->n_live; i++)
        if (f->live[i] == id) return true;
    return false;
}

bool fsm_view_equals(const fsm *f, const uint64_t *ids, size_t n)
{
    if (n != f->n_live) return false;
    for (size_t i = 0; i < n; i++)
        if (!fsm_view_has(f, ids[i])) return false;
    return true;
}

/* Snapshot, little-endian: u8 version | u64 clock | [version 2: u64
 * view_index | u64 view_epoch | u8 n | n x u64 id] | lock table. Version 1
 * (no view) is still read. */
#define FSM_SNAP_VERSION 2

int fsm_snapshot(const fsm *f, ut_buf *b)
{
    ut_buf_put_le(b, FSM_SNAP_VERSION, 1);
    ut_buf_put_le(b, f->clock_ms, 8);
    ut_buf_put_le(b, f->view_index, 8);
    ut_buf_put_le(b, f->view_epoch, 8);
    ut_buf_put_le(b, f->n_live, 1);
    for (size_t i = 0; i < f->n_live; i++)
        ut_buf_put_le(b, f->live[i], 8);
    if (b->oom) return DSYNC_ENOMEM;
    return lk_table_snapshot(f->locks, b);
}

int fsm_restore(fsm *f, const void *data, size_t len)
{
    ut_reader r = {data, len, false};
    unsigned version = (unsigned)ut_read_le(&r, 1);
    if (version != 1 && version != FSM_SNAP_VERSION) return DSYNC_ECORRUPT;
    uint64_t clock = ut_read_le(&r, 8), view_index = 0, view_epoch = 0, live[FSM_VIEW_MAX];
    size_t n_live = 0;
    if (version >= 2) {
        view_index = ut_read_le(&r, 8);
        view_epoch = ut_read_le(&r, 8);
        n_live = (size_t)ut_read_le(&r, 1);
        if (n_live > FSM_VIEW_MAX) return DSYNC_ECORRUPT;
        for (size_t i = 0; i < n_live; i++) {
            live[i] = ut_read_le(&r, 8);
            if (live[i] == 0 || (i && live[i] <= live[i - 1])) return DSYNC_ECORRUPT;
        }
    }
    if (r.bad) return DSYNC_ECORRUPT;
    int rc = lk_table_restore(f->locks, r.p, r.left);
    if (rc != 0) return rc;
    f->clock_ms = clock;
    f->view_index = view_index;
    f->view_epoch = view_epoch;
    f->n_live = n_live;
    memcpy(f->live, live, n_live * sizeof *live);
    return 0;
}
