#!/usr/bin/env bash
# Install the Redis server the Redis-mode job tests start (tests/unit/test_jobs.py, tests/integration/
# test_jobs_redis.py): Debian's redis-server. Only the binary is used; each test starts its own server on a
# free port with its own folder (devstack/redis_server.py), so the system service is never needed.
# Idempotent: returns at once when redis-server is on the PATH. Needs root only when it is missing (apt-get).
set -euo pipefail

log() { printf 'install-redis: %s\n' "$*" >&2; }

if ! command -v redis-server >/dev/null; then
  [ "$(id -u)" = 0 ] || { log "error: apt-get needs root (install redis-server yourself)"; exit 1; }
  log "apt-get install redis-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi
log "$(redis-server --version | cut -d' ' -f1-3)"
