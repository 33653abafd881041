# Testimony Portal server image.
#
#   docker build -t testimony-portal .
#   docker run --read-only --tmpfs /tmp:size=16m --tmpfs /dev/shm:size=16m \
#     -v portal-data:/data -v "$PWD/keys/recipients.txt:/keys/recipients.txt:ro" \
#     -e PORTAL_SECRET_KEY="$(openssl rand -hex 32)" -p 127.0.0.1:8080:8080 testimony-portal
#
# The root filesystem can be read-only: the app writes only to /data (the
# ciphertext store), gunicorn's heartbeat files go to /dev/shm, and nginx's
# configuration, pages and (always empty) temporary folders go to a private
# folder under /tmp that is removed when the server stops.
#
# `testimony-portal serve` runs nginx in front of gunicorn, as `make run`
# does (see docs/DEPLOYMENT.md): nginx takes the slow and silent
# connections, streams bodies through unbuffered, and names no software.
# The image carries the `s3` extra (boto3), so the same image serves a
# single portal (PORTAL_STORE=local, the default) and the nodes of a
# deployment on an object store (docs/DEPLOYMENT.md, section 8).
#
# This file is not built by the project's tests (they run without a Docker
# engine); the stack it starts is the one they test.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY portal ./portal
COPY templates ./templates
COPY keys ./keys
RUN pip install --no-cache-dir build && python -m build --wheel --outdir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORTAL_DATA_DIR=/data \
    PORTAL_RECIPIENTS=/keys/recipients.txt
COPY --from=build /wheels /wheels
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx libnginx-mod-http-headers-more-filter \
    && rm -rf /var/lib/apt/lists/* \
    && pip install --no-cache-dir "$(ls /wheels/testimony_portal-*.whl)[s3]" && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin portal \
    && mkdir -p /data /keys && chown portal:portal /data && chmod 700 /data
USER portal
VOLUME ["/data"]
EXPOSE 8080
# Listen on all interfaces inside the container; publish the port on the
# host's loopback only, for the Tor daemon (see docs/DEPLOYMENT.md).
CMD ["testimony-portal", "serve", "--host", "0.0.0.0", "--port", "8080"]
