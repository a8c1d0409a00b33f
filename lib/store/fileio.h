/*
 * fileio.h: the file chores both durable stores (raftlog.c, aof.c) share:
 * whole writes at an offset, fsync of a directory after a rename, reading
 * a whole file, mkdir -p, and the zero-tail test of preallocated files.
 */
#ifndef DSYNC_STORE_FILEIO_H
#define DSYNC_STORE_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Writes all len bytes at off, retrying short writes and EINTR; -1 with
 * errno on failure. */
int sf_pwrite_all(int fd, const void *data, size_t len, uint64_t off);
/* fsync of a directory, so a rename or a new file in it is durable;
 * 0 or DSYNC_EIO. */
int sf_fsync_dir(const char *dir);
/* Reads a whole file into a malloc'ed buffer (one spare byte); *data is
 * NULL with *len 0 when it does not exist. 0, DSYNC_EIO or DSYNC_ENOMEM. */
int sf_read_file(const char *path, char **data, size_t *len);
/* mkdir -p with mode 0755; 0, DSYNC_EINVAL (path too long) or DSYNC_EIO. */
int sf_mkdir_p(const char *path);
/* Whether every byte of p[0, len) is zero: preallocated space, or a tail
 * a crash left zero-filled. */
bool sf_all_zero(const unsigned char *p, size_t len);

#endif
