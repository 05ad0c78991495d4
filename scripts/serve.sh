#!/usr/bin/env bash
# Sets up, builds and serves the page on 127.0.0.1 (PORT, default 8080).
# It installs only what that needs (scripts/setup.sh --serve: the wasm32 target, the
# wasm-bindgen CLI, python3), not the browsers, Node.js and Vulkan drivers of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --serve
scripts/build-web.sh
port="${PORT:-8080}"
echo "Serving the page at http://127.0.0.1:${port}/ (open it in a browser with WebGPU; Ctrl-C stops)"
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory www
