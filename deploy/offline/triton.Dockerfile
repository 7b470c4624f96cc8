# Offline stand-in for nvcr.io/nvidia/tritonserver:26.07-py3 (docs/containers.md), selected by
# deploy/compose/offline.yml. It runs the tritonserver binary bundled in the nvidia-pytriton wheel (Triton
# 2.51) with its python backend, and serves `platform: "pytorch_libtorch"` models through
# service/launcher/triton_backend/pytorch/model.py (the TorchScript runner `make run` uses): Triton finds no
# libtriton_pytorch.so under /opt/tritonserver/backends/pytorch and runs that model.py instead. The NGC image
# serves the same repository with the real libtorch backend; nothing else in the stack changes.
#   docker build -f deploy/offline/triton.Dockerfile -t fer-offline/tritonserver:2.51.0 .
ARG PYTORCH_IMAGE=fer-offline/pytorch:2.14.1
FROM ${PYTORCH_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG PIP_INDEX_URL=https://pypi.org/simple
COPY requirements-nodeps.txt /tmp/requirements-nodeps.txt
# The server tree, the stub built for this Python (3.11) and the runner, laid out as prepare_home() does.
RUN grep -E '^nvidia-pytriton==' /tmp/requirements-nodeps.txt > /tmp/pytriton.txt \
    && pip install --no-cache-dir --no-deps -r /tmp/pytriton.txt \
    && site=$(python -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
    && cp -R "${site}/pytriton/tritonserver" /opt/tritonserver \
    && rm -rf /opt/tritonserver/python_backend_stubs \
    && cp "${site}/pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub" \
        /opt/tritonserver/backends/python/ \
    && ln -s "${site}/nvidia_pytriton.libs" /opt/tritonserver/wheel-libs \
    && rm -f /tmp/requirements-nodeps.txt /tmp/pytriton.txt
COPY service/launcher/triton_backend/pytorch/model.py /opt/tritonserver/backends/pytorch/model.py
COPY deploy/offline/tritonserver /usr/local/bin/tritonserver
RUN groupadd --system --gid 1000 triton-server \
    && useradd --system --uid 1000 --gid triton-server --no-create-home --home-dir /tmp --shell /usr/sbin/nologin triton-server
ENV LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu:/opt/tritonserver/wheel-libs
USER 1000:1000
WORKDIR /tmp
CMD ["tritonserver", "--model-repository=/models"]
