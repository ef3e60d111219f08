#!/usr/bin/env bash
# A private Docker engine for the container tests (tests/test_containers.py), on a machine that has
# no image registry: only Debian's and Python's package registries.
#
#   scripts/docker-engine.sh start        install docker.io and mmdebstrap when missing, start dockerd;
#                                         prints `export DOCKER_HOST=...` for eval
#   scripts/docker-engine.sh stop         stop the dockerd that `start` started
#   scripts/docker-engine.sh base-image   build the Debian base image when missing; prints its tag
#
# dockerd leaves the host's networking alone (no bridge, no iptables, no forwarding): containers
# run with --network host, which is also how they reach this machine's PostgreSQL and RabbitMQ.
# Images live under DALC_DOCKER_DATA, which outlives a run, so the base image and the build's
# layers are made once per machine.
set -euo pipefail

DATA="${DALC_DOCKER_DATA:-/var/cache/dalc/docker}"
RUN="${DALC_DOCKER_RUN:-/tmp/dalc-docker}"
PRIVATE_HOST="unix://$RUN/docker.sock"
# The classic builder: it needs no buildx plugin, which Debian's docker.io does not ship.
export DOCKER_BUILDKIT=0

# The base image stands in for python:3.11-slim-bookworm: Debian's Python 3.11 and pip, and this
# machine's CA bundle so that pip inside a build trusts what this machine trusts. Its tag is the
# recipe's hash, so changing the recipe builds a new one.
SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
BASE_TAG="dalc-base:$(printf '%s\n' "$SUITE" "$PACKAGES" "$CA_BUNDLE" "$(sha256sum "$CA_BUNDLE" 2>/dev/null)" \
    | sha256sum | cut -c1-12)"

need() {  # install Debian packages whose commands are missing
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "docker-engine: installing ${missing[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; }
    fi
}

running() { DOCKER_HOST="$PRIVATE_HOST" docker info >/dev/null 2>&1; }

start() {
    need
    mkdir -p "$DATA" "$RUN"
    if ! running; then
        # What a dockerd killed without cleaning up may have left mounted.
        umount "$RUN/exec/netns/default" 2>/dev/null || true
        # setsid: dockerd must not die with the shell that started it, nor get its Ctrl-C.
        setsid dockerd --data-root "$DATA" --exec-root "$RUN/exec" --pidfile "$RUN/dockerd.pid" \
            -H "$PRIVATE_HOST" --iptables=false --ip6tables=false --ip-forward=false --bridge=none \
            >"$RUN/dockerd.log" 2>&1 </dev/null &
        for _ in $(seq 150); do running && break; sleep 0.2; done
        running || { tail -20 "$RUN/dockerd.log" >&2; echo "docker-engine: dockerd did not start" >&2; exit 1; }
    fi
    echo "export DOCKER_HOST=$PRIVATE_HOST"
}

stop() {
    [ -f "$RUN/dockerd.pid" ] || return 0
    local pid
    pid="$(cat "$RUN/dockerd.pid")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    # dockerd mounts a network namespace under its exec root, and binds its data root onto itself;
    # an unclean stop leaves them. Only a bind (a mount whose root is not its file system's) goes.
    umount "$RUN/exec/netns/default" 2>/dev/null || true
    if awk -v dir="$DATA" '$5 == dir && $4 != "/" { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        umount "$DATA" 2>/dev/null || true
    fi
    rm -f "$RUN/dockerd.pid"
}

base_image() {  # in the engine DOCKER_HOST names, else the private one
    export DOCKER_HOST="${DOCKER_HOST:-$PRIVATE_HOST}"
    mkdir -p "$RUN"
    if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
        echo "docker-engine: building $BASE_TAG with mmdebstrap (once per machine)" >&2
        mmdebstrap --variant=minbase --include="$PACKAGES" \
            --customize-hook="copy-in $CA_BUNDLE /etc/ssl/certs" \
            "$SUITE" - 2>"$RUN/mmdebstrap.log" \
          | docker import --change "ENV PIP_CERT=$CA_BUNDLE" - "$BASE_TAG-partial" >/dev/null
        # Tagged only once mmdebstrap has succeeded: a cut-short root filesystem is never cached.
        docker tag "$BASE_TAG-partial" "$BASE_TAG"
        docker rmi "$BASE_TAG-partial" >/dev/null
    fi
    echo "$BASE_TAG"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    base-image) base_image ;;
    *) echo "usage: $0 start|stop|base-image" >&2; exit 2 ;;
esac
