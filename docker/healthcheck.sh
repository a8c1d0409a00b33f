#!/bin/bash
# healthcheck.sh: the container's HEALTHCHECK. GET /health on this node's own
# HTTP port and exit 0 only on an HTTP 200, using nothing but bash (its
# /dev/tcp), so the runtime image needs no curl or wget.
#
#   healthcheck.sh [HOST:PORT]     default: $DSYNC_HTTP_ADDR, 0.0.0.0 read as 127.0.0.1
set -u
addr=${1:-${DSYNC_HTTP_ADDR:-127.0.0.1:8080}}
host=${addr%:*}
port=${addr##*:}
case $host in 0.0.0.0 | '' | '[::]' | '::') host=127.0.0.1 ;; esac

# The read gives up after 2 s; Docker's HEALTHCHECK timeout (3 s) bounds the rest.
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET /health HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3 || exit 1
read -r -t 2 proto status _ <&3 || exit 1
exec 3<&-
case $proto in HTTP/1.*) ;; *) exit 1 ;; esac
[ "$status" = 200 ]
