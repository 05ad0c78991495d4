#!/usr/bin/env bash
# Runs a native program with Vulkan on a newer lavapipe, one that multiplies in cooperative
# matrices (VK_KHR_cooperative_matrix: 8x8 f16 products with f16 or f32 sums). Debian 12's
# Mesa 22.3, CI's Vulkan driver, has none, and shaders/matmul_coop.wgsl runs only where the
# adapter has them: this is how it is checked without a GPU (scripts/test.sh).
#
#   scripts/lavapipe-coop.sh PROGRAM [ARGS...]
#
# As cargo's runner: CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=scripts/lavapipe-coop.sh.
#
# The first run downloads Debian 13's backported Mesa and what it links (its glibc and LLVM
# among them: about 40 packages, 300 MB unpacked) into target/lavapipe-coop, unpacked, not
# installed: nothing of the system changes. PROGRAM then runs under that glibc's loader with
# those libraries first, so the driver finds the versions it was built against; a program
# built against Debian 12's glibc runs on the newer one.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=$here/target/lavapipe-coop
lib=$root/usr/lib/x86_64-linux-gnu

if [ ! -e "$root/ready" ]; then
  echo "lavapipe-coop: fetching Debian 13's backported Mesa into $root" >&2
  rm -rf "$root"
  mkdir -p "$root/apt/lists/partial" "$root/apt/cache/archives/partial" "$root/debs"
  printf 'deb http://deb.debian.org/debian trixie main\ndeb http://deb.debian.org/debian trixie-backports main\n' \
    >"$root/apt/sources.list"
  : >"$root/apt/status"
  apt_options=(
    -o "Dir::Etc::sourcelist=$root/apt/sources.list" -o Dir::Etc::sourceparts=-
    -o "Dir::State::Lists=$root/apt/lists" -o "Dir::Cache=$root/apt/cache"
    -o "Dir::State::status=$root/apt/status" -o APT::Sandbox::User=root
  )
  apt-get "${apt_options[@]}" update -qq
  mesa=$(apt-cache "${apt_options[@]}" madison mesa-vulkan-drivers | awk '/backports/ {print $3; exit}')
  if [ -z "$mesa" ]; then
    echo "lavapipe-coop: trixie-backports has no mesa-vulkan-drivers; point this script at a suite with Mesa 26 or later" >&2
    exit 1
  fi
  # Everything the driver needs, resolved against an empty system: the newer glibc included.
  packages=$(apt-cache "${apt_options[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances "mesa-vulkan-drivers=$mesa" |
    grep -v '^ ' | grep -v '^<' | grep -vx mesa-vulkan-drivers | sort -u)
  # shellcheck disable=SC2086
  (cd "$root/debs" && apt-get "${apt_options[@]}" download -qq $packages "mesa-vulkan-drivers=$mesa")
  for deb in "$root"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
  sed "s#\"library_path\": \"[^\"]*\"#\"library_path\": \"$lib/libvulkan_lvp.so\"#" \
    "$root/usr/share/vulkan/icd.d/lvp_icd.json" >"$root/lvp_icd.json"
  rm -rf "$root/debs" "$root/apt"
  echo "$mesa" >"$root/ready"
fi

VK_ICD_FILENAMES=$root/lvp_icd.json exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$@"
