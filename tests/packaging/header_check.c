/*
 * header_check.c: the installed public headers, seen by a C program.
 *
 * tests/packaging/test_install.sh compiles this as C99 and C11 with
 * -pedantic -Wall -Wextra -Werror and only pkg-config's flags, links it
 * against the installed library and runs it: the headers stand alone, the
 * version macros agree with each other, and dsync_version() reports the
 * version the headers were installed with.
 */
#include <dsync.h>

#include <stdio.h>
#include <string.h>

/* The one-number form is made of the three parts (a C99 compile-time check). */
typedef char version_number_matches_parts[DSYNC_VERSION_NUMBER ==
                                                  ((DSYNC_VERSION_MAJOR << 16) |
                                                   (DSYNC_VERSION_MINOR << 8) | DSYNC_VERSION_PATCH)
                                              ? 1
                                              : -1];

int main(void)
{
    char parts[32];
    snprintf(parts, sizeof parts, "%d.%d.%d", DSYNC_VERSION_MAJOR, DSYNC_VERSION_MINOR,
             DSYNC_VERSION_PATCH);
    const char *linked = dsync_version();
    printf("header_check (C %ld): dsync_version() = \"%s\", DSYNC_VERSION_STRING = \"%s\"\n",
           (long)__STDC_VERSION__, linked ? linked : "(null)", DSYNC_VERSION_STRING);
    if (linked == NULL || strcmp(linked, DSYNC_VERSION_STRING) != 0 ||
        strcmp(parts, DSYNC_VERSION_STRING) != 0)
        return 1;

    /* A few calls from each header, so a missing export fails the link. */
    dsync_config cfg;
    dsync_config_defaults(&cfg);
    if (dsync_strerror(DSYNC_EINVAL) == NULL) return 1;
    dsync_metrics *m = dsync_metrics_new();
    if (m == NULL) return 1;
    dsync_metrics_free(m);
    return 0;
}
