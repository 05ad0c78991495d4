#!/usr/bin/env bash
# The GPU benchmark (issue 26; docs/bench.md, "On a real GPU"): our UNet kernels beside burn's
# and beside PyTorch on the same GPU, in one run. For a Linux machine with an NVIDIA GPU, a
# Vulkan loader and PyTorch with diffusers already installed; builds nothing it can take
# prebuilt and downloads nothing.
#
#   scripts/bench-gpu.sh [OUT_DIR]
#
# It runs, each step under its own timeout and the whole under BENCH_GPU_BUDGET seconds
# (default 420):
#   1. `lina-cli bench-kernels` in f32 and f16: SD 1.5's convolutions, linear layers, attention
#      and group norm at 64x64 latents and below, and SD 2.1's attention at 96x96, burn's
#      kernels beside ours (attention with each key block; in f16 also in cooperative
#      matrices), and the square product that sets the matrix peak as burn's matmul reaches
#      it;
#   2. tools/bench_torch_unet.py: PyTorch's SD 1.5 UNet call (batch 2, 64x64) with random
#      weights on CUDA in f32 (TF32 off and on) and f16 (and torch.compile where
#      BENCH_GPU_COMPILE is set), saving its weights, inputs and outputs;
#   3. `lina-cli bench-unet --reference` on those weights: our call with our kernels and with
#      burn's, in f32 and f16 (in f16 also with our kernels but no cooperative matrices), and
#      our output against PyTorch's;
#   4. where our SD 1.5 call's GPU time goes, per kind of kernel, in f32 and f16 (cubecl's
#      per-kernel profile summed by tools/profile_table.py);
#   5. SD 2.1's UNet at 96x96 the same way, without the reference (BENCH_GPU_SD21=0 skips it);
#   6. one table of times and ratios (tools/bench_gpu_table.py), with each layer case's fastest
#      way beside the runtime's and the coop matmul's blocks summed over the product cases.
#
# BENCH_GPU_BURN=0 skips the UNet calls on burn's kernels alone (measured before; see
# docs/bench.md).
#
# Which binary: $LINA_CLI, else target/release/lina-cli, else .gpu/lina-cli.xz (a stripped
# release build compressed with xz, as scripts/bench-gpu-carry.sh prepares it for a machine
# without cargo; that script also prints the device call).
# Figures go to OUT_DIR (default target/bench-gpu).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/bench-gpu}
mkdir -p "$out"
budget=${BENCH_GPU_BUDGET:-420}
started=$(date +%s)
left() { echo $((budget - ($(date +%s) - started))); }
# Runs a step with the smaller of its own limit and what is left of the budget.
step() {
  local limit=$1
  shift
  local now
  now=$(left)
  [ "$now" -lt "$limit" ] && limit=$now
  if [ "$limit" -le 5 ]; then
    echo "== skipped (budget spent): $*"
    return 1
  fi
  timeout "$limit" "$@"
  local rc=$?
  [ $rc = 124 ] && echo "== timed out after ${limit} s: $*"
  return $rc
}

cli=${LINA_CLI:-}
if [ -z "$cli" ] && [ -x target/release/lina-cli ]; then cli=target/release/lina-cli; fi
if [ -z "$cli" ] && [ -f .gpu/lina-cli.xz ]; then
  cli=/tmp/lina-cli
  python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
    .gpu/lina-cli.xz "$cli" && chmod +x "$cli"
fi
if [ -z "$cli" ] || [ ! -x "$cli" ]; then
  echo "no lina-cli: build one (cargo build --release -p lina-cli) or set LINA_CLI" >&2
  exit 1
fi

# What scripts/bench-gpu-carry.sh put under .gpu/ for a machine that can fetch nothing: the
# Vulkan loader where the machine has none (unpacked into /, as the device's README says),
# and diffusers into a site folder of its own. The NVIDIA driver's own ICD file is named
# where the loader finds no driver file in its usual places.
if ! ldconfig -p | grep -q libvulkan.so.1 && compgen -G ".gpu/vulkan/*.deb" >/dev/null; then
  for deb in .gpu/vulkan/*.deb; do dpkg -x "$deb" /; done
  ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ] &&
  ! compgen -G "/usr/share/vulkan/icd.d/nvidia*.json" >/dev/null &&
  ! compgen -G "/etc/vulkan/icd.d/nvidia*.json" >/dev/null; then
  export VK_DRIVER_FILES=$nvidia_icd
fi
if ! python3 -c "import diffusers" 2>/dev/null && compgen -G ".gpu/wheels/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/bench-gpu-site .gpu/wheels/*.whl &&
    export PYTHONPATH=/tmp/bench-gpu-site${PYTHONPATH:+:$PYTHONPATH}
fi

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" ||
  { echo "python3 needs torch and diffusers" >&2; exit 1; }

echo "== 1. kernels, burn's and ours (f32, then f16)"
for precision in f32 f16; do
  step 120 "$cli" bench-kernels --device "gpu-$precision" --repeat 10 \
    --json "$out/kernels-$precision.jsonl" 2>&1 | grep -v XDG_RUNTIME_DIR
done

unet_pair() { # config latent name [reference dir]
  local config=$1 latent=$2 name=$3 ref=${4:-}
  local extra=()
  [ -n "$ref" ] && extra=(--reference "$ref")
  for precision in f32 f16; do
    # In f16 the fused kernels run the products in cooperative matrices where the device has
    # them; "no-matrices" is the same call without them, so the run shows what they bring
    # and keeps an f16 figure if the driver mishandles them.
    local kinds=(fused)
    [ "$precision" = f16 ] && kinds+=(no-matrices)
    [ "${BENCH_GPU_BURN:-1}" = 1 ] && kinds+=(burn)
    for kernels in "${kinds[@]}"; do
      echo "-- ours, $name, $precision, $kernels kernels"
      step 90 "$cli" bench-unet --config "$config" --latent "$latent" --repeat 5 \
        --device "gpu-$precision" --kernels "$kernels" "${extra[@]}" \
        --json "$out/unet-$name-$precision-$kernels.json" 2>&1 | grep -v XDG_RUNTIME_DIR
    done
  done
}

echo "== 2. PyTorch, SD 1.5 UNet, batch 2, 64x64 (weights saved for step 3)"
ref=$(mktemp -d /tmp/bench-gpu-ref.XXXX)
step 150 python3 tools/bench_torch_unet.py --config tests/fixtures/configs/sd15_unet.json \
  --latent 64 --repeat 5 --device cuda --dtype f32 f16 ${BENCH_GPU_COMPILE:+--compile} \
  --save "$ref" | tail -1 >"$out/torch-sd15.json"
cat "$out/torch-sd15.json"

echo "== 3. ours, SD 1.5 UNet on PyTorch's weights"
unet_pair tests/fixtures/configs/sd15_unet.json 64 sd15 "$ref"

echo "== 4. where our SD 1.5 call's GPU time goes (each kernel timed alone)"
for precision in f32 f16; do
  log=$(mktemp /tmp/bench-gpu-profile.XXXX)
  step 90 env CUBECL_DEBUG_OPTION=profile-full CUBECL_DEBUG_LOG="$log" "$cli" bench-unet \
    --config tests/fixtures/configs/sd15_unet.json --latent 64 --repeat 1 --device "gpu-$precision" --reference "$ref" 2>&1 | grep -v XDG_RUNTIME_DIR
  python3 tools/profile_table.py "$log" --calls 2 --title "SD 1.5, 64x64, $precision" |
    tee "$out/profile-sd15-$precision.md"
  rm -f "$log"
done
rm -rf "$ref"

if [ "${BENCH_GPU_SD21:-1}" = 1 ]; then
  echo "== 5. SD 2.1 UNet, batch 2, 96x96"
  step 90 python3 tools/bench_torch_unet.py --config tests/fixtures/configs/sd21_unet.json \
    --latent 96 --repeat 5 --device cuda --dtype f32 f16 | tail -1 >"$out/torch-sd21.json"
  unet_pair tests/fixtures/configs/sd21_unet.json 96 sd21
fi

echo "== 6. table"
python3 tools/bench_gpu_table.py "$out" | tee "$out/table.md"
echo "== done in $(($(date +%s) - started)) s"
