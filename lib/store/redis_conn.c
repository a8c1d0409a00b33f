/*
 * redis_conn.c: the connection half of the Redis record log: URL parsing,
 * one hiredis context with reconnect and backoff, SIGPIPE kept away from
 * the embedder, commands and the Lua scripts with their EVAL fallback.
 * redis_log.c builds the log's operations on top.
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
#include "store/redis_internal.h"
#include "util/util.h"

/* ---- scripts ----------------------------------------------------------- */

/* Epochs are canonical decimal strings (no leading zeros), so "newer" is
 * longer, or as long and greater at the first differing digit: exact for
 * all of uint64_t, where tonumber() would round past 2^53. Byte compares
 * rather than Lua's `<` on strings, which follows the locale (strcoll). */
#define LUA_NEWER                                                                                  \
    "local function newer(a, b)\n"                                                                 \
    "  if #a ~= #b then return #a > #b end\n"                                                      \
    "  for i = 1, #a do\n"                                                                         \
    "    local x, y = string.byte(a, i), string.byte(b, i)\n"                                      \
    "    if x ~= y then return x > y end\n"                                                        \
    "  end\n"                                                                                      \
    "  return false\n"                                                                             \
    "end\n"

const char *const rlc_scripts[S_COUNT] = {
    /* S_CLAIM. KEYS: epoch. ARGV: epoch. -> {1 set | 0 refused, stored} */
    LUA_NEWER
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

    /* S_CSTORE (redis_cache.c). KEYS: the value's hash. ARGV: value, epoch,
     * seq, fence (the writer's view epoch; "0": none). Refuses a write whose
     * fence is below the key's (field f: the highest view epoch that loaded
     * it), then keeps the value only if its version (epoch, seq) is above
     * the stored one. -> 1 stored, 0 kept the newer one there, -1 fenced. */
    LUA_NEWER
    "local cur = redis.call('HMGET', KEYS[1], 'e', 's', 'f')\n"
    "if cur[3] and ARGV[4] ~= '0' and newer(cur[3], ARGV[4]) then return -1 end\n"
    "if cur[1] and cur[2] and not (newer(ARGV[2], cur[1]) or\n"
    "    (ARGV[2] == cur[1] and newer(ARGV[3], cur[2]))) then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'v', ARGV[1], 'e', ARGV[2], 's', ARGV[3])\n"
    "return 1\n",

    /* S_CLOAD (redis_cache.c). KEYS: the value's hash. ARGV: fence (the
     * loader's view epoch). Raises the key's fence to it when the key has
     * a value. -> {value, epoch, seq}, as HMGET (nils when absent). */
    LUA_NEWER
    "local cur = redis.call('HMGET', KEYS[1], 'v', 'e', 's', 'f')\n"
    "if cur[1] and (not cur[4] or newer(ARGV[1], cur[4])) then\n"
    "  redis.call('HSET', KEYS[1], 'f', ARGV[1])\n"
    "end\n"
    "return {cur[1], cur[2], cur[3]}\n",
};

size_t rlc_format_u64(char *buf, uint64_t v)
{
    size_t n = ut_u64_dec(buf, v);
    buf[n] = '\0';
    return n;
}

uint64_t rlc_parse_u64(const char *s, size_t len)
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

void rlc_set_error(rl_log *rl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rl->last_error, sizeof rl->last_error, fmt, ap);
    va_end(ap);
}

static struct timeval rlc_ms_to_tv(unsigned ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    return tv;
}

/* ---- SIGPIPE ------------------------------------------------------------ */

/* hiredis writes with write(2): a peer that closed the socket raises
 * SIGPIPE, whose default action kills the process. Block it in this thread
 * around our I/O and consume one we raised (the technique libcurl uses),
 * leaving a SIGPIPE that was already pending alone. */

void rlc_guard_begin(pipe_guard *g)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

void rlc_guard_end(pipe_guard *g)
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

/* Frees the context. After a failed connect, or a server that let the
 * wait limit pass, the next attempt waits out a doubling backoff: an
 * attempt on a stalled server costs its caller a whole wait limit. After
 * another failure on a working connection the next call connects at once
 * (the server may well be fine). */
void rlc_drop(rl_log *rl, bool back_off)
{
    if (rl->c) redisFree(rl->c);
    rl->c = NULL;
    if (back_off) {
        rl->retry_at_ms = ut_now_ms() + rl->backoff_ms;
        rl->backoff_ms = rl->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : rl->backoff_ms * 2;
    } else {
        rl->retry_at_ms = 0;
    }
}

/* Whether c's last error is its socket timeout: hiredis 0.14 reports a
 * read or write that timed out (EAGAIN on a blocking socket) as an I/O
 * error with strerror's text. */
static bool timed_out(const redisContext *c)
{
    return c && c->err == REDIS_ERR_IO &&
           (strcmp(c->errstr, strerror(EAGAIN)) == 0 || strcmp(c->errstr, strerror(EWOULDBLOCK)) == 0);
}

/* An I/O error on the context: the outcome of whatever was in flight is
 * unknown and the context is dead (hiredis 0.14). */
int rlc_io_error(rl_log *rl, const char *what)
{
    bool stalled = timed_out(rl->c);
    if (stalled)
        rlc_set_error(rl, "%s: no answer within %u ms", what, rl->sock_wait_ms);
    else
        rlc_set_error(rl, "%s: %s", what,
                      rl->c && rl->c->errstr[0] ? rl->c->errstr : "connection lost");
    rlc_drop(rl, stalled);
    return DSYNC_EUNAVAILABLE;
}

int rlc_stalled(rl_log *rl, const char *what)
{
    rlc_set_error(rl, "%s", what);
    rlc_drop(rl, true);
    return DSYNC_EUNAVAILABLE;
}

/* Sets the socket's timeout to ms unless it is set so already. */
static void use_wait(rl_log *rl, unsigned ms)
{
    if (rl->c && rl->sock_wait_ms != ms && redisSetTimeout(rl->c, rlc_ms_to_tv(ms)) == REDIS_OK)
        rl->sock_wait_ms = ms;
}

/* A failed connect attempt: counted, and the next one backs off. */
static void connect_failed(rl_log *rl)
{
    rl->stats.connect_failures++;
    rlc_drop(rl, true);
}

/* Maps an error reply to a code and records its text. */
int rlc_reply_error(rl_log *rl, const char *what, const redisReply *r)
{
    static const char *const transient[] = {"LOADING",     "BUSY",       "OOM",
                                            "READONLY",    "MASTERDOWN", "TRYAGAIN",
                                            "CLUSTERDOWN", "MISCONF",    "NOREPLICAS"};
    rlc_set_error(rl, "%s: %.*s", what, (int)(r->len > 200 ? 200 : r->len), r->str);
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++) {
        size_t n = strlen(transient[i]);
        if (r->len >= n && memcmp(r->str, transient[i], n) == 0) return DSYNC_EUNAVAILABLE;
    }
    return DSYNC_EIO;
}

bool rlc_is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->len >= 8 && memcmp(r->str, "NOSCRIPT", 8) == 0;
}

/* Connects unless connected: the TCP connect, then SELECT and the SCRIPT
 * LOADs in one pipelined round trip. Call under a pipe_guard. */
int rlc_connect(rl_log *rl, bool *fresh)
{
    if (fresh) *fresh = false;
    if (rl->c) return 0;
    if (ut_now_ms() < rl->retry_at_ms) return DSYNC_EUNAVAILABLE; /* last_error says why */

    redisContext *c = redisConnectWithTimeout(rl->host, rl->port, rlc_ms_to_tv(rl->wait_ms));
    if (!c || c->err) {
        rlc_set_error(rl, "connect to %s:%d: %s", rl->host, rl->port,
                      c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        connect_failed(rl);
        return DSYNC_EUNAVAILABLE;
    }
    rl->c = c;
    if (redisSetTimeout(c, rlc_ms_to_tv(rl->wait_ms)) != REDIS_OK) {
        rlc_set_error(rl, "setting the command timeout: %s", c->errstr);
        connect_failed(rl);
        return DSYNC_EUNAVAILABLE;
    }
    rl->sock_wait_ms = rl->wait_ms;
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
        const char *argv[] = {"SCRIPT", "LOAD", rlc_scripts[i]};
        ok = redisAppendCommandArgv(c, 3, argv, NULL) == REDIS_OK;
        sent++;
    }
    if (!ok) {
        rlc_set_error(rl, "connect: out of memory");
        connect_failed(rl);
        return DSYNC_ENOMEM;
    }
    rl->stats.round_trips++;
    int rc = 0;
    for (int i = 0; i < sent; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK) {
            if (timed_out(c))
                rlc_set_error(rl, "connect to %s:%d: no answer within %u ms", rl->host, rl->port,
                              rl->wait_ms);
            else
                rlc_set_error(rl, "connect to %s:%d: %s", rl->host, rl->port, c->errstr);
            connect_failed(rl);
            return DSYNC_EUNAVAILABLE;
        }
        bool select = rl->db != 0 && i == 0;
        int script = select ? -1 : i - (rl->db != 0);
        if (r->type == REDIS_REPLY_ERROR) {
            int code = rlc_reply_error(rl, select ? "SELECT" : "SCRIPT LOAD", r);
            /* A database Redis refuses, or a password it wants, is a
             * configuration error; LOADING and the like are worth retrying. */
            bool noauth = r->len >= 6 && memcmp(r->str, "NOAUTH", 6) == 0;
            if (rc == 0) rc = (select && code == DSYNC_EIO) || noauth ? DSYNC_ECONFIG : code;
        } else if (!select) {
            if (r->type != REDIS_REPLY_STRING || r->len != 40) {
                if (rc == 0) rc = DSYNC_EIO;
                rlc_set_error(rl, "SCRIPT LOAD: unexpected reply");
            } else {
                memcpy(rl->sha[script], r->str, 40);
                rl->sha[script][40] = '\0';
            }
        }
        freeReplyObject(r);
    }
    if (rc != 0) {
        connect_failed(rl);
        return rc == DSYNC_EIO ? DSYNC_EUNAVAILABLE : rc;
    }
    rl->backoff_ms = BACKOFF_MIN_MS;
    rl->retry_at_ms = 0;
    rl->stats.connects++;
    rl->last_error[0] = '\0';
    if (fresh) *fresh = true;
    return 0;
}

int rlc_pipeline(rl_log *rl, size_t n, const rlc_cmd *cmds, int flags, redisReply **replies)
{
    for (size_t i = 0; i < n; i++)
        replies[i] = NULL;
    if (n == 0) return 0;
    rlc_settle(rl); /* the replies of a flush in flight come first */
    pipe_guard g;
    rlc_guard_begin(&g);
    unsigned wait = rl->wait_ms;
    if ((flags & RLC_BULK) && wait < RL_COMMAND_TIMEOUT_MS) wait = RL_COMMAND_TIMEOUT_MS;
    int rc;
    for (int attempt = 0;; attempt++) {
        bool fresh;
        rc = rlc_connect(rl, &fresh);
        if (rc != 0) break;
        for (size_t i = 0; rc == 0 && i < n; i++)
            if (redisAppendCommandArgv(rl->c, cmds[i].argc, cmds[i].argv, cmds[i].argvlen) !=
                REDIS_OK) {
                rlc_set_error(rl, "%s: out of memory", cmds[i].argv[0]);
                rlc_drop(rl, false); /* nothing was sent */
                rc = DSYNC_ENOMEM;
            }
        if (rc != 0) break;
        rl->stats.round_trips++;
        use_wait(rl, wait);
        size_t got = 0;
        for (; got < n; got++) {
            void *r = NULL;
            if (redisGetReply(rl->c, &r) != REDIS_OK) {
                rc = rlc_io_error(rl, cmds[got].argv[0]); /* this one and the rest: unknown */
                break;
            }
            replies[got] = r;
        }
        if (rc == 0) use_wait(rl, rl->wait_ms);
        /* A reused connection found dead before any reply (a server
         * timeout closed it): all of it once more on a fresh one, if the
         * commands may run twice. */
        if (rc == 0 || got > 0 || fresh || attempt > 0 || !(flags & RLC_IDEMPOTENT)) break;
    }
    rlc_guard_end(&g);
    return rc;
}

int rlc_command(rl_log *rl, int argc, const char **argv, const size_t *argvlen, int flags,
                redisReply **out)
{
    rlc_cmd cmd = {argc, argv, argvlen};
    return rlc_pipeline(rl, 1, &cmd, flags, out);
}

/* EVALSHA with the script's arguments (argv[3..]), falling back to EVAL
 * when Redis lost the script: NOSCRIPT means it did not run, so sending it
 * again is safe even for a write. argv[0..2] are filled in here. */
int rlc_run_script(rl_log *rl, int script, int argc, const char **argv, size_t *argvlen,
                   int flags, redisReply **out)
{
    argv[0] = "EVALSHA";
    argvlen[0] = 7;
    argv[1] = rl->sha[script];
    argvlen[1] = 40;
    int rc = rlc_command(rl, argc, argv, argvlen, flags, out);
    if (rc == 0 && rlc_is_noscript(*out)) {
        freeReplyObject(*out);
        *out = NULL;
        argv[0] = "EVAL";
        argvlen[0] = 4;
        argv[1] = rlc_scripts[script];
        argvlen[1] = strlen(rlc_scripts[script]);
        rc = rlc_command(rl, argc, argv, argvlen, flags, out);
    }
    return rc;
}

int rlc_parse_url(const char *url, rl_log *rl, char *msg, size_t msglen)
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
