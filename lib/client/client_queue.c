/*
 * client_queue.c: dsync_client_queue_enqueue, _consume and _ack over
 * POST /queue/enqueue, /queue/consume and /queue/ack (docs/api_spec.yaml).
 * Messages travel as JSON values; the caller gives and gets their text.
 */
#include <stdlib.h>
#include <string.h>

#include "client/client_internal.h"

int dsync_client_queue_enqueue(dsync_client *c, const char *topic, const char *message_json,
                               uint64_t *id)
{
    if (id) *id = 0;
    if (!cl_valid_string(topic, DSYNC_TOPIC_MAX))
        return cl_bad_argument(c, "topic must be 1..DSYNC_TOPIC_MAX bytes");
    if (!message_json) return cl_bad_argument(c, "message_json is NULL");
    json_error_t jerr;
    json_t *message = json_loads(message_json, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!message) {
        cl_set_error(c, "invalid argument: message_json is not JSON: %s at line %d column %d",
                     jerr.text, jerr.line, jerr.column);
        return DSYNC_EINVAL;
    }
    json_t *body = json_pack("{s:s,s:o}", "topic", topic, "message", message);
    if (!body) return cl_bad_argument(c, "topic must be UTF-8");
    cl_reply r;
    int rc = cl_call(c, "POST", "/queue/enqueue", body, 0, &r);
    if (rc != 0) return rc;
    uint64_t got;
    if (r.status != 200)
        rc = cl_status_error(c, &r);
    else if (!cl_get_uint(r.answer, "id", &got) || got == 0)
        rc = cl_bad_answer(c, "200 without a message \"id\"");
    else if (id)
        *id = got;
    cl_reply_free(&r);
    return rc;
}

/* One element of "messages" into m (its body malloc'ed). */
static int read_message(dsync_client *c, const json_t *o, dsync_queue_msg *m)
{
    const char *receipt;
    uint64_t deliveries = 0, visibility = 0;
    json_t *message = json_object_get(o, "message");
    if (!json_is_object(o) || !message || !cl_get_uint(o, "id", &m->id) ||
        !cl_get_string(o, "receipt", &receipt) || strlen(receipt) > DSYNC_RECEIPT_LEN ||
        !cl_get_uint(o, "deliveries", &deliveries) || deliveries == 0 || deliveries > UINT32_MAX)
        return cl_bad_answer(c, "a message without \"id\", \"message\", \"receipt\" or "
                                "\"deliveries\"");
    /* Optional: visibility_ms, and origin_* in dead-letter topics. */
    if (json_object_get(o, "visibility_ms") && !cl_get_uint(o, "visibility_ms", &visibility))
        return cl_bad_answer(c, "\"visibility_ms\" is not a number");
    uint64_t origin = 0, origin_deliveries = 0;
    if ((json_object_get(o, "origin_id") && !cl_get_uint(o, "origin_id", &origin)) ||
        (json_object_get(o, "origin_deliveries") &&
         (!cl_get_uint(o, "origin_deliveries", &origin_deliveries) ||
          origin_deliveries > UINT32_MAX)))
        return cl_bad_answer(c, "\"origin_id\" or \"origin_deliveries\" is not a number");
    m->deliveries = (uint32_t)deliveries;
    memcpy(m->receipt, receipt, strlen(receipt) + 1);
    m->visibility_ms = visibility;
    m->origin_id = origin;
    m->origin_deliveries = (uint32_t)origin_deliveries;
    m->body = json_dumps(message, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!m->body) {
        cl_set_error(c, "out of memory");
        return DSYNC_ENOMEM;
    }
    m->len = strlen(m->body);
    return 0;
}

int dsync_client_queue_consume(dsync_client *c, const dsync_consume_request *req,
                               dsync_queue_msg **msgs, size_t *n)
{
    *msgs = NULL;
    *n = 0;
    if (!req || !cl_valid_string(req->topic, DSYNC_TOPIC_MAX + 4))
        return cl_bad_argument(c, "topic must be 1..DSYNC_TOPIC_MAX bytes (+ \".dlq\")");
    if (!cl_valid_string(req->consumer_id, DSYNC_CONSUMER_MAX))
        return cl_bad_argument(c, "consumer_id must be 1..DSYNC_CONSUMER_MAX bytes");
    if (req->visibility_ms > (uint64_t)INT64_MAX || req->wait_ms > (uint64_t)INT64_MAX)
        return cl_bad_argument(c, "visibility_ms or wait_ms out of range");
    json_t *body = json_pack("{s:s,s:s}", "topic", req->topic, "consumer_id", req->consumer_id);
    if (!body) return cl_bad_argument(c, "topic and consumer_id must be UTF-8");
    if (req->max) json_object_set_new(body, "max", json_integer(req->max));
    if (req->visibility_ms)
        json_object_set_new(body, "visibility_ms", json_integer((json_int_t)req->visibility_ms));
    if (req->wait_ms) json_object_set_new(body, "wait_ms", json_integer((json_int_t)req->wait_ms));
    cl_reply r;
    int rc = cl_call(c, "POST", "/queue/consume", body, req->wait_ms, &r);
    if (rc != 0) return rc;
    if (r.status != 200) {
        rc = cl_status_error(c, &r);
        cl_reply_free(&r);
        return rc;
    }
    json_t *list = json_object_get(r.answer, "messages");
    size_t count = json_array_size(list);
    if (!json_is_array(list)) {
        rc = cl_bad_answer(c, "200 without a \"messages\" list");
    } else if (count > 0) {
        dsync_queue_msg *out = calloc(count, sizeof *out);
        if (!out) {
            cl_set_error(c, "out of memory");
            rc = DSYNC_ENOMEM;
        }
        for (size_t i = 0; out && i < count; i++) {
            rc = read_message(c, json_array_get(list, i), &out[i]);
            if (rc != 0) {
                dsync_queue_msgs_free(out, i + 1);
                out = NULL;
            }
        }
        if (out) {
            *msgs = out;
            *n = count;
        }
    }
    cl_reply_free(&r);
    return rc;
}

int dsync_client_queue_ack(dsync_client *c, const char *topic, const char *receipt)
{
    if (!cl_valid_string(topic, DSYNC_TOPIC_MAX + 4))
        return cl_bad_argument(c, "topic must be 1..DSYNC_TOPIC_MAX bytes (+ \".dlq\")");
    if (!cl_valid_string(receipt, 64)) return cl_bad_argument(c, "receipt must be 1..64 bytes");
    json_t *body = json_pack("{s:s,s:s}", "topic", topic, "receipt", receipt);
    if (!body) return cl_bad_argument(c, "topic and receipt must be UTF-8");
    cl_reply r;
    int rc = cl_call(c, "POST", "/queue/ack", body, 0, &r);
    if (rc != 0) return rc;
    if (r.status != 200) rc = cl_status_error(c, &r);
    cl_reply_free(&r);
    return rc;
}
