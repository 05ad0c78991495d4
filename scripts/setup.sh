#!/usr/bin/env bash
# Installs what a fresh machine lacks; safe to run again: it skips what is there.
#
#   scripts/setup.sh          what the tests need (scripts/test.sh, soak.sh, bench.sh)
#   scripts/setup.sh --serve  only what building and serving the page needs (scripts/serve.sh)
#
# Building and serving the page needs the wasm32 target, the wasm-bindgen CLI in the version
# of the wasm-bindgen crate in Cargo.lock (the CLI must match it exactly), and python3 for a
# static file server. The tests need, besides, Chromium and its driver (the browser tests,
# WebGPU on SwiftShader), Node.js and npm (the page's end-to-end tests) and lavapipe (Vulkan
# on the CPU, for the native wgpu tests): hundreds of MB that serving the page does without,
# hence --serve.
set -euo pipefail
cd "$(dirname "$0")/.."

serve_only=0
case "${1:-}" in
  "") ;;
  --serve) serve_only=1 ;;
  *)
    echo "usage: scripts/setup.sh [--serve]" >&2
    exit 2
    ;;
esac

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
if [ "$serve_only" = 0 ]; then
  command -v chromium >/dev/null || need_apt+=(chromium)
  command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
  command -v npm >/dev/null || need_apt+=(nodejs npm)
  [ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown \
  || rustup target add wasm32-unknown-unknown

# The CLI must match the wasm-bindgen crate version exactly.
want=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/"/, "", $3); print $3}' Cargo.lock)
if [ -z "$want" ]; then
  echo "setup: Cargo.lock names no wasm-bindgen crate, so no CLI version to install" >&2
  exit 1
fi
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "setup: installing wasm-bindgen-cli $want"
  # Without --locked: with it, cargo asks for a dependency version the registry mirror lacks.
  cargo install -q wasm-bindgen-cli --version "$want"
fi
