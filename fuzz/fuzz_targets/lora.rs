//! A LoRA file of any bytes: see `lina_fuzz::lora` (fuzz/src/lib.rs), which the native tests
//! also run on the committed seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lina_fuzz::lora(data));
