#!/usr/bin/env bash
# Stand-ins for the two public base images the Dockerfiles name, built from Debian bookworm packages when no
# container registry can be reached (docs/containers.md):
#   python:3.11-slim-bookworm  debootstrap (minbase) + Debian's python3.11, venv and pip wheels
#   busybox:1.37.0             Debian's busybox-static, its applets linked into /bin
# Each is imported with `docker import` under the public name, so the unchanged Dockerfiles' PYTHON_IMAGE /
# RUNTIME_IMAGE defaults resolve to it. Skipped when the tag already exists (the engine's data root is the
# cache). Usage: deploy/offline/base-images.sh WORKDIR   (DOCKER_HOST selects the engine)
set -euo pipefail
work=${1:?usage: base-images.sh WORKDIR}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$work"

have() { docker image inspect "$1" >/dev/null 2>&1; }

python_image() {
    local tag=python:3.11-slim-bookworm root="$work/python-rootfs"
    have "$tag" && return
    rm -rf "$root"
    # python-is-python3: `python` on PATH like the official image; libpython3.11: the shared libpython the
    # official image has too (Triton's python-backend stub links it); ca-certificates: pip over HTTPS.
    debootstrap --variant=minbase --include=python3.11,python3.11-venv,libpython3.11,libpython3.11,python3-venv,python-is-python3,ca-certificates \
        bookworm "$root" "$mirror"
    chroot "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* "$root"/usr/share/man/*
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag"
    rm -rf "$root"
}

busybox_image() {
    local tag=busybox:1.37.0 root="$work/busybox-rootfs" deb
    have "$tag" && return
    rm -rf "$root" && mkdir -p "$root/bin" "$root/tmp" "$root/etc"
    (cd "$work" && apt-get download busybox-static >/dev/null)
    deb=$(ls "$work"/busybox-static_*.deb)
    dpkg -x "$deb" "$work/busybox-pkg"
    cp "$work/busybox-pkg/bin/busybox" "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$tag"
    rm -rf "$root" "$work/busybox-pkg" "$deb"
}

python_image
busybox_image
