# loom-redis image: `loom` is the entrypoint, `worker` the default command (`web` serves
# the dashboard).
# The base is a build argument so that tests can build on a local base image; any
# Debian-like image with python3 (>= 3.11) and its venv module works.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY loom_redis ./loom_redis
RUN python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --disable-pip-version-check "build>=1.0" \
    && /opt/build/bin/python -m build --wheel --outdir /dist .

FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/loom/bin:$PATH
# The wheel is bind-mounted, not copied, so that no layer keeps it. The venv gets the
# runtime dependencies only, with the web extra (`loom web`, the dashboard, runs from the
# same image) and no [dev] extra, and keeps pip, with which derived images install what
# their workflow code needs; setuptools, a build backend, leaves it.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    python3 -m venv /opt/loom \
    && wheel="$(ls /dist/loom_redis-*.whl)" \
    && /opt/loom/bin/pip install "${wheel}[web]" \
    && /opt/loom/bin/pip uninstall --yes setuptools \
    && groupadd --gid 10001 loom \
    && useradd --uid 10001 --gid loom --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin loom
# Nothing is written at run time: the image runs with a read-only root filesystem.
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["loom"]
CMD ["worker"]
