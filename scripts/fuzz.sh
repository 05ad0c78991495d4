#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each, default 30, starting from its
# corpus in fuzz/corpus/. New inputs go to a scratch folder, so the committed corpora stay as
# they are; a crash stops the run, and its input is in fuzz/artifacts/TARGET/.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-30}
shift || true

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
# libFuzzer's instrumentation needs nightly flags; without a nightly toolchain, stable
# accepts them with RUSTC_BOOTSTRAP.
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
  scratch=$(mktemp -d)
  if ! "${fuzz[@]}" run "${flags[@]}" "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 >"$scratch.log" 2>&1; then
    tail -n 60 "$scratch.log"
    exit 1
  fi
  grep -E "^(Done|stat::number_of_executed_units|stat::new_units_added)" "$scratch.log"
  rm -rf "$scratch" "$scratch.log"
done
