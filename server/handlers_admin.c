/* handlers_admin.c: /health, /metrics, and /admin/faults (tests only). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "handlers.h"

void handle_health(http_req *r)
{
    dsync_health h;
    int rc = dsync_node_health(r->server->node, &h);
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "health");
        return;
    }
    json_t *peers = json_array();
    for (size_t i = 0; i < h.n_peers; i++) {
        const dsync_peer_health *p = &h.peers[i];
        json_t *o = json_pack("{s:I,s:b,s:I}", "id", (json_int_t)p->id, "reachable", p->reachable,
                              "match_index", (json_int_t)p->match_index);
        /* Never heard: null rather than a huge number. */
        json_object_set_new(o, "last_heard_ms",
                            p->last_heard_ms == UINT64_MAX
                                ? json_null()
                                : json_integer((json_int_t)p->last_heard_ms));
        json_array_append_new(peers, o);
    }
    /* 200 while the process serves: "status" says whether the node can
     * take writes now (a leader is known, the log is writable). */
    http_reply_json(r, 200,
                    json_pack("{s:s,s:I,s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:s}", "status",
                              h.healthy ? "ok" : "degraded", "node_id", (json_int_t)h.node_id,
                              "role", h.role, "member", h.is_member, "leader_id",
                              (json_int_t)h.leader_id, "term", (json_int_t)h.term, "commit_index",
                              (json_int_t)h.commit_index, "applied_index",
                              (json_int_t)h.applied_index, "last_index", (json_int_t)h.last_index,
                              "snapshot_index", (json_int_t)h.snapshot_index, "uptime_ms",
                              (json_int_t)h.uptime_ms, "peers", peers, "version", dsync_version()));
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

/* POST /admin/faults {"drop_peers":[ids], "queue_fsync_delay_ms":N}: the
 * transport drops all traffic with those peers until the next call that
 * names drop_peers ([] heals); every flush of the local queue file waits N
 * ms first, as a stalling disk would, until the next call that names it
 * (0 heals). At least one of the two. Exists only with
 * DSYNC_FAULT_INJECTION=1. */
void handle_admin_faults(http_req *r)
{
    const dsync_config *cfg = r->server->cfg;
    if (!cfg->fault_injection) {
        http_reply_error(r, 404, "not_found",
                         "/admin/faults is off (DSYNC_FAULT_INJECTION=0, as in production)");
        return;
    }
    json_t *list = json_object_get(r->body, "drop_peers");
    bool has_delay = json_object_get(r->body, "queue_fsync_delay_ms") != NULL;
    uint64_t delay = 0;
    if (has_delay &&
        !http_field_uint(r, "queue_fsync_delay_ms", true, 0, DSYNC_FAULT_DELAY_MAX_MS, &delay))
        return;
    if (!list && !has_delay) {
        http_reply_error(r, 400, "invalid_field",
                         "name \"drop_peers\" (an array of ids) or \"queue_fsync_delay_ms\"");
        return;
    }
    if (list && !json_is_array(list)) {
        http_reply_error(r, 400, "invalid_field", "field \"drop_peers\" must be an array of ids");
        return;
    }
    size_t n = json_array_size(list);
    if (n > DSYNC_MAX_PEERS) {
        http_reply_error(r, 400, "invalid_field", "field \"drop_peers\" names over %d peers",
                         DSYNC_MAX_PEERS);
        return;
    }
    uint64_t ids[DSYNC_MAX_PEERS];
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(list, i);
        if (!json_is_integer(v) || json_integer_value(v) < 1) {
            http_reply_error(r, 400, "invalid_field",
                             "field \"drop_peers\" must hold node ids (integers >= 1)");
            return;
        }
        ids[i] = (uint64_t)json_integer_value(v);
    }
    /* Checked whole before either takes effect: a bad field changes nothing. */
    int rc = list ? dsync_node_drop_peers(r->server->node, ids, n) : 0;
    if (rc == 0 && has_delay) rc = dsync_node_delay_queue_fsync(r->server->node, (uint32_t)delay);
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "faults");
        return;
    }
    json_t *body = json_pack("{s:s}", "status", "ok");
    if (list) {
        json_t *echo = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(echo, json_integer((json_int_t)ids[i]));
        json_object_set_new(body, "drop_peers", echo);
    }
    if (has_delay)
        json_object_set_new(body, "queue_fsync_delay_ms", json_integer((json_int_t)delay));
    http_reply_json(r, 200, body);
}

/* POST /admin/members {"action":"add","id":N,"peer_addr":"host:port"} or
 * {"action":"remove","id":N}: one membership change through the log; the
 * answer comes once it has committed. */
void handle_admin_members(http_req *r)
{
    const char *action, *addr = NULL;
    uint64_t id;
    if (!http_field_string(r, "action", true, 16, &action) ||
        !http_field_uint(r, "id", true, 1, UINT32_MAX, &id))
        return;
    bool add = strcmp(action, "add") == 0;
    if (!add && strcmp(action, "remove") != 0) {
        http_reply_error(r, 400, "invalid_field", "field \"action\" must be \"add\" or \"remove\"");
        return;
    }
    if (add && !http_field_string(r, "peer_addr", true, DSYNC_ADDR_MAX - 1, &addr)) return;
    int rc = add ? dsync_node_add_member(r->server->node, id, addr)
                 : dsync_node_remove_member(r->server->node, id);
    if (rc == DSYNC_EEXIST) {
        http_reply_error(r, 409, "conflict", "node %llu is a member already",
                         (unsigned long long)id);
        return;
    }
    if (rc == DSYNC_ENOTFOUND) {
        http_reply_error(r, 404, "not_found", "node %llu is not a member", (unsigned long long)id);
        return;
    }
    if (rc == DSYNC_EINVAL) {
        http_reply_error(r, 400, "invalid_field",
                         add ? "bad peer_addr, or this node runs without DSYNC_PEERS"
                             : "the last member cannot be removed (or this node runs without "
                               "DSYNC_PEERS)");
        return;
    }
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "members");
        return;
    }
    http_reply_json(
        r, 200, json_pack("{s:s,s:s,s:I}", "status", "ok", "action", action, "id", (json_int_t)id));
}
