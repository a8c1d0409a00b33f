/*
 * lru.c: the per-node LRU over resident lines, O(1) in every call: an
 * intrusive doubly linked list (most recent at the head) and two counts,
 * entries and bytes, checked against their bounds.
 *
 * Resident lines (S, E, M) are counted; of those, the idle ones are also
 * linked. A line with a request in flight is pinned: unlinked, so it is
 * never picked as a victim while the protocol needs it, but still counted,
 * so memory stays honest.
 */
#include <assert.h>

#include "cache_internal.h"

size_t cc_line_bytes(const cc_line *l)
{
    return l->key_len + l->len;
}

static void link_head(cc_lru *lru, cc_line *l)
{
    assert(!l->linked);
    l->prev = NULL;
    l->next = lru->head;
    if (lru->head)
        lru->head->prev = l;
    else
        lru->tail = l;
    lru->head = l;
    l->linked = true;
}

static void unlink_line(cc_lru *lru, cc_line *l)
{
    if (!l->linked) return;
    if (l->prev)
        l->prev->next = l->next;
    else
        lru->head = l->next;
    if (l->next)
        l->next->prev = l->prev;
    else
        lru->tail = l->prev;
    l->prev = l->next = NULL;
    l->linked = false;
}

void cc_lru_add(cc_lru *lru, cc_line *l)
{
    assert(!l->counted);
    l->counted = true;
    lru->entries++;
    lru->bytes += cc_line_bytes(l);
    link_head(lru, l);
}

void cc_lru_remove(cc_lru *lru, cc_line *l)
{
    if (!l->counted) return;
    unlink_line(lru, l);
    l->counted = false;
    lru->entries--;
    lru->bytes -= cc_line_bytes(l);
}

void cc_lru_pin(cc_lru *lru, cc_line *l)
{
    unlink_line(lru, l);
}

void cc_lru_unpin(cc_lru *lru, cc_line *l)
{
    if (l->counted && !l->linked) link_head(lru, l);
}

void cc_lru_touch(cc_lru *lru, cc_line *l)
{
    if (!l->linked || lru->head == l) return;
    unlink_line(lru, l);
    link_head(lru, l);
}

void cc_lru_resize(cc_lru *lru, cc_line *l, size_t old_bytes)
{
    if (!l->counted) return;
    lru->bytes = lru->bytes - old_bytes + cc_line_bytes(l);
}

cc_line *cc_lru_victim(const cc_lru *lru)
{
    bool over = (lru->max_entries && lru->entries > lru->max_entries) ||
                (lru->max_bytes && lru->bytes > lru->max_bytes);
    return over ? lru->tail : NULL;
}
