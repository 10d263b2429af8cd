# syntax=docker/dockerfile:1
# Container images of trace-gen and trace-sink: one build stage, two targets.
#
#   docker build --target trace-gen  -t REGISTRY/trace-gen:TAG  .
#   docker build --target trace-sink -t REGISTRY/trace-sink:TAG .
#
# The build step runs exactly the command CI (.ci/run) uses for the release
# binaries, so a green CI proves this step compiles (no container engine runs
# in CI; tests/deploy/test_manifests.py checks both say the same):
#   cargo build --release --locked --bin trace-gen --bin trace-sink
#
# The runtime is distroless (glibc from the same Debian release as the build
# image, no shell, no package manager), running as the unprivileged user
# "nonroot" (65532), so the pods can use a read-only root filesystem.

ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the crates and the target directory between
# builds; the binaries are copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin trace-gen --bin trace-sink \
    && mkdir -p /out \
    && cp target/release/trace-gen target/release/trace-sink /out/

# ---------------------------------------------------------------- trace-gen
FROM ${RUNTIME_IMAGE} AS trace-gen
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="trace-gen" \
      org.opencontainers.image.description="A node-tagging OTLP trace generator that counts what it sent and what failed" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/trace-gen /usr/local/bin/trace-gen
# distroless "nonroot", numeric so that Kubernetes' runAsNonRoot can verify it
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
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/trace-sink /usr/local/bin/trace-sink
USER 65532:65532
# OTLP/gRPC, OTLP/HTTP, HTTP API (/stats, /reset, /check, /metrics, /healthz, /readyz)
EXPOSE 4317 4318 8080
ENTRYPOINT ["/usr/local/bin/trace-sink"]
