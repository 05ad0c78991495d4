//! Any prompt through the embedded model's tokenizer: see `lina_fuzz::tokenizer` (fuzz/src/lib.rs),
//! which the native tests also run on the committed seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lina_fuzz::tokenizer(data));
