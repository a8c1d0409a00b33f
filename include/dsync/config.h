/*
 * config.h: a node's configuration, from the environment and a .env file.
 *
 * Every variable starts DSYNC_; .env.example at the top of the source tree
 * lists each with its default. dsync_config_load() reads them; an invalid
 * value fails with a message that names the variable.
 */
#ifndef DSYNC_CONFIG_H
#define DSYNC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSYNC_MAX_PEERS 16
#define DSYNC_ADDR_MAX 128
#define DSYNC_PATH_MAX 1024

typedef enum {
    DSYNC_LOG_DEBUG = 0,
    DSYNC_LOG_INFO = 1,
    DSYNC_LOG_WARN = 2,
    DSYNC_LOG_ERROR = 3,
} dsync_log_level;

/* Log sink: the library calls it from any of its threads. */
typedef void (*dsync_log_fn)(void *ctx, dsync_log_level level, const char *msg);

typedef struct {
    uint64_t id;
    char addr[DSYNC_ADDR_MAX]; /* host:port of its peer transport */
} dsync_peer;

typedef struct {
    uint64_t node_id;               /* DSYNC_NODE_ID, >= 1 */
    char http_addr[DSYNC_ADDR_MAX]; /* DSYNC_HTTP_ADDR, host:port */
    char peer_addr[DSYNC_ADDR_MAX]; /* DSYNC_PEER_ADDR, host:port */
    size_t n_peers;                 /* DSYNC_PEERS; 0 = single node */
    dsync_peer peers[DSYNC_MAX_PEERS];
    char data_dir[DSYNC_PATH_MAX];    /* DSYNC_DATA_DIR */
    char redis_url[DSYNC_PATH_MAX];   /* DSYNC_REDIS_URL; "" = local file */
    uint64_t max_body_bytes;          /* DSYNC_MAX_BODY_BYTES */
    int fault_injection;              /* DSYNC_FAULT_INJECTION, 0 or 1 */
    uint64_t lock_default_ttl_ms;     /* DSYNC_LOCK_DEFAULT_TTL_MS */
    uint64_t lock_max_ttl_ms;         /* DSYNC_LOCK_MAX_TTL_MS */
    uint64_t lock_max_wait_ms;        /* DSYNC_LOCK_MAX_WAIT_MS */
    uint32_t http_threads;            /* DSYNC_HTTP_THREADS */
    uint64_t http_request_timeout_ms; /* DSYNC_HTTP_REQUEST_TIMEOUT_MS */
    dsync_log_level log_level;        /* DSYNC_LOG_LEVEL: debug|info|warn|error */
    uint64_t snapshot_entries;        /* DSYNC_SNAPSHOT_ENTRIES */
    uint64_t raft_tick_ms;            /* DSYNC_RAFT_TICK_MS */
    uint64_t raft_election_ticks;     /* DSYNC_ELECTION_TICKS */
    int join;                         /* DSYNC_JOIN: 1 for a node added to a running cluster */
    uint64_t queue_visibility_ms;     /* DSYNC_QUEUE_VISIBILITY_MS */
    uint32_t queue_max_deliveries;    /* DSYNC_QUEUE_MAX_DELIVERIES */
    uint64_t queue_max_wait_ms;       /* DSYNC_QUEUE_MAX_WAIT_MS */
    uint64_t queue_rewrite_bytes;     /* DSYNC_QUEUE_REWRITE_BYTES */
    uint64_t cache_max_entries;       /* DSYNC_CACHE_MAX_ENTRIES */
    uint64_t cache_max_bytes;         /* DSYNC_CACHE_MAX_BYTES */
    int cache_write_through;          /* DSYNC_CACHE_WRITE_POLICY: 1 write-through, 0 write-back */
    uint64_t cache_ttl_ms;            /* DSYNC_CACHE_TTL_MS; 0: entries never expire */

    /* Not from the environment: set by the embedder. */
    dsync_log_fn log_fn; /* NULL: the library logs nothing */
    void *log_ctx;
} dsync_config;

/* Describes one configuration variable, for --help and .env.example. */
typedef struct {
    const char *name;
    const char *default_value;
    const char *help;
} dsync_config_var;

/* The table of every variable, ended by an entry with name NULL. */
const dsync_config_var *dsync_config_vars(void);

/* Fills cfg with every default. */
void dsync_config_defaults(dsync_config *cfg);

/*
 * Loads the configuration: defaults, then the file env_path if it is not
 * NULL and exists (KEY=VALUE lines, # comments, optional quotes), then the
 * process environment, which wins. On an invalid value returns DSYNC_ECONFIG
 * and writes a message naming the variable into err (errlen bytes).
 */
int dsync_config_load(dsync_config *cfg, const char *env_path, char *err, size_t errlen);

/* Sets one variable by name, as the loader does; same errors. */
int dsync_config_set(dsync_config *cfg, const char *name, const char *value, char *err,
                     size_t errlen);

/* Checks the values against each other (e.g. this node among DSYNC_PEERS). */
int dsync_config_validate(const dsync_config *cfg, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
