# The flow runtime: what an ECS task (and the ECS worker) runs. Built by CI from the repository root:
#   docker build -f infra/docker/flows.Dockerfile -t <ecr>/driftloop/flows:<git sha> .
# Python and every dependency are pinned (requirements.lock, made by `make lock`); the code goes in
# last so a code change rebuilds one thin layer. No secrets: credentials come from the task role,
# Prefect blocks and ECS secrets at run time.
FROM python:3.11.7-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DRIFTLOOP_PROJECT_DIR=/opt/driftloop \
    BENTOML_DO_NOT_TRACK=true \
    WHYLOGS_NO_ANALYTICS=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

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
RUN pip install --no-deps --requirement requirements.lock

COPY pyproject.toml README.md prefect.yaml ./
COPY flows ./flows
COPY tasks ./tasks
COPY deployments ./deployments
COPY bentos ./bentos
COPY configs ./configs
RUN pip install --no-deps . \
    && mkdir -p /opt/driftloop/.driftloop \
    && chown -R driftloop:driftloop /opt/driftloop/.driftloop

USER 10001:10001

# The ECS worker's task definition runs `prefect worker start ...`; flow runs get their command from
# the worker. A bare `docker run` shows the installed versions.
CMD ["python", "-c", "import prefect, lightgbm, polars; print('driftloop flow image: prefect', prefect.__version__, 'lightgbm', lightgbm.__version__, 'polars', polars.__version__)"]
