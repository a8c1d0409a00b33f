/*
 * fsm.c: encode, decode and apply replicated lock commands.
 */
#include <string.h>

#include "fsm.h"

static int put(ut_buf *b, const void *p, size_t n)
{
    return ut_buf_append(b, p, n);
}

static int put_u64(ut_buf *b, uint64_t v)
{
    unsigned char p[8];
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    return put(b, p, 8);
}

static int put_str(ut_buf *b, const char *s)
{
    size_t n = strlen(s);
    unsigned char p[2] = {(unsigned char)n, (unsigned char)(n >> 8)};
    if (put(b, p, 2) != 0)
        return DSYNC_ENOMEM;
    return put(b, s, n);
}

int fsm_encode(const fsm_cmd *c, ut_buf *b)
{
    unsigned char head[2] = {FSM_VERSION, (unsigned char)c->op};
    put(b, head, 2);
    put_u64(b, c->origin);
    put_u64(b, c->seq);
    put_u64(b, c->now_ms);
    switch (c->op) {
    case FSM_ACQUIRE: {
        unsigned char m = (unsigned char)c->mode;
        put(b, &m, 1);
        put_u64(b, c->ttl_ms);
        put_u64(b, c->wait_ms);
        put_str(b, c->key);
        put_str(b, c->client_id);
        break;
    }
    case FSM_RELEASE:
        put_str(b, c->key);
        put_str(b, c->client_id);
        break;
    case FSM_EXPIRE:
        break;
    }
    return b->oom ? DSYNC_ENOMEM : 0;
}

typedef struct {
    const unsigned char *p;
    size_t left;
    bool bad;
} reader;

static uint64_t get_u64(reader *r)
{
    if (r->left < 8) {
        r->bad = true;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += 8;
    r->left -= 8;
    return v;
}

static uint8_t get_u8(reader *r)
{
    if (r->left < 1) {
        r->bad = true;
        return 0;
    }
    r->left--;
    return *r->p++;
}

static void get_str(reader *r, char *out, size_t max)
{
    if (r->left < 2) {
        r->bad = true;
        return;
    }
    size_t n = (size_t)r->p[0] | (size_t)r->p[1] << 8;
    r->p += 2;
    r->left -= 2;
    if (n == 0 || n > max || n > r->left || memchr(r->p, '\0', n)) {
        r->bad = true;
        return;
    }
    memcpy(out, r->p, n);
    out[n] = '\0';
    r->p += n;
    r->left -= n;
}

int fsm_decode(const void *data, size_t len, fsm_cmd *c)
{
    reader r = {data, len, false};
    memset(c, 0, sizeof *c);
    if (get_u8(&r) != FSM_VERSION)
        return DSYNC_ECORRUPT;
    c->op = (fsm_op)get_u8(&r);
    c->origin = get_u64(&r);
    c->seq = get_u64(&r);
    c->now_ms = get_u64(&r);
    switch (c->op) {
    case FSM_ACQUIRE:
        c->mode = (dsync_lock_mode)get_u8(&r);
        c->ttl_ms = get_u64(&r);
        c->wait_ms = get_u64(&r);
        get_str(&r, c->key, DSYNC_LOCK_KEY_MAX);
        get_str(&r, c->client_id, DSYNC_CLIENT_ID_MAX);
        if (c->mode != DSYNC_LOCK_SHARED && c->mode != DSYNC_LOCK_EXCLUSIVE)
            return DSYNC_ECORRUPT;
        break;
    case FSM_RELEASE:
        get_str(&r, c->key, DSYNC_LOCK_KEY_MAX);
        get_str(&r, c->client_id, DSYNC_CLIENT_ID_MAX);
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
    if (c->now_ms > f->clock_ms)
        f->clock_ms = c->now_ms;
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
    unsigned char v = FSM_VERSION;
    put(b, &v, 1);
    put_u64(b, f->clock_ms);
    if (b->oom)
        return DSYNC_ENOMEM;
    return lk_table_snapshot(f->locks, b);
}

int fsm_restore(fsm *f, const void *data, size_t len)
{
    reader r = {data, len, false};
    if (get_u8(&r) != FSM_VERSION)
        return DSYNC_ECORRUPT;
    uint64_t clock = get_u64(&r);
    if (r.bad)
        return DSYNC_ECORRUPT;
    int rc = lk_table_restore(f->locks, r.p, r.left);
    if (rc == 0)
        f->clock_ms = clock;
    return rc;
}
