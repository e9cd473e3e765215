# syntax=docker/dockerfile:1
# One image for every Maestro service. Each Kubernetes Deployment runs its own
# `python -m <service>` (gateway, scheduler, persona_service, sandbox_service) and the
# migration Job runs `maestro db upgrade`; see k8s/ and the README's "Deploy on
# Kubernetes".
#
#   docker build -t maestro:0.1.0 .
#
# Two stages: `build` makes a wheel of Maestro and installs it with its pinned
# dependencies (all of them ship wheels, so no compiler is needed even there) into a
# virtual environment; the final stage is the slim base plus that environment, run as an
# unprivileged user. Nothing is compiled or downloaded when a container starts.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY maestro ./maestro
COPY scheduler ./scheduler
COPY persona_service ./persona_service
COPY gateway ./gateway
COPY sandbox_service ./sandbox_service
RUN python -m venv /opt/maestro \
    && /opt/maestro/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/maestro/bin/pip install --no-cache-dir --only-binary=:all: /wheels/maestro-*.whl \
    && /opt/maestro/bin/pip uninstall --yes pip

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="maestro" \
      org.opencontainers.image.description="Maestro: gateway, scheduler, persona workers and sandbox (python -m <service>)" \
      org.opencontainers.image.licenses="Proprietary"
# A fixed numeric id, so Kubernetes can check runAsNonRoot against the image.
RUN groupadd --system --gid 10001 maestro \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin maestro
COPY --from=build /opt/maestro /opt/maestro
# The root file system is read-only in the pods: no bytecode is written at run time
# (pip compiled it at install), and output is not buffered so logs reach the runtime.
ENV PATH=/opt/maestro/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
CMD ["maestro", "--help"]
