/* handlers.h: dsyncd's endpoint handlers, one file per service. */
#ifndef DSYNCD_HANDLERS_H
#define DSYNCD_HANDLERS_H

#include "http.h"

void handle_lock_acquire(http_req *r);
void handle_lock_release(http_req *r);
void handle_lock_state(http_req *r);

void handle_queue_enqueue(http_req *r);
void handle_queue_consume(http_req *r);
void handle_queue_ack(http_req *r);
void handle_queue_state(http_req *r);
void handle_cache_get(http_req *r);
void handle_cache_put(http_req *r);

void handle_health(http_req *r);
void handle_metrics(http_req *r);
void handle_admin_faults(http_req *r);
void handle_admin_members(http_req *r);

#endif
