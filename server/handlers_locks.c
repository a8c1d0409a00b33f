/*
 * handlers_locks.c: /locks/acquire, /locks/release, /locks/state.
 *
 * Maps JSON to the public lock API and back; all checks of shape and type
 * happen here, before the library sees the request.
 */
#include <string.h>

#include "handlers.h"

static json_t *party_json(const dsync_lock_party *p, bool holder)
{
    if (holder)
        return json_pack("{s:s,s:s,s:I,s:I}", "client_id", p->client_id, "mode",
                         dsync_lock_mode_name(p->mode), "fencing_token",
                         (json_int_t)p->fencing_token, "lease_ms", (json_int_t)p->lease_ms);
    return json_pack("{s:s,s:s,s:b,s:I}", "client_id", p->client_id, "mode",
                     dsync_lock_mode_name(p->mode), "upgrade", p->upgrade, "lease_ms",
                     (json_int_t)p->lease_ms);
}

void handle_lock_acquire(http_req *r)
{
    const dsync_config *cfg = r->server->cfg;
    const char *key, *client, *mode_name;
    uint64_t ttl = 0, wait = 0;
    if (!http_field_string(r, "key", true, DSYNC_LOCK_KEY_MAX, &key) ||
        !http_field_string(r, "client_id", true, DSYNC_CLIENT_ID_MAX, &client) ||
        !http_field_string(r, "mode", true, 16, &mode_name))
        return;
    dsync_lock_mode mode = dsync_lock_mode_parse(mode_name);
    if (!mode) {
        http_reply_error(r, 400, "invalid_field", "field \"mode\" must be \"S\" or \"X\"");
        return;
    }
    if (!http_field_uint(r, "ttl_ms", false, 1, cfg->lock_max_ttl_ms, &ttl) ||
        !http_field_uint(r, "wait_ms", false, 0, cfg->lock_max_wait_ms, &wait))
        return;

    dsync_lock_request req = {key, client, mode, ttl, wait};
    dsync_lock_result res;
    int rc = dsync_lock_acquire(r->server->node, &req, &res);
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "acquire");
        return;
    }
    if (res.status == DSYNC_LOCK_GRANTED || res.status == DSYNC_LOCK_WAITING) {
        bool granted = res.status == DSYNC_LOCK_GRANTED;
        http_obj o;
        http_obj_begin(&o);
        http_obj_str(&o, "key", key);
        http_obj_str(&o, "client_id", client);
        http_obj_str(&o, "mode", mode_name);
        http_obj_str(&o, "status", granted ? "granted" : "waiting");
        if (granted) {
            http_obj_int(&o, "fencing_token", (int64_t)res.fencing_token);
            http_obj_int(&o, "lease_ms", (int64_t)res.lease_ms);
        } else {
            http_obj_int(&o, "position", (int64_t)res.position);
        }
        http_reply_obj(r, granted ? 200 : 202, &o);
        return;
    }
    if (res.status != DSYNC_LOCK_DEADLOCK) {
        http_reply_error(r, 500, "internal", "unexpected lock status %d", (int)res.status);
        return;
    }
    json_t *cycle = json_array();
    for (uint32_t i = 0; i < res.cycle_len; i++)
        json_array_append_new(cycle, json_string(res.cycle[i]));
    http_reply_json(r, 409,
                    json_pack("{s:s,s:s,s:s,s:s,s:o}", "key", key, "client_id", client, "mode",
                              mode_name, "status", "deadlock", "cycle", cycle));
}

void handle_lock_release(http_req *r)
{
    const char *key, *client;
    if (!http_field_string(r, "key", true, DSYNC_LOCK_KEY_MAX, &key) ||
        !http_field_string(r, "client_id", true, DSYNC_CLIENT_ID_MAX, &client))
        return;
    int was_waiting = 0;
    int rc = dsync_lock_release(r->server->node, key, client, &was_waiting);
    if (rc == DSYNC_ENOTFOUND) {
        http_reply_error(r, 404, "not_found", "client \"%s\" neither holds nor waits for \"%s\"",
                         client, key);
        return;
    }
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "release");
        return;
    }
    http_obj o;
    http_obj_begin(&o);
    http_obj_str(&o, "status", "released");
    http_obj_str(&o, "key", key);
    http_obj_str(&o, "client_id", client);
    http_obj_bool(&o, "was_waiting", was_waiting);
    http_reply_obj(r, 200, &o);
}

void handle_lock_state(http_req *r)
{
    dsync_lock_state st;
    int rc = dsync_lock_state_get(r->server->node, &st);
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "state");
        return;
    }
    json_t *locks = json_array();
    for (size_t i = 0; i < st.n_locks; i++) {
        const dsync_lock_info *li = &st.locks[i];
        json_t *holders = json_array(), *waiters = json_array();
        for (size_t j = 0; j < li->n_holders; j++)
            json_array_append_new(holders, party_json(&li->holders[j], true));
        for (size_t j = 0; j < li->n_waiters; j++)
            json_array_append_new(waiters, party_json(&li->waiters[j], false));
        json_t *mode = li->mode ? json_string(dsync_lock_mode_name(li->mode)) : json_null();
        json_array_append_new(locks, json_pack("{s:s,s:o,s:o,s:o}", "key", li->key, "mode", mode,
                                               "holders", holders, "waiters", waiters));
    }
    json_t *edges = json_array();
    for (size_t i = 0; i < st.n_edges; i++)
        json_array_append_new(edges,
                              json_pack("{s:s,s:s,s:s}", "waiter", st.edges[i].waiter, "holder",
                                        st.edges[i].holder, "key", st.edges[i].key));
    dsync_lock_state_free(&st);
    http_reply_json(r, 200, json_pack("{s:o,s:o}", "locks", locks, "wait_for", edges));
}
