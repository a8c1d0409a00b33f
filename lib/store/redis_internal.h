/*
 * redis_internal.h: what redis_log.c and redis_conn.c share: the handle
 * and the connection layer's calls (prefix rlc_).
 */
#ifndef DSYNC_STORE_REDIS_INTERNAL_H
#define DSYNC_STORE_REDIS_INTERNAL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "store/redis_log.h"
#include "util/util.h"

#define BACKOFF_MIN_MS 50u
#define BACKOFF_MAX_MS 1000u
#define RPUSH_CHUNK "1000"
#define SCAN_COUNT "1000"
#define KEY_PREFIX "dsync:q:{"
#define EPOCH_SUFFIX "}:epoch"
#define KEY_MAX (RL_TOPIC_MAX + 32)

enum { S_CLAIM, S_APPEND, S_REWRITE, S_LOAD, S_CSTORE, S_CLOAD, S_COUNT };

/* ---- the handle -------------------------------------------------------- */

typedef struct {
    size_t off, len; /* in the batch_set's bytes */
} rec_span;

/* Internal flush states of a batch, beside the DSYNC_E* results. */
#define ST_TODO 1
#define ST_NOSCRIPT 2

/* One topic's records in a flush. Slots are reused across flushes (recs
 * keeps its capacity). */
typedef struct {
    char topic[RL_TOPIC_MAX + 1];
    uint64_t epoch;
    rec_span *recs;
    size_t n, cap;
    int status;
    uint64_t log_len;
} topic_batch;

/* The records of one flush: buffered (rl_log.buf) or in flight. */
typedef struct {
    ut_buf bytes;          /* every record, back to back */
    topic_batch *batches;  /* in order of first append */
    size_t n_batches, cap_batches;
    size_t last_batch; /* index + 1 of the last appended-to batch */
    ut_map batch_of;   /* topic -> index + 1 */
    size_t pending;    /* records */
} batch_set;

struct rl_log {
    char host[256];
    int port;
    int db;
    redisContext *c;       /* NULL: disconnected */
    uint64_t retry_at_ms;  /* no connect attempt before this */
    unsigned backoff_ms;   /* the wait after the next failed connect */
    unsigned wait_ms;      /* the wait limit (redis_log.h, "Connection") */
    unsigned sock_wait_ms; /* the timeout set on c's socket now */
    char sha[S_COUNT][41]; /* from SCRIPT LOAD on connect */
    batch_set sets[2];
    batch_set *buf; /* rl_append fills it */
    batch_set *fly; /* sent by rl_flush_start, until rl_flush_finish */
    bool flying;    /* fly holds a flush */
    bool fly_read;  /* every fate in fly is known */
    size_t fly_next;          /* the batch whose reply comes next */
    uint64_t fly_deadline_ms; /* its replies are due by then */
    const char **argv; /* scratch for the flush's commands */
    size_t *argvlen;
    size_t argv_cap;
    rl_stats stats;
    char last_error[256];
};

/* ---- redis_conn.c ---------------------------------------------------- */

/* The Lua scripts' sources, by S_*. */
extern const char *const rlc_scripts[S_COUNT];

/* hiredis writes with write(2): SIGPIPE is blocked in this thread around
 * our I/O and one we raised is consumed (see redis_conn.c). */
typedef struct {
    sigset_t old;
    bool was_pending;
} pipe_guard;
void rlc_guard_begin(pipe_guard *g);
void rlc_guard_end(pipe_guard *g);

void rlc_set_error(rl_log *rl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Canonical decimal (at most 20 digits and a NUL into buf); its length. */
size_t rlc_format_u64(char *buf, uint64_t v);
/* The inverse; anything malformed or over UINT64_MAX reads as 0. */
uint64_t rlc_parse_u64(const char *s, size_t len);
/* Splits redis://host[:port][/db] into rl; DSYNC_ECONFIG with msg. */
int rlc_parse_url(const char *url, rl_log *rl, char *msg, size_t msglen);
/* Frees the context; with back_off (a failed connect, a stalled server)
 * the next connect waits out a doubling backoff, else it may come at once. */
void rlc_drop(rl_log *rl, bool back_off);
/* The context died mid-command, or its wait limit passed: outcome unknown,
 * DSYNC_EUNAVAILABLE. A timeout backs off the next connect. */
int rlc_io_error(rl_log *rl, const char *what);
/* The server let a deadline pass (what says which): as a timeout in
 * rlc_io_error, the context is dropped and the next connect backs off. */
int rlc_stalled(rl_log *rl, const char *what);
/* An error reply's code (transient ones DSYNC_EUNAVAILABLE), text kept. */
int rlc_reply_error(rl_log *rl, const char *what, const redisReply *r);
bool rlc_is_noscript(const redisReply *r);
/* Connects (SELECT, SCRIPT LOADs) unless connected; under a pipe_guard. */
int rlc_connect(rl_log *rl, bool *fresh);
/* Reads the replies of a flush in flight to the end (blocking), so the
 * connection is free for another command. */
void rlc_settle(rl_log *rl);
/* rlc_pipeline's and rlc_command's flags. */
enum {
    RLC_IDEMPOTENT = 1, /* may run twice: sent once more on a fresh connection if a reused one is dead */
    RLC_BULK = 2,       /* the replies may take RL_COMMAND_TIMEOUT_MS, beyond the wait limit */
};
/* One command of a pipeline. */
typedef struct {
    int argc;
    const char **argv;
    const size_t *argvlen;
} rlc_cmd;
/* n commands in one round trip (after rlc_settle), each reply (error
 * replies too) in replies[i]. With RLC_IDEMPOTENT, a reused connection
 * found dead before the first reply is replaced and all sent once more;
 * otherwise nothing is sent twice. On an I/O error the replies not
 * received stay NULL (their outcome unknown) and the result is
 * DSYNC_EUNAVAILABLE; a failed connect leaves all NULL. */
int rlc_pipeline(rl_log *rl, size_t n, const rlc_cmd *cmds, int flags, redisReply **replies);
/* A pipeline of one: *out gets the reply, error replies too. */
int rlc_command(rl_log *rl, int argc, const char **argv, const size_t *argvlen, int flags,
                redisReply **out);
/* EVALSHA of script (argv[0..2] filled in here), EVAL after NOSCRIPT. */
int rlc_run_script(rl_log *rl, int script, int argc, const char **argv, size_t *argvlen,
                   int flags, redisReply **out);

#endif
