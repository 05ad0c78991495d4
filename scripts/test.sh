#!/usr/bin/env bash
# Sets up and runs every test: formatting and lints, the native tests (CPU backend, and the
# wgpu backend on lavapipe), each fuzz target for 20 seconds, the browser tests in headless
# Chromium with WebGPU, the embed API's type check, and the page's end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== fmt and clippy"
cargo fmt --check
cargo fmt --check --manifest-path fuzz/Cargo.toml
cargo clippy --all-targets -- -D warnings
cargo clippy --lib --target wasm32-unknown-unknown -- -D warnings

echo "== native tests (CPU backend and wgpu on Vulkan)"
LINA_TEST_GPU=1 cargo test

echo "== fuzz targets, briefly (scripts/fuzz.sh; docs/hardening.md has the long runs)"
scripts/fuzz.sh 20

echo "== browser tests (headless Chromium, WebGPU on SwiftShader)"
# SwiftShader runs WebGPU on the CPU, and the runner times the whole run, not each test:
# give all browser tests together up to 25 minutes.
CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=1500 \
  cargo test --release --target wasm32-unknown-unknown --test web

echo "== embed API types (www/lina.js against lina.d.ts, and README's example)"
npm ci --prefix tests/types --no-audit --no-fund
npm test --prefix tests/types

echo "== page and embed API end to end (headless Chromium, playwright-core)"
scripts/build-web.sh
npm ci --prefix tests/e2e --no-audit --no-fund
npm test --prefix tests/e2e
