# syntax=docker/dockerfile:1
# The FER gateway (FastAPI + MTCNN face detection/alignment), talking to Triton over gRPC (FER_TRITON_URL).
#
#   docker build -t fer-gateway:0.1.0 .
#   docker run -p 8080:8080 -e FER_TRITON_URL=triton:8001 fer-gateway:0.1.0
#
# torch variant, chosen deliberately: the gateway runs torch only for MTCNN detection and landmark alignment,
# on CPU (FER_DEVICE=cpu); the model itself runs in Triton. PyPI's Linux torch wheel is the CUDA build and
# drags ~4 GB of nvidia-* wheels, so torch and torchvision come from the PyTorch CPU index by default
# (`+cpu` builds of the exact versions pinned in requirements.txt; they must come from the same index:
# PyPI's torchvision beside a CPU torch fails at import). For a GPU gateway (FER_DEVICE=cuda:0), build with
#   --build-arg TORCH_INDEX_URL=https://pypi.org/simple
# Built and run in CI by `make test-containers` (docs/containers.md), offline: PIP_INDEX_URL and
# TORCH_INDEX_URL point at a local index of the same pinned wheels (deploy/offline/wheelhouse.sh), and the
# CPU index being unreachable there, torch is PyPI's (CUDA) build. tests/deploy also lints this file.
#
# Two stages, one copy of the dependencies: `venv` installs the pinned wheels into /opt/venv (no pip cache;
# no compilers: every pinned dependency installs from a wheel), and the final stage is built ON it, adding the
# code, the service user and the runtime settings. Copying the venv into a fresh base instead (COPY --from)
# stores it twice, once per stage, and with the CUDA torch of an offline build CI ran out of disk on it
# (docs/containers.md#disk). The offline PyTorch stand-in starts from the `venv` stage too
# (deploy/offline/pytorch.Dockerfile). Runs as uid 10001. No dev/test packages: requirements.txt is cut at its
# "# --- development / test ---" marker.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS venv
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
COPY requirements.txt requirements-nodeps.txt ./
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Where every other wheel comes from (pip's default). Neither index reaches the image's environment or files,
# but the image's history (`docker history`) records the build arguments of the steps that use them, the
# final stage being built on this one: put no credentials in these URLs (an authenticating proxy, or a
# netrc given as a BuildKit secret, keeps them out).
ARG PIP_INDEX_URL=https://pypi.org/simple
# Three layers, because the engine holds a layer's files twice while it commits it: the disk a build needs
# peaks with the largest layer, and PyPI's CUDA torch with its nvidia-* libraries (offline builds) is most
# of the venv (docs/containers.md#disk).
# 1. torch + torchvision, the versions pinned in requirements.txt, from TORCH_INDEX_URL (--no-deps: their
#    own dependencies come in step 2).
# 2. torch's own dependencies (for PyPI's CUDA build, the nvidia-* libraries and triton), from PIP_INDEX_URL
#    at the versions the runtime requirements pin (-c; a constraint file takes no extras, so they are cut).
# 3. The runtime part of requirements.txt; pip keeps the torch installed in step 1 (`torch==2.14.1` is
#    satisfied by `2.14.1+cpu`); then facenet-pytorch --no-deps (see requirements-nodeps.txt).
#    nvidia-pytriton is NOT installed: in a container the gateway always talks to a real Triton; its
#    embedded local Triton is for development.
RUN grep -E '^(torch|torchvision)==' requirements.txt > torch-pins.txt \
    && test "$(wc -l < torch-pins.txt)" -eq 2 \
    && pip install --no-cache-dir --no-deps --index-url "${TORCH_INDEX_URL}" -r torch-pins.txt \
    && sed '/^# --- development \/ test ---/,$d' requirements.txt > requirements-runtime.txt \
    && sed -E 's/\[[^]]*\]//' requirements-runtime.txt > runtime-constraints.txt
RUN pip install --no-cache-dir -r torch-pins.txt -c runtime-constraints.txt
RUN pip install --no-cache-dir -r requirements-runtime.txt \
    && grep -E '^facenet-pytorch==' requirements-nodeps.txt > nodeps-runtime.txt \
    && pip install --no-cache-dir --no-deps -r nodeps-runtime.txt \
    && rm -f requirements.txt requirements-nodeps.txt torch-pins.txt requirements-runtime.txt \
        runtime-constraints.txt nodeps-runtime.txt

FROM venv
# /var/lib/fer/jobs: long-video jobs' state and spool (FER_JOBS_DIR), owned by the service user so a volume
# mounted there starts writable; the root file system stays read-only.
RUN groupadd --system --gid 10001 fer \
    && useradd --system --uid 10001 --gid fer --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fer \
    && mkdir -p /var/lib/fer/jobs && chown -R 10001:10001 /var/lib/fer
COPY service/ /app/service/
COPY fermodels/__init__.py fermodels/contract.py /app/fermodels/
# The expression prompts' embeddings and the text encoder's tokenizer (fermodels/contract.py names them).
COPY fermodels/assets/text_embeddings.json fermodels/assets/minilm_tokenizer.json.gz /app/fermodels/assets/
COPY deploy/docker/healthcheck.py /app/healthcheck.py
# Fail the build, not the first request, if an import is missing; print which torch build went in.
WORKDIR /app
RUN python -c "import torch, facenet_pytorch, service.http.app; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
# FER_HOST: listen on the container's interface (the Settings default, 127.0.0.1, is for development).
# MALLOC_ARENA_MAX=2: glibc gives each busy thread (request workers, the detection thread, OpenVINO's) its
# own heap, and photos of many sizes fragment them all. Measured on 600 photos of distinct sizes (240-1280 px,
# concurrency 4): the gateway levelled off at 1769 MiB with glibc's default and 1502 MiB with 2 arenas, from
# ~1.28 GiB at startup, against the 2 GiB limit of the Kubernetes overlays; throughput moved by ~3 % (within
# run-to-run noise).
# PATH (/opt/venv/bin first) and PYTHONDONTWRITEBYTECODE come from the venv stage.
ENV PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    FER_HOST=0.0.0.0 \
    FER_PORT=8080 \
    FER_JOBS_DIR=/var/lib/fer/jobs
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 CMD ["python", "/app/healthcheck.py"]
ENTRYPOINT ["python", "-m", "service"]
