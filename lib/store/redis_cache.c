/*
 * redis_cache.c: the coherent cache's backing store in Redis (see
 * redis_log.h): one hash per key holding the value and its version, and
 * a fenced-by-version write so stale write-backs never win.
 */
#include <stdio.h>
#include <string.h>

#include "dsync/errors.h"
#include "store/redis_internal.h"

#define CACHE_PREFIX "dsync:c:"

static bool valid_key(const char *key)
{
    size_t n = key ? strnlen(key, RL_CACHE_KEY_MAX + 1) : 0;
    return n >= 1 && n <= RL_CACHE_KEY_MAX;
}

static size_t make_key(char *buf, const char *key)
{
    return (size_t)snprintf(buf, sizeof CACHE_PREFIX + RL_CACHE_KEY_MAX, CACHE_PREFIX "%s", key);
}

int rl_cache_load(rl_log *rl, const char *key, bool *found, ut_buf *value, uint64_t *epoch,
                  uint64_t *seq)
{
    *found = false;
    *epoch = *seq = 0;
    if (!rl || !valid_key(key)) return DSYNC_EINVAL;
    char k[sizeof CACHE_PREFIX + RL_CACHE_KEY_MAX];
    const char *argv[] = {"HMGET", k, "v", "e", "s"};
    size_t argvlen[] = {5, make_key(k, key), 1, 1, 1};
    redisReply *r = NULL;
    int rc = rlc_command(rl, 5, argv, argvlen, RLC_IDEMPOTENT, &r);
    if (rc != 0) return rc;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = rlc_reply_error(rl, "cache load", r);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        rlc_set_error(rl, "cache load: unexpected reply");
        rc = DSYNC_EIO;
    } else if (r->element[0]->type == REDIS_REPLY_STRING &&
               r->element[1]->type == REDIS_REPLY_STRING &&
               r->element[2]->type == REDIS_REPLY_STRING) {
        *epoch = rlc_parse_u64(r->element[1]->str, r->element[1]->len);
        *seq = rlc_parse_u64(r->element[2]->str, r->element[2]->len);
        ut_buf_append(value, r->element[0]->str, r->element[0]->len);
        rc = value->oom ? DSYNC_ENOMEM : 0;
        *found = rc == 0;
    } else if (r->element[0]->type != REDIS_REPLY_NIL) {
        rlc_set_error(rl, "cache load: %s holds something else", k);
        rc = DSYNC_EIO;
    }
    freeReplyObject(r);
    return rc;
}

int rl_cache_store(rl_log *rl, const char *key, const void *value, size_t len, uint64_t epoch,
                   uint64_t seq, bool *stored)
{
    if (stored) *stored = false;
    if (!rl || !valid_key(key) || (len && !value) || len > RL_RECORD_MAX) return DSYNC_EINVAL;
    char k[sizeof CACHE_PREFIX + RL_CACHE_KEY_MAX], e[24], s[24];
    const char *argv[] = {NULL, NULL, "1", k, len ? value : "", e, s};
    size_t argvlen[] = {0, 0, 1, make_key(k, key), len, rlc_format_u64(e, epoch),
                        rlc_format_u64(s, seq)};
    redisReply *r = NULL;
    int rc = rlc_run_script(rl, S_CSTORE, 7, argv, argvlen, 0, &r);
    if (rc != 0) return rc;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = rlc_reply_error(rl, "cache store", r);
    } else if (r->type != REDIS_REPLY_INTEGER) {
        rlc_set_error(rl, "cache store: unexpected reply");
        rc = DSYNC_EIO;
    } else if (stored) {
        *stored = r->integer == 1;
    }
    freeReplyObject(r);
    return rc;
}
