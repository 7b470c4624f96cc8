#!/usr/bin/env bash
# A private Docker engine for the container test when none answers (docs/containers.md).
#   engine.sh start DIR   print DOCKER_HOST; start dockerd under DIR (data root, exec root, socket, log)
#                         unless the engine at $DOCKER_HOST (or DIR's socket) already answers
#   engine.sh stop DIR    stop the dockerd that `start` launched under DIR (its pid file), wait for it to exit,
#                         and unmount what it left mounted under DIR
# The engine has no bridge and no iptables rules: every container runs on the host network, each service on
# its own loopback port. Needs root and Debian's docker.io (dockerd 20.10).
set -euo pipefail
cmd=${1:?usage: engine.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: engine.sh start|stop DIR}")
sock="$dir/run/docker.sock"
pidfile="$dir/run/dockerd.pid"

answers() { timeout 10 docker -H "$1" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
    if [[ -n "${DOCKER_HOST:-}" ]] && answers "$DOCKER_HOST"; then echo "$DOCKER_HOST"; return; fi
    if answers "unix://$sock"; then echo "unix://$sock"; return; fi
    mkdir -p "$dir/data" "$dir/run"
    # overlay2 on the data root's file system when the kernel allows it, else vfs (slow, but works anywhere).
    local driver=${FER_DOCKER_STORAGE_DRIVER:-overlay2}
    setsid dockerd --data-root "$dir/data" --exec-root "$dir/run/exec" --pidfile "$pidfile" \
        --host "unix://$sock" --bridge=none --iptables=false --ip6tables=false --storage-driver "$driver" \
        >"$dir/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 120); do
        if answers "unix://$sock"; then echo "unix://$sock"; return; fi
        sleep 0.5
    done
    echo "dockerd did not answer within 60 s; see $dir/dockerd.log" >&2
    tail -20 "$dir/dockerd.log" >&2
    stop
    return 1
}

stop() {
    [[ -f "$pidfile" ]] || return 0
    local pid
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "dockerd $pid still running after 30 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    unmount_leftovers
}

unmount_leftovers() {
    # dockerd 20.10 leaves its bind mount of the host's network namespace (exec root's netns/default, made
    # for host-network containers) mounted after it exits; nothing under DIR may stay mounted.
    local mount
    awk -v dir="$dir/" 'index($2, dir) == 1 {print $2}' /proc/mounts | sort -r | while read -r mount; do
        umount "$mount" || umount -l "$mount"
    done
}

"$cmd"
