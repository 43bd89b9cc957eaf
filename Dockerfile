# One image for the whole stack: ventilator, worker, sink and the taskvent client.
# Build stage: the same CMake build as a developer's, Release, no tests.
# Runtime stage: the four programs, their shared libraries, tini, a non-root user.
# The program a container runs is chosen by TASKVENT_ROLE (or the first argument); see
# deploy/entrypoint.sh and deploy/README.md.

FROM debian:bookworm-slim AS build

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake ninja-build pkg-config \
        libzmq3-dev cppzmq-dev libmsgpack-cxx-dev libspdlog-dev libcli11-dev \
        nlohmann-json3-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The whole source tree, so that a new folder in CMakeLists.txt needs no line here;
# .dockerignore leaves out what the programs are not built from (tests, docs, stack.yml,
# scripts), so that changing those reuses the compiled layer.
COPY . .

# Two jobs by default: the build machines are small and shared. Override with
# --build-arg TASKVENT_BUILD_JOBS=N.
ARG TASKVENT_BUILD_JOBS=2
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DTASKVENT_BUILD_TESTS=OFF -DTASKVENT_BUILD_BENCH=OFF \
    && ninja -C /build -j "${TASKVENT_BUILD_JOBS}" ventilator worker sink taskvent \
    && strip /build/bin/ventilator /build/bin/worker /build/bin/sink /build/bin/taskvent

FROM debian:bookworm-slim AS runtime

# Only what `ldd` shows the programs need (libstdc++ and libc are in the base), plus tini
# so that PID 1 reaps what the exec handler's children leave behind and forwards SIGTERM.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libzmq5 libspdlog1.10 libfmt9 libssl3 tini \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid so that volume ownership is the same on every node.
RUN groupadd --gid 10001 taskvent \
    && useradd --uid 10001 --gid taskvent --no-create-home --home-dir /var/lib/taskvent \
        --shell /usr/sbin/nologin taskvent \
    && install -d -o taskvent -g taskvent -m 0750 /var/lib/taskvent

COPY --from=build /build/bin/ventilator /build/bin/worker /build/bin/sink /build/bin/taskvent \
    /usr/local/bin/
COPY deploy/entrypoint.sh /usr/local/bin/taskvent-entrypoint
COPY deploy/healthcheck.sh /usr/local/bin/taskvent-healthcheck

# The metrics port doubles as the health endpoint (GET /healthz) of the sink and workers,
# so it is on by default in the image. 5555 workers, 5556 results, 5557 control.
ENV TASKVENT_METRICS_PORT=9100
EXPOSE 5555 5556 5557 9100

USER taskvent:taskvent
# No VOLUME here: it would leave an anonymous volume behind every worker and every one-shot
# client container. stack.yml mounts named volumes where state lives.
WORKDIR /var/lib/taskvent

# Swarm counts a task as running only once it is healthy, so a short interval makes
# deploys and scale-ups converge sooner; a probe costs a few milliseconds. Three failures
# in a row mark the container unhealthy and Swarm replaces it.
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/taskvent-healthcheck"]

ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/taskvent-entrypoint"]
CMD []
