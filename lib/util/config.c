/*
 * config.c: the node configuration: defaults, a .env file, the environment.
 *
 * One table describes every variable: its name, default, help and parser.
 * The loader applies defaults, then the file, then the environment, and
 * each bad value fails with a message that names the variable.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsync/errors.h"
#include "util.h"

typedef int (*setter)(dsync_config *cfg, const char *name, const char *value, char *err,
                      size_t errlen);

typedef struct {
    dsync_config_var var;
    setter set;
} var_def;

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return DSYNC_ECONFIG;
}

/* Strict unsigned parse: digits only, no sign, no junk, no overflow. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s) return -1;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

static int ranged(const char *name, const char *value, uint64_t min, uint64_t max, uint64_t *out,
                  char *err, size_t errlen)
{
    uint64_t v;
    if (parse_u64(value, &v) != 0 || v < min || v > max)
        return fail(err, errlen, "%s: \"%s\" is not an integer from %llu to %llu", name, value,
                    (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

/* host:port with a non-empty host of sane characters and a port 1..65535. */
static int check_addr(const char *name, const char *value, char *err, size_t errlen)
{
    const char *colon = strrchr(value, ':');
    uint64_t port;
    if (!colon || colon == value || parse_u64(colon + 1, &port) != 0 || port == 0 || port > 65535)
        return fail(err, errlen, "%s: \"%s\" is not host:port (port 1..65535)", name, value);
    for (const char *p = value; p < colon; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_'))
            return fail(err, errlen, "%s: \"%s\" has an invalid host name", name, value);
    }
    if (strlen(value) >= DSYNC_ADDR_MAX)
        return fail(err, errlen, "%s: \"%s\" is too long", name, value);
    return 0;
}

static int set_node_id(dsync_config *c, const char *n, const char *v, char *e, size_t el)
{
    uint64_t id;
    if (parse_u64(v, &id) != 0 || id == 0)
        return fail(e, el, "%s: \"%s\" is not an integer >= 1", n, v);
    c->node_id = id;
    return 0;
}

static int set_http_addr(dsync_config *c, const char *n, const char *v, char *e, size_t el)
{
    if (check_addr(n, v, e, el) != 0) return DSYNC_ECONFIG;
    ut_strlcpy(c->http_addr, v, sizeof c->http_addr);
    return 0;
}

static int set_peer_addr(dsync_config *c, const char *n, const char *v, char *e, size_t el)
{
    if (check_addr(n, v, e, el) != 0) return DSYNC_ECONFIG;
    ut_strlcpy(c->peer_addr, v, sizeof c->peer_addr);
    return 0;
}

static const char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

static int set_peers(dsync_config *c, const char *n, const char *v, char *e, size_t el)
{
    dsync_peer peers[DSYNC_MAX_PEERS];
    size_t count = 0;
    char copy[DSYNC_MAX_PEERS * (DSYNC_ADDR_MAX + 24)];
    if (ut_strlcpy(copy, v, sizeof copy) != 0) return fail(e, el, "%s: value is too long", n);
    if (*trim(copy) == '\0') {
        c->n_peers = 0;
        return 0;
    }
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *it = (char *)trim(item);
        char *eq = strchr(it, '=');
        if (!eq) return fail(e, el, "%s: \"%s\" is not id=host:port", n, it);
        *eq = '\0';
        uint64_t id;
        if (parse_u64(trim(it), &id) != 0 || id == 0)
            return fail(e, el, "%s: peer id \"%s\" is not an integer >= 1", n, it);
        const char *addr = trim(eq + 1);
        if (check_addr(n, addr, e, el) != 0) return DSYNC_ECONFIG;
        for (size_t i = 0; i < count; i++)
            if (peers[i].id == id)
                return fail(e, el, "%s: peer id %llu appears twice", n, (unsigned long long)id);
        if (count == DSYNC_MAX_PEERS)
            return fail(e, el, "%s: more than %d peers", n, DSYNC_MAX_PEERS);
        peers[count].id = id;
        ut_strlcpy(peers[count].addr, addr, sizeof peers[count].addr);
        count++;
    }
    memcpy(c->peers, peers, count * sizeof peers[0]);
    c->n_peers = count;
    return 0;
}

static int set_data_dir(dsync_config *c, const char *n, const char *v, char *e, size_t el)
{
    /* Empty is allowed on purpose: a node with nothing on disk. */
    if (ut_strlcpy(c->data_dir, v, sizeof c->data_dir) != 0)
        return fail(e, el, "%s: must be a path of at most %d bytes", n, DSYNC_PATH_MAX - 1);
    return 0;
}

static int set_redis_url(dsync_config *c, const char *n, const char *v, char *e, size_t el)
{
    if (!*v) {
        c->redis_url[0] = '\0';
        return 0;
    }
    static const char scheme[] = "redis://";
    if (strncmp(v, scheme, sizeof scheme - 1) != 0)
        return fail(e, el, "%s: \"%s\" must look like redis://host:port[/db]", n, v);
    char hostport[DSYNC_ADDR_MAX];
    const char *rest = v + sizeof scheme - 1;
    const char *slash = strchr(rest, '/');
    size_t hlen = slash ? (size_t)(slash - rest) : strlen(rest);
    if (hlen == 0 || hlen >= sizeof hostport)
        return fail(e, el, "%s: \"%s\" must look like redis://host:port[/db]", n, v);
    memcpy(hostport, rest, hlen);
    hostport[hlen] = '\0';
    if (check_addr(n, hostport, e, el) != 0) return DSYNC_ECONFIG;
    uint64_t db;
    if (slash && (parse_u64(slash + 1, &db) != 0 || db > 15))
        return fail(e, el, "%s: \"%s\" has a database number outside 0..15", n, v);
    if (ut_strlcpy(c->redis_url, v, sizeof c->redis_url) != 0)
        return fail(e, el, "%s: value is too long", n);
    return 0;
}

#define RANGED_SETTER(fn, field, min, max)                                                         \
    static int fn(dsync_config *c, const char *n, const char *v, char *e, size_t el)               \
    {                                                                                              \
        uint64_t x = 0;                                                                            \
        if (ranged(n, v, min, max, &x, e, el) != 0) return DSYNC_ECONFIG;                          \
        c->field = x;                                                                              \
        return 0;                                                                                  \
    }

RANGED_SETTER(set_max_body, max_body_bytes, 1024, 1073741824ULL)
RANGED_SETTER(set_fault, fault_injection, 0, 1)
RANGED_SETTER(set_default_ttl, lock_default_ttl_ms, 1, 86400000ULL)
RANGED_SETTER(set_max_ttl, lock_max_ttl_ms, 1, 86400000ULL)
RANGED_SETTER(set_max_wait, lock_max_wait_ms, 0, 3600000ULL)
RANGED_SETTER(set_http_threads, http_threads, 1, 1024)
RANGED_SETTER(set_http_timeout, http_request_timeout_ms, 100, 600000)
RANGED_SETTER(set_snapshot_entries, snapshot_entries, 16, 100000000ULL)
RANGED_SETTER(set_raft_tick, raft_tick_ms, 1, 10000)
RANGED_SETTER(set_election_ticks, raft_election_ticks, 3, 1000)
RANGED_SETTER(set_join, join, 0, 1)
RANGED_SETTER(set_q_visibility, queue_visibility_ms, 1, 43200000ULL)
RANGED_SETTER(set_q_deliveries, queue_max_deliveries, 1, 1000)
RANGED_SETTER(set_q_wait, queue_max_wait_ms, 0, 600000)
RANGED_SETTER(set_q_rewrite, queue_rewrite_bytes, 65536, 1ULL << 40)
RANGED_SETTER(set_c_entries, cache_max_entries, 16, 1ULL << 32)
RANGED_SETTER(set_c_bytes, cache_max_bytes, 65536, 1ULL << 40)
RANGED_SETTER(set_c_ttl, cache_ttl_ms, 0, 1ULL << 40)

static int set_c_policy(dsync_config *c, const char *n, const char *v, char *e, size_t el)
{
    if (strcmp(v, "write-through") == 0)
        c->cache_write_through = 1;
    else if (strcmp(v, "write-back") == 0)
        c->cache_write_through = 0;
    else
        return fail(e, el, "%s: \"%s\" is not write-through or write-back", n, v);
    return 0;
}

static int set_log_level(dsync_config *c, const char *n, const char *v, char *e, size_t el)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(v, names[i]) == 0) {
            c->log_level = (dsync_log_level)i;
            return 0;
        }
    }
    return fail(e, el, "%s: \"%s\" is not one of debug, info, warn, error", n, v);
}

static const var_def vars[] = {
    {{"DSYNC_NODE_ID", "1", "this node's id, an integer >= 1"}, set_node_id},
    {{"DSYNC_HTTP_ADDR", "127.0.0.1:8081", "where the HTTP API listens (host:port)"},
     set_http_addr},
    {{"DSYNC_PEER_ADDR", "127.0.0.1:9081", "where the peer transport listens (host:port)"},
     set_peer_addr},
    {{"DSYNC_PEERS", "", "all members as id=host:port,...; empty means a single node"}, set_peers},
    {{"DSYNC_DATA_DIR", "./data/node1", "log, snapshots, local queue file; empty: memory only"},
     set_data_dir},
    {{"DSYNC_REDIS_URL", "", "redis://host:port[/db] for the queue/cache store; empty: local file"},
     set_redis_url},
    {{"DSYNC_MAX_BODY_BYTES", "1048576", "larger request bodies get 413"}, set_max_body},
    {{"DSYNC_FAULT_INJECTION", "0", "1 enables POST /admin/faults (tests only)"}, set_fault},
    {{"DSYNC_LOCK_DEFAULT_TTL_MS", "30000", "lease of a lock acquired without ttl_ms"},
     set_default_ttl},
    {{"DSYNC_LOCK_MAX_TTL_MS", "3600000", "largest ttl_ms an acquire may ask for"}, set_max_ttl},
    {{"DSYNC_LOCK_MAX_WAIT_MS", "60000", "largest wait_ms an acquire may ask for"}, set_max_wait},
    {{"DSYNC_HTTP_THREADS", "16", "HTTP worker threads"}, set_http_threads},
    {{"DSYNC_HTTP_REQUEST_TIMEOUT_MS", "10000",
      "deadline for a request's headers, and again for its body"},
     set_http_timeout},
    {{"DSYNC_LOG_LEVEL", "info", "debug, info, warn or error"}, set_log_level},
    {{"DSYNC_SNAPSHOT_ENTRIES", "10000", "snapshot the state and compact the log every N entries"},
     set_snapshot_entries},
    {{"DSYNC_RAFT_TICK_MS", "50", "Raft's clock: a leader sends heartbeats every tick"},
     set_raft_tick},
    {{"DSYNC_ELECTION_TICKS", "10",
      "a follower that hears no leader for 1-2x this many ticks starts an election"},
     set_election_ticks},
    {{"DSYNC_JOIN", "0",
      "1 for a node being added to a running cluster: it waits for the leader instead of "
      "starting elections"},
     set_join},
    {{"DSYNC_QUEUE_VISIBILITY_MS", "30000",
      "how long a consumed message stays in flight when consume gives no visibility_ms"},
     set_q_visibility},
    {{"DSYNC_QUEUE_MAX_DELIVERIES", "5",
      "deliveries after which an unacked message moves to <topic>.dlq"},
     set_q_deliveries},
    {{"DSYNC_QUEUE_MAX_WAIT_MS", "20000", "largest wait_ms (long poll) a consume may ask for"},
     set_q_wait},
    {{"DSYNC_QUEUE_REWRITE_BYTES", "67108864",
      "rewrite the local queue file as a snapshot once it grows past this"},
     set_q_rewrite},
    {{"DSYNC_CACHE_MAX_ENTRIES", "1000000", "entries each node's cache holds at most (LRU)"},
     set_c_entries},
    {{"DSYNC_CACHE_MAX_BYTES", "268435456",
      "key and value bytes each node's cache holds at most (LRU)"},
     set_c_bytes},
    {{"DSYNC_CACHE_WRITE_POLICY", "write-through",
      "write-through: a PUT reaches the store before it answers; write-back: it stays dirty "
      "in the writer's cache until evicted or read elsewhere (a crash of the writer loses it)"},
     set_c_policy},
    {{"DSYNC_CACHE_TTL_MS", "0", "how long a cached copy lives; 0: until evicted or invalidated"},
     set_c_ttl},
};
#define N_VARS (sizeof vars / sizeof vars[0])

const dsync_config_var *dsync_config_vars(void)
{
    static dsync_config_var table[N_VARS + 1];
    for (size_t i = 0; i < N_VARS; i++)
        table[i] = vars[i].var;
    table[N_VARS] = (dsync_config_var){NULL, NULL, NULL};
    return table;
}

int dsync_config_set(dsync_config *cfg, const char *name, const char *value, char *err,
                     size_t errlen)
{
    for (size_t i = 0; i < N_VARS; i++)
        if (strcmp(vars[i].var.name, name) == 0) return vars[i].set(cfg, name, value, err, errlen);
    return fail(err, errlen, "%s: unknown configuration variable", name);
}

void dsync_config_defaults(dsync_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_VARS; i++) {
        int rc = vars[i].set(cfg, vars[i].var.name, vars[i].var.default_value, NULL, 0);
        (void)rc; /* the defaults are valid; test_config checks it */
    }
}

/* Parses one .env line in place; returns 1 with name/value set, 0 for a
 * blank or comment line, -1 for a malformed one. */
static int parse_env_line(char *line, char **name, char **value)
{
    line[strcspn(line, "\r\n")] = '\0';
    char *s = (char *)trim(line);
    size_t n;
    if (!*s || *s == '#') return 0;
    if (strncmp(s, "export ", 7) == 0) s = (char *)trim(s + 7);
    char *eq = strchr(s, '=');
    if (!eq || eq == s) return -1;
    *eq = '\0';
    *name = (char *)trim(s);
    char *v = (char *)trim(eq + 1);
    n = strlen(v);
    if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
        v[n - 1] = '\0';
        v++;
    } else if (n && (v[0] == '"' || v[0] == '\'')) {
        return -1;
    } else {
        /* An unquoted value ends at a " #" comment. */
        char *hash = strstr(v, " #");
        if (hash) {
            *hash = '\0';
            v = (char *)trim(v);
        }
    }
    *value = v;
    return 1;
}

static int load_file(dsync_config *cfg, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return 0;
        return fail(err, errlen, "%s: cannot read: %s", path, strerror(errno));
    }
    char line[8192];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char *name, *value;
        int k = parse_env_line(line, &name, &value);
        if (k < 0) {
            rc = fail(err, errlen, "%s:%d: expected NAME=VALUE", path, lineno);
        } else if (k > 0 && strncmp(name, "DSYNC_", 6) == 0) {
            /* Unknown DSYNC_ names are typos worth stopping for. */
            char inner[400];
            rc = dsync_config_set(cfg, name, value, inner, sizeof inner);
            if (rc != 0) fail(err, errlen, "%s:%d: %s", path, lineno, inner);
        }
    }
    fclose(f);
    return rc;
}

int dsync_config_load(dsync_config *cfg, const char *env_path, char *err, size_t errlen)
{
    dsync_config_defaults(cfg);
    if (env_path) {
        int rc = load_file(cfg, env_path, err, errlen);
        if (rc != 0) return rc;
    }
    for (size_t i = 0; i < N_VARS; i++) {
        const char *v = getenv(vars[i].var.name);
        if (v) {
            int rc = vars[i].set(cfg, vars[i].var.name, v, err, errlen);
            if (rc != 0) return rc;
        }
    }
    return 0;
}

int dsync_config_validate(const dsync_config *cfg, char *err, size_t errlen)
{
    if (cfg->node_id == 0) return fail(err, errlen, "DSYNC_NODE_ID: must be >= 1");
    if (cfg->lock_default_ttl_ms > cfg->lock_max_ttl_ms)
        return fail(err, errlen,
                    "DSYNC_LOCK_DEFAULT_TTL_MS: %llu is larger than DSYNC_LOCK_MAX_TTL_MS %llu",
                    (unsigned long long)cfg->lock_default_ttl_ms,
                    (unsigned long long)cfg->lock_max_ttl_ms);
    if (cfg->n_peers == 0) return 0;
    /* Raft's votes and log must survive a restart, or a node could vote
     * twice in a term or forget entries it acknowledged. */
    if (cfg->n_peers > 1 && !cfg->data_dir[0])
        return fail(err, errlen,
                    "DSYNC_DATA_DIR: a cluster of %zu nodes needs a data directory (only a "
                    "single node may run in memory)",
                    cfg->n_peers);
    for (size_t i = 0; i < cfg->n_peers; i++) {
        if (cfg->peers[i].id != cfg->node_id) continue;
        if (strcmp(cfg->peers[i].addr, cfg->peer_addr) != 0)
            return fail(err, errlen,
                        "DSYNC_PEERS: this node (%llu) is listed at %s but DSYNC_PEER_ADDR is %s",
                        (unsigned long long)cfg->node_id, cfg->peers[i].addr, cfg->peer_addr);
        return 0;
    }
    return fail(err, errlen, "DSYNC_PEERS: this node's id %llu is not among the peers",
                (unsigned long long)cfg->node_id);
}
