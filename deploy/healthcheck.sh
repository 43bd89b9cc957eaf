#!/bin/bash
# Health probe of the taskvent image (Dockerfile HEALTHCHECK). It asks the program itself:
#   ventilator  `taskvent status --ping` on its own control socket: the event loop answers.
#   sink/worker GET /healthz on the metrics port (TASKVENT_METRICS_PORT), over bash's
#               /dev/tcp so that the image needs no curl.
#   taskvent    a one-shot client container: nothing to probe, healthy.
# Exit 0 healthy, 1 unhealthy (Docker's contract); one line on stdout says why.
set -u

role="${TASKVENT_ROLE:-}"
if [[ -z "$role" && -r /tmp/taskvent.role ]]; then
    role="$(< /tmp/taskvent.role)"
fi

# "tcp://*:5557" -> "5557"
port_of() {
    local endpoint="$1"
    echo "${endpoint##*:}"
}

probe_http() {
    local port="$1"
    if [[ -z "$port" || "$port" == "0" ]]; then
        echo "unhealthy: TASKVENT_METRICS_PORT is 0; the $role has no /healthz to probe"
        return 1
    fi
    local status
    # A child bash under `timeout`, so that a listener that accepts and never answers
    # cannot hang the probe; its $1 is the port. The request goes out in one write(2):
    # bash's own printf flushes at every newline, and a server that reads one segment and
    # closes then resets the connection before its answer is read. /usr/bin/printf
    # buffers all of it.
    # shellcheck disable=SC2016
    status="$(timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        /usr/bin/printf "GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3
        IFS= read -r line <&3 && printf "%s" "${line%$'"'"'\r'"'"'}"
    ' probe "$port" 2>/dev/null)"
    if [[ "$status" == HTTP/1.?" 200"* ]]; then
        echo "healthy: $role /healthz on port $port"
        return 0
    fi
    echo "unhealthy: $role /healthz on port $port answered '${status:-nothing}'"
    return 1
}

case "$role" in
    ventilator)
        port="$(port_of "${TASKVENT_CONTROL_BIND:-tcp://*:5557}")"
        exec /usr/local/bin/taskvent status --ping --timeout-ms 3000 \
            --control "tcp://127.0.0.1:${port}"
        ;;
    sink | worker)
        probe_http "${TASKVENT_METRICS_PORT:-0}"
        ;;
    taskvent)
        echo "healthy: one-shot client"
        ;;
    *)
        echo "unhealthy: unknown role '${role}'"
        exit 1
        ;;
esac
