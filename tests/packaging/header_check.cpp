/*
 * header_check.cpp: the installed public headers, seen by a C++ program.
 *
 * tests/packaging/test_install.sh compiles this with g++ -std=c++11
 * -Wall -Wextra -Werror and only pkg-config's flags, links and runs it. The
 * link only succeeds if every declaration sits inside extern "C" (otherwise
 * the calls below name mangled symbols the library does not have).
 */
#include <dsync.h>

#include <cstdio>
#include <cstring>

static_assert(DSYNC_VERSION_NUMBER ==
                  ((DSYNC_VERSION_MAJOR << 16) | (DSYNC_VERSION_MINOR << 8) | DSYNC_VERSION_PATCH),
              "DSYNC_VERSION_NUMBER is made of the three parts");

int main()
{
    const char *linked = dsync_version();
    std::printf("header_check (C++ %ld): dsync_version() = \"%s\"\n",
                static_cast<long>(__cplusplus), linked ? linked : "(null)");
    if (linked == nullptr || std::strcmp(linked, DSYNC_VERSION_STRING) != 0) return 1;

    dsync_config cfg;
    dsync_config_defaults(&cfg);
    if (dsync_strerror(DSYNC_ENOTFOUND) == nullptr) return 1;
    dsync_metrics *m = dsync_metrics_new();
    if (m == nullptr) return 1;
    dsync_metrics_free(m);
    return 0;
}
