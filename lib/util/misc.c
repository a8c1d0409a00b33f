/* misc.c: clocks, logging, string helpers, error names, version. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dsync/errors.h"
#include "dsync/version.h"
#include "util.h"

uint64_t ut_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t ut_now_ms(void)
{
    return ut_now_ns() / 1000000ULL;
}

uint64_t ut_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000ULL + (uint64_t)ts.tv_nsec / 1000000ULL;
}

void ut_log(const ut_logger *lg, dsync_log_level level, const char *fmt, ...)
{
    if (!lg || !lg->fn || level < lg->level) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    lg->fn(lg->ctx, level, msg);
}

char *ut_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int ut_strlcpy(char *dst, const char *src, size_t cap)
{
    size_t n = strlen(src);
    if (cap == 0) return -1;
    if (n >= cap) {
        memcpy(dst, src, cap - 1);
        dst[cap - 1] = '\0';
        return -1;
    }
    memcpy(dst, src, n + 1);
    return 0;
}

static const struct {
    int code;
    const char *name;
    const char *text;
} errors[] = {
    {DSYNC_OK, "OK", "success"},
    {DSYNC_EINVAL, "EINVAL", "invalid argument"},
    {DSYNC_ENOMEM, "ENOMEM", "out of memory"},
    {DSYNC_ENOTFOUND, "ENOTFOUND", "not found"},
    {DSYNC_ETIMEDOUT, "ETIMEDOUT", "timed out"},
    {DSYNC_EUNAVAILABLE, "EUNAVAILABLE", "service unavailable: no leader, quorum or store"},
    {DSYNC_ECLOSED, "ECLOSED", "node is closed"},
    {DSYNC_EIO, "EIO", "input/output error"},
    {DSYNC_ECORRUPT, "ECORRUPT", "data failed its integrity checks"},
    {DSYNC_ECONFIG, "ECONFIG", "invalid configuration"},
    {DSYNC_EEXIST, "EEXIST", "already exists"},
    {DSYNC_ETOOBIG, "ETOOBIG", "too large"},
    {DSYNC_ENOTLEADER, "ENOTLEADER", "not the leader"},
    {DSYNC_EPROTO, "EPROTO", "malformed answer from the server"},
    {DSYNC_ENOTSUPP, "ENOTSUPP", "the server does not support this call (no such endpoint)"},
};

const char *dsync_strerror(int code)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == code) return errors[i].text;
    return "unknown error";
}

const char *dsync_errname(int code)
{
    for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
        if (errors[i].code == code) return errors[i].name;
    return "EUNKNOWN";
}

const char *dsync_version(void)
{
    return DSYNC_VERSION_STRING;
}
