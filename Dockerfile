# syntax=docker/dockerfile:1
#
# blobpipe job image: `blobpipe run /etc/blobpipe/pipelines/<file>` in a Container Apps job.
#
#   docker build -t blobpipe:dev .
#   docker build --build-arg EXTRA_PACKAGES="postgresql-client" -t blobpipe:pg .
#
# Both stages are Debian bookworm, so the binary links against the same glibc it runs on.
# Needs BuildKit (default since Docker 23) for the cache mounts.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder

# rust:slim already has gcc and libc6-dev (zstd-sys and other -sys crates compile C);
# pkg-config + libssl-dev are only used if a dependency links OpenSSL (native-tls).
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# --locked: build exactly Cargo.lock. The registry and target dir are cache mounts, so
# the binary is copied out of target/ inside the same RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin blobpipe \
    && install -D -m 0755 target/release/blobpipe /out/blobpipe \
    && mkdir -p /src/pipelines

# ---------------------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# Source tools some pipelines shell out to, e.g. "postgresql-client" (pg_dump) or
# "mariadb-client" (mysqldump); empty by default.
ARG EXTRA_PACKAGES=""

# ca-certificates: TLS to *.blob.core.windows.net, Entra ID and webhooks.
# libssl3: only used if the binary was linked against OpenSSL; a few MB.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 ${EXTRA_PACKAGES} \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 blobpipe \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/blobpipe --create-home \
       --shell /usr/sbin/nologin blobpipe

COPY --from=builder /out/blobpipe /usr/local/bin/blobpipe
# The pipelines/ directory of the build context (an empty directory if there is none).
COPY --from=builder --chown=root:root /src/pipelines/ /etc/blobpipe/pipelines/

LABEL org.opencontainers.image.title="blobpipe" \
      org.opencontainers.image.description="Backup pipelines into Azure Blob Storage" \
      org.opencontainers.image.licenses="Apache-2.0"

# Numeric user so runtimes that require a non-root UID (runAsNonRoot) can verify it.
USER 10001:10001
WORKDIR /var/lib/blobpipe

# blobpipe handles SIGTERM itself (stops cleanly, leaves a resumable run), so it can be
# PID 1 without an init shim.
ENTRYPOINT ["blobpipe"]
CMD ["--help"]
