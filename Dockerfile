# tagtrail service image: `docker build -t tagtrail .` then `docker run tagtrail <command>`
# (worker, sink, api, store migrate, ...; see deploy/compose). The image has no Java: point it at
# a Kafka cluster with TAGTRAIL_KAFKA (the local-broker mode of `tagtrail up` is for development).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml constraints.txt README.md ./
COPY core ./core
COPY tagtrail ./tagtrail
COPY ingest ./ingest
COPY stream ./stream
COPY store ./store
COPY recovery ./recovery
# Wheels of the project and its pinned dependencies, installed into a clean venv below.
RUN python -m venv /opt/tagtrail \
 && /opt/tagtrail/bin/pip install -c constraints.txt .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /var/lib/tagtrail --create-home tagtrail
COPY --from=build /opt/tagtrail /opt/tagtrail
ENV PATH=/opt/tagtrail/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/var/lib/tagtrail/numba-cache \
    TAGTRAIL_DATA_DIR=/var/lib/tagtrail \
    TAGTRAIL_API_HOST=0.0.0.0
USER tagtrail
WORKDIR /var/lib/tagtrail
# Compile the numba kernels once at build time so the first batch is not slow.
RUN python -c "import numpy as np; from stream.geoindex import latlng_to_cell; latlng_to_cell(np.array([25.0]), np.array([102.7]), 9)"
VOLUME ["/var/lib/tagtrail"]
# API (TAGTRAIL_API_PORT) and the metrics port of workers and sinks (TAGTRAIL_METRICS_PORT).
EXPOSE 8080 9100
ENTRYPOINT ["tagtrail"]
CMD ["--help"]
