# A small static image of azure-cloud-controller-manager (musl, rustls: no OpenSSL, no libc at run time).
# Not built in this project's CI (no container engine there).
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ccm --bin azure-cloud-controller-manager

FROM scratch
COPY --from=build /src/target/release/azure-cloud-controller-manager /azure-cloud-controller-manager
USER 65532:65532
ENTRYPOINT ["/azure-cloud-controller-manager"]
