/* version.h: libdsync's version, at compile time and at run time. */
#ifndef DSYNC_VERSION_H
#define DSYNC_VERSION_H

#define DSYNC_VERSION_MAJOR 0
#define DSYNC_VERSION_MINOR 1
#define DSYNC_VERSION_PATCH 0
#define DSYNC_VERSION_STRING "0.1.0"
/* One number that grows with every release: 0xMMmmpp. */
#define DSYNC_VERSION_NUMBER                                                                       \
    ((DSYNC_VERSION_MAJOR << 16) | (DSYNC_VERSION_MINOR << 8) | DSYNC_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library linked in, "MAJOR.MINOR.PATCH". */
const char *dsync_version(void);

#ifdef __cplusplus
}
#endif
#endif
