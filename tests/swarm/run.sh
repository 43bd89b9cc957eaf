#!/usr/bin/env bash
# End-to-end test of the Swarm deployment (issue #5, DESIGN §9) on a real Docker engine.
#
# Brings its own engine when none answers (Debian's docker.io, dockerd in the background),
# a single-node swarm and a locally made debian:bookworm-slim (no registry is needed), then:
# builds the image, deploys stack.yml as `taskvent`, waits until every service is converged
# and healthy, submits TASKVENT_E2E_TASKS `sleep` tasks from a one-shot container on the
# overlay network, and during the run scales the workers up, SIGKILLs one, scales down,
# and restarts the ventilator service (only when the stack runs it with a journal: without
# one a restart loses the queue by design). It then checks that the sink's output has
# every task exactly once and prints the timing of each step and the counts.
#
# Everything it made is torn down on exit, failure included: the stack, its volumes, the
# images it built, the node label, the swarm if it initialised it, dockerd if it started
# it. TASKVENT_E2E_KEEP=1 keeps all of it for a post-mortem.
#
# Exit: 0 passed or skipped (not root, no engine to be had); 1 failed. With CI=true a skip
# is a failure: CI must really run this.
#
# Knobs (environment):
#   TASKVENT_E2E_TASKS=100000     tasks in the batch
#   TASKVENT_E2E_TASK_MS=8        each task sleeps this long (the payload); with the
#                                 defaults about 40% of the batch is left at scale-down
#   TASKVENT_E2E_CONCURRENCY=2    handler threads per worker
#   TASKVENT_E2E_WORKERS=3        workers at deploy; then SCALE_UP, then SCALE_DOWN
#   TASKVENT_E2E_SCALE_UP=8  TASKVENT_E2E_SCALE_DOWN=2
#   TASKVENT_E2E_RESTART_VENTILATOR=auto   auto: only with a journal; 1: always; 0: never
#   TASKVENT_E2E_TIMEOUT_S=600    longest wait for the batch to complete
#   TASKVENT_E2E_BUILD_JOBS=2     compile jobs inside the image build
#   TASKVENT_E2E_BASE_TAR=PATH    cache of the debootstrapped base (made when missing)
#   TASKVENT_E2E_IMAGE=TAG        test this image instead of building one (kept at exit)
#   TASKVENT_E2E_KEEP=1           leave everything running for a post-mortem
set -Eeuo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
readonly repo
readonly stack=taskvent
readonly tasks_total="${TASKVENT_E2E_TASKS:-100000}"
readonly task_ms="${TASKVENT_E2E_TASK_MS:-8}"
readonly concurrency="${TASKVENT_E2E_CONCURRENCY:-2}"
readonly workers_start="${TASKVENT_E2E_WORKERS:-3}"
readonly workers_up="${TASKVENT_E2E_SCALE_UP:-8}"
readonly workers_down="${TASKVENT_E2E_SCALE_DOWN:-2}"
readonly restart_ventilator="${TASKVENT_E2E_RESTART_VENTILATOR:-auto}"
readonly timeout_s="${TASKVENT_E2E_TIMEOUT_S:-600}"
readonly build_jobs="${TASKVENT_E2E_BUILD_JOBS:-2}"
readonly base_tar="${TASKVENT_E2E_BASE_TAR:-}"
readonly keep="${TASKVENT_E2E_KEEP:-0}"
readonly base_image=debian:bookworm-slim
readonly run_id="e2e-$$"
readonly image="${TASKVENT_E2E_IMAGE:-taskvent:${run_id}}"
readonly build_image="taskvent-build:${run_id}"

workdir=""
started_dockerd_pid=""
initialised_swarm=0
labelled_node=""
imported_base=0
built_images=()
deployed=0
log_followers=()
failed=1
timings=()
t_start=$SECONDS

# ---------------------------------------------------------------------------------------
# Output helpers

log() { printf '[swarm-e2e %4ds] %s\n' "$((SECONDS - t_start))" "$*"; }
fail() {
    log "FAIL: $*"
    exit 1
}

skip() {
    if [[ "${CI:-}" == "true" ]]; then
        log "FAIL: would skip ($*), but CI=true: CI must run the Swarm test"
        exit 1
    fi
    log "SKIP: $*"
    failed=0
    exit 0
}

# step NAME CMD...: runs CMD, records its wall time under NAME.
step() {
    local name="$1"
    shift
    local t0=$SECONDS
    log "step: ${name}"
    "$@"
    local took=$((SECONDS - t0))
    timings+=("$(printf '%-34s %5ds' "$name" "$took")")
    log "step: ${name} took ${took}s"
}

# wait_until SECONDS DESCRIPTION CMD...: polls CMD every second until it succeeds.
wait_until() {
    local limit="$1" what="$2"
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            fail "timed out after ${limit}s waiting for: ${what}"
        fi
        sleep 1
    done
}

# ---------------------------------------------------------------------------------------
# Teardown: undo exactly what this run did, in reverse order, whatever happened.

dump_diagnostics() {
    log "diagnostics (service states and the last log lines of each service):"
    docker service ls --filter "label=com.docker.stack.namespace=${stack}" 2>&1 || true
    local svc
    for svc in ventilator sink worker; do
        echo "--- ${stack}_${svc} tasks"
        docker service ps --no-trunc "${stack}_${svc}" 2>&1 | head -20 || true
        echo "--- ${stack}_${svc} logs"
        docker service logs --tail 30 --no-task-ids "${stack}_${svc}" 2>&1 | tail -30 || true
    done
}

teardown() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if ((failed)) && ((deployed)); then
        dump_diagnostics
    fi
    if [[ "$keep" == "1" ]]; then
        log "TASKVENT_E2E_KEEP=1: leaving the stack, volumes, images, swarm and engine up"
        log "work directory: ${workdir}"
        return "$rc"
    fi
    log "teardown"
    local pid
    for pid in "${log_followers[@]}"; do
        kill "$pid" 2>/dev/null
    done
    if ((deployed)); then
        docker stack rm "$stack" >/dev/null
        # Volumes and the network go only once every task container has stopped (workers
        # drain first, quickly now that the queue is empty).
        local deadline=$((SECONDS + 120))
        while [[ -n "$(docker ps -aq --filter "label=com.docker.stack.namespace=${stack}")" ]] &&
            ((SECONDS < deadline)); do
            sleep 1
        done
        while docker network inspect "${stack}_net" >/dev/null 2>&1 && ((SECONDS < deadline)); do
            sleep 1
        done
        docker volume rm "${stack}_journal" "${stack}_results" >/dev/null ||
            log "teardown: could not remove the stack's volumes"
    fi
    local img
    for img in "${built_images[@]}"; do
        docker image inspect "$img" >/dev/null 2>&1 || continue
        docker image rm "$img" >/dev/null || log "teardown: could not remove image ${img}"
    done
    if ((imported_base)); then
        docker image rm "$base_image" >/dev/null || log "teardown: could not remove ${base_image}"
    fi
    # A build that failed leaves its finished steps as untagged images. On an engine this
    # run started nobody else's images exist, so they go; on a shared one they stay.
    if [[ -n "$started_dockerd_pid" ]]; then
        docker image prune --force >/dev/null
    elif ((failed)) && [[ -n "$(docker images --quiet --filter dangling=true)" ]]; then
        log "teardown: untagged images remain (a failed build?); 'docker image prune' removes them"
    fi
    if [[ -n "$labelled_node" ]] && ((!initialised_swarm)); then
        docker node update --label-rm taskvent.state "$labelled_node" >/dev/null
    fi
    if ((initialised_swarm)); then
        docker swarm leave --force >/dev/null || log "teardown: could not leave the swarm"
    fi
    if [[ -n "$started_dockerd_pid" ]]; then
        kill -TERM "$started_dockerd_pid" 2>/dev/null
        local i
        for ((i = 0; i < 30; i++)); do
            kill -0 "$started_dockerd_pid" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$started_dockerd_pid" 2>/dev/null; then
            log "teardown: dockerd (pid ${started_dockerd_pid}) did not stop in 30s; killing it"
            kill -KILL "$started_dockerd_pid" 2>/dev/null
        fi
    fi
    if ((failed)); then
        log "work directory kept for a post-mortem: ${workdir}"
    elif [[ -n "$workdir" ]]; then
        rm -rf "$workdir"
    fi
    log "teardown done"
    return "$rc"
}

# ---------------------------------------------------------------------------------------
# Engine, swarm, base image

engine_answers() { docker info >/dev/null 2>&1; }

# install_packages PKG...: apt-get install, refreshing the package lists once if needed.
install_packages() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$@" >>"${workdir}/apt.log" 2>&1 && return 0
    apt-get update -q >>"${workdir}/apt.log" 2>&1 || return 1
    apt-get install -y -q "$@" >>"${workdir}/apt.log" 2>&1
}

bring_engine() {
    if command -v docker >/dev/null && engine_answers; then
        log "using the running Docker engine"
        return
    fi
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        command -v apt-get >/dev/null || skip "no Docker engine and no apt-get to install one"
        log "installing docker.io"
        if ! install_packages docker.io; then
            skip "cannot install docker.io (see ${workdir}/apt.log)"
        fi
    fi
    log "starting dockerd (log: ${workdir}/dockerd.log)"
    dockerd >"${workdir}/dockerd.log" 2>&1 &
    started_dockerd_pid=$!
    local deadline=$((SECONDS + 60))
    until engine_answers; do
        if ! kill -0 "$started_dockerd_pid" 2>/dev/null; then
            started_dockerd_pid=""
            tail -5 "${workdir}/dockerd.log" >&2
            skip "dockerd exited at start (see above)"
        fi
        ((SECONDS < deadline)) || skip "dockerd did not answer within 60s"
        sleep 1
    done
}

bring_swarm() {
    local state
    state="$(docker info --format '{{.Swarm.LocalNodeState}}')"
    if [[ "$state" == "inactive" ]]; then
        docker swarm init --advertise-addr 127.0.0.1 >/dev/null
        initialised_swarm=1
        log "initialised a single-node swarm"
    elif [[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" != "true" ]]; then
        fail "this engine is in a swarm (state ${state}) but not a manager; cannot deploy"
    else
        log "using the existing swarm"
    fi
    # stack.yml pins the ventilator and the sink (local volumes) to a labelled node.
    local node
    node="$(docker info --format '{{.Swarm.NodeID}}')"
    if [[ "$(docker node inspect --format '{{index .Spec.Labels "taskvent.state"}}' "$node")" != "true" ]]; then
        docker node update --label-add taskvent.state=true "$node" >/dev/null
        labelled_node="$node"
    fi
}

make_base_image() {
    if docker image inspect "$base_image" >/dev/null 2>&1; then
        log "${base_image} is present"
        return
    fi
    if [[ -n "$base_tar" && -s "$base_tar" ]]; then
        log "importing ${base_image} from ${base_tar}"
        docker import - "$base_image" <"$base_tar" >/dev/null
        imported_base=1
        return
    fi
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        install_packages debootstrap || fail "cannot install debootstrap (see ${workdir}/apt.log)"
    fi
    log "debootstrapping ${base_image} (log: ${workdir}/debootstrap.log)"
    local rootfs="${workdir}/rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian \
        >"${workdir}/debootstrap.log" 2>&1 || fail "debootstrap failed (see ${workdir}/debootstrap.log)"
    if [[ -n "$base_tar" ]]; then
        tar -C "$rootfs" -c . >"$base_tar"
        docker import - "$base_image" <"$base_tar" >/dev/null
    else
        tar -C "$rootfs" -c . | docker import - "$base_image" >/dev/null
    fi
    imported_base=1
    rm -rf "$rootfs"
}

build_image() {
    if [[ -n "${TASKVENT_E2E_IMAGE:-}" ]]; then
        docker image inspect "$image" >/dev/null 2>&1 || fail "TASKVENT_E2E_IMAGE=${image} does not exist"
        log "testing the given image ${image}; not building"
        return
    fi
    # Both builds below read one snapshot of the tree: an edit made meanwhile would
    # otherwise miss the cache and compile everything twice (and test a mixed tree).
    local context="${workdir}/context"
    mkdir -p "$context"
    tar -C "$repo" --exclude=./.git --exclude='./build*' --exclude=./out -c . |
        tar -C "$context" -x
    # The build stage is tagged too, so that teardown removes its layers with the tag.
    built_images+=("$build_image")
    docker build --force-rm --target build --build-arg "TASKVENT_BUILD_JOBS=${build_jobs}" \
        -t "$build_image" "$context" >"${workdir}/build.log" 2>&1 ||
        {
            tail -30 "${workdir}/build.log"
            fail "image build failed (see ${workdir}/build.log)"
        }
    built_images+=("$image")
    docker build --force-rm --build-arg "TASKVENT_BUILD_JOBS=${build_jobs}" -t "$image" "$context" \
        >>"${workdir}/build.log" 2>&1 ||
        {
            tail -30 "${workdir}/build.log"
            fail "image build failed (see ${workdir}/build.log)"
        }
    rm -rf "$context"
    log "image ${image}: $(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

# ---------------------------------------------------------------------------------------
# The stack

container_of() {
    docker ps -q --filter "label=com.docker.swarm.service.name=${stack}_$1" \
        --filter status=running | head -1
}

# Every service at its replica count, every running container of the stack healthy.
stack_healthy() {
    local want_workers="$1"
    local name replicas
    while read -r name replicas; do
        [[ "${replicas%%/*}" == "${replicas##*/}" ]] || return 1
        [[ "$name" == "${stack}_worker" && "$replicas" != "${want_workers}/${want_workers}" ]] &&
            return 1
    done < <(docker service ls --filter "label=com.docker.stack.namespace=${stack}" \
        --format '{{.Name}} {{.Replicas}}')
    local healthy
    healthy="$(docker ps --filter "label=com.docker.stack.namespace=${stack}" \
        --filter health=healthy -q | wc -l)"
    local running
    running="$(docker ps --filter "label=com.docker.stack.namespace=${stack}" -q | wc -l)"
    [[ "$running" -eq $((want_workers + 2)) && "$healthy" -eq "$running" ]]
}

deploy_stack() {
    if docker stack ls --format '{{.Name}}' | grep -qx "$stack"; then
        fail "a stack named '${stack}' is already deployed; not touching it"
    fi
    local v
    for v in journal results; do
        if docker volume inspect "${stack}_${v}" >/dev/null 2>&1; then
            fail "volume ${stack}_${v} exists (old results?); remove it first: docker volume rm ${stack}_${v}"
        fi
    done
    # The file as users deploy it, with its defaults: docker stack config must accept it.
    docker stack config -c "${repo}/stack.yml" >"${workdir}/stack-config.yml" 2>&1 ||
        {
            cat "${workdir}/stack-config.yml"
            fail "docker stack config rejects stack.yml"
        }
    deployed=1
    env TASKVENT_IMAGE="$image" \
        TASKVENT_WORKERS="$workers_start" \
        TASKVENT_HANDLER=sleep \
        TASKVENT_CONCURRENCY="$concurrency" \
        TASKVENT_LOG_LEVEL=info \
        docker stack deploy -c "${repo}/stack.yml" "$stack" >"${workdir}/deploy.log" 2>&1 ||
        {
            cat "${workdir}/deploy.log"
            fail "docker stack deploy failed"
        }
    # Followers keep every task's log, also of the containers a scale-down removes.
    local svc
    for svc in ventilator sink worker; do
        docker service logs --follow --raw --timestamps "${stack}_${svc}" \
            >"${workdir}/${svc}.log" 2>&1 &
        log_followers+=("$!")
    done
    wait_until 180 "every service converged and healthy" stack_healthy "$workers_start"
}

# The sink's record count, read in its container; 0 before the first line.
records() {
    local sink
    sink="$(container_of sink)"
    [[ -n "$sink" ]] || {
        echo 0
        return
    }
    docker exec "$sink" sh -c 'wc -l < /var/lib/taskvent/results.jsonl 2>/dev/null || echo 0' ||
        echo 0
}

ventilator_status() {
    local vent
    vent="$(container_of ventilator)"
    [[ -n "$vent" ]] || return 1
    docker exec "$vent" taskvent status --json --control tcp://127.0.0.1:5557 2>/dev/null
}

# json_field JSON NAME: a top-level number from a flat JSON object.
json_field() {
    sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"
}

submit_batch() {
    awk -v n="$tasks_total" -v ms="$task_ms" \
        'BEGIN { for (i = 1; i <= n; i++) printf "{\"key\":\"t%07d\",\"payload\":\"%d\"}\n", i, ms }' \
        >"${workdir}/tasks.jsonl"
    # A one-shot client container on the attachable overlay: it reaches the ventilator by
    # name, as an operator would (deploy/README.md).
    docker run --rm -i --network "${stack}_net" "$image" \
        taskvent submit - --control "tcp://ventilator:5557" \
        <"${workdir}/tasks.jsonl" >"${workdir}/submit.out" 2>&1 ||
        {
            cat "${workdir}/submit.out"
            fail "taskvent submit failed"
        }
    log "$(cat "${workdir}/submit.out")"
    grep -q "accepted tasks=${tasks_total} " "${workdir}/submit.out" ||
        fail "the ventilator did not accept all ${tasks_total} tasks"
}

wait_records_at_least() {
    local want="$1" limit="$2"
    wait_until "$limit" "${want} records in the sink" test_records_at_least "$want"
}
test_records_at_least() { (($(records) >= $1)); }

scale_workers() {
    docker service scale --detach=false "${stack}_worker=$1" >"${workdir}/scale-$1.log" 2>&1 ||
        {
            cat "${workdir}/scale-$1.log"
            fail "docker service scale ${stack}_worker=$1 failed"
        }
    wait_until 120 "workers at $1 and healthy" stack_healthy "$1"
}

kill_one_worker() {
    local victim
    victim="$(container_of worker)"
    [[ -n "$victim" ]] || fail "no running worker container to kill"
    log "docker kill (SIGKILL) worker container ${victim}"
    docker kill --signal KILL "$victim" >/dev/null
    wait_until 30 "the killed container stopped" container_stopped "$victim"
    # The restart policy replaces it; the ventilator reissues what it held once it misses
    # its heartbeats.
    wait_until 120 "the killed worker replaced" stack_healthy "$workers_up"
}

container_stopped() {
    [[ "$(docker inspect --format '{{.State.Running}}' "$1" 2>/dev/null)" != "true" ]]
}

# Whether a ventilator restart keeps the queue: the image's ventilator knows --journal and
# the deployed service passes one. Prints the reason when it does not.
ventilator_has_journal() {
    if ! docker run --rm "$image" ventilator --help 2>&1 | grep -q -- '--journal'; then
        echo "the ventilator in ${image} has no --journal flag (issue #3)"
        return 1
    fi
    if ! docker service inspect --format '{{json .Spec.TaskTemplate.ContainerSpec.Env}}' \
        "${stack}_ventilator" | grep -q 'TASKVENT_JOURNAL='; then
        echo "stack.yml does not set TASKVENT_JOURNAL for the ventilator"
        return 1
    fi
}

restart_ventilator_service() {
    docker service update --force --detach=false "${stack}_ventilator" \
        >"${workdir}/update-ventilator.log" 2>&1 ||
        {
            cat "${workdir}/update-ventilator.log"
            fail "docker service update --force ${stack}_ventilator failed"
        }
    wait_until 120 "the new ventilator healthy" stack_healthy "$workers_down"
}

wait_complete() {
    local deadline=$((SECONDS + timeout_s)) last=-1 last_change=$SECONDS last_print=$SECONDS n
    while :; do
        n="$(records)"
        if ((n >= tasks_total)); then
            log "sink has ${n} records"
            return
        fi
        if ((n != last)); then
            last=$n
            last_change=$SECONDS
        elif ((SECONDS - last_change >= 60)); then
            fail "no new record for 60s at ${n} of ${tasks_total}"
        fi
        ((SECONDS < deadline)) || fail "batch not complete after ${timeout_s}s: ${n} of ${tasks_total}"
        if ((SECONDS - last_print >= 10)); then
            log "progress: ${n} of ${tasks_total} records"
            last_print=$SECONDS
        fi
        sleep 1
    done
}

# Stops the sink (SIGTERM: it writes stats.json) and reads its volume from a one-shot
# container, as deploy/README.md tells an operator to.
collect_results() {
    docker service scale --detach=false "${stack}_sink=0" >/dev/null 2>&1
    chmod 0755 "$workdir"
    docker run --rm -v "${stack}_results:/data:ro" --entrypoint cat "$image" \
        /data/results.jsonl >"${workdir}/results.jsonl"
    docker run --rm -v "${stack}_results:/data:ro" --entrypoint cat "$image" \
        /data/stats.json >"${workdir}/sink-stats.json" 2>/dev/null || echo '{}' >"${workdir}/sink-stats.json"
}

# ---------------------------------------------------------------------------------------
# Checks

check_results() {
    chmod 0644 "${workdir}/tasks.jsonl" "${workdir}/results.jsonl"
    # The project's own checker, run from the image (no host build needed).
    local summary rc=0
    summary="$(docker run --rm -v "${workdir}:/e2e:ro" "$image" taskvent check \
        --tasks /e2e/tasks.jsonl --results /e2e/results.jsonl)" || rc=$?
    log "taskvent check: ${summary}"
    # A second opinion that shares no code with the programs: keys and ids counted in awk.
    local awk_summary
    awk_summary="$(awk '
        FNR == NR {
            if (match($0, /"key":"[^"]*"/)) { want[substr($0, RSTART + 7, RLENGTH - 8)] = 1; tasks++ }
            next
        }
        {
            records++
            if (!match($0, /"id":[0-9]+/)) { malformed++; next }
            id = substr($0, RSTART + 5, RLENGTH - 5)
            if (id in ids) dup_ids++
            ids[id] = 1
            if (!match($0, /"key":"[^"]*"/)) { malformed++; next }
            key = substr($0, RSTART + 7, RLENGTH - 8)
            if (!(key in want)) unexpected++
            else if (key in got) dup_keys++
            got[key] = 1
            if ($0 ~ /"status":"ok"/) ok++
        }
        END {
            for (k in want) if (!(k in got)) lost++
            printf "tasks=%d records=%d lost=%d unexpected=%d duplicate_ids=%d duplicate_keys=%d ok=%d malformed=%d\n",
                tasks, records, lost, unexpected, dup_ids, dup_keys, ok, malformed
        }' "${workdir}/tasks.jsonl" "${workdir}/results.jsonl")"
    log "awk check:     ${awk_summary}"
    counts_line="$awk_summary"
    ((rc == 0)) || fail "taskvent check failed"
    [[ "$awk_summary" == *" lost=0 unexpected=0 duplicate_ids=0 duplicate_keys=0 "* ]] ||
        fail "awk check failed"
    [[ "$awk_summary" == *" ok=${tasks_total} "* ]] || fail "not every task ended ok"
}

# ---------------------------------------------------------------------------------------

main() {
    if [[ "$(id -u)" != "0" ]]; then
        skip "needs root (Docker engine, swarm, debootstrap)"
    fi
    workdir="$(mktemp -d)"
    trap teardown EXIT
    trap 'exit 1' INT TERM
    log "work directory ${workdir}; ${tasks_total} tasks of ${task_ms} ms"

    step "engine" bring_engine
    step "swarm" bring_swarm
    step "base image ${base_image}" make_base_image
    step "image build" build_image
    step "deploy and healthy (${workers_start} workers)" deploy_stack

    local t_run=$SECONDS
    step "submit ${tasks_total} tasks" submit_batch
    # Act once the run is visibly under way, so that each step hits work in flight.
    step "first 2% recorded" wait_records_at_least $((tasks_total / 50)) 120
    local at_up at_kill at_down at_vent="-"
    at_up="$(records)"
    step "scale workers to ${workers_up}" scale_workers "$workers_up"
    at_kill="$(records)"
    step "SIGKILL one worker, replaced" kill_one_worker
    at_down="$(records)"
    step "scale workers to ${workers_down}" scale_workers "$workers_down"

    local why=""
    case "$restart_ventilator" in
        1) ;;
        0) why="TASKVENT_E2E_RESTART_VENTILATOR=0" ;;
        *) why="$(ventilator_has_journal)" && why="" ;;
    esac
    if [[ -z "$why" ]]; then
        at_vent="$(records)"
        step "restart ventilator (update --force)" restart_ventilator_service
    else
        log "SKIPPED: docker service update --force ${stack}_ventilator, because ${why};"
        log "         without a journal a ventilator restart loses every queued task by design"
        timings+=("$(printf '%-34s %6s' "restart ventilator" "SKIPPED") (${why})")
    fi
    local before_wait
    before_wait="$(records)"
    step "wait for completion" wait_complete
    local run_s=$((SECONDS - t_run))

    local status
    status="$(ventilator_status)" || status="{}"
    step "collect results from the volume" collect_results
    step "check" check_results

    # Every chaos step must have hit a batch in flight, or it proved nothing.
    local n
    for n in "$at_up" "$at_kill" "$at_down"; do
        ((n < tasks_total)) || fail "the batch completed before a chaos step; raise TASKVENT_E2E_TASK_MS"
    done

    echo
    echo "== timings"
    printf '  %s\n' "${timings[@]}"
    printf '  %-34s %5ds\n' "batch (submit to complete)" "$run_s"
    printf '  %-34s %5ds\n' "total" "$((SECONDS - t_start))"
    echo "== records in the sink when each step began"
    printf '  scale up: %s  kill: %s  scale down: %s  ventilator restart: %s  final wait: %s\n' \
        "$at_up" "$at_kill" "$at_down" "$at_vent" "$before_wait"
    echo "== counts"
    echo "  check:      ${counts_line}"
    # After a restart these are the new ventilator's counts; the old one's last words
    # ("stopping ... reissued=N") are among the log lines below.
    echo "  ventilator: reissued=$(json_field "$status" reissued) returned=$(json_field "$status" returned)" \
        "workers_dead=$(json_field "$status" workers_dead) confirm_timeouts=$(json_field "$status" confirm_timeouts)" \
        "retried=$(json_field "$status" retried) dead=$(json_field "$status" dead)" \
        "done=$(json_field "$status" "done")"
    echo "  sink:       $(cat "${workdir}/sink-stats.json")"
    echo "== what the programs said about the faults"
    grep -hE 'worker declared dead|reissu|stopping|replayed' "${workdir}/ventilator.log" |
        cut -c1-160 | sed 's/^/  /' | tail -8 || true
    grep -hE 'draining|drained' "${workdir}/worker.log" | cut -c1-160 | sed 's/^/  /' |
        tail -20 || true
    echo
    failed=0
    log "PASS"
}

main "$@"
