#!/usr/bin/env bash
# Memory soak on the embedded model: 1000 images natively (wgpu on this machine's Vulkan
# adapter, lavapipe where there is no GPU; `--device cpu` reports host memory only), then 200
# images in one page session in headless Chromium (WebGPU on SwiftShader). Each run prints
# its samples and fails if memory after the last image is over 5% above its value after the
# first. Arguments: NATIVE_IMAGES BROWSER_IMAGES (defaults 1000 200).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
native=${1:-1000}
browser=${2:-200}

echo "== native soak: $native images"
cargo run --release --quiet --bin lina-cli -- soak --model www/models/default \
  --images "$native" --every 100 --device gpu

echo "== browser soak: $browser images"
scripts/build-web.sh
npm ci --prefix tests/e2e --no-audit --no-fund
node tests/e2e/soak.mjs --images "$browser" --every 20
