#!/usr/bin/env bash
# Benchmarks with their peers, in one run (docs/bench.md explains each figure):
# - natively, `lina-cli bench` on the embedded default model and the tiny SD 1.5-architecture
#   fixture, on the CPU backend and on wgpu (this machine's Vulkan adapter: lavapipe where
#   there is no GPU), beside diffusers with PyTorch on the CPU (tools/bench_torch.py) when
#   python3 has torch and diffusers;
# - in headless Chromium (WebGPU on SwiftShader where there is no GPU), www/bench.html beside
#   ONNX Runtime Web running the same UNet (tests/bench/bench.mjs).
# Arguments: REPEAT (default 5) for the native runs. Figures go to target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
repeat=${1:-5}
out=target/bench
mkdir -p "$out"

cargo build --release --quiet --bin lina-cli
have_torch=0
python3 -c "import torch, diffusers" 2>/dev/null && have_torch=1
for model in www/models/default tests/fixtures/sd1_tiny; do
  name=$(basename "$model")
  peer=()
  if [ $have_torch = 1 ]; then
    python3 tools/bench_torch.py --model "$model" --repeat "$repeat" --steps 20 \
      2>/dev/null | tail -1 > "$out/$name-torch.json"
    peer=(--peer "$out/$name-torch.json")
  else
    echo "== PyTorch peer skipped: python3 lacks torch or diffusers (pip install -r tools/requirements.txt)"
  fi
  for device in cpu gpu; do
    echo "== native: $model on $device"
    target/release/lina-cli bench --model "$model" --device "$device" --repeat "$repeat" \
      --steps 20 --json "$out/$name-$device.json" "${peer[@]}"
  done
done

echo "== browser: www/bench.html beside ONNX Runtime Web"
scripts/build-web.sh
npm ci --prefix tests/e2e --no-audit --no-fund
npm ci --prefix tests/bench --no-audit --no-fund
node tests/bench/bench.mjs --json "$out/browser.json"
