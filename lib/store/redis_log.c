/*
 * redis_log.c: the per-topic record log in Redis (see redis_log.h for the
 * design): claims, the pipelined batch of rl_flush, load, rewrite, topic
 * listing. The connection and the scripts live in redis_conn.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "dsync/errors.h"
#include "store/redis_internal.h"
#include "util/util.h"

/* ---- keys and arguments ------------------------------------------------ */

static bool valid_topic(const char *topic)
{
    if (!topic || topic[0] == '\0' || topic[0] == '}') return false;
    return strnlen(topic, RL_TOPIC_MAX + 1) <= RL_TOPIC_MAX;
}

static size_t make_key(char *buf, const char *topic, const char *suffix)
{
    int n = snprintf(buf, KEY_MAX, KEY_PREFIX "%s}:%s", topic, suffix);
    return (size_t)n; /* fits: topic <= RL_TOPIC_MAX */
}

/* ---- open and close ---------------------------------------------------- */

int rl_open(const char *url, unsigned wait_ms, rl_log **out, char *err, size_t errlen)
{
    char scratch[1];
    if (!err || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = '\0';
    if (!out) return DSYNC_EINVAL;
    *out = NULL;
    rl_log *rl = calloc(1, sizeof *rl);
    if (!rl) {
        snprintf(err, errlen, "out of memory");
        return DSYNC_ENOMEM;
    }
    for (int i = 0; i < 2; i++) {
        ut_buf_init(&rl->sets[i].bytes);
        ut_map_init(&rl->sets[i].batch_of);
    }
    rl->buf = &rl->sets[0];
    rl->fly = &rl->sets[1];
    rl->backoff_ms = BACKOFF_MIN_MS;
    rl->wait_ms = wait_ms == 0 ? RL_COMMAND_TIMEOUT_MS : wait_ms < RL_WAIT_MIN_MS ? RL_WAIT_MIN_MS : wait_ms;
    int rc = rlc_parse_url(url, rl, err, errlen);
    if (rc == 0) {
        pipe_guard g;
        rlc_guard_begin(&g);
        rc = rlc_connect(rl, NULL);
        rlc_guard_end(&g);
        if (rc != 0) snprintf(err, errlen, "%s", rl->last_error);
    }
    if (rc != 0) {
        rl_close(rl);
        return rc;
    }
    *out = rl;
    return 0;
}

void rl_close(rl_log *rl)
{
    if (!rl) return;
    if (rl->c) redisFree(rl->c);
    for (int k = 0; k < 2; k++) {
        batch_set *set = &rl->sets[k];
        for (size_t i = 0; i < set->cap_batches; i++)
            free(set->batches[i].recs);
        free(set->batches);
        ut_map_close(&set->batch_of);
        ut_buf_free(&set->bytes);
    }
    free(rl->argv);
    free(rl->argvlen);
    free(rl);
}

/* ---- claim ------------------------------------------------------------- */

int rl_claim(rl_log *rl, const char *topic, uint64_t epoch, uint64_t *stored)
{
    if (stored) *stored = 0;
    if (!rl || !valid_topic(topic) || epoch == 0) return DSYNC_EINVAL;
    char key[KEY_MAX], ep[24];
    const char *argv[5] = {NULL, NULL, "1", key, ep};
    size_t argvlen[5] = {0, 0, 1, make_key(key, topic, "epoch"), rlc_format_u64(ep, epoch)};
    redisReply *r = NULL;
    int rc = rlc_run_script(rl, S_CLAIM, 5, argv, argvlen, 0, &r);
    if (rc != 0) return rc;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = rlc_reply_error(rl, "claim", r);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_INTEGER ||
               r->element[1]->type != REDIS_REPLY_STRING) {
        rlc_set_error(rl, "claim: unexpected reply");
        rc = DSYNC_EIO;
    } else {
        if (stored) *stored = rlc_parse_u64(r->element[1]->str, r->element[1]->len);
        rc = r->element[0]->integer == 1 ? 0 : DSYNC_EEXIST;
        if (rc)
            rlc_set_error(rl, "claim of %s at %" PRIu64 ": epoch %.*s owns it", topic, epoch,
                          (int)r->element[1]->len, r->element[1]->str);
    }
    freeReplyObject(r);
    return rc;
}

/* ---- batch ------------------------------------------------------------- */

static topic_batch *find_batch(batch_set *set, const char *topic)
{
    if (set->last_batch && strcmp(set->batches[set->last_batch - 1].topic, topic) == 0)
        return &set->batches[set->last_batch - 1];
    uintptr_t i = (uintptr_t)ut_map_get(&set->batch_of, topic);
    if (!i) return NULL;
    set->last_batch = i;
    return &set->batches[i - 1];
}

static topic_batch *new_batch(batch_set *set, const char *topic, uint64_t epoch)
{
    if (set->n_batches == set->cap_batches) {
        size_t ncap = set->cap_batches ? set->cap_batches * 2 : 8;
        topic_batch *nb = realloc(set->batches, ncap * sizeof *nb);
        if (!nb) return NULL;
        memset(nb + set->cap_batches, 0, (ncap - set->cap_batches) * sizeof *nb);
        set->batches = nb;
        set->cap_batches = ncap;
    }
    size_t i = set->n_batches;
    if (ut_map_put(&set->batch_of, topic, (void *)(uintptr_t)(i + 1)) != 0) return NULL;
    topic_batch *b = &set->batches[i];
    snprintf(b->topic, sizeof b->topic, "%s", topic);
    b->epoch = epoch;
    b->n = 0;
    set->n_batches++;
    set->last_batch = i + 1;
    return b;
}

static void reset_set(batch_set *set)
{
    for (size_t i = 0; i < set->n_batches; i++) {
        ut_map_del(&set->batch_of, set->batches[i].topic);
        set->batches[i].n = 0;
    }
    set->n_batches = 0;
    set->last_batch = 0;
    set->pending = 0;
    set->bytes.len = 0;
    set->bytes.oom = false;
}

int rl_append(rl_log *rl, const char *topic, uint64_t epoch, const void *data, size_t len)
{
    if (!rl || !valid_topic(topic) || epoch == 0 || (!data && len)) return DSYNC_EINVAL;
    batch_set *set = rl->buf;
    if (len > RL_RECORD_MAX || set->pending >= RL_BATCH_MAX_RECORDS ||
        set->bytes.len + len > RL_BATCH_MAX_BYTES)
        return DSYNC_ETOOBIG;
    topic_batch *b = find_batch(set, topic);
    if (b && b->epoch != epoch) {
        if (b->n) return DSYNC_EINVAL;
        b->epoch = epoch; /* discarded, and claimed again since */
    }
    if (!b && !(b = new_batch(set, topic, epoch))) return DSYNC_ENOMEM;
    if (b->n == b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 16;
        rec_span *nr = realloc(b->recs, ncap * sizeof *nr);
        if (!nr) return DSYNC_ENOMEM;
        b->recs = nr;
        b->cap = ncap;
    }
    size_t off = set->bytes.len;
    if (ut_buf_append(&set->bytes, data, len) != 0) return DSYNC_ENOMEM;
    b->recs[b->n].off = off;
    b->recs[b->n].len = len;
    b->n++;
    set->pending++;
    return 0;
}

size_t rl_pending(const rl_log *rl)
{
    return rl ? rl->buf->pending : 0;
}

size_t rl_buffered(rl_log *rl, const char *topic)
{
    topic_batch *b = rl && topic ? find_batch(rl->buf, topic) : NULL;
    return b ? b->n : 0;
}

void rl_discard(rl_log *rl, const char *topic)
{
    topic_batch *b = rl && topic ? find_batch(rl->buf, topic) : NULL;
    if (!b) return;
    rl->buf->pending -= b->n;
    b->n = 0; /* its bytes stay unused until the set is reset */
}

bool rl_in_flight(const rl_log *rl)
{
    return rl && rl->flying;
}

/* The script's answer for one topic's batch. */
static int append_status(rl_log *rl, topic_batch *b, const redisReply *r)
{
    if (rlc_is_noscript(r)) return ST_NOSCRIPT;
    if (r->type == REDIS_REPLY_ERROR) return rlc_reply_error(rl, b->topic, r);
    if (r->type != REDIS_REPLY_INTEGER) {
        rlc_set_error(rl, "flush of %s: unexpected reply", b->topic);
        return DSYNC_EIO;
    }
    if (r->integer < 0) {
        rlc_set_error(rl, "flush of %s at epoch %" PRIu64 ": fenced off", b->topic, b->epoch);
        return DSYNC_EEXIST;
    }
    b->log_len = (uint64_t)r->integer;
    return 0;
}

/* Every batch of fly still waiting for its reply: unknown, the
 * connection is gone. */
static void fly_unknown(rl_log *rl, int want)
{
    for (size_t j = rl->fly_next; j < rl->fly->n_batches; j++)
        if (rl->fly->batches[j].status == want) rl->fly->batches[j].status = DSYNC_EUNAVAILABLE;
    rl->fly_next = rl->fly->n_batches;
}

/* Appends one script call per batch of fly whose status is `want` (EVAL
 * instead of EVALSHA when eval) to the connection's output buffer; how
 * many. Out of memory: nothing is sent, those batches fail. */
static size_t queue_batches(rl_log *rl, int want, bool eval)
{
    char kepoch[KEY_MAX], klog[KEY_MAX], ep[24];
    batch_set *set = rl->fly;
    rl->argv[0] = eval ? "EVAL" : "EVALSHA";
    rl->argvlen[0] = strlen(rl->argv[0]);
    rl->argv[1] = eval ? rlc_scripts[S_APPEND] : rl->sha[S_APPEND];
    rl->argvlen[1] = strlen(rl->argv[1]);
    rl->argv[2] = "2";
    rl->argvlen[2] = 1;
    rl->argv[3] = kepoch;
    rl->argv[4] = klog;
    rl->argv[5] = ep;
    size_t sent = 0;
    for (size_t i = 0; i < set->n_batches; i++) {
        topic_batch *b = &set->batches[i];
        if (b->status != want) continue;
        rl->argvlen[3] = make_key(kepoch, b->topic, "epoch");
        rl->argvlen[4] = make_key(klog, b->topic, "log");
        rl->argvlen[5] = rlc_format_u64(ep, b->epoch);
        for (size_t k = 0; k < b->n; k++) {
            rl->argv[6 + k] = set->bytes.data + b->recs[k].off;
            rl->argvlen[6 + k] = b->recs[k].len;
        }
        if (redisAppendCommandArgv(rl->c, (int)(6 + b->n), rl->argv, rl->argvlen) != REDIS_OK) {
            /* Nothing has been written yet: dropping the context with its
             * output buffer leaves every batch unapplied. */
            rlc_set_error(rl, "flush: out of memory");
            rlc_drop(rl, false);
            for (size_t j = 0; j < set->n_batches; j++)
                if (set->batches[j].status == want) set->batches[j].status = DSYNC_ENOMEM;
            return 0;
        }
        sent++;
    }
    return sent;
}

/* Writes the output buffer out; false (the context dropped) on an error. */
static bool write_out(rl_log *rl, const char *what)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(rl->c, &done) != REDIS_OK) {
            rlc_io_error(rl, what);
            return false;
        }
    return true;
}

/* Reads the replies for fly's batches of status `want` from fly_next on:
 * all of them (block), or those already arrived. True once none is left. */
static bool read_replies(rl_log *rl, int want, bool block)
{
    batch_set *set = rl->fly;
    bool polled = false, progress = false;
    while (rl->fly_next < set->n_batches) {
        topic_batch *b = &set->batches[rl->fly_next];
        if (b->status != want) {
            rl->fly_next++;
            continue;
        }
        if (!rl->c) {
            fly_unknown(rl, want);
            break;
        }
        redisReply *r = NULL;
        int ok;
        if (block) {
            ok = redisGetReply(rl->c, (void **)&r);
        } else {
            ok = redisGetReplyFromReader(rl->c, (void **)&r);
            if (ok == REDIS_OK && !r) {
                /* Nothing parsed yet: read once, if that cannot block. */
                struct pollfd p = {.fd = rl->c->fd, .events = POLLIN};
                if (polled || poll(&p, 1, 0) != 1) break;
                polled = true;
                ok = redisBufferRead(rl->c);
                if (ok == REDIS_OK) ok = redisGetReplyFromReader(rl->c, (void **)&r);
                if (ok == REDIS_OK && !r) break;
            }
        }
        if (ok != REDIS_OK) {
            rlc_io_error(rl, "flush"); /* this batch and the later ones: unknown */
            fly_unknown(rl, want);
            break;
        }
        b->status = append_status(rl, b, r);
        freeReplyObject(r);
        rl->fly_next++;
        progress = true;
    }
    /* A long flush whose replies keep coming is not given up: the
     * deadline is RL_COMMAND_TIMEOUT_MS of silence, as for one command. */
    if (progress) rl->fly_deadline_ms = ut_now_ms() + RL_COMMAND_TIMEOUT_MS;
    return rl->fly_next >= set->n_batches;
}

/* Every reply of fly is in: Redis lost the script for some (SCRIPT FLUSH,
 * a failover): they did not run, so send those again with the script's
 * text, one blocking round trip. */
static void finish_reading(rl_log *rl)
{
    rl->fly_read = true;
    bool noscript = false;
    for (size_t i = 0; i < rl->fly->n_batches; i++)
        noscript |= rl->fly->batches[i].status == ST_NOSCRIPT;
    if (!noscript || !rl->c) return;
    pipe_guard g;
    rlc_guard_begin(&g);
    size_t sent = queue_batches(rl, ST_NOSCRIPT, true);
    if (sent && write_out(rl, "flush")) {
        rl->stats.round_trips++;
        rl->fly_next = 0;
        read_replies(rl, ST_NOSCRIPT, true);
    }
    rlc_guard_end(&g);
}

int rl_flush_start(rl_log *rl)
{
    if (!rl || rl->flying) return DSYNC_EINVAL;
    if (rl->buf->pending == 0) {
        reset_set(rl->buf); /* batches left empty by a failed append or a discard */
        return 0;
    }
    batch_set *set = rl->buf;
    rl->buf = rl->fly;
    rl->fly = set;
    rl->flying = true;
    rl->fly_read = false;
    rl->fly_next = 0;
    size_t most = 0;
    for (size_t i = 0; i < set->n_batches; i++) {
        topic_batch *b = &set->batches[i];
        b->status = b->n ? ST_TODO : 0;
        b->log_len = 0;
        if (b->n > most) most = b->n;
    }
    int rc = 0;
    if (most + 6 > rl->argv_cap) {
        size_t ncap = most + 6;
        const char **na = realloc(rl->argv, ncap * sizeof *na);
        if (na) rl->argv = na;
        size_t *nl = na ? realloc(rl->argvlen, ncap * sizeof *nl) : NULL;
        if (nl) rl->argvlen = nl;
        if (na && nl)
            rl->argv_cap = ncap;
        else
            rc = DSYNC_ENOMEM;
    }
    pipe_guard g;
    rlc_guard_begin(&g);
    if (rc == 0) rc = rlc_connect(rl, NULL);
    size_t sent = rc == 0 ? queue_batches(rl, ST_TODO, false) : 0;
    if (sent && write_out(rl, "flush")) {
        rl->stats.round_trips++;
        rl->fly_deadline_ms = ut_now_ms() + RL_COMMAND_TIMEOUT_MS;
    }
    rlc_guard_end(&g);
    /* Not sent, or not all of it: those fates are known (failed) or
     * unknown. */
    for (size_t i = 0; i < set->n_batches; i++) {
        topic_batch *b = &set->batches[i];
        if (b->status == ST_TODO && (!sent || !rl->c)) b->status = rc ? rc : DSYNC_EUNAVAILABLE;
    }
    if (!sent || !rl->c) rl->fly_read = true;
    return 0;
}

int rl_flush_fd(const rl_log *rl)
{
    return rl && rl->flying && !rl->fly_read && rl->c ? rl->c->fd : -1;
}

uint64_t rl_flush_deadline_ms(const rl_log *rl)
{
    return rl && rl->flying && !rl->fly_read ? rl->fly_deadline_ms : UINT64_MAX;
}

bool rl_flush_poll(rl_log *rl)
{
    if (!rl || !rl->flying) return false;
    if (rl->fly_read) return true;
    if (!read_replies(rl, ST_TODO, false)) {
        if (ut_now_ms() < rl->fly_deadline_ms) return false;
        rlc_stalled(rl, "flush: no reply in time");
        fly_unknown(rl, ST_TODO);
    }
    finish_reading(rl);
    return true;
}

void rlc_settle(rl_log *rl)
{
    if (!rl->flying || rl->fly_read) return;
    read_replies(rl, ST_TODO, true);
    finish_reading(rl);
}

int rl_flush_finish(rl_log *rl, rl_flush_fn fn, void *ctx)
{
    if (!rl || !rl->flying) return 0;
    rlc_settle(rl);
    batch_set *set = rl->fly;
    int worst = 0;
    bool unknown = false, fenced = false;
    for (size_t i = 0; i < set->n_batches; i++) {
        topic_batch *b = &set->batches[i];
        if (b->n == 0) continue;
        if (b->status > 0) b->status = DSYNC_EUNAVAILABLE; /* never sent */
        if (b->status == DSYNC_EUNAVAILABLE)
            unknown = true;
        else if (b->status == DSYNC_EEXIST)
            fenced = true;
        else if (b->status != 0 && worst == 0)
            worst = b->status;
        if (fn) {
            rl_flush_result res = {b->topic, b->epoch, b->n, b->status, b->log_len};
            fn(ctx, &res);
        }
    }
    reset_set(set);
    rl->flying = false;
    if (unknown) return DSYNC_EUNAVAILABLE;
    if (worst) return worst;
    return fenced ? DSYNC_EEXIST : 0;
}

/* The worse of two flush results, in rl_flush's order. */
static int worse(int a, int b)
{
    if (a == DSYNC_EUNAVAILABLE || b == DSYNC_EUNAVAILABLE) return DSYNC_EUNAVAILABLE;
    if (a != 0 && a != DSYNC_EEXIST) return a;
    if (b != 0 && b != DSYNC_EEXIST) return b;
    return a ? a : b;
}

int rl_flush(rl_log *rl, rl_flush_fn fn, void *ctx)
{
    if (!rl) return DSYNC_EINVAL;
    int first = rl_flush_finish(rl, fn, ctx);
    rl_flush_start(rl);
    return worse(first, rl_flush_finish(rl, fn, ctx));
}

/* ---- load and rewrite -------------------------------------------------- */

int rl_load(rl_log *rl, const char *topic, rl_load_fn fn, void *ctx)
{
    if (!rl || !valid_topic(topic) || !fn) return DSYNC_EINVAL;
    char ksnap[KEY_MAX], klog[KEY_MAX];
    const char *argv[5] = {NULL, NULL, "2", ksnap, klog};
    size_t argvlen[5] = {0, 0, 1, make_key(ksnap, topic, "snap"), make_key(klog, topic, "log")};
    redisReply *r = NULL;
    int rc = rlc_run_script(rl, S_LOAD, 5, argv, argvlen, RLC_IDEMPOTENT | RLC_BULK, &r);
    if (rc != 0) return rc;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = rlc_reply_error(rl, "load", r);
        freeReplyObject(r);
        return rc;
    }
    /* Check the whole reply before handing anything out. */
    bool ok =
        r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        (r->element[0]->type == REDIS_REPLY_STRING || r->element[0]->type == REDIS_REPLY_NIL) &&
        r->element[1]->type == REDIS_REPLY_ARRAY;
    for (size_t i = 0; ok && i < r->element[1]->elements; i++)
        ok = r->element[1]->element[i]->type == REDIS_REPLY_STRING;
    if (!ok) {
        rlc_set_error(rl, "load of %s: unexpected reply", topic);
        freeReplyObject(r);
        return DSYNC_EIO;
    }
    const redisReply *snap = r->element[0], *log = r->element[1];
    if (snap->type == REDIS_REPLY_STRING) rc = fn(ctx, RL_SNAPSHOT, snap->str, snap->len);
    for (size_t i = 0; rc == 0 && i < log->elements; i++)
        rc = fn(ctx, RL_RECORD, log->element[i]->str, log->element[i]->len);
    freeReplyObject(r);
    return rc;
}

int rl_rewrite(rl_log *rl, const char *topic, uint64_t epoch, const void *snapshot, size_t len)
{
    if (!rl || !valid_topic(topic) || epoch == 0 || (!snapshot && len)) return DSYNC_EINVAL;
    if (len > RL_RECORD_MAX) return DSYNC_ETOOBIG;
    topic_batch *b = find_batch(rl->buf, topic), *f = rl->flying ? find_batch(rl->fly, topic) : NULL;
    if ((b && b->n > 0) || (f && f->n > 0)) {
        rlc_set_error(rl, "rewrite of %s: records are buffered or in flight; flush first", topic);
        return DSYNC_EINVAL;
    }
    char kepoch[KEY_MAX], ksnap[KEY_MAX], klog[KEY_MAX], ep[24];
    const char *argv[8] = {NULL, NULL, "3", kepoch, ksnap, klog, ep, snapshot ? snapshot : ""};
    size_t argvlen[8] = {0,
                         0,
                         1,
                         make_key(kepoch, topic, "epoch"),
                         make_key(ksnap, topic, "snap"),
                         make_key(klog, topic, "log"),
                         rlc_format_u64(ep, epoch),
                         len};
    redisReply *r = NULL;
    int rc = rlc_run_script(rl, S_REWRITE, 8, argv, argvlen, RLC_BULK, &r);
    if (rc != 0) return rc;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = rlc_reply_error(rl, "rewrite", r);
    } else if (r->type != REDIS_REPLY_INTEGER) {
        rlc_set_error(rl, "rewrite of %s: unexpected reply", topic);
        rc = DSYNC_EIO;
    } else if (r->integer < 0) {
        rlc_set_error(rl, "rewrite of %s at epoch %" PRIu64 ": fenced off", topic, epoch);
        rc = DSYNC_EEXIST;
    }
    freeReplyObject(r);
    return rc;
}

/* ---- topics and info --------------------------------------------------- */

/* One SCAN from cursor: fn for each topic of the page not in seen (which
 * may be NULL: no dedup). The cursor moves on only when the whole page
 * was told (fn returned 0 for each): a stopped page is scanned again. */
static int topics_page(rl_log *rl, char cursor[RL_CURSOR_MAX], rl_topic_fn fn, void *ctx,
                       ut_map *seen)
{
    static const size_t pre = sizeof KEY_PREFIX - 1, suf = sizeof EPOCH_SUFFIX - 1;
    const char *argv[6] = {"SCAN", cursor, "MATCH", KEY_PREFIX "*" EPOCH_SUFFIX, "COUNT", SCAN_COUNT};
    redisReply *r = NULL;
    /* A SCAN sent again with the same cursor is harmless. */
    int rc = rlc_command(rl, 6, argv, NULL, RLC_IDEMPOTENT, &r);
    if (rc != 0) return rc;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = rlc_reply_error(rl, "SCAN", r);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[0]->len >= RL_CURSOR_MAX ||
               strspn(r->element[0]->str, "0123456789") != r->element[0]->len ||
               r->element[1]->type != REDIS_REPLY_ARRAY) {
        rlc_set_error(rl, "SCAN: unexpected reply");
        rc = DSYNC_EIO;
    } else {
        const redisReply *keys = r->element[1];
        for (size_t i = 0; rc == 0 && i < keys->elements; i++) {
            const redisReply *k = keys->element[i];
            if (k->type != REDIS_REPLY_STRING || k->len <= pre + suf) continue;
            size_t tlen = k->len - pre - suf;
            char topic[RL_TOPIC_MAX + 1];
            if (tlen > RL_TOPIC_MAX || memchr(k->str + pre, '\0', tlen)) continue;
            memcpy(topic, k->str + pre, tlen);
            topic[tlen] = '\0';
            if (!valid_topic(topic) || (seen && ut_map_get(seen, topic))) continue;
            if (seen && ut_map_put(seen, topic, seen) != 0) {
                rc = DSYNC_ENOMEM;
                break;
            }
            rc = fn(ctx, topic);
        }
        if (rc == 0) {
            memcpy(cursor, r->element[0]->str, r->element[0]->len);
            cursor[r->element[0]->len] = '\0';
        }
    }
    freeReplyObject(r);
    return rc;
}

int rl_topics_page(rl_log *rl, char cursor[RL_CURSOR_MAX], rl_topic_fn fn, void *ctx)
{
    if (!rl || !fn || !cursor || strnlen(cursor, RL_CURSOR_MAX) == RL_CURSOR_MAX) return DSYNC_EINVAL;
    return topics_page(rl, cursor, fn, ctx, NULL);
}

int rl_topics(rl_log *rl, rl_topic_fn fn, void *ctx)
{
    if (!rl || !fn) return DSYNC_EINVAL;
    ut_map seen;
    ut_map_init(&seen);
    char cursor[RL_CURSOR_MAX] = "0";
    int rc;
    do
        rc = topics_page(rl, cursor, fn, ctx, &seen);
    while (rc == 0 && strcmp(cursor, "0") != 0);
    ut_map_close(&seen);
    return rc;
}

/* CONFIG GET name -> value into out. */
static int config_get(rl_log *rl, const char *name, char *out, size_t outlen)
{
    const char *argv[3] = {"CONFIG", "GET", name};
    redisReply *r = NULL;
    int rc = rlc_command(rl, 3, argv, NULL, RLC_IDEMPOTENT, &r);
    if (rc != 0) return rc;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = rlc_reply_error(rl, "CONFIG GET", r);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[1]->type != REDIS_REPLY_STRING) {
        rlc_set_error(rl, "CONFIG GET %s: unexpected reply", name);
        rc = DSYNC_EIO;
    } else {
        snprintf(out, outlen, "%.*s", (int)r->element[1]->len, r->element[1]->str);
    }
    freeReplyObject(r);
    return rc;
}

int rl_info_appendfsync(rl_log *rl, char *buf, size_t len)
{
    if (!rl || !buf || len == 0) return DSYNC_EINVAL;
    buf[0] = '\0';
    char aof[32], fsync[32];
    int rc = config_get(rl, "appendonly", aof, sizeof aof);
    if (rc == 0) rc = config_get(rl, "appendfsync", fsync, sizeof fsync);
    if (rc == 0) snprintf(buf, len, "appendonly=%s appendfsync=%s", aof, fsync);
    return rc;
}

const char *rl_last_error(const rl_log *rl)
{
    return rl ? rl->last_error : "";
}

void rl_get_stats(const rl_log *rl, rl_stats *out)
{
    if (rl && out) *out = rl->stats;
}
