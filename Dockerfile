# streamdrift worker image: `docker build -t streamdrift .`, then `docker run streamdrift worker`
# (or `simulate`, `status`, ...). Configuration comes from STREAMDRIFT_* environment variables.

# --- kernels: the detectors' compiled kernels (native/, a Rust extension) as a wheel ---------------
# One abi3 wheel for CPython >= 3.11, built with the Rust toolchain of this stage only; the runtime
# image has no compiler. (Without it the worker would run the reference kernels: slower.)
FROM rust:1.95.0-slim-bookworm AS kernels
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/maturin \
 && /opt/maturin/bin/pip install --no-cache-dir 'maturin>=1.7,<2'
COPY native /src/native
RUN /opt/maturin/bin/maturin build --release --manifest-path /src/native/Cargo.toml --out /wheels

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
COPY --from=kernels /wheels /wheels
# [registry]: inputs in the Schema Registry wire format (Avro, Protobuf, JSON Schema) work in the
# image as they do from a full install
RUN /opt/venv/bin/pip install ./client '.[registry]' /wheels/streamdrift_kernels-*.whl

# --- runtime: the virtualenv only, run as an unprivileged user -----------------------------------
FROM python:3.11.11-slim-bookworm
RUN groupadd --system --gid 10001 streamdrift \
 && useradd --system --uid 10001 --gid streamdrift --home-dir /var/lib/streamdrift --create-home \
        --shell /usr/sbin/nologin streamdrift
COPY --from=build /opt/venv /opt/venv
# STREAMDRIFT_KERNELS=compiled: the image carries the compiled kernels, so a worker that cannot load
# them fails at start instead of running the slower reference kernels unnoticed.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STREAMDRIFT_KERNELS=compiled
# The worker's local state (e.g. Faust's data directory) lives in the working directory.
WORKDIR /var/lib/streamdrift
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["streamdrift"]
CMD ["worker"]
