#!/usr/bin/env bash
# Build every image the compose stack runs, on an engine that cannot pull (docs/containers.md):
#   1. the public base images' stand-ins (base-images.sh: python:3.11-slim-bookworm, busybox:1.37.0);
#   2. the offline stand-ins for NGC's PyTorch and Triton and for prom/prometheus (this folder);
#   3. the project's own images from their unchanged Dockerfiles: fer-model-repository and fer-gateway.
# Classic builder (DOCKER_BUILDKIT=0: BuildKit's `# syntax=` line would pull a frontend image) on the host
# network (no bridge). The engine's layer cache makes a rebuild with unchanged inputs take seconds.
# Prints one line per image (build seconds, size) and writes them as JSON to WORKDIR/build-report.json.
# Usage: deploy/offline/build-images.sh WORKDIR   (DOCKER_HOST selects the engine; the wheelhouse index
# (wheelhouse.sh serve) must be up at FER_PIP_INDEX_URL, default http://127.0.0.77:3141/simple)
set -euo pipefail
work=$(realpath -m "${1:?usage: build-images.sh WORKDIR}")
cd "$(dirname "$0")/../.."
export DOCKER_BUILDKIT=0
report="$work/build-report.json"
mkdir -p "$work"
lines=()

record() {  # record TAG SECONDS
    local size
    size=$(docker image inspect --format '{{.Size}}' "$1")
    printf '%-40s %6ss %8s MB\n' "$1" "$2" "$((size / 1000000))"
    lines+=("{\"image\": \"$1\", \"build_s\": $2, \"size_bytes\": $size}")
}

build() {  # build TAG DOCKERFILE [docker build args...]
    local tag=$1 dockerfile=$2 start
    shift 2
    start=$(date +%s)
    docker build --network host -q -f "$dockerfile" -t "$tag" --build-arg "PIP_INDEX_URL=$index" "$@" . >/dev/null
    record "$tag" "$(($(date +%s) - start))"
}

index=${FER_PIP_INDEX_URL:-http://127.0.0.77:3141/simple}
start=$(date +%s)
deploy/offline/base-images.sh "$work"
record python:3.11-slim-bookworm "$(($(date +%s) - start))"
record busybox:1.37.0 0
# The gateway's dependency stage first, on an empty engine: it is the one big layer (PyPI's CUDA torch,
# the CPU index being unreachable here), and the gateway, the PyTorch stand-in, the Triton stand-in and the
# export stage are all built on it, so the engine stores it once (docs/containers.md has the disk figures).
build fer-offline/gateway-venv:0.1.0 Dockerfile --target venv --build-arg "TORCH_INDEX_URL=$index"
build fer-gateway:0.1.0 Dockerfile --build-arg "TORCH_INDEX_URL=$index"
build fer-offline/pytorch:2.14.1 deploy/offline/pytorch.Dockerfile
build fer-offline/tritonserver:2.51.0 deploy/offline/triton.Dockerfile
build fer-offline/prometheus:2.42 deploy/offline/prometheus.Dockerfile
build fer-model-repository:0.1.0 deploy/model-repository.Dockerfile --build-arg PYTORCH_IMAGE=fer-offline/pytorch:2.14.1
# Images a rebuild left untagged (the previous build of a changed Dockerfile) hold whole layers.
docker image prune --force >/dev/null
docker system df
(IFS=,; echo "[${lines[*]}]") >"$report"
