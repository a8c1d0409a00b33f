/*
 * http_client.c: the HTTP benchmarks' side of the library's HTTP client
 * (lib/client/http.c does the work); see http_client.h.
 */
#include "http_client.h"

#include <stdio.h>
#include <string.h>

int parse_endpoints(const char *prog, const char *list, endpoint *eps, int *n)
{
    *n = 0;
    for (const char *p = list;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len > 0) {
            char err[300];
            if (*n == HTTP_MAX_ENDPOINTS) {
                fprintf(stderr, "%s: more than %d endpoints\n", prog, HTTP_MAX_ENDPOINTS);
                return -1;
            }
            if (hc_endpoint_parse(p, len, &eps[*n], err, sizeof err) != 0) {
                fprintf(stderr, "%s: %s\n", prog, err);
                return -1;
            }
            (*n)++;
        }
        if (!comma) break;
        p = comma + 1;
    }
    if (*n == 0) {
        fprintf(stderr, "%s: no endpoint given\n", prog);
        return -1;
    }
    return 0;
}

void http_conn_init(http_conn *c, const endpoint *ep)
{
    hc_conn_init(&c->conn, ep, NET_CONNECT_TIMEOUT_MS);
    hc_response_init(&c->resp);
}

void http_conn_close(http_conn *c)
{
    hc_conn_close(&c->conn);
    hc_response_free(&c->resp);
    hc_response_init(&c->resp);
}

/* The one retry inside hc_request covers a kept-alive connection the server
 * dropped before the request: the requests of http_lock_bench are idempotent
 * (acquire and release by client id, etcd lock by lease, unlock by key), and
 * a server that never saw an enqueue of queue_bench did not store it; cache_bench's
 * PUTs store the same value again. */
static int request(http_conn *c, const char *method, const char *path, const char *body,
                   int *status, char *out, size_t cap)
{
    uint64_t deadline = ut_now_ms() + NET_IO_TIMEOUT_S * 1000;
    if (hc_request(&c->conn, method, path, body, body ? strlen(body) : 0, deadline, 1u << 20,
                   &c->resp, NULL, 0) != 0)
        return -1;
    *status = c->resp.status;
    size_t n = c->resp.body.len < cap - 1 ? c->resp.body.len : cap - 1;
    memcpy(out, c->resp.body.data ? c->resp.body.data : "", n);
    out[n] = '\0';
    return 0;
}

int http_post(http_conn *c, const char *path, const char *body, int *status, char *out, size_t cap)
{
    return request(c, "POST", path, body, status, out, cap);
}

/* A GET changes nothing on the server: sending it again is always safe. */
int http_get(http_conn *c, const char *path, int *status, char *out, size_t cap)
{
    return request(c, "GET", path, NULL, status, out, cap);
}

/* ---- tiny JSON helper ---------------------------------------------------- */

bool json_str(const char *body, const char *name, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\"", name);
    for (const char *p = strstr(body, pat); p; p = strstr(p + 1, pat)) {
        const char *q = p + strlen(pat);
        while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')
            q++;
        if (*q++ != ':') continue;
        while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')
            q++;
        if (*q++ != '"') continue;
        size_t n = 0;
        while (*q && *q != '"') {
            if (*q == '\\' && q[1]) {
                if (n + 1 >= cap) return false;
                out[n++] = *q++;
            }
            if (n + 1 >= cap) return false;
            out[n++] = *q++;
        }
        if (*q != '"') return false;
        out[n] = '\0';
        return true;
    }
    return false;
}
