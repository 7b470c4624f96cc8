#!/usr/bin/env bash
# Install the headless browser the web-page tests drive (tests/integration/test_web_page.py): Debian's
# chromium and its matching chromium-driver, plus node for the page's own JS unit tests.
#
# Why Debian's packages: the driver and the browser come from one source package, so their versions always
# match, and nothing is downloaded at test time (Selenium Manager is never used: the test passes the driver
# path explicitly and sets SE_OFFLINE). Idempotent: when both binaries answer, it returns in well under a
# second. Needs root only when something is missing (apt-get).
set -euo pipefail

log() { printf 'install-browser: %s\n' "$*" >&2; }

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v node >/dev/null || missing+=(nodejs)

if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { log "error: apt-get needs root (install ${missing[*]} yourself)"; exit 1; }
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Both come from one source package; a mismatch means a half-upgraded system.
browser="$(chromium --version | grep -oE '[0-9]+\.[0-9.]+' | head -1)"
driver="$(chromedriver --version | grep -oE '[0-9]+\.[0-9.]+' | head -1)"
[ "$browser" = "$driver" ] || { log "error: chromium $browser but chromedriver $driver"; exit 1; }
log "chromium $browser, chromedriver $driver, node $(node --version)"
