# The azure-cloud-rs image: the controller manager at upstream's path (/usr/local/bin/cloud-controller-manager,
# as upstream's chart runs `command: ["cloud-controller-manager"]`) and the per-node agent beside it
# (/usr/local/bin/cloud-node-manager, the same binary: it runs as the agent when invoked under that name).
#
# glibc, not musl: the benchmarks in docs/benchmarks.md were measured with glibc's allocator and the two-arena
# cap the binary sets at start (MALLOC_ARENA_MAX overrides it); musl's allocator has neither the tuning nor
# the same footprint. Non-root, no shell, no package manager.
#
# Built without the simulators (`--no-default-features`: no `demo`/`bench`, 3.6 MB smaller; see
# docs/benchmarks.md). Not built in this project's CI (no container engine there):
# `docker build -t azure-cloud-controller-manager .`
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# `--profile production`: release with fat LTO and one codegen unit (Cargo.toml): the bench binary measured
# 37.7 → 25.0 MB and 3–4 MiB less resident at 1,000 nodes (docs/benchmarks.md); ≈ 13 min on 2 cores.
RUN cargo build --profile production --locked -p ccm --no-default-features --bin azure-cloud-controller-manager \
 && mkdir -p /out/usr/local/bin \
 && cp target/production/azure-cloud-controller-manager /out/usr/local/bin/cloud-controller-manager \
 && ln -s cloud-controller-manager /out/usr/local/bin/cloud-node-manager \
 && ln -s cloud-controller-manager /out/usr/local/bin/azure-cloud-controller-manager

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/cloud-controller-manager"]
