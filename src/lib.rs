//! LINA runtime: Stable-Diffusion-class text-to-image models on burn, natively and in the
//! browser (WebGPU), with a sampler loop open to causal interventions.
//!
//! The core knows nothing of the browser; `wasm` is a thin wasm-bindgen layer over it.

pub mod bench;
pub mod csg;
pub mod device;
pub mod error;
pub mod image;
pub mod intervene;
pub mod kernels;
pub mod memory;
pub mod models;
pub mod nn;
pub mod pipeline;
pub mod probe;
pub mod rng;
pub mod schedulers;
pub mod soak;
pub mod source;
pub mod tokenizer;
pub mod weights;

#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use error::{Error, Result};
pub use pipeline::{CancelToken, GenerateOptions, StableDiffusion};
