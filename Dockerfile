# Build stage: compile the release binary.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY static ./static
# The workspace's other member (the load generator) must be present for cargo to build.
COPY bench ./bench
RUN cargo build --release --locked --bin boardcast

# Runtime stage: a slim image with only the binary, run as a non-root user.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home boardcast \
    && mkdir /data && chown boardcast /data
COPY --from=build /src/target/release/boardcast /usr/local/bin/boardcast
USER boardcast
ENV BIND=0.0.0.0:8080 \
    DATA_DIR=/data \
    RUST_LOG=info
VOLUME /data
EXPOSE 8080
CMD ["boardcast"]
