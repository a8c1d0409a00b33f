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

/* An HMGET's reply into op (found, value, version); its code. */
static int parse_load(rl_log *rl, const redisReply *r, rl_cache_op *op)
{
    if (r->type == REDIS_REPLY_ERROR) return rlc_reply_error(rl, "cache load", r);
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        rlc_set_error(rl, "cache load: unexpected reply");
        return DSYNC_EIO;
    }
    if (r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING &&
        r->element[2]->type == REDIS_REPLY_STRING) {
        op->out_epoch = rlc_parse_u64(r->element[1]->str, r->element[1]->len);
        op->out_seq = rlc_parse_u64(r->element[2]->str, r->element[2]->len);
        ut_buf_append(op->out, r->element[0]->str, r->element[0]->len);
        if (op->out->oom) {
            rlc_set_error(rl, "cache load: out of memory");
            return DSYNC_ENOMEM;
        }
        op->found = true;
        return 0;
    }
    if (r->element[0]->type != REDIS_REPLY_NIL) {
        rlc_set_error(rl, "cache load: " CACHE_PREFIX "%s holds something else", op->key);
        return DSYNC_EIO;
    }
    return 0;
}

/* The store script's reply into op (stored, fenced); its code. */
static int parse_store(rl_log *rl, const redisReply *r, rl_cache_op *op)
{
    if (r->type == REDIS_REPLY_ERROR) return rlc_reply_error(rl, "cache store", r);
    if (r->type != REDIS_REPLY_INTEGER || r->integer < -1 || r->integer > 1) {
        rlc_set_error(rl, "cache store: unexpected reply");
        return DSYNC_EIO;
    }
    op->stored = r->integer == 1;
    op->fenced = r->integer == -1;
    return 0;
}

/* The command of one op, built in its slot. */
typedef struct {
    char k[sizeof CACHE_PREFIX + RL_CACHE_KEY_MAX], e[24], s[24], f[24];
    const char *argv[8];
    size_t argvlen[8];
} op_slot;

/* Whether op runs as a script (a store, or a load that raises the fence). */
static bool scripted(const rl_cache_op *op)
{
    return op->store || op->fence != 0;
}

static rlc_cmd build(rl_log *rl, const rl_cache_op *op, op_slot *sl, bool eval)
{
    size_t klen = make_key(sl->k, op->key);
    size_t flen = rlc_format_u64(sl->f, op->fence);
    if (!op->store && op->fence == 0) {
        const char *argv[] = {"HMGET", sl->k, "v", "e", "s"};
        size_t argvlen[] = {5, klen, 1, 1, 1};
        memcpy(sl->argv, argv, sizeof argv);
        memcpy(sl->argvlen, argvlen, sizeof argvlen);
        return (rlc_cmd){5, sl->argv, sl->argvlen};
    }
    int which = op->store ? S_CSTORE : S_CLOAD;
    const char *script = eval ? rlc_scripts[which] : rl->sha[which];
    if (!op->store) {
        const char *argv[] = {eval ? "EVAL" : "EVALSHA", script, "1", sl->k, sl->f};
        size_t argvlen[] = {strlen(argv[0]), strlen(script), 1, klen, flen};
        memcpy(sl->argv, argv, sizeof argv);
        memcpy(sl->argvlen, argvlen, sizeof argvlen);
        return (rlc_cmd){5, sl->argv, sl->argvlen};
    }
    const char *argv[] = {eval ? "EVAL" : "EVALSHA", script, "1", sl->k,
                          op->len ? op->value : "", sl->e, sl->s, sl->f};
    size_t argvlen[] = {strlen(argv[0]), strlen(script), 1, klen, op->len,
                        rlc_format_u64(sl->e, op->epoch), rlc_format_u64(sl->s, op->seq), flen};
    memcpy(sl->argv, argv, sizeof argv);
    memcpy(sl->argvlen, argvlen, sizeof argvlen);
    return (rlc_cmd){8, sl->argv, sl->argvlen};
}

static bool op_valid(const rl_cache_op *op)
{
    return valid_key(op->key) && (op->store ? !(op->len && !op->value) && op->len <= RL_RECORD_MAX
                                            : op->out != NULL);
}

/* What rl_cache_run keeps for each request it sends. */
typedef struct {
    op_slot slot;
    rlc_cmd cmd;
    redisReply *reply;
    rl_cache_op *op;
} sent_op;

int rl_cache_run(rl_log *rl, rl_cache_op *ops, size_t n)
{
    if (!rl || (n && !ops)) return DSYNC_EINVAL;
    sent_op *sent = calloc(n ? n : 1, sizeof *sent);
    rlc_cmd *cmds = calloc(n ? n : 1, sizeof *cmds);
    redisReply **replies = calloc(n ? n : 1, sizeof *replies);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        rl_cache_op *op = &ops[i];
        op->stored = op->found = op->fenced = false;
        op->out_epoch = op->out_seq = 0;
        op->error[0] = '\0';
        op->rc = !sent || !cmds || !replies ? DSYNC_ENOMEM : op_valid(op) ? 0 : DSYNC_EINVAL;
        if (op->rc == 0) {
            sent[m].op = op;
            cmds[m] = build(rl, op, &sent[m].slot, false);
            m++;
        } else {
            snprintf(op->error, sizeof op->error, "%s",
                     op->rc == DSYNC_ENOMEM ? "out of memory" : "a bad key or value");
        }
    }
    /* Loads read (or raise a fence to a maximum), and stores are fenced by
     * their version: all may run twice. */
    int prc = m ? rlc_pipeline(rl, m, cmds, RLC_IDEMPOTENT, replies) : 0;
    /* Why the unanswered ones failed: said now, as a NOSCRIPT re-send below
     * may reconnect and clear it. */
    char perr[sizeof ops[0].error];
    snprintf(perr, sizeof perr, "%s", rl_last_error(rl));
    for (size_t j = 0; j < m; j++) {
        rl_cache_op *op = sent[j].op;
        redisReply *r = replies[j];
        if (!r) {
            op->rc = prc ? prc : DSYNC_EUNAVAILABLE; /* not sent, or its outcome unknown */
            snprintf(op->error, sizeof op->error, "%s", perr);
            continue;
        }
        if (scripted(op) && rlc_is_noscript(r)) {
            /* It did not run: once more, with the script's text. */
            freeReplyObject(r);
            r = NULL;
            rlc_cmd c = build(rl, op, &sent[j].slot, true);
            op->rc = rlc_command(rl, c.argc, c.argv, c.argvlen, 0, &r);
            if (op->rc == 0) op->rc = op->store ? parse_store(rl, r, op) : parse_load(rl, r, op);
        } else {
            op->rc = op->store ? parse_store(rl, r, op) : parse_load(rl, r, op);
        }
        freeReplyObject(r);
        if (op->rc != 0) snprintf(op->error, sizeof op->error, "%s", rl_last_error(rl));
    }
    free(sent);
    free(cmds);
    free(replies);
    int worst = 0;
    for (size_t i = 0; i < n; i++)
        if (ops[i].rc == DSYNC_EUNAVAILABLE || (worst == 0 && ops[i].rc != 0)) worst = ops[i].rc;
    return worst;
}

int rl_cache_load(rl_log *rl, const char *key, bool *found, ut_buf *value, uint64_t *epoch,
                  uint64_t *seq)
{
    *found = false;
    *epoch = *seq = 0;
    rl_cache_op op = {.key = key, .out = value};
    if (!rl || !op_valid(&op)) return DSYNC_EINVAL;
    int rc = rl_cache_run(rl, &op, 1);
    *found = op.found;
    *epoch = op.out_epoch;
    *seq = op.out_seq;
    return rc;
}

int rl_cache_store(rl_log *rl, const char *key, const void *value, size_t len, uint64_t epoch,
                   uint64_t seq, bool *stored)
{
    if (stored) *stored = false;
    rl_cache_op op = {.store = true, .key = key, .value = value, .len = len, .epoch = epoch, .seq = seq};
    if (!rl || !op_valid(&op)) return DSYNC_EINVAL;
    int rc = rl_cache_run(rl, &op, 1);
    if (stored) *stored = op.stored;
    return rc;
}
