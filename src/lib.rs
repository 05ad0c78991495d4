//! LINA runtime: Stable-Diffusion-class text-to-image models on burn, natively and in the
//! browser (WebGPU), with a sampler loop open to interventions ([`pipeline::StepHook`]).
//!
//! This crate knows nothing of LINA, its scene graph or the probe: those live in the
//! workspace's `crates/` and depend on it, never the reverse. Nor does it know the browser:
//! `crates/web` is the thin wasm-bindgen layer over it.

pub mod bench;
pub mod device;
pub mod error;
pub mod flux_names;
pub mod image;
pub mod kernels;
pub mod ldm;
pub mod memory;
pub mod models;
pub mod nn;
pub mod pipeline;
pub mod rng;
pub mod schedulers;
pub mod sd3_names;
pub mod single_file;
pub mod source;
pub mod tokenizer;
pub mod views;
pub mod weights;

pub use error::{Error, Result};
pub use pipeline::{CancelToken, GenerateOptions, StableDiffusion};
