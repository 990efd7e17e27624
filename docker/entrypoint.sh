#!/bin/sh
# The image's entrypoint: check the volumes, then become `callrouter ARGS`.
#
# A bind mount made by root on the host is owned by root inside the container too, and the
# runtime user cannot write it: say so here, naming the directory and the fix, rather than
# let PostgreSQL's initdb fail with "permission denied" deep in its log.
set -eu

uid=$(id -u)
if [ "$uid" != 0 ]; then
    for dir in "${CALLROUTER_DATA_DIR:-/var/lib/callrouter/state}" \
               "${CALLROUTER_RECORDINGS_DIR:-/var/lib/callrouter/recordings}"; do
        if [ -d "$dir" ] && { [ ! -O "$dir" ] || [ ! -w "$dir" ]; }; then
            owner=$(stat -c %u "$dir")
            echo "callrouter-entrypoint: error: $dir is owned by uid $owner, but callrouter" \
                 "runs as uid $uid: on the host, chown -R $uid:$(id -g) the directory you" \
                 "mounted there, or use the named volumes of docker/compose.yaml" >&2
            exit 1
        fi
    done
fi
exec callrouter "$@"
