# Offline stand-in for prom/prometheus (docs/containers.md): Debian bookworm's `prometheus` package in the
# python stand-in's Debian root (base-images.sh), for machines that cannot pull from Docker Hub.
#   docker build -f deploy/offline/prometheus.Dockerfile -t fer-offline/prometheus:2.42 .
ARG DEBIAN_IMAGE=python:3.11-slim-bookworm
FROM ${DEBIAN_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
