# syntax=docker/dockerfile:1
# One image for every dalc process. The web is the default command; the others are documented
# entry points of the same image:
#   web:        gunicorn --config python:app.gunicorn_conf "app:create_app()"
#   worker:     dramatiq app.worker --processes 1 --threads 8
#   sweeper:    dalc sweep
#   migrations: dalc migrate

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build: install dalc and its dependencies into a virtual environment that has no pip of its own.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv --without-pip /opt/dalc
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY app ./app
# pip writes the .pyc files now: the root filesystem is read-only when dalc runs.
RUN python -m pip --python /opt/dalc/bin/python install .

# Run: the same base, the virtual environment, a non-root user; no compiler, pip cache or sources.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="dalc" \
      org.opencontainers.image.description="dalc, a distributed calculator: web, worker, sweeper and migrations"
RUN groupadd --system --gid 10001 dalc \
 && useradd --system --uid 10001 --gid dalc --home-dir /var/lib/dalc --create-home --shell /usr/sbin/nologin dalc
COPY --from=build /opt/dalc /opt/dalc
# HOME is /tmp, the one writable path under Kubernetes' read-only root: gunicorn puts its control
# socket under $HOME/.gunicorn.
ENV PATH=/opt/dalc/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DALC_HOST=0.0.0.0 \
    DALC_PORT=8080
# Without DALC_DATABASE_URL, `docker run` keeps its SQLite file here.
WORKDIR /var/lib/dalc
# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080 9191
CMD ["gunicorn", "--config", "python:app.gunicorn_conf", "app:create_app()"]
