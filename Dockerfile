# syntax=docker/dockerfile:1
# browserd in a container: browserd itself is PID 1 (no init shim: it reaps every orphan its
# sessions leave and handles SIGTERM itself), with Debian's chromium beside it. The socket
# is /run/browserd/browserd.sock, group browserd (gid 10001), mode 0660: share that
# directory (a volume, or an emptyDir in a pod) with the containers whose browserctl should
# reach it, and run them with gid 10001 as their primary or a supplementary group.
#
#   podman build -t browserd .                      compile in a Rust stage, then the runtime
#   cargo build --release --locked -p browserd -p browserctl
#   podman build --target prebuilt -t browserd .    the runtime around target/release/'s binaries
#
# Base images are build args, so local stand-ins serve where no registry is reachable, e.g.
# --build-arg DEBIAN_IMAGE=localhost/debian:bookworm-slim (scripts/container-base makes it).
# Prebuilt binaries must link against a glibc no newer than the runtime's (Debian 12: 2.36).
# The README's Container and Sidecar sections show the commands the tests run.

ARG DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
ARG RUST_IMAGE=docker.io/library/rust:1-slim-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p browserd -p browserctl \
 && install -D -m 0755 -t /out target/release/browserd target/release/browserctl

# Everything but browserd: Chromium, the socket's group, the dirs, the settings.
FROM ${DEBIAN_IMAGE} AS runtime-base
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      chromium fonts-liberation ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 browserd \
 && install -d -m 0755 /run/browserd \
 && install -d -m 0700 /var/lib/browserd
COPY deploy/container/browserd.toml /etc/browserd.toml
ENV BROWSERD_CONFIG=/etc/browserd.toml \
    BROWSERD_SOCKET=/run/browserd/browserd.sock \
    BROWSERD_STATE_DIR=/var/lib/browserd
# Runs as the container's root: Chromium's own sandbox needs user namespaces, which the
# default seccomp profiles of Docker, Podman and containerd deny, so browserd starts Chromium
# with --no-sandbox (it does so for root only) and the container is the boundary.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/browserd"]

# The runtime around binaries built outside (CI builds them anyway): the build context
# holds target/release/browserd and target/release/browserctl (see .dockerignore).
FROM runtime-base AS prebuilt
COPY target/release/browserd target/release/browserctl /usr/local/bin/

# The default: the runtime around binaries compiled in the build stage.
FROM runtime-base AS runtime
COPY --from=build /out/browserd /out/browserctl /usr/local/bin/
