# streamdrift worker image: `docker build -t streamdrift .`, then `docker run streamdrift worker`
# (or `simulate`, `status`, ...). Configuration comes from STREAMDRIFT_* environment variables.

# --- build: install the package and its dependencies into a virtualenv ---------------------------
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# LICENSE: both pyproject.toml files name it (client/LICENSE is a symlink to ../LICENSE).
COPY pyproject.toml README.md LICENSE ./
# The producer client (streamdrift.client), its own distribution, which streamdrift pins exactly:
# installed in the same pip command, before streamdrift, so it never comes from an index.
COPY client ./client
COPY streams ./streams
COPY detectors ./detectors
RUN /opt/venv/bin/pip install ./client .

# --- runtime: the virtualenv only, run as an unprivileged user -----------------------------------
FROM python:3.11.11-slim-bookworm
RUN groupadd --system --gid 10001 streamdrift \
 && useradd --system --uid 10001 --gid streamdrift --home-dir /var/lib/streamdrift --create-home \
        --shell /usr/sbin/nologin streamdrift
COPY --from=build /opt/venv /opt/venv
# NUMBA_CACHE_DIR: the compiled detector kernels are cached in a writable place (on Kubernetes the
# pod's /tmp emptyDir, so a restarted container loads what its predecessor compiled). The worker
# loads code from it: the container's own /tmp, never a directory shared with other users.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache
# The worker's local state (e.g. Faust's data directory) lives in the working directory.
WORKDIR /var/lib/streamdrift
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["streamdrift"]
CMD ["worker"]
