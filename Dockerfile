# A container image of the tally binary: `docker build -t tally .`
#
# Not built by the project's CI (its machines have no container daemon or registry); the
# binary inside is the one the tests run. Data lives in the volume /var/lib/tally; the doors
# listen on all interfaces of the container (7080 HTTP, 7090 gRPC, 7379 Redis protocol).

FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tally

FROM debian:bookworm-slim
RUN useradd --system --home-dir /var/lib/tally --shell /usr/sbin/nologin tally \
 && mkdir -p /var/lib/tally && chown tally:tally /var/lib/tally
COPY --from=build /src/target/release/tally /usr/local/bin/tally
USER tally
# MIMALLOC_PURGE_DELAY=-1: the allocator keeps freed memory for reuse (OPERATIONS.md, "Sizing").
ENV TALLY_DATA_DIR=/var/lib/tally \
    MIMALLOC_PURGE_DELAY=-1 \
    TALLY_HTTP=0.0.0.0:7080 \
    TALLY_GRPC=0.0.0.0:7090 \
    TALLY_RESP=0.0.0.0:7379
VOLUME ["/var/lib/tally"]
EXPOSE 7080 7090 7379
# SIGTERM drains in-flight requests and due rollups (shutdown_timeout, 30 s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tally"]
CMD ["serve"]
