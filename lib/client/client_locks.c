/*
 * client_locks.c: dsync_client_lock_acquire and _release over
 * POST /locks/acquire and /locks/release (docs/api_spec.yaml).
 */
#include <string.h>

#include "client/client_internal.h"

/* The deadlock cycle of a 409 answer into result. */
static int read_cycle(dsync_client *c, const json_t *answer, dsync_lock_result *result)
{
    json_t *cycle = json_object_get(answer, "cycle");
    if (!json_is_array(cycle)) return cl_bad_answer(c, "deadlock without a \"cycle\" list");
    size_t n = json_array_size(cycle);
    for (size_t i = 0; i < n && i < DSYNC_LOCK_CYCLE_MAX; i++) {
        json_t *id = json_array_get(cycle, i);
        if (!json_is_string(id) || json_string_length(id) > DSYNC_CLIENT_ID_MAX)
            return cl_bad_answer(c, "a \"cycle\" entry is not a client id");
        memcpy(result->cycle[i], json_string_value(id), json_string_length(id) + 1);
        result->cycle_len++;
    }
    return 0;
}

int dsync_client_lock_acquire(dsync_client *c, const dsync_lock_request *req,
                              dsync_lock_result *result)
{
    memset(result, 0, sizeof *result);
    if (!req || !cl_valid_string(req->key, DSYNC_LOCK_KEY_MAX))
        return cl_bad_argument(c, "key must be 1..DSYNC_LOCK_KEY_MAX bytes");
    if (!cl_valid_string(req->client_id, DSYNC_CLIENT_ID_MAX))
        return cl_bad_argument(c, "client_id must be 1..DSYNC_CLIENT_ID_MAX bytes");
    const char *mode = req->mode == DSYNC_LOCK_SHARED      ? "S"
                       : req->mode == DSYNC_LOCK_EXCLUSIVE ? "X"
                                                           : NULL;
    if (!mode) return cl_bad_argument(c, "mode must be DSYNC_LOCK_SHARED or DSYNC_LOCK_EXCLUSIVE");
    json_t *body =
        json_pack("{s:s,s:s,s:s}", "key", req->key, "client_id", req->client_id, "mode", mode);
    if (!body) return cl_bad_argument(c, "key and client_id must be UTF-8");
    if (req->ttl_ms > (uint64_t)INT64_MAX || req->wait_ms > (uint64_t)INT64_MAX) {
        json_decref(body);
        return cl_bad_argument(c, "ttl_ms or wait_ms out of range");
    }
    if (req->ttl_ms) json_object_set_new(body, "ttl_ms", json_integer((json_int_t)req->ttl_ms));
    if (req->wait_ms) json_object_set_new(body, "wait_ms", json_integer((json_int_t)req->wait_ms));

    cl_reply r;
    int rc = cl_call(c, "POST", "/locks/acquire", body, req->wait_ms, &r);
    if (rc != 0) return rc;
    const char *status = "";
    bool has_status = cl_get_string(r.answer, "status", &status);
    if (r.status == 200) {
        if (!has_status || strcmp(status, "granted") != 0 ||
            !cl_get_uint(r.answer, "fencing_token", &result->fencing_token) ||
            !cl_get_uint(r.answer, "lease_ms", &result->lease_ms))
            rc = cl_bad_answer(c, "200 without \"granted\", \"fencing_token\", \"lease_ms\"");
        else
            result->status = DSYNC_LOCK_GRANTED;
    } else if (r.status == 202) {
        uint64_t pos = 0;
        if (!has_status || strcmp(status, "waiting") != 0 ||
            !cl_get_uint(r.answer, "position", &pos) || pos > UINT32_MAX) {
            rc = cl_bad_answer(c, "202 without \"waiting\" and \"position\"");
        } else {
            result->status = DSYNC_LOCK_WAITING;
            result->position = (uint32_t)pos;
        }
    } else if (r.status == 409 && has_status && strcmp(status, "deadlock") == 0) {
        rc = read_cycle(c, r.answer, result);
        if (rc == 0) result->status = DSYNC_LOCK_DEADLOCK;
    } else {
        rc = cl_status_error(c, &r);
    }
    if (rc != 0) memset(result, 0, sizeof *result);
    cl_reply_free(&r);
    return rc;
}

int dsync_client_lock_release(dsync_client *c, const char *key, const char *client_id,
                              int *was_waiting)
{
    if (was_waiting) *was_waiting = 0;
    if (!cl_valid_string(key, DSYNC_LOCK_KEY_MAX))
        return cl_bad_argument(c, "key must be 1..DSYNC_LOCK_KEY_MAX bytes");
    if (!cl_valid_string(client_id, DSYNC_CLIENT_ID_MAX))
        return cl_bad_argument(c, "client_id must be 1..DSYNC_CLIENT_ID_MAX bytes");
    json_t *body = json_pack("{s:s,s:s}", "key", key, "client_id", client_id);
    if (!body) return cl_bad_argument(c, "key and client_id must be UTF-8");
    cl_reply r;
    int rc = cl_call(c, "POST", "/locks/release", body, 0, &r);
    if (rc != 0) return rc;
    const char *status;
    if (r.status == 200) {
        json_t *w = json_object_get(r.answer, "was_waiting");
        if (!cl_get_string(r.answer, "status", &status) || strcmp(status, "released") != 0 ||
            (w && !json_is_boolean(w)))
            rc = cl_bad_answer(c, "200 without \"status\":\"released\"");
        else if (was_waiting)
            *was_waiting = json_is_true(w);
    } else {
        rc = cl_status_error(c, &r);
        /* An earlier attempt broke off or met a 503 and may have released
         * it: "not held" now is the state the caller asked for. */
        if (rc == DSYNC_ENOTFOUND && r.retried) {
            rc = 0;
            c->errmsg[0] = '\0';
        }
    }
    cl_reply_free(&r);
    return rc;
}
