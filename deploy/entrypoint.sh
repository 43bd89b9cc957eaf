#!/bin/sh
# Entrypoint of the taskvent image: runs one of the programs in place of this shell, so
# that tini (PID 1) signals the program itself and Swarm's SIGTERM starts a worker's drain.
#
#   TASKVENT_ROLE=worker                  -> worker (flags from TASKVENT_* variables)
#   <image> worker --concurrency 8        -> worker --concurrency 8
#   <image> taskvent submit - ...         -> the client, e.g. a one-shot submit
#
# The first argument wins over TASKVENT_ROLE. The role is written to a file that the
# health check reads, so a container started with an argument is probed correctly too.
set -eu

role="${TASKVENT_ROLE:-}"
case "${1:-}" in
    ventilator | worker | sink | taskvent)
        role="$1"
        shift
        ;;
esac

case "$role" in
    ventilator | worker | sink | taskvent) ;;
    "")
        echo "taskvent-entrypoint: set TASKVENT_ROLE or give a program as first argument:" \
            "ventilator, worker, sink or taskvent" >&2
        exit 2
        ;;
    *)
        echo "taskvent-entrypoint: unknown role '$role' (ventilator, worker, sink, taskvent)" >&2
        exit 2
        ;;
esac

# /tmp, not the working directory: that may be a volume shared with other containers.
printf '%s\n' "$role" > /tmp/taskvent.role 2>/dev/null || true
exec "/usr/local/bin/$role" "$@"
