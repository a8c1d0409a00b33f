/*
 * http_ceiling.c: a bare civetweb server, the HTTP ceiling of this machine.
 *
 * Usage: http_ceiling HOST:PORT [THREADS]     (THREADS defaults to 64)
 *
 * Answers every request, on any path and with any method, by reading and
 * discarding its body and sending a fixed small JSON body, with the civetweb
 * options dsyncd uses (server/http.c: keep-alive, tcp_nodelay, the same
 * request and keep-alive timeouts, an allow-all auth handler, the whole
 * answer in one write with the same headers). What dsyncd does beyond this
 * (JSON parsing, the node call, forwarding, fsync) is its own cost; the
 * ratio of the two is how close dsyncd gets to what HTTP allows here.
 * Runs until SIGINT or SIGTERM. benchmarks/queue_bench.sh drives it.
 */
#include <civetweb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>


static const char answer_body[] = "{\"topic\":\"ceiling\",\"id\":1}";

/* As dsyncd decides it: HTTP/1.1 unless the client said close, HTTP/1.0
 * only when it asked for keep-alive. */
static bool keeps_alive(struct mg_connection *conn)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *c = mg_get_header(conn, "Connection");
    if (c) return strcasestr(c, "keep-alive") != NULL;
    return ri->http_version && strcmp(ri->http_version, "1.1") == 0;
}

static int allow_all(struct mg_connection *conn, void *cbdata)
{
    (void)conn;
    (void)cbdata;
    return 1;
}

static int answer(struct mg_connection *conn, void *cbdata)
{
    (void)cbdata;
    char sink[4096];
    while (mg_read(conn, sink, sizeof sink) > 0) {
    }
    char date[64], head[512];
    time_t now = time(NULL);
    struct tm tm;
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", gmtime_r(&now, &tm));
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nDate: %s\r\nConnection: %s\r\n\r\n%s",
                     sizeof answer_body - 1, date, keeps_alive(conn) ? "keep-alive" : "close",
                     answer_body);
    if (n > 0 && (size_t)n < sizeof head) mg_write(conn, head, (size_t)n);
    return 200;
}

static int log_message(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    fprintf(stderr, "http_ceiling: civetweb: %s\n", message);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: http_ceiling HOST:PORT [THREADS]\n");
        return 2;
    }
    const char *threads = argc == 3 ? argv[2] : "64";
    if (atoi(threads) < 1) {
        fprintf(stderr, "http_ceiling: THREADS must be a positive number\n");
        return 2;
    }
    /* Blocked here, so civetweb's threads inherit the mask and sigwait gets them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    const char *options[] = {
        "listening_ports",
        argv[1],
        "num_threads",
        threads,
        "request_timeout_ms",
        "10000",
        "enable_keep_alive",
        "yes",
        "keep_alive_timeout_ms",
        "30000",
        "tcp_nodelay",
        "1",
        NULL,
    };
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = log_message;
    mg_init_library(0);
    unsigned ecode = 0;
    char etext[256] = "";
    struct mg_error_data ed = {.code = &ecode, .text = etext, .text_buffer_size = sizeof etext};
    struct mg_init_data init = {.callbacks = &cb, .configuration_options = options};
    struct mg_context *ctx = mg_start2(&init, &ed);
    if (!ctx) {
        fprintf(stderr, "http_ceiling: cannot serve HTTP on %s: %s\n", argv[1],
                etext[0] ? etext : "unknown error");
        mg_exit_library();
        return 1;
    }
    mg_set_auth_handler(ctx, "/", allow_all, NULL);
    mg_set_request_handler(ctx, "/", answer, NULL);
    int sig = 0;
    sigwait(&stop, &sig);
    mg_stop(ctx);
    mg_exit_library();
    return 0;
}
