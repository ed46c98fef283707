# The prediction service with the exported champion: `make docker-build` (or `make test-image`,
# which builds it and checks it end to end). Needs build/model from `make export-model`.
#
# Every stage starts from BASE_IMAGE and no other image is pulled, so a stand-in for the
# official image (same Debian, same interpreter path) can replace it where no registry is
# reachable. Both stages must use the same base: the venv's python is a symlink to it.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------
# Builder: resolve nothing, install exactly what uv.lock pins for the `serve` extra.
FROM ${BASE_IMAGE} AS builder

# uv at the version the Makefile bootstraps (same lock format, same resolution).
RUN python3 -m pip install --no-cache-dir --disable-pip-version-check uv==0.13.9

# UV_PROJECT_ENVIRONMENT: the venv goes where the runtime stage copies it from.
# UV_PYTHON / UV_PYTHON_DOWNLOADS: use the base image's interpreter, never a downloaded one
#   (the runtime stage has only the base's).
# UV_SYSTEM_CERTS: trust the system CA store, where a TLS-inspecting proxy's CA would be.
# UV_LINK_MODE / UV_NO_CACHE: copy files into the venv and keep no wheel cache in the layer.
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_SYSTEM_CERTS=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1

WORKDIR /src

# Serving dependencies only: the core plus the `serve` extra, no dev group (so no DVC,
# MLflow, Evidently, pytest...). --compile-bytecode: the image's files are read-only to
# the service user, so without .pyc files every start would recompile sklearn & co.
# XGBoost comes as xgboost-cpu (pyproject.toml): no CUDA kernels, no NCCL.
# This layer depends on the lock file alone, so code and model changes reuse it. Then the
# test suites that numpy, pandas, scipy and scikit-learn ship go (about 100 MB); the
# `testing` helper packages, which some libraries import, stay.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --extra serve --no-editable --compile-bytecode \
        --no-install-project \
    && find /opt/venv/lib -type d -name tests -path '*/site-packages/*' -prune -exec rm -rf {} +

# The project itself, installed as a wheel (--no-editable) so the venv needs no /src.
# hatchling reads README.md for the package metadata.
COPY README.md ./
COPY src ./src
COPY serving ./serving
RUN uv sync --frozen --no-dev --extra serve --no-editable --compile-bytecode

# ---------------------------------------------------------------------------------------
# SBOM (`make sbom`, which builds --target sbom): the CycloneDX bill of materials of
# /opt/venv, which the runtime stage copies as it is, for a scanner elsewhere
# (docs/security.md). No stage below builds on this one, so a plain build skips it and the
# image holds neither the tool nor the file: a scanner given the image reads the venv's own
# metadata, and a copy inside would add nothing it cannot read there.
FROM builder AS sbom

# cyclonedx-bom at the version uv.lock's dev group pins, with its dependencies at theirs
# (the group's export is the constraint), in a venv of its own: /opt/venv stays exactly
# what the image ships, which is what the SBOM lists. --output-reproducible: no timestamp
# or random serial number, so the same venv gives the same file.
RUN uv export --frozen --only-group dev --no-emit-project --no-hashes --quiet -o /tmp/dev.txt \
    && uv venv --quiet /opt/sbom-tool \
    && uv pip install --quiet --python /opt/sbom-tool/bin/python --constraint /tmp/dev.txt \
        cyclonedx-bom \
    && /opt/sbom-tool/bin/cyclonedx-py environment --output-reproducible \
        --pyproject pyproject.toml -o /sbom.cdx.json /opt/venv/bin/python

# ---------------------------------------------------------------------------------------
# Runtime: the base image, the venv and the model; no uv, no pip cache, no sources.
FROM ${BASE_IMAGE}

# libgomp1: LightGBM's library links the system OpenMP runtime (scikit-learn and XGBoost
# bundle their own) and the slim image has none: without it a LightGBM champion fails to
# load. Not pinned: Debian drops superseded versions from its mirror on each point
# release, so a pin would break the build; the base image tag fixes the release. `clean`
# and the lists: apt's caches are 80 MB, the library 0.3 MB.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid: volumes and Kubernetes' runAsUser can rely on it.
# -l (--no-log-init): a large uid would otherwise grow /var/log/lastlog to gigabytes.
ARG APP_UID=10001
RUN groupadd --gid "${APP_UID}" app \
    && useradd -l --uid "${APP_UID}" --gid app --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin app \
    && mkdir -p /app/logs \
    && chown app:app /app/logs

COPY --from=builder /opt/venv /opt/venv
# Last: a new champion changes only this layer. Root-owned, so the service cannot alter it.
COPY build/model /app/model

# The settings the service reads (serving/settings.py); any can be overridden with -e.
# SERVING_HOST 0.0.0.0: reachable from outside the container.
# SERVING_PREDICTION_LOG: in /app/logs, the one folder the app user may write, declared a
#   volume so the log (read by the drift monitor) outlives the container.
# PYTHONUNBUFFERED: log lines reach `docker logs` at once.
# OMP_NUM_THREADS=1: one OpenMP thread per worker (python -m serving sets it too; see
#   docs/serving.md: a thread team woken per request cost more than the scoring).
ENV PATH=/opt/venv/bin:${PATH} \
    SERVING_MODEL_URI=/app/model \
    SERVING_HOST=0.0.0.0 \
    SERVING_PORT=8000 \
    SERVING_PREDICTION_LOG=/app/logs/predictions.db \
    PYTHONUNBUFFERED=1 \
    OMP_NUM_THREADS=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
VOLUME ["/app/logs"]
USER ${APP_UID}:${APP_UID}
EXPOSE 8000

# The slim image has no curl: ask /health with the standard library, on whatever port
# SERVING_PORT says. /health (not /ready): a container without a model stays up and
# explains itself on /ready, so restarting it would not help.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SERVING_PORT', '8000'), timeout=4)"]

# Exec form: python is PID 1 and receives SIGTERM itself; uvicorn then finishes in-flight
# requests, runs the shutdown (which flushes the prediction log) and exits with 0.
CMD ["python", "-m", "serving"]
