#!/usr/bin/env bash
# Builds the page: the release wasm and its JS bindings into www/pkg. The embedded default
# model is committed in www/models/default. Prints the wasm size raw and gzipped.
#
# The wasm's name section (function names for stack traces) is a fifth of the gzipped
# module, so release builds drop it; panics still reach JS with their message.
# LINA_WASM_NAMES=1 keeps it, for readable stack traces while debugging.
set -euo pipefail
cd "$(dirname "$0")/.."

# The browser layer is the workspace's lina-web crate; its module keeps the name lina
# (www/pkg/lina.js, lina_bg.wasm), which the embed API imports.
cargo build --release --lib --target wasm32-unknown-unknown -p lina-web
strip=(--remove-name-section --remove-producers-section)
if [ "${LINA_WASM_NAMES:-0}" = 1 ]; then strip=(); fi
wasm-bindgen --target web "${strip[@]}" --out-dir www/pkg --out-name lina \
  target/wasm32-unknown-unknown/release/lina_web.wasm

raw=$(stat -c %s www/pkg/lina_bg.wasm)
gz=$(gzip -9 -c www/pkg/lina_bg.wasm | wc -c)
echo "wasm: $((raw / 1024)) KiB raw, $((gz / 1024)) KiB gzipped ($gz bytes)"
