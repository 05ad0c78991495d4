//! Any prompt through the prompt-to-scene-graph parser: see `lina_fuzz::prompt` (fuzz/src/lib.rs),
//! which the native tests also run on the committed seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lina_fuzz::prompt(data));
