# Multi-stage build of the shelf binary (with the Fluvio client) and the default model
# baked into the image.
FROM rust:1.88-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev python3-pip \
    && rm -rf /var/lib/apt/lists/*
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
