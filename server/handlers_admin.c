/* handlers_admin.c: /health and /metrics. */
#include <stdlib.h>

#include "handlers.h"

void handle_health(http_req *r)
{
    dsync_health h;
    int rc = dsync_node_health(r->server->node, &h);
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "health");
        return;
    }
    http_reply_json(r, 200,
                    json_pack("{s:s,s:I,s:s,s:I,s:I,s:I,s:I,s:s}", "status", "ok", "node_id",
                              (json_int_t)h.node_id, "role", h.role, "leader_id",
                              (json_int_t)h.leader_id, "term", (json_int_t)h.term, "commit_index",
                              (json_int_t)h.commit_index, "uptime_ms", (json_int_t)h.uptime_ms,
                              "version", dsync_version()));
}

void handle_metrics(http_req *r)
{
    char *text;
    size_t len;
    int rc = dsync_node_metrics(r->server->node, &text, &len);
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "metrics");
        return;
    }
    http_reply_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}
