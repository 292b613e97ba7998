# syntax=docker/dockerfile:1
# browserd in a container: browserd itself is PID 1 (no init shim: it reaps every orphan its
# sessions leave and handles SIGTERM itself), with Debian's chromium beside it. The socket
# lives in /run/browserd; share that directory (a volume, or an emptyDir in a pod) with the
# containers whose browserctl should reach it.
#
#   docker build -t browserd .
#   docker run -d --name browserd --shm-size=1g -v browserd-run:/run/browserd browserd
#   docker exec browserd browserctl launch

ARG DEBIAN_RELEASE=bookworm

FROM rust:1-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p browserd -p browserctl \
 && install -D -m 0755 -t /out target/release/browserd target/release/browserctl

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      chromium fonts-liberation ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# The group whose members may use the socket: give client containers this gid as their
# primary group (Kubernetes: runAsGroup) or pass --allow-uid for their uid.
RUN groupadd --system --gid 10001 browserd \
 && install -d -m 0755 -g browserd /run/browserd \
 && install -d -m 0700 /var/lib/browserd
COPY --from=build /out/browserd /out/browserctl /usr/local/bin/
ENV BROWSERD_SOCKET=/run/browserd/browserd.sock \
    BROWSERD_STATE_DIR=/var/lib/browserd
# Runs as the container's root: Chromium's own sandbox needs user namespaces, which the
# default seccomp profiles of Docker and containerd deny, so browserd starts Chromium with
# --no-sandbox (it does so for root only) and the container is the boundary. See the README
# for running unprivileged with Chromium's sandbox instead.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/browserd"]
CMD ["--allow-gid", "10001", "--log-format", "json"]
