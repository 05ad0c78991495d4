//! A component's config.json of any text: see `lina_fuzz::config` (fuzz/src/lib.rs),
//! which the native tests also run on the committed seeds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lina_fuzz::config(data));
