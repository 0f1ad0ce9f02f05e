#!/usr/bin/env bash
# Builds the demo plugin from source, then runs wasmgate on 127.0.0.1:8080.
# Try: curl -H 'Host: demo.localhost' http://127.0.0.1:8080/api/hello
#      curl http://127.0.0.1:8081/ping ; curl http://127.0.0.1:8081/metrics
set -euo pipefail
cd "$(dirname "$0")/../.."
rustup target add wasm32-wasip1 >/dev/null 2>&1 || true
cargo build --release --target wasm32-wasip1 --manifest-path examples/plugins/Cargo.toml
exec cargo run -- run -c examples/quickstart/wasmgate.yaml "$@"
