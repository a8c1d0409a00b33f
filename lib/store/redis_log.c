/*
 * redis_log.c: the per-topic record log in Redis (see redis_log.h for the
 * design): URL parsing, one hiredis connection with reconnect and backoff,
 * the four fenced Lua scripts and the pipelined batch of rl_flush.
 */
#include <errno.h>
#include <inttypes.h>
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
#include "store/redis_log.h"
#include "util/util.h"

#define BACKOFF_MIN_MS 50u
#define BACKOFF_MAX_MS 1000u
/* Records per RPUSH inside the append script: Lua's unpack() fails past
 * about 8000 values (LUAI_MAXCSTACK). */
#define RPUSH_CHUNK "1000"
#define SCAN_COUNT "1000"

#define KEY_PREFIX "dsync:q:{"
#define EPOCH_SUFFIX "}:epoch"
#define KEY_MAX (RL_TOPIC_MAX + 32)

/* ---- scripts ----------------------------------------------------------- */

enum { S_CLAIM, S_APPEND, S_REWRITE, S_LOAD, S_COUNT };

/* Epochs are canonical decimal strings (no leading zeros), so "newer" is
 * longer, or as long and greater at the first differing digit: exact for
 * all of uint64_t, where tonumber() would round past 2^53. Byte compares
 * rather than Lua's `<` on strings, which follows the locale (strcoll). */
static const char *const script_src[S_COUNT] = {
    /* S_CLAIM. KEYS: epoch. ARGV: epoch. -> {1 set | 0 refused, stored} */
    "local function newer(a, b)\n"
    "  if #a ~= #b then return #a > #b end\n"
    "  for i = 1, #a do\n"
    "    local x, y = string.byte(a, i), string.byte(b, i)\n"
    "    if x ~= y then return x > y end\n"
    "  end\n"
    "  return false\n"
    "end\n"
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur and not newer(ARGV[1], cur) then return {0, cur} end\n"
    "redis.call('SET', KEYS[1], ARGV[1])\n"
    "return {1, cur or ''}\n",

    /* S_APPEND. KEYS: epoch, log. ARGV: epoch, records... -> log length,
     * or -1 when fenced (nothing written). */
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end\n"
    "local n = 0\n"
    "for i = 2, #ARGV, " RPUSH_CHUNK " do\n"
    "  n = redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + " RPUSH_CHUNK
    " - 1, #ARGV)))\n"
    "end\n"
    "return n\n",

    /* S_REWRITE. KEYS: epoch, snap, log. ARGV: epoch, snapshot. -> 1, or -1
     * when fenced. */
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end\n"
    "redis.call('SET', KEYS[2], ARGV[2])\n"
    "redis.call('DEL', KEYS[3])\n"
    "return 1\n",

    /* S_LOAD. KEYS: snap, log. -> {snapshot or nil, {records...}} */
    "return {redis.call('GET', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1)}\n",
};

/* ---- the handle -------------------------------------------------------- */

typedef struct {
    size_t off, len; /* in rl_log.bytes */
} rec_span;

/* Internal flush states of a batch, beside the DSYNC_E* results. */
#define ST_TODO 1
#define ST_NOSCRIPT 2

/* One topic's records in the current batch. Slots are reused across
 * flushes (recs keeps its capacity). */
typedef struct {
    char topic[RL_TOPIC_MAX + 1];
    uint64_t epoch;
    rec_span *recs;
    size_t n, cap;
    int status;
    uint64_t log_len;
} topic_batch;

struct rl_log {
    char host[256];
    int port;
    int db;
    redisContext *c;       /* NULL: disconnected */
    uint64_t retry_at_ms;  /* no connect attempt before this */
    unsigned backoff_ms;   /* the wait after the next failed connect */
    char sha[S_COUNT][41]; /* from SCRIPT LOAD on connect */
    ut_buf bytes;          /* every buffered record, back to back */
    topic_batch *batches;  /* in order of first append */
    size_t n_batches, cap_batches;
    size_t last_batch; /* index + 1 of the last appended-to batch */
    ut_map batch_of;   /* topic -> index + 1 */
    size_t pending;    /* buffered records */
    const char **argv; /* scratch for the flush's commands */
    size_t *argvlen;
    size_t argv_cap;
    rl_stats stats;
    char last_error[256];
};

static void set_error(rl_log *rl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_error(rl_log *rl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rl->last_error, sizeof rl->last_error, fmt, ap);
    va_end(ap);
}

static struct timeval ms_to_tv(unsigned ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

/* ---- SIGPIPE ------------------------------------------------------------ */

/* hiredis writes with write(2): a peer that closed the socket raises
 * SIGPIPE, whose default action kills the process. Block it in this thread
 * around our I/O and consume one we raised (the technique libcurl uses),
 * leaving a SIGPIPE that was already pending alone. */
typedef struct {
    sigset_t old;
    bool was_pending;
} pipe_guard;

static void guard_begin(pipe_guard *g)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

static void guard_end(pipe_guard *g)
{
    int saved = errno;
    if (!g->was_pending) {
        sigset_t set, pending;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        sigemptyset(&pending);
        if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
            struct timespec zero = {0, 0};
            while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR) {
            }
        }
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    errno = saved;
}

/* ---- connection -------------------------------------------------------- */

/* Frees the context. After a failed connect the next attempt waits out a
 * doubling backoff; after a failure on a working connection the next call
 * connects at once (the server may well be fine). */
static void drop_connection(rl_log *rl, bool connect_failed)
{
    if (rl->c) redisFree(rl->c);
    rl->c = NULL;
    if (connect_failed) {
        rl->stats.connect_failures++;
        rl->retry_at_ms = ut_now_ms() + rl->backoff_ms;
        rl->backoff_ms = rl->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : rl->backoff_ms * 2;
    } else {
        rl->retry_at_ms = 0;
    }
}

/* An I/O error on the context: the outcome of whatever was in flight is
 * unknown and the context is dead (hiredis 0.14). */
static int io_error(rl_log *rl, const char *what)
{
    set_error(rl, "%s: %s", what, rl->c && rl->c->errstr[0] ? rl->c->errstr : "connection lost");
    drop_connection(rl, false);
    return DSYNC_EUNAVAILABLE;
}

/* Maps an error reply to a code and records its text. */
static int reply_error(rl_log *rl, const char *what, const redisReply *r)
{
    static const char *const transient[] = {"LOADING",     "BUSY",       "OOM",
                                            "READONLY",    "MASTERDOWN", "TRYAGAIN",
                                            "CLUSTERDOWN", "MISCONF",    "NOREPLICAS"};
    set_error(rl, "%s: %.*s", what, (int)(r->len > 200 ? 200 : r->len), r->str);
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++) {
        size_t n = strlen(transient[i]);
        if (r->len >= n && memcmp(r->str, transient[i], n) == 0) return DSYNC_EUNAVAILABLE;
    }
    return DSYNC_EIO;
}

static bool is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->len >= 8 && memcmp(r->str, "NOSCRIPT", 8) == 0;
}

/* Connects unless connected: the TCP connect, then SELECT and the SCRIPT
 * LOADs in one pipelined round trip. Call under a pipe_guard. */
static int ensure_connected(rl_log *rl, bool *fresh)
{
    if (fresh) *fresh = false;
    if (rl->c) return 0;
    if (ut_now_ms() < rl->retry_at_ms) return DSYNC_EUNAVAILABLE; /* last_error says why */

    redisContext *c = redisConnectWithTimeout(rl->host, rl->port, ms_to_tv(RL_CONNECT_TIMEOUT_MS));
    if (!c || c->err) {
        set_error(rl, "connect to %s:%d: %s", rl->host, rl->port, c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        drop_connection(rl, true);
        return DSYNC_EUNAVAILABLE;
    }
    rl->c = c;
    if (redisSetTimeout(c, ms_to_tv(RL_COMMAND_TIMEOUT_MS)) != REDIS_OK) {
        set_error(rl, "setting the command timeout: %s", c->errstr);
        drop_connection(rl, true);
        return DSYNC_EUNAVAILABLE;
    }
    (void)redisEnableKeepAlive(c); /* best effort: only finds dead peers sooner */

    char dbs[16];
    snprintf(dbs, sizeof dbs, "%d", rl->db);
    int sent = 0;
    bool ok = true;
    if (rl->db != 0) {
        const char *argv[] = {"SELECT", dbs};
        ok = redisAppendCommandArgv(c, 2, argv, NULL) == REDIS_OK;
        sent++;
    }
    for (int i = 0; ok && i < S_COUNT; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", script_src[i]};
        ok = redisAppendCommandArgv(c, 3, argv, NULL) == REDIS_OK;
        sent++;
    }
    if (!ok) {
        set_error(rl, "connect: out of memory");
        drop_connection(rl, true);
        return DSYNC_ENOMEM;
    }
    rl->stats.round_trips++;
    int rc = 0;
    for (int i = 0; i < sent; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK) {
            set_error(rl, "connect to %s:%d: %s", rl->host, rl->port, c->errstr);
            drop_connection(rl, true);
            return DSYNC_EUNAVAILABLE;
        }
        bool select = rl->db != 0 && i == 0;
        int script = select ? -1 : i - (rl->db != 0);
        if (r->type == REDIS_REPLY_ERROR) {
            int code = reply_error(rl, select ? "SELECT" : "SCRIPT LOAD", r);
            /* A database Redis refuses, or a password it wants, is a
             * configuration error; LOADING and the like are worth retrying. */
            bool noauth = r->len >= 6 && memcmp(r->str, "NOAUTH", 6) == 0;
            if (rc == 0) rc = (select && code == DSYNC_EIO) || noauth ? DSYNC_ECONFIG : code;
        } else if (!select) {
            if (r->type != REDIS_REPLY_STRING || r->len != 40) {
                if (rc == 0) rc = DSYNC_EIO;
                set_error(rl, "SCRIPT LOAD: unexpected reply");
            } else {
                memcpy(rl->sha[script], r->str, 40);
                rl->sha[script][40] = '\0';
            }
        }
        freeReplyObject(r);
    }
    if (rc != 0) {
        drop_connection(rl, true);
        return rc == DSYNC_EIO ? DSYNC_EUNAVAILABLE : rc;
    }
    rl->backoff_ms = BACKOFF_MIN_MS;
    rl->retry_at_ms = 0;
    rl->stats.connects++;
    rl->last_error[0] = '\0';
    if (fresh) *fresh = true;
    return 0;
}

/* One command, one round trip; *out gets any reply, error replies too. An
 * idempotent command (a read) that finds a reused connection dead is sent
 * once more on a fresh one; a write never is: its outcome is unknown. */
static int command(rl_log *rl, int argc, const char **argv, const size_t *argvlen, bool idempotent,
                   redisReply **out)
{
    pipe_guard g;
    guard_begin(&g);
    int rc;
    for (int attempt = 0;; attempt++) {
        bool fresh;
        rc = ensure_connected(rl, &fresh);
        if (rc != 0) break;
        if (redisAppendCommandArgv(rl->c, argc, argv, argvlen) != REDIS_OK) {
            set_error(rl, "%s: out of memory", argv[0]);
            drop_connection(rl, false); /* nothing was sent */
            rc = DSYNC_ENOMEM;
            break;
        }
        rl->stats.round_trips++;
        void *r = NULL;
        if (redisGetReply(rl->c, &r) == REDIS_OK) {
            *out = r;
            break;
        }
        rc = io_error(rl, argv[0]);
        if (!(idempotent && !fresh && attempt == 0)) break;
    }
    guard_end(&g);
    return rc;
}

/* EVALSHA with the script's arguments (argv[3..]), falling back to EVAL
 * when Redis lost the script: NOSCRIPT means it did not run, so sending it
 * again is safe even for a write. argv[0..2] are filled in here. */
static int run_script(rl_log *rl, int script, int argc, const char **argv, size_t *argvlen,
                      bool idempotent, redisReply **out)
{
    argv[0] = "EVALSHA";
    argvlen[0] = 7;
    argv[1] = rl->sha[script];
    argvlen[1] = 40;
    int rc = command(rl, argc, argv, argvlen, idempotent, out);
    if (rc == 0 && is_noscript(*out)) {
        freeReplyObject(*out);
        *out = NULL;
        argv[0] = "EVAL";
        argvlen[0] = 4;
        argv[1] = script_src[script];
        argvlen[1] = strlen(script_src[script]);
        rc = command(rl, argc, argv, argvlen, idempotent, out);
    }
    return rc;
}

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

static size_t format_epoch(char *buf, uint64_t epoch)
{
    return (size_t)snprintf(buf, 24, "%" PRIu64, epoch);
}

/* Parses a stored epoch; a missing or malformed one reads as 0. */
static uint64_t parse_epoch(const char *s, size_t len)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > UINT64_MAX / 10 || (v == UINT64_MAX / 10 && d > UINT64_MAX % 10)) return 0;
        v = v * 10 + d;
    }
    return v;
}

/* ---- open and close ---------------------------------------------------- */

static int parse_url(const char *url, rl_log *rl, char *msg, size_t msglen)
{
    static const char scheme[] = "redis://";
    if (!url || strncmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(msg, msglen, "Redis URL must start with redis://");
        return DSYNC_ECONFIG;
    }
    const char *p = url + sizeof scheme - 1;
    const char *host = p, *host_end;
    if (strchr(p, '@')) {
        snprintf(msg, msglen, "credentials in the Redis URL are not supported");
        return DSYNC_ECONFIG;
    }
    if (*p == '[') {
        host = ++p;
        host_end = strchr(p, ']');
        if (!host_end) {
            snprintf(msg, msglen, "unclosed [ in the Redis URL");
            return DSYNC_ECONFIG;
        }
        p = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/");
        p = host_end;
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen == 0 || hlen >= sizeof rl->host) {
        snprintf(msg, msglen, "bad host in the Redis URL");
        return DSYNC_ECONFIG;
    }
    memcpy(rl->host, host, hlen);
    rl->host[hlen] = '\0';

    long port = 6379;
    if (*p == ':') {
        p++;
        size_t n = strspn(p, "0123456789");
        port = n > 0 && n <= 5 ? strtol(p, NULL, 10) : 0;
        if (port < 1 || port > 65535) {
            snprintf(msg, msglen, "bad port in the Redis URL");
            return DSYNC_ECONFIG;
        }
        p += n;
    }
    long db = 0;
    if (*p == '/') {
        p++;
        size_t n = strspn(p, "0123456789");
        if (n > 9) {
            snprintf(msg, msglen, "bad database number in the Redis URL");
            return DSYNC_ECONFIG;
        }
        if (n > 0) db = strtol(p, NULL, 10);
        p += n;
    }
    if (*p != '\0') {
        snprintf(msg, msglen, "unexpected \"%.32s\" in the Redis URL", p);
        return DSYNC_ECONFIG;
    }
    rl->port = (int)port;
    rl->db = (int)db;
    return 0;
}

int rl_open(const char *url, rl_log **out, char *err, size_t errlen)
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
    ut_buf_init(&rl->bytes);
    ut_map_init(&rl->batch_of);
    rl->backoff_ms = BACKOFF_MIN_MS;
    int rc = parse_url(url, rl, err, errlen);
    if (rc == 0) {
        pipe_guard g;
        guard_begin(&g);
        rc = ensure_connected(rl, NULL);
        guard_end(&g);
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
    for (size_t i = 0; i < rl->cap_batches; i++)
        free(rl->batches[i].recs);
    free(rl->batches);
    ut_map_close(&rl->batch_of);
    ut_buf_free(&rl->bytes);
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
    size_t argvlen[5] = {0, 0, 1, make_key(key, topic, "epoch"), format_epoch(ep, epoch)};
    redisReply *r = NULL;
    int rc = run_script(rl, S_CLAIM, 5, argv, argvlen, false, &r);
    if (rc != 0) return rc;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = reply_error(rl, "claim", r);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_INTEGER ||
               r->element[1]->type != REDIS_REPLY_STRING) {
        set_error(rl, "claim: unexpected reply");
        rc = DSYNC_EIO;
    } else {
        if (stored) *stored = parse_epoch(r->element[1]->str, r->element[1]->len);
        rc = r->element[0]->integer == 1 ? 0 : DSYNC_EEXIST;
        if (rc)
            set_error(rl, "claim of %s at %" PRIu64 ": epoch %.*s owns it", topic, epoch,
                      (int)r->element[1]->len, r->element[1]->str);
    }
    freeReplyObject(r);
    return rc;
}

/* ---- batch ------------------------------------------------------------- */

static topic_batch *find_batch(rl_log *rl, const char *topic)
{
    if (rl->last_batch && strcmp(rl->batches[rl->last_batch - 1].topic, topic) == 0)
        return &rl->batches[rl->last_batch - 1];
    uintptr_t i = (uintptr_t)ut_map_get(&rl->batch_of, topic);
    if (!i) return NULL;
    rl->last_batch = i;
    return &rl->batches[i - 1];
}

static topic_batch *new_batch(rl_log *rl, const char *topic, uint64_t epoch)
{
    if (rl->n_batches == rl->cap_batches) {
        size_t ncap = rl->cap_batches ? rl->cap_batches * 2 : 8;
        topic_batch *nb = realloc(rl->batches, ncap * sizeof *nb);
        if (!nb) return NULL;
        memset(nb + rl->cap_batches, 0, (ncap - rl->cap_batches) * sizeof *nb);
        rl->batches = nb;
        rl->cap_batches = ncap;
    }
    size_t i = rl->n_batches;
    if (ut_map_put(&rl->batch_of, topic, (void *)(uintptr_t)(i + 1)) != 0) return NULL;
    topic_batch *b = &rl->batches[i];
    snprintf(b->topic, sizeof b->topic, "%s", topic);
    b->epoch = epoch;
    b->n = 0;
    rl->n_batches++;
    rl->last_batch = i + 1;
    return b;
}

int rl_append(rl_log *rl, const char *topic, uint64_t epoch, const void *data, size_t len)
{
    if (!rl || !valid_topic(topic) || epoch == 0 || (!data && len)) return DSYNC_EINVAL;
    if (len > RL_RECORD_MAX || rl->pending >= RL_BATCH_MAX_RECORDS ||
        rl->bytes.len + len > RL_BATCH_MAX_BYTES)
        return DSYNC_ETOOBIG;
    topic_batch *b = find_batch(rl, topic);
    if (b && b->epoch != epoch) return DSYNC_EINVAL;
    if (!b && !(b = new_batch(rl, topic, epoch))) return DSYNC_ENOMEM;
    if (b->n == b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 16;
        rec_span *nr = realloc(b->recs, ncap * sizeof *nr);
        if (!nr) return DSYNC_ENOMEM;
        b->recs = nr;
        b->cap = ncap;
    }
    size_t off = rl->bytes.len;
    if (ut_buf_append(&rl->bytes, data, len) != 0) return DSYNC_ENOMEM;
    b->recs[b->n].off = off;
    b->recs[b->n].len = len;
    b->n++;
    rl->pending++;
    return 0;
}

size_t rl_pending(const rl_log *rl)
{
    return rl ? rl->pending : 0;
}

/* The script's answer for one topic's batch. */
static int append_status(rl_log *rl, topic_batch *b, const redisReply *r)
{
    if (is_noscript(r)) return ST_NOSCRIPT;
    if (r->type == REDIS_REPLY_ERROR) return reply_error(rl, b->topic, r);
    if (r->type != REDIS_REPLY_INTEGER) {
        set_error(rl, "flush of %s: unexpected reply", b->topic);
        return DSYNC_EIO;
    }
    if (r->integer < 0) {
        set_error(rl, "flush of %s at epoch %" PRIu64 ": fenced off", b->topic, b->epoch);
        return DSYNC_EEXIST;
    }
    b->log_len = (uint64_t)r->integer;
    return 0;
}

/* Sends one script call per batch whose status is `want` (EVAL instead of
 * EVALSHA when eval), pipelined, then reads the replies in order. */
static void send_batches(rl_log *rl, int want, bool eval)
{
    char kepoch[KEY_MAX], klog[KEY_MAX], ep[24];
    rl->argv[0] = eval ? "EVAL" : "EVALSHA";
    rl->argvlen[0] = strlen(rl->argv[0]);
    rl->argv[1] = eval ? script_src[S_APPEND] : rl->sha[S_APPEND];
    rl->argvlen[1] = strlen(rl->argv[1]);
    rl->argv[2] = "2";
    rl->argvlen[2] = 1;
    rl->argv[3] = kepoch;
    rl->argv[4] = klog;
    rl->argv[5] = ep;
    size_t sent = 0;
    for (size_t i = 0; i < rl->n_batches; i++) {
        topic_batch *b = &rl->batches[i];
        if (b->status != want) continue;
        rl->argvlen[3] = make_key(kepoch, b->topic, "epoch");
        rl->argvlen[4] = make_key(klog, b->topic, "log");
        rl->argvlen[5] = format_epoch(ep, b->epoch);
        for (size_t k = 0; k < b->n; k++) {
            rl->argv[6 + k] = rl->bytes.data + b->recs[k].off;
            rl->argvlen[6 + k] = b->recs[k].len;
        }
        if (redisAppendCommandArgv(rl->c, (int)(6 + b->n), rl->argv, rl->argvlen) != REDIS_OK) {
            /* Nothing has been written yet: dropping the context with its
             * output buffer leaves every batch unapplied. */
            set_error(rl, "flush: out of memory");
            drop_connection(rl, false);
            for (size_t j = 0; j < rl->n_batches; j++)
                if (rl->batches[j].status == want) rl->batches[j].status = DSYNC_ENOMEM;
            return;
        }
        sent++;
    }
    if (sent == 0) return;
    rl->stats.round_trips++;
    for (size_t i = 0; i < rl->n_batches; i++) {
        topic_batch *b = &rl->batches[i];
        if (b->status != want) continue;
        redisReply *r = NULL;
        if (redisGetReply(rl->c, (void **)&r) != REDIS_OK) {
            io_error(rl, "flush"); /* this batch and the later ones: unknown */
            for (size_t j = i; j < rl->n_batches; j++)
                if (rl->batches[j].status == want) rl->batches[j].status = DSYNC_EUNAVAILABLE;
            return;
        }
        b->status = append_status(rl, b, r);
        freeReplyObject(r);
    }
}

static void reset_batch(rl_log *rl)
{
    for (size_t i = 0; i < rl->n_batches; i++) {
        ut_map_del(&rl->batch_of, rl->batches[i].topic);
        rl->batches[i].n = 0;
    }
    rl->n_batches = 0;
    rl->last_batch = 0;
    rl->pending = 0;
    rl->bytes.len = 0;
    rl->bytes.oom = false;
}

int rl_flush(rl_log *rl, rl_flush_fn fn, void *ctx)
{
    if (!rl) return DSYNC_EINVAL;
    if (rl->pending == 0) {
        reset_batch(rl); /* batches left empty by a failed append */
        return 0;
    }
    size_t most = 0;
    for (size_t i = 0; i < rl->n_batches; i++) {
        topic_batch *b = &rl->batches[i];
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
    if (rc == 0) {
        pipe_guard g;
        guard_begin(&g);
        rc = ensure_connected(rl, NULL);
        if (rc == 0) send_batches(rl, ST_TODO, false);
        /* Redis lost the script (SCRIPT FLUSH, a failover): it did not
         * run, so send those topics again with the script's text. */
        if (rc == 0 && rl->c) send_batches(rl, ST_NOSCRIPT, true);
        guard_end(&g);
    }

    int worst = 0;
    bool unknown = false, fenced = false;
    for (size_t i = 0; i < rl->n_batches; i++) {
        topic_batch *b = &rl->batches[i];
        if (b->n == 0) continue;
        if (b->status > 0) b->status = rc ? rc : DSYNC_EUNAVAILABLE; /* never sent */
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
    reset_batch(rl);
    if (unknown) return DSYNC_EUNAVAILABLE;
    if (worst) return worst;
    return fenced ? DSYNC_EEXIST : 0;
}

/* ---- load and rewrite -------------------------------------------------- */

int rl_load(rl_log *rl, const char *topic, rl_load_fn fn, void *ctx)
{
    if (!rl || !valid_topic(topic) || !fn) return DSYNC_EINVAL;
    char ksnap[KEY_MAX], klog[KEY_MAX];
    const char *argv[5] = {NULL, NULL, "2", ksnap, klog};
    size_t argvlen[5] = {0, 0, 1, make_key(ksnap, topic, "snap"), make_key(klog, topic, "log")};
    redisReply *r = NULL;
    int rc = run_script(rl, S_LOAD, 5, argv, argvlen, true, &r);
    if (rc != 0) return rc;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = reply_error(rl, "load", r);
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
        set_error(rl, "load of %s: unexpected reply", topic);
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
    topic_batch *b = find_batch(rl, topic);
    if (b && b->n > 0) {
        set_error(rl, "rewrite of %s: records are buffered; flush first", topic);
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
                         format_epoch(ep, epoch),
                         len};
    redisReply *r = NULL;
    int rc = run_script(rl, S_REWRITE, 8, argv, argvlen, false, &r);
    if (rc != 0) return rc;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = reply_error(rl, "rewrite", r);
    } else if (r->type != REDIS_REPLY_INTEGER) {
        set_error(rl, "rewrite of %s: unexpected reply", topic);
        rc = DSYNC_EIO;
    } else if (r->integer < 0) {
        set_error(rl, "rewrite of %s at epoch %" PRIu64 ": fenced off", topic, epoch);
        rc = DSYNC_EEXIST;
    }
    freeReplyObject(r);
    return rc;
}

/* ---- topics and info --------------------------------------------------- */

int rl_topics(rl_log *rl, rl_topic_fn fn, void *ctx)
{
    if (!rl || !fn) return DSYNC_EINVAL;
    static const size_t pre = sizeof KEY_PREFIX - 1, suf = sizeof EPOCH_SUFFIX - 1;
    ut_map seen;
    ut_map_init(&seen);
    char cursor[32] = "0";
    int rc = 0;
    do {
        const char *argv[6] = {"SCAN",  cursor,    "MATCH", KEY_PREFIX "*" EPOCH_SUFFIX,
                               "COUNT", SCAN_COUNT};
        redisReply *r = NULL;
        /* A SCAN sent again with the same cursor is harmless. */
        rc = command(rl, 6, argv, NULL, true, &r);
        if (rc != 0) break;
        if (r->type == REDIS_REPLY_ERROR) {
            rc = reply_error(rl, "SCAN", r);
        } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
                   r->element[0]->type != REDIS_REPLY_STRING ||
                   r->element[0]->len >= sizeof cursor ||
                   r->element[1]->type != REDIS_REPLY_ARRAY) {
            set_error(rl, "SCAN: unexpected reply");
            rc = DSYNC_EIO;
        } else {
            memcpy(cursor, r->element[0]->str, r->element[0]->len);
            cursor[r->element[0]->len] = '\0';
            const redisReply *keys = r->element[1];
            for (size_t i = 0; rc == 0 && i < keys->elements; i++) {
                const redisReply *k = keys->element[i];
                if (k->type != REDIS_REPLY_STRING || k->len <= pre + suf) continue;
                size_t tlen = k->len - pre - suf;
                char topic[RL_TOPIC_MAX + 1];
                if (tlen > RL_TOPIC_MAX || memchr(k->str + pre, '\0', tlen)) continue;
                memcpy(topic, k->str + pre, tlen);
                topic[tlen] = '\0';
                if (!valid_topic(topic) || ut_map_get(&seen, topic)) continue;
                if (ut_map_put(&seen, topic, &seen) != 0) {
                    rc = DSYNC_ENOMEM;
                    break;
                }
                rc = fn(ctx, topic);
            }
        }
        freeReplyObject(r);
    } while (rc == 0 && strcmp(cursor, "0") != 0);
    ut_map_close(&seen);
    return rc;
}

/* CONFIG GET name -> value into out. */
static int config_get(rl_log *rl, const char *name, char *out, size_t outlen)
{
    const char *argv[3] = {"CONFIG", "GET", name};
    redisReply *r = NULL;
    int rc = command(rl, 3, argv, NULL, true, &r);
    if (rc != 0) return rc;
    if (r->type == REDIS_REPLY_ERROR) {
        rc = reply_error(rl, "CONFIG GET", r);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[1]->type != REDIS_REPLY_STRING) {
        set_error(rl, "CONFIG GET %s: unexpected reply", name);
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
