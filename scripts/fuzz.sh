#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each, default 30, or only the
# TARGETs named. Each starts from two corpus folders:
# - target/fuzz-corpus/TARGET/, the corpus that earlier runs grew. libFuzzer writes the new
#   inputs it finds only to the first folder it is given, and this is that folder: it is
#   under target/, so untracked, and a run never changes a file that git tracks. It is kept
#   between runs so that a long run's findings seed the next; delete it to start afresh.
# - fuzz/corpus/TARGET/, the committed seeds: a small hand-picked set (docs/hardening.md),
#   which libFuzzer only reads.
# A crash stops the run, and its input is in fuzz/artifacts/TARGET/ (ignored by
# fuzz/.gitignore).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
seconds=${1:-30}
shift || true
grown="$root/target/fuzz-corpus"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
# cargo-fuzz is made for a nightly toolchain: its default sanitizer (address) and its
# --build-std and --careful options hand rustc or cargo -Z flags, which a stable toolchain
# refuses ("the option `Z` is only accepted on the nightly compiler"). A nightly toolchain is
# used where one is installed. The project's machines may have only the stable toolchain
# that rust-toolchain.toml pins, and cannot download another, so there RUSTC_BOOTSTRAP=1
# makes that stable compiler accept -Z flags as a nightly one would. With the flags below
# (no sanitizer) cargo-fuzz 0.13 adds no -Z flag of its own, so the variable is what keeps a
# run with a sanitizer or those options working on stable, not a need of every run. It is
# set only without a nightly toolchain because it also tells build scripts that probe for
# nightly features that they have them.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
# Safe Rust: what a fuzzer can find is a panic, an overflow or a failed assertion, so no
# sanitizer, and debug assertions on. Many codegen units: burn's build dominates otherwise.
flags=(-O --debug-assertions --sanitizer none --codegen-units 16)

"${fuzz[@]}" build "${flags[@]}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <("${fuzz[@]}" list)
for target in "${targets[@]}"; do
  echo "== fuzz $target for ${seconds} s"
  mkdir -p "$grown/$target"
  log=$(mktemp)
  if ! "${fuzz[@]}" run "${flags[@]}" "$target" "$grown/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units|stat::new_units_added)" "$log"
  echo "   corpus grown so far: $(find "$grown/$target" -type f | wc -l) files in target/fuzz-corpus/$target"
  rm -f "$log"
done
