#!/usr/bin/env bash
# Sets up and runs every test: formatting and lints, the native tests (CPU backend, and the
# wgpu backend on lavapipe; they replay the fuzz targets' seeds), the browser tests in headless
# Chromium with WebGPU, the embed API's type check, and the page's end-to-end tests.
#
# Coverage-guided fuzzing is not part of it: it needs a second, instrumented build of the
# whole dependency tree (about 20 minutes on two cores), which CI's time cannot hold. The
# native tests replay every committed seed through the targets' own checks instead, and
# scripts/fuzz.sh runs the fuzzer (docs/hardening.md).
#
# Each step prints how long it took, and the end a table of all of them: CI has 90 minutes.
# The browser's wasm builds beside the native tests' build (its log: target/wasm-build.log).
set -euo pipefail
cd "$(dirname "$0")/.."

timings=()
step_name=""
step_start=$SECONDS
step() {
  if [ -n "$step_name" ]; then
    timings+=("$(printf '%6d s  %s' $((SECONDS - step_start)) "$step_name")")
  fi
  step_name=$1
  step_start=$SECONDS
  [ -z "$step_name" ] || echo "== $step_name"
}
report() {
  step ""
  echo "== time per step (total $SECONDS s)"
  printf '%s\n' "${timings[@]}"
}
trap report EXIT

step "setup (scripts/setup.sh)"
scripts/setup.sh

step "fmt"
cargo fmt --check
cargo fmt --check --manifest-path fuzz/Cargo.toml

# Clippy rides on the test builds instead of a `cargo clippy` of its own: clippy-driver is
# rustc plus the lints, so as the workspace wrapper it compiles our crates (lib, bins, tests,
# examples) with every lint denied, while the dependencies build once, as the tests need
# them. `cargo clippy` would first build every dependency again in check mode, natively and
# for wasm: about a sixth of CI's time. CLIPPY_ARGS is how cargo-clippy itself hands
# clippy-driver its flags (`-D warnings`).
clippy_driver=$(rustup which clippy-driver)
with_clippy() {
  RUSTC_WORKSPACE_WRAPPER="$clippy_driver" \
    CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" "$@"
}

# The two big builds run side by side: the native tests' and the browser's (the wasm tests,
# then the page's module, which reuses every unit the tests compiled: same packages,
# features and wrapper). Each is a long chain of large crates that leaves one of two cores
# idle for stretches; together they keep both busy. They share target/ without waiting on
# each other: cargo locks each profile's folder, and these are different ones.
step "builds, side by side: native tests, and the browser tests' and page's wasm (linted)"
wasm_log=target/wasm-build.log
mkdir -p target
(
  with_clippy cargo test --release --target wasm32-unknown-unknown -p lina-web --test web --no-run &&
    with_clippy scripts/build-web.sh
) >"$wasm_log" 2>&1 &
wasm_build=$!
# (A build already over makes kill fail, which under `set -e` would end the trap early with
# status 1: hence `|| true`.)
trap 'kill "$wasm_build" 2>/dev/null || true; report' EXIT
LINA_TEST_GPU=1 with_clippy cargo test --no-run
if ! wait "$wasm_build"; then
  cat "$wasm_log"
  echo "the wasm build failed (its log is above)" >&2
  exit 1
fi
grep '^wasm:' "$wasm_log"

step "native tests, linted (CPU backend and wgpu on Vulkan)"
LINA_TEST_GPU=1 with_clippy cargo test

step "the coop matmul and attention on a lavapipe with cooperative matrices (scripts/lavapipe-coop.sh)"
# CI's lavapipe (Mesa 22.3) has no cooperative matrices, so the native tests above skip the
# kernels that multiply in them; Debian 13's backported Mesa has them (fetched on first use).
LINA_TEST_GPU=1 LINA_TEST_COOP=1 CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=scripts/lavapipe-coop.sh \
  with_clippy cargo test --test kernels coop

step "browser tests, linted for wasm (headless Chromium, WebGPU on SwiftShader)"
# SwiftShader runs WebGPU on the CPU, and the runner times the whole run, not each test:
# give all browser tests together up to 25 minutes.
CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=1500 \
  with_clippy cargo test --release --target wasm32-unknown-unknown -p lina-web --test web

step "embed API and page types (www/*.js against lina.d.ts, and README's example)"
npm ci --prefix tests/types --no-audit --no-fund
npm test --prefix tests/types

step "page and embed API end to end (headless Chromium, playwright-core, axe-core)"
npm ci --prefix tests/e2e --no-audit --no-fund
npm test --prefix tests/e2e
