/*
 * fileio.c: file chores shared by the durable stores (see fileio.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsync/config.h"
#include "dsync/errors.h"
#include "fileio.h"
#include "util/util.h"

int sf_pwrite_all(int fd, const void *data, size_t len, uint64_t off)
{
    const char *p = data;
    while (len > 0) {
        ssize_t k = pwrite(fd, p, len, (off_t)off);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        off += (uint64_t)k;
        len -= (size_t)k;
    }
    return 0;
}

int sf_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return DSYNC_EIO;
    int rc = fsync(fd) == 0 ? 0 : DSYNC_EIO;
    close(fd);
    return rc;
}

int sf_read_file(const char *path, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : DSYNC_EIO;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return DSYNC_EIO;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return DSYNC_ENOMEM;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    *data = buf;
    *len = got;
    return 0;
}

int sf_mkdir_p(const char *path)
{
    char tmp[DSYNC_PATH_MAX + 16];
    if (ut_strlcpy(tmp, path, sizeof tmp) != 0) return DSYNC_EINVAL;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return DSYNC_EIO;
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return DSYNC_EIO;
    return 0;
}

bool sf_all_zero(const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i]) return false;
    return true;
}
