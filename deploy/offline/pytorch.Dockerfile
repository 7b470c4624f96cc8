# Offline stand-in for nvcr.io/nvidia/pytorch:26.07-py3, the export image's base (deploy/model-repository.Dockerfile),
# for machines that cannot pull from NGC: the gateway Dockerfile's `venv` stage (fer-offline/gateway-venv, built
# by build-images.sh with `--target venv`), whose /opt/venv on PATH holds the torch, torchvision and numpy that
# requirements.txt pins, so `python` and `pip` resolve to it as in NGC's image. Why not a venv of its own: the
# offline torch is PyPI's CUDA build (5.5 GB installed), and a second copy of it in the engine was what ran
# CI's disk full; built on the venv stage, the gateway, this image, the Triton stand-in and the export stage
# share one copy of that layer. It also holds the gateway's other runtime packages, which NGC's image does not
# have: an export step that needed one of them would pass here and fail on NGC.
# It exports TorchScript with torch 2.14.1, which the python-backend Triton stand-in (triton.Dockerfile, same
# torch) loads; NGC's Triton 26.07 libtorch is NOT what it is paired with here.
#   docker build --target venv -t fer-offline/gateway-venv:0.1.0 .
#   docker build -f deploy/offline/pytorch.Dockerfile -t fer-offline/pytorch:2.14.1 .
ARG VENV_IMAGE=fer-offline/gateway-venv:0.1.0
FROM ${VENV_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY requirements.txt /tmp/requirements.txt
# The pins this image stands for must be what the venv holds (fails the build otherwise). No heredoc: the
# classic builder (build-images.sh) does not read them.
RUN grep -E '^(torch|torchvision|numpy)==' /tmp/requirements.txt > /tmp/pins.txt \
    && test "$(wc -l < /tmp/pins.txt)" -eq 3 \
    && python -c 'import sys; from importlib.metadata import version; \
pins = [line.strip().split("==") for line in open(sys.argv[1])]; \
wrong = [(n, version(n), v) for n, v in pins if version(n).split("+")[0] != v]; \
print("pins held:", pins); sys.exit(f"installed != pinned: {wrong}" if wrong else 0)' /tmp/pins.txt \
    && rm /tmp/requirements.txt /tmp/pins.txt
