# Testimony Portal server image.
#
#   docker build -t testimony-portal .
#   docker run -d --name portal --restart unless-stopped \
#     --init --stop-timeout 75 \
#     --read-only \
#     --tmpfs /tmp:size=16m,mode=1777 \
#     --tmpfs /dev/shm:size=16m \
#     --cap-drop ALL --security-opt no-new-privileges \
#     --ulimit core=0 \
#     --memory 2g --memory-swap 2g \
#     --pids-limit 4096 --ulimit nofile=65536:65536 \
#     --log-driver local --log-opt max-size=5m --log-opt max-file=2 \
#     -v portal-data:/data \
#     -v /etc/testimony-portal/recipients.txt:/keys/recipients.txt:ro \
#     -e PORTAL_SECRET_KEY="$(cat /etc/testimony-portal/secret-key)" \
#     -e PORTAL_ALLOWED_HOSTS=youronionaddress.onion \
#     -e PORTAL_LOG_LEVEL=warning \
#     -e PORTAL_MIN_FREE_MB=2048 \
#     -e PORTAL_ONION_PORT=8081 \
#     -p 127.0.0.1:8080:8080 -p 127.0.0.1:8081:8081 \
#     testimony-portal
#
# This is the command of docs/DEPLOYMENT.md, section 1, which says what each
# line is for (tests/test_container.py runs that one with podman;
# tests/test_dockerfile.py checks that this copy is the same). In short: --init forwards signals and reaps;
# --stop-timeout 75 lets uploads in flight finish (60 s) before a kill; the
# root file system is read-only and the app writes only to /data
# (ciphertext), nginx's configuration, pages and (always empty) temporary
# folders and the app's socket go to a private folder under the /tmp tmpfs,
# gunicorn's heartbeat files to /dev/shm; `serve` and `check` refuse, naming
# the mount, if either is missing.
#
# `testimony-portal serve` runs nginx in front of gunicorn, as `make run`
# does: gunicorn first, nginx once the app answers; if either dies the
# container exits non-zero, for --restart to start it again.
#
# Reproducible inputs: the base image is pinned by digest (BASE below;
# `make pin-base` refreshes it) and every Python package by hash
# (requirements.lock, requirements-build.lock; `make lock` refreshes them;
# pip installs them with --require-hashes). The tests build this file
# unchanged on a stand-in base made from Debian packages
# (--build-arg BASE=...), as no container registry is reachable there.
#
# The lock carries the `s3` extra (boto3), so the same image serves a single
# portal (PORTAL_STORE=local, the default) and the nodes of a deployment on
# an object store (docs/DEPLOYMENT.md, section 8).

ARG BASE=docker.io/library/python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${BASE} AS build
WORKDIR /src
COPY requirements-build.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary :all: -r requirements-build.lock
COPY pyproject.toml README.md ./
COPY portal ./portal
COPY templates ./templates
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORTAL_DATA_DIR=/data \
    PORTAL_RECIPIENTS=/keys/recipients.txt
COPY requirements.lock /tmp/requirements.lock
COPY --from=build /wheels /tmp/wheels
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx libnginx-mod-http-headers-more-filter \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir --require-hashes --only-binary :all: -r /tmp/requirements.lock \
    && pip install --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels /tmp/requirements.lock \
    && groupadd --system --gid 10001 portal \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin portal \
    && mkdir -p /data /keys && chown 10001:10001 /data && chmod 700 /data
USER 10001:10001
VOLUME ["/data"]
# 8080: plain HTTP (health checks); 8081: the onion port, where nginx reads
# tor's PROXY protocol header (PORTAL_ONION_PORT=8081, docs/DEPLOYMENT.md).
EXPOSE 8080 8081
# Passes once the portal serves its front page, under the first name of
# PORTAL_ALLOWED_HOSTS if it is set (the portal answers 400 to any other).
# (podman keeps a HEALTHCHECK only in the docker image format: --format docker.)
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["testimony-portal", "health", "--port", "8080"]
# Listen on all interfaces inside the container; publish the ports on the
# host's loopback only, for the Tor daemon (see docs/DEPLOYMENT.md).
CMD ["testimony-portal", "serve", "--host", "0.0.0.0", "--port", "8080"]
