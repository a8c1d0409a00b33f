/* errors.h: error codes returned by every libdsync call that can fail. */
#ifndef DSYNC_ERRORS_H
#define DSYNC_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

#define DSYNC_OK 0
#define DSYNC_EINVAL (-1)       /* an argument is malformed or out of range */
#define DSYNC_ENOMEM (-2)       /* an allocation failed */
#define DSYNC_ENOTFOUND (-3)    /* no such lock holder, topic, key, receipt */
#define DSYNC_ETIMEDOUT (-4)    /* the operation did not finish in time */
#define DSYNC_EUNAVAILABLE (-5) /* no leader, no quorum, or a store is down: retry */
#define DSYNC_ECLOSED (-6)      /* the node is closing or closed */
#define DSYNC_EIO (-7)          /* reading or writing a file or socket failed */
#define DSYNC_ECORRUPT (-8)     /* data on disk or from a peer failed its checks */
#define DSYNC_ECONFIG (-9)      /* the configuration is invalid */
#define DSYNC_EEXIST (-10)      /* the thing exists already */
#define DSYNC_ETOOBIG (-11)     /* a key, value or message is over its limit */
#define DSYNC_ENOTLEADER (-12)  /* this node cannot serve it; ask the leader */
#define DSYNC_EPROTO (-13)      /* a server's answer is malformed (not HTTP, not the JSON agreed) */
#define DSYNC_ENOTSUPP (-14)    /* the server has no such endpoint (an older dsyncd) */
#define DSYNC_ERR_MIN (-14)

/* A static, human-readable description of code; never NULL. */
const char *dsync_strerror(int code);
/* A short stable name of code, e.g. "EINVAL"; never NULL. */
const char *dsync_errname(int code);

#ifdef __cplusplus
}
#endif
#endif
