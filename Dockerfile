# syntax=docker/dockerfile:1
# wdt-gateway: a multi-stage build. Dependencies are compiled in their own cached layer
# (cargo-chef), so code changes rebuild only the workspace crates. The runtime image is
# distroless, non-root, and has no shell.

FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --package wdt-gateway
COPY . .
RUN cargo build --release --locked --package wdt-gateway \
    && strip target/release/wdt-gateway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/wdt-gateway /usr/local/bin/wdt-gateway
# 65532 is the distroless "nonroot" user.
USER 65532:65532
ENV WDT_GATEWAY_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/wdt-gateway", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/wdt-gateway"]
