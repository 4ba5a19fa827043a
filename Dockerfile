# syntax=docker/dockerfile:1
# janitor: build the release binary, then ship it on a slim Debian.
#   docker build -t janitor .
#   docker run --rm -e DATABASE_URL=... janitor migrate

FROM rust:1-bookworm AS builder
WORKDIR /build
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin janitor \
    && cp target/release/janitor /usr/local/bin/janitor

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --home-dir /home/janitor --shell /usr/sbin/nologin janitor \
    && mkdir -p /storage \
    && chown janitor:janitor /storage
COPY --from=builder /usr/local/bin/janitor /usr/local/bin/janitor
ENV JANITOR_STORAGE_ROOT=/storage
USER janitor
WORKDIR /home/janitor
ENTRYPOINT ["janitor"]
CMD ["worker"]
