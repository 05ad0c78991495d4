#!/usr/bin/env bash
# Prepares, on this machine, what scripts/bench-gpu.sh needs on a lent GPU machine that has
# PyTorch but no cargo, no diffusers, maybe no Vulkan loader, and can fetch nothing
# (/work/.library/device/README.md). Everything goes under .gpu/, which git ignores here and
# the device call carries there (at most 64 MiB):
#   .gpu/lina-cli.xz   a stripped release build of lina-cli, xz-compressed;
#   .gpu/vulkan/       the Vulkan loader's package (libvulkan1), for a machine without one;
#   .gpu/wheels/       diffusers at tools/requirements.txt's pin, and importlib_metadata,
#                      which the device's PyTorch image lacks (its other needs are there).
# bench-gpu.sh unpacks and installs these where they are missing. Ends by printing the size
# of what travels and the device call to make.
#
#   scripts/bench-gpu-carry.sh          # the release build takes about 20 minutes cold
set -euo pipefail
cd "$(dirname "$0")/.."

# Ignored without touching .gitignore: the folder holds a build and downloads, this
# machine's business only.
mkdir -p .git/info .gpu/vulkan .gpu/wheels
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude

echo "== lina-cli, release"
cargo build --release -p lina-cli
strip -o .gpu/lina-cli target/release/lina-cli
xz -6 -T0 -f .gpu/lina-cli

echo "== the Vulkan loader"
# The device's packages are amd64 Debian/Ubuntu ones; apt downloads without installing, with
# its lists kept apart from this machine's own.
lists=$(mktemp -d /tmp/apt-amd64.XXXX)
mkdir -p "$lists/partial"
apt=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists="$lists")
apt-get "${apt[@]}" -qq update
rm -f .gpu/vulkan/*.deb
(cd .gpu/vulkan && apt-get "${apt[@]}" -qq download libvulkan1)
rm -rf "$lists"

echo "== wheels"
diffusers=$(sed -n 's/^diffusers==//p' tools/requirements.txt)
rm -f .gpu/wheels/*.whl
# The device's python3 is CPython 3.12 on x86-64 Linux; both wheels are pure Python.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  -d .gpu/wheels "diffusers==$diffusers" importlib_metadata

echo "== what travels"
du -ab .gpu | sort -k2
total=$(du -sb .gpu | cut -f1)
echo "total $total bytes (the device call carries at most 67108864)"
[ "$total" -lt 67108864 ] || { echo ".gpu/ is over the device call's limit" >&2; exit 1; }

cat <<'EOF'
== the device call (run, with carry [".gpu"] and timeout_s 540)
set -o pipefail; scripts/bench-gpu.sh target/bench-gpu 2>&1 | tee $OUT/log; tar czf $OUT/bench-gpu.tgz -C target bench-gpu
EOF
