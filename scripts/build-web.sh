#!/usr/bin/env bash
# Builds the page: the release wasm and its JS bindings into www/pkg. The embedded default
# model is committed in www/models/default. Prints the wasm size raw and gzipped.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --lib --target wasm32-unknown-unknown
wasm-bindgen --target web --out-dir www/pkg target/wasm32-unknown-unknown/release/lina.wasm

raw=$(stat -c %s www/pkg/lina_bg.wasm)
gz=$(gzip -9 -c www/pkg/lina_bg.wasm | wc -c)
echo "wasm: $((raw / 1024)) KiB raw, $((gz / 1024)) KiB gzipped"
