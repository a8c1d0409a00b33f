/*
 * transport.c: non-blocking TCP between peers, driven by the node loop.
 *
 * Outbound: one dialled connection per peer, carrying our frames to it;
 * reconnected with exponential backoff. Inbound: connections peers dialled
 * to us, carrying their frames; each must open with HELLO. Frames are
 * checked (magic, version, length, CRC) before a byte reaches the node.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dsync/errors.h"
#include "net.h"

#define MAGIC0 'D'
#define MAGIC1 'S'
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000

typedef enum { OUT_DOWN = 0, OUT_CONNECTING, OUT_UP } out_state;

typedef struct {
    uint64_t id;
    char host[DSYNC_ADDR_MAX];
    uint16_t port;
    bool self;
    bool drop;
    uint64_t last_heard;
    /* our dialled connection */
    int fd;
    out_state state;
    ut_buf outbox;
    size_t out_off; /* bytes of outbox already written */
    bool carried;   /* a watched frame was queued on this connection since it was dialled */
    uint64_t backoff_ms;
    uint64_t next_dial_ms;
} peer;

typedef struct {
    int fd;
    uint64_t from; /* 0 until HELLO */
    ut_buf inbuf;
} inbound;

enum { SLOT_LISTEN, SLOT_OUT, SLOT_IN };

struct nt_transport {
    nt_options opt;
    int listen_fd;
    peer *peers;
    size_t n_peers;
    inbound *in;
    size_t n_in, cap_in;
    /* what each pollfd handed out stands for */
    uint8_t *slot_kind;
    size_t *slot_idx;
    size_t slot_cap;
    nt_stats stats;
};

int nt_parse_addr(const char *addr, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || (size_t)(colon - addr) >= hostlen) return DSYNC_EINVAL;
    char *end;
    errno = 0;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || p == 0 || p > 65535) return DSYNC_EINVAL;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = (uint16_t)p;
    return 0;
}

static peer *find_peer(nt_transport *t, uint64_t id)
{
    for (size_t i = 0; i < t->n_peers; i++)
        if (t->peers[i].id == id) return &t->peers[i];
    return NULL;
}

static int resolve(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res;
    char ps[8];
    snprintf(ps, sizeof ps, "%u", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0) return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int nt_open(const nt_options *opt, nt_transport **out, char *err, size_t errlen)
{
    *out = NULL;
    nt_transport *t = calloc(1, sizeof *t);
    if (!t) return DSYNC_ENOMEM;
    t->opt = *opt;
    if (!t->opt.max_outbox_bytes) t->opt.max_outbox_bytes = 2 * (size_t)NT_MAX_FRAME;
    t->listen_fd = -1;
    t->peers = calloc(opt->n_peers, sizeof *t->peers);
    if (!t->peers) {
        free(t);
        return DSYNC_ENOMEM;
    }
    t->n_peers = opt->n_peers;
    for (size_t i = 0; i < opt->n_peers; i++) {
        peer *p = &t->peers[i];
        p->id = opt->peers[i].id;
        p->self = p->id == opt->self_id;
        p->fd = -1;
        p->backoff_ms = BACKOFF_MIN_MS;
        ut_buf_init(&p->outbox);
        if (nt_parse_addr(opt->peers[i].addr, p->host, sizeof p->host, &p->port) != 0) {
            snprintf(err, errlen, "bad peer address \"%s\"", opt->peers[i].addr);
            nt_close(t);
            return DSYNC_EINVAL;
        }
    }

    char host[DSYNC_ADDR_MAX];
    uint16_t port;
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (nt_parse_addr(opt->listen_addr, host, sizeof host, &port) != 0 ||
        resolve(host, port, &ss, &sslen) != 0) {
        snprintf(err, errlen, "bad peer listen address \"%s\"", opt->listen_addr);
        nt_close(t);
        return DSYNC_EINVAL;
    }
    int one = 1;
    t->listen_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (t->listen_fd < 0 ||
        setsockopt(t->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(t->listen_fd, (struct sockaddr *)&ss, sslen) != 0 || listen(t->listen_fd, 64) != 0) {
        snprintf(err, errlen, "cannot listen for peers on %s: %s", opt->listen_addr,
                 strerror(errno));
        nt_close(t);
        return DSYNC_EIO;
    }
    *out = t;
    return 0;
}

static void out_down(nt_transport *t, peer *p, uint64_t now_ms);

int nt_add_peer(nt_transport *t, uint64_t id, const char *addr)
{
    if (id == 0) return DSYNC_EINVAL;
    peer np = {.id = id, .fd = -1, .backoff_ms = BACKOFF_MIN_MS};
    if (nt_parse_addr(addr, np.host, sizeof np.host, &np.port) != 0) return DSYNC_EINVAL;
    for (size_t i = 0; i < t->n_peers; i++) {
        peer *p = &t->peers[i];
        if (p->id != id) continue;
        if (p->self || (p->port == np.port && strcmp(p->host, np.host) == 0)) return DSYNC_EEXIST;
        /* A member back at a new address: dial there from now on. */
        strcpy(p->host, np.host);
        p->port = np.port;
        p->backoff_ms = BACKOFF_MIN_MS;
        out_down(t, p, 0);
        return 0;
    }
    /* Indexes of existing peers stay as they are: the pollfds handed out
     * before this call still match. */
    peer *grown = realloc(t->peers, (t->n_peers + 1) * sizeof *grown);
    if (!grown) return DSYNC_ENOMEM;
    t->peers = grown;
    ut_buf_init(&np.outbox);
    t->peers[t->n_peers++] = np;
    return 0;
}

/* Whether the losses counter counts frames of this type. */
static bool watched(const nt_transport *t, uint8_t type)
{
    return type < 64 && (t->opt.watch_types >> type & 1);
}

static void out_down(nt_transport *t, peer *p, uint64_t now_ms)
{
    /* Frames unsent, or sent but unread by the peer, go with it. */
    if (p->carried) t->stats.losses++;
    p->carried = false;
    if (p->fd >= 0) close(p->fd);
    p->fd = -1;
    p->state = OUT_DOWN;
    p->outbox.len = 0;
    p->out_off = 0;
    p->next_dial_ms = now_ms + p->backoff_ms;
    p->backoff_ms = p->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : p->backoff_ms * 2;
}

static void in_close(nt_transport *t, size_t i)
{
    close(t->in[i].fd);
    ut_buf_free(&t->in[i].inbuf);
    t->in[i] = t->in[--t->n_in];
}

void nt_close(nt_transport *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n_peers; i++) {
        if (t->peers[i].fd >= 0) close(t->peers[i].fd);
        ut_buf_free(&t->peers[i].outbox);
    }
    while (t->n_in)
        in_close(t, t->n_in - 1);
    if (t->listen_fd >= 0) close(t->listen_fd);
    free(t->in);
    free(t->peers);
    free(t->slot_kind);
    free(t->slot_idx);
    free(t);
}

static int queue_frame(peer *p, uint8_t type, const void *p1, size_t n1, const void *p2, size_t n2)
{
    unsigned char hdr[NT_HEADER];
    hdr[0] = MAGIC0;
    hdr[1] = MAGIC1;
    hdr[2] = NT_VERSION;
    hdr[3] = type;
    ut_put_le(hdr + 4, (uint32_t)(n1 + n2), 4);
    uint32_t crc = ut_crc32c(0, p1, n1);
    if (n2) crc = ut_crc32c(crc, p2, n2);
    ut_put_le(hdr + 8, crc, 4);
    size_t before = p->outbox.len;
    if (ut_buf_append(&p->outbox, hdr, sizeof hdr) || (n1 && ut_buf_append(&p->outbox, p1, n1)) ||
        (n2 && ut_buf_append(&p->outbox, p2, n2))) {
        p->outbox.len = before;
        p->outbox.oom = false;
        return DSYNC_ENOMEM;
    }
    return 0;
}

static void dial(nt_transport *t, peer *p, uint64_t now_ms)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (resolve(p->host, p->port, &ss, &len) != 0) {
        out_down(t, p, now_ms);
        return;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        out_down(t, p, now_ms);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    p->fd = fd;
    p->outbox.len = 0;
    p->out_off = 0;
    unsigned char hello[9];
    for (int i = 0; i < 8; i++)
        hello[i] = (unsigned char)(t->opt.self_id >> (8 * i));
    hello[8] = NT_VERSION;
    queue_frame(p, NT_HELLO, hello, sizeof hello, NULL, 0);
    if (connect(fd, (struct sockaddr *)&ss, len) == 0) {
        p->state = OUT_UP;
    } else if (errno == EINPROGRESS) {
        p->state = OUT_CONNECTING;
    } else {
        out_down(t, p, now_ms);
    }
}

int nt_send2(nt_transport *t, uint64_t to, uint8_t type, const void *p1, size_t n1, const void *p2,
             size_t n2)
{
    peer *p = find_peer(t, to);
    if (!p || p->self) return DSYNC_ENOTFOUND;
    if (p->drop || p->state == OUT_DOWN || n1 + n2 > NT_MAX_FRAME ||
        p->outbox.len - p->out_off + n1 + n2 > t->opt.max_outbox_bytes) {
        t->stats.frames_dropped++;
        return DSYNC_EUNAVAILABLE;
    }
    if (queue_frame(p, type, p1, n1, p2, n2) != 0) {
        t->stats.frames_dropped++;
        return DSYNC_EUNAVAILABLE;
    }
    if (watched(t, type)) p->carried = true;
    t->stats.frames_sent++;
    return 0;
}

int nt_send(nt_transport *t, uint64_t to, uint8_t type, const void *payload, size_t len)
{
    return nt_send2(t, to, type, payload, len, NULL, 0);
}

static bool ensure_slots(nt_transport *t, size_t n)
{
    if (n <= t->slot_cap) return true;
    uint8_t *k = realloc(t->slot_kind, n);
    if (!k) return false;
    t->slot_kind = k;
    size_t *ix = realloc(t->slot_idx, n * sizeof *ix);
    if (!ix) return false;
    t->slot_idx = ix;
    t->slot_cap = n;
    return true;
}

size_t nt_pollfds(nt_transport *t, struct pollfd *fds, size_t max)
{
    size_t n = 0;
    if (!ensure_slots(t, max)) return 0;
    if (n < max) {
        fds[n] = (struct pollfd){.fd = t->listen_fd, .events = POLLIN};
        t->slot_kind[n] = SLOT_LISTEN;
        t->slot_idx[n++] = 0;
    }
    for (size_t i = 0; i < t->n_peers && n < max; i++) {
        peer *p = &t->peers[i];
        if (p->fd < 0) continue;
        short ev = POLLIN;
        if (p->state == OUT_CONNECTING || p->outbox.len > p->out_off) ev |= POLLOUT;
        fds[n] = (struct pollfd){.fd = p->fd, .events = ev};
        t->slot_kind[n] = SLOT_OUT;
        t->slot_idx[n++] = i;
    }
    for (size_t i = 0; i < t->n_in && n < max; i++) {
        fds[n] = (struct pollfd){.fd = t->in[i].fd, .events = POLLIN};
        t->slot_kind[n] = SLOT_IN;
        t->slot_idx[n++] = i;
    }
    return n;
}

static void accept_all(nt_transport *t)
{
    for (;;) {
        int fd = accept4(t->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        /* A cluster has a handful of peers; a flood of connections is not
         * one of them. */
        if (t->n_in >= 4 * t->n_peers + 16) {
            close(fd);
            t->stats.protocol_errors++;
            continue;
        }
        if (t->n_in == t->cap_in) {
            size_t ncap = t->cap_in ? t->cap_in * 2 : 8;
            inbound *ni = realloc(t->in, ncap * sizeof *ni);
            if (!ni) {
                close(fd);
                return;
            }
            t->in = ni;
            t->cap_in = ncap;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        inbound *c = &t->in[t->n_in++];
        c->fd = fd;
        c->from = 0;
        ut_buf_init(&c->inbuf);
    }
}

static void flush_out(nt_transport *t, peer *p, uint64_t now_ms)
{
    while (p->out_off < p->outbox.len) {
        ssize_t n =
            send(p->fd, p->outbox.data + p->out_off, p->outbox.len - p->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) out_down(t, p, now_ms);
            return;
        }
        p->out_off += (size_t)n;
        t->stats.bytes_sent += (uint64_t)n;
    }
    p->outbox.len = 0;
    p->out_off = 0;
}

/* Parses complete frames out of c->inbuf. Returns false when the peer
 * broke the protocol and must be dropped. */
static bool parse_frames(nt_transport *t, inbound *c, uint64_t now_ms)
{
    size_t off = 0;
    const unsigned char *d = (const unsigned char *)c->inbuf.data;
    while (c->inbuf.len - off >= NT_HEADER) {
        const unsigned char *h = d + off;
        uint32_t len = (uint32_t)ut_get_le(h + 4, 4);
        if (h[0] != MAGIC0 || h[1] != MAGIC1 || h[2] != NT_VERSION || len > NT_MAX_FRAME)
            return false;
        if (c->inbuf.len - off - NT_HEADER < len) break;
        const unsigned char *payload = h + NT_HEADER;
        if (ut_crc32c(0, payload, len) != (uint32_t)ut_get_le(h + 8, 4)) return false;
        uint8_t type = h[3];
        if (c->from == 0) {
            if (type != NT_HELLO || len != 9 || payload[8] != NT_VERSION) return false;
            uint64_t id = 0;
            for (int i = 0; i < 8; i++)
                id |= (uint64_t)payload[i] << (8 * i);
            peer *p = find_peer(t, id);
            if (!p || p->self) return false;
            c->from = id;
        } else if (type == NT_HELLO) {
            return false;
        } else {
            peer *p = find_peer(t, c->from);
            if (p->drop) {
                t->stats.frames_dropped++;
                if (watched(t, type)) t->stats.losses++;
            } else {
                p->last_heard = now_ms;
                t->stats.frames_received++;
                t->opt.on_frame(t->opt.ctx, c->from, type, payload, len);
            }
        }
        off += NT_HEADER + len;
    }
    if (off > 0) {
        memmove(c->inbuf.data, c->inbuf.data + off, c->inbuf.len - off);
        c->inbuf.len -= off;
    }
    return true;
}

/* Reads what is there; false when the connection is finished. */
static bool read_in(nt_transport *t, inbound *c, uint64_t now_ms)
{
    for (;;) {
        if (ut_buf_reserve(&c->inbuf, 64 * 1024) != 0) return false;
        size_t room = c->inbuf.cap - c->inbuf.len - 1;
        ssize_t n = recv(c->fd, c->inbuf.data + c->inbuf.len, room, 0);
        if (n == 0) return false;
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        c->inbuf.len += (size_t)n;
        t->stats.bytes_received += (uint64_t)n;
        if (!parse_frames(t, c, now_ms)) {
            t->stats.protocol_errors++;
            if (t->opt.log)
                ut_log(t->opt.log, DSYNC_LOG_WARN,
                       "peer transport: dropping a connection (from node %llu) that broke the "
                       "protocol",
                       (unsigned long long)c->from);
            return false;
        }
        /* A short read drained the socket: poll says when there is more
         * (level-triggered), which spares a recv that would only say
         * EAGAIN on every message. */
        if ((size_t)n < room) return true;
    }
}

void nt_handle(nt_transport *t, const struct pollfd *fds, size_t n, uint64_t now_ms)
{
    /* Inbound closes move entries around; close them after the pass. */
    bool close_in[n];
    memset(close_in, 0, sizeof close_in);
    for (size_t i = 0; i < n; i++) {
        if (!fds[i].revents) continue;
        switch (t->slot_kind[i]) {
        case SLOT_LISTEN:
            accept_all(t);
            break;
        case SLOT_OUT: {
            peer *p = &t->peers[t->slot_idx[i]];
            if (p->fd != fds[i].fd) break;
            if (p->state == OUT_CONNECTING) {
                int soerr = 0;
                socklen_t sl = sizeof soerr;
                if (getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0 ||
                    (fds[i].revents & (POLLERR | POLLHUP))) {
                    out_down(t, p, now_ms);
                    break;
                }
                p->state = OUT_UP;
                p->backoff_ms = BACKOFF_MIN_MS;
                t->stats.connects++;
            }
            if (fds[i].revents & (POLLIN | POLLERR | POLLHUP)) {
                /* Peers never write on a connection we dialled: readable
                 * means closed or broken. */
                out_down(t, p, now_ms);
                break;
            }
            if (fds[i].revents & POLLOUT) flush_out(t, p, now_ms);
            break;
        }
        case SLOT_IN:
            if (!read_in(t, &t->in[t->slot_idx[i]], now_ms)) close_in[i] = true;
            break;
        }
    }
    /* Close from the highest index down so the swap-remove stays valid. */
    for (size_t i = n; i-- > 0;)
        if (close_in[i] && t->slot_kind[i] == SLOT_IN) in_close(t, t->slot_idx[i]);
}

uint64_t nt_tick(nt_transport *t, uint64_t now_ms)
{
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < t->n_peers; i++) {
        peer *p = &t->peers[i];
        if (p->self) continue;
        if (p->state == OUT_DOWN && now_ms >= p->next_dial_ms) dial(t, p, now_ms);
        if (p->state == OUT_UP && p->outbox.len > p->out_off) flush_out(t, p, now_ms);
        if (p->state == OUT_DOWN && p->next_dial_ms < next) next = p->next_dial_ms;
    }
    return next;
}

uint64_t nt_last_heard(const nt_transport *t, uint64_t id)
{
    for (size_t i = 0; i < t->n_peers; i++)
        if (t->peers[i].id == id) return t->peers[i].last_heard;
    return 0;
}

bool nt_connected(const nt_transport *t, uint64_t id)
{
    for (size_t i = 0; i < t->n_peers; i++)
        if (t->peers[i].id == id) return t->peers[i].state == OUT_UP;
    return false;
}

void nt_set_drop(nt_transport *t, const uint64_t *ids, size_t n)
{
    for (size_t i = 0; i < t->n_peers; i++) {
        t->peers[i].drop = false;
        for (size_t j = 0; j < n; j++)
            if (t->peers[i].id == ids[j]) t->peers[i].drop = true;
    }
}

bool nt_dropping(const nt_transport *t, uint64_t id)
{
    for (size_t i = 0; i < t->n_peers; i++)
        if (t->peers[i].id == id) return t->peers[i].drop;
    return false;
}

void nt_get_stats(const nt_transport *t, nt_stats *out)
{
    *out = t->stats;
}
