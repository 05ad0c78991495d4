//! A safetensors file of any bytes, streamed and whole: see `lina_fuzz::weights` (fuzz/src/lib.rs),
//! which the native tests also run on the committed seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lina_fuzz::weights(data));
