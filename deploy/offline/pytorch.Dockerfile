# Offline stand-in for nvcr.io/nvidia/pytorch:26.07-py3, the export image's base (deploy/model-repository.Dockerfile),
# for machines that cannot pull from NGC: the python stand-in (base-images.sh) + a venv on PATH with the
# torch, torchvision and numpy that requirements.txt pins (so `python` and `pip` resolve to it, as in NGC's
# image). It exports TorchScript with torch 2.14.1, which the python-backend Triton stand-in
# (triton.Dockerfile, same torch) loads; NGC's Triton 26.07 libtorch is NOT what it is paired with here.
#   docker build -f deploy/offline/pytorch.Dockerfile -t fer-offline/pytorch:2.14.1 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
    && grep -E '^(torch|torchvision|numpy)==' /tmp/requirements.txt > /tmp/pins.txt \
    && test "$(wc -l < /tmp/pins.txt)" -eq 3 \
    && pip install --no-cache-dir -r /tmp/pins.txt \
    && rm /tmp/requirements.txt /tmp/pins.txt \
    && python -c "import torch; print('torch', torch.__version__)"
