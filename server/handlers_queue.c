/*
 * handlers_queue.c: /queue/enqueue, /queue/consume, /queue/ack, /queue/state.
 *
 * A message is any JSON value; it is stored as its compact JSON text and
 * handed back parsed, so consumers get exactly the value that went in.
 */
#include <stdlib.h>
#include <string.h>

#include <civetweb.h>

#include "handlers.h"

void handle_queue_enqueue(http_req *r)
{
    const char *topic;
    if (!http_field_string(r, "topic", true, DSYNC_TOPIC_MAX, &topic)) return;
    json_t *msg = json_object_get(r->body, "message");
    if (!msg) {
        http_reply_error(r, 400, "invalid_field", "field \"message\" is required");
        return;
    }
    char *text = json_dumps(msg, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        http_reply_error(r, 500, "internal", "enqueue: out of memory");
        return;
    }
    uint64_t id = 0;
    int rc = dsync_queue_enqueue(r->server->node, topic, text, strlen(text), &id);
    free(text);
    if (rc == DSYNC_EINVAL) {
        http_reply_error(r, 400, "invalid_field",
                         "field \"topic\" must be 1..%d printable ASCII characters",
                         DSYNC_TOPIC_MAX);
        return;
    }
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "enqueue");
        return;
    }
    http_obj o;
    http_obj_begin(&o);
    http_obj_str(&o, "topic", topic);
    http_obj_int(&o, "id", (int64_t)id);
    http_reply_obj(r, 200, &o);
}

void handle_queue_consume(http_req *r)
{
    const dsync_config *cfg = r->server->cfg;
    const char *topic, *consumer;
    uint64_t max = 1, visibility = 0, wait = 0;
    if (!http_field_string(r, "topic", true, DSYNC_TOPIC_MAX + 4, &topic) ||
        !http_field_string(r, "consumer_id", true, DSYNC_CONSUMER_MAX, &consumer) ||
        !http_field_uint(r, "max", false, 1, 100, &max) ||
        !http_field_uint(r, "visibility_ms", false, 1, 43200000, &visibility) ||
        !http_field_uint(r, "wait_ms", false, 0, cfg->queue_max_wait_ms, &wait))
        return;
    dsync_consume_request req = {topic, consumer, (uint32_t)max, visibility, wait};
    dsync_queue_msg *msgs;
    size_t n;
    int rc = dsync_queue_consume(r->server->node, &req, &msgs, &n);
    if (rc == DSYNC_EINVAL) {
        http_reply_error(r, 400, "invalid_field", "bad \"topic\" or \"consumer_id\"");
        return;
    }
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "consume");
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const dsync_queue_msg *m = &msgs[i];
        json_t *value = json_loadb(m->body, m->len, JSON_DECODE_ANY, NULL);
        json_t *o =
            json_pack("{s:I,s:o,s:s,s:I,s:I}", "id", (json_int_t)m->id, "message",
                      value ? value : json_null(), "receipt", m->receipt, "deliveries",
                      (json_int_t)m->deliveries, "visibility_ms", (json_int_t)m->visibility_ms);
        if (m->origin_id) {
            json_object_set_new(o, "origin_id", json_integer((json_int_t)m->origin_id));
            json_object_set_new(o, "origin_deliveries",
                                json_integer((json_int_t)m->origin_deliveries));
        }
        json_array_append_new(arr, o);
    }
    dsync_queue_msgs_free(msgs, n);
    http_reply_json(r, 200, json_pack("{s:s,s:o}", "topic", topic, "messages", arr));
}

void handle_queue_ack(http_req *r)
{
    const char *topic, *receipt;
    if (!http_field_string(r, "topic", true, DSYNC_TOPIC_MAX + 4, &topic) ||
        !http_field_string(r, "receipt", true, 64, &receipt))
        return;
    int rc = dsync_queue_ack(r->server->node, topic, receipt);
    if (rc == DSYNC_ENOTFOUND) {
        http_reply_error(r, 404, "not_found",
                         "no message in flight for that receipt (unknown, already acked, or its "
                         "visibility ran out and it will be delivered again)");
        return;
    }
    if (rc == DSYNC_EINVAL) {
        http_reply_error(r, 400, "invalid_field", "bad \"topic\"");
        return;
    }
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "ack");
        return;
    }
    http_obj o;
    http_obj_begin(&o);
    http_obj_str(&o, "status", "acked");
    http_obj_str(&o, "topic", topic);
    http_reply_obj(r, 200, &o);
}

/* GET /queue/state[?topic=T]: the nodes topics are placed on, the topics
 * this node holds, and T's owner when asked. */
void handle_queue_state(http_req *r)
{
    char topic[DSYNC_TOPIC_MAX + 5];
    int got = r->query ? mg_get_var(r->query, strlen(r->query), "topic", topic, sizeof topic) : -1;
    if (got == -2 || got == 0) { /* too long, or empty */
        http_reply_error(r, 400, "invalid_field", "query \"topic\" must be a topic name");
        return;
    }
    dsync_queue_state st;
    int rc = dsync_queue_state_get(r->server->node, got > 0 ? topic : NULL, &st);
    if (rc == DSYNC_EINVAL) {
        http_reply_error(r, 400, "invalid_field", "query \"topic\" must be a topic name");
        return;
    }
    if (rc != 0) {
        http_reply_dsync_error(r, rc, "queue state");
        return;
    }
    json_t *owners = json_array(), *topics = json_array();
    for (size_t i = 0; i < st.n_owners; i++)
        json_array_append_new(owners, json_integer((json_int_t)st.owners[i]));
    for (size_t i = 0; i < st.n_topics; i++)
        json_array_append_new(topics, json_pack("{s:s,s:I,s:I}", "topic", st.topics[i].name,
                                                "depth", (json_int_t)st.topics[i].depth,
                                                "in_flight", (json_int_t)st.topics[i].in_flight));
    dsync_queue_state_free(&st);
    json_t *body = json_pack("{s:I,s:s,s:I,s:o,s:o}", "node_id",
                             (json_int_t)r->server->cfg->node_id, "store", st.store, "view_epoch",
                             (json_int_t)st.view_epoch, "owners", owners, "topics", topics);
    if (got > 0) {
        json_object_set_new(body, "topic", json_string(topic));
        json_object_set_new(
            body, "owner", st.topic_owner ? json_integer((json_int_t)st.topic_owner) : json_null());
    }
    http_reply_json(r, 200, body);
}
