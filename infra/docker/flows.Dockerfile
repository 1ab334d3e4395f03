# The flow runtime: what an ECS task (and the ECS worker) runs. Built by CI from the repository root:
#   docker build -f infra/docker/flows.Dockerfile -t <ecr>/driftloop/flows:<git sha> .
# Python and every dependency are pinned with hashes (requirements.lock, made by `make lock`); the code goes in
# last so a code change rebuilds one thin layer. No secrets: credentials come from the task role,
# Prefect blocks and ECS secrets at run time.
#
# BASE_IMAGE: the public python image (pin it by digest in CI/CD: --build-arg BASE_IMAGE=python@sha256:…).
# On a machine with no registry, `make images` makes a stand-in under this name from Debian packages
# (infra/containers/podman.sh).
ARG BASE_IMAGE=python:3.11.7-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DRIFTLOOP_PROJECT_DIR=/opt/driftloop \
    BENTOML_DO_NOT_TRACK=true \
    WHYLOGS_NO_ANALYTICS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PATH=/opt/venv/bin:$PATH

# LightGBM needs the OpenMP runtime; nothing else from the OS.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# The code stays root-owned and read-only to the runtime user; it writes only to its home (Prefect,
# matplotlib caches) and to /tmp (W&B files, BentoML store, per the cloud job variables).
RUN groupadd --system --gid 10001 driftloop \
    && useradd --system --uid 10001 --gid driftloop --create-home --home-dir /home/driftloop \
       --shell /usr/sbin/nologin driftloop
ENV HOME=/home/driftloop \
    PREFECT_HOME=/home/driftloop/.prefect

WORKDIR /opt/driftloop

COPY requirements.lock ./
RUN python3 -m venv /opt/venv \
    && pip install --no-deps --require-hashes --requirement requirements.lock \
    && pip check

# The code, in one layer (what goes in: .dockerignore). dask-cloudprovider starts Fargate containers
# with `dask-scheduler` / `dask-worker`; distributed ships only `dask scheduler` / `dask worker` now:
# two shims keep its commands working.
COPY . ./
RUN cp infra/docker/bin/dask-scheduler infra/docker/bin/dask-worker /opt/venv/bin/ \
    && pip install --no-deps . \
    && pip check \
    && mkdir -p /opt/driftloop/.driftloop \
    && chown -R driftloop:driftloop /opt/driftloop/.driftloop

USER 10001:10001

# The ECS worker's task definition runs `prefect worker start ...`; flow runs get their command from
# the worker. A bare `docker run` shows the installed versions.
CMD ["python", "-c", "import prefect, lightgbm, polars; print('driftloop flow image: prefect', prefect.__version__, 'lightgbm', lightgbm.__version__, 'polars', polars.__version__)"]
