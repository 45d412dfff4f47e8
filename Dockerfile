# syntax=docker/dockerfile:1
# The Serin image: the operator (/usr/local/bin/serin) and the SMI Traffic Metrics server
# (/usr/local/bin/serin-metrics-adapter), built with cargo, on a distroless base that runs as
# the nonroot user (65532). The Helm chart (charts/serin) runs both from this one image.
#
#   docker build -t ghcr.io/serin-dev/serin:0.1.0 .
#
# Nothing in the repository's tests builds it (they run without a container runtime); the test
# e2e/tests/helm_chart.rs checks that the chart's commands name the binaries copied here.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY operator/Cargo.toml operator/Cargo.toml
COPY metrics-adapter/Cargo.toml metrics-adapter/Cargo.toml
COPY e2e/Cargo.toml e2e/Cargo.toml
RUN mkdir -p operator/src/bin metrics-adapter/src e2e/src/bin \
 && for f in operator/src/lib.rs operator/src/bin/serin.rs operator/src/bin/kubectl-serin.rs \
      operator/src/bin/serin-bench.rs metrics-adapter/src/lib.rs metrics-adapter/src/main.rs \
      e2e/src/lib.rs e2e/src/bin/serin-demo-app.rs e2e/src/bin/serin-mesh.rs; do \
      echo 'fn main() {}' > "$f"; done \
 && cargo build --release --locked -p serin -p serin-metrics-adapter \
 && rm -rf operator/src metrics-adapter/src
# The e2e crate is a workspace member that the image does not build: its placeholders stay.
COPY operator operator
COPY metrics-adapter metrics-adapter
# Touch the sources so cargo rebuilds the workspace crates over the placeholders.
RUN find operator/src metrics-adapter/src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked -p serin --bin serin -p serin-metrics-adapter --bin serin-metrics-adapter

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/serin /usr/local/bin/serin
COPY --from=build /src/target/release/serin-metrics-adapter /usr/local/bin/serin-metrics-adapter
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/serin"]
CMD ["run"]
