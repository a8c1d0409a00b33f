/*
 * main.c: dsyncd, the libdsync node served over HTTP.
 *
 * Loads the configuration (environment over .env over defaults), opens the
 * node, serves the routes below on civetweb, and stops cleanly on SIGINT or
 * SIGTERM. All signals are blocked before any thread starts, so only the
 * main thread, in sigwait(), ever sees them.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "handlers.h"
#include "util/util.h"

static const http_route routes[] = {
    {"/locks/acquire", "POST", true, handle_lock_acquire},
    {"/locks/release", "POST", true, handle_lock_release},
    {"/locks/state", "GET", false, handle_lock_state},
    {"/queue/enqueue", "POST", true, handle_queue_enqueue},
    {"/queue/consume", "POST", true, handle_queue_consume},
    {"/queue/ack", "POST", true, handle_queue_ack},
    {"/queue/state", "GET", false, handle_queue_state},
    {"/cache/get", "GET", false, handle_cache_get},
    {"/cache/put", "POST", true, handle_cache_put},
    {"/health", "GET", false, handle_health},
    {"/metrics", "GET", false, handle_metrics},
    {"/admin/faults", "POST", true, handle_admin_faults},
    {"/admin/members", "POST", true, handle_admin_members},
};

static void log_stderr(void *ctx, dsync_log_level level, const char *msg)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    const dsync_config *cfg = ctx;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ node%llu %s: %s\n", when, ts.tv_nsec / 1000000,
            (unsigned long long)cfg->node_id, names[level & 3], msg);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: dsyncd [--env FILE] [--help] [--version]\n"
                 "\n"
                 "Runs one libdsync node and serves its HTTP API.\n"
                 "Configuration comes from the environment, then FILE (default ./.env, if it\n"
                 "exists), then these defaults:\n\n");
    for (const dsync_config_var *v = dsync_config_vars(); v->name; v++)
        fprintf(out, "  %-30s %s (default: \"%s\")\n", v->name, v->help, v->default_value);
}

/* An unknown DSYNC_ name in the env file stops the node: the file is
 * dsyncd's alone, so it is a typo. The environment is shared with other
 * tools that use the prefix (the tests' DSYNC_SIM_SEEDS, the Locust
 * file's DSYNC_LOCUST_HOSTS), so there an unknown name gets a warning
 * that names it, at start, where a typo such as DSYNC_RAFT_TIK_MS would
 * otherwise pass unseen. */
static void warn_unknown_env(const ut_logger *log)
{
    extern char **environ;
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "DSYNC_", 6) != 0) continue;
        size_t len = strcspn(*e, "=");
        bool known = false;
        for (const dsync_config_var *v = dsync_config_vars(); v->name && !known; v++)
            known = strlen(v->name) == len && strncmp(v->name, *e, len) == 0;
        if (!known)
            ut_log(log, DSYNC_LOG_WARN,
                   "environment: %.*s is not a dsyncd setting and is ignored (dsyncd --help "
                   "lists them)",
                   (int)len, *e);
    }
}

int main(int argc, char **argv)
{
    const char *env_path = ".env";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("dsyncd %s\n", dsync_version());
            return 0;
        }
        if (strcmp(argv[i], "--env") == 0 && i + 1 < argc) {
            env_path = argv[++i];
            continue;
        }
        fprintf(stderr, "dsyncd: unknown argument \"%s\"\n", argv[i]);
        usage(stderr);
        return 2;
    }

    static dsync_config cfg;
    char err[512];
    if (dsync_config_load(&cfg, env_path, err, sizeof err) != 0 ||
        dsync_config_validate(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "dsyncd: configuration error: %s\n", err);
        return 2;
    }
    cfg.log_fn = log_stderr;
    cfg.log_ctx = &cfg;
    warn_unknown_env(&(ut_logger){log_stderr, &cfg, cfg.log_level});

    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    dsync_node *node;
    int rc = dsync_node_open(&cfg, &node);
    if (rc != 0) {
        fprintf(stderr, "dsyncd: cannot open node: %s\n", dsync_strerror(rc));
        return 1;
    }
    srv server;
    memset(&server, 0, sizeof server);
    if (http_start(&server, node, &cfg, routes, sizeof routes / sizeof routes[0], err,
                   sizeof err) != 0) {
        fprintf(stderr, "dsyncd: %s\n", err);
        dsync_node_close(node);
        return 1;
    }
    ut_log(&(ut_logger){log_stderr, &cfg, cfg.log_level}, DSYNC_LOG_INFO,
           "dsyncd %s serving HTTP on %s", dsync_version(), cfg.http_addr);

    int sig = 0;
    sigwait(&stop, &sig);
    ut_log(&(ut_logger){log_stderr, &cfg, cfg.log_level}, DSYNC_LOG_INFO,
           "signal %d: shutting down", sig);
    http_stop(&server);
    dsync_node_close(node);
    return 0;
}
