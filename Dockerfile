# syntax=docker/dockerfile:1
# Container images of trace-gen and trace-sink: one build stage, two targets.
#
#   docker build --target trace-gen  -t REGISTRY/trace-gen:TAG  .
#   docker build --target trace-sink -t REGISTRY/trace-sink:TAG .
#   (podman build / buildah bud take the same arguments)
#
# The build step is CI's release build (.ci/run; tests/deploy/test_manifests.py
# checks both say the same):
#   cargo build --release --locked --bin trace-gen --bin trace-sink
# linked fully static (glibc static-PIE: RUSTFLAGS=-C target-feature=+crt-static,
# which needs an explicit --target, here the build image's own platform).
#
# The runtime is `scratch`: the static binary and nothing else. No libc to
# match, no shell, no package manager, nothing for a scanner to flag or an
# update to patch; the images are the size of the binaries. Neither binary
# needs files from the image at run time (plaintext OTLP only, so no CA
# certificates; names resolve through the /etc/hosts and /etc/resolv.conf the
# container runtime mounts). They run as 65532:65532 (distroless' "nonroot",
# numeric so Kubernetes' runAsNonRoot can verify it) and write nothing, so the
# pods run with a read-only root filesystem.
#
# Base images are build arguments, defaulting to what users get. To pin them
# by digest, or to build where no registry is reachable (deploy/images/build.sh
# passes a local stand-in for the rust image), override them:
#   --build-arg RUST_IMAGE=...  --build-arg RUNTIME_IMAGE=...
# A RUNTIME_IMAGE other than scratch works too (e.g. a distroless "static" image
# for its /etc/passwd and CA certificates); nothing in it is used.

ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=scratch

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crates and the target directory between builds (BuildKit
# and buildah alike); the binaries are copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    triple="$(rustc -vV | sed -n 's/^host: //p')" \
    && RUSTFLAGS="-C target-feature=+crt-static" \
       cargo build --release --locked --bin trace-gen --bin trace-sink --target "$triple" \
    && mkdir -p /out \
    && cp "target/$triple/release/trace-gen" "target/$triple/release/trace-sink" /out/

# ---------------------------------------------------------------- trace-gen
FROM ${RUNTIME_IMAGE} AS trace-gen
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="trace-gen" \
      org.opencontainers.image.description="A node-tagging OTLP trace generator that counts what it sent and what failed" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/trace-gen /usr/local/bin/trace-gen
USER 65532:65532
# --stats-listen: GET /stats, /metrics, /healthz
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/trace-gen"]

# ---------------------------------------------------------------- trace-sink
FROM ${RUNTIME_IMAGE} AS trace-sink
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="trace-sink" \
      org.opencontainers.image.description="An OTLP sink that attributes every span to its generator node and forwarding agent, and answers assertions over HTTP" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/trace-sink /usr/local/bin/trace-sink
USER 65532:65532
# OTLP/gRPC, OTLP/HTTP, HTTP API (/stats, /reset, /check, /metrics, /healthz, /readyz)
EXPOSE 4317 4318 8080
ENTRYPOINT ["/usr/local/bin/trace-sink"]
