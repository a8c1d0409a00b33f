/*
 * map.c: string-keyed hash map, open addressing with linear probing.
 *
 * Deletion shifts later entries of the probe run back (Knuth's algorithm R)
 * instead of leaving tombstones, so lookups never slow down with churn.
 */
#include <stdlib.h>
#include <string.h>

#include "dsync/errors.h"
#include "util.h"

void ut_map_init(ut_map *m)
{
    m->slots = NULL;
    m->cap = 0;
    m->count = 0;
}

void ut_map_close(ut_map *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    ut_map_init(m);
}

static uint64_t key_hash(const char *key)
{
    return ut_hash64(key, strlen(key), 0x6473796e63ULL);
}

static size_t find(const ut_map *m, const char *key, uint64_t h)
{
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const ut_map_slot *s = &m->slots[i];
        if (!s->key || (s->hash == h && strcmp(s->key, key) == 0)) return i;
    }
}

void *ut_map_get(const ut_map *m, const char *key)
{
    if (m->count == 0) return NULL;
    size_t i = find(m, key, key_hash(key));
    return m->slots[i].key ? m->slots[i].value : NULL;
}

static int grow(ut_map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    ut_map_slot *ns = calloc(ncap, sizeof *ns);
    if (!ns) return DSYNC_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        ut_map_slot *s = &m->slots[i];
        if (!s->key) continue;
        size_t j = s->hash & (ncap - 1);
        while (ns[j].key)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

int ut_map_put(ut_map *m, const char *key, void *value)
{
    /* Keep the load under 3/4 so probe runs stay short. */
    if ((m->count + 1) * 4 > m->cap * 3 && grow(m) != 0) return DSYNC_ENOMEM;
    uint64_t h = key_hash(key);
    size_t i = find(m, key, h);
    ut_map_slot *s = &m->slots[i];
    if (s->key) {
        s->value = value;
        return 0;
    }
    char *copy = ut_strdup(key);
    if (!copy) return DSYNC_ENOMEM;
    s->key = copy;
    s->hash = h;
    s->value = value;
    m->count++;
    return 0;
}

void *ut_map_del(ut_map *m, const char *key)
{
    if (m->count == 0) return NULL;
    size_t mask = m->cap - 1;
    size_t i = find(m, key, key_hash(key));
    if (!m->slots[i].key) return NULL;
    void *value = m->slots[i].value;
    free(m->slots[i].key);
    m->slots[i].key = NULL;
    m->count--;
    /* Move back any later entry whose home slot does not lie cyclically in
     * (i, j]: it was probed past the hole and must not lose its way. */
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = m->slots[j].hash & mask;
        bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (stays) continue;
        m->slots[i] = m->slots[j];
        m->slots[j].key = NULL;
        i = j;
    }
    return value;
}

bool ut_map_next(const ut_map *m, size_t *iter, const char **key, void **value)
{
    for (size_t i = *iter; i < m->cap; i++) {
        if (m->slots[i].key) {
            if (key) *key = m->slots[i].key;
            if (value) *value = m->slots[i].value;
            *iter = i + 1;
            return true;
        }
    }
    *iter = m->cap;
    return false;
}
