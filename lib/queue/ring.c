/*
 * ring.c: the consistent-hash ring (see ring.h): a sorted array of points,
 * binary search for a topic's successor, and a sorted array of node ids
 * for membership.
 */
#include "queue/ring.h"

#include <assert.h>
#include <stdlib.h>

#include "dsync/errors.h"
#include "util/util.h"

/* 2^64 / golden ratio: splitmix64's step. */
#define QR_GOLDEN 0x9e3779b97f4a7c15ULL
/* Dead ids qr_owner_live remembers, so a dead node's many points cost one
 * is_live call each for the first few dead nodes (a whole Raft-sized
 * cluster) rather than one per point. */
#define QR_DEAD_MEMO 16

typedef struct {
    uint64_t pos;  /* place on the circle */
    uint64_t node; /* owner of the arc that ends here */
} qr_point;

struct qr_ring {
    unsigned vnodes;
    qr_point *points; /* sorted by (pos, node) */
    size_t n_points, cap_points;
    uint64_t *nodes; /* sorted ascending, no duplicates, no 0 */
    size_t n_nodes, cap_nodes;
};

/*
 * Node id's k-th point: the k-th output of splitmix64 seeded with the mixed
 * id. ut_mix64 is a bijection and the Weyl steps differ for every k, so one
 * node's points never collide with each other; across nodes the seeds are
 * unrelated, so the points fall independently and uniformly.
 */
static uint64_t point_pos(uint64_t id, unsigned k)
{
    return ut_mix64(ut_mix64(id) + ((uint64_t)k + 1) * QR_GOLDEN);
}

/* The total order of points: equal positions fall back to the node id, so
 * every replica sorts the same membership into the same array. */
static bool point_before(const qr_point *a, const qr_point *b)
{
    return a->pos < b->pos || (a->pos == b->pos && a->node < b->node);
}

static int point_cmp(const void *pa, const void *pb)
{
    const qr_point *a = pa, *b = pb;
    return point_before(a, b) ? -1 : point_before(b, a) ? 1 : 0;
}

/* Index of the first node id >= id. */
static size_t node_lower_bound(const qr_ring *r, uint64_t id)
{
    size_t lo = 0, hi = r->n_nodes;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->nodes[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Index of the point that owns position h: the first with pos >= h, or 0
 * past the top of the circle. The ring must have points. */
static size_t successor(const qr_ring *r, uint64_t h)
{
    size_t lo = 0, hi = r->n_points;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].pos < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == r->n_points ? 0 : lo;
}

/* Grows *arr to hold at least need elements of size sz; keeps the contents
 * (and the old array) when realloc fails. */
static int reserve(void **arr, size_t *cap, size_t need, size_t sz)
{
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / sz) return DSYNC_ENOMEM;
        ncap *= 2;
    }
    void *p = realloc(*arr, ncap * sz);
    if (!p) return DSYNC_ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

qr_ring *qr_new(unsigned vnodes)
{
    if (vnodes == 0) vnodes = QR_DEFAULT_VNODES;
    if (vnodes > QR_MAX_VNODES) return NULL;
    qr_ring *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->vnodes = vnodes;
    return r;
}

void qr_free(qr_ring *r)
{
    if (!r) return;
    free(r->points);
    free(r->nodes);
    free(r);
}

int qr_add(qr_ring *r, uint64_t id)
{
    if (id == 0) return DSYNC_EINVAL;
    size_t at = node_lower_bound(r, id);
    if (at < r->n_nodes && r->nodes[at] == id) return DSYNC_EEXIST;

    /* Everything that can fail comes before the first change. */
    size_t v = r->vnodes;
    if (r->n_points > SIZE_MAX - v) return DSYNC_ENOMEM;
    qr_point *fresh = malloc(v * sizeof *fresh);
    if (!fresh) return DSYNC_ENOMEM;
    if (reserve((void **)&r->points, &r->cap_points, r->n_points + v, sizeof *r->points) ||
        reserve((void **)&r->nodes, &r->cap_nodes, r->n_nodes + 1, sizeof *r->nodes)) {
        free(fresh);
        return DSYNC_ENOMEM;
    }

    for (unsigned k = 0; k < v; k++)
        fresh[k] = (qr_point){point_pos(id, k), id};
    qsort(fresh, v, sizeof *fresh, point_cmp);

    /* Merge from the back so the old points move at most once. */
    size_t i = r->n_points, j = v, out = r->n_points + v;
    while (j > 0) {
        if (i > 0 && point_before(&fresh[j - 1], &r->points[i - 1]))
            r->points[--out] = r->points[--i];
        else
            r->points[--out] = fresh[--j];
    }
    r->n_points += v;
    free(fresh);

    for (size_t k = r->n_nodes; k > at; k--)
        r->nodes[k] = r->nodes[k - 1];
    r->nodes[at] = id;
    r->n_nodes++;
    return 0;
}

int qr_remove(qr_ring *r, uint64_t id)
{
    size_t at = node_lower_bound(r, id);
    if (at == r->n_nodes || r->nodes[at] != id) return DSYNC_ENOTFOUND;
    for (size_t k = at + 1; k < r->n_nodes; k++)
        r->nodes[k - 1] = r->nodes[k];
    r->n_nodes--;

    size_t kept = 0;
    for (size_t k = 0; k < r->n_points; k++)
        if (r->points[k].node != id) r->points[kept++] = r->points[k];
    assert(kept == r->n_points - r->vnodes);
    r->n_points = kept;
    return 0;
}

bool qr_has(const qr_ring *r, uint64_t id)
{
    size_t at = node_lower_bound(r, id);
    return at < r->n_nodes && r->nodes[at] == id;
}

size_t qr_count(const qr_ring *r)
{
    return r->n_nodes;
}

unsigned qr_vnodes(const qr_ring *r)
{
    return r->vnodes;
}

uint64_t qr_topic_hash(const char *topic, size_t len)
{
    assert(topic || len == 0);
    return ut_hash64(topic, len, QR_TOPIC_SEED);
}

uint64_t qr_owner(const qr_ring *r, const char *topic, size_t len)
{
    if (r->n_points == 0) return 0;
    return r->points[successor(r, qr_topic_hash(topic, len))].node;
}

uint64_t qr_owner_live(const qr_ring *r, const char *topic, size_t len, qr_live_fn is_live,
                       void *ctx)
{
    if (!is_live) return qr_owner(r, topic, len);
    if (r->n_points == 0) return 0;
    uint64_t dead[QR_DEAD_MEMO];
    size_t n_dead = 0;
    size_t start = successor(r, qr_topic_hash(topic, len));
    for (size_t step = 0; step < r->n_points; step++) {
        size_t at = start + step;
        uint64_t node = r->points[at < r->n_points ? at : at - r->n_points].node;
        bool known_dead = false;
        for (size_t k = 0; k < n_dead && !known_dead; k++)
            known_dead = dead[k] == node;
        if (known_dead) continue;
        if (is_live(ctx, node)) return node;
        if (n_dead < QR_DEAD_MEMO) dead[n_dead++] = node;
    }
    return 0;
}

size_t qr_preference_list(const qr_ring *r, const char *topic, size_t len, uint64_t *out,
                          size_t max)
{
    size_t want = max < r->n_nodes ? max : r->n_nodes;
    if (want == 0) return 0;
    size_t found = 0;
    size_t start = successor(r, qr_topic_hash(topic, len));
    /* Every node has points, so one turn of the circle meets them all. */
    for (size_t step = 0; step < r->n_points && found < want; step++) {
        size_t at = start + step;
        uint64_t node = r->points[at < r->n_points ? at : at - r->n_points].node;
        bool seen = false;
        for (size_t k = 0; k < found && !seen; k++)
            seen = out[k] == node;
        if (!seen) out[found++] = node;
    }
    assert(found == want);
    return found;
}
