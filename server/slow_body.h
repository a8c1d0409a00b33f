/*
 * slow_body.h: a deadline on reading a request body (slow_body.c), which
 * civetweb 1.15 does not keep. read_body checks the deadline after each
 * mg_read; a watchdog thread signals a worker still reading past its
 * deadline, which ends the poll() its mg_read waits in.
 */
#ifndef DSYNCD_SLOW_BODY_H
#define DSYNCD_SLOW_BODY_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/util.h"

/* The signal that wakes a worker; dsyncd installs a handler for it that
 * does nothing (SA_RESTART). Nothing else in dsyncd uses it. */
#define SB_SIGNAL SIGURG

typedef struct sb_slot sb_slot;

typedef struct {
    pthread_t thread;
    pthread_mutex_t mu; /* slots, n, cap, stopping */
    pthread_cond_t cond;
    sb_slot **slots; /* one per worker that has read a body */
    size_t n, cap;
    uint64_t period_ms; /* between the watchdog's looks */
    bool started, stopping;
} sb_watchdog;

/* Installs the signal's handler and starts the watchdog for bodies given
 * timeout_ms each. 0, or -1. */
int sb_start(sb_watchdog *w, uint64_t timeout_ms);
/* Stops it; after every worker that used it has stopped. */
void sb_stop(sb_watchdog *w);
/* The calling worker begins reading a body: until sb_end, past
 * deadline_ms (ut_now_ms's clock) the watchdog signals it, again at each
 * look. NULL when nothing watches (out of memory, or not started): the
 * body is then read with only civetweb's bounds. */
sb_slot *sb_begin(sb_watchdog *w, uint64_t deadline_ms);
/* Ends the watch: no signal comes after it returns. */
void sb_end(sb_slot *s);

#endif
